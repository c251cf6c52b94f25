//! The executor: a store together with what runs in process for it (kept
//! states, the queue of commands on the same streams), and the one-line
//! entry points over a store's default executor.

use std::sync::Arc;

use crate::{
    CacheConfig, CommandLogic, EventStore, ExecuteError, ExecuteOptions, ExecutionResult,
    StateCache, execute::run, identity::InProcess,
};

/// Runs commands over a store, keeping what runs in process: the
/// per-stream folds of [`Decide`](crate::Decide) commands ([`StateCache`],
/// with the snapshots it writes) and the queue in which commands on the same streams wait for
/// each other instead of colliding ([`CommandQueue`](crate::CommandQueue)).
/// Cheap to clone: clones share both.
///
/// [`Executor::new`] takes the store identity's default state, the one
/// [`execute`] uses, so every executor and every `execute` over a store and
/// its clones (and wrappers that show the same events) share one cache and
/// one queue. [`with_cache`](Self::with_cache) gives an executor a state of
/// its own: one per tenant, or what a second process over the same
/// database would have.
///
/// ```
/// use eventcore::{CacheConfig, Executor};
/// use eventcore_memory::InMemoryEventStore;
/// # use eventcore::{Command, CommandLogic, Event, NewEvents, StreamId};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize, Event)]
/// # enum Noted { Noted { #[stream] stream: StreamId } }
/// # #[derive(Command)]
/// # struct Note { #[stream] stream: StreamId }
/// # impl CommandLogic for Note {
/// #     type Event = Noted; type State = (); type Error = std::convert::Infallible;
/// #     fn apply(&self, s: (), _: &Noted) {}
/// #     fn handle(&self, _: &()) -> Result<NewEvents<Noted>, Self::Error> {
/// #         Ok(vec![Noted::Noted { stream: self.stream.clone() }].into())
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryEventStore::new();
/// let executor = Executor::new(store.clone());
/// let stream = StreamId::try_new("notes-1")?;
/// executor.execute(Note { stream: stream.clone() }).await?;
/// // `execute(&store, ..)` runs on the same state as `executor`.
/// eventcore::execute(&store, Note { stream }).await?;
///
/// // A tenant's own cache and queue, over the same store:
/// let tenant = Executor::new(store).with_cache(CacheConfig::default().with_max_entries(1_000));
/// assert_eq!(tenant.cache().stats().hits, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Executor<S> {
    store: S,
    local: Arc<InProcess>,
}

impl<S: EventStore> Executor<S> {
    /// An executor over `store` with the default state of the store's
    /// [identity](EventStore::identity): the one [`execute`] uses.
    pub fn new(store: S) -> Self {
        let local = store.identity().in_process().clone();
        Executor { store, local }
    }

    /// The same store with a new, empty cache of these limits and a
    /// command queue of its own, shared only by this executor's clones.
    pub fn with_cache(mut self, config: CacheConfig) -> Self {
        self.local = Arc::new(InProcess::new(config));
        self
    }

    /// The store commands run over.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The kept states (and what they did: [`StateCache::stats`]).
    pub fn cache(&self) -> &StateCache {
        &self.local.cache
    }

    /// Runs `command` with the default [`ExecuteOptions`].
    ///
    /// # Errors
    /// See [`execute_with`](Self::execute_with).
    pub async fn execute<C>(&self, command: C) -> Result<ExecutionResult, ExecuteError<C::Error>>
    where
        C: CommandLogic,
    {
        run(&self.store, &self.local, command, ExecuteOptions::new()).await
    }

    /// Runs `command` with `options` (a [`RetryPolicy`](crate::RetryPolicy)
    /// converts into them): reads the declared streams in one call,
    /// folds their events with [`CommandLogic::apply`], asks
    /// [`CommandLogic::handle`] for new events, and appends them with the
    /// version read of every declared stream as its expected version. On a
    /// version conflict or a transient store failure it waits (see
    /// [`RetryPolicy`](crate::RetryPolicy)) and starts over from the read.
    ///
    /// A command of per-stream folds ([`Decide`](crate::Decide)) starts from
    /// the folds kept in the executor's [`StateCache`]: when all are kept it
    /// decides at once and appends with the versions they cover (one round
    /// trip); otherwise it reads, in one call, the tails after the kept
    /// folds and the whole of the others (a one-fold command from the
    /// fold's [`Snapshot`](crate::Snapshot) when there is one). If the
    /// append conflicts, because a stream moved after a kept fold, it reads
    /// only the newer events, folds them in and decides again. A refusal or
    /// an empty decision made on kept folds is confirmed the same way before
    /// it is returned, so no command is refused on a stale state.
    ///
    /// # Errors
    /// - [`ExecuteError::NoStreams`] if the command declares no stream;
    /// - [`ExecuteError::InvalidFoldName`] if a fold's name is malformed;
    /// - [`ExecuteError::Rejected`] as soon as `handle` refuses (no retry);
    /// - [`ExecuteError::RetriesExhausted`] when every allowed attempt met a
    ///   conflict or transient failure;
    /// - [`ExecuteError::Store`] for any other store failure, an event the store
    ///   cannot decode, or new events for an undeclared stream.
    ///
    /// In every error case this command wrote nothing, except that a
    /// transient failure reported after the store committed (a connection lost
    /// during commit) cannot be told apart from one before it: without a
    /// command id ([`ExecuteOptions::with_command_id`]) the retry then applies
    /// the command a second time. With one, the retry finds the id recorded
    /// and returns the first outcome.
    ///
    /// Every event appended carries `options`' [`Metadata`](crate::Metadata); its correlation
    /// id, if unset, is one made up for this call, and its causation id, if
    /// unset, the command id.
    ///
    /// # Tracing
    /// Each call is an `eventcore.execute` span (level INFO) with the fields
    /// `command` (its type), `command_id`, `streams`, `attempts`, `conflicts`,
    /// `events_written`, `outcome` (`applied`, `nothing`, `already_applied`,
    /// `rejected`, `gave_up`, `failed`) and `error`; each store call inside is
    /// an `eventcore.read`, `eventcore.read_tails` or `eventcore.append` span
    /// (DEBUG) with its streams, events and `elapsed_us`; a retry is a DEBUG
    /// event. Without a subscriber, spans cost a branch each.
    pub async fn execute_with<C>(
        &self,
        command: C,
        options: impl Into<ExecuteOptions>,
    ) -> Result<ExecutionResult, ExecuteError<C::Error>>
    where
        C: CommandLogic,
    {
        run(&self.store, &self.local, command, options.into()).await
    }
}

/// Runs `command` against `store` with the default [`ExecuteOptions`], on
/// the store's default [`Executor`].
///
/// # Errors
/// See [`Executor::execute_with`].
pub async fn execute<S, C>(store: S, command: C) -> Result<ExecutionResult, ExecuteError<C::Error>>
where
    S: EventStore,
    C: CommandLogic,
{
    execute_with(store, command, ExecuteOptions::new()).await
}

/// Runs `command` against `store` with `options` (a
/// [`RetryPolicy`](crate::RetryPolicy) converts into them), on the store's
/// default [`Executor`]; see [`Executor::execute_with`].
///
/// # Errors
/// See [`Executor::execute_with`].
pub async fn execute_with<S, C>(
    store: S,
    command: C,
    options: impl Into<ExecuteOptions>,
) -> Result<ExecutionResult, ExecuteError<C::Error>>
where
    S: EventStore,
    C: CommandLogic,
{
    // The store's default state, borrowed: no executor value to make.
    let local = store.identity().in_process();
    run(&store, local, command, options.into()).await
}
