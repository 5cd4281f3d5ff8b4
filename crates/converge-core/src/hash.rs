//! The canonical content hash of a document's fields.
//!
//! Reconciliation compares source and warehouse on (path, version, content hash), so
//! the hash must not depend on where the fields came from: the Firestore adapter, the
//! SQLite store and a changelog row's JSON all hash the same fields to the same value.
//! It is SHA-256 over a tagged, length-prefixed binary encoding with map keys in byte
//! order, so no two different values share an encoding.

use sha2::{Digest, Sha256};

use crate::value::{Fields, Value};

/// Hex SHA-256 of the canonical encoding of `fields`.
pub fn content_hash(fields: &Fields) -> String {
    let mut hasher = Sha256::new();
    encode_fields(&mut hasher, fields);
    hex::encode(hasher.finalize())
}

fn encode_fields(h: &mut Sha256, fields: &Fields) {
    h.update((fields.len() as u64).to_be_bytes());
    for (key, value) in fields {
        encode_bytes(h, key.as_bytes());
        encode_value(h, value);
    }
}

fn encode_bytes(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn encode_value(h: &mut Sha256, value: &Value) {
    match value {
        Value::Null => h.update([0u8]),
        Value::Boolean(b) => h.update([1u8, *b as u8]),
        Value::Integer(i) => {
            h.update([2u8]);
            h.update(i.to_be_bytes());
        }
        Value::Double(d) => {
            h.update([3u8]);
            // Every NaN is the same value to Firestore.
            let bits = if d.is_nan() { f64::NAN.to_bits() } else { d.to_bits() };
            h.update(bits.to_be_bytes());
        }
        Value::Timestamp(ts) => {
            h.update([4u8]);
            h.update(ts.seconds.to_be_bytes());
            h.update(ts.nanos.to_be_bytes());
        }
        Value::String(s) => {
            h.update([5u8]);
            encode_bytes(h, s.as_bytes());
        }
        Value::Bytes(b) => {
            h.update([6u8]);
            encode_bytes(h, b);
        }
        Value::Reference(r) => {
            h.update([7u8]);
            encode_bytes(h, r.as_bytes());
        }
        Value::GeoPoint(g) => {
            h.update([8u8]);
            h.update(g.latitude.to_bits().to_be_bytes());
            h.update(g.longitude.to_bits().to_be_bytes());
        }
        Value::Array(items) => {
            h.update([9u8]);
            h.update((items.len() as u64).to_be_bytes());
            items.iter().for_each(|item| encode_value(h, item));
        }
        Value::Map(fields) => {
            h.update([10u8]);
            encode_fields(h, fields);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{fields_from_json, fields_to_json};

    fn fields(json: serde_json::Value) -> Fields {
        fields_from_json(&json).unwrap()
    }

    #[test]
    fn same_fields_same_hash_whatever_the_insertion_order() {
        let mut a = Fields::new();
        a.insert("b".into(), Value::Integer(1));
        a.insert("a".into(), Value::String("x".into()));
        let mut b = Fields::new();
        b.insert("a".into(), Value::String("x".into()));
        b.insert("b".into(), Value::Integer(1));
        assert_eq!(content_hash(&a), content_hash(&b));
    }

    #[test]
    fn types_are_part_of_the_hash() {
        assert_ne!(content_hash(&fields(serde_json::json!({"a": 1}))), content_hash(&fields(serde_json::json!({"a": 1.0}))));
        assert_ne!(content_hash(&fields(serde_json::json!({"a": "1"}))), content_hash(&fields(serde_json::json!({"a": 1}))));
        assert_ne!(
            content_hash(&fields(serde_json::json!({"a": ["x", "y"]}))),
            content_hash(&fields(serde_json::json!({"a": ["xy"]})))
        );
    }

    #[test]
    fn hash_survives_the_json_round_trip() {
        let original = fields(serde_json::json!({"n": {"$int": "9007199254740993"}, "t": {"$timestamp": "2024-01-01T00:00:00.5Z"}}));
        let again = fields_from_json(&serde_json::from_str(&fields_to_json(&original).to_string()).unwrap()).unwrap();
        assert_eq!(content_hash(&original), content_hash(&again));
    }
}
