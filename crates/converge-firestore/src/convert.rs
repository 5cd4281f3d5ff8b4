//! Firestore's gRPC values and documents ↔ the core's [`Value`] and [`Document`].
//!
//! One core variant per Firestore type, so the conversion is exact both ways:
//! integers are 64-bit (beyond 2^53 too), doubles keep their bits (NaN, -0.0,
//! subnormals), timestamps keep seconds and nanoseconds, bytes, references (full
//! resource names), geo points, maps and arrays go through as they are.
//!
//! What *Firestore* keeps is another matter, and not this module's to hide: it
//! stores timestamp values with microsecond precision (sub-microsecond digits are
//! dropped, by the service and the emulator alike), refuses empty field names, and
//! the emulator stores -0.0 as 0.0.
//!
//! Paths: the core speaks paths relative to the documents root
//! (`orgs/acme/records/r1`); Firestore speaks resource names
//! (`projects/P/databases/D/documents/orgs/acme/records/r1`). [`DocPaths`] turns one
//! into the other and checks paths the way the SQLite store does.

use std::collections::HashMap;

use converge_core::{Document, Fields, GeoPoint, Timestamp, Value};
use firestore::gcloud_sdk::google::firestore::v1 as pb;
use firestore::gcloud_sdk::google::r#type::LatLng;
use firestore::gcloud_sdk::prost_types;
use pb::value::ValueType;

use crate::error::{ConvertError, FirestoreError};

pub fn timestamp_to_proto(ts: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ts.seconds, nanos: ts.nanos }
}

pub fn timestamp_from_proto(ts: &prost_types::Timestamp) -> Timestamp {
    Timestamp::new(ts.seconds, ts.nanos)
}

/// A core value as a Firestore value.
pub fn value_to_proto(value: &Value) -> pb::Value {
    let value_type = match value {
        Value::Null => ValueType::NullValue(prost_types::NullValue::NullValue as i32),
        Value::Boolean(b) => ValueType::BooleanValue(*b),
        Value::Integer(i) => ValueType::IntegerValue(*i),
        Value::Double(d) => ValueType::DoubleValue(*d),
        Value::Timestamp(ts) => ValueType::TimestampValue(timestamp_to_proto(*ts)),
        Value::String(s) => ValueType::StringValue(s.clone()),
        Value::Bytes(b) => ValueType::BytesValue(b.clone()),
        Value::Reference(r) => ValueType::ReferenceValue(r.clone()),
        Value::GeoPoint(g) => ValueType::GeoPointValue(LatLng { latitude: g.latitude, longitude: g.longitude }),
        Value::Array(items) => ValueType::ArrayValue(pb::ArrayValue { values: items.iter().map(value_to_proto).collect() }),
        Value::Map(fields) => ValueType::MapValue(pb::MapValue { fields: fields_to_proto(fields) }),
    };
    pb::Value { value_type: Some(value_type) }
}

pub fn fields_to_proto(fields: &Fields) -> HashMap<String, pb::Value> {
    fields.iter().map(|(k, v)| (k.clone(), value_to_proto(v))).collect()
}

