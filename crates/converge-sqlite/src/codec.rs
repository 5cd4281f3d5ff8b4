//! The stored form of a document's fields: a compact, tagged binary encoding.
//!
//! Why not Converge JSON text: doubles would go through decimal text, and serde_json's
//! default float parser is only best-effort exact, and NaN payloads and `-0.0` need
//! care. The source store must hand back exactly the bits it was given, because the
//! content hash (and so reconciliation) is computed over them. Binary is also several
//! times faster to write and read, which the bulk load needs.
//!
//! Layout: one format byte, then the fields. Fields are a varint count followed by
//! `(key, value)` pairs in key order (a `BTreeMap`, so the encoding is canonical and
//! two equal documents encode to equal bytes, which `apply` uses to detect no-op
//! writes). Each value is a tag byte followed by its payload.

use converge_core::{Fields, GeoPoint, Timestamp, Value};

/// The only format written so far; the byte leaves room to change it.
const FORMAT_V1: u8 = 1;

const TAG_NULL: u8 = 0;
const TAG_FALSE: u8 = 1;
const TAG_TRUE: u8 = 2;
const TAG_INTEGER: u8 = 3;
const TAG_DOUBLE: u8 = 4;
const TAG_TIMESTAMP: u8 = 5;
const TAG_STRING: u8 = 6;
const TAG_BYTES: u8 = 7;
const TAG_REFERENCE: u8 = 8;
const TAG_GEO_POINT: u8 = 9;
const TAG_ARRAY: u8 = 10;
const TAG_MAP: u8 = 11;

/// Firestore allows 20 levels of nesting; anything deeper in a stored blob is
/// corruption, and the limit keeps a corrupt blob from exhausting the stack.
const MAX_DEPTH: usize = 64;

/// Why a stored blob could not be decoded. Always a sign of corruption or of a
/// blob written by a newer version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("byte {offset}: {reason}")]
pub struct CodecError {
    pub offset: usize,
    pub reason: String,
}

pub fn encode_fields(fields: &Fields) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT_V1);
    write_fields(&mut out, fields);
    out
}

pub fn decode_fields(bytes: &[u8]) -> Result<Fields, CodecError> {
    let mut reader = Reader { bytes, offset: 0 };
    let format = reader.byte()?;
    if format != FORMAT_V1 {
        return Err(reader.error(format!("unknown format {format}")));
    }
    let fields = reader.fields(0)?;
    if reader.offset != bytes.len() {
        return Err(reader.error(format!("{} trailing bytes", bytes.len() - reader.offset)));
    }
    Ok(fields)
}

