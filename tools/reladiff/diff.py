"""reladiff on the reconcile benchmark's states: `python diff.py FILE ALGORITHM`.

FILE is a DuckDB database with tables source_states and derived_states
(doc_id, doc_path, version, content_hash) of one tenant, written by
`converge bench reconcile`. Keyed on doc_id: reladiff takes text keys only of letters,
digits, space, `-` and `_`, so not paths.
ALGORITHM is joindiff (both tables in one database: one outer join) or hashdiff (the
cross-database algorithm: checksums of key ranges, bisected down to rows; the two
tables are opened as two databases so reladiff treats them as such).

Prints one JSON line: the diff's wall-clock milliseconds (from the first query to the
last difference, excluding Python's start-up and imports), the differences classified
by key (only in the source: missing; only in derived: orphan; both: different), and
the versions used.
"""

import json
import resource
import sys
import time

import duckdb
import reladiff
from reladiff import Algorithm, connect, connect_to_table, diff_tables


def main() -> None:
    path, algorithm = sys.argv[1], sys.argv[2]
    started = time.perf_counter()
    uri = f"duckdb://{path}"
    source_db = connect(uri)
    derived_db = source_db if algorithm == "joindiff" else connect(uri)
    columns = ("version", "content_hash")
    source = connect_to_table(source_db, "source_states", "doc_id", extra_columns=columns)
    derived = connect_to_table(derived_db, "derived_states", "doc_id", extra_columns=columns)
    minus, plus, rows = set(), set(), 0
    with diff_tables(source, derived, algorithm=Algorithm(algorithm)) as diff:
        for sign, row in diff:
            rows += 1
            (minus if sign == "-" else plus).add(row[0])
    millis = (time.perf_counter() - started) * 1000.0
    print(
        json.dumps(
            {
                "algorithm": algorithm,
                "millis": round(millis, 1),
                "missing": len(minus - plus),
                "different": len(minus & plus),
                "orphan": len(plus - minus),
                "diff_rows": rows,
                "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "reladiff_version": reladiff.__version__,
                "duckdb_version": duckdb.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