/// A Firestore value as a core value. `at` names the field, for errors.
pub fn value_from_proto(value: pb::Value, at: &str) -> Result<Value, ConvertError> {
    let unsupported = |found| ConvertError::UnsupportedValue { at: at.to_owned(), found };
    Ok(match value.value_type.ok_or_else(|| ConvertError::MissingValue { at: at.to_owned() })? {
        ValueType::NullValue(_) => Value::Null,
        ValueType::BooleanValue(b) => Value::Boolean(b),
        ValueType::IntegerValue(i) => Value::Integer(i),
        ValueType::DoubleValue(d) => Value::Double(d),
        ValueType::TimestampValue(ts) => Value::Timestamp(timestamp_from_proto(&ts)),
        ValueType::StringValue(s) => Value::String(s),
        ValueType::BytesValue(b) => Value::Bytes(b),
        ValueType::ReferenceValue(r) => Value::Reference(r),
        ValueType::GeoPointValue(g) => Value::GeoPoint(GeoPoint { latitude: g.latitude, longitude: g.longitude }),
        ValueType::ArrayValue(array) => Value::Array(
            array
                .values
                .into_iter()
                .enumerate()
                .map(|(i, v)| value_from_proto(v, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        ValueType::MapValue(map) => Value::Map(fields_from_proto_at(map.fields, at)?),
        ValueType::FieldReferenceValue(_) => return Err(unsupported("field reference")),
        ValueType::VariableReferenceValue(_) => return Err(unsupported("variable reference")),
        ValueType::FunctionValue(_) => return Err(unsupported("function")),
        ValueType::PipelineValue(_) => return Err(unsupported("pipeline")),
    })
}

pub fn fields_from_proto(fields: HashMap<String, pb::Value>) -> Result<Fields, ConvertError> {
    fields_from_proto_at(fields, "")
}

fn fields_from_proto_at(fields: HashMap<String, pb::Value>, at: &str) -> Result<Fields, ConvertError> {
    fields
        .into_iter()
        .map(|(key, value)| {
            let here = if at.is_empty() { key.clone() } else { format!("{at}.{key}") };
            Ok((key, value_from_proto(value, &here)?))
        })
        .collect()
}

/// Document and collection paths of one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocPaths {
    /// `projects/P/databases/D`.
    pub database: String,
    /// `projects/P/databases/D/documents`.
    pub documents: String,
}

impl DocPaths {
    pub fn new(project_id: &str, database_id: &str) -> Self {
        let database = format!("projects/{project_id}/databases/{database_id}");
        Self { documents: format!("{database}/documents"), database }
    }

    /// The resource name of the document at `path`, after checking `path`.
    pub fn document_name(&self, path: &str) -> Result<String, FirestoreError> {
        split_document_path(path)?;
        Ok(format!("{}/{path}", self.documents))
    }

    /// The query parent and collection id of the collection at `path`:
    /// `orgs/a/records` → (`…/documents/orgs/a`, `records`); `orgs` → (`…/documents`, `orgs`).
    pub fn collection_parent(&self, path: &str) -> Result<(String, String), FirestoreError> {
        check_collection_path(path)?;
        Ok(match path.rsplit_once('/') {
            Some((parent, id)) => (format!("{}/{parent}", self.documents), id.to_owned()),
            None => (self.documents.clone(), path.to_owned()),
        })
    }

    /// The path (relative to the documents root) of a resource name.
    pub fn relative<'a>(&self, name: &'a str) -> Result<&'a str, ConvertError> {
        name.strip_prefix(self.documents.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|rest| !rest.is_empty())
            .ok_or_else(|| ConvertError::ForeignDocument { name: name.to_owned(), root: self.documents.clone() })
    }

    /// A Firestore document as a core document.
    pub fn document_from_proto(&self, doc: pb::Document) -> Result<Document, ConvertError> {
        let path = self.relative(&doc.name)?.to_owned();
        let time = |ts: Option<&prost_types::Timestamp>, what| {
            ts.map(timestamp_from_proto).ok_or_else(|| ConvertError::MissingTime { name: doc.name.clone(), what })
        };
        let create_time = time(doc.create_time.as_ref(), "create_time")?;
        let update_time = time(doc.update_time.as_ref(), "update_time")?;
        Ok(Document { path, fields: fields_from_proto(doc.fields)?, create_time, update_time })
    }
}

/// Splits a document path into its collection path and document id.
pub fn split_document_path(path: &str) -> Result<(&str, &str), FirestoreError> {
    converge_core::path::split_document_path(path).map_err(|reason| FirestoreError::InvalidDocumentPath { path: path.to_owned(), reason })
}

pub fn check_collection_path(path: &str) -> Result<(), FirestoreError> {
    converge_core::path::check_collection_path(path).map_err(|reason| FirestoreError::InvalidCollectionPath { path: path.to_owned(), reason })
}

/// A record id (error log, quarantine) as a document id: ids that Firestore would
/// refuse as document ids are escaped (`%` and `/` percent-encoded; `.`, `..` and
/// `__x__` forms get their first character encoded). The record keeps its id in a
/// field too, so nothing reads it back from the document name.
pub fn record_doc_id(id: &str) -> Result<String, FirestoreError> {
    if id.is_empty() {
        return Err(FirestoreError::InvalidRecordId { id: id.to_owned(), reason: "empty" });
    }
    let mut escaped = String::with_capacity(id.len());
    for c in id.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '/' => escaped.push_str("%2F"),
            c => escaped.push(c),
        }
    }
    let reserved = escaped == "." || escaped == ".." || (escaped.len() > 4 && escaped.starts_with("__") && escaped.ends_with("__"));
    if reserved {
        let first = escaped.remove(0);
        escaped.insert_str(0, if first == '.' { "%2E" } else { "%5F" });
    }
    if escaped.len() > 1500 {
        return Err(FirestoreError::InvalidRecordId { id: id.chars().take(64).collect::<String>() + "…", reason: "longer than 1500 bytes" });
    }
    Ok(escaped)
}

