//! The Firestore opportunity store beyond the shared contract: where the documents
//! live (the app listens at `orgs/{tenant}/opportunities/{id}`), what the
//! collection-group listing leaves out, and ids that cannot be documents.

mod common;

use converge_core::{DocWrite, ErrorKind, Opportunity, OpportunityStatus, OpportunityStore, SourceStore, Timestamp, Value};

fn opportunity(tenant: &str, id: &str) -> Opportunity {
    Opportunity {
        id: id.into(),
        tenant: tenant.into(),
        detector: "page_slow_load".into(),
        title: "Slow page".into(),
        severity: "warning".into(),
        entity_type: "page".into(),
        entity_id: "/checkout".into(),
        message: "slow".into(),
        recent_value: Some(4200.5),
        baseline_value: None,
        reference_value: Some(3000.0),
        volume: Some(812.0),
        period: "2025-03-31/7d".into(),
        as_of: "2025-03-31".into(),
        first_seen: Timestamp::new(1_743_465_600, 123_456_789),
        last_seen: Timestamp::new(1_743_465_600, 123_456_789),
        status: OpportunityStatus::Open,
        resolved_at: None,
        batch_id: "b1".into(),
        evidence: Default::default(),
    }
}

#[tokio::test]
async fn opportunities_are_documents_under_their_tenant_and_only_those_are_listed() {
    let Some(store) = common::fresh_source().await else { return };
    store.upsert_opportunity(opportunity("acme", "0123abcd")).await.unwrap();

    // The document the app listens to, with readable fields.
    let doc = store.get("orgs/acme/opportunities/0123abcd").await.unwrap().expect("stored where the app reads it");
    assert_eq!(doc.fields.get("status"), Some(&Value::String("open".into())));
    assert_eq!(doc.fields.get("entity_id"), Some(&Value::String("/checkout".into())));
    assert!(matches!(doc.fields.get("first_seen"), Some(Value::Timestamp(_))));
    assert_eq!(store.opportunity("acme", "0123abcd").await.unwrap().unwrap().first_seen, Timestamp::new(1_743_465_600, 123_456_789), "exact to the nanosecond");

    // Another collection called `opportunities`, elsewhere: not ours.
    let mut fields = converge_core::Fields::new();
    fields.insert("status".into(), Value::String("open".into()));
    store.apply(vec![DocWrite::Set { path: "crm/acme/opportunities/deal-1".into(), fields }]).await.unwrap();
    let open = store.open_opportunities(None).await.unwrap();
    assert_eq!(open.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(), ["0123abcd"]);
}

#[tokio::test]
async fn a_tenant_or_id_that_cannot_be_a_document_id_is_refused() {
    let Some(store) = common::fresh_source().await else { return };
    for (tenant, id) in [("a/b", "x"), ("", "x"), ("acme", "x/y")] {
        let error = store.upsert_opportunity(opportunity(tenant, id)).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidInput, "{error}");
        assert!(error.message.contains("orgs/"), "names the path: {error}");
    }
    assert_eq!(store.open_opportunities(Some("a/b")).await.unwrap_err().kind, ErrorKind::InvalidInput);
}
