# One service account per function, plus the identities Eventarc and Cloud Scheduler
# call with. Least privilege: BigQuery data access on Converge's dataset only, never
# the project; project-level roles only where the role has no narrower resource.
#
# infra/IAM.md lists every Google API method each identity calls and the permission it
# needs; tests/tests/infra.rs (module `iam`) holds these grants to it: a missing
# permission, a role that supplies none of what its holder needs where it is granted,
# or a role the table does not describe fails `make test`. Change the table with the
# grant.
#
# Cloud Run's IAM invoker check stays on for converge-sync and converge-reconciler:
# Eventarc and Scheduler send OIDC tokens of converge-eventarc / converge-scheduler,
# which need run.invoker there. converge-etl and converge-detectors turn the check off
# and verify the scheduler's token in the app (deploy/services/*.yaml).

locals {
  # Function service accounts: account id => what it is for.
  functions = {
    "converge-sync"       = "on-write sync: Firestore events -> changelog rows"
    "converge-reconciler" = "reconciler: compares source and warehouse, repairs drift"
    "converge-rebuild"    = "rebuild: rebuilds one tenant's rows (manual, initial import)"
    "converge-etl"        = "nightly ETL: daily rollups"
    "converge-detectors"  = "detector runner: SQL detectors, findings back to Firestore"
  }
  # Firestore role of each function, on Converge's database only (see firestore_user).
  # converge-rebuild only reads the source (RunQuery); the others also write records
  # (sync_errors, quarantine, opportunities: Commit), which needs
  # datastore.entities.create/update (https://cloud.google.com/firestore/docs/security/iam).
  firestore_roles = {
    "converge-sync"       = "roles/datastore.user"
    "converge-reconciler" = "roles/datastore.user"
    "converge-rebuild"    = "roles/datastore.viewer"
    "converge-etl"        = "roles/datastore.user"
    "converge-detectors"  = "roles/datastore.user"
  }
  # Cloud Run service name => the identity that invokes it, for the services whose
  # invoker check is on (deploy/deploy.sh uses the same names). converge-etl and
  # converge-detectors are absent on purpose: their services set
  # run.googleapis.com/invoker-iam-disabled (the Cloud Run API's invokerIamDisabled:
  # "Disables IAM permission check for run.routes.invoke for callers of this service",
  # https://cloud.google.com/run/docs/securing/managing-access#invoker_check) and verify
  # the scheduler's token in the app; run.invoker there would grant nothing used.
  invoked_by = {
    "converge-sync"       = "converge-eventarc"
    "converge-reconciler" = "converge-scheduler"
  }
  # Only services that are (to be) deployed get an invoker; converge-rebuild is invoked
  # by operators, whom you grant run.invoker on it yourself (deploy/README.md).
  invoked            = { for svc, sa in local.invoked_by : svc => sa if contains(var.services, svc) }
  project_invokers   = toset([for svc, sa in local.invoked : sa if !contains(var.deployed_services, svc)])
  service_invokers   = { for svc, sa in local.invoked : svc => sa if contains(var.deployed_services, svc) }
  firestore_resource = "projects/${var.project}/databases/${var.firestore_database}"
}

