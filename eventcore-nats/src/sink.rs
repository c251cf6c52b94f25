//! The JetStream stream a relay publishes to.

use std::{
    collections::VecDeque,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage, stream};
use eventcore::{BoxError, Position, RecordedEvent, RelaySink};

use crate::message;

/// What went wrong talking to JetStream, or in the sink's settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// A stream name or subject prefix JetStream would refuse.
    #[error("{what} {value:?} is not valid: {reason}")]
    Config {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The stream exists but does not take the relay's subjects.
    #[error("JetStream stream {stream:?} does not take subjects {subjects:?} (it takes {taken:?})")]
    Subjects {
        /// The stream.
        stream: String,
        /// The subjects the relay publishes on.
        subjects: String,
        /// The subjects it takes.
        taken: Vec<String>,
    },
    /// The stream's last message was not relayed by eventcore: the stream
    /// must be written by the relay alone.
    #[error(
        "the last message of JetStream stream {stream:?} (sequence {sequence}) is not a relayed event: {source}"
    )]
    Foreign {
        /// The stream.
        stream: String,
        /// The message's stream sequence.
        sequence: u64,
        /// Why it is not.
        source: message::DecodeError,
    },
    /// JetStream stored a message elsewhere than right after the one
    /// before it, or called it a duplicate: the stream was written by
    /// someone else meanwhile.
    #[error(
        "JetStream stored event {position} at sequence {got} (duplicate: {duplicate}), expected {expected}"
    )]
    Sequence {
        /// The event.
        position: Position,
        /// Where it should have gone.
        expected: u64,
        /// Where it went.
        got: u64,
        /// Whether the server took it for a repeat.
        duplicate: bool,
    },
    /// A call to JetStream failed.
    #[error("JetStream {operation} failed: {source}")]
    JetStream {
        /// What was being done.
        operation: &'static str,
        /// The client's error.
        source: BoxError,
    },
}

fn jetstream_error(operation: &'static str) -> impl FnOnce(BoxError) -> NatsError {
    move |source| NatsError::JetStream { operation, source }
}

/// Whether `text` is one or more subject tokens with no wildcard and no
/// white space.
fn valid_subject(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| !c.is_whitespace() && !c.is_control() && c != '*' && c != '>')
        })
}

/// Where a [`JetStreamSink`] publishes and how its stream is made.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JetStreamConfig {
    /// The JetStream stream's name.
    pub stream: String,
    /// The first token(s) of every subject: events go to
    /// `{prefix}.{stream id}.{event type}`, the stream takes `{prefix}.>`.
    pub prefix: String,
    /// The server's de-duplication window on `Nats-Msg-Id`, for a stream
    /// the sink creates (the relay's exactness does not rely on it).
    pub duplicate_window: Duration,
    /// Where a stream the sink creates keeps its messages.
    pub storage: stream::StorageType,
}

impl JetStreamConfig {
    /// Events published on `{prefix}.…` into stream `stream` (made, kept
    /// in files, with a two-minute de-duplication window, if missing).
    ///
    /// # Errors
    /// [`NatsError::Config`] for a stream name or prefix JetStream would
    /// refuse.
    pub fn new(stream: impl Into<String>, prefix: impl Into<String>) -> Result<Self, NatsError> {
        let (stream, prefix) = (stream.into(), prefix.into());
        let bad_name = stream.is_empty()
            || stream
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c));
        if bad_name {
            return Err(NatsError::Config {
                what: "stream name",
                value: stream,
                reason: "it must be non-empty, with no white space and none of . * > / \\",
            });
        }
        if !valid_subject(&prefix) {
            return Err(NatsError::Config {
                what: "subject prefix",
                value: prefix,
                reason: "it must be dot-separated non-empty tokens with no white space and no wildcard",
            });
        }
        Ok(JetStreamConfig {
            stream,
            prefix,
            duplicate_window: Duration::from_secs(120),
            storage: stream::StorageType::File,
        })
    }

    /// Sets the de-duplication window of a stream the sink creates.
    pub fn with_duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// Keeps a stream the sink creates in memory instead of files.
    pub fn in_memory(mut self) -> Self {
        self.storage = stream::StorageType::Memory;
        self
    }
}

/// A JetStream stream as a [`RelaySink`]: see the crate's docs for what
/// each message carries and why the relay is exact.
#[derive(Debug)]
pub struct JetStreamSink {
    context: jetstream::Context,
    config: JetStreamConfig,
    /// The stream sequence of the last message stored, as last seen; `None`
    /// when unknown (at the start, after a failure).
    last: Mutex<Option<u64>>,
}

