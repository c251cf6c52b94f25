#![doc = include_str!("../../README.md")]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod cache;
mod command;
mod declared;
mod error;
mod event;
mod execute;
mod gate;
mod log;
mod reads;
mod retry;
mod snapshot;
mod state;
mod store;
mod stream;
mod subscription;
mod writes;

pub use cache::{CacheConfig, CacheStats, StateCache};
pub use command::{CommandLogic, CommandStreams, NewEvents};
pub use error::{BoxError, CommandError, ExecuteError, StoreError};
pub use event::Event;
pub use execute::{ExecutionResult, execute, execute_with_policy};
pub use log::{EventLog, LogQuery, Position};
pub use reads::{RecordedEvent, StreamReads};
pub use retry::RetryPolicy;
pub use snapshot::{Snapshot, SnapshotKey, SnapshotRead};
pub use state::StateKey;
pub use store::{AppendOutcome, EventStore};
pub use stream::{MAX_STREAM_ID_CHARS, StreamId, StreamIdError, StreamVersion};
pub use subscription::{
    CheckpointStore, Handler, OnHandlerError, SubscriptionConfig, SubscriptionError,
    SubscriptionHandle, SubscriptionLeases, SubscriptionName, SubscriptionNameError,
    SubscriptionReport, handler_fn, subscribe,
};
pub use writes::{PendingEvent, StreamWrites};
