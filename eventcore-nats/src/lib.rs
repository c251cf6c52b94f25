//! eventcore's global log relayed to NATS JetStream: every event once, in
//! log order, for other services to consume.
//!
//! - [`JetStreamSink`] is a [`RelaySink`](eventcore::RelaySink): run it
//!   with [`eventcore::relay`]. Each event becomes one message on
//!   `{prefix}.{stream id}.{event type}` (see [`subject`]), its payload the
//!   event's JSON, its id in `Nats-Msg-Id` (JetStream's de-duplication),
//!   its stream, version, position, type, schema version, time and
//!   metadata in `Eventcore-*` headers ([`headers`]).
//! - **Exactly once, in order, without trusting the de-duplication
//!   window.** The relay resumes from the last message the JetStream
//!   stream holds (read back from the stream, not from a checkpoint), and
//!   every message is published with `Nats-Expected-Last-Sequence`, the
//!   stream sequence the one before it got: a message that follows a lost
//!   one, or one published by a second relay, is refused by the server
//!   instead of stored out of order or twice. An outage of any length,
//!   a relay killed between publish and acknowledgement, a server
//!   restarted: the stream ends with each event once, in log order.
//!   The stream must therefore be written by the relay alone.
//! - [`Inbox`] applies each message once on the consumer's side: it keeps
//!   the stream sequence of the last message applied (store it with the
//!   view, in the same transaction), drops repeats and refuses gaps.
//!
//! ```no_run
//! use eventcore::{RelayConfig, SubscriptionName, relay};
//! use eventcore_memory::InMemoryEventStore;
//! use eventcore_nats::{JetStreamConfig, JetStreamSink};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = InMemoryEventStore::new();
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let sink = JetStreamSink::new(client, JetStreamConfig::new("EVENTCORE", "eventcore")?).await?;
//! let name = SubscriptionName::try_new("jetstream")?;
//! let running = relay(store.clone(), store.checkpoints().clone(), name, sink, RelayConfig::default());
//! # running.stop().await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod inbox;
mod message;
mod sink;

pub use inbox::{Delivery, Inbox, InboxError};
pub use message::{DecodeError, decode, headers, subject};
pub use sink::{JetStreamConfig, JetStreamSink, NatsError};

/// Names of the headers each relayed message carries.
pub mod header {
    /// The event's id (JetStream de-duplicates on it).
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// The event's place in the log, as `commit/sequence`.
    pub const POSITION: &str = "Eventcore-Position";
    /// The event's stream id, exactly (the subject escapes it).
    pub const STREAM: &str = "Eventcore-Stream";
    /// The event's version in its stream.
    pub const VERSION: &str = "Eventcore-Version";
    /// The event's type name, exactly.
    pub const EVENT_TYPE: &str = "Eventcore-Event-Type";
    /// The schema version the event was written at.
    pub const SCHEMA_VERSION: &str = "Eventcore-Schema-Version";
    /// When the store recorded it, in microseconds since the Unix epoch.
    pub const RECORDED_AT: &str = "Eventcore-Recorded-At";
    /// Its correlation id, if any.
    pub const CORRELATION_ID: &str = "Eventcore-Correlation-Id";
    /// Its causation id, if any.
    pub const CAUSATION_ID: &str = "Eventcore-Causation-Id";
    /// Its metadata's key/values as a JSON object, if any.
    pub const METADATA: &str = "Eventcore-Metadata";
}