#[cfg(test)]
mod tests {
    use converge_core::ErrorKind;

    use super::*;

    fn all_types() -> Fields {
        let mut nested = Fields::new();
        nested.insert("$ref".into(), Value::String("a map shaped like a tag".into()));
        let mut all = Fields::new();
        all.insert("null".into(), Value::Null);
        all.insert("bool".into(), Value::Boolean(true));
        all.insert("int_min".into(), Value::Integer(i64::MIN));
        all.insert("int_big".into(), Value::Integer((1 << 53) + 1));
        all.insert("double".into(), Value::Double(0.1 + 0.2));
        all.insert("neg_zero".into(), Value::Double(-0.0));
        all.insert("inf".into(), Value::Double(f64::NEG_INFINITY));
        all.insert("subnormal".into(), Value::Double(5e-324));
        all.insert("ts".into(), Value::Timestamp(Timestamp::new(1_714_557_600, 123_456_789)));
        all.insert("string".into(), Value::String("héllo, \u{1F600}\n".into()));
        all.insert("bytes".into(), Value::Bytes((0..=255).collect()));
        all.insert("ref".into(), Value::Reference("projects/p/databases/(default)/documents/c/x".into()));
        all.insert("geo".into(), Value::GeoPoint(GeoPoint { latitude: 48.858_37, longitude: -2.294_481 }));
        all.insert("array".into(), Value::Array(vec![Value::Integer(1), Value::Double(1.0), Value::Array(vec![]), Value::Map(nested.clone())]));
        all.insert("map".into(), Value::Map(nested));
        all
    }

    #[test]
    fn every_type_round_trips_bit_exact() {
        let all = all_types();
        let back = fields_from_proto(fields_to_proto(&all)).unwrap();
        assert_eq!(back, all);
        assert_eq!(converge_core::hash::content_hash(&back), converge_core::hash::content_hash(&all));
        let Value::Double(neg_zero) = back["neg_zero"] else { panic!() };
        assert!(neg_zero.is_sign_negative());
        let nan = fields_from_proto(fields_to_proto(&Fields::from([("n".to_string(), Value::Double(f64::NAN))]))).unwrap();
        assert!(matches!(nan["n"], Value::Double(d) if d.is_nan()));
    }

    #[test]
    fn pipeline_only_values_are_refused_with_their_location() {
        let mut inner = HashMap::new();
        inner.insert("f".to_string(), pb::Value { value_type: Some(ValueType::FieldReferenceValue("x".into())) });
        let map = pb::Value { value_type: Some(ValueType::MapValue(pb::MapValue { fields: inner })) };
        let err = fields_from_proto(HashMap::from([("m".to_string(), map)])).unwrap_err();
        assert_eq!(err, ConvertError::UnsupportedValue { at: "m.f".into(), found: "field reference" });
    }

    #[test]
    fn paths_and_names() {
        let paths = DocPaths::new("p", "(default)");
        assert_eq!(paths.document_name("orgs/a/records/r1").unwrap(), "projects/p/databases/(default)/documents/orgs/a/records/r1");
        assert_eq!(
            paths.collection_parent("orgs/a/records").unwrap(),
            ("projects/p/databases/(default)/documents/orgs/a".to_string(), "records".to_string())
        );
        assert_eq!(paths.collection_parent("orgs").unwrap(), ("projects/p/databases/(default)/documents".to_string(), "orgs".to_string()));
        assert_eq!(paths.relative("projects/p/databases/(default)/documents/c/d").unwrap(), "c/d");
        assert!(paths.relative("projects/q/databases/(default)/documents/c/d").is_err());
        for bad in ["", "c", "c/d/e", "/c/d", "c/d/", "c//d", "c/..", "c/__x__"] {
            assert_eq!(paths.document_name(bad).unwrap_err().kind(), ErrorKind::InvalidInput, "{bad}");
        }
        assert!(paths.collection_parent("orgs/a").is_err());
    }

    #[test]
    fn record_ids_become_valid_document_ids() {
        assert_eq!(record_doc_id("t_d_create").unwrap(), "t_d_create");
        assert_eq!(record_doc_id("a/b%c").unwrap(), "a%2Fb%25c");
        assert_eq!(record_doc_id("..").unwrap(), "%2E.");
        assert_eq!(record_doc_id("__x__").unwrap(), "%5F_x__");
        assert!(record_doc_id("").is_err());
        assert!(record_doc_id(&"x".repeat(2000)).is_err());
    }
}
