# The dataset, the default route's changelog table (`records`), its latest view and
# its as-of table function. The text of each is the text `converge setup --backend
# cloud` runs (converge_bigquery::schema::create_statements: CREATE TABLE IF NOT EXISTS,
# CREATE OR REPLACE VIEW / TABLE FUNCTION; functions run no DDL, they check at start),
# so either side may create them first and neither drifts from the other. tests/tests/infra.rs checks the three files below
# against that code.

resource "google_bigquery_dataset" "converge" {
  dataset_id  = var.dataset
  location    = var.location
  description = "Converge: append-only changelog of Firestore documents and its views"
  depends_on  = [google_project_service.apis]
}

resource "google_bigquery_table" "records" {
  dataset_id  = google_bigquery_dataset.converge.dataset_id
  table_id    = "records"
  description = "Converge changelog: append-only, one row per document change; read records_latest"
  # Columns exactly as converge_bigquery::schema::columns() for the default route.
  schema = file("${path.module}/schema/records.json")

  # = PARTITION BY DATE(ingested_at): compaction and time-bounded scans prune partitions.
  time_partitioning {
    type  = "DAY"
    field = "ingested_at"
  }
  # = CLUSTER BY tenant, doc_path: one tenant's latest view reads only its blocks,
  # already grouped by document.
  clustering = ["tenant", "doc_path"]

  deletion_protection = var.deletion_protection
}

# Every run (reconcile, rebuild, ETL, detectors) records itself here, append-only.
# `converge setup` creates it too (CREATE TABLE IF NOT EXISTS); declared so it exists with
# the dataset's protection before the first run.
resource "google_bigquery_table" "converge_runs" {
  dataset_id  = google_bigquery_dataset.converge.dataset_id
  table_id    = "converge_runs"
  description = "Converge run records: reconcile, rebuild, ETL, detectors"
  # Columns exactly as converge_bigquery::schema::create_runs().
  schema              = file("${path.module}/schema/converge_runs.json")
  deletion_protection = var.deletion_protection
}

# Each (table, tenant)'s verified points: the read times of reconcile runs that found
# it equal to the source, append-only; an incremental reconcile reads from the newest
# (converge_core::incremental). `converge setup` creates it too.
resource "google_bigquery_table" "converge_verified_points" {
  dataset_id  = google_bigquery_dataset.converge.dataset_id
  table_id    = "converge_verified_points"
  description = "Converge: each table and tenant's verified points (reconcile runs that found it equal to the source)"
  # Columns exactly as converge_bigquery::schema::create_verified_points(); so is the
  # clustering (a run reads one table's points).
  schema              = file("${path.module}/schema/converge_verified_points.json")
  clustering          = ["tbl", "tenant"]
  deletion_protection = var.deletion_protection
}

# The latest view materialized (converge_core::retention): each document's live
# winner, and the deletes that won beside it; refreshed from the changelog by the
# reconciler function's refresh and compaction jobs. Columns as the changelog's;
# clustered so one tenant's report reads only that tenant's blocks.
resource "google_bigquery_table" "records_current" {
  for_each            = toset(["records_current", "records_current_tombstones"])
  dataset_id          = google_bigquery_dataset.converge.dataset_id
  table_id            = each.value
  description         = "Converge: each document's winner by the ordering rule, refreshed from records"
  schema              = file("${path.module}/schema/records.json")
  clustering          = ["tenant", "doc_path"]
  deletion_protection = false # rebuilt in full by `converge refresh-current --full`
}

# Each changelog's current-table watermark and compaction horizon, and the resets an
# atomic append records before its commit.
resource "google_bigquery_table" "converge_table_state" {
  for_each            = toset(["converge_table_state", "converge_watermark_resets"])
  dataset_id          = google_bigquery_dataset.converge.dataset_id
  table_id            = each.value
  schema              = file("${path.module}/schema/${each.value}.json")
  deletion_protection = var.deletion_protection
}

