//! The opportunity store contract: one record per (tenant, id), upserts that keep the
//! first sighting and reopen, listing of open ones per tenant or for all, resolving
//! that happens once.
//!
//! Timestamps here are whole microseconds: Firestore stores no finer.

use std::future::Future;
use std::sync::Arc;

use converge_core::{Opportunity, OpportunityStatus, OpportunityStore, Timestamp, UpsertOutcome};

use crate::case;

/// Runs every opportunity store case, each on a fresh, empty store from `fresh`.
pub async fn opportunity_store_contract<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn OpportunityStore>>,
{
    let suite = "opportunity store";

    case(suite, "an upsert creates the record exactly as given, open", async {
        let store = fresh().await;
        let o = opportunity("acme", "a1", 100);
        assert_eq!(store.upsert_opportunity(o.clone()).await.unwrap(), UpsertOutcome::Opened);
        assert_eq!(store.opportunity("acme", "a1").await.unwrap(), Some(o.clone()), "stored exactly");
        assert_eq!(store.opportunity("other", "a1").await.unwrap(), None, "ids are per tenant");
        assert_eq!(store.opportunity("acme", "nope").await.unwrap(), None);
    })
    .await;

    case(suite, "a second upsert replaces the fields but keeps first_seen, never duplicates", async {
        let store = fresh().await;
        store.upsert_opportunity(opportunity("acme", "a1", 100)).await.unwrap();
        let mut later = opportunity("acme", "a1", 200);
        later.recent_value = Some(0.25);
        later.baseline_value = None;
        later.message = "fell further".into();
        later.as_of = "2025-04-01".into();
        later.batch_id = "batch-2".into();
        assert_eq!(store.upsert_opportunity(later.clone()).await.unwrap(), UpsertOutcome::Updated);
        let stored = store.opportunity("acme", "a1").await.unwrap().unwrap();
        assert_eq!(stored, Opportunity { first_seen: at(100), ..later });
        assert_eq!(store.open_opportunities(Some("acme")).await.unwrap().len(), 1);
    })
    .await;

    case(suite, "open opportunities list per tenant or for all, ordered by tenant then id", async {
        let store = fresh().await;
        for (tenant, id) in [("beta", "b2"), ("acme", "a2"), ("acme", "a1"), ("beta", "b1")] {
            store.upsert_opportunity(opportunity(tenant, id, 100)).await.unwrap();
        }
        let ids = |list: Vec<Opportunity>| list.into_iter().map(|o| format!("{}/{}", o.tenant, o.id)).collect::<Vec<_>>();
        assert_eq!(ids(store.open_opportunities(None).await.unwrap()), ["acme/a1", "acme/a2", "beta/b1", "beta/b2"]);
        assert_eq!(ids(store.open_opportunities(Some("beta")).await.unwrap()), ["beta/b1", "beta/b2"]);
        assert!(store.open_opportunities(Some("nobody")).await.unwrap().is_empty());
    })
    .await;

    case(suite, "resolving closes once; a later upsert reopens the same record", async {
        let store = fresh().await;
        store.upsert_opportunity(opportunity("acme", "a1", 100)).await.unwrap();
        store.upsert_opportunity(opportunity("acme", "a2", 100)).await.unwrap();
        assert!(store.resolve_opportunity("acme", "a1", at(300), "batch-r").await.unwrap());
        assert!(!store.resolve_opportunity("acme", "a1", at(400), "batch-s").await.unwrap(), "already resolved");
        assert!(!store.resolve_opportunity("acme", "missing", at(400), "batch-s").await.unwrap());
        let resolved = store.opportunity("acme", "a1").await.unwrap().unwrap();
        assert_eq!(
            resolved,
            Opportunity { status: OpportunityStatus::Resolved, resolved_at: Some(at(300)), batch_id: "batch-r".into(), ..opportunity("acme", "a1", 100) }
        );
        let open: Vec<String> = store.open_opportunities(Some("acme")).await.unwrap().into_iter().map(|o| o.id).collect();
        assert_eq!(open, ["a2"]);

        assert_eq!(store.upsert_opportunity(opportunity("acme", "a1", 500)).await.unwrap(), UpsertOutcome::Updated);
        let reopened = store.opportunity("acme", "a1").await.unwrap().unwrap();
        assert_eq!(reopened, Opportunity { first_seen: at(100), ..opportunity("acme", "a1", 500) }, "open, no resolved_at");
    })
    .await;

    case(suite, "concurrent upserts of one opportunity leave one record", async {
        let store = fresh().await;
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.upsert_opportunity(opportunity("c", "same", 100 + i)).await })
            })
            .collect();
        let mut opened = 0;
        for task in tasks {
            if task.await.expect("upsert task").expect("upsert") == UpsertOutcome::Opened {
                opened += 1;
            }
        }
        assert_eq!(opened, 1, "exactly one upsert created it");
        assert_eq!(store.open_opportunities(Some("c")).await.unwrap().len(), 1);
    })
    .await;
}

fn at(micros: i64) -> Timestamp {
    Timestamp::from_micros(1_700_000_000_000_000 + micros)
}

fn opportunity(tenant: &str, id: &str, seen: i64) -> Opportunity {
    Opportunity {
        id: id.into(),
        tenant: tenant.into(),
        detector: "page_conversion_rate_drop".into(),
        title: "Page conversion rate dropped".into(),
        severity: "warning".into(),
        entity_type: "page".into(),
        entity_id: "/pricing/plans 2".into(),
        message: "Conversion on /pricing fell to 1.2%".into(),
        recent_value: Some(1.2),
        baseline_value: Some(2.5),
        reference_value: Some(1.75),
        volume: Some(1234.0),
        period: "2025-03-02/28d".into(),
        as_of: "2025-03-31".into(),
        first_seen: at(seen),
        last_seen: at(seen),
        status: OpportunityStatus::Open,
        resolved_at: None,
        batch_id: "batch-1".into(),
        evidence: converge_core::Evidence {
            test: "proportion against its baseline".into(),
            effect_pct: Some(-42.5),
            baseline_volume: Some(2800.0),
            statistic: Some(-4.25),
            p_value: Some(1.1e-5),
            q_value: Some(3.0e-4),
        },
    }
}
