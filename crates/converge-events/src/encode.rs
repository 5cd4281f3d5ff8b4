//! A [`DocumentChange`] → the HTTP request Eventarc would deliver for it.
//!
//! Used by the embedded relay (the SQLite outbox → CloudEvents), by tests and by the
//! load generator, so that everything downstream of [`crate::decode`] sees exactly
//! what production sees. Binary content mode with protobuf data is what Eventarc sends
//! for Firestore; structured mode and JSON data exist for tests of the other paths.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use converge_core::{DocumentChange, Timestamp};
use http::header::{HeaderName, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};
use prost::Message as _;
use serde_json::{Map, Value as Json};

use crate::decode::STRUCTURED_CONTENT_TYPE;
use crate::proto::{documents_root, DocumentEventData};

/// The `dataschema` Eventarc sets on Firestore events.
pub const DATA_SCHEMA: &str =
    "https://github.com/googleapis/google-cloudevents/blob/main/proto/google/events/cloud/firestore/v1/data.proto";

/// The database an event comes from: its `source` and the `project`, `database`,
/// `namespace` and `location` extension attributes, and the prefix of every document
/// name in its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSource {
    pub project: String,
    pub database: String,
    pub namespace: String,
    pub location: String,
}

impl EventSource {
    /// The embedded setup's database: project `converge-local`, the default database
    /// and namespace, location `local`.
    pub fn local() -> Self {
        Self {
            project: "converge-local".into(),
            database: "(default)".into(),
            namespace: "(default)".into(),
            location: "local".into(),
        }
    }

    /// The CloudEvent `source`: `//firestore.googleapis.com/projects/{p}/databases/{db}`.
    pub fn source(&self) -> String {
        format!("//firestore.googleapis.com/projects/{}/databases/{}", self.project, self.database)
    }

    /// `projects/{p}/databases/{db}/documents`.
    pub fn documents_root(&self) -> String {
        documents_root(&self.project, &self.database)
    }

    /// The full resource name of a document given its relative path.
    pub fn document_name(&self, path: &str) -> String {
        format!("{}/{path}", self.documents_root())
    }
}

/// The attributes of one event that do not come from its [`EventSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    pub id: String,
    pub event_type: String,
    pub time: Timestamp,
    /// The document path relative to the documents root.
    pub document: String,
}

impl From<&DocumentChange> for EventMeta {
    fn from(change: &DocumentChange) -> Self {
        Self {
            id: change.event_id.clone(),
            event_type: change.event_type.clone(),
            time: change.event_time,
            document: change.document.clone(),
        }
    }
}

/// How [`to_structured`] carries the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    /// Protobuf, base64 in `data_base64`, `datacontenttype: application/protobuf`.
    Protobuf,
    /// The proto3 JSON mapping in `data`, `datacontenttype: application/json`.
    Json,
}

/// The event's data: a protobuf `DocumentEventData` whose document names are full
/// resource names in `source`'s database. An empty update mask is left out.
pub fn encode_event_data(change: &DocumentChange, source: &EventSource) -> Vec<u8> {
    event_data(change, source).encode_to_vec()
}

/// The event's data in the proto3 JSON mapping (int64 as strings, non-finite doubles as
/// `"NaN"`/`"Infinity"`, bytes as base64, timestamps as RFC 3339).
pub fn encode_event_data_json(change: &DocumentChange, source: &EventSource) -> Json {
    // Serializing these types to a JSON value cannot fail: every map key is a string.
    serde_json::to_value(event_data(change, source)).unwrap_or(Json::Null)
}

fn event_data(change: &DocumentChange, source: &EventSource) -> DocumentEventData {
    DocumentEventData::from_core(
        change.value.as_ref(),
        change.old_value.as_ref(),
        &change.update_mask,
        &source.documents_root(),
    )
}

/// The headers of a binary content mode request, as Eventarc sends them for Firestore.
/// CloudEvents attribute values are percent-encoded where they leave printable ASCII
/// (CloudEvents HTTP binding §3.1.3.2), so a document id with a space or an accent
/// survives the trip; [`crate::decode`] decodes them.
pub fn binary_headers(meta: &EventMeta, source: &EventSource) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(13);
    let mut put = |name: &'static str, value: &str| {
        headers.insert(HeaderName::from_static(name), attribute_header(value));
    };
    put("ce-specversion", "1.0");
    put("ce-id", &meta.id);
    put("ce-source", &source.source());
    put("ce-type", &meta.event_type);
    put("ce-subject", &format!("documents/{}", meta.document));
    put("ce-time", &meta.time.to_rfc3339());
    put("ce-dataschema", DATA_SCHEMA);
    put("ce-location", &source.location);
    put("ce-project", &source.project);
    put("ce-database", &source.database);
    put("ce-namespace", &source.namespace);
    put("ce-document", &meta.document);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/protobuf"));
    headers
}

