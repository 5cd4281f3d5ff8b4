//! The Firestore event payload, `google.events.cloud.firestore.v1.DocumentEventData`,
//! as hand-written prost messages, and its conversions to and from Converge's core types.
//!
//! No well-kept crate ships these messages, and generating them would need `protoc` at
//! build time for ~60 lines of structs. The field numbers below are those of
//! `google/events/cloud/firestore/v1/data.proto` (googleapis/google-cloudevents); the
//! messages also carry serde implementations of the proto3 JSON mapping (see
//! [`json`]) so one set of types serves both content types.
//!
//! Maps are `BTreeMap`s: decoding then hands the core (whose [`Fields`] is a `BTreeMap`)
//! its map without re-sorting, and encoding is deterministic — the same change always
//! gives the same bytes, which the golden fixtures rely on.
//!
//! Going to the core is fallible ([`ConvertError`]): a payload that would need "fixing"
//! (a value without a type, a timestamp outside Firestore's range, a document name that
//! is not a Firestore resource name) is refused, never patched.

pub mod json;

use std::collections::BTreeMap;
use std::fmt;

use converge_core::{Document as CoreDocument, Fields, GeoPoint, Timestamp as CoreTimestamp, Value as CoreValue};
use serde::{Deserialize, Serialize};

/// The fully qualified name of [`DocumentEventData`], for error messages.
pub const DOCUMENT_EVENT_DATA: &str = "google.events.cloud.firestore.v1.DocumentEventData";

/// The data of every Firestore document event.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentEventData {
    /// The document after the change; absent for a delete.
    #[prost(message, optional, tag = "1")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Document>,
    /// The document before the change; absent for a create.
    #[prost(message, optional, tag = "2")]
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "old_value")]
    pub old_value: Option<Document>,
    /// The fields an update changed (absent for creates and deletes).
    #[prost(message, optional, tag = "3")]
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "update_mask")]
    pub update_mask: Option<DocumentMask>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentMask {
    #[prost(string, repeated, tag = "1")]
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "field_paths")]
    pub field_paths: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    /// `projects/{project}/databases/{database}/documents/{path}`.
    #[prost(string, tag = "1")]
    #[serde(default)]
    pub name: String,
    #[prost(btree_map = "string, message", tag = "2")]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, Value>,
    #[prost(message, optional, tag = "3")]
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "create_time")]
    pub create_time: Option<Timestamp>,
    #[prost(message, optional, tag = "4")]
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "update_time")]
    pub update_time: Option<Timestamp>,
}

/// `google.protobuf.Timestamp`. In JSON, an RFC 3339 string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `google.firestore.v1.Value`: one oneof, no other fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    #[prost(oneof = "ValueType", tags = "11, 1, 2, 3, 10, 17, 18, 5, 8, 9, 6")]
    pub value_type: Option<ValueType>,
}

/// The oneof of [`Value`]. Its JSON form is an object with exactly one key naming the
/// variant (`{"integerValue": "5"}`): serde's externally tagged enum when writing; read
/// through [`Value`]'s hand-written `Deserialize` (in [`json`]).
#[derive(Clone, PartialEq, prost::Oneof, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ValueType {
    #[prost(enumeration = "NullValue", tag = "11")]
    #[serde(with = "json::null")]
    NullValue(i32),
    #[prost(bool, tag = "1")]
    BooleanValue(bool),
    #[prost(int64, tag = "2")]
    #[serde(with = "json::int64")]
    IntegerValue(i64),
    #[prost(double, tag = "3")]
    #[serde(with = "json::double")]
    DoubleValue(f64),
    #[prost(message, tag = "10")]
    TimestampValue(Timestamp),
    #[prost(string, tag = "17")]
    StringValue(String),
    #[prost(bytes = "vec", tag = "18")]
    #[serde(with = "json::bytes")]
    BytesValue(Vec<u8>),
    /// A full resource name, `projects/{p}/databases/{db}/documents/{path}`.
    #[prost(string, tag = "5")]
    ReferenceValue(String),
    #[prost(message, tag = "8")]
    GeoPointValue(LatLng),
    #[prost(message, tag = "9")]
    ArrayValue(ArrayValue),
    #[prost(message, tag = "6")]
    MapValue(MapValue),
}

