//! The source store contract: exact values, atomic batches with one commit time,
//! and consistent, ordered, streamed scans, of one collection and of a route's
//! documents of one tenant at any depth.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use converge_core::hash::content_hash;
use converge_core::value::fields_from_json;
use converge_core::{DocState, DocWrite, ErrorKind, Fields, GeoPoint, PathPattern, SourceScope, SourceStore, Timestamp, Value};
use futures::StreamExt;

use crate::case;

/// What the suite needs to know about the store under test.
#[derive(Debug, Clone)]
pub struct SourceContract {
    /// The prefix a reference value must carry to be valid in this store: Firestore
    /// only accepts references into its own database
    /// (`projects/P/databases/(default)/documents`).
    pub reference_root: String,
    /// Most writes one `apply` may carry (Firestore commits at most 500).
    pub max_batch: usize,
}

/// Runs every source store case, each on a fresh, empty store from `fresh`.
pub async fn source_store_contract<F, Fut>(contract: SourceContract, fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn SourceStore>>,
{
    let suite = "source store";

    case(suite, "every value type comes back exactly", async {
        let store = fresh().await;
        let fields = every_type(&contract.reference_root);
        let commit = store.apply(vec![set("orgs/acme/records/all", fields.clone())]).await.unwrap();
        let doc = store.get("orgs/acme/records/all").await.unwrap().expect("the document just written");
        assert_eq!(doc.fields, fields);
        assert_eq!(doc.path, "orgs/acme/records/all");
        assert_eq!((doc.create_time, doc.update_time), (commit, commit), "a new document's times are its commit time");
        assert_eq!(store.get("orgs/acme/records/missing").await.unwrap(), None);
    })
    .await;

    case(suite, "an update keeps create_time and moves update_time", async {
        let store = fresh().await;
        let first = store.apply(vec![set("orgs/acme/records/a", json(serde_json::json!({"v": 1})))]).await.unwrap();
        let second = store.apply(vec![set("orgs/acme/records/a", json(serde_json::json!({"v": 2})))]).await.unwrap();
        assert!(second > first, "commit times increase: {first:?} then {second:?}");
        let doc = store.get("orgs/acme/records/a").await.unwrap().unwrap();
        assert_eq!((doc.create_time, doc.update_time), (first, second));
        assert_eq!(doc.fields, json(serde_json::json!({"v": 2})), "a set replaces the whole document");
    })
    .await;

    case(suite, "a batch commits atomically at one time", async {
        let store = fresh().await;
        store.apply(vec![set("orgs/acme/records/old", json(serde_json::json!({"v": 0})))]).await.unwrap();
        let commit = store
            .apply(vec![
                set("orgs/acme/records/a", json(serde_json::json!({"v": 1}))),
                set("orgs/acme/records/b", json(serde_json::json!({"v": 2}))),
                DocWrite::Delete { path: "orgs/acme/records/old".into() },
            ])
            .await
            .unwrap();
        for path in ["orgs/acme/records/a", "orgs/acme/records/b"] {
            assert_eq!(store.get(path).await.unwrap().unwrap().update_time, commit, "{path}");
        }
        assert_eq!(store.get("orgs/acme/records/old").await.unwrap(), None);
    })
    .await;

    case(suite, "deleting a missing document is not an error", async {
        let store = fresh().await;
        store.apply(vec![DocWrite::Delete { path: "orgs/acme/records/never".into() }]).await.expect("delete of a missing document");
        assert_eq!(store.count(&coll("orgs/acme/records")).await.unwrap(), 0);
    })
    .await;

    case(suite, "bad batches are invalid input and write nothing", async {
        let store = fresh().await;
        let twice = vec![set("orgs/acme/records/a", json(serde_json::json!({"v": 1}))), DocWrite::Delete { path: "orgs/acme/records/a".into() }];
        let error = store.apply(twice).await.expect_err("one path twice in a batch");
        assert_eq!(error.kind, ErrorKind::InvalidInput, "{error}");
        let error = store.apply(vec![set("orgs/acme/records", json(serde_json::json!({})))]).await.expect_err("a collection path is no document");
        assert_eq!(error.kind, ErrorKind::InvalidInput, "{error}");
        assert_eq!(store.get("orgs/acme/records/a").await.unwrap(), None);
    })
    .await;

    case(suite, "scans are ordered, exact and hold their snapshot while writes go on", async {
        let store = fresh().await;
        let total = 600;
        let mut last_commit = Timestamp::new(0, 0);
        let writes: Vec<DocWrite> =
            (0..total).map(|i| set(&format!("orgs/acme/records/r{i:04}"), json(serde_json::json!({"i": i, "label": "x"})))).collect();
        for chunk in writes.chunks(contract.max_batch.min(250)) {
            last_commit = store.apply(chunk.to_vec()).await.unwrap();
        }
        // Neighbours that must not leak in: a sibling collection sorting after, another
        // tenant, and a subcollection under one of the documents.
        store
            .apply(vec![
                set("orgs/acme/recordsx/a", json(serde_json::json!({}))),
                set("orgs/globex/records/a", json(serde_json::json!({}))),
                set("orgs/acme/records/r0001/notes/n", json(serde_json::json!({}))),
            ])
            .await
            .unwrap();

        let mut scan = store.scan_states(&coll("orgs/acme/records")).await.unwrap();
        assert!(scan.read_time >= last_commit, "the snapshot includes every earlier commit");
        let mut seen: Vec<DocState> = Vec::new();
        for _ in 0..10 {
            seen.push(scan.items.next().await.expect("more states").unwrap());
        }
        let after = store
            .apply(vec![
                DocWrite::Delete { path: format!("orgs/acme/records/r{:04}", total - 1) },
                set("orgs/acme/records/r0300", json(serde_json::json!({"i": "changed"}))),
                set("orgs/acme/records/r0300x", json(serde_json::json!({"new": true}))),
            ])
            .await
            .unwrap();
        while let Some(state) = scan.items.next().await {
            seen.push(state.unwrap());
        }
        assert!(after > scan.read_time);
        assert_eq!(seen.len(), total, "exactly the documents of the snapshot");
        assert!(seen.windows(2).all(|w| w[0].doc_path < w[1].doc_path), "ascending path order");
        assert!(seen.iter().all(|s| s.version < after.as_micros()), "nothing committed after the snapshot");
        let expected_hash = content_hash(&json(serde_json::json!({"i": 300, "label": "x"})));
        let r300 = seen.iter().find(|s| s.doc_path == "orgs/acme/records/r0300").unwrap();
        assert_eq!(r300.content_hash, expected_hash, "the core's canonical hash of the fields");

        // A new scan sees the new state, and matches the documents one by one.
        let scan = store.scan_states(&coll("orgs/acme/records")).await.unwrap();
        assert!(scan.read_time >= after);
        let states: Vec<DocState> = scan.items.map(Result::unwrap).collect().await;
        assert_eq!(states.len(), total);
        for state in [&states[0], &states[300], &states[total - 1]] {
            let doc = store.get(&state.doc_path).await.unwrap().unwrap();
            assert_eq!((state.version, &state.content_hash), (doc.update_time.as_micros(), &content_hash(&doc.fields)));
        }
        let paths: BTreeSet<&str> = states.iter().map(|s| s.doc_path.as_str()).collect();
        assert!(paths.contains("orgs/acme/records/r0300x") && !paths.contains(format!("orgs/acme/records/r{:04}", total - 1).as_str()));
        assert_eq!(store.count(&coll("orgs/acme/records")).await.unwrap(), total as u64);
        assert_eq!(store.count(&coll("orgs/acme/recordsx")).await.unwrap(), 1);
        assert_eq!(store.count(&coll("orgs/initech/records")).await.unwrap(), 0);

        // Dropping a scan half way must not block later writes.
        let mut abandoned = store.scan_states(&coll("orgs/acme/records")).await.unwrap();
        abandoned.items.next().await.unwrap().unwrap();
        drop(abandoned);
        store.apply(vec![DocWrite::Delete { path: "orgs/acme/records/r0002".into() }]).await.unwrap();
    })
    .await;

    case(suite, "document scans carry whole documents at one read time", async {
        let store = fresh().await;
        let reference_root = contract.reference_root.clone();
        let writes: Vec<DocWrite> = (0..120)
            .map(|i| {
                let mut fields = every_type(&reference_root);
                fields.insert("i".into(), Value::Integer(i));
                set(&format!("orgs/acme/records/d{i:03}"), fields)
            })
            .collect();
        for chunk in writes.chunks(contract.max_batch.min(50)) {
            store.apply(chunk.to_vec()).await.unwrap();
        }
        let scan = store.scan_documents(&coll("orgs/acme/records")).await.unwrap();
        let docs: Vec<_> = scan.items.map(Result::unwrap).collect().await;
        assert_eq!(docs.len(), 120);
        assert!(docs.windows(2).all(|w| w[0].path < w[1].path));
        for doc in [&docs[0], &docs[77], &docs[119]] {
            assert_eq!(Some(doc), store.get(&doc.path).await.unwrap().as_ref(), "scan and get agree");
            assert!(doc.update_time <= scan.read_time);
        }
    })
    .await;

    case(suite, "document ids include parents that exist only through subcollections", async {
        let store = fresh().await;
        store
            .apply(vec![
                set("orgs/globex/records/a", json(serde_json::json!({}))),
                set("orgs/acme/records/a", json(serde_json::json!({}))),
                set("orgs/acme/notes/n", json(serde_json::json!({}))),
                set("orgs/acme-x/records/b", json(serde_json::json!({}))),
                set("orgs/initech", json(serde_json::json!({"name": "a real org document"}))),
                set("orgsx/other/records/c", json(serde_json::json!({}))),
            ])
            .await
            .unwrap();
        assert_eq!(store.list_document_ids("orgs").await.unwrap(), vec!["acme", "acme-x", "globex", "initech"]);
        assert_eq!(store.list_document_ids("orgs/acme/records").await.unwrap(), vec!["a"]);
        assert!(store.list_document_ids("nothing").await.unwrap().is_empty());
    })
    .await;

    case(suite, "a nested route's scan holds one tenant's documents at their depth, in path order, at one snapshot", async {
        let store = fresh().await;
        let pattern = PathPattern::parse(NESTED).unwrap();
        let task = |tenant: &str, project: &str, id: &str| pattern.document_path_with(tenant, &[project], id).unwrap();
        // acme's project ids order differently segment by segment (Firestore's
        // `__name__`) and as whole paths (`p-1/…` and `p.x/…` before `p/…`); only
        // `orgs/acme/projects/q` exists as a document, every other ancestor is missing.
        let mut expected: Vec<String> = Vec::new();
        let mut writes = Vec::new();
        for project in ["p", "p-1", "p.x", "pa", "q"] {
            for i in 0..3 {
                let path = task("acme", project, &format!("t{i}"));
                writes.push(set(&path, json(serde_json::json!({"project": project, "i": i}))));
                expected.push(path);
            }
        }
        writes.push(set("orgs/acme/projects/q", json(serde_json::json!({"name": "a real project document"}))));
        // Neighbours that must not leak in: a `tasks` collection at another depth,
        // another literal, another tenant (and one whose id extends acme's), another
        // route of the same tenant.
        for path in [
            "orgs/acme/tasks/t0",
            "orgs/acme/projects/p/tasks/t0/tasks/deeper",
            "orgs/acme/teams/p/tasks/t0",
            "orgs/acme-x/projects/p/tasks/t0",
            "orgs/globex/projects/p/tasks/t0",
            "orgs/acme/records/r0",
        ] {
            writes.push(set(path, json(serde_json::json!({"neighbour": true}))));
        }
        let last_commit = store.apply(writes).await.unwrap();
        expected.sort();
        let scope = pattern.tenant_scope("acme").unwrap();

        let mut scan = store.scan_states(&scope).await.unwrap();
        assert!(scan.read_time >= last_commit, "the snapshot includes every earlier commit");
        let first = scan.items.next().await.expect("a first state").unwrap();
        // Written after the scan began: a new task in the last project, and a delete.
        let after = store
            .apply(vec![set(&task("acme", "q", "t9"), json(serde_json::json!({}))), DocWrite::Delete { path: task("acme", "q", "t0") }])
            .await
            .unwrap();
        assert!(after > scan.read_time);
        let mut seen = vec![first];
        while let Some(state) = scan.items.next().await {
            seen.push(state.unwrap());
        }
        let paths: Vec<&str> = seen.iter().map(|s| s.doc_path.as_str()).collect();
        assert_eq!(paths, expected, "exactly the tenant's tasks at the route's depth, in byte order of the whole path, as of the snapshot");
        let q0 = seen.iter().find(|s| s.doc_path == task("acme", "q", "t0")).unwrap();
        assert_eq!(q0.content_hash, content_hash(&json(serde_json::json!({"project": "q", "i": 0}))));

        let docs = store.scan_documents(&scope).await.unwrap();
        assert!(docs.read_time >= after);
        let docs: Vec<_> = docs.items.map(Result::unwrap).collect().await;
        let mut now_expected: Vec<String> = expected.iter().filter(|p| **p != task("acme", "q", "t0")).cloned().collect();
        now_expected.push(task("acme", "q", "t9"));
        now_expected.sort();
        assert_eq!(docs.iter().map(|d| d.path.clone()).collect::<Vec<_>>(), now_expected);
        for doc in [&docs[0], &docs[7]] {
            assert_eq!(Some(doc), store.get(&doc.path).await.unwrap().as_ref(), "scan and get agree");
        }
        assert_eq!(store.count(&scope).await.unwrap(), now_expected.len() as u64);
        assert_eq!(store.count(&pattern.tenant_scope("initech").unwrap()).await.unwrap(), 0);
        assert_eq!(store.scan_states(&pattern.tenant_scope("initech").unwrap()).await.unwrap().items.count().await, 0);

        // Tenants whose own document (and their projects') was never written.
        assert_eq!(store.list_tenants(&pattern).await.unwrap(), vec!["acme", "acme-x", "globex"]);
    })
    .await;

    case(suite, "a nested route's scan pages through many documents of many projects", async {
        let store = fresh().await;
        let pattern = PathPattern::parse(NESTED).unwrap();
        let mut expected = Vec::new();
        let writes: Vec<DocWrite> = (0..450)
            .map(|i| {
                let path = pattern.document_path_with("globex", &[&format!("proj{}", i % 3)], &format!("t{i:04}")).unwrap();
                expected.push(path.clone());
                set(&path, json(serde_json::json!({"i": i})))
            })
            .collect();
        for chunk in writes.chunks(contract.max_batch.min(250)) {
            store.apply(chunk.to_vec()).await.unwrap();
        }
        store.apply(vec![set("orgs/globex/archive/x/tasks/t0000", json(serde_json::json!({})))]).await.unwrap();
        expected.sort();
        let scan = store.scan_states(&pattern.tenant_scope("globex").unwrap()).await.unwrap();
        let paths: Vec<String> = scan.items.map(|s| s.unwrap().doc_path).collect().await;
        assert_eq!(paths, expected);
        // Dropping a scan half way must not block later writes.
        let mut abandoned = store.scan_documents(&pattern.tenant_scope("globex").unwrap()).await.unwrap();
        abandoned.items.next().await.unwrap().unwrap();
        drop(abandoned);
        store.apply(vec![DocWrite::Delete { path: expected[0].clone() }]).await.unwrap();
    })
    .await;

    case(suite, "a route with a wildcard before its tenant is scanned and its tenants listed", async {
        let store = fresh().await;
        let pattern = PathPattern::parse("regions/{region}/orgs/{tenant}/records/{doc}").unwrap();
        store
            .apply(vec![
                set("regions/eu/orgs/acme/records/a", json(serde_json::json!({}))),
                set("regions/us/orgs/acme/records/b", json(serde_json::json!({}))),
                set("regions/us/orgs/globex/records/c", json(serde_json::json!({}))),
                set("regions/us/orgs/globex/notes/n", json(serde_json::json!({}))),
                set("orgs/initech/records/d", json(serde_json::json!({}))),
            ])
            .await
            .unwrap();
        assert_eq!(store.list_tenants(&pattern).await.unwrap(), vec!["acme", "globex"]);
        let scan = store.scan_states(&pattern.tenant_scope("acme").unwrap()).await.unwrap();
        let paths: Vec<String> = scan.items.map(|s| s.unwrap().doc_path).collect().await;
        assert_eq!(paths, vec!["regions/eu/orgs/acme/records/a", "regions/us/orgs/acme/records/b"]);
        // A top-level route's tenants are the ids under its literal prefix, as before.
        let plain = PathPattern::parse("orgs/{tenant}/records/{doc}").unwrap();
        assert_eq!(store.list_tenants(&plain).await.unwrap(), vec!["initech"]);
    })
    .await;

    case(suite, "commit times strictly increase", async {
        let store = fresh().await;
        let mut previous = Timestamp::new(0, 0);
        for i in 0..20 {
            let commit = store.apply(vec![set("orgs/acme/records/a", json(serde_json::json!({"v": i})))]).await.unwrap();
            assert!(commit > previous, "commit {i}: {commit:?} after {previous:?}");
            previous = commit;
        }
    })
    .await;
}

/// The nested route the cases use.
const NESTED: &str = "orgs/{tenant}/projects/{project}/tasks/{doc}";

/// The scope of one collection.
fn coll(path: &str) -> SourceScope {
    SourceScope::collection(path).expect("a collection path")
}

fn json(value: serde_json::Value) -> Fields {
    fields_from_json(&value).expect("valid Converge JSON")
}

fn set(path: &str, fields: Fields) -> DocWrite {
    DocWrite::Set { path: path.into(), fields }
}

/// One field of every Firestore type, with the edges that lossy conversions break:
/// integers beyond 2^53, doubles that are not integers, microsecond timestamps
/// (Firestore keeps microseconds), non-UTF-8 bytes, nested maps and arrays.
fn every_type(reference_root: &str) -> Fields {
    let mut nested = Fields::new();
    nested.insert("deep".into(), Value::Map(Fields::from([("n".into(), Value::Integer(-1))])));
    nested.insert("list".into(), Value::Array(vec![Value::Integer(1), Value::String("two".into()), Value::Null]));
    Fields::from([
        ("null".into(), Value::Null),
        ("yes".into(), Value::Boolean(true)),
        ("big".into(), Value::Integer(9_007_199_254_740_993)),
        ("min".into(), Value::Integer(i64::MIN)),
        ("pi".into(), Value::Double(3.141_592_653_589_793)),
        ("tiny".into(), Value::Double(-2.5e-300)),
        ("when".into(), Value::Timestamp(Timestamp::new(1_714_557_600, 123_456_000))),
        ("text".into(), Value::String("grants ✓ \"quoted\"".into())),
        ("blob".into(), Value::Bytes(vec![0, 159, 146, 150, 255])),
        ("ref".into(), Value::Reference(format!("{reference_root}/orgs/acme/records/other"))),
        ("geo".into(), Value::GeoPoint(GeoPoint { latitude: 51.5, longitude: -0.125 })),
        ("empty_list".into(), Value::Array(vec![])),
        ("empty_map".into(), Value::Map(Fields::new())),
        ("map".into(), Value::Map(nested)),
    ])
}