/// The whole binary content mode request for a change: headers and protobuf body.
pub fn to_binary(change: &DocumentChange, source: &EventSource) -> (HeaderMap, Vec<u8>) {
    (binary_headers(&EventMeta::from(change), source), encode_event_data(change, source))
}

/// The structured content mode request for a change: `content-type:
/// application/cloudevents+json` and the whole event as one JSON object.
pub fn to_structured(change: &DocumentChange, source: &EventSource, data: DataFormat) -> (HeaderMap, Vec<u8>) {
    let mut event = Map::new();
    let mut put = |key: &str, value: Json| {
        event.insert(key.to_owned(), value);
    };
    put("specversion", "1.0".into());
    put("id", change.event_id.clone().into());
    put("source", source.source().into());
    put("type", change.event_type.clone().into());
    put("subject", format!("documents/{}", change.document).into());
    put("time", change.event_time.to_rfc3339().into());
    put("dataschema", DATA_SCHEMA.into());
    put("location", source.location.clone().into());
    put("project", source.project.clone().into());
    put("database", source.database.clone().into());
    put("namespace", source.namespace.clone().into());
    put("document", change.document.clone().into());
    match data {
        DataFormat::Protobuf => {
            put("datacontenttype", "application/protobuf".into());
            put("data_base64", STANDARD.encode(encode_event_data(change, source)).into());
        }
        DataFormat::Json => {
            put("datacontenttype", "application/json".into());
            put("data", encode_event_data_json(change, source));
        }
    }
    let mut headers = HeaderMap::with_capacity(1);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(STRUCTURED_CONTENT_TYPE));
    (headers, Json::Object(event).to_string().into_bytes())
}

/// Percent-encodes what the CloudEvents HTTP binding requires: bytes outside printable
/// ASCII (U+0021–U+007E), space, `"` and `%`.
fn attribute_header(value: &str) -> HeaderValue {
    let needs_encoding = |b: u8| !(0x21..=0x7e).contains(&b) || b == b'"' || b == b'%';
    if !value.bytes().any(needs_encoding) {
        if let Ok(header) = HeaderValue::from_str(value) {
            return header;
        }
    }
    let mut encoded = String::with_capacity(value.len() + 16);
    for b in value.bytes() {
        if needs_encoding(b) {
            encoded.push_str(&format!("%{b:02X}"));
        } else {
            encoded.push(b as char);
        }
    }
    // Only visible ASCII is left, which every header value may hold.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_values_leave_printable_ascii_percent_encoded() {
        assert_eq!(attribute_header("orgs/acme/records/r1"), "orgs/acme/records/r1");
        assert_eq!(attribute_header("orgs/café/a b/\"50%\""), "orgs/caf%C3%A9/a%20b/%2250%25%22");
        assert_eq!(attribute_header("tab\there"), "tab%09here");
    }

    #[test]
    fn binary_headers_are_eventarcs() {
        let meta = EventMeta {
            id: "id-1".into(),
            event_type: "google.cloud.firestore.document.v1.written".into(),
            time: Timestamp::new(1_714_557_600, 120_000_000),
            document: "orgs/acme/records/r1".into(),
        };
        let headers = binary_headers(&meta, &EventSource::local());
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("(missing)");
        assert_eq!(get("ce-specversion"), "1.0");
        assert_eq!(get("ce-id"), "id-1");
        assert_eq!(get("ce-source"), "//firestore.googleapis.com/projects/converge-local/databases/(default)");
        assert_eq!(get("ce-type"), "google.cloud.firestore.document.v1.written");
        assert_eq!(get("ce-subject"), "documents/orgs/acme/records/r1");
        assert_eq!(get("ce-time"), "2024-05-01T10:00:00.120Z");
        assert_eq!(get("ce-dataschema"), DATA_SCHEMA);
        assert_eq!(get("ce-location"), "local");
        assert_eq!(get("ce-project"), "converge-local");
        assert_eq!(get("ce-database"), "(default)");
        assert_eq!(get("ce-namespace"), "(default)");
        assert_eq!(get("ce-document"), "orgs/acme/records/r1");
        assert_eq!(get("content-type"), "application/protobuf");
        assert_eq!(headers.len(), 13);
    }
}