/// `google.protobuf.NullValue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum NullValue {
    NullValue = 0,
}

/// `google.type.LatLng`.
///
/// The coordinates are `optional` here although plain `double` in latlng.proto: prost
/// leaves out a plain double that `== 0.0`, which drops the sign of `-0.0`, while
/// Google's runtimes leave out only `+0.0` (they compare bits). With explicit presence
/// [`LatLng::new`] can do what they do, so the bytes match theirs and `-0.0` survives.
/// On the wire the two declarations are the same.
#[derive(Clone, Copy, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct LatLng {
    #[prost(double, optional, tag = "1")]
    #[serde(default, skip_serializing_if = "Option::is_none", with = "json::opt_double")]
    pub latitude: Option<f64>,
    #[prost(double, optional, tag = "2")]
    #[serde(default, skip_serializing_if = "Option::is_none", with = "json::opt_double")]
    pub longitude: Option<f64>,
}

impl LatLng {
    /// Leaves out exactly the coordinates proto3 leaves out: those whose bits are zero.
    pub fn new(latitude: f64, longitude: f64) -> Self {
        let present = |d: f64| (d.to_bits() != 0).then_some(d);
        Self { latitude: present(latitude), longitude: present(longitude) }
    }
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Value>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct MapValue {
    #[prost(btree_map = "string, message", tag = "1")]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, Value>,
}

// ---------------------------------------------------------------------------------
// Resource names

/// `projects/{project}/databases/{database}/documents`: what every document name of
/// one database starts with.
pub fn documents_root(project: &str, database: &str) -> String {
    format!("projects/{project}/databases/{database}/documents")
}

/// The path relative to the documents root of a full document resource name
/// (`projects/p/databases/d/documents/orgs/a` → `orgs/a`), or `None` if `name` is not
/// one. Only the shape is checked; which project or database it names is not this
/// crate's business.
pub fn relative_path(name: &str) -> Option<&str> {
    let mut parts = name.splitn(6, '/');
    let shape = [Some("projects"), None, Some("databases"), None, Some("documents")];
    for expected in shape {
        let part = parts.next()?;
        match expected {
            Some(literal) if part != literal => return None,
            None if part.is_empty() => return None,
            _ => {}
        }
    }
    parts.next().filter(|path| !path.is_empty())
}

// ---------------------------------------------------------------------------------
// To the core

/// Why a decoded payload cannot become core types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConvertError {
    /// Where in the payload, outermost first (`value`, `fields`, `a`, `[2]`...). Built
    /// while unwinding from the failure, so the success path never pays for it.
    pub at: Vec<String>,
    pub reason: String,
}

impl ConvertError {
    fn new(reason: impl Into<String>) -> Self {
        Self { at: Vec::new(), reason: reason.into() }
    }

    fn within(mut self, segment: impl Into<String>) -> Self {
        self.at.insert(0, segment.into());
        self
    }
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() {
            return f.write_str(&self.reason);
        }
        f.write_str("at ")?;
        for (i, segment) in self.at.iter().enumerate() {
            if i > 0 && !segment.starts_with('[') {
                f.write_str(".")?;
            }
            f.write_str(segment)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// The range of `google.protobuf.Timestamp` (0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999999999Z), which is also Firestore's. Outside it a timestamp
/// has no RFC 3339 form, so the changelog could not store it.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

impl TryFrom<Timestamp> for CoreTimestamp {
    type Error = ConvertError;

    fn try_from(ts: Timestamp) -> Result<Self, ConvertError> {
        if !(0..1_000_000_000).contains(&ts.nanos) {
            return Err(ConvertError::new(format!("timestamp nanos {} is outside 0..=999999999", ts.nanos)));
        }
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) {
            return Err(ConvertError::new(format!(
                "timestamp seconds {} is outside 0001-01-01..9999-12-31",
                ts.seconds
            )));
        }
        Ok(CoreTimestamp::new(ts.seconds, ts.nanos))
    }
}

impl From<CoreTimestamp> for Timestamp {
    fn from(ts: CoreTimestamp) -> Self {
        Self { seconds: ts.seconds, nanos: ts.nanos }
    }
}

impl TryFrom<Value> for CoreValue {
    type Error = ConvertError;

