//! A command's decision on given events, made by `execute` itself.
//!
//! [`decide_on`] runs a command through [`Executor::execute_with`] against a
//! store that shows fixed events and keeps the append instead of writing
//! it: the same reads (declared streams, then every round of
//! [`discover_streams`](eventcore::CommandLogic::discover_streams)), the
//! same folds (a [`Decide`](eventcore::Decide) command's per-stream folds
//! decode their own event types), the same registration rule for what may
//! be written (an event for a stream the command did not read is refused
//! as `execute` refuses it). Given/when/then and the concurrency checker
//! both decide through it, so neither can disagree with `execute`.
//!
//! ```
//! use eventcore::StreamVersion;
//! use eventcore_testing::{
//!     decision::{decide_on, recorded},
//!     fixtures::{LedgerEvent, Move, stream},
//! };
//!
//! let (a, b) = (stream("a"), stream("b"));
//! let history = recorded([LedgerEvent::Credited { account: a.clone(), amount: 10, from: None }]);
//! let decision = decide_on(Move { from: a.clone(), to: b.clone(), amount: 4 }, &history);
//! // One read of both accounts, then a debit and a credit expecting them as read.
//! let at = |v| StreamVersion::new(v);
//! assert_eq!(decision.reads, vec![vec![(a.clone(), at(1)), (b.clone(), at(0))]]);
//! let decided = decision.result.expect("funded: it moves");
//! assert_eq!(decided.expected, vec![(a, at(1)), (b, at(0))]);
//! assert_eq!(decided.events.len(), 2);
//! ```

use std::{
    future::Future,
    pin::pin,
    sync::Mutex,
    task::{Context, Poll, Waker},
};

use eventcore::{
    AppendOutcome, CacheConfig, CommandLogic, Event, EventStore, ExecuteError, ExecuteOptions,
    Executor, PendingEvent, ReadAnswer, ReadRequest, RecordedEvent, RetryPolicy, StoreError,
    StoreIdentity, StreamId, StreamReads, StreamVersion, StreamWrites,
};

/// Stream versions, sorted by stream id.
pub type Versions = Vec<(StreamId, StreamVersion)>;

/// What `execute` did with a command on given events.
#[derive(Debug)]
pub struct Decision<E> {
    /// Every read, in order: each stream asked for, with the version it
    /// stood at. The first holds the declared streams; each discovery
    /// round adds one.
    pub reads: Vec<Versions>,
    /// The append the command would make (no events for an empty
    /// decision), or why `execute` ends it: the command's refusal, or an
    /// error such as an event for a stream it did not read.
    pub result: Result<Decided, ExecuteError<E>>,
}

/// An append a command decided on.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// Every stream registered, at the version expected.
    pub expected: Versions,
    /// The events, in order, as they would be stored (empty: nothing to do).
    pub events: Vec<PendingEvent>,
}

