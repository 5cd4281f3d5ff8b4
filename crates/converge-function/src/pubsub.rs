//! Pub/Sub messages as Eventarc delivers them to a function: a CloudEvent of type
//! [`MESSAGE_PUBLISHED`] whose body is `{"message": {"data": base64, "messageId": …,
//! "publishTime": …}, "subscription": …}`. The reconciler and the nightly ETL accept
//! their triggers this way as well as from Cloud Scheduler.

use base64::Engine as _;
use serde::Deserialize;

/// The CloudEvent type of a Pub/Sub message delivered through Eventarc.
pub const MESSAGE_PUBLISHED: &str = "google.cloud.pubsub.topic.v1.messagePublished";

/// The parts of a delivered message the functions use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PubSubMessage {
    /// The message's payload, base64-decoded; empty when it has none.
    pub data: Vec<u8>,
    pub message_id: Option<String>,
    /// RFC 3339.
    pub publish_time: Option<String>,
}

/// Reads a `messagePublished` body. Errors say what was expected.
pub fn decode_message_published(body: &[u8]) -> Result<PubSubMessage, String> {
    #[derive(Deserialize)]
    struct Envelope {
        message: Message,
    }
    #[derive(Deserialize)]
    struct Message {
        #[serde(default)]
        data: Option<String>,
        #[serde(rename = "messageId", default)]
        message_id: Option<String>,
        #[serde(rename = "publishTime", default)]
        publish_time: Option<String>,
    }
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        format!("expected a Pub/Sub messagePublished payload {{\"message\": {{\"data\": base64, \"messageId\": …, \"publishTime\": …}}}}: {e}")
    })?;
    let Message { data, message_id, publish_time } = envelope.message;
    let data = match data.as_deref().filter(|d| !d.is_empty()) {
        None => Vec::new(),
        Some(text) => base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| format!("message.data is not base64: {e}"))?,
    };
    Ok(PubSubMessage { data, message_id, publish_time })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivered_message_is_read_with_its_payload_id_and_time() {
        let body = br#"{"message": {"data": "eyJhIjoxfQ==", "messageId": "m1", "publishTime": "2026-11-25T02:00:00Z"}, "subscription": "s"}"#;
        let message = decode_message_published(body).unwrap();
        assert_eq!(message.data, br#"{"a":1}"#);
        assert_eq!(message.message_id.as_deref(), Some("m1"));
        assert_eq!(message.publish_time.as_deref(), Some("2026-11-25T02:00:00Z"));
    }

    #[test]
    fn a_message_without_data_has_an_empty_payload() {
        assert_eq!(decode_message_published(br#"{"message": {}}"#).unwrap(), PubSubMessage::default());
        assert_eq!(decode_message_published(br#"{"message": {"data": ""}}"#).unwrap().data, Vec::<u8>::new());
    }

    #[test]
    fn bad_bodies_say_what_was_expected() {
        assert!(decode_message_published(b"{}").unwrap_err().contains("messagePublished payload"));
        assert!(decode_message_published(br#"{"message": {"data": "%%%"}}"#).unwrap_err().contains("not base64"));
    }
}
