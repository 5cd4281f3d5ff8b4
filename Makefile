# Converge — every set-up step lives here, so a fresh machine needs only these targets.
#
#   make demo    the whole pipeline on the embedded default (SQLite + DuckDB), no account
#   make serve   the demo's workspace served: the sync and the status page (/status)
#   make demo-cloud  the same on the cloud adapters, against the Firestore and BigQuery emulators
#   make drill-cloud the fault drill on the cloud adapters, against both emulators
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

.PHONY: setup build test browser serve demo demo-cloud drill-cloud bench bench-sync bench-reconcile bench-incremental bench-rebuild bench-compact bench-detect bench-etl bench-status clean check-platform bqemulator reladiff deploy deploy-dry-run

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

# The BigQuery emulator (PyPI bqemulator) for the BigQuery adapter's tests, in a venv
# under tools/bqemulator. Idempotent: reinstalls only when requirements.txt changes.
# bqemulator's DuckDB would download its spatial and avro extensions at run time; the
# pip packages ship them, copied into the HOME the emulator is started with
# (crates/converge-bigquery/src/emulator.rs sets HOME to tools/bqemulator/home).
BQEMULATOR_DIR := tools/bqemulator
BQEMULATOR := $(BQEMULATOR_DIR)/venv/bin/bqemulator
BQEMULATOR_EXT := $(BQEMULATOR_DIR)/home/.duckdb/extensions/v1.5.5/linux_amd64
export CONVERGE_BQEMULATOR := $(CURDIR)/$(BQEMULATOR)

$(BQEMULATOR): $(BQEMULATOR_DIR)/requirements.txt | check-platform
	@command -v python3 >/dev/null || { echo "python3 not found: install Python 3.10+ (it runs the BigQuery emulator)"; exit 1; }
	test -x $(BQEMULATOR_DIR)/venv/bin/pip || python3 -m venv $(BQEMULATOR_DIR)/venv
	$(BQEMULATOR_DIR)/venv/bin/pip install --disable-pip-version-check -q -r $(BQEMULATOR_DIR)/requirements.txt
	mkdir -p $(BQEMULATOR_EXT)
	cp $(BQEMULATOR_DIR)/venv/lib/python3*/site-packages/duckdb_extension_spatial/extensions/v1.5.5/spatial.duckdb_extension \
	   $(BQEMULATOR_DIR)/venv/lib/python3*/site-packages/duckdb_extension_avro/extensions/v1.5.5/avro.duckdb_extension $(BQEMULATOR_EXT)/
	@test -x $@ && touch $@

bqemulator: $(BQEMULATOR)

# reladiff (PyPI), the general-purpose diff tool the reconcile benchmark measures beside
# the reconciler, in a venv under tools/reladiff. Idempotent: reinstalls only when
# requirements.txt changes.
RELADIFF_DIR := tools/reladiff
RELADIFF_PYTHON := $(RELADIFF_DIR)/venv/bin/python
RELADIFF := $(RELADIFF_DIR)/venv/bin/reladiff

$(RELADIFF): $(RELADIFF_DIR)/requirements.txt
	@command -v python3 >/dev/null || { echo "python3 not found: install Python 3.10+ (it runs reladiff for the benchmark)"; exit 1; }
	test -x $(RELADIFF_DIR)/venv/bin/pip || python3 -m venv $(RELADIFF_DIR)/venv
	$(RELADIFF_DIR)/venv/bin/pip install --disable-pip-version-check -q -r $(RELADIFF_DIR)/requirements.txt
	@test -x $@ && touch $@

reladiff: $(RELADIFF)

build: setup
	$(CARGO) build --workspace --bins

