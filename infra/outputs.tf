output "dataset" {
  description = "The BigQuery dataset (deploy/converge.env BIGQUERY_DATASET)."
  value       = "${var.project}.${google_bigquery_dataset.converge.dataset_id}"
}

output "records_latest" {
  description = "Query this view for the mirrored documents."
  value       = "${var.project}.${var.dataset}.${google_bigquery_table.records_latest.table_id}"
}

output "function_service_accounts" {
  description = "Service account of each function (deploy/deploy.sh derives the same emails)."
  value       = { for k, sa in google_service_account.function : k => sa.email }
}

output "eventarc_service_account" {
  description = "Identity of the Eventarc trigger(s)."
  value       = google_service_account.eventarc.email
}

output "scheduler_service_account" {
  description = "Identity of the Cloud Scheduler jobs."
  value       = google_service_account.scheduler.email
}

output "invoker_grants_on_project" {
  description = "Identities still granted run.invoker on the whole project: list their services in deployed_services and apply again."
  value       = local.project_invokers
}
