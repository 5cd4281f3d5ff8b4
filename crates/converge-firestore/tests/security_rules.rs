//! The Security Rules Converge ships (`infra/firestore.rules`, read from the repository
//! when the test runs), enforced by Google's Firestore emulator.
//!
//! The app's clients talk to the emulator's REST API as the Firebase client SDKs talk
//! to the service: with no `Authorization` header (signed out), or with
//! `Bearer <ID token>` (signed in; the emulator reads the token's claims into
//! `request.auth.token` without checking its signature, so the tests mint unsigned
//! ones). Every refusal is asserted as HTTP 403 `PERMISSION_DENIED` and every
//! allowance as a success, so loosening or tightening the rules fails a test.
//!
//! Converge's own store sends the emulator's `Bearer owner` token, which rules do not
//! judge, as in production rules do not judge Converge's IAM-authorized server
//! library: the tests also show it writing and reading its records with the rules in
//! force.
//!
//! Each test uses projects of its own on this binary's emulator (`common`), and loads
//! rules per project, so a project with no rules serves as the control: the same
//! requests succeed there.

mod common;

use std::path::Path;
use std::time::Duration;

use converge_core::change::error_id;
use converge_core::{
    DocWrite, ErrorLog, Fields, Opportunity, OpportunityStatus, OpportunityStore, QuarantineReason, QuarantineRecord, SourceStore, SyncErrorRecord,
    Timestamp, Value,
};
use converge_firestore::convert::record_doc_id;
use converge_firestore::{FirestoreConfig, FirestoreEmulator, FirestoreSource};
use serde_json::json;

/// `infra/firestore.rules`, as shipped.
fn shipped_rules() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/firestore.rules");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read the shipped rules at {}: {e}", path.display()))
}

/// Where an app's rules take Converge's block in [`APP_RULES`].
const PASTE_HERE: &str = "    // (Converge's block goes here)";

/// The rules of an example app: each tenant's signed-in users read and write the
/// tenant's records, and anyone reads the public catalogue.
const APP_RULES: &str = r#"rules_version = '2';
service cloud.firestore {
  match /databases/{database}/documents {
    match /orgs/{tenant}/records/{record} {
      allow read, write: if request.auth != null && request.auth.token.tenant == tenant;
    }
    match /catalogue/{item} {
      allow read: if true;
    }

    // (Converge's block goes here)
  }
}
"#;

/// [`APP_RULES`] with Converge's block merged in as infra/README.md says: the lines of
/// the shipped file from its `// converge:begin` comment to its `// converge:end`
/// comment, pasted into the app's `match /databases/{database}/documents` block.
fn merged_app_rules() -> String {
    let shipped = shipped_rules();
    let lines: Vec<&str> = shipped.lines().collect();
    let marker = |name: &str| {
        let found: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].trim_start().starts_with(&format!("// converge:{name}"))).collect();
        assert_eq!(found.len(), 1, "infra/firestore.rules must mark Converge's block with exactly one `// converge:{name}` line");
        found[0]
    };
    let (begin, end) = (marker("begin"), marker("end"));
    assert!(begin < end, "`converge:begin` must come before `converge:end`");
    assert_eq!(APP_RULES.matches(PASTE_HERE).count(), 1);
    APP_RULES.replace(PASTE_HERE, &lines[begin..=end].join("\n"))
}

/// A project of its own on the shared emulator, with a store pointed at it.
async fn project(emulator: &FirestoreEmulator, name: &str) -> (String, FirestoreSource) {
    let project = format!("rules-{name}-{}", std::process::id());
    let store = FirestoreSource::connect(FirestoreConfig::emulator(project.clone(), emulator.host_port())).await.expect("connect to the emulator");
    (project, store)
}

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned()))).collect()
}

fn sync_error(doc_id: &str, at: Timestamp) -> SyncErrorRecord {
    SyncErrorRecord {
        id: error_id("records", "A", doc_id, "update"),
        tenant: "A".into(),
        doc_id: doc_id.into(),
        doc_path: format!("orgs/A/records/{doc_id}"),
        action: "update".into(),
        event_id: format!("event-{doc_id}"),
        error: "the warehouse is unavailable".into(),
        attempts: 1,
        first_seen: at,
        last_seen: at,
        resolved: false,
    }
}

