//! Events as JetStream messages, and back.

use std::{
    fmt::Write as _,
    time::{Duration, UNIX_EPOCH},
};

use async_nats::HeaderMap;
use eventcore::{
    CausationId, CorrelationId, Metadata, Position, RecordedEvent, StreamId, StreamVersion, Uuid,
};

use crate::header;

/// Why a message is not a relayed event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A header every relayed message carries is missing.
    #[error("the message has no {0} header: not an event relayed by eventcore")]
    Missing(&'static str),
    /// A header holds what it cannot.
    #[error("the message's {header} header is not valid: {reason}")]
    Invalid {
        /// The header.
        header: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The payload is not UTF-8 text.
    #[error("the message's payload is not UTF-8 JSON text")]
    Payload,
}

fn invalid(header: &'static str, reason: impl std::fmt::Display) -> DecodeError {
    DecodeError::Invalid {
        header,
        reason: reason.to_string(),
    }
}

/// Appends `text` to `subject` as one subject token: ASCII letters, digits,
/// `-` and `_` as they are, every other byte as `%XX` (so `.`, `*`, `>`
/// and white space never split or widen a subject).
fn push_token(subject: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            subject.push(char::from(byte));
        } else {
            let _ = write!(subject, "%{byte:02X}");
        }
    }
}

/// The subject an event is published on: `{prefix}.{stream id}.{event
/// type}`, the last two escaped (see the crate's docs) so that a consumer
/// can filter on `{prefix}.account-alice.>` or `{prefix}.*.Deposited`.
///
/// ```
/// use eventcore::{RecordedEvent, StreamId, StreamVersion};
/// let event = RecordedEvent::new(StreamId::try_new("order.42").unwrap(), StreamVersion::new(1), 1, "Placed", "{}");
/// assert_eq!(eventcore_nats::subject("shop", &event), "shop.order%2E42.Placed");
/// ```
pub fn subject(prefix: &str, event: &RecordedEvent) -> String {
    let mut subject = String::with_capacity(prefix.len() + event.stream_id().as_str().len() + 24);
    subject.push_str(prefix);
    subject.push('.');
    push_token(&mut subject, event.stream_id().as_str());
    subject.push('.');
    push_token(&mut subject, event.event_type());
    subject
}

/// The headers of the message for the event at `position` (see
/// [`header`](crate::header)).
pub fn headers(position: Position, event: &RecordedEvent) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::MSG_ID, event.event_id().hyphenated().to_string());
    headers.insert(header::POSITION, position.to_string());
    headers.insert(header::STREAM, event.stream_id().as_str());
    headers.insert(header::VERSION, event.version().get().to_string());
    headers.insert(header::EVENT_TYPE, event.event_type());
    headers.insert(header::SCHEMA_VERSION, event.schema_version().to_string());
    let micros = event
        .recorded_at()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    headers.insert(header::RECORDED_AT, micros.to_string());
    let metadata = event.metadata();
    if let Some(id) = metadata.correlation_id() {
        headers.insert(header::CORRELATION_ID, id.as_str());
    }
    if let Some(id) = metadata.causation_id() {
        headers.insert(header::CAUSATION_ID, id.as_str());
    }
    if !metadata.values().is_empty() {
        headers.insert(header::METADATA, metadata.values_json());
    }
    headers
}

fn text<'a>(headers: &'a HeaderMap, name: &'static str) -> Option<&'a str> {
    headers.get(name).map(async_nats::HeaderValue::as_str)
}

fn required<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, DecodeError> {
    text(headers, name).ok_or(DecodeError::Missing(name))
}

fn number<T: std::str::FromStr>(headers: &HeaderMap, name: &'static str) -> Result<T, DecodeError>
where
    T::Err: std::fmt::Display,
{
    required(headers, name)?
        .parse()
        .map_err(|e| invalid(name, e))
}

/// The event a relayed message carries, with its place in the log, as the
/// store recorded it (its payload exactly as written: decode it with
/// [`RecordedEvent::decode`], which upcasts old shapes).
///
/// # Errors
/// [`DecodeError`] if a header is missing or wrong, or the payload is not
/// text.
pub fn decode(
    headers: &HeaderMap,
    payload: &[u8],
) -> Result<(Position, RecordedEvent), DecodeError> {
    let position: Position = number(headers, header::POSITION)?;
    let stream = StreamId::try_new(required(headers, header::STREAM)?)
        .map_err(|e| invalid(header::STREAM, e))?;
    let version = StreamVersion::new(number(headers, header::VERSION)?);
    let event_id = Uuid::parse_str(required(headers, header::MSG_ID)?)
        .map_err(|e| invalid(header::MSG_ID, e))?;
    let schema_version: u32 = number(headers, header::SCHEMA_VERSION)?;
    let micros: u64 = number(headers, header::RECORDED_AT)?;
    let payload = std::str::from_utf8(payload).map_err(|_| DecodeError::Payload)?;
    let mut metadata = Metadata::new();
    if let Some(id) = text(headers, header::CORRELATION_ID) {
        let id = CorrelationId::try_new(id).map_err(|e| invalid(header::CORRELATION_ID, e))?;
        metadata = metadata.with_correlation_id(id);
    }
    if let Some(id) = text(headers, header::CAUSATION_ID) {
        let id = CausationId::try_new(id).map_err(|e| invalid(header::CAUSATION_ID, e))?;
        metadata = metadata.with_causation_id(id);
    }
    if let Some(values) = text(headers, header::METADATA) {
        let values = serde_json::from_str(values).map_err(|e| invalid(header::METADATA, e))?;
        metadata = metadata.with_values(values);
    }
    let event = RecordedEvent::new(
        stream,
        version,
        position.sequence(),
        required(headers, header::EVENT_TYPE)?,
        payload,
    )
    .with_schema_version(schema_version)
    .with_event_id(event_id)
    .with_recorded_at(UNIX_EPOCH + Duration::from_micros(micros))
    .with_metadata(metadata);
    Ok((position, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_decodes_to_the_event_it_was_made_from() {
        let metadata = Metadata::new()
            .with_correlation_id(CorrelationId::try_new("c-1").unwrap())
            .with_causation_id(CausationId::try_new("k-2").unwrap())
            .with_value("tenant", "acme");
        let event = RecordedEvent::new(
            StreamId::try_new("account 7.€").unwrap(),
            StreamVersion::new(3),
            41,
            "Deposited",
            r#"{"amount":5}"#,
        )
        .with_schema_version(2)
        .with_event_id(Uuid::now_v7())
        .with_recorded_at(UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456))
        .with_metadata(metadata);
        let position = Position::new(9, 41);
        let (at, back) = decode(&headers(position, &event), event.payload().as_bytes()).unwrap();
        assert_eq!(at, position);
        assert_eq!(back, event);
    }

    #[test]
    fn subjects_escape_what_would_split_or_widen_them() {
        let event = RecordedEvent::new(
            StreamId::try_new("a.b *>%").unwrap(),
            StreamVersion::new(1),
            1,
            "T.x",
            "{}",
        );
        let subject = subject("p", &event);
        assert_eq!(subject, "p.a%2Eb%20%2A%3E%25.T%2Ex");
        assert_eq!(subject.split('.').count(), 3);
    }

    #[test]
    fn a_message_without_eventcore_headers_is_refused_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(header::POSITION, "1/1");
        let error = decode(&headers, b"{}").unwrap_err();
        assert!(
            matches!(error, DecodeError::Missing(header::STREAM)),
            "{error}"
        );
    }
}
