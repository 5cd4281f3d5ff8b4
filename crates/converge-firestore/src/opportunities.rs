//! Opportunities ([`OpportunityStore`]) as Firestore documents at
//! `orgs/{tenant}/opportunities/{id}`, where the app listens to them in realtime.
//!
//! One field per [`Opportunity`] field; times as Firestore timestamps (what the app
//! reads and orders by) plus a `*_nanos` integer with the exact fraction, as the
//! error log keeps them, so a record reads back exactly as written.
//!
//! # Upsert without a transaction
//!
//! Two single-write commits with preconditions, the error log's pattern
//! ([`crate::error_log`]):
//!
//! 1. *create* the whole document on condition that it does not exist → `Opened`;
//! 2. if it does: *update* every field but `first_seen` (the mask leaves it alone;
//!    `resolved_at` is in the mask and absent, so it is deleted) on condition that it
//!    exists → `Updated`. Deleted in between: back to 1.
//!
//! Both writes set a whole state with no transform, so a retried or concurrent upsert
//! converges on the same document: concurrent upserts of one id create it exactly once
//! (the service serializes the commits), and nothing is read first, so there is no
//! closure to re-run on contention. A listener sees one change per upsert.
//!
//! # Listing
//!
//! One tenant: an equality query on `status` in its `opportunities` collection (the
//! automatic single-field index). Every tenant: the same filter as a collection-group
//! query over all `opportunities` collections — which needs the `status` field's
//! single-field index with collection-group scope, off by default in Firestore
//! (infra declares it; the emulator needs none). Documents of a collection named
//! `opportunities` elsewhere than under `orgs/{tenant}` are not ours and are skipped.

use std::collections::HashMap;

use async_trait::async_trait;
use converge_core::opportunity::OPPORTUNITIES_COLLECTION;
use converge_core::{Evidence, Opportunity, OpportunityStatus, OpportunityStore, StoreError, Timestamp, UpsertOutcome, Value};
use firestore::gcloud_sdk::google::firestore::v1 as pb;
use firestore::gcloud_sdk::tonic::Code;
use pb::precondition::ConditionType;
use pb::structured_query::CollectionSelector;

use crate::convert::value_to_proto;
use crate::error::FirestoreError;
use crate::error_log::{document, equals, put_time, string, Merge, RecordReader, Stored, MAX_MERGE_ROUNDS};
use crate::source::{FirestoreSource, Inner};

/// The collection of tenants whose documents hold the opportunities.
const ORGS: &str = "orgs";

/// Every field an upsert writes except `first_seen`: the update mask of step 2.
const UPDATED_FIELDS: [&str; 26] = [
    "id",
    "tenant",
    "detector",
    "title",
    "severity",
    "entity_type",
    "entity_id",
    "message",
    "recent_value",
    "baseline_value",
    "reference_value",
    "volume",
    "period",
    "as_of",
    "last_seen",
    "last_seen_nanos",
    "status",
    "resolved_at",
    "resolved_at_nanos",
    "batch_id",
    "test",
    "effect_pct",
    "baseline_volume",
    "statistic",
    "p_value",
    "q_value",
];

impl Inner {
    /// `…/documents/orgs/{tenant}/opportunities/{id}`, after checking both are
    /// document ids (no `/`, not empty): they come from data.
    fn opportunity_name(&self, tenant: &str, id: &str) -> Result<String, FirestoreError> {
        for (what, part) in [("tenant", tenant), ("opportunity id", id)] {
            if part.is_empty() || part.contains('/') {
                return Err(FirestoreError::InvalidDocumentPath {
                    path: format!("{ORGS}/{tenant}/{OPPORTUNITIES_COLLECTION}/{id}"),
                    reason: if part.is_empty() { empty_reason(what) } else { slash_reason(what) },
                });
            }
        }
        self.paths.document_name(&format!("{ORGS}/{tenant}/{OPPORTUNITIES_COLLECTION}/{id}"))
    }

    /// Whether `name` is `…/documents/orgs/{tenant}/opportunities/{id}`.
    fn is_opportunity_name(&self, name: &str) -> bool {
        let Some(rest) = name.strip_prefix(self.paths.documents.as_str()).and_then(|r| r.strip_prefix('/')) else { return false };
        let parts: Vec<&str> = rest.split('/').collect();
        matches!(parts.as_slice(), [ORGS, _, OPPORTUNITIES_COLLECTION, _])
    }
}

fn empty_reason(what: &str) -> &'static str {
    if what == "tenant" {
        "the tenant is empty"
    } else {
        "the opportunity id is empty"
    }
}

fn slash_reason(what: &str) -> &'static str {
    if what == "tenant" {
        "the tenant contains `/`"
    } else {
        "the opportunity id contains `/`"
    }
}

