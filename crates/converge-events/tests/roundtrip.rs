//! encode → decode is the identity, in every content mode and data format, for
//! arbitrary changes: every value type, integers beyond 2^53, NaN and infinite
//! doubles, nested maps and arrays, bytes, nanosecond timestamps, and document paths
//! with spaces, `%` and non-ASCII text (percent-encoded in binary-mode headers).
//! And no input makes the decoder panic.

use converge_core::{Document, DocumentChange, Fields, GeoPoint, Timestamp, Value};
use converge_events::{decode, to_binary, to_structured, DataFormat, EventSource, FIRESTORE_EVENT_TYPES};
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

/// The range of Firestore timestamps (years 1 to 9999).
fn arb_timestamp() -> impl Strategy<Value = Timestamp> {
    (-62_135_596_800i64..=253_402_300_799, 0i32..1_000_000_000).prop_map(|(s, n)| Timestamp::new(s, n))
}

/// Doubles with the awkward ones made likely: any bit pattern covers subnormals and
/// extremes; NaN, ±Infinity and -0.0 are added explicitly.
fn arb_double() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>(),
        1 => prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY), Just(-0.0), Just(0.1 + 0.2)],
    ]
}

fn arb_integer() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        // Around 2^53, where JSON numbers stop being exact.
        (-3i64..=3).prop_map(|d| (1i64 << 53) + d),
        Just(i64::MIN),
        Just(i64::MAX),
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Boolean),
        arb_integer().prop_map(Value::Integer),
        arb_double().prop_map(Value::Double),
        arb_timestamp().prop_map(Value::Timestamp),
        any::<String>().prop_map(Value::String),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Value::Bytes),
        "[a-z0-9/() ]{0,30}".prop_map(|path| Value::Reference(format!("projects/p/databases/(default)/documents/{path}"))),
        (arb_double(), arb_double()).prop_map(|(latitude, longitude)| Value::GeoPoint(GeoPoint { latitude, longitude })),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..5).prop_map(Value::Map),
        ]
    })
}

fn arb_fields() -> impl Strategy<Value = Fields> {
    proptest::collection::btree_map(any::<String>(), arb_value(), 0..6)
}

/// Relative document paths whose segments hold anything but `/`.
fn arb_path() -> impl Strategy<Value = String> {
    proptest::collection::vec("[^/]{1,10}", 2..=4).prop_map(|segments| segments.join("/"))
}

fn arb_document(path: String) -> impl Strategy<Value = Document> {
    (arb_fields(), arb_timestamp(), arb_timestamp()).prop_map(move |(fields, create_time, update_time)| Document {
        path: path.clone(),
        fields,
        create_time,
        update_time,
    })
}

fn arb_change() -> impl Strategy<Value = DocumentChange> {
    arb_path().prop_flat_map(|path| {
        (
            "[^\u{0}]{1,40}",
            (0..FIRESTORE_EVENT_TYPES.len(), any::<bool>()),
            arb_timestamp(),
            proptest::option::of(arb_document(path.clone())),
            proptest::option::of(arb_document(path.clone())),
            proptest::collection::vec("[a-z.`]{1,12}", 0..4),
        )
            .prop_map(move |(event_id, (t, with_auth), event_time, value, old_value, update_mask)| DocumentChange {
                event_id,
                event_type: format!("{}{}", FIRESTORE_EVENT_TYPES[t], if with_auth { ".withAuthContext" } else { "" }),
                event_time,
                document: path.clone(),
                value,
                old_value,
                update_mask,
            })
    })
}

fn arb_source() -> impl Strategy<Value = EventSource> {
    ("[a-z][a-z0-9-]{2,20}", prop_oneof![Just("(default)".to_owned()), "[a-z][a-z0-9-]{0,10}"], "[a-z0-9-]{1,12}").prop_map(
        |(project, database, location)| EventSource { project, database, namespace: "(default)".into(), location },
    )
}

/// `Debug` prints every double exactly (and NaN as `NaN`), so this is equality with
/// NaN equal to itself and `-0.0` distinct from `0.0`.
fn same(a: &DocumentChange, b: &DocumentChange) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn binary_mode_round_trips(change in arb_change(), source in arb_source()) {
        let (headers, body) = to_binary(&change, &source);
        let back = decode(&headers, body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(same(&back, &change), "{back:#?}\n!=\n{change:#?}");
    }

    #[test]
    fn structured_mode_with_protobuf_round_trips(change in arb_change(), source in arb_source()) {
        let (headers, body) = to_structured(&change, &source, DataFormat::Protobuf);
        let back = decode(&headers, body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(same(&back, &change), "{back:#?}\n!=\n{change:#?}");
    }

    #[test]
    fn structured_mode_with_json_round_trips(change in arb_change(), source in arb_source()) {
        let (headers, body) = to_structured(&change, &source, DataFormat::Json);
        let back = decode(&headers, body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(same(&back, &change), "{back:#?}\n!=\n{change:#?}");
    }

    /// Arbitrary bytes under each content type: an error or a change, never a panic.
    #[test]
    fn any_body_decodes_or_fails_cleanly(body in proptest::collection::vec(any::<u8>(), 0..256), ct in 0usize..3) {
        let change = DocumentChange {
            event_id: "e".into(),
            event_type: FIRESTORE_EVENT_TYPES[0].into(),
            event_time: Timestamp::new(0, 0),
            document: "a/b".into(),
            value: None,
            old_value: None,
            update_mask: vec![],
        };
        let (mut headers, _) = to_binary(&change, &EventSource::local());
        let content_type = ["application/protobuf", "application/json", "application/cloudevents+json"][ct];
        headers.insert("content-type", HeaderValue::from_static(content_type));
        let _ = decode(&headers, body);
    }

    /// A real payload with a few bytes flipped: still no panic, and any success still
    /// names the document the headers name.
    #[test]
    fn damaged_payloads_fail_cleanly(change in arb_change(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let (headers, mut body) = to_binary(&change, &EventSource::local());
        if !body.is_empty() {
            for (at, byte) in flips {
                let i = at.index(body.len());
                body[i] ^= byte;
            }
        }
        if let Ok(back) = decode(&headers, body) {
            prop_assert_eq!(back.document, change.document);
        }
    }
}

#[test]
fn no_headers_at_all_is_malformed_not_a_panic() {
    assert!(decode(&HeaderMap::new(), Vec::new()).is_err());
    assert!(decode(&HeaderMap::new(), b"anything".to_vec()).is_err());
}
