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

# Reconcile and rebuild read one tenant's documents of a nested route
# (orgs/{tenant}/projects/{project}/tasks/{doc}) with a collection-group query scoped to
# the tenant's document: parent orgs/acme, collection id `tasks`, all_descendants,
# ordered by __name__ and paged with a __name__ cursor
# (crates/converge-firestore/src/subtree.rs). A collection-group query is served by
# indexes of collection-group scope ("indexes with a collection group query scope
# specified allow queries against all collections descended from a specific document,
# specified at query time",
# https://firebase.google.com/docs/firestore/reference/rest/v1/projects.databases.collectionGroups.indexes),
# and Firestore keeps none of that scope by default: without this override the query
# fails with FAILED_PRECONDITION asking for a COLLECTION_GROUP_ASC index on __name__.
# One per collection id that ends a nested route of the mirror configuration; routes
# with only literal segments after {tenant} use plain collection queries and need none.
variable "nested_route_collections" {
  description = "Collection ids that end a nested route of the mirror configuration (a route with a wildcard besides {tenant} and {doc}, such as orgs/{tenant}/projects/{project}/tasks/{doc} → \"tasks\"): each gets the collection-group index on __name__ that scanning one tenant's documents needs."
  type        = list(string)
  default     = []
}

resource "google_firestore_field" "nested_route_name" {
  for_each   = toset(var.nested_route_collections)
  project    = var.project
  database   = var.firestore_database
  collection = each.value
  field      = "__name__"

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

# The change field (a route's `change_field`, `updated_at` in the demo's nested route
# orgs/{tenant}/projects/{project}/tasks/{doc}) needs no override here, nested route or
# not. An incremental reconcile reads `where updated_at >= since` on each collection of
# the tenant's scope in turn (orgs/acme/projects/p/tasks, …; the project ids listed first),
# never as one collection-group query under orgs/acme: Firestore accepts a
# collection-group query below a document only with __name__ conditions and orders
# ("collection group queries are only allowed at the root parent"), and one at the root
# would return every tenant's changes to each tenant's run
# (crates/converge-firestore/src/ranges.rs). Each of those queries is served by the
# automatic single-field index of collection scope that Firestore keeps for every field.
# So: do not exempt the change field from indexing, and do not declare a
# google_firestore_field for it: an override replaces the field's automatic indexes
# (descending and array-contains included) that the app's own queries may use.

# Security Rules: infra/firestore.rules keeps the app's client SDKs out of sync_errors
# and quarantine and lets a tenant's clients read (never write) its opportunities.
# Converge itself does not need them (rules never judge its IAM-authorized server
# library). A release replaces the database's whole ruleset, the app's rules included,
# so Terraform deploys rules only when told which file: infra/firestore.rules itself
# for a database the app's clients use for nothing else, or the app's rules file with
# Converge's block merged in (infra/README.md, "Security Rules"). Unset, Terraform
# leaves the database's rules alone.
variable "firestore_rules_file" {
  description = "Path (absolute, or relative to infra/) of the Security Rules file to deploy to the Firestore database: \"firestore.rules\" (Converge's alone) or the app's rules with Converge's block merged in. Empty: Terraform does not manage the database's rules."
  type        = string
  default     = ""
}

locals {
  manage_firestore_rules = var.firestore_rules_file != ""
  firestore_rules        = local.manage_firestore_rules ? file(var.firestore_rules_file) : ""
  # Converge's block of infra/firestore.rules, from its `// converge:begin` line to its
  # `// converge:end` line, with every run of whitespace made one space: the deployed
  # file must contain it, however the app indents it.
  converge_rules_block = replace(regex("(?s)// converge:begin.*// converge:end", file("${path.module}/firestore.rules")), "/\\s+/", " ")
}

resource "google_project_service" "firebaserules" {
  count              = local.manage_firestore_rules ? 1 : 0
  service            = "firebaserules.googleapis.com"
  disable_on_destroy = false
}

resource "google_firebaserules_ruleset" "firestore" {
  count   = local.manage_firestore_rules ? 1 : 0
  project = var.project
  source {
    files {
      name    = "firestore.rules"
      content = local.firestore_rules
    }
  }

  lifecycle {
    # A ruleset cannot change: new rules are a new ruleset. Create it before the old
    # one goes, so the release is never left pointing at a deleted ruleset.
    create_before_destroy = true
    precondition {
      condition     = strcontains(replace(local.firestore_rules, "/\\s+/", " "), local.converge_rules_block)
      error_message = "${var.firestore_rules_file} lacks Converge's Security Rules as they stand in infra/firestore.rules (the lines from `// converge:begin` to `// converge:end`): merge them in again (infra/README.md, \"Security Rules\")."
    }
  }

  depends_on = [google_project_service.firebaserules]
}

# The release that puts the ruleset in force for the database. Its name is
# `cloud.firestore` for the (default) database and `cloud.firestore/DATABASE_ID` for a
# named one (the provider's sample for an additional database, and `gcloud firebase
# security-rules release`: https://docs.cloud.google.com/sdk/gcloud/reference/alpha/firebase/security-rules/release).
# If the database already has rules (deployed from the Firebase console or CLI), the
# release exists: import it first (infra/README.md).
resource "google_firebaserules_release" "firestore" {
  count        = local.manage_firestore_rules ? 1 : 0
  project      = var.project
  name         = var.firestore_database == "(default)" ? "cloud.firestore" : "cloud.firestore/${var.firestore_database}"
  ruleset_name = "projects/${var.project}/rulesets/${google_firebaserules_ruleset.firestore[0].name}"

  lifecycle {
    # As the provider's documentation does: a new ruleset replaces the release.
    replace_triggered_by = [google_firebaserules_ruleset.firestore[0]]
  }
}