# Each document's winner by the ordering rule (version; a source read over an event;
# a delete over a write; the greater content hash), tombstones hidden.
resource "google_bigquery_table" "records_latest" {
  dataset_id = google_bigquery_dataset.converge.dataset_id
  table_id   = "records_latest"
  view {
    # chomp: the file ends with a newline, the statement the functions run does not.
    query          = chomp(templatefile("${path.module}/sql/records_latest.sql", { project = var.project, dataset = var.dataset }))
    use_legacy_sql = false
  }
  deletion_protection = false # a view holds no data; `converge setup` recreates it
  depends_on          = [google_bigquery_table.records]
}

# records_as_of(as_of): the state at any past instant of the source; an error before
# the compaction horizon (the state then is incomplete).
resource "google_bigquery_routine" "records_as_of" {
  dataset_id      = google_bigquery_dataset.converge.dataset_id
  routine_id      = "records_as_of"
  routine_type    = "TABLE_VALUED_FUNCTION"
  language        = "SQL"
  definition_body = chomp(templatefile("${path.module}/sql/records_as_of.sql", { project = var.project, dataset = var.dataset }))
  arguments {
    name      = "as_of"
    data_type = jsonencode({ typeKind = "TIMESTAMP" })
  }
  depends_on = [google_bigquery_table.records, google_bigquery_table.converge_table_state]
}

# The nightly ETL's output (converge_bigquery::metrics): one daily sum per tenant,
# entity, metric and day; the raw ids behind each canonical entity id; the committed
# load of each (tenant, date), which the rows-in check compares against. Each slice is
# replaced by one multi-statement transaction; columns exactly as
# converge_bigquery::metrics::create_metrics_tables() (tests/tests/infra.rs checks).
resource "google_bigquery_table" "daily_entity_metrics" {
  dataset_id  = google_bigquery_dataset.converge.dataset_id
  table_id    = "daily_entity_metrics"
  description = "Converge nightly ETL: one daily sum per tenant, entity, metric and day"
  schema      = file("${path.module}/schema/daily_entity_metrics.json")
  time_partitioning {
    type  = "DAY"
    field = "date"
  }
  clustering          = ["tenant", "entity_type"]
  deletion_protection = var.deletion_protection
}

resource "google_bigquery_table" "entity_map" {
  dataset_id  = google_bigquery_dataset.converge.dataset_id
  table_id    = "entity_map"
  description = "Converge nightly ETL: raw identifiers as exported, per day, and their canonical entity ids"
  schema      = file("${path.module}/schema/entity_map.json")
  time_partitioning {
    type  = "DAY"
    field = "date"
  }
  clustering          = ["tenant", "entity_type"]
  deletion_protection = var.deletion_protection
}

resource "google_bigquery_table" "etl_loads" {
  dataset_id  = google_bigquery_dataset.converge.dataset_id
  table_id    = "etl_loads"
  description = "Converge nightly ETL: the committed load of each (tenant, date)"
  schema      = file("${path.module}/schema/etl_loads.json")
  time_partitioning {
    type  = "DAY"
    field = "date"
  }
  clustering          = ["tenant"]
  deletion_protection = var.deletion_protection
}

# Staged slices: written through the Storage Write API, read once by their replace
# script, never modified; partitions expire after two days (an abandoned load's rows
# are named by no script and simply age out).
resource "google_bigquery_table" "etl_staging_metrics" {
  dataset_id  = google_bigquery_dataset.converge.dataset_id
  table_id    = "etl_staging_metrics"
  description = "Converge nightly ETL: staged slices, read once by their replace"
  schema      = file("${path.module}/schema/etl_staging_metrics.json")
  time_partitioning {
    type          = "DAY"
    field         = "staged_at"
    expiration_ms = 172800000
  }
  clustering          = ["load_id"]
  deletion_protection = false # transient rows only
}

resource "google_bigquery_table" "etl_staging_entity_map" {
  dataset_id  = google_bigquery_dataset.converge.dataset_id
  table_id    = "etl_staging_entity_map"
  description = "Converge nightly ETL: staged entity maps, read once by their replace"
  schema      = file("${path.module}/schema/etl_staging_entity_map.json")
  time_partitioning {
    type          = "DAY"
    field         = "staged_at"
    expiration_ms = 172800000
  }
  clustering          = ["load_id"]
  deletion_protection = false # transient rows only
}