fn double(value: Option<f64>) -> pb::Value {
    value_to_proto(&value.map_or(Value::Null, Value::Double))
}

/// The fields of `o` as stored (`resolved_at` only when set).
fn fields(o: &Opportunity) -> HashMap<String, pb::Value> {
    let mut f = HashMap::new();
    for (name, value) in [
        ("id", &o.id),
        ("tenant", &o.tenant),
        ("detector", &o.detector),
        ("title", &o.title),
        ("severity", &o.severity),
        ("entity_type", &o.entity_type),
        ("entity_id", &o.entity_id),
        ("message", &o.message),
        ("period", &o.period),
        ("as_of", &o.as_of),
        ("batch_id", &o.batch_id),
        ("test", &o.evidence.test),
    ] {
        f.insert(name.to_owned(), string(value));
    }
    f.insert("status".to_owned(), string(o.status.as_str()));
    for (name, value) in [
        ("recent_value", o.recent_value),
        ("baseline_value", o.baseline_value),
        ("reference_value", o.reference_value),
        ("volume", o.volume),
        ("effect_pct", o.evidence.effect_pct),
        ("baseline_volume", o.evidence.baseline_volume),
        ("statistic", o.evidence.statistic),
        ("p_value", o.evidence.p_value),
        ("q_value", o.evidence.q_value),
    ] {
        f.insert(name.to_owned(), double(value));
    }
    put_time(&mut f, "first_seen", o.first_seen);
    put_time(&mut f, "last_seen", o.last_seen);
    if let Some(at) = o.resolved_at {
        put_time(&mut f, "resolved_at", at);
    }
    f
}

impl RecordReader {
    fn optional_double(&mut self, field: &str) -> Result<Option<f64>, FirestoreError> {
        match self.take(field) {
            Some(pb::value::ValueType::DoubleValue(d)) => Ok(Some(d)),
            // An integral value written by another tool is still the number.
            Some(pb::value::ValueType::IntegerValue(i)) => Ok(Some(i as f64)),
            None | Some(pb::value::ValueType::NullValue(_)) => Ok(None),
            Some(_) => Err(self.corrupt(field, "a number or null")),
        }
    }

    fn optional_time(&mut self, field: &str) -> Result<Option<Timestamp>, FirestoreError> {
        if self.fields.contains_key(field) {
            self.time(field).map(Some)
        } else {
            Ok(None)
        }
    }
}

fn opportunity_from_doc(doc: pb::Document) -> Result<Opportunity, FirestoreError> {
    let mut r = RecordReader::new("opportunity", doc);
    let status_text = r.string("status")?;
    let status = OpportunityStatus::parse(&status_text).ok_or_else(|| r.corrupt("status", "`open` or `resolved`"))?;
    Ok(Opportunity {
        id: r.string("id")?,
        tenant: r.string("tenant")?,
        detector: r.string("detector")?,
        title: r.string("title")?,
        severity: r.string("severity")?,
        entity_type: r.string("entity_type")?,
        entity_id: r.string("entity_id")?,
        message: r.string("message")?,
        recent_value: r.optional_double("recent_value")?,
        baseline_value: r.optional_double("baseline_value")?,
        reference_value: r.optional_double("reference_value")?,
        volume: r.optional_double("volume")?,
        period: r.string("period")?,
        as_of: r.string("as_of")?,
        first_seen: r.time("first_seen")?,
        last_seen: r.time("last_seen")?,
        status,
        resolved_at: r.optional_time("resolved_at")?,
        batch_id: r.string("batch_id")?,
        evidence: Evidence {
            test: r.optional_string("test")?.unwrap_or_default(),
            effect_pct: r.optional_double("effect_pct")?,
            baseline_volume: r.optional_double("baseline_volume")?,
            statistic: r.optional_double("statistic")?,
            p_value: r.optional_double("p_value")?,
            q_value: r.optional_double("q_value")?,
        },
    })
}

fn opportunities_query(all_descendants: bool) -> pb::StructuredQuery {
    pb::StructuredQuery {
        from: vec![CollectionSelector { collection_id: OPPORTUNITIES_COLLECTION.to_owned(), all_descendants }],
        r#where: Some(equals("status", string(OpportunityStatus::Open.as_str()))),
        ..Default::default()
    }
}

#[async_trait]
impl OpportunityStore for FirestoreSource {
    async fn upsert_opportunity(&self, opportunity: Opportunity) -> Result<UpsertOutcome, StoreError> {
        let inner = &self.inner;
        let name = inner.opportunity_name(&opportunity.tenant, &opportunity.id)?;
        // It fires, so it is stored open whatever it was.
        let stored = Opportunity { status: OpportunityStatus::Open, resolved_at: None, ..opportunity };
        let create = fields(&stored);
        let mut update = create.clone();
        update.remove("first_seen");
        update.remove("first_seen_nanos");
        let merge = Merge { fields: update, mask: UPDATED_FIELDS.iter().map(|f| (*f).to_owned()).collect(), increment: None };
        Ok(match inner.create_or_merge("upsert_opportunity", &stored.id, name, create, merge).await? {
            Stored::Created => UpsertOutcome::Opened,
            Stored::Merged => UpsertOutcome::Updated,
        })
    }