resource "google_service_account" "function" {
  for_each     = local.functions
  account_id   = each.key
  display_name = "Converge ${each.value}"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "eventarc" {
  account_id   = "converge-eventarc"
  display_name = "Converge: Eventarc trigger identity (delivers Firestore events to converge-sync)"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "scheduler" {
  account_id   = "converge-scheduler"
  display_name = "Converge: Cloud Scheduler identity (calls the nightly functions)"
  depends_on   = [google_project_service.apis]
}

# --- BigQuery --------------------------------------------------------------------------

# Every function reads tables and views, appends changelog rows or run records
# (Storage Write API, INSERT), and at start checks the dataset and its catalog
# (datasets.get, INFORMATION_SCHEMA.TABLES): bigquery.datasets.get/getIamPolicy,
# bigquery.tables.get/list/getData/updateData and bigquery.routines.get/list, on
# Converge's dataset only, not on the project's other datasets
# (https://cloud.google.com/bigquery/docs/write-api,
# https://cloud.google.com/bigquery/docs/information-schema-tables,
# https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets/get). Functions no longer
# run DDL (that is `converge setup --backend cloud` and Terraform), so data editor is
# broader than they need (it can create, change and drop tables); no predefined dataset
# role writes rows without it. infra/IAM.md, "Why these roles", says what a custom role
# would take.
resource "google_bigquery_dataset_iam_member" "editor" {
  for_each   = local.functions
  dataset_id = google_bigquery_dataset.converge.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = google_service_account.function[each.key].member
}

# Running a query (the start-up check, the latest view, run records, the ETL's swap) is
# a BigQuery job, and jobs belong to a project: bigquery.jobs.create on the project
# (https://cloud.google.com/bigquery/docs/jobs-overview); jobUser has no narrower
# resource and grants no data access by itself.
resource "google_project_iam_member" "job_user" {
  for_each = local.functions
  project  = var.project
  role     = "roles/bigquery.jobUser"
  member   = google_service_account.function[each.key].member
}

# --- Firestore -------------------------------------------------------------------------

# Error log (sync_errors), quarantine and findings live in Firestore, next to the
# source, so a failing warehouse cannot swallow the record of its own failure; the
# reconciler, rebuild and ETL also read the source documents. The role (local
# firestore_roles: datastore.viewer for the read-only rebuild, datastore.user for the
# writers) is granted on the project (Firestore has no per-database IAM resource) with
# a condition limiting it to Converge's database.
resource "google_project_iam_member" "firestore_user" {
  for_each = local.firestore_roles
  project  = var.project
  role     = each.value
  member   = google_service_account.function[each.key].member
  condition {
    title       = "converge-database-only"
    description = "Only the Firestore database Converge mirrors"
    expression  = "resource.name == \"${local.firestore_resource}\""
  }
}

# --- Eventarc ----------------------------------------------------------------------------

# The trigger's identity must be allowed to receive events (Eventarc checks this when the
# trigger is created and on delivery); the role's lowest grantable level is the project
# (https://cloud.google.com/eventarc/docs/roles-permissions).
resource "google_project_iam_member" "eventarc_receiver" {
  project = var.project
  role    = "roles/eventarc.eventReceiver"
  member  = google_service_account.eventarc.member
}

# --- Invokers ----------------------------------------------------------------------------

# Eventarc and Scheduler present OIDC tokens of their service accounts; the IAM invoker
# check admits them only with run.invoker. On the service when it exists
# (var.deployed_services), which is the least privilege ...
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each   = local.service_invokers
  project    = var.project
  location   = var.region
  name       = each.key
  role       = "roles/run.invoker"
  member     = "serviceAccount:${each.value}@${var.project}.iam.gserviceaccount.com"
  depends_on = [google_service_account.eventarc, google_service_account.scheduler]
}

# ... and on the project before the first deployment, when the service does not exist
# yet to carry a binding. Broader (any Cloud Run service of the project) but only for
# these two identities, which nothing but Eventarc and Scheduler can use. Narrow it by
# listing the services in var.deployed_services once `make deploy` has created them.
resource "google_project_iam_member" "invoker" {
  for_each   = local.project_invokers
  project    = var.project
  role       = "roles/run.invoker"
  member     = "serviceAccount:${each.value}@${var.project}.iam.gserviceaccount.com"
  depends_on = [google_service_account.eventarc, google_service_account.scheduler]
}

# --- Optional mirror configuration --------------------------------------------------------

# deploy/deploy.sh adds the TOML file (CONVERGE_CONFIG) as a version of this secret and
# mounts it into every function; only the function identities may read it.
resource "google_secret_manager_secret" "mirror_config" {
  count     = var.mirror_config_secret ? 1 : 0
  secret_id = "converge-config"
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_iam_member" "mirror_config" {
  for_each  = var.mirror_config_secret ? local.functions : {}
  secret_id = google_secret_manager_secret.mirror_config[0].id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.function[each.key].member
}
