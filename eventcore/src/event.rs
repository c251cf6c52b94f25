//! The events a domain records.

use serde::{Serialize, de::DeserializeOwned};

use crate::StreamId;

/// A domain event: a fact that happened to one stream.
///
/// Events are stored in their JSON form (`serde_json`) and read back by
/// deserialising that form, on every store, so a type whose serialisation does
/// not round-trip fails the same way in tests on the in-memory store as it
/// would in production on PostgreSQL.
///
/// Usually derived on an enum, one variant per kind of fact, with
/// [`#[derive(Event)]`](macro@crate::Event) (the `derive` feature, on by
/// default). By hand it looks like this:
///
/// ```
/// use eventcore::{Event, StreamId};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// enum AccountEvent {
///     Opened { account: StreamId },
///     Deposited { account: StreamId, amount: u64 },
/// }
///
/// impl Event for AccountEvent {
///     fn stream_id(&self) -> &StreamId {
///         match self {
///             AccountEvent::Opened { account } | AccountEvent::Deposited { account, .. } => account,
///         }
///     }
///
///     fn event_type(&self) -> &'static str {
///         match self {
///             AccountEvent::Opened { .. } => "AccountOpened",
///             AccountEvent::Deposited { .. } => "MoneyDeposited",
///         }
///     }
/// }
/// ```
pub trait Event: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The stream this event belongs to.
    fn stream_id(&self) -> &StreamId;

    /// A stable name for this kind of event (one per variant), stored next to
    /// the payload so that readers can filter and route without decoding it.
    fn event_type(&self) -> &'static str;
}
