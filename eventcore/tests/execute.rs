//! The execute loop's retry, rejection and write behaviour, on the in-memory
//! store wrapped to inject failures.

use std::{
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use eventcore::{
    AppendOutcome, CommandLogic, CommandStreams, EventStore, ExecuteError, NewEvents, ReadAnswer,
    ReadRequest, Refusal, RetryPolicy, StoreError, StoreIdentity, StreamId, StreamVersion,
    StreamWrites, execute, execute_with,
};
use eventcore_memory::InMemoryEventStore;
use eventcore_testing::fixtures::{Credit, LedgerEvent, Move, Note, stream};

/// Fails the first `conflicts` appends with a conflict (and then, if set,
/// every append with a transient error), counting calls.
#[derive(Clone)]
struct Flaky {
    inner: InMemoryEventStore,
    conflicts: Arc<AtomicU32>,
    always_transient: bool,
    appends: Arc<AtomicU32>,
    reads: Arc<AtomicU32>,
}

impl Flaky {
    fn new(conflicts: u32) -> Self {
        Flaky {
            inner: InMemoryEventStore::new(),
            conflicts: Arc::new(AtomicU32::new(conflicts)),
            always_transient: false,
            appends: Arc::default(),
            reads: Arc::default(),
        }
    }
}

impl EventStore for Flaky {
    async fn read(&self, request: ReadRequest) -> Result<ReadAnswer, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read(request).await
    }

    fn identity(&self) -> &StoreIdentity {
        self.inner.identity()
    }

    async fn append(&self, writes: StreamWrites) -> Result<AppendOutcome, StoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        if self.always_transient {
            return Err(StoreError::Transient {
                operation: "append",
                source: "injected".into(),
            });
        }
        let left = self.conflicts.load(Ordering::SeqCst);
        if left > 0 {
            self.conflicts.store(left - 1, Ordering::SeqCst);
            let (stream_id, expected) = writes.expected_versions()[0].clone();
            return Err(StoreError::VersionConflict {
                stream_id,
                expected,
                actual: StreamVersion::new(expected.get() + 1),
            });
        }
        self.inner.append(writes).await
    }
}

fn fast(attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(NonZeroU32::new(attempts).unwrap())
        .with_max_delay(Duration::from_millis(1))
}

#[tokio::test]
async fn retries_a_conflict_then_succeeds() {
    let store = Flaky::new(2);
    let account = stream("a");
    let result = execute_with(
        &store,
        Credit {
            account: account.clone(),
            amount: 5,
        },
        &fast(5),
    )
    .await
    .unwrap();
    assert_eq!(result.attempts, 3);
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        3,
        "every retry reads again"
    );
    assert_eq!(result.version_of(&account), Some(StreamVersion::new(1)));
    assert_eq!(result.events_written, 1);
    assert_eq!(store.inner.all_events().len(), 1, "written once");
}