    fn try_from(value: Value) -> Result<Self, ConvertError> {
        let Some(value_type) = value.value_type else {
            return Err(ConvertError::new("value has no type (none of the Value oneof fields is set)"));
        };
        Ok(match value_type {
            // Any enum number means null: NullValue has one member, and an unknown
            // number can only be a newer spelling of the same thing.
            ValueType::NullValue(_) => CoreValue::Null,
            ValueType::BooleanValue(b) => CoreValue::Boolean(b),
            ValueType::IntegerValue(i) => CoreValue::Integer(i),
            ValueType::DoubleValue(d) => CoreValue::Double(d),
            ValueType::TimestampValue(ts) => CoreValue::Timestamp(ts.try_into()?),
            ValueType::StringValue(s) => CoreValue::String(s),
            ValueType::BytesValue(b) => CoreValue::Bytes(b),
            ValueType::ReferenceValue(r) => CoreValue::Reference(r),
            ValueType::GeoPointValue(g) => CoreValue::GeoPoint(GeoPoint { latitude: g.latitude(), longitude: g.longitude() }),
            ValueType::ArrayValue(array) => CoreValue::Array(
                array
                    .values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| CoreValue::try_from(v).map_err(|e| e.within(format!("[{i}]"))))
                    .collect::<Result<_, _>>()?,
            ),
            ValueType::MapValue(map) => CoreValue::Map(fields_to_core(map.fields)?),
        })
    }
}

fn fields_to_core(fields: BTreeMap<String, Value>) -> Result<Fields, ConvertError> {
    // Sorted input: collecting into a BTreeMap bulk-builds it without re-sorting work.
    fields
        .into_iter()
        .map(|(key, value)| match CoreValue::try_from(value) {
            Ok(value) => Ok((key, value)),
            Err(e) => Err(e.within(key)),
        })
        .collect()
}

impl From<&CoreValue> for Value {
    fn from(value: &CoreValue) -> Self {
        let value_type = match value {
            CoreValue::Null => ValueType::NullValue(NullValue::NullValue as i32),
            CoreValue::Boolean(b) => ValueType::BooleanValue(*b),
            CoreValue::Integer(i) => ValueType::IntegerValue(*i),
            CoreValue::Double(d) => ValueType::DoubleValue(*d),
            CoreValue::Timestamp(ts) => ValueType::TimestampValue((*ts).into()),
            CoreValue::String(s) => ValueType::StringValue(s.clone()),
            CoreValue::Bytes(b) => ValueType::BytesValue(b.clone()),
            CoreValue::Reference(r) => ValueType::ReferenceValue(r.clone()),
            CoreValue::GeoPoint(g) => ValueType::GeoPointValue(LatLng::new(g.latitude, g.longitude)),
            CoreValue::Array(items) => ValueType::ArrayValue(ArrayValue { values: items.iter().map(Value::from).collect() }),
            CoreValue::Map(fields) => ValueType::MapValue(MapValue { fields: fields_from_core(fields) }),
        };
        Value { value_type: Some(value_type) }
    }
}

fn fields_from_core(fields: &Fields) -> BTreeMap<String, Value> {
    fields.iter().map(|(k, v)| (k.clone(), Value::from(v))).collect()
}

impl Document {
    /// The payload form of a core document; `root` is [`documents_root`] of the
    /// database the document lives in.
    pub fn from_core(doc: &CoreDocument, root: &str) -> Self {
        Self {
            name: format!("{root}/{}", doc.path),
            fields: fields_from_core(&doc.fields),
            create_time: Some(doc.create_time.into()),
            update_time: Some(doc.update_time.into()),
        }
    }

