# Keep these in step with deploy/converge.env: PROJECT, REGION, BIGQUERY_DATASET,
# BIGQUERY_LOCATION and FIRESTORE_DATABASE name the same things there.

variable "project" {
  description = "Google Cloud project id holding the Firestore database, the BigQuery dataset and the Cloud Run services (deploy/converge.env PROJECT)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project))
    error_message = "project: expected a project id (6-30 characters of a-z, 0-9 and -, starting with a letter)."
  }
}

variable "region" {
  description = "Region of the Cloud Run services (deploy/converge.env REGION), e.g. europe-west1."
  type        = string
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region: expected a Cloud Run region such as europe-west1 or us-central1."
  }
}

variable "dataset" {
  description = "BigQuery dataset of the changelog tables and views (deploy/converge.env BIGQUERY_DATASET)."
  type        = string
  default     = "converge"
  validation {
    condition     = can(regex("^[A-Za-z0-9_]{1,1024}$", var.dataset))
    error_message = "dataset: expected 1-1024 characters of A-Z, a-z, 0-9 and _."
  }
}

variable "location" {
  description = "BigQuery location of the dataset (deploy/converge.env BIGQUERY_LOCATION): US, EU or a region such as europe-west1. Cannot change once the dataset exists."
  type        = string
  default     = "US"
}

variable "firestore_database" {
  description = "Firestore database id (Native mode) that Converge mirrors and keeps its error log in (deploy/converge.env FIRESTORE_DATABASE). Not created here: it holds your data."
  type        = string
  default     = "(default)"
  validation {
    condition     = can(regex("^(\\(default\\)|[a-z][a-z0-9-]{2,61}[a-z0-9])$", var.firestore_database))
    error_message = "firestore_database: expected (default) or a database id of 4-63 characters of a-z, 0-9 and -."
  }
}

variable "services" {
  description = "Cloud Run services that `make deploy` deploys (one per function present under functions/). Their invokers get run.invoker; add converge-reconciler, converge-etl and converge-detectors as those functions land."
  type        = set(string)
  default     = ["converge-sync"]
  validation {
    condition     = alltrue([for s in var.services : contains(["converge-sync", "converge-reconciler", "converge-etl", "converge-detectors", "converge-rebuild"], s)])
    error_message = "services: expected names among converge-sync, converge-reconciler, converge-etl, converge-detectors, converge-rebuild."
  }
}

variable "deployed_services" {
  description = <<-EOT
    Cloud Run services that already exist (created by `make deploy`). Invoker grants for
    converge-eventarc and converge-scheduler go on these services; for a service not yet
    listed they go on the project (the service does not exist yet, so it cannot carry a
    binding). After the first `make deploy`, list the deployed services, e.g.
    ["converge-sync"], and apply again to narrow the grants.
  EOT
  type        = set(string)
  default     = []
}

variable "mirror_config_secret" {
  description = "Create the Secret Manager secret `converge-config` that carries a custom mirror configuration (deploy/converge.env CONVERGE_CONFIG) to the functions, readable by their service accounts."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Refuse to destroy the changelog table (it holds the mirrored history). Set false, apply, then destroy to tear down."
  type        = bool
  default     = true
}

variable "alert_notification_channels" {
  description = "Cloud Monitoring notification channels (ids, `projects/P/notificationChannels/N`) the alert policies of monitoring.tf notify. Empty: the policies open incidents in the console only."
  type        = list(string)
  default     = []
}

variable "quarantine_alert_per_10m" {
  description = "Quarantined events in 10 minutes that open an incident (monitoring.tf)."
  type        = number
  default     = 10
}

variable "sync_error_alert_per_10m" {
  description = "Failed syncs (each a sync_errors record) in 10 minutes that open an incident (monitoring.tf)."
  type        = number
  default     = 5
}

variable "sync_lag_alert_ms" {
  description = "Sync lag (source commit to durable, the largest of a minute) that opens an incident when it lasts 10 minutes (monitoring.tf)."
  type        = number
  default     = 300000
}
