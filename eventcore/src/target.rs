//! The target of an execution: the store calls one attempt of the execute
//! loop makes (which look the command id up when there is one), what an
//! attempt may end in, and what a successful execution returns.

use tracing::Instrument;

use crate::{
    AppendOutcome, CommandId, CommandRecord, EventStore, ExecuteError, ReadAnswer, ReadRequest,
    SnapshotKey, StoreError, StreamId, StreamReads, StreamVersion, StreamWrites,
};

/// Why an attempt ends the command instead of being retried; `E` is the
/// command's own error type.
pub(crate) enum End<E> {
    /// A failure that retrying cannot cure.
    Failed(Box<ExecuteError<E>>),
    /// A read found the command id recorded: the command was applied
    /// before (its reply may have been lost).
    Recorded(Box<CommandRecord>),
}

impl<E> From<ExecuteError<E>> for End<E> {
    fn from(error: ExecuteError<E>) -> Self {
        End::Failed(Box::new(error))
    }
}

impl<E> From<StoreError> for End<E> {
    fn from(error: StoreError) -> Self {
        End::Failed(Box::new(ExecuteError::Store(error)))
    }
}

impl<E> End<E> {
    /// The command refused with its own error.
    pub(crate) fn rejected(error: E) -> Self {
        End::Failed(Box::new(ExecuteError::Rejected(error)))
    }
}

/// The outer `Result` ends the command; the inner `Err` is retried.
pub(crate) type Attempt<T, E> = Result<Result<T, StoreError>, End<E>>;

/// Sorts a store error into "retry" (inner) or "end the command" (outer).
pub(crate) fn retry_or_end<T, E>(error: StoreError) -> Attempt<T, E> {
    if error.is_retryable() {
        Ok(Err(error))
    } else {
        Err(error.into())
    }
}

/// Sorts a read that looked a command id up.
pub(crate) fn settle<E>(read: Result<ReadAnswer, StoreError>) -> Attempt<ReadAnswer, E> {
    match read {
        Ok(ReadAnswer {
            record: Some(record),
            ..
        }) => Err(End::Recorded(Box::new(record))),
        Ok(answer) => Ok(Ok(answer)),
        Err(e) => retry_or_end(e),
    }
}

/// When a store call started, if its span is recorded (no clock read
/// otherwise).
fn start(span: &tracing::Span) -> Option<std::time::Instant> {
    (!span.is_disabled()).then(std::time::Instant::now)
}

/// Records the microseconds since `started` as the span's `elapsed_us`.
fn record_elapsed(span: &tracing::Span, started: Option<std::time::Instant>) {
    if let Some(started) = started {
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        span.record("elapsed_us", us);
    }
}

/// Records a read's event count and time.
fn record_read(
    span: &tracing::Span,
    started: Option<std::time::Instant>,
    read: &Result<ReadAnswer, StoreError>,
) {
    record_elapsed(span, started);
    if let Ok(answer) = read {
        span.record("events", answer.reads.events().len());
    }
}

/// A store as one execution sees it: every read looks the command id up,
/// in the same call, and every append carries it.
pub(crate) struct Target<'a, S> {
    pub(crate) store: &'a S,
    pub(crate) command: Option<(&'a CommandId, std::borrow::Cow<'static, str>)>,
}

impl<S: EventStore> Target<'_, S> {
    /// `request`, with the command id when there is one.
    fn request(&self, request: ReadRequest) -> ReadRequest {
        match self.command {
            None => request,
            Some((id, _)) => request.with_command_id(id.clone()),
        }
    }

    pub(crate) async fn read_streams<E>(&self, streams: &[StreamId]) -> Attempt<StreamReads, E> {
        let span = tracing::debug_span!(
            "eventcore.read",
            streams = tracing::field::debug(streams),
            events = tracing::field::Empty,
            elapsed_us = tracing::field::Empty,
        );
        let started = start(&span);
        let request = self.request(ReadRequest::streams(streams.iter().cloned()));
        let read = self.store.read(request).instrument(span.clone()).await;
        record_read(&span, started, &read);
        Ok(settle(read)?.map(|answer| answer.reads))
    }

    pub(crate) async fn read_tails<E>(
        &self,
        held: &[(StreamId, StreamVersion)],
    ) -> Attempt<StreamReads, E> {
        let span = tracing::debug_span!(
            "eventcore.read_tails",
            streams = held.len(),
            events = tracing::field::Empty,
            elapsed_us = tracing::field::Empty,
        );
        let started = start(&span);
        let request = self.request(ReadRequest::tails(held.iter().cloned()));
        let read = self.store.read(request).instrument(span.clone()).await;
        record_read(&span, started, &read);
        Ok(settle(read)?.map(|answer| answer.reads))
    }

    /// Not sorted: a failed snapshot read is not a failed command.
    pub(crate) async fn read_from_snapshot(
        &self,
        key: &SnapshotKey,
    ) -> Result<ReadAnswer, StoreError> {
        let span = tracing::debug_span!(
            "eventcore.read_from_snapshot",
            streams = key.streams().len(),
            events = tracing::field::Empty,
            elapsed_us = tracing::field::Empty,
        );
        let started = start(&span);
        let request = self.request(ReadRequest::from_snapshot(key.clone()));
        let read = self.store.read(request).instrument(span.clone()).await;
        record_read(&span, started, &read);
        read
    }

    /// An empty write for this execution's events.
    pub(crate) fn writes(&self, metadata: &std::sync::Arc<crate::Metadata>) -> StreamWrites {
        let mut writes = StreamWrites::with_checked_metadata(metadata.clone());
        if let Some((id, command_type)) = &self.command {
            writes.set_command((*id).clone(), command_type.clone());
        }
        writes
    }

    pub(crate) async fn append(&self, writes: StreamWrites) -> Result<AppendOutcome, StoreError> {
        let span = tracing::debug_span!(
            "eventcore.append",
            streams = writes.expected_versions().len(),
            events = writes.events().len(),
            elapsed_us = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let started = start(&span);
        let appended = self.store.append(writes).instrument(span.clone()).await;
        record_elapsed(&span, started);
        if let Err(e) = &appended {
            span.record("error", tracing::field::display(e));
        }
        appended
    }
}

/// What a successful [`execute`](crate::execute) did.
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
    /// Whether the command's id ([`ExecuteOptions::with_command_id`](crate::ExecuteOptions::with_command_id)) was
    /// already recorded for it: then this call wrote nothing, and
    /// `stream_versions` and `events_written` are those of the execution
    /// that recorded it.
    pub already_applied: bool,
    /// Where the command's last event is in the global log, on a store
    /// that has one: wait for a subscription to pass it
    /// ([`SubscriptionHandle::wait_for`](crate::SubscriptionHandle::wait_for))
    /// to read your own writes. For a command already applied, a position
    /// at or after its first execution's last event. `None` when nothing
    /// was written.
    pub position: Option<crate::Position>,
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

/// The result of an append, for `execute` to return.
pub(crate) fn appended(outcome: AppendOutcome) -> ExecutionResult {
    ExecutionResult {
        attempts: 0,
        stream_versions: outcome.stream_versions,
        events_written: outcome.events_written,
        already_applied: outcome.already_applied,
        position: outcome.position,
    }
}