    /// The core form. The name must be a full document resource name, and both
    /// timestamps must be present: Firestore always sets them, and the update time is
    /// the changelog's version, so a document without one cannot be placed in order.
    pub fn into_core(self) -> Result<CoreDocument, ConvertError> {
        let Document { mut name, fields, create_time, update_time } = self;
        let prefix_len = match relative_path(&name) {
            Some(path) => name.len() - path.len(),
            None => {
                return Err(ConvertError::new(format!(
                    "document name {name:?} is not projects/{{project}}/databases/{{database}}/documents/{{path}}"
                ))
                .within("name"))
            }
        };
        // Drop the prefix in place: the relative path keeps the decoded allocation.
        name.replace_range(..prefix_len, "");
        let time = |ts: Option<Timestamp>, field: &str| match ts {
            Some(ts) => CoreTimestamp::try_from(ts).map_err(|e| e.within(field.to_owned())),
            None => Err(ConvertError::new("missing").within(field.to_owned())),
        };
        Ok(CoreDocument {
            create_time: time(create_time, "create_time")?,
            update_time: time(update_time, "update_time")?,
            fields: fields_to_core(fields).map_err(|e| e.within("fields"))?,
            path: name,
        })
    }
}

/// The payload of a [`DocumentEventData`] in core terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CorePayload {
    pub value: Option<CoreDocument>,
    pub old_value: Option<CoreDocument>,
    pub update_mask: Vec<String>,
}

impl DocumentEventData {
    pub fn into_core(self) -> Result<CorePayload, ConvertError> {
        let document = |doc: Option<Document>, field: &str| {
            doc.map(|d| d.into_core().map_err(|e| e.within(field.to_owned()))).transpose()
        };
        Ok(CorePayload {
            value: document(self.value, "value")?,
            old_value: document(self.old_value, "old_value")?,
            update_mask: self.update_mask.map(|m| m.field_paths).unwrap_or_default(),
        })
    }

