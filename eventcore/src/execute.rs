//! The execute loop: read, fold, decide, append, retry.

use std::sync::Arc;

use tracing::Instrument;

use crate::{
    CausationId, CommandId, CommandLogic, CorrelationId, EventStore, ExecuteError, ExecutionResult,
    Metadata, RetryPolicy, StreamId, StreamSet, StreamVersion,
    command::fold,
    folded::Folded,
    identity::InProcess,
    target::{Attempt, End, Target, appended, retry_or_end},
};

/// How [`execute_with`](crate::execute_with) runs a command: its [`RetryPolicy`], the
/// [`Metadata`] stored with its events and its [`CommandId`]. Built with
/// the `with_` methods; new options arrive as new methods.
///
/// ```
/// use std::num::NonZeroU32;
/// use eventcore::{EventStoreExt, ExecuteOptions, Metadata, RetryPolicy};
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
    command_id: Option<CommandId>,
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

    /// Gives the command an id (an HTTP `Idempotency-Key`, a message id),
    /// which makes it apply at most once: the store records the id with
    /// the command's events, atomically, and an `execute` with an id
    /// already recorded for the same command (its type and declared
    /// streams) writes nothing and returns the first execution's outcome
    /// with [`ExecutionResult::already_applied`] set, whether that
    /// execution's reply was received or lost. The same id on another
    /// command fails with
    /// [`StoreError::CommandIdReused`](crate::StoreError::CommandIdReused).
    /// A command that is refused, or decides to write nothing, records
    /// nothing: executed again with the id, it decides again.
    ///
    /// Its events' causation id, if the metadata leaves it unset, is the
    /// command id. Records last until
    /// [`prune_commands`](crate::CommandRecords::prune_commands) removes them.
    pub fn with_command_id(mut self, command_id: CommandId) -> Self {
        self.command_id = Some(command_id);
        self
    }

    /// The command id, if one was set.
    pub fn command_id(&self) -> Option<&CommandId> {
        self.command_id.as_ref()
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

/// Runs `command` on `store` with the in-process state `local` (see
/// [`Executor::execute_with`](crate::Executor::execute_with)), in its span.
pub(crate) async fn run<S, C>(
    store: &S,
    local: &InProcess,
    command: C,
    options: ExecuteOptions,
) -> Result<ExecutionResult, ExecuteError<C::Error>>
where
    S: EventStore,
    C: CommandLogic,
{
    let span = tracing::info_span!(
        "eventcore.execute",
        command = std::any::type_name::<C>(),
        command_id = options.command_id.as_ref().map(CommandId::as_str),
        streams = tracing::field::Empty,
        attempts = tracing::field::Empty,
        conflicts = tracing::field::Empty,
        events_written = tracing::field::Empty,
        outcome = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    let result = execute_traced(store, local, command, options)
        .instrument(span.clone())
        .await;
    match &result {
        Ok(done) => {
            let outcome = if done.already_applied {
                "already_applied"
            } else if done.events_written == 0 {
                "nothing"
            } else {
                "applied"
            };
            span.record("attempts", done.attempts);
            span.record("events_written", done.events_written);
            span.record("outcome", outcome);
        }
        Err(e) => {
            let outcome = match e {
                ExecuteError::Rejected(_) => "rejected",
                ExecuteError::RetriesExhausted { attempts, .. } => {
                    span.record("attempts", attempts);
                    "gave_up"
                }
                _ => "failed",
            };
            span.record("outcome", outcome);
            span.record("error", tracing::field::display(e));
        }
    }
    result
}

/// [`run`] inside its span.
async fn execute_traced<S, C>(
    store: &S,
    local: &InProcess,
    command: C,
    options: ExecuteOptions,
) -> Result<ExecutionResult, ExecuteError<C::Error>>
where
    S: EventStore,
    C: CommandLogic,
{
    let ExecuteOptions {
        policy,
        mut metadata,
        command_id,
    } = options;
    let policy = &policy;
    if metadata.correlation_id().is_none() {
        metadata = metadata.with_correlation_id(CorrelationId::generate());
    }
    if let Some(id) = &command_id
        && metadata.causation_id().is_none()
    {
        metadata = metadata.with_causation_id(CausationId::from(id));
    }
    let metadata = Arc::new(metadata);
    crate::writes::check_metadata(&metadata)?;
    let mut streams: StreamSet = command.streams().into();
    let folded = match command.fold_plan() {
        None => None,
        Some(plan) => {
            let folded = Folded::new::<C, _>(plan, &streams, &local.cache)?;
            streams = folded.streams().clone();
            Some(folded)
        }
    };
    if streams.is_empty() {
        return Err(ExecuteError::NoStreams);
    }
    tracing::Span::current().record("streams", tracing::field::debug(&streams));
    // Only a command with an id records its name.
    let command_name = command_id.as_ref().map(|_| command.command_name());
    let command_type: &str = command_name.as_deref().unwrap_or_default();
    if command_id.is_some() && !crate::writes::is_storable_name(command_type) {
        return Err(ExecuteError::InvalidCommandName {
            name: command_type.to_owned(),
        });
    }
    let target = Target {
        store,
        command: command_id.as_ref().zip(command_name.clone()),
    };

    // A folded command's state, carried from a failed attempt to the next.
    let mut known = None;

    // Streams found by `discover_streams` in earlier attempts: they queue
    // with the declared ones from the next attempt on (all taken up front,
    // in one order, so the queue cannot deadlock).
    let mut discovered = StreamSet::new();

    let mut attempt = 1;
    let mut conflicts: u32 = 0;
    loop {
        let held = if !policy.queues_in_process() {
            None
        } else if discovered.is_empty() {
            Some(local.queue.enter(&streams).await)
        } else {
            Some(local.queue.enter(&streams.union(&discovered)).await)
        };
        let outcome = match &folded {
            Some(folded) => {
                folded
                    .attempt(&target, &command, &metadata, &mut known)
                    .await
            }
            None => attempt_once(&target, &command, &streams, &metadata, &mut discovered).await,
        };
        drop(held);
        let error = match outcome {
            Ok(Ok(result)) => {
                return Ok(ExecutionResult {
                    attempts: attempt,
                    ..result
                });
            }
            Ok(Err(retryable)) => retryable,
            Err(End::Failed(error)) => return Err(*error),
            Err(End::Recorded(record)) => {
                // Covers the same stream set and a superset (streams the
                // first execution discovered while deciding).
                if !record.covers(command_type, &streams) {
                    return Err(record.reused_by(command_type, &streams).into());
                }
                return Ok(ExecutionResult {
                    attempts: attempt,
                    stream_versions: record.outcome.stream_versions,
                    events_written: record.outcome.events_written,
                    already_applied: true,
                    position: record.outcome.position,
                });
            }
        };
        if matches!(error, crate::StoreError::VersionConflict { .. }) {
            conflicts += 1;
            tracing::Span::current().record("conflicts", conflicts);
        }
        tracing::debug!(attempt, error = %error, "attempt failed; retrying");
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

/// How many rounds of reads [`CommandLogic::discover_streams`] may ask for
/// in one attempt before `execute` gives up with
/// [`ExecuteError::TooManyDiscoveryRounds`].
pub const MAX_DISCOVERY_ROUNDS: u32 = 8;

/// One read-decide-append cycle. The outer `Result` carries errors that end
/// the command; the inner `Err` a conflict or transient failure to retry.
/// Streams the command discovers are added to `discovered`.
async fn attempt_once<S, C>(
    target: &Target<'_, S>,
    command: &C,
    streams: &[StreamId],
    metadata: &Arc<Metadata>,
    discovered: &mut StreamSet,
) -> Attempt<ExecutionResult, C::Error>
where
    S: EventStore,
    C: CommandLogic,
{
    let read = match target.read_streams(streams).await? {
        Ok(read) => read,
        Err(e) => return Ok(Err(e)),
    };
    let mut state = fold(command, C::State::default(), read.events())?;
    let mut versions = versions_of(streams, &read);
    let mut rounds = 0;
    loop {
        let wanted: StreamSet = command
            .discover_streams(&state)
            .into_iter()
            .filter(|id| versions.binary_search_by(|(s, _)| s.cmp(id)).is_err())
            .collect();
        if wanted.is_empty() {
            break;
        }
        if rounds == MAX_DISCOVERY_ROUNDS {
            return Err(ExecuteError::TooManyDiscoveryRounds { rounds }.into());
        }
        rounds += 1;
        let more = match target.read_streams(&wanted).await? {
            Ok(read) => read,
            Err(e) => return Ok(Err(e)),
        };
        state = fold(command, state, more.events())?;
        versions.extend(versions_of(&wanted, &more));
        versions.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for id in wanted {
            discovered.insert(id);
        }
    }
    let decided = command.handle(&state).map_err(End::rejected)?;

    if decided.is_empty() {
        return Ok(Ok(ExecutionResult {
            attempts: 0,
            stream_versions: versions,
            events_written: 0,
            already_applied: false,
            position: None,
        }));
    }

    let mut writes = target.writes(metadata);
    for (stream, version) in versions {
        writes.expect(stream, version)?;
    }
    for event in decided.as_slice() {
        writes.append(event)?;
    }

    match target.append(writes).await {
        Ok(outcome) => Ok(Ok(appended(outcome))),
        Err(e) => retry_or_end(e),
    }
}

/// The version read of each of `streams` (sorted), the empty ones at
/// [`StreamVersion::INITIAL`].
fn versions_of(streams: &[StreamId], read: &crate::StreamReads) -> Vec<(StreamId, StreamVersion)> {
    streams
        .iter()
        .map(|s| (s.clone(), read.version(s).unwrap_or(StreamVersion::INITIAL)))
        .collect()
}