# Headless Chromium and ChromeDriver from Debian's packages, for the status page's
# browser checks
# (tests/tests/status_page.rs). Installed with apt-get when missing (as root, or with
# passwordless sudo); where it cannot be, this says so loudly and those checks are
# skipped. Once it is here, `make test` requires it (CONVERGE_REQUIRE_BROWSER=1).
CHROMIUM ?= /usr/bin/chromium
CHROMEDRIVER ?= /usr/bin/chromedriver
browser:
	@if [ -x "$(CHROMIUM)" ] && [ -x "$(CHROMEDRIVER)" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else echo "!!!!! Chromium or ChromeDriver missing and cannot be installed (not root, no passwordless sudo): the status page's browser checks will be SKIPPED. Install Debian's chromium and chromium-driver packages. !!!!!"; exit 0; fi; \
	echo "installing Debian's chromium and chromium-driver for the status page's browser tests"; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
	  || { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null; } \
	  || echo "!!!!! apt-get could not install chromium and chromium-driver: the status page's browser checks will be SKIPPED !!!!!"

test: build $(BQEMULATOR) browser
	@[ -x "$${CONVERGE_FIRESTORE_EMULATOR:-/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud_firestore_emulator}" ] && command -v "$${JAVA:-java}" >/dev/null || echo "!!!!! Firestore emulator or Java missing: the Firestore adapter tests will be SKIPPED. Install: gcloud components install cloud-firestore-emulator (or the apt package google-cloud-cli-firestore-emulator from Google's Cloud SDK repository) and a JDK 17+, or set CONVERGE_FIRESTORE_EMULATOR !!!!!"
	CONVERGE_CHROMIUM=$(CHROMIUM) CONVERGE_CHROMEDRIVER=$(CHROMEDRIVER) CONVERGE_REQUIRE_BROWSER=$$([ -x "$(CHROMIUM)" ] && [ -x "$(CHROMEDRIVER)" ] && echo 1 || echo 0) $(CARGO) test --workspace --no-fail-fast

# The cloud path on both emulators (started on free ports and stopped by the command):
# Firestore's Eventarc triggers deliver to the sync function, rows land in BigQuery.
# The emulator dispatches one event at a time, hence the smaller dataset.
CLOUD_RECORDS ?= 600
demo-cloud: build $(BQEMULATOR)
	$(BIN)/converge demo --backend cloud --records $(CLOUD_RECORDS) --json

# The fault drill on the same path (`make test` runs it at 300 records too): an Eventarc
# front between the emulator and the sync function redelivers, as Eventarc does.
CLOUD_DRILL_RECORDS ?= 600
drill-cloud: build $(BQEMULATOR)
	$(BIN)/converge drill --backend cloud --records $(CLOUD_DRILL_RECORDS) --json

demo: build
	$(BIN)/converge demo --data-dir $(DATA_DIR) --records $(RECORDS)

# The demo's workspace served: the sync function and the status page (it prints the
# page's address; Ctrl-C stops it).
PORT ?= 8080
serve: build
	$(BIN)/converge serve --data-dir $(DATA_DIR) --port $(PORT)

bench: bench-sync bench-reconcile bench-incremental bench-rebuild bench-compact bench-detect bench-etl bench-status

bench-sync: build
	$(BIN)/converge bench sync --results bench/RESULTS.md

# Reconciliation of 300,000 and 1,000,000 documents with 0.1% drift of each kind,
# beside reladiff on the same data (RECONCILE_RECORDS=N,M to change the sizes).
RECONCILE_RECORDS ?= 300000,1000000
bench-reconcile: build $(RELADIFF)
	$(BIN)/converge bench reconcile --records $(RECONCILE_RECORDS) --reladiff-python $(RELADIFF_PYTHON) --results bench/RESULTS.md

# Full and incremental reconciliation and rebuild of 1,000,000 and 10,000,000 documents,
# beside reladiff's joindiff (INCREMENTAL_RECORDS=N,M to change the sizes; ten million
# takes ~10 minutes to generate and ~13 GB of disk in the temporary directory).
INCREMENTAL_RECORDS ?= 1000000,10000000
bench-incremental: build $(RELADIFF)
	$(BIN)/converge bench incremental --records $(INCREMENTAL_RECORDS) --reladiff-python $(RELADIFF_PYTHON) --results bench/RESULTS.md

# Rebuild of 300,000 and 1,000,000 documents (REBUILD_RECORDS=N,M to change the sizes):
# documents/s and peak memory, each rebuild in its own process.
REBUILD_RECORDS ?= 300000,1000000
bench-rebuild: build
	$(BIN)/converge bench rebuild --records $(REBUILD_RECORDS) --results bench/RESULTS.md

# Compaction of 1,000,000 documents with one superseded version each (COMPACT_RECORDS
# to change): time and peak memory in its own process, and the demo's report on the
# current table beside the latest view.
COMPACT_RECORDS ?= 1000000
bench-compact: build
	$(BIN)/converge bench compact --records $(COMPACT_RECORDS) --results bench/RESULTS.md

# The whole detector pack over 90 days of daily_entity_metrics (~1.9M rows, 4 tenants),
# five passes: wall time of the pack and per detector.
bench-detect: build
	$(BIN)/converge bench detect --results bench/RESULTS.md

# The nightly ETL on one tenant of a real account's size: 90 days of raw rows seeded
# (~548,000), the ETL of one day, a re-run of it, and the 90-day backfill.
# The status page's server time over the demo's workspace (the target: under 200 ms).
bench-status: build
	$(BIN)/converge bench status --results bench/RESULTS.md

bench-etl: build
	$(BIN)/converge bench etl --days 90 --results bench/RESULTS.md

clean:
	$(CARGO) clean
	rm -rf $(DATA_DIR) $(DUCKDB_DIR)/node_modules $(BQEMULATOR_DIR)/venv $(BQEMULATOR_DIR)/home $(RELADIFF_DIR)/venv

# Google Cloud: deploy/deploy.sh reads deploy/converge.env (see deploy/README.md).
# deploy-dry-run prints every gcloud command for the example configuration, runs none.
deploy: build
	CONVERGE_BIN=$(abspath $(BIN))/converge bash deploy/deploy.sh

deploy-dry-run:
	DRY_RUN=1 CONVERGE_DEPLOY_ENV=$${CONVERGE_DEPLOY_ENV:-deploy/converge.env.example} bash deploy/deploy.sh
