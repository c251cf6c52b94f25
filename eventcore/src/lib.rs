#![doc = include_str!("../../README.md")]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

#[doc(hidden)]
#[path = "derive_support.rs"]
pub mod __derive;
mod cache;
mod command;
mod declared;
mod error;
mod event;
mod execute;
mod lease;
mod log;
mod metadata;
mod queue;
mod reads;
mod record;
mod retry;
mod snapshot;
mod state;
mod store;
mod stream;
mod subscription;
mod target;
mod writes;

pub use cache::{CacheConfig, CacheStats, StateCache};
pub use command::{CommandLogic, CommandStreams, NewEvents};
pub use error::{BoxError, ExecuteError, Refusal, StoreError, StoreErrorKind};
pub use event::Event;
pub use record::{CommandLookup, CommandRecord};

/// Implements [`Event`] for an enum: each variant's stream is its field
/// marked `#[stream]` (or, for every variant at once, the field named by
/// `#[event(stream = "field")]` on the enum), and its event type is the
/// name serde gives the variant: the variant's name, or the one set with
/// `#[serde(rename = "...")]` or `#[serde(rename_all = "...")]`, so the
/// stored type and the serialised form cannot drift apart. Misuse (a
/// variant without a stream, a marked field that is not a [`StreamId`], two
/// variants stored under one name, generics) is a compile error.
///
/// ```
/// use eventcore::{Event, StreamId};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize, Event)]
/// enum Account {
///     Opened { #[stream] account: StreamId, owner: String },
///     #[serde(rename = "MoneyDeposited")]
///     Deposited { #[stream] account: StreamId, cents: u64 },
/// }
///
/// let alice = StreamId::try_new("account-alice").unwrap();
/// let deposit = Account::Deposited { account: alice.clone(), cents: 500 };
/// assert_eq!(deposit.stream_id(), &alice);
/// assert_eq!(deposit.event_type(), "MoneyDeposited");
/// ```
///
/// A variant whose shape changed carries its schema version,
/// `#[event(version = N)]` (1 when absent), and the enum names the function
/// that brings older payloads up to date, `#[event(upcast = path)]`, called
/// as [`Event::upcast`] (a variant above version 1 without one is a compile
/// error):
///
/// ```
/// use eventcore::{BoxError, Event, StreamId};
/// use serde::{Deserialize, Serialize};
/// use serde_json::{Value, json};
///
/// #[derive(Debug, Clone, Serialize, Deserialize, Event)]
/// #[serde(tag = "type")]
/// #[event(stream = "account", upcast = read_old_shapes)]
/// enum Account {
///     Opened { account: StreamId },
///     /// Version 1 stored a float of dollars in `amount`; 2 stores cents.
///     #[serde(rename = "MoneyDeposited")]
///     #[event(version = 2)]
///     Deposited { account: StreamId, cents: u64 },
/// }
///
/// fn read_old_shapes(event_type: &str, from: u32, mut v: Value) -> Result<Value, BoxError> {
///     if (event_type, from) == ("MoneyDeposited", 1) {
///         let dollars = v["amount"].as_f64().ok_or("amount is not a number")?;
///         v["cents"] = json!((dollars * 100.0).round() as u64);
///     }
///     Ok(v)
/// }
///
/// assert_eq!(Account::schema_version("MoneyDeposited"), 2);
/// assert_eq!(Account::schema_version("Opened"), 1);
/// let v1 = json!({"type": "MoneyDeposited", "account": "acc-1", "amount": 0.1});
/// let read: Account = serde_json::from_value(Account::upcast("MoneyDeposited", 1, v1)?)?;
/// assert!(matches!(read, Account::Deposited { cents: 10, .. }));
/// # Ok::<(), BoxError>(())
/// ```
#[cfg(feature = "derive")]
pub use eventcore_macros::Event;

/// Implements [`CommandStreams`] for a struct: the command reads the
/// streams held by its fields marked `#[stream]`, each a [`StreamId`], an
/// `Option<StreamId>` or a collection of them (`Vec`, array, slice,
/// `BTreeSet`, `HashSet`, `VecDeque`). On an enum whose variants each wrap
/// one command (`Deposit(Deposit)`), a value reads the streams of the
/// command it holds. A struct without such a field, a marked field of
/// another type, a variant that wraps no command, and generics are compile
/// errors.
///
/// ```
/// use eventcore::{Command, CommandStreams, StreamId};
///
/// #[derive(Command)]
/// struct Transfer {
///     #[stream] from: StreamId,
///     #[stream] to: StreamId,
///     #[stream] fee_account: Option<StreamId>,
///     amount: u64,
/// }
///
/// let id = |s: &str| StreamId::try_new(s).unwrap();
/// let transfer = Transfer { from: id("a"), to: id("b"), fee_account: None, amount: 5 };
/// assert_eq!(transfer.streams(), vec![id("a"), id("b")]);
/// ```
#[cfg(feature = "derive")]
pub use eventcore_macros::Command;
pub use execute::{ExecuteOptions, MAX_DISCOVERY_ROUNDS, execute, execute_with};
pub use lease::{LeaseToken, SubscriptionName, SubscriptionNameError};
pub use log::{EventLog, LogPage, LogQuery, Position};
pub use metadata::{CausationId, CommandId, CorrelationId, IdError, MAX_ID_CHARS, Metadata};
pub use queue::CommandQueue;
pub use reads::{Decode, RecordedEvent, StreamReads};
pub use retry::RetryPolicy;
pub use snapshot::{Snapshot, SnapshotKey, SnapshotRead};
pub use state::StateKey;
pub use store::EventStore;
pub use stream::{MAX_STREAM_ID_CHARS, StreamId, StreamIdError, StreamVersion};
pub use subscription::{
    CheckpointStore, EventContext, Handler, OnHandlerError, SKIPPED_KEPT, SubscriptionConfig,
    SubscriptionError, SubscriptionHandle, SubscriptionLeases, SubscriptionReport, handler_fn,
    subscribe,
};
pub use target::ExecutionResult;
pub use uuid::Uuid;
pub use writes::{AppendOutcome, PendingEvent, StreamWrites};
