//! Golden events (see `tests/fixtures/generate.py`): each decodes to the exact change
//! written out below, re-encodes to the same bytes, and damaged copies of them fail
//! with the right reason.

use std::collections::BTreeMap;
use std::path::PathBuf;

use converge_core::{Document, DocumentChange, Fields, GeoPoint, QuarantineReason, Timestamp, Value};
use converge_events::{decode, encode_event_data, to_binary, DecodeErrorKind, EventSource};
use http::{HeaderMap, HeaderName, HeaderValue};

const R1: &str = "orgs/acme/records/r1";
const ROOT: &str = "projects/acme-prod/databases/(default)/documents";

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for tests")).join("tests/fixtures").join(name)
}

/// The headers and body of a golden event.
fn load(name: &str) -> (HeaderMap, Vec<u8>) {
    let text = std::fs::read_to_string(fixture_path(&format!("{name}.headers.json"))).expect("headers fixture");
    let pairs: BTreeMap<String, String> = serde_json::from_str(&text).expect("headers fixture is a JSON object");
    let headers = pairs
        .iter()
        .map(|(k, v)| (HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap()))
        .collect();
    let body = std::fs::read(fixture_path(&format!("{name}.bin")))
        .or_else(|_| std::fs::read(fixture_path(&format!("{name}.json"))))
        .expect("body fixture");
    (headers, body)
}

fn acme() -> EventSource {
    EventSource { project: "acme-prod".into(), database: "(default)".into(), namespace: "(default)".into(), location: "nam5".into() }
}

/// Compares through `Debug`, which prints every f64 exactly and NaN as `NaN`, so NaN
/// fields compare equal (they never do with `==`) and `-0.0` differs from `0.0`.
#[track_caller]
fn assert_same(got: &DocumentChange, expected: &DocumentChange) {
    assert_eq!(format!("{got:#?}"), format!("{expected:#?}"));
}

