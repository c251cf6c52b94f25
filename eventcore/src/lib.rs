#![doc = include_str!("../../README.md")]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod applied;
mod attempt;
mod cache;
mod command;
mod declared;
mod error;
mod event;
mod execute;
mod gate;
mod log;
mod metadata;
mod reads;
mod retry;
mod snapshot;
mod state;
mod store;
mod stream;
mod subscription;
mod writes;

pub use applied::{CommandLookup, CommandRecord};
pub use cache::{CacheConfig, CacheStats, StateCache};
pub use command::{CommandLogic, CommandStreams, NewEvents};
pub use error::{BoxError, CommandError, ExecuteError, StoreError};
pub use event::Event;
pub use execute::{ExecuteOptions, ExecutionResult, execute, execute_with};
pub use log::{EventLog, LogPage, LogQuery, Position};
pub use metadata::{CausationId, CommandId, CorrelationId, IdError, MAX_ID_CHARS, Metadata};
pub use reads::{RecordedEvent, StreamReads};
pub use retry::RetryPolicy;
pub use snapshot::{Snapshot, SnapshotKey, SnapshotRead};
pub use state::StateKey;
pub use store::{AppendOutcome, EventStore};
pub use stream::{MAX_STREAM_ID_CHARS, StreamId, StreamIdError, StreamVersion};
pub use subscription::{
    CheckpointStore, EventContext, Handler, OnHandlerError, SubscriptionConfig, SubscriptionError,
    SubscriptionHandle, SubscriptionLeases, SubscriptionName, SubscriptionNameError,
    SubscriptionReport, handler_fn, subscribe,
};
pub use uuid::Uuid;
pub use writes::{PendingEvent, StreamWrites};
