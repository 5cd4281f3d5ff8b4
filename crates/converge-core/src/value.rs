//! Firestore values and their JSON form.
//!
//! [`Value`] mirrors `google.firestore.v1.Value` one variant per type, so nothing is
//! lost between the source and the changelog. [`Value::to_json`] writes the *Converge
//! JSON* form stored in the changelog's `data` column; [`Value::from_json`] reads it
//! back exactly:
//!
//! | Firestore type | JSON |
//! |---|---|
//! | null, boolean, string | the same JSON value |
//! | integer within ±2^53 | a JSON number without fraction or exponent (`42`) |
//! | integer beyond ±2^53 | `{"$int": "9007199254740993"}` (JSON readers lose such digits) |
//! | double, finite | a JSON number that always has a fraction or exponent (`3.0`, `1e300`) |
//! | double NaN / ±Infinity | `{"$double": "NaN"}`, `"Infinity"`, `"-Infinity"` |
//! | timestamp | `{"$timestamp": "2024-05-01T10:00:00.123456Z"}` (RFC 3339, UTC, nanos kept) |
//! | bytes | `{"$bytes": "<base64>"}` |
//! | reference | `{"$ref": "projects/p/databases/(default)/documents/a/b"}` |
//! | geo point | `{"$geo": {"lat": 1.5, "lng": -3.25}}` |
//! | array | a JSON array |
//! | map | a JSON object; a map whose only key starts with `$` is wrapped as `{"$map": {...}}` so it cannot be read as a tagged value |
//!
//! Plain JSON stays plain, so `data->>'$.account'` works in SQL; the tags appear only
//! where JSON has no native type.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map as JsonMap, Number, Value as Json};

/// Largest integer a double (and so most JSON readers) holds exactly.
const MAX_SAFE_INTEGER: i64 = 1 << 53;

/// A Firestore timestamp: seconds and nanoseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanos: i32,
}

impl Timestamp {
    pub fn new(seconds: i64, nanos: i32) -> Self {
        Self { seconds, nanos }
    }

    pub fn from_micros(micros: i64) -> Self {
        Self {
            seconds: micros.div_euclid(1_000_000),
            nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
        }
    }

    /// Microseconds since the epoch: the precision of Firestore commit times and of
    /// warehouse TIMESTAMP columns. Sub-microsecond digits are truncated.
    pub fn as_micros(&self) -> i64 {
        self.seconds * 1_000_000 + i64::from(self.nanos) / 1_000
    }

    /// RFC 3339 in UTC with as many fraction digits as needed (0, 3, 6 or 9).
    pub fn to_rfc3339(&self) -> String {
        let format = if self.nanos == 0 {
            chrono::SecondsFormat::Secs
        } else if self.nanos % 1_000_000 == 0 {
            chrono::SecondsFormat::Millis
        } else if self.nanos % 1_000 == 0 {
            chrono::SecondsFormat::Micros
        } else {
            chrono::SecondsFormat::Nanos
        };
        match chrono::DateTime::from_timestamp(self.seconds, self.nanos as u32) {
            Some(dt) => dt.to_rfc3339_opts(format, true),
            None => format!("{}.{:09}s", self.seconds, self.nanos),
        }
    }

    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let dt = chrono::DateTime::parse_from_rfc3339(text).ok()?;
        Some(Self { seconds: dt.timestamp(), nanos: dt.timestamp_subsec_nanos() as i32 })
    }
}

/// A latitude/longitude pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    pub latitude: f64,
    pub longitude: f64,
}

/// One Firestore field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Boolean(bool),
    Integer(i64),
    Double(f64),
    Timestamp(Timestamp),
    String(String),
    Bytes(Vec<u8>),
    /// A document reference, as the full resource name.
    Reference(String),
    GeoPoint(GeoPoint),
    Array(Vec<Value>),
    Map(Fields),
}

/// The fields of a document or map value, ordered by key so that every encoding of
/// them is canonical.
pub type Fields = BTreeMap<String, Value>;

/// A document as the source store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Path relative to the database's documents root, e.g. `orgs/acme/records/r1`.
    pub path: String,
    pub fields: Fields,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
}

/// Why a JSON value could not be read back as a Firestore value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Converge JSON at {at}: {reason}")]
pub struct JsonValueError {
    pub at: String,
    pub reason: String,
}