fn write_fields(out: &mut Vec<u8>, fields: &Fields) {
    write_varint(out, fields.len() as u64);
    for (key, value) in fields {
        write_bytes(out, key.as_bytes());
        write_value(out, value);
    }
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(TAG_NULL),
        Value::Boolean(false) => out.push(TAG_FALSE),
        Value::Boolean(true) => out.push(TAG_TRUE),
        Value::Integer(i) => {
            out.push(TAG_INTEGER);
            write_varint(out, zigzag(*i));
        }
        Value::Double(d) => {
            out.push(TAG_DOUBLE);
            // The raw bits: keeps -0.0 and NaN payloads exactly.
            out.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        Value::Timestamp(ts) => {
            out.push(TAG_TIMESTAMP);
            write_varint(out, zigzag(ts.seconds));
            write_varint(out, zigzag(i64::from(ts.nanos)));
        }
        Value::String(s) => {
            out.push(TAG_STRING);
            write_bytes(out, s.as_bytes());
        }
        Value::Bytes(b) => {
            out.push(TAG_BYTES);
            write_bytes(out, b);
        }
        Value::Reference(r) => {
            out.push(TAG_REFERENCE);
            write_bytes(out, r.as_bytes());
        }
        Value::GeoPoint(g) => {
            out.push(TAG_GEO_POINT);
            out.extend_from_slice(&g.latitude.to_bits().to_le_bytes());
            out.extend_from_slice(&g.longitude.to_bits().to_le_bytes());
        }
        Value::Array(items) => {
            out.push(TAG_ARRAY);
            write_varint(out, items.len() as u64);
            items.iter().for_each(|item| write_value(out, item));
        }
        Value::Map(fields) => {
            out.push(TAG_MAP);
            write_fields(out, fields);
        }
    }
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn write_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Small negative numbers stay short as varints.
fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl Reader<'_> {
    fn error(&self, reason: String) -> CodecError {
        CodecError { offset: self.offset, reason }
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let byte = *self.bytes.get(self.offset).ok_or_else(|| self.error("unexpected end".into()))?;
        self.offset += 1;
        Ok(byte)
    }

    fn take(&mut self, len: usize) -> Result<&[u8], CodecError> {
        let end = self.offset.checked_add(len).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| self.error(format!("length {len} runs past the end")))?;
        let slice = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(slice)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(self.error("varint longer than 10 bytes".into()))
    }

    fn length(&mut self) -> Result<usize, CodecError> {
        let n = self.varint()?;
        // A length can never exceed what is left; checking here keeps a corrupt
        // count from reserving huge allocations.
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.bytes.len() - self.offset)
            .ok_or_else(|| self.error(format!("length {n} exceeds the blob")))
    }

    fn f64(&mut self) -> Result<f64, CodecError> {
        let raw: [u8; 8] = self.take(8)?.try_into().map_err(|_| self.error("short double".into()))?;
        Ok(f64::from_bits(u64::from_le_bytes(raw)))
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let len = self.length()?;
        let start = self.offset;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|e| CodecError { offset: start, reason: format!("invalid UTF-8: {e}") })
    }

    fn fields(&mut self, depth: usize) -> Result<Fields, CodecError> {
        if depth > MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let count = self.length()?;
        let mut fields = Fields::new();
        for _ in 0..count {
            let key = self.string()?;
            let value = self.value(depth)?;
            if fields.insert(key, value).is_some() {
                return Err(self.error("duplicate map key".into()));
            }
        }
        Ok(fields)
    }

    fn value(&mut self, depth: usize) -> Result<Value, CodecError> {
        let tag = self.byte()?;
        Ok(match tag {
            TAG_NULL => Value::Null,
            TAG_FALSE => Value::Boolean(false),
            TAG_TRUE => Value::Boolean(true),
            TAG_INTEGER => Value::Integer(unzigzag(self.varint()?)),
            TAG_DOUBLE => Value::Double(self.f64()?),
            TAG_TIMESTAMP => {
                let seconds = unzigzag(self.varint()?);
                let nanos = i32::try_from(unzigzag(self.varint()?)).map_err(|_| self.error("nanos out of range".into()))?;
                Value::Timestamp(Timestamp::new(seconds, nanos))
            }
            TAG_STRING => Value::String(self.string()?),
            TAG_BYTES => {
                let len = self.length()?;
                Value::Bytes(self.take(len)?.to_vec())
            }
            TAG_REFERENCE => Value::Reference(self.string()?),
            TAG_GEO_POINT => Value::GeoPoint(GeoPoint { latitude: self.f64()?, longitude: self.f64()? }),
            TAG_ARRAY => {
                if depth >= MAX_DEPTH {
                    return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
                }
                let count = self.length()?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            TAG_MAP => Value::Map(self.fields(depth + 1)?),
            other => return Err(CodecError { offset: self.offset - 1, reason: format!("unknown value tag {other}") }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_type() -> Fields {
        let mut nested = Fields::new();
        nested.insert("$timestamp".into(), Value::String("a map that looks tagged".into()));
        nested.insert("deep".into(), Value::Array(vec![Value::Map(Fields::new()), Value::Array(vec![])]));
        let mut fields = Fields::new();
        fields.insert("null".into(), Value::Null);
        fields.insert("t".into(), Value::Boolean(true));
        fields.insert("f".into(), Value::Boolean(false));
        fields.insert("min".into(), Value::Integer(i64::MIN));
        fields.insert("max".into(), Value::Integer(i64::MAX));
        fields.insert("neg_zero".into(), Value::Double(-0.0));
        fields.insert("nan".into(), Value::Double(f64::from_bits(0x7ff8_0000_dead_beef)));
        fields.insert("inf".into(), Value::Double(f64::NEG_INFINITY));
        fields.insert("tiny".into(), Value::Double(f64::MIN_POSITIVE / 3.0));
        fields.insert("ts".into(), Value::Timestamp(Timestamp::new(-62_135_596_800, 999_999_999)));
        fields.insert("s".into(), Value::String("héllo \u{0} ✓".into()));
        fields.insert("b".into(), Value::Bytes(vec![0, 255, 128]));
        fields.insert("r".into(), Value::Reference("projects/p/databases/(default)/documents/a/b".into()));
        fields.insert("g".into(), Value::GeoPoint(GeoPoint { latitude: -90.0, longitude: 179.999_999_9 }));
        fields.insert("m".into(), Value::Map(nested));
        fields
    }

    fn bits_equal(a: &Fields, b: &Fields) -> bool {
        // Byte equality of the encodings compares doubles bit for bit (NaN included).
        encode_fields(a) == encode_fields(b) && a.len() == b.len()
    }

    #[test]
    fn round_trip_is_exact_for_every_type() {
        let fields = every_type();
        let decoded = decode_fields(&encode_fields(&fields)).unwrap();
        assert!(bits_equal(&fields, &decoded));
        let Value::Double(nan) = decoded["nan"] else { panic!("nan is a double") };
        assert_eq!(nan.to_bits(), 0x7ff8_0000_dead_beef);
        let Value::Double(zero) = decoded["neg_zero"] else { panic!("neg_zero is a double") };
        assert!(zero.is_sign_negative());
    }

    #[test]
    fn truncated_and_corrupt_blobs_are_errors_not_panics() {
        let blob = encode_fields(&every_type());
        for len in 0..blob.len() {
            assert!(decode_fields(&blob[..len]).is_err(), "prefix of {len} bytes decoded");
        }
        let mut bad_tag = encode_fields(&[("a".to_string(), Value::Null)].into_iter().collect());
        *bad_tag.last_mut().unwrap() = 200;
        assert!(decode_fields(&bad_tag).unwrap_err().reason.contains("unknown value tag"));
        assert!(decode_fields(&[9]).unwrap_err().reason.contains("unknown format"));
        // A huge declared count must not allocate.
        assert!(decode_fields(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