fn quarantine_record(id: &str, at: Timestamp) -> QuarantineRecord {
    QuarantineRecord {
        id: id.into(),
        reason: QuarantineReason::Malformed,
        detail: "the body is not a DocumentEventData message".into(),
        event_id: Some(id.into()),
        event_type: Some("google.cloud.firestore.document.v1.written".into()),
        content_type: Some("application/protobuf".into()),
        headers_json: r#"{"ce-source":"//firestore.googleapis.com/projects/p/databases/(default)"}"#.into(),
        payload: b"\x00 raw bytes of tenant A".to_vec(),
        payload_bytes: 23,
        received_at: at,
        attempts: 1,
        replays: 0,
        last_replay: None,
    }
}

fn opportunity(tenant: &str, id: &str, at: Timestamp) -> Opportunity {
    Opportunity {
        id: id.into(),
        tenant: tenant.into(),
        detector: "page_slow_load".into(),
        title: "Slow page".into(),
        severity: "warning".into(),
        entity_type: "page".into(),
        entity_id: "/checkout".into(),
        message: "p75 load time 4.2 s, up from 3.0 s".into(),
        recent_value: Some(4200.0),
        baseline_value: Some(3000.0),
        reference_value: None,
        volume: Some(812.0),
        period: "2025-03-29/7d".into(),
        as_of: "2025-03-31".into(),
        first_seen: at,
        last_seen: at,
        status: OpportunityStatus::Open,
        resolved_at: None,
        batch_id: "0f3c9a7d5e2b4c1a8d6e0f1a2b3c4d5e".into(),
        evidence: Default::default(),
    }
}

// ---------------------------------------------------------------------------------
// App clients over REST.

/// An app client: signed out, or signed in with an ID token.
struct Client {
    who: &'static str,
    token: Option<String>,
}

impl Client {
    fn signed_out() -> Self {
        Self { who: "a signed-out client", token: None }
    }

    /// A signed-in user of `project`, with the `tenant` custom claim when given. The
    /// claims are those of a Firebase Authentication ID token; the token is unsigned
    /// (`alg: none`), which the emulator accepts and the service would not.
    fn signed_in(who: &'static str, project: &str, uid: &str, tenant: Option<&str>) -> Self {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let mut claims = json!({
            "iss": format!("https://securetoken.google.com/{project}"),
            "aud": project,
            "sub": uid,
            "user_id": uid,
            "iat": now,
            "auth_time": now,
            "exp": now + 3600,
            "firebase": {"sign_in_provider": "password", "identities": {}},
        });
        if let Some(tenant) = tenant {
            claims["tenant"] = json!(tenant);
        }
        let header = json!({"alg": "none", "typ": "JWT"});
        let token = format!("{}.{}.", base64url(header.to_string().as_bytes()), base64url(claims.to_string().as_bytes()));
        Self { who, token: Some(token) }
    }
}

