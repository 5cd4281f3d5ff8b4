//! Events decoded (and encoded) per second on one core, for a typical document.
//!
//! `cargo run -p converge-events --example throughput [events]`
//!
//! Also times the binary-mode envelope read both ways, directly from the headers (what
//! `decode` does) and through cloudevents-sdk, which is how the choice was made.

use std::hint::black_box;
use std::time::Instant;

use converge_core::{Document, DocumentChange, Fields, GeoPoint, Timestamp, Value};
use converge_events::decode::decode_binary_with_sdk;
use converge_events::{decode, encode_event_data, to_binary, to_structured, DataFormat, EventSource};

fn typical_change(i: usize) -> DocumentChange {
    let mut fields = Fields::new();
    fields.insert("account".into(), Value::String(format!("ACC-{:06}", i % 1000)));
    fields.insert("amount".into(), Value::Double(1234.56 + i as f64));
    fields.insert("count".into(), Value::Integer(i as i64));
    fields.insert("currency".into(), Value::String("EUR".into()));
    fields.insert("date".into(), Value::Timestamp(Timestamp::new(1_714_557_600 + i as i64, 123_456_000)));
    fields.insert("status".into(), Value::String("open".into()));
    fields.insert("paid".into(), Value::Boolean(i & 1 == 0));
    fields.insert("owner".into(), Value::Reference("projects/p/databases/(default)/documents/users/u1".into()));
    fields.insert("where".into(), Value::GeoPoint(GeoPoint { latitude: 48.85, longitude: 2.35 }));
    fields.insert("tags".into(), Value::Array(vec![Value::String("a".into()), Value::String("b".into())]));
    let mut address = Fields::new();
    address.insert("city".into(), Value::String("Paris".into()));
    address.insert("zip".into(), Value::String("75001".into()));
    fields.insert("address".into(), Value::Map(address));
    let path = format!("orgs/acme/records/r{i}");
    let doc = |update: i64| Document {
        path: path.clone(),
        fields: fields.clone(),
        create_time: Timestamp::new(1_714_557_600, 0),
        update_time: Timestamp::new(update, 500_000),
    };
    DocumentChange {
        event_id: format!("7f3c9a1e-0d4b-4c1e-9b8a-{i:012}"),
        event_type: "google.cloud.firestore.document.v1.written".into(),
        event_time: Timestamp::new(1_714_557_700, 500_000),
        document: path.clone(),
        value: Some(doc(1_714_557_700)),
        old_value: Some(doc(1_714_557_650)),
        update_mask: vec!["amount".into()],
    }
}

fn rate(label: &str, n: usize, mut f: impl FnMut(usize)) {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{label:<44} {:>9.0} events/s  ({:.2} µs each)", n as f64 / secs, secs * 1e6 / n as f64);
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let source = EventSource::local();
    let binary: Vec<_> = (0..1000).map(|i| to_binary(&typical_change(i), &source)).collect();
    let structured: Vec<_> = (0..1000).map(|i| to_structured(&typical_change(i), &source, DataFormat::Protobuf)).collect();
    let json: Vec<_> = (0..1000).map(|i| to_structured(&typical_change(i), &source, DataFormat::Json)).collect();
    println!("body: {} bytes protobuf, update with value and old_value, 11 fields", binary[0].1.len());

    rate("decode, binary mode, protobuf", n, |i| {
        let (headers, body) = &binary[i % 1000];
        black_box(decode(headers, body.clone()).unwrap());
    });
    rate("  envelope only, direct header read (empty)", n, |i| {
        let (headers, _) = &binary[i % 1000];
        black_box(decode(headers, Vec::new()).unwrap());
    });
    rate("  envelope only, through cloudevents-sdk", n, |i| {
        let (headers, _) = &binary[i % 1000];
        black_box(decode_binary_with_sdk(headers, Vec::new()).unwrap());
    });
    rate("decode, structured mode, protobuf base64", n / 4, |i| {
        let (headers, body) = &structured[i % 1000];
        black_box(decode(headers, body.clone()).unwrap());
    });
    rate("decode, structured mode, JSON data", n / 4, |i| {
        let (headers, body) = &json[i % 1000];
        black_box(decode(headers, body.clone()).unwrap());
    });
    let changes: Vec<_> = (0..1000).map(typical_change).collect();
    rate("encode, binary mode (headers + protobuf)", n, |i| {
        black_box(to_binary(&changes[i % 1000], &source));
    });
    rate("  protobuf body only", n, |i| {
        black_box(encode_event_data(&changes[i % 1000], &source));
    });
}
