//! The proto3 JSON mapping for the scalar types of [`crate::proto`] whose JSON form is
//! not serde's default: used through `#[serde(with = ...)]` there.
//!
//! Writers produce the canonical form (int64 as a string, non-finite doubles as
//! `"NaN"`/`"Infinity"`/`"-Infinity"`, standard padded base64, RFC 3339 UTC timestamps
//! with 0, 3, 6 or 9 fraction digits). Readers accept everything a conforming proto3
//! JSON parser must: int64 as a number or a string, doubles as numbers or strings,
//! standard or URL-safe base64 with or without padding, timestamps with any offset,
//! `null` or `"NULL_VALUE"` for a null.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::SerializeMap as _;
use serde::{Deserialize, Serialize, Serializer};

use super::{Timestamp, Value, ValueType};

/// `google.protobuf.NullValue`: written `null`; read from `null` or `"NULL_VALUE"`.
pub mod null {
    use super::*;

    pub fn serialize<S: Serializer>(_: &i32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        struct NullVisitor;
        impl Visitor<'_> for NullVisitor {
            type Value = i32;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("null or \"NULL_VALUE\"")
            }
            fn visit_unit<E: de::Error>(self) -> Result<i32, E> {
                Ok(0)
            }
            fn visit_none<E: de::Error>(self) -> Result<i32, E> {
                Ok(0)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<i32, E> {
                match v {
                    "NULL_VALUE" => Ok(0),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
        }
        d.deserialize_any(NullVisitor)
    }
}

/// `int64`: written as a decimal string (JavaScript readers lose digits beyond 2^53);
/// read from a string or an integral number.
pub mod int64 {
    use super::*;

    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        struct Int64Visitor;
        impl Visitor<'_> for Int64Visitor {
            type Value = i64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a 64-bit integer, as a number or a decimal string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
                Ok(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
                i64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
                v.parse().map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(Int64Visitor)
    }
}

/// `double`: finite values as JSON numbers, the rest as `"NaN"`, `"Infinity"`,
/// `"-Infinity"` (JSON has no such numbers); read from a number or any of those strings
/// or a numeric string.
pub mod double {
    use super::*;

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("Infinity")
        } else {
            s.serialize_str("-Infinity")
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        struct DoubleVisitor;
        impl Visitor<'_> for DoubleVisitor {
            type Value = f64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, \"NaN\", \"Infinity\" or \"-Infinity\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
                Ok(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
                match v {
                    "NaN" => Ok(f64::NAN),
                    "Infinity" => Ok(f64::INFINITY),
                    "-Infinity" => Ok(f64::NEG_INFINITY),
                    // Rust's parser would also take "inf" and "nan"; proto3 JSON does not.
                    other if other.bytes().any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E') => {
                        Err(E::invalid_value(de::Unexpected::Str(other), &self))
                    }
                    other => other.parse().map_err(|_| E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
        }
        d.deserialize_any(DoubleVisitor)
    }
}

/// An `optional double`: as [`double`] when present.
pub mod opt_double {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => double::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        double::deserialize(d).map(Some)
    }
}

/// `bytes`: written as standard padded base64; read from standard or URL-safe base64,
/// padded or not.
pub mod bytes {
    use super::*;

    const INDIFFERENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, INDIFFERENT);
    const URL_SAFE_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, INDIFFERENT);

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct BytesVisitor;
        impl Visitor<'_> for BytesVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
                let engine = if v.contains(['-', '_']) { &URL_SAFE_ANY_PADDING } else { &STANDARD_ANY_PADDING };
                engine.decode(v).map_err(|e| E::custom(format_args!("invalid base64 in bytesValue: {e}")))
            }
        }
        d.deserialize_str(BytesVisitor)
    }
}

/// A [`Value`] is its oneof: `{"stringValue": "a"}`. A value with no type, which only
/// a protobuf payload can carry, is written `{}`; reading `{}` fails, as it must.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.value_type {
            Some(value_type) => value_type.serialize(s),
            None => s.serialize_map(Some(0))?.end(),
        }
    }
}

/// Read by hand rather than derived so that a Value with no key, two keys or an
/// unknown key (a oneof holds exactly one of its fields) gets an error that says so.
/// The snake_case field names are accepted too, as proto3 JSON parsers must.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ValueVisitor)
    }
}