impl Decided {
    /// The events as (stream, type, payload), for comparing decisions with
    /// stored events whatever their ids and metadata.
    pub fn contents(&self) -> Vec<(StreamId, String, serde_json::Value)> {
        self.events
            .iter()
            .map(|e| {
                (
                    e.stream_id().clone(),
                    e.event_type().to_owned(),
                    serde_json::from_str(e.payload()).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect()
    }
}

/// Runs `command` through `execute` on a store that shows `events` (each
/// stream as the events of it given, in order) and keeps the append
/// instead of writing it; nothing is kept between calls, no retry is made.
pub fn decide_on<C: CommandLogic>(command: C, events: &[RecordedEvent]) -> Decision<C::Error> {
    let frozen = Frozen {
        events: events.to_vec(),
        identity: StoreIdentity::new(),
        reads: Mutex::default(),
        appended: Mutex::default(),
    };
    let executor = Executor::new(&frozen).with_cache(CacheConfig::disabled());
    let options =
        ExecuteOptions::new().with_policy(RetryPolicy::no_retry().with_queue_in_process(false));
    let run = executor.execute_with(command, options);
    let result = match ready(run) {
        None => Err(ExecuteError::Store(StoreError::Unsupported {
            what: "a command whose execution waits on something besides the store",
            operation: "decide_on",
            store: "the test kit's fixed events",
        })),
        Some(Err(e)) => Err(e),
        Some(Ok(_)) => Ok(frozen
            .appended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| Decided {
                expected: Vec::new(),
                events: Vec::new(),
            })),
    };
    let reads = frozen.reads.into_inner().unwrap_or_else(|p| p.into_inner());
    let result = result.map(|decided| match decided.events.is_empty() {
        // An empty decision appends nothing: what it read is in `reads`.
        true => Decided {
            expected: merged(&reads),
            events: Vec::new(),
        },
        false => decided,
    });
    Decision { reads, result }
}

/// Every stream of `reads`, at the version last read.
fn merged(reads: &[Versions]) -> Versions {
    let mut all: std::collections::BTreeMap<StreamId, StreamVersion> = Default::default();
    for read in reads {
        all.extend(read.iter().cloned());
    }
    all.into_iter().collect()
}

/// `events` as a store would hand them out: each stream numbered from 1 in
/// the order given, global sequences from 1, every payload its JSON form.
///
/// # Panics
/// If an event does not serialise.
pub fn recorded<E: Event + std::fmt::Debug>(
    events: impl IntoIterator<Item = E>,
) -> Vec<RecordedEvent> {
    let mut versions: std::collections::HashMap<StreamId, u64> = Default::default();
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let payload = serde_json::to_string(&event)
                .unwrap_or_else(|e| panic!("given event {event:?} does not serialise: {e}"));
            let version = versions.entry(event.stream_id().clone()).or_default();
            *version += 1;
            let event_type = event.event_type();
            RecordedEvent::new(
                event.stream_id().clone(),
                StreamVersion::new(*version),
                i as u64 + 1,
                event_type,
                payload,
            )
            .with_schema_version(E::schema_version(event_type))
            .with_event_id(eventcore::Uuid::now_v7())
        })
        .collect()
}

/// Polls `future` to its end if it never waits; `None` if it does.
fn ready<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    // Every call the store answers is ready at once; a few polls cover
    // any `yield` on the way.
    for _ in 0..64 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return Some(out);
        }
    }
    None
}

/// Fixed events, and the append it was given.
struct Frozen {
    events: Vec<RecordedEvent>,
    identity: StoreIdentity,
    reads: Mutex<Vec<Versions>>,
    appended: Mutex<Option<Decided>>,
}

impl EventStore for Frozen {
    async fn read(&self, request: ReadRequest) -> Result<ReadAnswer, StoreError> {
        let versions: Versions = request
            .held()
            .iter()
            .map(|(s, _)| {
                let now = self
                    .events
                    .iter()
                    .filter(|e| e.stream_id() == s)
                    .map(RecordedEvent::version)
                    .max()
                    .unwrap_or_default();
                (s.clone(), now)
            })
            .collect();
        let events = self
            .events
            .iter()
            .filter(|e| {
                request
                    .held()
                    .iter()
                    .any(|(s, held)| s == e.stream_id() && e.version() > *held)
            })
            .cloned()
            .collect();
        self.reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(versions.clone());
        Ok(ReadAnswer::new(
            request.held().to_vec(),
            StreamReads::new(versions, events),
        ))
    }

    async fn append(&self, writes: StreamWrites) -> Result<AppendOutcome, StoreError> {
        let resulting = writes.resulting_versions()?;
        let outcome = AppendOutcome::new(resulting, writes.events().len());
        *self.appended.lock().unwrap_or_else(|p| p.into_inner()) = Some(Decided {
            expected: writes.expected_versions().to_vec(),
            events: writes.events().to_vec(),
        });
        Ok(outcome)
    }

    fn identity(&self) -> &StoreIdentity {
        &self.identity
    }
}

/// A write's events decoded back into the command's event type, in order.
///
/// # Errors
/// The first event that does not decode.
pub fn decode_all<E: Event>(events: &[PendingEvent]) -> Result<Vec<E>, serde_json::Error> {
    events
        .iter()
        .map(|e| serde_json::from_str(e.payload()))
        .collect()
}
