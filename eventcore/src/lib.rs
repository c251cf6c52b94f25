//! Multi-stream event sourcing: commands that read several streams and
//! append to them atomically, with optimistic concurrency and retries.
//!
//! This page is a tour of the API; the repository's README is the user's
//! guide (setup, the bank example, guarantees, faults, benchmarks), and its
//! examples run as this crate's doctests.
//!
//! # The flow of a command
//!
//! ```text
//! execute(&store, command)                       the store's default Executor (cache + queue)
//!   streams = command.streams()                  CommandStreams (#[derive(Command)])
//!   loop:
//!     answer = store.read(ReadRequest {          EventStore::read: one round trip, for what
//!                streams + held versions,          is not kept; the command's record if
//!                command id?, snapshot? })         it was applied before
//!     state  = fold(answer, command.apply)       CommandLogic::apply, per event
//!     more   = command.discover_streams(&state)  optional: read those too
//!     events = command.handle(&state)?           CommandLogic::handle: pure, borrows, typed refusals
//!     store.append(StreamWrites { expected version of EVERY stream read, events })
//!       Ok(outcome)   -> ExecutionResult
//!       Err(conflict) -> back off (RetryPolicy, jittered), read again
//! ```
//!
//! [`execute`] runs it with defaults, [`execute_with`] with
//! [`ExecuteOptions`] (a [`RetryPolicy`], [`Metadata`], a [`CommandId`] that
//! makes the command apply at most once). Both run on the default
//! [`Executor`] of the store's [identity](EventStore::identity); an
//! [`Executor`] of your own ([`Executor::with_cache`]) keeps its own states
//! and queue (one per tenant). A command whose state is made of per-stream
//! [`Fold`]s ([`Decide`]) has each fold kept per stream in the executor's
//! [`StateCache`], shared by every command that folds that stream the same
//! way, with snapshots per fold carried by its appends: a command whose
//! folds are kept appends at once, one round trip. A [`CommandLogic`]
//! folds its streams' whole history with its own `apply`, every time: the
//! always-correct escape hatch, and the one that can discover streams.
//!
//! # The store contract
//!
//! A backend implements three methods of [`EventStore`]:
//! [`read`](EventStore::read) (a [`ReadRequest`] in, a [`ReadAnswer`] out),
//! [`append`](EventStore::append) (a [`StreamWrites`]) and
//! [`identity`](EventStore::identity). Conveniences over them are
//! [`EventStoreExt`], for every store; capabilities a store may lack are
//! traits of their own ([`CommandRecords`], [`EventLog`], [`CheckpointStore`],
//! [`SubscriptionLeases`]). A wrapper forwards the three methods (check it
//! with `#[deny(clippy::missing_trait_methods)]`) and takes every path of
//! the store it wraps.
//!
//! # Where each part lives
//!
//! | you want | look at |
//! |---|---|
//! | events of your domain | [`Event`] (`#[derive(Event)]`), [`StreamId`], [`StreamSet`], schema versions and [`Event::upcast`] |
//! | a command | [`CommandStreams`] (`#[derive(Command)]`, its stable [`command_name`](CommandStreams::command_name)), [`Decide`] on per-stream [`Fold`]s, or [`CommandLogic`] over the whole history, [`NewEvents`], [`require!`] |
//! | running it | [`execute`], [`execute_with`], [`Executor`], [`ExecuteOptions`], [`ExecutionResult`], [`ExecuteError`] |
//! | a store | [`EventStore`] ([`ReadRequest`], [`ReadAnswer`], [`StreamWrites`], [`StoreIdentity`]), [`EventStoreExt`], [`CommandRecords`]; implemented by `eventcore-memory` and `eventcore-postgres`, proven by `eventcore-testing`'s conformance suite |
//! | what went wrong | [`StoreError`] and its [`kind`](StoreError::kind) ([`StoreErrorKind`]), [`ExecuteError`] |
//! | the global log | [`EventLog`], [`LogQuery`], [`LogPage`], [`Position`] |
//! | following it | [`subscribe`], [`Handler`] / [`handler_fn`], [`SubscriptionConfig`], [`CheckpointStore`], [`SubscriptionLeases`] |
//! | where an event came from | [`Metadata`], [`CorrelationId`], [`CausationId`], [`RecordedEvent`] |
//!
//! # Subscriptions
//!
//! [`subscribe`] starts a task that reads the log from the subscription's
//! checkpoint in pages, then follows new events (woken by the store when it
//! can, polling otherwise), hands each to a [`Handler`] in log order, and
//! saves the checkpoint after every page and at stop. One instance per
//! [`SubscriptionName`] runs at a time across processes: the store hands out
//! one lease per name ([`SubscriptionLeases`]), each with a [`LeaseToken`]
//! larger than the last, and [`CheckpointStore::save`] refuses every token
//! but the newest and never moves a checkpoint back. Delivery is at least
//! once for a plain handler; a handler whose effects commit with the
//! checkpoint (the stores' `ExactlyOnce`) applies each event once, across
//! crashes and lease handovers. [`SubscriptionHandle::stop`] ends every
//! wait at once and gives the event under way
//! [`stop_grace`](SubscriptionConfig::stop_grace).
//!
//! ```
//! use eventcore::{BoxError, EventContext, SubscriptionConfig, SubscriptionName, handler_fn, subscribe};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = eventcore_memory::InMemoryEventStore::new();
//! let handler = handler_fn(|context: &EventContext, _: &serde_json::Value| {
//!     let at = context.position();
//!     async move { println!("event at {at}"); Ok::<(), BoxError>(()) }
//! });
//! let name = SubscriptionName::try_new("printer")?;
//! let handle = subscribe(store.clone(), store, name, handler, SubscriptionConfig::default());
//! handle.stop().await?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

