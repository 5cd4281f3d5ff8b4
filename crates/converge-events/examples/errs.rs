use http::{HeaderMap, HeaderValue};
fn main() {
    let body = std::fs::read("crates/converge-events/tests/fixtures/binary-create.bin").unwrap();
    let text = std::fs::read_to_string("crates/converge-events/tests/fixtures/binary-create.headers.json").unwrap();
    let pairs: std::collections::BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
    let headers: HeaderMap = pairs.iter().map(|(k, v)| (http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap())).collect();
    let show = |h: &HeaderMap, b: Vec<u8>| println!("{}\n", converge_events::decode(h, b).unwrap_err());
    show(&headers, body[..100].to_vec());
    show(&headers, body[..body.len()-1].to_vec());
    let mut h = headers.clone(); h.insert("content-type", HeaderValue::from_static("text/plain")); show(&h, body.clone());
    let mut h = headers.clone(); h.insert("ce-type", HeaderValue::from_static("google.cloud.pubsub.topic.v1.messagePublished")); show(&h, body.clone());
    let mut h = headers.clone(); h.remove("ce-time"); show(&h, body.clone());
    let mut h = headers.clone(); h.insert("content-type", HeaderValue::from_static("application/json")); show(&h, br#"{"value":{"name":"projects/p/databases/d/documents/a/b","fields":{"x":{"integerValue":"abc"}}}}"#.to_vec());
    show(&h, br#"{"value":{"name":"projects/p/databases/d/documents/a/b","fields":{"x":{}}}}"#.to_vec());
    show(&h, br#"{"value":{"name":"projects/p/databases/d/documents/a/b","fields":{"x":{"mapValue":{"fields":{"y":{"timestampValue":"2024-13-01T00:00:00Z"}}}}}}}"#.to_vec());
    show(&h, br#"{"value":{"name":"projects/p/databases/d/documents/a/b","fields":{}}}"#.to_vec());
    let mut s = HeaderMap::new(); s.insert("content-type", HeaderValue::from_static("application/cloudevents+json"));
    show(&s, b"{not json".to_vec());
    show(&s, br#"{"specversion":"1.0","id":"x","type":"t"}"#.to_vec());
    show(&s, br#"{"specversion":"1.0","id":"x","source":"s","type":"google.cloud.firestore.document.v1.written","time":"2024-01-01T00:00:00Z","datacontenttype":"application/json","data":{"value":{"fields":{"a":{"stringValue":1}}}}}"#.to_vec());
    show(&s, br#"{"specversion":"1.0","id":"x","source":"s","type":"google.cloud.firestore.document.v1.written","time":"2024-01-01T00:00:00Z","datacontenttype":"application/protobuf","data_base64":"!!!"}"#.to_vec());
}
