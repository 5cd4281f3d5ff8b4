//! Firestore document events as Eventarc delivers them: CloudEvents over HTTP whose
//! data is `google.events.cloud.firestore.v1.DocumentEventData`.
//!
//! [`decode`] turns one request into a [`converge_core::DocumentChange`] or a
//! [`DecodeError`] that names its quarantine reason; the `encode` functions produce the
//! same requests from a change, so the embedded relay, the tests and the load generator
//! send exactly what Eventarc sends.
//!
//! # Layout
//!
//! - [`proto`]: hand-written prost messages for `DocumentEventData` and its conversions
//!   to and from the core's `Document` / `Value`.
//!   - [`proto::json`]: the proto3 JSON mapping of those messages' scalars (int64 as
//!     strings, `"NaN"`, base64, RFC 3339), for `application/json` data.
//! - [`decode`]: HTTP headers + body → `DocumentChange`; binary and structured content
//!   modes; protobuf and JSON data; [`DecodeError`].
//! - [`encode`]: `DocumentChange` → Eventarc's binary-mode headers and protobuf body, or
//!   a structured-mode request.
//!
//! Outside `src/`: `tests/fixtures/` holds golden Eventarc requests whose protobuf was
//! written by Google's own runtime (`generate.py`), `tests/fixtures.rs` pins what each
//! decodes to, `tests/roundtrip.rs` checks encode → decode over arbitrary changes, and
//! `examples/throughput.rs` measures events per second.

pub mod decode;
pub mod encode;
pub mod proto;

pub use decode::{
    decode, is_firestore_event_type, DecodeError, DecodeErrorKind, FIRESTORE_EVENT_TYPES, STRUCTURED_CONTENT_TYPE,
};
pub use encode::{
    binary_headers, encode_event_data, encode_event_data_json, to_binary, to_structured, DataFormat, EventMeta,
    EventSource, DATA_SCHEMA,
};
