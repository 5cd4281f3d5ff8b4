# What operations alert on, from the functions' structured logs (Cloud Logging's JSON,
# crates/converge-function/src/telemetry.rs): log-based metrics over the lines each
# condition writes, and one alert policy per condition. Log-based metrics count
# matching entries (or extract a value into a distribution); alert policies watch them:
# https://cloud.google.com/logging/docs/logs-based-metrics,
# https://cloud.google.com/monitoring/alerts/log-based-metrics.
#
# The lines (exact messages, checked by tests/tests/infra.rs against the code):
#   silent drift — the reconciler, ERROR "silent drift: differences no sync error record explains" (field `silent`)
#   quarantine   — the sync function, WARNING "event quarantined" (field `reason`)
#   sync errors  — the sync function, WARNING "sync failed; error recorded"
#   sync lag     — the sync function, INFO "sync minute" once a minute with traffic (field `lag_ms_max`)
#   freshness    — the reconciler's refresh, INFO "current tables refreshed" (every 15 minutes by Scheduler)

locals {
  run_logs = "resource.type=\"cloud_run_revision\""
}

resource "google_logging_metric" "silent_drift" {
  project = var.project
  name    = "converge/silent_drift"
  filter  = "${local.run_logs} AND severity=ERROR AND jsonPayload.message=\"silent drift: differences no sync error record explains\""
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }
  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "quarantined" {
  project = var.project
  name    = "converge/quarantined"
  filter  = "${local.run_logs} AND jsonPayload.message=\"event quarantined\""
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key        = "reason"
      value_type = "STRING"
    }
  }
  label_extractors = { reason = "EXTRACT(jsonPayload.reason)" }
  depends_on       = [google_project_service.apis]
}

resource "google_logging_metric" "sync_errors" {
  project = var.project
  name    = "converge/sync_errors"
  filter  = "${local.run_logs} AND jsonPayload.message=\"sync failed; error recorded\""
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }
  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "sync_lag" {
  project = var.project
  name    = "converge/sync_lag_ms"
  filter  = "${local.run_logs} AND jsonPayload.message=\"sync minute\""
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "ms"
  }
  value_extractor = "EXTRACT(jsonPayload.lag_ms_max)"
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 24
      growth_factor      = 2
      scale              = 10
    }
  }
  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "current_refreshed" {
  project = var.project
  name    = "converge/current_refreshed"
  filter  = "${local.run_logs} AND jsonPayload.message=\"current tables refreshed\""
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }
  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "silent_drift" {
  project      = var.project
  display_name = "Converge: silent drift found"
  combiner     = "OR"
  conditions {
    display_name = "a reconcile run found differences no sync error explains"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.silent_drift.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_SUM"
      }
    }
  }
  documentation {
    content   = "The pipeline lost something without a trace. The reconciler repaired it (unless the run was refused); its log line names the documents by kind. See the status page (/status on converge-reconciler) and the run's log lines by run_id."
    mime_type = "text/markdown"
  }
  notification_channels = var.alert_notification_channels
}

resource "google_monitoring_alert_policy" "quarantine_rate" {
  project      = var.project
  display_name = "Converge: events quarantined"
  combiner     = "OR"
  conditions {
    display_name = "more than ${var.quarantine_alert_per_10m} events quarantined in 10 minutes"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.quarantined.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.quarantine_alert_per_10m
      duration        = "0s"
      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }
  documentation {
    content   = "Events are arriving that the sync refuses (the `reason` label says why: malformed, unroutable, schema_violation, oversized, from_the_future). Nothing is lost: each is a quarantine record with its body; fix the cause, then replay."
    mime_type = "text/markdown"
  }
  notification_channels = var.alert_notification_channels
}

resource "google_monitoring_alert_policy" "sync_error_rate" {
  project      = var.project
  display_name = "Converge: sync errors"
  combiner     = "OR"
  conditions {
    display_name = "more than ${var.sync_error_alert_per_10m} failed syncs in 10 minutes"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.sync_errors.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.sync_error_alert_per_10m
      duration        = "0s"
      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }
  documentation {
    content   = "The warehouse is refusing or failing appends. Each failure is a sync_errors record that the 10-minute retry job and the reconciler repair; a rising rate means BigQuery is unavailable or a quota is exhausted."
    mime_type = "text/markdown"
  }
  notification_channels = var.alert_notification_channels
}

resource "google_monitoring_alert_policy" "freshness" {
  project      = var.project
  display_name = "Converge: the copy is falling behind"
  combiner     = "OR"
  conditions {
    display_name = "sync lag above ${var.sync_lag_alert_ms} ms for 10 minutes"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.sync_lag.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.sync_lag_alert_ms
      duration        = "600s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_PERCENTILE_95"
        cross_series_reducer = "REDUCE_MAX"
      }
    }
  }
  conditions {
    display_name = "no refresh of the current tables for 45 minutes"
    condition_absent {
      filter   = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.current_refreshed.name}\" AND resource.type=\"cloud_run_revision\""
      duration = "2700s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }
  documentation {
    content   = "Either events take minutes from their Firestore commit to the warehouse (Eventarc backlog, a slow warehouse), or the 15-minute refresh of the current tables has stopped (the converge-refresh-current Scheduler job, the reconciler service). The status page shows both."
    mime_type = "text/markdown"
  }
  notification_channels = var.alert_notification_channels
}