#[doc(hidden)]
#[path = "derive_support.rs"]
pub mod __derive;
mod cache;
mod command;
mod dead_letter;
mod erased;
mod error;
mod event;
mod execute;
mod executor;
mod fold;
mod folded;
mod identity;
mod lanes;
mod lease;
mod log;
mod metadata;
mod queue;
mod reactor;
mod reads;
mod record;
mod relay;
mod request;
mod retry;
mod snapshot;
mod store;
mod stream;
mod subscription;
mod target;
mod writes;

pub use cache::{CacheConfig, CacheStats, StateCache};
pub use command::{CommandLogic, CommandStreams, NewEvents};
#[doc(hidden)]
pub use dead_letter::{
    DEAD_LETTER_POLL, DeadLetter, DeadLetterAction, DeadLetters, MAX_ERROR_CHARS,
};
pub use erased::{ErasedFold, FoldKind, FoldPlan, Part, Slot};
pub use error::{BoxError, ExecuteError, Refusal, StoreError, StoreErrorKind};
pub use event::Event;
pub use fold::{Decide, Fold, FoldState};
pub use reactor::{
    AfterFailure, Deliver, DispatchConfig, DispatchHandle, DispatchReport, Effect, EffectAction,
    EffectKey, EffectState, MAX_EFFECT_ERROR_CHARS, Outbox, Reaction, Reactor, StoredEffect,
    deliver_fn, dispatch, reaction_command_id,
};
pub use record::CommandRecord;
pub use relay::{RelayConfig, RelayHandle, RelayReport, RelaySink, relay};

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
/// Implements [`FoldState`](trait@FoldState) for a struct whose named fields
/// are folds (or states of folds), and generates `{State}Streams`, the
/// struct of their streams that the command's [`Decide::folds`] returns;
/// see [`FoldState`](trait@FoldState).
#[cfg(feature = "derive")]
pub use eventcore_macros::FoldState;
pub use execute::{ExecuteOptions, MAX_DISCOVERY_ROUNDS};
pub use executor::{Executor, execute, execute_with};
pub use identity::StoreIdentity;
pub use lanes::{
    Lane, LaneKey, LaneNameError, Lanes, LanesHandle, LanesReport, lane_name, lane_of,
    subscribe_lanes,
};
pub use lease::{LeaseToken, SubscriptionName, SubscriptionNameError};
pub use log::{EventLog, LogPage, LogQuery, ParsePositionError, Position};
pub use metadata::{CausationId, CommandId, CorrelationId, IdError, MAX_ID_CHARS, Metadata};
pub use queue::CommandQueue;
pub use reads::{Decode, RecordedEvent, StreamReads};
pub use request::{ReadAnswer, ReadRequest};
pub use retry::RetryPolicy;
pub use snapshot::{Snapshot, SnapshotKey};
pub use store::{CommandRecords, EventStore, EventStoreExt};
pub use stream::{MAX_STREAM_ID_CHARS, StreamId, StreamIdError, StreamSet, StreamVersion};
pub use subscription::{
    CheckpointStore, EventContext, Handler, OnHandlerError, SKIPPED_KEPT, SubscriptionConfig,
    SubscriptionError, SubscriptionHandle, SubscriptionLeases, SubscriptionReport, WaitError,
    handler_fn, subscribe, wait_for_position,
};
pub use target::ExecutionResult;
pub use uuid::Uuid;
pub use writes::{AppendOutcome, PendingEvent, StreamWrites};
