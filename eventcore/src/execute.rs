//! The execute loop: read, fold, decide, append, retry.

use std::sync::Arc;

use crate::{
    CommandLogic, CorrelationId, EventStore, ExecuteError, Metadata, RetryPolicy, StoreError,
    StreamId, StreamVersion, StreamWrites, declared::Declared,
};

/// How [`execute_with`] runs a command: its [`RetryPolicy`] and the
/// [`Metadata`] stored with its events. Built with the `with_` methods;
/// new options arrive as new methods.
///
/// ```
/// use std::num::NonZeroU32;
/// use eventcore::{ExecuteOptions, Metadata, RetryPolicy};
/// let three = NonZeroU32::new(3).unwrap();
/// let options = ExecuteOptions::new()
///     .with_policy(RetryPolicy::default().with_max_attempts(three))
///     .with_metadata(Metadata::new().with_value("user", "alice"));
/// assert_eq!(options.policy().max_attempts(), 3);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ExecuteOptions {
    policy: RetryPolicy,
    metadata: Metadata,
}

impl ExecuteOptions {
    /// The default policy and no metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the retry policy.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the metadata stored with every event the command appends. A
    /// correlation id left unset is made up, one per `execute` call, and
    /// shared by all of the command's events.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Metadata for a command issued because of `event` (by a
    /// subscription handler, say): the event's correlation id and its id as
    /// causation id; see [`Metadata::caused_by`]. Replaces the metadata set
    /// before (to add key/values, pass `Metadata::caused_by(event)` with
    /// them to [`with_metadata`](Self::with_metadata)).
    pub fn caused_by(mut self, event: &crate::RecordedEvent) -> Self {
        self.metadata = Metadata::caused_by(event);
        self
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

impl From<RetryPolicy> for ExecuteOptions {
    fn from(policy: RetryPolicy) -> Self {
        ExecuteOptions::new().with_policy(policy)
    }
}

impl From<&RetryPolicy> for ExecuteOptions {
    fn from(policy: &RetryPolicy) -> Self {
        ExecuteOptions::new().with_policy(policy.clone())
    }
}

/// What a successful [`execute`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExecutionResult {
    /// How many read-decide-append cycles ran (1 when no retry was needed).
    pub attempts: u32,
    /// Every declared stream with its version after the command, sorted by
    /// stream id.
    pub stream_versions: Vec<(StreamId, StreamVersion)>,
    /// How many events the command appended (0 for an empty decision).
    pub events_written: usize,
}

impl ExecutionResult {
    /// The version of a declared stream after the command.
    pub fn version_of(&self, stream_id: &StreamId) -> Option<StreamVersion> {
        self.stream_versions
            .binary_search_by(|(id, _)| id.cmp(stream_id))
            .ok()
            .map(|i| self.stream_versions[i].1)
    }
}

/// Runs `command` against `store` with the default [`ExecuteOptions`].
///
/// # Errors
/// See [`execute_with`].
pub async fn execute<S, C>(store: S, command: C) -> Result<ExecutionResult, ExecuteError>
where
    S: EventStore,
    C: CommandLogic,
{
    execute_with(store, command, ExecuteOptions::new()).await
}

/// Runs `command` against `store` with `options` (a [`RetryPolicy`]
/// converts into them): reads the declared streams in one call,
/// folds their events with [`CommandLogic::apply`], asks
/// [`CommandLogic::handle`] for new events, and appends them with the
/// version read of every declared stream as its expected version. On a
/// version conflict or a transient store failure it waits (see
/// [`RetryPolicy`]) and starts over from the read.
///
/// A command that declares its state ([`CommandLogic::state_key`]) starts
/// from a state folded before when there is one: kept in the store's
/// [`StateCache`](crate::StateCache) (then it decides at once and appends
/// with the versions that state covers: one round trip), or else a
/// [`Snapshot`](crate::Snapshot) (then it reads only the events after it).
/// If the append conflicts, because a stream moved after that state, it
/// reads only the newer events, folds them in and decides again. A refusal
/// or an empty decision made on a kept state is confirmed the same way
/// before it is returned, so no command is refused on a stale state.
///
/// # Errors
/// - [`ExecuteError::NoStreams`] if the command declares no stream;
/// - [`ExecuteError::InvalidStateName`] or [`ExecuteError::StateKeyField`]
///   if its state key is malformed;
/// - [`ExecuteError::Rejected`] as soon as `handle` refuses (no retry);
/// - [`ExecuteError::RetriesExhausted`] when every allowed attempt met a
///   conflict or transient failure;
/// - [`ExecuteError::Store`] for any other store failure, an event the store
///   cannot decode, or new events for an undeclared stream.
///
/// In every error case this command wrote nothing, except that a
/// transient failure reported after the store committed (a connection lost
/// during commit) cannot be told apart from one before it: the command may
/// then be applied twice.
///
/// Every event appended carries `options`' [`Metadata`]; its correlation
/// id, if unset, is one made up for this call.
pub async fn execute_with<S, C>(
    store: S,
    command: C,
    options: impl Into<ExecuteOptions>,
) -> Result<ExecutionResult, ExecuteError>
where
    S: EventStore,
    C: CommandLogic,
{
    let options = options.into();
    let policy = &options.policy;
    let metadata = Arc::new(if options.metadata.correlation_id().is_some() {
        options.metadata.clone()
    } else {
        options
            .metadata
            .clone()
            .with_correlation_id(CorrelationId::generate())
    });
    crate::writes::check_metadata(&metadata)?;
    let mut streams = command.streams();
    streams.sort_unstable();
    streams.dedup();
    if streams.is_empty() {
        return Err(ExecuteError::NoStreams);
    }

    let declared = match command.state_key() {
        None => None,
        Some(key) => Some(Declared::new(key, &streams, store.state_cache())?),
    };
    // A declared command's state, carried from a failed attempt to the next.
    let mut known = None;

    let mut attempt = 1;
    loop {
        let held = if policy.queues_in_process() {
            Some(crate::gate::enter(&streams).await)
        } else {
            None
        };
        let outcome = match &declared {
            None => attempt_once(&store, &command, &streams, &metadata).await,
            Some(declared) => {
                declared
                    .attempt(&store, &command, &metadata, &mut known)
                    .await
            }
        };
        drop(held);
        let error = match outcome? {
            Ok(result) => {
                return Ok(ExecutionResult {
                    attempts: attempt,
                    ..result
                });
            }
            Err(retryable) => retryable,
        };
        if attempt >= policy.max_attempts() {
            return Err(ExecuteError::RetriesExhausted {
                attempts: attempt,
                last_error: error,
            });
        }
        let wait = policy.delay(attempt, fastrand::u64(..));
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        attempt += 1;
    }
}

/// One read-decide-append cycle. The outer `Result` carries errors that end
/// the command; the inner `Err` a conflict or transient failure to retry.
async fn attempt_once<S, C>(
    store: &S,
    command: &C,
    streams: &[StreamId],
    metadata: &Arc<Metadata>,
) -> Result<Result<ExecutionResult, StoreError>, ExecuteError>
where
    S: EventStore,
    C: CommandLogic,
{
    let read = match store.read_streams(streams).await {
        Ok(read) => read,
        Err(e) if e.is_retryable() => return Ok(Err(e)),
        Err(e) => return Err(e.into()),
    };

    let mut state = C::State::default();
    for recorded in read.events() {
        let event: C::Event = recorded.decode()?;
        state = command.apply(state, &event);
    }
    let decided = command.handle(state)?;

    if decided.is_empty() {
        return Ok(Ok(ExecutionResult {
            attempts: 0,
            stream_versions: read.versions().to_vec(),
            events_written: 0,
        }));
    }

    let mut writes = StreamWrites::with_checked_metadata(metadata.clone());
    for stream in streams {
        let version = read.version(stream).unwrap_or(StreamVersion::INITIAL);
        writes.expect(stream.clone(), version)?;
    }
    for event in decided.as_slice() {
        writes.append(event)?;
    }

    match store.append(writes).await {
        Ok(outcome) => Ok(Ok(ExecutionResult {
            attempts: 0,
            stream_versions: outcome.stream_versions,
            events_written: outcome.events_written,
        })),
        Err(e) if e.is_retryable() => Ok(Err(e)),
        Err(e) => Err(e.into()),
    }
}
