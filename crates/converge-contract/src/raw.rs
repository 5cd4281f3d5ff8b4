//! The raw source contract: a date range of one collection, from an index, at one
//! read time, in (date, path) order, streamed in pages.

use std::future::Future;
use std::sync::Arc;

use chrono::NaiveDate;
use converge_core::value::fields_from_json;
use converge_core::{DocWrite, ErrorKind, RawSource, SourceStore};
use futures::StreamExt;

use crate::case;

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 5, d).expect("a May day")
}

fn set(path: &str, json: serde_json::Value) -> DocWrite {
    DocWrite::Set { path: path.into(), fields: fields_from_json(&json).expect("fields") }
}

async fn paths(raw: &dyn RawSource, collection: &str, from: NaiveDate, to: NaiveDate) -> Vec<String> {
    let scan = raw.scan_by_date(collection, "date", from, to).await.expect("scan by date");
    scan.items.map(|doc| doc.expect("scanned document").path).collect().await
}

/// Runs every raw source case, each on a fresh, empty store from `fresh` (the same
/// store behind both traits: writes through one, reads through the other).
/// `max_batch`: most writes one `apply` may carry.
pub async fn raw_source_contract<F, Fut>(max_batch: usize, fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = (Arc<dyn SourceStore>, Arc<dyn RawSource>)>,
{
    let suite = "raw source";

    case(suite, "a date range returns exactly its documents, by date then path", async {
        let (store, raw) = fresh().await;
        store
            .apply(vec![
                set("orgs/acme/ga4_pages/b", serde_json::json!({"date": "2025-05-02", "v": 1})),
                set("orgs/acme/ga4_pages/a", serde_json::json!({"date": "2025-05-03", "v": 2})),
                set("orgs/acme/ga4_pages/c", serde_json::json!({"date": "2025-05-02", "v": 3})),
                set("orgs/acme/ga4_pages/early", serde_json::json!({"date": "2025-05-01"})),
                set("orgs/acme/ga4_pages/late", serde_json::json!({"date": "2025-05-04"})),
                set("orgs/acme/ga4_pages/nodate", serde_json::json!({"v": 4})),
                set("orgs/acme/ga4_pages/numeric", serde_json::json!({"date": 20250502})),
                set("orgs/acme/ga4_devices/d", serde_json::json!({"date": "2025-05-02"})),
                set("orgs/beta/ga4_pages/e", serde_json::json!({"date": "2025-05-02"})),
                set("orgs/acme/ga4_pages/b/sub/f", serde_json::json!({"date": "2025-05-02"})),
            ])
            .await
            .unwrap();
        assert_eq!(
            paths(raw.as_ref(), "orgs/acme/ga4_pages", day(2), day(3)).await,
            ["orgs/acme/ga4_pages/b", "orgs/acme/ga4_pages/c", "orgs/acme/ga4_pages/a"]
        );
        assert_eq!(paths(raw.as_ref(), "orgs/acme/ga4_pages", day(4), day(4)).await, ["orgs/acme/ga4_pages/late"]);
        assert!(paths(raw.as_ref(), "orgs/acme/ga4_pages", day(5), day(9)).await.is_empty());
        assert!(paths(raw.as_ref(), "orgs/none/ga4_pages", day(1), day(9)).await.is_empty());
        let scan = raw.scan_by_date("orgs/acme/ga4_pages", "date", day(2), day(2)).await.unwrap();
        let docs: Vec<_> = scan.items.collect().await;
        let doc = docs[0].as_ref().unwrap();
        assert_eq!(doc.fields, fields_from_json(&serde_json::json!({"date": "2025-05-02", "v": 1})).unwrap(), "whole documents, exactly");
    })
    .await;

    case(suite, "updates and deletes move documents between dates", async {
        let (store, raw) = fresh().await;
        store.apply(vec![set("orgs/acme/ad_keywords/k", serde_json::json!({"date": "2025-05-02"}))]).await.unwrap();
        store.apply(vec![set("orgs/acme/ad_keywords/k", serde_json::json!({"date": "2025-05-06"}))]).await.unwrap();
        assert!(paths(raw.as_ref(), "orgs/acme/ad_keywords", day(2), day(2)).await.is_empty(), "the old date no longer finds it");
        assert_eq!(paths(raw.as_ref(), "orgs/acme/ad_keywords", day(6), day(6)).await, ["orgs/acme/ad_keywords/k"]);
        store.apply(vec![set("orgs/acme/ad_keywords/k", serde_json::json!({"other": "2025-05-06"}))]).await.unwrap();
        assert!(paths(raw.as_ref(), "orgs/acme/ad_keywords", day(1), day(9)).await.is_empty(), "a document without the field drops out");
        store.apply(vec![set("orgs/acme/ad_keywords/k", serde_json::json!({"date": "2025-05-06"}))]).await.unwrap();
        store.apply(vec![DocWrite::Delete { path: "orgs/acme/ad_keywords/k".into() }]).await.unwrap();
        assert!(paths(raw.as_ref(), "orgs/acme/ad_keywords", day(1), day(9)).await.is_empty(), "a deleted document is gone");
    })
    .await;

    case(suite, "a scan reads at one time, no earlier than the last commit", async {
        let (store, raw) = fresh().await;
        let commit = store.apply(vec![set("orgs/acme/email_campaigns/e", serde_json::json!({"date": "2025-05-02"}))]).await.unwrap();
        let scan = raw.scan_by_date("orgs/acme/email_campaigns", "date", day(1), day(3)).await.unwrap();
        assert!(scan.read_time >= commit, "read time {:?} before the commit {:?}", scan.read_time, commit);
        let docs: Vec<_> = scan.items.collect().await;
        assert_eq!(docs.len(), 1);
        assert!(docs[0].as_ref().unwrap().update_time <= scan.read_time);
    })
    .await;

    case(suite, "a large day streams back whole, in path order", async {
        let (store, raw) = fresh().await;
        let total = 1_234;
        let writes: Vec<DocWrite> =
            (0..total).map(|i| set(&format!("orgs/acme/ga4_pages/p{i:05}"), serde_json::json!({"date": "2025-05-07", "i": i}))).collect();
        for batch in writes.chunks(max_batch) {
            store.apply(batch.to_vec()).await.unwrap();
        }
        let got = paths(raw.as_ref(), "orgs/acme/ga4_pages", day(7), day(7)).await;
        let expected: Vec<String> = (0..total).map(|i| format!("orgs/acme/ga4_pages/p{i:05}")).collect();
        assert_eq!(got, expected);
    })
    .await;

    case(suite, "an inverted range is the caller's mistake", async {
        let (_, raw) = fresh().await;
        let error = raw.scan_by_date("orgs/acme/ga4_pages", "date", day(3), day(2)).await.err().expect("an inverted range fails");
        assert_eq!(error.kind, ErrorKind::InvalidInput, "{error}");
    })
    .await;
}