    async fn opportunity(&self, tenant: &str, id: &str) -> Result<Option<Opportunity>, StoreError> {
        let inner = &self.inner;
        let name = inner.opportunity_name(tenant, id)?;
        match inner.read_with_retry(|| inner.get_by_name(name.clone())).await? {
            None => Ok(None),
            Some(doc) => Ok(Some(opportunity_from_doc(doc)?)),
        }
    }

    async fn open_opportunities(&self, tenant: Option<&str>) -> Result<Vec<Opportunity>, StoreError> {
        let inner = &self.inner;
        let docs = match tenant {
            Some(tenant) => {
                // The tenant's own collection, under `orgs/{tenant}` (checked as a name).
                inner.opportunity_name(tenant, "probe")?;
                let parent = format!("{}/{ORGS}/{tenant}", inner.paths.documents);
                inner.read_with_retry(|| inner.run_query(parent.clone(), opportunities_query(false), None)).await?.0
            }
            None => inner.query_all(opportunities_query(true)).await?,
        };
        let mut open = docs
            .into_iter()
            .filter(|doc| inner.is_opportunity_name(&doc.name))
            .map(opportunity_from_doc)
            .collect::<Result<Vec<_>, _>>()?;
        open.sort_by(|a, b| (&a.tenant, &a.id).cmp(&(&b.tenant, &b.id)));
        Ok(open)
    }

    async fn resolve_opportunity(&self, tenant: &str, id: &str, at: Timestamp, batch_id: &str) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let name = inner.opportunity_name(tenant, id)?;
        let mut fields = HashMap::new();
        fields.insert("status".to_owned(), string(OpportunityStatus::Resolved.as_str()));
        fields.insert("batch_id".to_owned(), string(batch_id));
        put_time(&mut fields, "resolved_at", at);
        let mut mask: Vec<String> = fields.keys().cloned().collect();
        mask.sort();
        for _ in 0..MAX_MERGE_ROUNDS {
            let Some(doc) = inner.read_with_retry(|| inner.get_by_name(name.clone())).await? else { return Ok(false) };
            let open = matches!(
                doc.fields.get("status").and_then(|v| v.value_type.as_ref()),
                Some(pb::value::ValueType::StringValue(s)) if s == OpportunityStatus::Open.as_str()
            );
            if !open {
                return Ok(false);
            }
            let Some(update_time) = doc.update_time else {
                return Err(FirestoreError::MissingInResponse { operation: "GetDocument", what: "update_time" }.into());
            };
            // Only if nobody wrote it since it was read open: an upsert in between
            // (it fired again) wins, and this resolve looks again.
            let write = pb::Write {
                update_mask: Some(pb::DocumentMask { field_paths: mask.clone() }),
                update_transforms: Vec::new(),
                current_document: Some(pb::Precondition { condition_type: Some(ConditionType::UpdateTime(update_time)) }),
                operation: Some(pb::write::Operation::Update(document(name.clone(), fields.clone()))),
            };
            match inner.commit(vec![write]).await {
                Ok(_) => return Ok(true),
                Err(e) if matches!(e.code(), Some(Code::FailedPrecondition | Code::NotFound | Code::Aborted)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(FirestoreError::Contention { operation: "resolve_opportunity", id: id.to_owned(), attempts: MAX_MERGE_ROUNDS }.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_update_mask_is_every_stored_field_but_first_seen() {
        let o = Opportunity {
            id: "i".into(),
            tenant: "t".into(),
            detector: "d".into(),
            title: "T".into(),
            severity: "info".into(),
            entity_type: "page".into(),
            entity_id: "/".into(),
            message: "m".into(),
            recent_value: Some(1.0),
            baseline_value: None,
            reference_value: None,
            volume: None,
            period: "p".into(),
            as_of: "2025-03-31".into(),
            first_seen: Timestamp::from_micros(1),
            last_seen: Timestamp::from_micros(2),
            status: OpportunityStatus::Open,
            resolved_at: Some(Timestamp::from_micros(3)),
            batch_id: "b".into(),
            evidence: Default::default(),
        };
        let mut stored: Vec<String> = fields(&o).into_keys().filter(|k| !k.starts_with("first_seen")).collect();
        stored.sort();
        let mut mask: Vec<String> = UPDATED_FIELDS.iter().map(|f| (*f).to_owned()).collect();
        mask.sort();
        assert_eq!(stored, mask, "a field the mask misses would keep a stale value");
    }
}