fn fields(pairs: Vec<(&str, Value)>) -> Fields {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

const CREATED: Timestamp = Timestamp { seconds: 1_714_557_600, nanos: 123_456_000 };
const UPDATED: Timestamp = Timestamp { seconds: 1_714_557_900, nanos: 500_000_000 };

fn every_type() -> Document {
    Document {
        path: R1.into(),
        fields: fields(vec![
            ("amount", Value::Integer(9_007_199_254_740_993)),
            ("small", Value::Integer(-42)),
            ("price", Value::Double(12.5)),
            ("ratio", Value::Double(f64::NAN)),
            ("floor", Value::Double(f64::NEG_INFINITY)),
            ("active", Value::Boolean(true)),
            ("note", string("héllo 👋")),
            ("nothing", Value::Null),
            ("raw", Value::Bytes(vec![0, 1, 2, 255])),
            ("due", Value::Timestamp(Timestamp::new(1_714_557_599, 123_456_789))),
            ("owner", Value::Reference(format!("{ROOT}/users/u1"))),
            ("where", Value::GeoPoint(GeoPoint { latitude: 48.8566, longitude: 2.3522 })),
            (
                "tags",
                Value::Array(vec![string("a"), Value::Integer(1), Value::Map(fields(vec![("k", Value::Boolean(false))]))]),
            ),
            (
                "meta",
                Value::Map(fields(vec![
                    (
                        "nested",
                        Value::Map(fields(vec![("deep", Value::Array(vec![Value::Timestamp(Timestamp::new(0, 0))]))])),
                    ),
                    ("empty", Value::Map(Fields::new())),
                ])),
            ),
            ("emptyList", Value::Array(vec![])),
        ]),
        create_time: CREATED,
        update_time: CREATED,
    }
}

fn r1_v1() -> Document {
    Document {
        path: R1.into(),
        fields: fields(vec![("amount", Value::Integer(5)), ("account", string("A-1"))]),
        create_time: CREATED,
        update_time: CREATED,
    }
}

fn r1_v2() -> Document {
    Document {
        path: R1.into(),
        fields: fields(vec![("amount", Value::Integer(7)), ("account", string("A-1")), ("status", string("open"))]),
        create_time: CREATED,
        update_time: UPDATED,
    }
}

fn change(id: &str, event_type: &str, time: Timestamp, document: &str, value: Option<Document>, old_value: Option<Document>) -> DocumentChange {
    DocumentChange {
        event_id: id.into(),
        event_type: event_type.into(),
        event_time: time,
        document: document.into(),
        value,
        old_value,
        update_mask: vec![],
    }
}

const WRITTEN: &str = "google.cloud.firestore.document.v1.written";

fn expected_create() -> DocumentChange {
    change("7f3c9a1e-0d4b-4c1e-9b8a-2f6d5e4c3b2a", WRITTEN, CREATED, R1, Some(every_type()), None)
}

fn expected_update() -> DocumentChange {
    DocumentChange {
        update_mask: vec!["amount".into(), "status".into()],
        ..change("1b2d3f4a-5c6e-4f70-8a9b-0c1d2e3f4a5b", WRITTEN, UPDATED, R1, Some(r1_v2()), Some(r1_v1()))
    }
}

#[test]
fn binary_create_with_every_value_type() {
    let (headers, body) = load("binary-create");
    assert_same(&decode(&headers, body).unwrap(), &expected_create());
}

#[test]
fn binary_update_with_old_value_and_mask() {
    let (headers, body) = load("binary-update");
    assert_same(&decode(&headers, body).unwrap(), &expected_update());
}

#[test]
fn binary_delete_with_a_coarse_event_time() {
    let (headers, body) = load("binary-delete");
    let expected = change(
        "9e8d7c6b-5a4f-4e3d-2c1b-0a9f8e7d6c5b",
        "google.cloud.firestore.document.v1.deleted",
        Timestamp::new(1_714_561_200, 0),
        R1,
        None,
        Some(r1_v2()),
    );
    assert_same(&decode(&headers, body).unwrap(), &expected);
}

#[test]
fn binary_with_auth_context() {
    let (headers, body) = load("binary-with-auth-context");
    let expected = DocumentChange {
        event_id: "c0ffee00-1234-4abc-8def-567890abcdef".into(),
        event_type: "google.cloud.firestore.document.v1.written.withAuthContext".into(),
        ..expected_create()
    };
    assert_same(&decode(&headers, body).unwrap(), &expected);
}

#[test]
fn binary_from_the_emulator_with_no_data() {
    let (headers, body) = load("binary-emulator-empty");
    assert!(body.is_empty());
    let expected = change(
        "emulator-1",
        "google.cloud.firestore.document.v1.deleted",
        Timestamp::new(1_714_564_800, 0),
        "orgs/acme/records/gone",
        None,
        None,
    );
    assert_same(&decode(&headers, body).unwrap(), &expected);
}

#[test]
fn structured_with_json_data() {
    let (headers, body) = load("structured-json");
    let at = Timestamp::new(1_714_638_600, 1_000);
    let doc = Document {
        path: "orgs/acme/records/r2".into(),
        fields: fields(vec![
            ("amount", Value::Integer(12)),
            ("big", Value::Integer(i64::MIN)),
            ("limit", Value::Double(f64::INFINITY)),
            ("label", string("r2")),
            ("at", Value::Timestamp(at)),
        ]),
        create_time: at,
        update_time: at,
    };
    let expected = change(
        "5a5a5a5a-0000-4000-8000-000000000001",
        "google.cloud.firestore.document.v1.created",
        at,
        "orgs/acme/records/r2",
        Some(doc),
        None,
    );
    assert_same(&decode(&headers, body.clone()).unwrap(), &expected);
    // Media types compare case-insensitively.
    let mut headers = headers;
    headers.insert("content-type", HeaderValue::from_static("Application/CloudEvents+JSON ; charset=UTF-8"));
    assert_same(&decode(&headers, body).unwrap(), &expected);
}

/// The CloudEvents JSON format: data without a datacontenttype is JSON.
#[test]
fn structured_without_a_data_content_type_is_json() {
    let (headers, body) = load("structured-json");
    let expected = decode(&headers, body.clone()).unwrap();
    let mut event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    event.as_object_mut().unwrap().remove("datacontenttype");
    assert_same(&decode(&headers, event.to_string().into_bytes()).unwrap(), &expected);
    event["datacontenttype"] = "text/csv".into();
    event["data"] = "amount\n12\n".into();
    assert_refused(&headers, event.to_string().into_bytes(), DecodeErrorKind::UnsupportedContentType, "\"text/csv\" is not supported");
}

#[test]
fn structured_with_protobuf_in_data_base64() {
    let (headers, body) = load("structured-protobuf");
    let expected = DocumentChange { event_id: "5a5a5a5a-0000-4000-8000-000000000002".into(), ..expected_update() };
    assert_same(&decode(&headers, body).unwrap(), &expected);
}

/// Google's serializer and ours agree byte for byte (both write fields in number order
/// and map entries sorted by key), and our headers are the golden ones.
#[test]
fn encoding_the_decoded_goldens_gives_the_same_bytes_and_headers() {
    for name in ["binary-create", "binary-update", "binary-delete", "binary-with-auth-context"] {
        let (headers, body) = load(name);
        let change = decode(&headers, body.clone()).unwrap();
        assert_eq!(encode_event_data(&change, &acme()), body, "{name}");
        let (encoded_headers, _) = to_binary(&change, &acme());
        for (header, value) in &encoded_headers {
            assert_eq!(headers.get(header), Some(value), "{name}: {header}");
        }
        let ce_headers = headers.keys().filter(|k| k.as_str().starts_with("ce-")).count();
        let extras = ["ce-traceparent", "ce-authtype", "ce-authid"].iter().filter(|h| headers.contains_key(**h)).count();
        assert_eq!(encoded_headers.len(), ce_headers - extras + 1, "{name}: one header per attribute, plus content-type");
    }
}

// ---------------------------------------------------------------------------------
// Damaged goldens

#[track_caller]
fn assert_refused(headers: &HeaderMap, body: Vec<u8>, kind: DecodeErrorKind, message_contains: &str) {
    let err = decode(headers, body).expect_err("decoding should fail");
    assert_eq!(err.kind, kind, "{err}");
    assert!(err.message.contains(message_contains), "{err}");
    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
}

#[test]
fn truncated_protobuf_is_malformed() {
    let (headers, body) = load("binary-create");
    for cut in [1, body.len() / 2, body.len() - 1] {
        let err = decode(&headers, body[..cut].to_vec()).expect_err("truncated");
        assert_eq!(err.kind, DecodeErrorKind::Malformed);
        assert_eq!(err.reason(), QuarantineReason::Malformed);
        assert!(
            err.message.starts_with("data is not a protobuf google.events.cloud.firestore.v1.DocumentEventData: "),
            "{err}"
        );
        assert!(err.message.contains(&format!("got {cut} bytes starting 0a")), "{err}");
        assert_eq!(err.event_id.as_deref(), Some("7f3c9a1e-0d4b-4c1e-9b8a-2f6d5e4c3b2a"));
        assert_eq!(err.event_type.as_deref(), Some(WRITTEN));
        assert!(
            err.to_string().starts_with("malformed event (id 7f3c9a1e-0d4b-4c1e-9b8a-2f6d5e4c3b2a, type google.cloud.firestore.document.v1.written): data is not"),
            "{err}"
        );
    }
}

#[test]
fn a_wrong_content_type_is_unsupported() {
    let (mut headers, body) = load("binary-create");
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    assert_refused(&headers, body.clone(), DecodeErrorKind::UnsupportedContentType, "\"text/plain\" is not supported");
    // JSON data sent as protobuf is malformed, and the message says it looks like JSON.
    headers.insert("content-type", HeaderValue::from_static("application/protobuf"));
    assert_refused(&headers, br#"{"value": null}"#.to_vec(), DecodeErrorKind::Malformed, "(looks like JSON)");
    // Protobuf sent as JSON is malformed too.
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    assert_refused(&headers, body.clone(), DecodeErrorKind::Malformed, "is not the proto3 JSON form");
    // Content types are matched without parameters and case.
    headers.insert("content-type", HeaderValue::from_static("Application/X-Protobuf; proto=google.events.cloud.firestore.v1.DocumentEventData"));
    assert_same(&decode(&headers, body).unwrap(), &expected_create());
}

#[test]
fn an_unknown_event_type_is_refused() {
    let (mut headers, body) = load("binary-create");
    headers.insert("ce-type", HeaderValue::from_static("google.cloud.pubsub.topic.v1.messagePublished"));
    let err = decode(&headers, body).unwrap_err();
    assert_eq!(err.reason(), QuarantineReason::UnknownEventType);
    assert_eq!(err.event_type.as_deref(), Some("google.cloud.pubsub.topic.v1.messagePublished"));
    assert!(err.to_string().starts_with("unknown event type (id 7f3c9a1e-0d4b-4c1e-9b8a-2f6d5e4c3b2a, type google.cloud.pubsub"), "{err}");
}

#[test]
fn a_missing_time_is_malformed() {
    let (mut headers, body) = load("binary-update");
    headers.remove("ce-time");
    assert_refused(&headers, body, DecodeErrorKind::Malformed, "no `time` attribute");
    let (headers, body) = load("structured-json");
    let mut event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    event.as_object_mut().unwrap().remove("time");
    assert_refused(&headers, event.to_string().into_bytes(), DecodeErrorKind::Malformed, "no `time` attribute");
}

#[test]
fn structured_garbage_is_malformed() {
    let (headers, body) = load("structured-json");
    assert_refused(&headers, b"{\"specversion\": \"1.0\", \"id\": ".to_vec(), DecodeErrorKind::Malformed, "not a structured-mode CloudEvent");
    assert_refused(&headers, b"<html>502 Bad Gateway</html>".to_vec(), DecodeErrorKind::Malformed, "not a structured-mode CloudEvent");
    assert_refused(&headers, b"{}".to_vec(), DecodeErrorKind::Malformed, "not a structured-mode CloudEvent");
    // A valid envelope whose data is not a DocumentEventData: the value oneof is empty.
    let mut event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    event["data"]["value"]["fields"]["amount"] = serde_json::json!({});
    let err = decode(&headers, event.to_string().into_bytes()).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::Malformed);
    assert_eq!(err.event_id.as_deref(), Some("5a5a5a5a-0000-4000-8000-000000000001"));
    assert!(err.message.starts_with("data is not the proto3 JSON form of google.events.cloud.firestore.v1.DocumentEventData"), "{err}");
    // An integer that does not fit in 64 bits.
    event["data"]["value"]["fields"]["amount"] = serde_json::json!({"integerValue": "9223372036854775808"});
    assert_refused(&headers, event.to_string().into_bytes(), DecodeErrorKind::Malformed, "64-bit integer");
    // A document name that is not a resource name.
    event["data"]["value"]["fields"]["amount"] = serde_json::json!({"integerValue": 1});
    event["data"]["value"]["name"] = serde_json::json!("orgs/acme/records/r2");
    assert_refused(&headers, event.to_string().into_bytes(), DecodeErrorKind::Malformed, "at value.name: document name");
    // Protobuf data in `data` instead of `data_base64`.
    let (headers, body) = load("structured-protobuf");
    let mut event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let object = event.as_object_mut().unwrap();
    let base64 = object.remove("data_base64").unwrap();
    object.insert("data".into(), base64);
    assert_refused(&headers, event.to_string().into_bytes(), DecodeErrorKind::Malformed, "data_base64");
}

#[test]
fn a_body_that_is_no_cloudevent_is_malformed() {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let err = decode(&headers, br#"{"message": {"data": "e30="}}"#.to_vec()).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::Malformed);
    assert!(err.message.starts_with("not a CloudEvent: no ce-specversion header"), "{err}");
    assert_eq!((err.event_id, err.event_type), (None, None));
}