impl Value {
    /// The name of this value's Firestore type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Boolean(_) => "boolean",
            Value::Integer(_) => "integer",
            Value::Double(_) => "double",
            Value::Timestamp(_) => "timestamp",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Reference(_) => "reference",
            Value::GeoPoint(_) => "geo point",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
        }
    }

    /// The Converge JSON form (see the module docs).
    pub fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::Boolean(b) => Json::Bool(*b),
            Value::Integer(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(i) => Json::from(*i),
            Value::Integer(i) => tagged("$int", Json::String(i.to_string())),
            Value::Double(d) => match Number::from_f64(*d) {
                Some(n) => Json::Number(n),
                None => tagged("$double", Json::String(non_finite_name(*d).to_owned())),
            },
            Value::Timestamp(ts) => tagged("$timestamp", Json::String(ts.to_rfc3339())),
            Value::String(s) => Json::String(s.clone()),
            Value::Bytes(b) => tagged("$bytes", Json::String(base64::engine::general_purpose::STANDARD.encode(b))),
            Value::Reference(r) => tagged("$ref", Json::String(r.clone())),
            Value::GeoPoint(g) => {
                let mut point = JsonMap::new();
                point.insert("lat".into(), json_f64(g.latitude));
                point.insert("lng".into(), json_f64(g.longitude));
                tagged("$geo", Json::Object(point))
            }
            Value::Array(items) => Json::Array(items.iter().map(Value::to_json).collect()),
            Value::Map(fields) => {
                let object = fields_to_json_map(fields);
                let looks_tagged = object.len() == 1 && object.keys().all(|k| k.starts_with('$'));
                if looks_tagged {
                    tagged("$map", Json::Object(object))
                } else {
                    Json::Object(object)
                }
            }
        }
    }

    /// Reads the Converge JSON form back. Exact inverse of [`Value::to_json`].
    pub fn from_json(json: &Json) -> Result<Value, JsonValueError> {
        from_json_at(json, "$")
    }
}

/// A document's fields as one Converge JSON object (the changelog's `data` column).
pub fn fields_to_json(fields: &Fields) -> Json {
    Json::Object(fields_to_json_map(fields))
}

/// The text of [`fields_to_json`], written straight from the fields: the same bytes,
/// without building a JSON tree first (the sync path writes one per event, and the
/// tree's allocations cost more than the writing).
pub fn fields_to_json_string(fields: &Fields) -> String {
    serde_json::to_string(&JsonFields(fields)).expect("Converge JSON of fields always serializes (string keys, finite numbers)")
}

/// Serializes as [`fields_to_json`]'s object.
struct JsonFields<'a>(&'a Fields);

/// Serializes as [`Value::to_json`].
struct JsonOf<'a>(&'a Value);

/// `{tag: value}`: the one-key objects of tagged values.
struct Tagged<'a, T: serde::Serialize>(&'a str, T);

struct JsonGeo<'a>(&'a GeoPoint);

impl serde::Serialize for JsonFields<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, &JsonOf(value))?;
        }
        map.end()
    }
}

impl<T: serde::Serialize> serde::Serialize for Tagged<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.0, &self.1)?;
        map.end()
    }
}

impl serde::Serialize for JsonGeo<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let finite = |d: f64| d.is_finite().then_some(d);
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("lat", &finite(self.0.latitude))?;
        map.serialize_entry("lng", &finite(self.0.longitude))?;
        map.end()
    }
}

impl serde::Serialize for JsonOf<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        match self.0 {
            Value::Null => serializer.serialize_unit(),
            Value::Boolean(b) => serializer.serialize_bool(*b),
            Value::Integer(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(i) => serializer.serialize_i64(*i),
            Value::Integer(i) => Tagged("$int", i.to_string()).serialize(serializer),
            Value::Double(d) if d.is_finite() => serializer.serialize_f64(*d),
            Value::Double(d) => Tagged("$double", non_finite_name(*d)).serialize(serializer),
            Value::Timestamp(ts) => Tagged("$timestamp", ts.to_rfc3339()).serialize(serializer),
            Value::String(s) => serializer.serialize_str(s),
            Value::Bytes(b) => Tagged("$bytes", base64::engine::general_purpose::STANDARD.encode(b)).serialize(serializer),
            Value::Reference(r) => Tagged("$ref", r).serialize(serializer),
            Value::GeoPoint(g) => Tagged("$geo", JsonGeo(g)).serialize(serializer),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&JsonOf(item))?;
                }
                seq.end()
            }
            Value::Map(fields) if fields.len() == 1 && fields.keys().all(|k| k.starts_with('$')) => {
                Tagged("$map", JsonFields(fields)).serialize(serializer)
            }
            Value::Map(fields) => JsonFields(fields).serialize(serializer),
        }
    }
}

