# Converge's cloud resources that outlive any one deployment: the BigQuery dataset,
# the changelog table with its views (bigquery.tf), and the service accounts with their
# IAM bindings (iam.tf). Cloud Run services, Eventarc triggers and Scheduler jobs are
# deployed by deploy/deploy.sh (`make deploy`), which needs what this creates.

locals {
  # Every API Converge uses. deploy/deploy.sh enables the same list (idempotent).
  services = toset([
    "artifactregistry.googleapis.com", # container images
    "bigquery.googleapis.com",         # queries, DDL
    "bigquerystorage.googleapis.com",  # Storage Write API (rows)
    "cloudbuild.googleapis.com",       # image builds
    "cloudscheduler.googleapis.com",   # nightly jobs
    "eventarc.googleapis.com",         # Firestore triggers
    "eventarcpublishing.googleapis.com",
    "firestore.googleapis.com", # source, error log
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com", # alert policies (monitoring.tf)
    "pubsub.googleapis.com", # Eventarc's transport
    "run.googleapis.com",
    "secretmanager.googleapis.com", # optional mirror configuration
  ])
}

resource "google_project_service" "apis" {
  for_each = local.services
  service  = each.value
  # Other workloads in the project may use these APIs: never disable them on destroy.
  disable_on_destroy = false
}