const VALUE_KEYS: &str = "nullValue, booleanValue, integerValue, doubleValue, timestampValue, stringValue, \
                          bytesValue, referenceValue, geoPointValue, arrayValue, mapValue";

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a Value: an object with exactly one of {VALUE_KEYS}")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        use de::Error as _;
        let Some(key) = map.next_key::<String>()? else {
            return Err(A::Error::custom(format_args!("a Value needs one of {VALUE_KEYS}; found an empty object")));
        };
        let value_type = match key.as_str() {
            "nullValue" | "null_value" => ValueType::NullValue(map.next_value::<With<NullJson>>()?.0),
            "booleanValue" | "boolean_value" => ValueType::BooleanValue(map.next_value()?),
            "integerValue" | "integer_value" => ValueType::IntegerValue(map.next_value::<With<Int64Json>>()?.0),
            "doubleValue" | "double_value" => ValueType::DoubleValue(map.next_value::<With<DoubleJson>>()?.0),
            "timestampValue" | "timestamp_value" => ValueType::TimestampValue(map.next_value()?),
            "stringValue" | "string_value" => ValueType::StringValue(map.next_value()?),
            "bytesValue" | "bytes_value" => ValueType::BytesValue(map.next_value::<With<BytesJson>>()?.0),
            "referenceValue" | "reference_value" => ValueType::ReferenceValue(map.next_value()?),
            "geoPointValue" | "geo_point_value" => ValueType::GeoPointValue(map.next_value()?),
            "arrayValue" | "array_value" => ValueType::ArrayValue(map.next_value()?),
            "mapValue" | "map_value" => ValueType::MapValue(map.next_value()?),
            other => {
                return Err(A::Error::custom(format_args!("unknown Value field `{other}`; expected one of {VALUE_KEYS}")))
            }
        };
        if let Some(second) = map.next_key::<String>()? {
            return Err(A::Error::custom(format_args!("a Value holds one type; found both `{key}` and `{second}`")));
        }
        Ok(Value { value_type: Some(value_type) })
    }
}

/// One of the `with` modules above, as a type `MapAccess::next_value` can produce.
trait JsonScalar {
    type Out;
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self::Out, D::Error>;
}

struct With<S: JsonScalar>(S::Out);

impl<'de, S: JsonScalar> Deserialize<'de> for With<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        S::read(d).map(With)
    }
}

macro_rules! json_scalar {
    ($name:ident, $module:ident, $out:ty) => {
        struct $name;
        impl JsonScalar for $name {
            type Out = $out;
            fn read<'de, D: Deserializer<'de>>(d: D) -> Result<$out, D::Error> {
                $module::deserialize(d)
            }
        }
    };
}

json_scalar!(NullJson, null, i32);
json_scalar!(Int64Json, int64, i64);
json_scalar!(DoubleJson, double, f64);
json_scalar!(BytesJson, bytes, Vec<u8>);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&converge_core::Timestamp::new(self.seconds, self.nanos).to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TimestampVisitor;
        impl Visitor<'_> for TimestampVisitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                let ts = parse_rfc3339(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))?;
                Ok(ts.into())
            }
        }
        d.deserialize_str(TimestampVisitor)
    }
}

/// Parses RFC 3339 into a timestamp with nanoseconds in `0..1e9`. chrono reports a leap
/// second (`23:59:60`) as nanoseconds past 1e9; it becomes the first instant of the
/// next second, which is where Google's own parsers put it.
pub fn parse_rfc3339(text: &str) -> Option<converge_core::Timestamp> {
    let dt = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    Some(from_seconds_nanos(dt.timestamp(), dt.timestamp_subsec_nanos()))
}

/// A chrono (seconds, subsec nanos) pair as a core timestamp, leap seconds folded.
pub(crate) fn from_seconds_nanos(seconds: i64, nanos: u32) -> converge_core::Timestamp {
    if nanos >= 1_000_000_000 {
        converge_core::Timestamp::new(seconds + 1, (nanos - 1_000_000_000) as i32)
    } else {
        converge_core::Timestamp::new(seconds, nanos as i32)
    }
}

#[cfg(test)]
mod tests {
    use crate::proto::{DocumentEventData, Value, ValueType};

    fn value(json: &str) -> Result<ValueType, String> {
        let value = serde_json::from_str::<Value>(json).map_err(|e| e.to_string())?;
        value.value_type.ok_or_else(|| "no type".to_owned())
    }