    /// The payload of a change; an empty update mask is left out, as Firestore does for
    /// creates and deletes.
    pub fn from_core(
        value: Option<&CoreDocument>,
        old_value: Option<&CoreDocument>,
        update_mask: &[String],
        root: &str,
    ) -> Self {
        Self {
            value: value.map(|d| Document::from_core(d, root)),
            old_value: old_value.map(|d| Document::from_core(d, root)),
            update_mask: (!update_mask.is_empty()).then(|| DocumentMask { field_paths: update_mask.to_vec() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn relative_paths_need_the_full_resource_name_shape() {
        assert_eq!(relative_path("projects/p/databases/(default)/documents/orgs/a"), Some("orgs/a"));
        assert_eq!(relative_path("projects/p/databases/(default)/documents/a/b/c/d"), Some("a/b/c/d"));
        assert_eq!(relative_path("projects/p/databases/(default)/documents/"), None);
        assert_eq!(relative_path("projects/p/databases/(default)/documents"), None);
        assert_eq!(relative_path("projects//databases/d/documents/a/b"), None);
        assert_eq!(relative_path("project/p/databases/d/documents/a/b"), None);
        assert_eq!(relative_path("orgs/a"), None);
        assert_eq!(relative_path(""), None);
    }

    #[test]
    fn field_numbers_match_data_proto() {
        // Bytes written by hand from data.proto's field numbers, so a wrong tag in the
        // structs above cannot be hidden by an encoder and decoder that agree.
        let doc = Document {
            name: "n".into(),
            fields: BTreeMap::from([("k".into(), Value { value_type: Some(ValueType::IntegerValue(5)) })]),
            create_time: Some(Timestamp { seconds: 1, nanos: 0 }),
            update_time: Some(Timestamp { seconds: 2, nanos: 3 }),
        };
        let bytes = DocumentEventData { value: None, old_value: Some(doc), update_mask: None }.encode_to_vec();
        let expected: &[u8] = &[
            0x12, 0x16, // old_value = 2, length 22
            0x0a, 0x01, b'n', // name = 1
            0x12, 0x07, // fields = 2 (map entry), length 7
            0x0a, 0x01, b'k', // key = 1
            0x12, 0x02, 0x10, 0x05, // value = 2: Value { integer_value = 2: 5 }
            0x1a, 0x02, 0x08, 0x01, // create_time = 3: { seconds = 1: 1 }
            0x22, 0x04, 0x08, 0x02, 0x10, 0x03, // update_time = 4: { seconds: 2, nanos: 3 }
        ];
        assert_eq!(bytes, expected);
        let tags = |value_type: ValueType| Value { value_type: Some(value_type) }.encode_to_vec()[0] >> 3;
        assert_eq!(tags(ValueType::NullValue(0)), 11);
        assert_eq!(tags(ValueType::BooleanValue(true)), 1);
        assert_eq!(tags(ValueType::DoubleValue(1.0)), 3);
        assert_eq!(tags(ValueType::TimestampValue(Timestamp::default())), 10);
        assert_eq!(tags(ValueType::StringValue(String::new())), 17);
        assert_eq!(tags(ValueType::BytesValue(Vec::new())), 18);
        assert_eq!(tags(ValueType::ReferenceValue(String::new())), 5);
        assert_eq!(tags(ValueType::GeoPointValue(LatLng::default())), 8);
        assert_eq!(tags(ValueType::ArrayValue(ArrayValue::default())), 9);
        assert_eq!(tags(ValueType::MapValue(MapValue::default())), 6);
        let mask = DocumentEventData { update_mask: Some(DocumentMask { field_paths: vec!["a".into()] }), ..Default::default() };
        assert_eq!(mask.encode_to_vec(), [0x1a, 0x03, 0x0a, 0x01, b'a']);
        let geo = LatLng::new(1.0, 2.0).encode_to_vec();
        assert_eq!((geo[0], geo[9]), (0x09, 0x11));
        // +0.0 is left out as proto3 leaves out defaults; -0.0 is not.
        assert_eq!(LatLng::new(0.0, 2.0).encode_to_vec()[0], 0x11);
        let signed = LatLng::decode(LatLng::new(-0.0, 0.0).encode_to_vec().as_slice()).unwrap();
        assert_eq!((signed.latitude().to_bits(), signed.longitude().to_bits()), ((-0.0f64).to_bits(), 0));
    }

    #[test]
    fn a_value_without_a_type_is_refused_with_its_location() {
        let inner = Value { value_type: Some(ValueType::ArrayValue(ArrayValue { values: vec![Value::default()] })) };
        let doc = Document {
            name: "projects/p/databases/d/documents/a/b".into(),
            fields: BTreeMap::from([("list".into(), inner)]),
            create_time: Some(Timestamp::default()),
            update_time: Some(Timestamp::default()),
        };
        let data = DocumentEventData { value: Some(doc), ..Default::default() };
        let err = data.into_core().unwrap_err();
        assert_eq!(
            err.to_string(),
            "at value.fields.list[0]: value has no type (none of the Value oneof fields is set)"
        );
    }

    #[test]
    fn documents_need_a_resource_name_and_both_times() {
        let doc = |name: &str, create: Option<Timestamp>, update: Option<Timestamp>| Document {
            name: name.into(),
            fields: BTreeMap::new(),
            create_time: create,
            update_time: update,
        };
        let ts = Some(Timestamp { seconds: 10, nanos: 5 });
        let ok = doc("projects/p/databases/d/documents/a/b", ts, ts).into_core().unwrap();
        assert_eq!((ok.path.as_str(), ok.update_time), ("a/b", CoreTimestamp::new(10, 5)));
        let err = doc("a/b", ts, ts).into_core().unwrap_err().to_string();
        assert!(err.starts_with("at name: document name \"a/b\" is not projects/"), "{err}");
        let err = doc("projects/p/databases/d/documents/a/b", ts, None).into_core().unwrap_err();
        assert_eq!(err.to_string(), "at update_time: missing");
        let bad = Some(Timestamp { seconds: 10, nanos: 1_000_000_000 });
        let err = doc("projects/p/databases/d/documents/a/b", bad, ts).into_core().unwrap_err();
        assert_eq!(err.to_string(), "at create_time: timestamp nanos 1000000000 is outside 0..=999999999");
        let far = Some(Timestamp { seconds: MAX_SECONDS + 1, nanos: 0 });
        assert!(doc("projects/p/databases/d/documents/a/b", ts, far).into_core().is_err());
    }
}