/// Reads a `data` object back into fields.
pub fn fields_from_json(json: &Json) -> Result<Fields, JsonValueError> {
    match json {
        Json::Object(object) => object_to_fields(object, "$"),
        other => Err(JsonValueError { at: "$".into(), reason: format!("expected an object, found {other}") }),
    }
}

fn fields_to_json_map(fields: &Fields) -> JsonMap<String, Json> {
    fields.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()
}

fn tagged(tag: &str, value: Json) -> Json {
    let mut object = JsonMap::new();
    object.insert(tag.to_owned(), value);
    Json::Object(object)
}

fn json_f64(d: f64) -> Json {
    Number::from_f64(d).map(Json::Number).unwrap_or(Json::Null)
}

fn non_finite_name(d: f64) -> &'static str {
    if d.is_nan() {
        "NaN"
    } else if d > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

fn object_to_fields(object: &JsonMap<String, Json>, at: &str) -> Result<Fields, JsonValueError> {
    object
        .iter()
        .map(|(k, v)| Ok((k.clone(), from_json_at(v, &format!("{at}.{k}"))?)))
        .collect()
}

fn from_json_at(json: &Json, at: &str) -> Result<Value, JsonValueError> {
    let err = |reason: String| JsonValueError { at: at.to_owned(), reason };
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(*b),
        Json::String(s) => Value::String(s.clone()),
        Json::Number(n) => {
            // serde_json keeps whether the text had a fraction or exponent: integers
            // come back as i64/u64, everything else as f64.
            if let Some(i) = n.as_i64() {
                Value::Integer(i)
            } else if n.is_u64() {
                return Err(err(format!("integer {n} does not fit in 64 bits")));
            } else {
                Value::Double(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| from_json_at(v, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(object) => {
            let single_tag = (object.len() == 1).then(|| object.iter().next()).flatten();
            match single_tag {
                Some((tag, inner)) if tag.starts_with('$') => from_tagged(tag, inner, at)?,
                _ => Value::Map(object_to_fields(object, at)?),
            }
        }
    })
}

fn from_tagged(tag: &str, inner: &Json, at: &str) -> Result<Value, JsonValueError> {
    let err = |reason: String| JsonValueError { at: at.to_owned(), reason };
    let text = || inner.as_str().ok_or_else(|| err(format!("`{tag}` expects a string, found {inner}")));
    Ok(match tag {
        "$int" => Value::Integer(text()?.parse().map_err(|e| err(format!("`$int`: {e}")))?),
        "$double" => Value::Double(match text()? {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            other => other.parse().map_err(|e| err(format!("`$double` {other:?}: {e}")))?,
        }),
        "$timestamp" => Value::Timestamp(
            Timestamp::parse_rfc3339(text()?).ok_or_else(|| err(format!("`$timestamp` {inner} is not RFC 3339")))?,
        ),
        "$bytes" => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(text()?)
                .map_err(|e| err(format!("`$bytes`: {e}")))?,
        ),
        "$ref" => Value::Reference(text()?.to_owned()),
        "$geo" => {
            let coordinate = |name: &str| {
                inner.get(name).and_then(Json::as_f64).ok_or_else(|| err(format!("`$geo` needs a numeric `{name}`")))
            };
            Value::GeoPoint(GeoPoint { latitude: coordinate("lat")?, longitude: coordinate("lng")? })
        }
        "$map" => match inner {
            Json::Object(object) => Value::Map(object_to_fields(object, at)?),
            other => return Err(err(format!("`$map` expects an object, found {other}"))),
        },
        other => return Err(err(format!("unknown tag `{other}`; a map with one `$` key is written as {{\"$map\": ...}}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Boolean),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>().prop_map(Value::Double),
            (-62_135_596_800i64..253_402_300_799, 0i32..1_000_000_000).prop_map(|(s, n)| Value::Timestamp(Timestamp::new(s, n))),
            ".*".prop_map(Value::String),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
            "[a-z/]{1,20}".prop_map(Value::Reference),
            (-90.0f64..90.0, -180.0f64..180.0).prop_map(|(latitude, longitude)| Value::GeoPoint(GeoPoint { latitude, longitude })),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("\\$?[a-z]{0,6}", inner, 0..4).prop_map(Value::Map),
            ]
        })
    }

    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Double(x), Value::Double(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
            (Value::Map(x), Value::Map(y)) => x.len() == y.len() && x.iter().zip(y).all(|((ka, a), (kb, b))| ka == kb && same(a, b)),
            _ => a == b,
        }
    }

    proptest! {
        #[test]
        fn json_round_trip_is_exact(value in arb_value()) {
            let json = value.to_json();
            // Through text too: that is how the warehouse stores it.
            let reparsed: Json = serde_json::from_str(&json.to_string()).unwrap();
            let back = Value::from_json(&reparsed).unwrap();
            prop_assert!(same(&value, &back), "{value:?} -> {json} -> {back:?}");
        }
    }

    proptest! {
        #[test]
        fn the_direct_writer_writes_the_trees_text(fields in proptest::collection::btree_map("\\$?[a-z]{0,6}", arb_value(), 0..6)) {
            prop_assert_eq!(fields_to_json_string(&fields), fields_to_json(&fields).to_string());
        }
    }

    #[test]
    fn the_direct_writer_handles_every_tagged_form() {
        let mut fields = Fields::new();
        fields.insert("big".into(), Value::Integer(i64::MIN));
        fields.insert("nan".into(), Value::Double(f64::NAN));
        fields.insert("inf".into(), Value::Double(f64::NEG_INFINITY));
        fields.insert("geo".into(), Value::GeoPoint(GeoPoint { latitude: f64::NAN, longitude: -3.25 }));
        fields.insert("tagged".into(), Value::Map(Fields::from([("$x".to_owned(), Value::Null)])));
        fields.insert("empty".into(), Value::Map(Fields::new()));
        fields.insert("zero".into(), Value::Double(-0.0));
        assert_eq!(fields_to_json_string(&fields), fields_to_json(&fields).to_string());
    }

    #[test]
    fn plain_values_stay_plain() {
        assert_eq!(Value::Integer(42).to_json(), serde_json::json!(42));
        assert_eq!(Value::Double(3.0).to_json().to_string(), "3.0");
        assert_eq!(Value::String("x".into()).to_json(), serde_json::json!("x"));
    }

    #[test]
    fn integers_beyond_2_pow_53_are_tagged() {
        let big = (1i64 << 53) + 1;
        assert_eq!(Value::Integer(big).to_json(), serde_json::json!({"$int": "9007199254740993"}));
        assert_eq!(Value::Integer(1 << 53).to_json(), serde_json::json!(9007199254740992i64));
    }

    #[test]
    fn timestamps_keep_nanoseconds() {
        let ts = Timestamp::new(1_714_557_600, 123_456_789);
        let json = Value::Timestamp(ts).to_json();
        assert_eq!(json, serde_json::json!({"$timestamp": "2024-05-01T10:00:00.123456789Z"}));
        assert_eq!(Value::from_json(&json).unwrap(), Value::Timestamp(ts));
    }

    #[test]
    fn a_user_map_shaped_like_a_tag_is_wrapped() {
        let mut fields = Fields::new();
        fields.insert("$timestamp".into(), Value::String("not a time".into()));
        let json = Value::Map(fields.clone()).to_json();
        assert_eq!(json, serde_json::json!({"$map": {"$timestamp": "not a time"}}));
        assert_eq!(Value::from_json(&json).unwrap(), Value::Map(fields));
    }

    #[test]
    fn unknown_tags_are_refused_with_their_location() {
        let err = fields_from_json(&serde_json::json!({"a": {"$what": 1}})).unwrap_err();
        assert_eq!(err.at, "$.a");
        assert!(err.reason.contains("unknown tag"));
    }
}