#[tokio::test]
async fn gives_up_after_max_attempts_and_says_so() {
    let store = Flaky::new(u32::MAX);
    let err = execute_with(
        &store,
        Credit {
            account: stream("a"),
            amount: 5,
        },
        &fast(4),
    )
    .await
    .unwrap_err();
    match &err {
        ExecuteError::RetriesExhausted {
            attempts,
            last_error,
        } => {
            assert_eq!(*attempts, 4);
            assert!(matches!(last_error, StoreError::VersionConflict { .. }));
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    assert_eq!(err.to_string(), "gave up after 4 attempts");
    assert_eq!(store.appends.load(Ordering::SeqCst), 4);
    assert!(store.inner.all_events().is_empty());
}

#[tokio::test]
async fn retries_transient_failures_too() {
    let mut store = Flaky::new(0);
    store.always_transient = true;
    let err = execute_with(
        &store,
        Credit {
            account: stream("a"),
            amount: 5,
        },
        &fast(3),
    )
    .await
    .unwrap_err();
    assert!(matches!(
        err,
        ExecuteError::RetriesExhausted {
            attempts: 3,
            last_error: StoreError::Transient { .. }
        }
    ));
}

#[tokio::test]
async fn business_rule_errors_are_not_retried() {
    let store = Flaky::new(0);
    let cmd = Move {
        from: stream("empty"),
        to: stream("b"),
        amount: 1,
    };
    let err = execute_with(&store, cmd, &fast(10)).await.unwrap_err();
    let ExecuteError::Rejected(refusal) = &err else {
        panic!("{err:?}");
    };
    assert!(refusal.message().contains("cannot move 1"), "{err}");
    assert_eq!(store.reads.load(Ordering::SeqCst), 1);
    assert_eq!(store.appends.load(Ordering::SeqCst), 0);
}

struct Decide {
    streams: Vec<StreamId>,
    emit: Vec<Note>,
}

impl CommandStreams for Decide {
    fn streams(&self) -> Vec<StreamId> {
        self.streams.clone()
    }
}

impl CommandLogic for Decide {
    type Event = Note;
    type State = ();
    type Error = eventcore::Refusal;
    fn apply(&self, _: (), _: &Note) {}
    fn handle(&self, _: &()) -> Result<NewEvents<Note>, Refusal> {
        Ok(self.emit.clone().into())
    }
}

#[tokio::test]
async fn empty_decision_succeeds_without_writing() {
    let store = Flaky::new(0);
    let a = stream("a");
    let result = execute(
        &store,
        Decide {
            streams: vec![a.clone()],
            emit: vec![],
        },
    )
    .await
    .unwrap();
    assert_eq!(result.events_written, 0);
    assert_eq!(result.attempts, 1);
    assert_eq!(result.version_of(&a), Some(StreamVersion::INITIAL));
    assert_eq!(
        store.appends.load(Ordering::SeqCst),
        0,
        "no round trip to append"
    );
}

#[tokio::test]
async fn no_streams_is_an_error() {
    let store = Flaky::new(0);
    let err = execute(
        &store,
        Decide {
            streams: vec![],
            emit: vec![],
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ExecuteError::NoStreams));
    assert_eq!(store.reads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn duplicate_declarations_are_read_once() {
    let store = InMemoryEventStore::new();
    let a = stream("a");
    let cmd = Decide {
        streams: vec![a.clone(), a.clone(), a.clone()],
        emit: vec![Note::new(&a, 1)],
    };
    let result = execute(&store, cmd).await.unwrap();
    assert_eq!(result.stream_versions, vec![(a, StreamVersion::new(1))]);
}

#[tokio::test]
async fn events_for_undeclared_streams_write_nothing() {
    let store = Flaky::new(0);
    let (a, b) = (stream("a"), stream("b"));
    let cmd = Decide {
        streams: vec![a.clone()],
        emit: vec![Note::new(&a, 1), Note::new(&b, 2)],
    };
    let err = execute(&store, cmd).await.unwrap_err();
    assert!(
        matches!(&err, ExecuteError::Store(StoreError::UndeclaredStream { stream_id, .. }) if stream_id == &b),
        "{err:?}"
    );
    assert_eq!(store.appends.load(Ordering::SeqCst), 0);
    assert!(store.inner.all_events().is_empty());
}

#[tokio::test]
async fn nul_in_an_event_is_refused_before_the_store() {
    let store = Flaky::new(0);
    let a = stream("a");
    let mut note = Note::new(&a, 1);
    note.text = "nul\0here".into();
    let err = execute(
        &store,
        Decide {
            streams: vec![a],
            emit: vec![note],
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ExecuteError::Store(StoreError::NulCharacter { .. })),
        "{err:?}"
    );
    assert!(store.inner.all_events().is_empty());
}

#[tokio::test]
async fn state_is_folded_from_all_declared_streams() {
    let store = InMemoryEventStore::new();
    let (a, b) = (stream("a"), stream("b"));
    execute(
        &store,
        Credit {
            account: a.clone(),
            amount: 10,
        },
    )
    .await
    .unwrap();
    let ok = execute(
        &store,
        Move {
            from: a.clone(),
            to: b.clone(),
            amount: 10,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        ok.stream_versions,
        vec![
            (a.clone(), StreamVersion::new(2)),
            (b.clone(), StreamVersion::new(1))
        ]
    );
    let err = execute(
        &store,
        Move {
            from: a.clone(),
            to: b.clone(),
            amount: 1,
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ExecuteError::Rejected(_)));
    let events: Vec<LedgerEvent> = store
        .all_events()
        .iter()
        .map(|e| e.decode().unwrap())
        .collect();
    assert_eq!(events.len(), 3);
}

/// Counts appends that reached the store and conflicted.
#[derive(Clone, Default)]
struct CountingStore {
    inner: InMemoryEventStore,
    conflicts: Arc<AtomicU32>,
}

impl EventStore for CountingStore {
    async fn read(&self, request: ReadRequest) -> Result<ReadAnswer, StoreError> {
        let read = self.inner.read(request).await;
        // Widen the window between read and append.
        tokio::task::yield_now().await;
        read
    }

    async fn append(&self, writes: StreamWrites) -> Result<AppendOutcome, StoreError> {
        let result = self.inner.append(writes).await;
        if matches!(result, Err(StoreError::VersionConflict { .. })) {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        result
    }

    /// The queue comes with the identity: forwarded, the wrapper's
    /// commands queue with the wrapped store's.
    fn identity(&self) -> &StoreIdentity {
        self.inner.identity()
    }
}

async fn race_on_one_stream(policy: RetryPolicy) -> (u32, usize) {
    let store = CountingStore::default();
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (store, barrier, policy) = (store.clone(), barrier.clone(), policy.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                execute_with(
                    &store,
                    Credit {
                        account: stream("hot"),
                        amount: i + 1,
                    },
                    &policy,
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("every credit lands");
    }
    (
        store.conflicts.load(Ordering::SeqCst),
        store.inner.all_events().len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_process_commands_on_one_stream_queue_instead_of_conflicting() {
    let (conflicts, events) = race_on_one_stream(fast(1_000)).await;
    assert_eq!(events, 16);
    assert_eq!(
        conflicts, 0,
        "queued commands never reach the store with a stale version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_queueing_the_same_race_conflicts() {
    let (conflicts, events) = race_on_one_stream(fast(1_000).with_queue_in_process(false)).await;
    assert_eq!(events, 16);
    assert!(
        conflicts > 0,
        "16 tasks racing on one stream must collide at least once"
    );
}

/// A hand-written command whose stable name no store can keep.
#[derive(Debug, Clone)]
struct Unnamed(Credit);

impl eventcore::CommandStreams for Unnamed {
    fn streams(&self) -> Vec<eventcore::StreamId> {
        self.0.streams()
    }

    fn command_name(&self) -> std::borrow::Cow<'static, str> {
        "bad\nname".into()
    }
}

impl eventcore::CommandLogic for Unnamed {
    type Event = LedgerEvent;
    type State = ();
    type Error = eventcore::Refusal;

    fn apply(&self, (): (), event: &LedgerEvent) {
        self.0.apply((), event);
    }

    fn handle(&self, (): &()) -> Result<eventcore::NewEvents<LedgerEvent>, eventcore::Refusal> {
        self.0.handle(&())
    }
}

#[tokio::test]
async fn a_command_name_no_store_can_keep_is_refused_before_anything_is_written() {
    use eventcore::CommandStreams;
    let store = InMemoryEventStore::new();
    let command = Unnamed(Credit {
        account: stream("named"),
        amount: 1,
    });
    let id = eventcore::CommandId::try_new("unnamed-1").unwrap();
    let err = eventcore::execute_with(
        &store,
        command.clone(),
        eventcore::ExecuteOptions::new().with_command_id(id),
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(&err, eventcore::ExecuteError::InvalidCommandName { name } if name == "bad\nname"),
        "{err:?}"
    );
    assert!(store.all_events().is_empty(), "nothing written");
    // Without a command id nothing is recorded, so the name is not needed.
    assert_eq!(command.command_name(), "bad\nname");
    eventcore::execute(&store, command)
        .await
        .expect("no id, no name recorded");
}