impl JetStreamSink {
    /// A sink publishing through `client`; makes the stream if it is
    /// missing.
    ///
    /// # Errors
    /// [`NatsError::Subjects`] if the stream exists and does not take
    /// `{prefix}.>`; [`NatsError::JetStream`] if JetStream cannot be
    /// reached.
    pub async fn new(
        client: async_nats::Client,
        config: JetStreamConfig,
    ) -> Result<Self, NatsError> {
        let context = jetstream::new(client);
        let subjects = format!("{}.>", config.prefix);
        let made = context
            .get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: vec![subjects.clone()],
                duplicate_window: config.duplicate_window,
                storage: config.storage,
                ..stream::Config::default()
            })
            .await;
        let mut stream = match made {
            Ok(stream) => stream,
            // Made by another sink between this one's look and its
            // create (two relays or services starting at once): take it.
            Err(first) => context
                .get_stream(&config.stream)
                .await
                .map_err(|_| jetstream_error("get or create stream")(first.into()))?,
        };
        let taken = &stream
            .info()
            .await
            .map_err(|e| jetstream_error("stream info")(e.into()))?
            .config
            .subjects;
        if !taken.contains(&subjects) {
            return Err(NatsError::Subjects {
                stream: config.stream,
                subjects,
                taken: taken.clone(),
            });
        }
        Ok(JetStreamSink {
            context,
            config,
            last: Mutex::new(None),
        })
    }

    /// The JetStream context the sink publishes through.
    pub fn context(&self) -> &jetstream::Context {
        &self.context
    }

    /// The sink's settings.
    pub fn config(&self) -> &JetStreamConfig {
        &self.config
    }

    fn set_last(&self, last: Option<u64>) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = last;
    }

    /// The stream's last sequence and the position of the event it holds.
    async fn read_last(&self) -> Result<(u64, Option<Position>), NatsError> {
        let name = &self.config.stream;
        let mut stream = self
            .context
            .get_stream(name)
            .await
            .map_err(|e| jetstream_error("get stream")(e.into()))?;
        let state = stream
            .info()
            .await
            .map_err(|e| jetstream_error("stream info")(e.into()))?
            .state
            .clone();
        if state.messages == 0 {
            return Ok((state.last_sequence, None));
        }
        let last = stream
            .get_raw_message(state.last_sequence)
            .await
            .map_err(|e| jetstream_error("get last message")(e.into()))?;
        let (position, _) =
            message::decode(&last.headers, &last.payload).map_err(|source| NatsError::Foreign {
                stream: name.clone(),
                sequence: state.last_sequence,
                source,
            })?;
        Ok((state.last_sequence, Some(position)))
    }

    /// Sends `events`, each expecting the sequence of the one before it,
    /// keeping at most [`IN_FLIGHT`] unacknowledged (the client lends a
    /// permit per publish until its acknowledgement is awaited, 5,000 by
    /// default: a batch larger than that would wait on itself); the stream
    /// sequence of the last one.
    async fn send_all(
        &self,
        base: u64,
        events: &[(Position, RecordedEvent)],
    ) -> Result<u64, NatsError> {
        let mut acks: VecDeque<(Position, u64, PublishAckFuture)> =
            VecDeque::with_capacity(events.len().min(IN_FLIGHT));
        let mut expected = base;
        for (position, event) in events {
            if acks.len() >= IN_FLIGHT
                && let Some(oldest) = acks.pop_front()
            {
                confirm(oldest).await?;
            }
            let publish = PublishMessage::build()
                .payload(bytes::Bytes::copy_from_slice(event.payload().as_bytes()))
                .headers(message::headers(*position, event))
                .expected_last_sequence(expected);
            let ack = self
                .context
                .send_publish(message::subject(&self.config.prefix, event), publish)
                .await
                .map_err(|e| jetstream_error("publish")(e.into()))?;
            expected += 1;
            acks.push_back((*position, expected, ack));
        }
        for pending in acks {
            confirm(pending).await?;
        }
        Ok(expected)
    }
}

/// The most publishes a sink keeps unacknowledged.
const IN_FLIGHT: usize = 1_024;

/// Awaits one acknowledgement: stored where expected, and not as a repeat.
async fn confirm(
    (position, expected, ack): (Position, u64, PublishAckFuture),
) -> Result<(), NatsError> {
    let ack = ack
        .await
        .map_err(|e| jetstream_error("publish acknowledgement")(e.into()))?;
    if ack.duplicate || ack.sequence != expected {
        return Err(NatsError::Sequence {
            position,
            expected,
            got: ack.sequence,
            duplicate: ack.duplicate,
        });
    }
    Ok(())
}

impl RelaySink for JetStreamSink {
    async fn last_relayed(&self) -> Result<Option<Position>, BoxError> {
        self.set_last(None);
        let (sequence, position) = self.read_last().await?;
        self.set_last(Some(sequence));
        Ok(position)
    }

    /// Pipelined: every message is sent before the first acknowledgement
    /// is awaited, each expecting the sequence of the one before it.
    async fn publish(&self, events: &[(Position, RecordedEvent)]) -> Result<(), BoxError> {
        let known = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let base = match known {
            Some(base) => base,
            None => {
                // Not seen since a failure: only events after the stream's
                // last one may go.
                let (base, stored) = self.read_last().await?;
                if let Some(((first, _), stored)) = events.first().zip(stored)
                    && *first <= stored
                {
                    return Err(NatsError::Sequence {
                        position: *first,
                        expected: base + 1,
                        got: base,
                        duplicate: true,
                    }
                    .into());
                }
                base
            }
        };
        let last = self.send_all(base, events).await?;
        self.set_last(Some(last));
        Ok(())
    }
}
