# Where events go that Eventarc could not deliver. Eventarc delivers through a Pub/Sub
# push subscription it creates per trigger and redelivers every answer that is not a
# success, with backoff, for the subscription's retention, then drops the event unless
# the subscription has a dead-letter topic
# (https://cloud.google.com/eventarc/docs/retry-events). deploy/deploy.sh points each
# trigger's subscription here after DEAD_LETTER_MAX_ATTEMPTS deliveries.
#
# A topic without a subscription loses what is published to it
# (https://cloud.google.com/pubsub/docs/handling-failures): the hold subscription keeps
# dead letters for 7 days, to be inspected (`gcloud pubsub subscriptions pull
# converge-dead-letter-hold`) and replayed once the cause is fixed. Any event lost
# beyond that is still found by the reconciler: its document's latest state is
# repaired (as missing or different, silent when no sync error names it); the
# versions between are not recoverable.

resource "google_pubsub_topic" "dead_letter" {
  name       = "converge-dead-letter"
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription" "dead_letter_hold" {
  name                       = "converge-dead-letter-hold"
  topic                      = google_pubsub_topic.dead_letter.id
  message_retention_duration = "604800s"
  ack_deadline_seconds       = 60
  # Never expires for want of activity.
  expiration_policy {
    ttl = ""
  }
}

# Pub/Sub's service agent publishes dead letters to the topic (it must also read each
# trigger's subscription: deploy/deploy.sh grants that on the subscription Eventarc
# created).
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  topic  = google_pubsub_topic.dead_letter.id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

data "google_project" "this" {
  project_id = var.project
}