/// Base64url without padding, as JWTs use it.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        // Up to 24 bits, first byte highest; a chunk of n bytes gives n + 1 characters.
        let bits = chunk.iter().enumerate().fold(0u32, |bits, (i, b)| bits | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((bits >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// What the emulator answered one request.
struct Answer {
    what: String,
    status: u16,
    body: serde_json::Value,
    text: String,
}

impl Answer {
    /// Asserts that the rules refused it: 403 `PERMISSION_DENIED`.
    fn denied(&self) {
        assert!(
            self.status == 403 && self.body["error"]["status"] == "PERMISSION_DENIED",
            "{}: expected 403 PERMISSION_DENIED, got {} {}",
            self.what,
            self.status,
            self.text
        );
    }

    /// Asserts that it succeeded; the body.
    fn allowed(&self) -> &serde_json::Value {
        assert!((200..300).contains(&self.status), "{}: expected success, got {} {}", self.what, self.status, self.text);
        &self.body
    }
}

/// Firestore's REST API for one project's `(default)` database, as app clients use it.
struct Rest {
    http: reqwest::Client,
    /// `http://HOST:PORT/v1/projects/P/databases/(default)/documents`
    root: String,
}

/// One client operation; together they are every way rules name: get, list (a plain
/// listing, a query, a count aggregation), create, update, delete.
#[derive(Debug, Clone, Copy)]
enum Operation {
    Get,
    List,
    Query,
    Count,
    Create,
    Update,
    Delete,
}

const EVERY_OPERATION: [Operation; 7] =
    [Operation::Get, Operation::List, Operation::Query, Operation::Count, Operation::Create, Operation::Update, Operation::Delete];

impl Rest {
    fn new(emulator: &FirestoreEmulator, project: &str) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        Self { http, root: format!("http://{}/v1/projects/{project}/databases/(default)/documents", emulator.host_port()) }
    }

    async fn send(&self, client: &Client, what: String, method: reqwest::Method, url: String, body: Option<serde_json::Value>) -> Answer {
        let mut request = self.http.request(method, url);
        if let Some(token) = &client.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body.to_string());
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        Answer { what: format!("{what} by {}", client.who), status, body, text }
    }

    /// `op` by `client` on the collection at `collection` (e.g. `sync_errors` or
    /// `orgs/A/opportunities`): reads and queries over it, a create of a new document,
    /// an update and a delete of `existing`.
    async fn run(&self, client: &Client, op: Operation, collection: &str, existing: &str) -> Answer {
        use reqwest::Method;
        let (parent, collection_id) = match collection.rsplit_once('/') {
            Some((parent, id)) => (format!("{}/{parent}", self.root), id),
            None => (self.root.clone(), collection),
        };
        let doc = format!("{}/{collection}/{existing}", self.root);
        let written = json!({"fields": {"note": {"stringValue": "written by an app client"}}});
        let what = format!("{op:?} on {collection} ({existing})");
        match op {
            Operation::Get => self.send(client, what, Method::GET, doc, None).await,
            Operation::List => self.send(client, what, Method::GET, format!("{}/{collection}", self.root), None).await,
            Operation::Query => {
                let query = json!({"structuredQuery": {"from": [{"collectionId": collection_id}], "limit": 10}});
                self.send(client, what, Method::POST, format!("{parent}:runQuery"), Some(query)).await
            }
            Operation::Count => {
                let query = json!({"structuredAggregationQuery": {
                    "structuredQuery": {"from": [{"collectionId": collection_id}]},
                    "aggregations": [{"alias": "n", "count": {}}],
                }});
                self.send(client, what, Method::POST, format!("{parent}:runAggregationQuery"), Some(query)).await
            }
            Operation::Create => {
                let url = format!("{}/{collection}?documentId=created-by-client", self.root);
                self.send(client, what, Method::POST, url, Some(written)).await
            }
            // The precondition makes it an update for the rules (without it, a write to a
            // missing document would be judged as a create).
            Operation::Update => self.send(client, what, Method::PATCH, format!("{doc}?currentDocument.exists=true"), Some(written)).await,
            Operation::Delete => self.send(client, what, Method::DELETE, doc, None).await,
        }
    }

    /// A query of `collection_id` documents in every collection of that name (a
    /// collection-group query), e.g. every tenant's opportunities.
    async fn collection_group_query(&self, client: &Client, collection_id: &str, filter: serde_json::Value) -> Answer {
        let query = json!({"structuredQuery": {"from": [{"collectionId": collection_id, "allDescendants": true}], "where": filter}});
        self.send(client, format!("a collection-group query of {collection_id}"), reqwest::Method::POST, format!("{}:runQuery", self.root), Some(query))
            .await
    }
}

/// The documents a `runQuery` answer holds (its array has one element per result, plus
/// one with only a read time when there are none).
fn query_documents(answer: &serde_json::Value) -> Vec<String> {
    answer.as_array().expect("runQuery answers an array").iter().filter_map(|r| r["document"]["name"].as_str().map(str::to_owned)).collect()
}

fn equal_to(field: &str, value: &str) -> serde_json::Value {
    json!({"fieldFilter": {"field": {"fieldPath": field}, "op": "EQUAL", "value": {"stringValue": value}}})
}

// ---------------------------------------------------------------------------------

#[test]
fn base64url_encodes_as_jwts_need() {
    assert_eq!(base64url(b""), "");
    assert_eq!(base64url(b"f"), "Zg");
    assert_eq!(base64url(b"fo"), "Zm8");
    assert_eq!(base64url(b"foo"), "Zm9v");
    assert_eq!(base64url(b"foob"), "Zm9vYg");
    assert_eq!(base64url(&[0xfb, 0xff, 0xbf]), "-_-_");
}

/// Rules that do not compile are refused with the compiler's message, not loaded as
/// "no rules" (which would let every client in).
#[tokio::test]
async fn rules_that_do_not_compile_are_refused() {
    let Some(emulator) = common::emulator().await else { return };
    let broken = shipped_rules().replace("allow get, list:", "allow get, list");
    match emulator.load_rules("rules-broken", &broken).await {
        Err(converge_firestore::EmulatorError::Http { status: 400, body, .. }) => assert!(body.contains("Error compiling rules"), "{body}"),
        other => panic!("expected a 400 naming the compile error, got {other:?}"),
    }
}

/// `sync_errors` and `quarantine` hold every tenant's failures and raw payloads: no app
/// client, signed out or signed in (with a tenant or without), may read, list, query,
/// count, create, update or delete them. Converge's store still writes and reads them.
#[tokio::test]
async fn converge_s_collections_are_closed_to_every_app_client() {
    let Some(emulator) = common::emulator().await else { return };
    let at = Timestamp::new(1_743_465_600, 123_456_789);
    let collections = [("sync_errors", record_doc_id(&sync_error("r1", at).id).unwrap()), ("quarantine", record_doc_id("event-bad-1").unwrap())];

    // The control: with no rules loaded, the emulator lets a client do all of it, so
    // the refusals below are the rules' and the requests themselves are sound.
    let (open_project, open_store) = project(emulator, "control").await;
    open_store.record_sync_error(sync_error("r1", at)).await.unwrap();
    open_store.quarantine(quarantine_record("event-bad-1", at)).await.unwrap();
    let rest = Rest::new(emulator, &open_project);
    let client = Client::signed_in("a client of tenant A", &open_project, "user-a", Some("A"));
    for (collection, existing) in &collections {
        for op in EVERY_OPERATION {
            rest.run(&client, op, collection, existing).await.allowed();
        }
    }

    let (project_id, store) = project(emulator, "closed").await;
    emulator.load_rules(&project_id, &shipped_rules()).await.expect("the shipped rules compile");

    // Converge's store under the rules: creates, merges into (attempts 2) and reads its
    // records, as Converge's functions do in production with IAM.
    for round in 0..2 {
        store.record_sync_error(sync_error("r1", at)).await.unwrap_or_else(|e| panic!("record a sync error (round {round}): {e}"));
        store.quarantine(quarantine_record("event-bad-1", at)).await.unwrap_or_else(|e| panic!("quarantine (round {round}): {e}"));
    }
    let errors_before = store.open_sync_errors(None).await.unwrap();
    let quarantine_before = store.quarantined(10).await.unwrap();
    assert_eq!(errors_before, [SyncErrorRecord { attempts: 2, ..sync_error("r1", at) }]);
    assert_eq!(quarantine_before, [QuarantineRecord { attempts: 2, ..quarantine_record("event-bad-1", at) }]);

    let rest = Rest::new(emulator, &project_id);
    let clients = [
        Client::signed_out(),
        Client::signed_in("a client of tenant A", &project_id, "user-a", Some("A")),
        Client::signed_in("a signed-in client without a tenant", &project_id, "user-x", None),
    ];
    for client in &clients {
        for (collection, existing) in &collections {
            for op in EVERY_OPERATION {
                rest.run(client, op, collection, existing).await.denied();
            }
        }
    }

    // Nothing the clients tried got through.
    assert_eq!(store.open_sync_errors(None).await.unwrap(), errors_before);
    assert_eq!(store.quarantined(10).await.unwrap(), quarantine_before);
    for (collection, existing) in &collections {
        assert_eq!(store.list_document_ids(collection).await.unwrap(), [existing.clone()], "{collection} holds only Converge's record");
    }
}

/// A tenant's signed-in clients get and query their tenant's opportunities and no
/// other tenant's; nobody else reads them; no client writes any opportunity.
/// Converge's store upserts, resolves and lists them under the rules.
#[tokio::test]
async fn a_tenant_s_clients_read_its_opportunities_and_write_none() {
    let Some(emulator) = common::emulator().await else { return };
    let (project_id, store) = project(emulator, "opportunities").await;
    emulator.load_rules(&project_id, &shipped_rules()).await.expect("the shipped rules compile");

    // The detector runner's writes under the rules: create, update, resolve, and the
    // all-tenants collection-group listing.
    let at = Timestamp::new(1_743_465_600, 123_456_789);
    for (tenant, id) in [("A", "opp-a1"), ("A", "opp-a2"), ("B", "opp-b1")] {
        store.upsert_opportunity(opportunity(tenant, id, at)).await.unwrap();
    }
    let later = Timestamp::new(1_743_552_000, 5);
    store.upsert_opportunity(Opportunity { last_seen: later, ..opportunity("A", "opp-a1", at) }).await.unwrap();
    assert!(store.resolve_opportunity("A", "opp-a2", later, "batch-2").await.unwrap());
    let open: Vec<(String, String)> = store.open_opportunities(None).await.unwrap().into_iter().map(|o| (o.tenant, o.id)).collect();
    assert_eq!(open, [("A".to_owned(), "opp-a1".to_owned()), ("B".to_owned(), "opp-b1".to_owned())]);
    let stored_a1 = store.opportunity("A", "opp-a1").await.unwrap().unwrap();

    let rest = Rest::new(emulator, &project_id);
    let client_a = Client::signed_in("a client of tenant A", &project_id, "user-a", Some("A"));
    let client_b = Client::signed_in("a client of tenant B", &project_id, "user-b", Some("B"));
    let name = |tenant: &str, id: &str| format!("projects/{project_id}/databases/(default)/documents/orgs/{tenant}/opportunities/{id}");

    // Tenant A's client reads A's opportunities, open and resolved, as the app shows them.
    let doc = rest.run(&client_a, Operation::Get, "orgs/A/opportunities", "opp-a1").await.allowed().clone();
    assert_eq!(doc["fields"]["title"]["stringValue"], "Slow page");
    assert_eq!(doc["fields"]["status"]["stringValue"], "open");
    let listed = rest.run(&client_a, Operation::List, "orgs/A/opportunities", "opp-a1").await.allowed().clone();
    let listed: Vec<&str> = listed["documents"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(listed, [name("A", "opp-a1"), name("A", "opp-a2")]);
    // The app's query: A's open opportunities (the status filter is the app's, not
    // something the rules require).
    let open_query = json!({"structuredQuery": {"from": [{"collectionId": "opportunities"}], "where": equal_to("status", "open")}});
    let answer = rest.send(&client_a, "A's open opportunities".into(), reqwest::Method::POST, format!("{}/orgs/A:runQuery", rest.root), Some(open_query)).await;
    assert_eq!(query_documents(answer.allowed()), [name("A", "opp-a1")]);
    rest.run(&client_a, Operation::Count, "orgs/A/opportunities", "opp-a1").await.allowed();
    // And B's client reads B's: the same requests work for each tenant.
    rest.run(&client_b, Operation::Get, "orgs/B/opportunities", "opp-b1").await.allowed();
    rest.run(&client_b, Operation::Query, "orgs/B/opportunities", "opp-b1").await.allowed();

    // No client reads another tenant's, nor any without a tenant of its own.
    let outsiders_of_a = [
        Client::signed_out(),
        Client::signed_in("a client of tenant B", &project_id, "user-b", Some("B")),
        Client::signed_in("a signed-in client without a tenant", &project_id, "user-x", None),
        Client::signed_in("a client of tenant \"a\"", &project_id, "user-lower", Some("a")),
    ];
    for client in &outsiders_of_a {
        for op in [Operation::Get, Operation::List, Operation::Query, Operation::Count] {
            rest.run(client, op, "orgs/A/opportunities", "opp-a1").await.denied();
        }
    }
    for op in [Operation::Get, Operation::List, Operation::Query, Operation::Count] {
        rest.run(&client_a, op, "orgs/B/opportunities", "opp-b1").await.denied();
    }
    // A query across every tenant's opportunities is refused, even one filtered on A:
    // rules judge a query by where it looks, not by what it would return.
    rest.collection_group_query(&client_a, "opportunities", equal_to("tenant", "A")).await.denied();

    // No client writes an opportunity, its own tenant's included.
    for (client, tenant, existing) in [(&client_a, "A", "opp-a1"), (&client_a, "B", "opp-b1"), (&client_b, "A", "opp-a1")] {
        for op in [Operation::Create, Operation::Update, Operation::Delete] {
            rest.run(client, op, &format!("orgs/{tenant}/opportunities"), existing).await.denied();
        }
    }
    for op in [Operation::Create, Operation::Update, Operation::Delete] {
        rest.run(&Client::signed_out(), op, "orgs/A/opportunities", "opp-a1").await.denied();
    }

    assert_eq!(store.opportunity("A", "opp-a1").await.unwrap().unwrap(), stored_a1, "unchanged by the clients");
    assert_eq!(store.list_document_ids("orgs/A/opportunities").await.unwrap(), ["opp-a1", "opp-a2"]);
    assert_eq!(store.list_document_ids("orgs/B/opportunities").await.unwrap(), ["opp-b1"]);
}

/// The shipped file opens nothing of the app's own documents; merged into the app's
/// rules as infra/README.md says, the app's documents are governed by the app's rules
/// alone and Converge's collections stay as the shipped file has them.
#[tokio::test]
async fn the_app_s_documents_keep_the_app_s_rules() {
    let Some(emulator) = common::emulator().await else { return };
    let seed = |store: FirestoreSource| async move {
        store
            .apply(vec![
                DocWrite::Set { path: "orgs/A/records/r1".into(), fields: fields(&[("name", "first")]) },
                DocWrite::Set { path: "catalogue/c1".into(), fields: fields(&[("name", "public item")]) },
            ])
            .await
            .unwrap();
        store.record_sync_error(sync_error("r1", Timestamp::new(1_743_465_600, 0))).await.unwrap();
        store.upsert_opportunity(opportunity("A", "opp-a1", Timestamp::new(1_743_465_600, 0))).await.unwrap();
    };

    // The shipped file alone grants nothing but reads of opportunities.
    let (alone, store) = project(emulator, "alone").await;
    emulator.load_rules(&alone, &shipped_rules()).await.unwrap();
    seed(store).await;
    let rest = Rest::new(emulator, &alone);
    let client_a = Client::signed_in("a client of tenant A", &alone, "user-a", Some("A"));
    for op in EVERY_OPERATION {
        rest.run(&client_a, op, "orgs/A/records", "r1").await.denied();
        rest.run(&Client::signed_out(), op, "catalogue", "c1").await.denied();
    }

    // Merged into the app's rules.
    let (merged, store) = project(emulator, "merged").await;
    emulator.load_rules(&merged, &merged_app_rules()).await.expect("the app's rules with Converge's block compile");
    seed(store).await;
    let rest = Rest::new(emulator, &merged);
    let client_a = Client::signed_in("a client of tenant A", &merged, "user-a", Some("A"));
    let client_b = Client::signed_in("a client of tenant B", &merged, "user-b", Some("B"));
    // The app's rules hold: A's users do all of it on A's records, B's users none of it,
    // and anyone reads the catalogue.
    for op in EVERY_OPERATION {
        rest.run(&client_b, op, "orgs/A/records", "r1").await.denied();
    }
    for op in EVERY_OPERATION {
        rest.run(&client_a, op, "orgs/A/records", "r1").await.allowed();
    }
    for op in [Operation::Get, Operation::List, Operation::Query] {
        rest.run(&Client::signed_out(), op, "catalogue", "c1").await.allowed();
    }
    rest.run(&Client::signed_out(), Operation::Create, "catalogue", "c1").await.denied();
    // Converge's rules hold too.
    for op in EVERY_OPERATION {
        rest.run(&client_a, op, "sync_errors", &record_doc_id(&sync_error("r1", Timestamp::new(0, 0)).id).unwrap()).await.denied();
    }
    rest.run(&client_a, Operation::Get, "orgs/A/opportunities", "opp-a1").await.allowed();
    rest.run(&client_b, Operation::Get, "orgs/A/opportunities", "opp-a1").await.denied();
    rest.run(&client_a, Operation::Update, "orgs/A/opportunities", "opp-a1").await.denied();
}