    #[test]
    fn integers_read_from_strings_and_numbers_and_write_as_strings() {
        assert_eq!(value(r#"{"integerValue":"9007199254740993"}"#), Ok(ValueType::IntegerValue(9_007_199_254_740_993)));
        assert_eq!(value(r#"{"integerValue":-5}"#), Ok(ValueType::IntegerValue(-5)));
        assert_eq!(value(r#"{"integer_value":"7"}"#), Ok(ValueType::IntegerValue(7)));
        assert!(value(r#"{"integerValue":"1.5"}"#).is_err());
        assert!(value(r#"{"integerValue":1.5}"#).is_err());
        assert!(value(r#"{"integerValue":18446744073709551615}"#).is_err());
        let json = serde_json::to_string(&ValueType::IntegerValue(i64::MIN)).unwrap();
        assert_eq!(json, r#"{"integerValue":"-9223372036854775808"}"#);
    }

    #[test]
    fn doubles_spell_non_finite_values_as_strings() {
        assert!(matches!(value(r#"{"doubleValue":"NaN"}"#), Ok(ValueType::DoubleValue(d)) if d.is_nan()));
        assert_eq!(value(r#"{"doubleValue":"-Infinity"}"#), Ok(ValueType::DoubleValue(f64::NEG_INFINITY)));
        assert_eq!(value(r#"{"doubleValue":1}"#), Ok(ValueType::DoubleValue(1.0)));
        assert_eq!(value(r#"{"doubleValue":"2.5e3"}"#), Ok(ValueType::DoubleValue(2500.0)));
        assert!(value(r#"{"doubleValue":"inf"}"#).is_err());
        assert!(value(r#"{"doubleValue":"nan"}"#).is_err());
        assert_eq!(serde_json::to_string(&ValueType::DoubleValue(f64::INFINITY)).unwrap(), r#"{"doubleValue":"Infinity"}"#);
        assert_eq!(serde_json::to_string(&ValueType::DoubleValue(f64::NAN)).unwrap(), r#"{"doubleValue":"NaN"}"#);
        assert_eq!(serde_json::to_string(&ValueType::DoubleValue(1.0)).unwrap(), r#"{"doubleValue":1.0}"#);
    }

    #[test]
    fn bytes_accept_both_alphabets_and_any_padding() {
        let expected = Ok(ValueType::BytesValue(vec![0xfb, 0xff, 0xbf]));
        assert_eq!(value(r#"{"bytesValue":"+/+/"}"#), expected);
        assert_eq!(value(r#"{"bytesValue":"-_-_"}"#), expected);
        assert_eq!(value(r#"{"bytesValue":"AQ=="}"#), Ok(ValueType::BytesValue(vec![1])));
        assert_eq!(value(r#"{"bytesValue":"AQ"}"#), Ok(ValueType::BytesValue(vec![1])));
        assert!(value(r#"{"bytesValue":"A"}"#).is_err());
        assert_eq!(serde_json::to_string(&ValueType::BytesValue(vec![1])).unwrap(), r#"{"bytesValue":"AQ=="}"#);
    }

    #[test]
    fn nulls_timestamps_and_the_rest() {
        assert_eq!(value(r#"{"nullValue":null}"#), Ok(ValueType::NullValue(0)));
        assert_eq!(value(r#"{"nullValue":"NULL_VALUE"}"#), Ok(ValueType::NullValue(0)));
        assert!(value(r#"{"nullValue":"NOPE"}"#).is_err());
        let ts = value(r#"{"timestampValue":"2024-05-01T12:00:00.000001+02:00"}"#).unwrap();
        assert!(matches!(ts, ValueType::TimestampValue(t) if t.seconds == 1_714_557_600 && t.nanos == 1_000));
        let leap = super::parse_rfc3339("2016-12-31T23:59:60.5Z").unwrap();
        assert_eq!(leap, converge_core::Timestamp::new(1_483_228_800, 500_000_000));
        assert!(value(r#"{"timestampValue":"yesterday"}"#).is_err());
        // Exactly one known key: a oneof cannot be empty or hold two values.
        let err = value(r#"{}"#).unwrap_err();
        assert!(err.starts_with("a Value needs one of nullValue, booleanValue, "), "{err}");
        assert!(err.ends_with("mapValue; found an empty object at line 1 column 2"), "{err}");
        let err = value(r#"{"stringValue":"a","booleanValue":true}"#).unwrap_err();
        assert_eq!(err, "a Value holds one type; found both `stringValue` and `booleanValue` at line 1 column 33");
        let err = value(r#"{"vectorValue":[1]}"#).unwrap_err();
        assert!(err.starts_with("unknown Value field `vectorValue`; expected one of nullValue"), "{err}");
        assert!(value(r#""a""#).unwrap_err().starts_with("invalid type: string \"a\", expected a Value: an object"));
    }

    #[test]
    fn a_document_event_reads_camel_and_snake_case() {
        let camel: DocumentEventData = serde_json::from_str(
            r#"{"value":{"name":"n","fields":{"a":{"mapValue":{"fields":{"b":{"arrayValue":{"values":[{"booleanValue":true}]}}}}}},
                "createTime":"2024-01-01T00:00:00Z","updateTime":"2024-01-01T00:00:01Z"},
                "updateMask":{"fieldPaths":["a"]},"someFutureField":1}"#,
        )
        .unwrap();
        let snake: DocumentEventData = serde_json::from_str(
            r#"{"value":{"name":"n","fields":{"a":{"map_value":{"fields":{"b":{"array_value":{"values":[{"boolean_value":true}]}}}}}},
                "create_time":"2024-01-01T00:00:00Z","update_time":"2024-01-01T00:00:01Z"},
                "update_mask":{"field_paths":["a"]}}"#,
        )
        .unwrap();
        assert_eq!(camel, snake);
        assert_eq!(camel.update_mask.unwrap().field_paths, ["a"]);
        let empty: DocumentEventData = serde_json::from_str(r#"{"value":{"name":"n","fields":{"m":{"mapValue":{}},"l":{"arrayValue":{}}}}}"#).unwrap();
        let fields = empty.value.unwrap().fields;
        assert!(matches!(&fields["m"], Value { value_type: Some(ValueType::MapValue(m)) } if m.fields.is_empty()));
        assert!(matches!(&fields["l"], Value { value_type: Some(ValueType::ArrayValue(a)) } if a.values.is_empty()));
    }
}
