# The detector runner lists every tenant's open opportunities with one collection-group
# query over orgs/*/opportunities (status == "open"). Firestore keeps single-field
# indexes for collection scope automatically, but not for collection-group scope: this
# adds the `status` field's ascending index with collection-group scope (and keeps the
# collection-scope one the per-tenant query uses). The database itself is the app's,
# created outside this configuration.
resource "google_firestore_field" "opportunities_status" {
  project    = var.project
  database   = var.firestore_database
  collection = "opportunities"
  field      = "status"

  index_config {
    indexes {
      order       = "ASCENDING"
      query_scope = "COLLECTION"
    }
    indexes {
      order       = "ASCENDING"
      query_scope = "COLLECTION_GROUP"
    }
  }

  depends_on = [google_project_service.apis]
}
