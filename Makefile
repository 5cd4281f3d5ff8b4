# Converge — every set-up step lives here, so a fresh machine needs only these targets.
#
#   make demo    the whole pipeline on the embedded default (SQLite + DuckDB), no account
#   make test    every test
#   make bench   benchmarks, figures written to bench/RESULTS.md
#
# One cargo profile (dev, with optimized dependencies) serves tests, demo and
# benchmarks, so each dependency is built once. CARGO_TARGET_DIR may point outside
# the clone (CI does) to reuse builds.

CARGO ?= cargo
CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
BIN := $(CARGO_TARGET_DIR)/debug

# DuckDB ships as a prebuilt shared library in an npm package; building it from
# source costs ~15 minutes per profile on two cores.
DUCKDB_DIR := tools/duckdb
DUCKDB_LIB := $(DUCKDB_DIR)/node_modules/@duckdb/node-bindings-linux-x64/libduckdb.so
DATA_DIR ?= .converge
RECORDS ?= 300000

.PHONY: setup build test demo bench clean check-platform

setup: $(DUCKDB_LIB)

check-platform:
	@if [ "$$(uname -s)-$$(uname -m)" != "Linux-x86_64" ]; then \
	  echo "Converge's embedded warehouse links the prebuilt DuckDB for Linux x86_64 (npm @duckdb/node-bindings-linux-x64)."; \
	  echo "On $$(uname -s)-$$(uname -m), install the matching @duckdb/node-bindings-* package and point DUCKDB_LIB_DIR at it."; \
	  exit 1; fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }
	@command -v npm >/dev/null || { echo "npm not found: install Node.js (it fetches the prebuilt DuckDB library)"; exit 1; }

# Idempotent: runs only when the library is missing or the lock file changed.
$(DUCKDB_LIB): $(DUCKDB_DIR)/package.json $(DUCKDB_DIR)/package-lock.json | check-platform
	cd $(DUCKDB_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@test -f $@ && touch $@

build: setup
	$(CARGO) build --workspace --bins

test: build
	$(CARGO) test --workspace --no-fail-fast

demo: build
	$(BIN)/converge demo --data-dir $(DATA_DIR) --records $(RECORDS)

bench: build
	$(BIN)/converge bench sync --results bench/RESULTS.md

clean:
	$(CARGO) clean
	rm -rf $(DATA_DIR) $(DUCKDB_DIR)/node_modules
