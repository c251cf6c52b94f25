//! Kept folds: how many store calls a command costs with and without them,
//! counted at the store.

use std::sync::{Arc, Mutex};

use eventcore::{
    AppendOutcome, CommandStreams, Decide, EventStore, EventStoreExt, ExecuteError, Executor, Fold,
    NewEvents, ReadAnswer, ReadRequest, Refusal, StoreError, StoreIdentity, StreamId,
    StreamVersion, StreamWrites, execute,
};
use eventcore_memory::InMemoryEventStore;
use eventcore_testing::fixtures::{Credit, LedgerEvent, Move, stream};

/// Records every call that reaches the store, by name.
#[derive(Clone, Default)]
struct Calls {
    inner: InMemoryEventStore,
    log: Arc<Mutex<Vec<&'static str>>>,
}

impl Calls {
    fn note(&self, call: &'static str) {
        self.log.lock().unwrap().push(call);
    }

    fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl EventStore for Calls {
    async fn read(&self, request: ReadRequest) -> Result<ReadAnswer, StoreError> {
        self.note(if request.snapshot().is_some() {
            "read_from_snapshot"
        } else if request.is_whole() {
            "read_streams"
        } else {
            "read_tails"
        });
        self.inner.read(request).await
    }

    async fn append(&self, writes: StreamWrites) -> Result<AppendOutcome, StoreError> {
        self.note("append");
        self.inner.append(writes).await
    }

    fn identity(&self) -> &StoreIdentity {
        self.inner.identity()
    }
}

fn transfer(from: &str, to: &str, amount: u64) -> Move {
    Move {
        from: stream(from),
        to: stream(to),
        amount,
    }
}

async fn fund(store: &Calls, account: &str, amount: u64) {
    execute(
        store,
        Credit {
            account: stream(account),
            amount,
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_kept_state_costs_one_store_call() {
    let store = Calls::default();
    fund(&store, "a", 100).await;
    store.take();

    execute(&store, transfer("a", "b", 1)).await.unwrap();
    assert_eq!(
        store.take(),
        vec!["read_streams", "append"],
        "a miss reads both streams in one call (a two-fold command starts from no snapshot), \
         and appends"
    );
    let done = execute(&store, transfer("a", "b", 1)).await.unwrap();
    assert_eq!(store.take(), vec!["append"], "a hit only appends");
    assert_eq!(done.attempts, 1);
    assert_eq!(done.version_of(&stream("a")), Some(StreamVersion::new(3)));
}

#[tokio::test]
async fn a_stale_kept_state_reads_only_the_tail_within_one_attempt() {
    let store = Calls::default();
    fund(&store, "a", 100).await;
    execute(&store, transfer("a", "b", 1)).await.unwrap();
    // Another writer (an undeclared command) moves `a` behind the cache.
    fund(&store, "a", 5).await;
    store.take();

    // The kept state (99) allows it, so the append goes out and conflicts.
    let done = execute(&store, transfer("a", "b", 50)).await.unwrap();
    assert_eq!(
        store.take(),
        vec!["append", "read_tails", "append"],
        "the stale append conflicts, then only the tail is read"
    );
    assert_eq!(done.attempts, 1, "a speculative append is not an attempt");
    let read = store.inner.read_streams(&[stream("a")]).await.unwrap();
    let balance: i64 = read
        .events()
        .iter()
        .map(|e| match e.decode::<LedgerEvent>().unwrap() {
            LedgerEvent::Credited { amount, .. } => amount as i64,
            LedgerEvent::Debited { amount, .. } => -(amount as i64),
        })
        .sum();
    assert_eq!(
        balance, 54,
        "the move was folded onto the real balance, 104"
    );
}

/// Counts a stream's events: a second kind of fold over the ledger.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
struct Entries(u64);

impl Fold for Entries {
    type Event = LedgerEvent;
    const NAME: &'static str = "test-entries";
    fn apply(&mut self, _: &LedgerEvent) {
        self.0 += 1;
    }
}

/// Credits one account with a cent per entry it holds, on the account's
/// [`Entries`] fold.
struct Bonus(StreamId);

impl CommandStreams for Bonus {
    fn streams(&self) -> Vec<StreamId> {
        vec![self.0.clone()]
    }
}

impl Decide for Bonus {
    type Event = LedgerEvent;
    type State = Arc<Entries>;
    type Error = eventcore::Refusal;
    fn folds(&self) -> &StreamId {
        &self.0
    }
    fn handle(&self, entries: &Arc<Entries>) -> Result<NewEvents<LedgerEvent>, Refusal> {
        Ok(vec![LedgerEvent::Credited {
            account: self.0.clone(),
            amount: entries.0,
            from: None,
        }]
        .into())
    }
}

#[tokio::test]
async fn a_fold_moved_by_another_command_of_the_executor_is_current() {
    let store = Calls::default();
    fund(&store, "a", 100).await;
    execute(&store, transfer("a", "b", 1)).await.unwrap();
    // Moves `a` and keeps its balance fold: the one the next transfer uses.
    execute(&store, transfer("a", "c", 1)).await.unwrap();
    store.take();

    let done = execute(&store, transfer("a", "b", 1)).await.unwrap();
    assert_eq!(store.take(), vec!["append"], "both folds kept and current");
    assert_eq!(done.version_of(&stream("a")), Some(StreamVersion::new(4)));
}

#[tokio::test]
async fn a_fold_behind_another_fold_of_its_stream_reads_the_tail_first() {
    let store = Calls::default();
    fund(&store, "a", 100).await;
    execute(&store, transfer("a", "b", 1)).await.unwrap();
    // Another kind of fold over `a` moves it past the kept balance fold.
    execute(&store, Bonus(stream("a"))).await.unwrap();
    store.take();

    let done = execute(&store, transfer("a", "b", 1)).await.unwrap();
    assert_eq!(
        store.take(),
        vec!["read_tails", "append"],
        "no append doomed to conflict"
    );
    assert_eq!(done.version_of(&stream("a")), Some(StreamVersion::new(4)));
    assert_eq!(Executor::new(&store).cache().stats().stale_hits, 1);
}

#[tokio::test]
async fn a_refusal_on_a_kept_state_costs_one_tail_read() {
    let store = Calls::default();
    fund(&store, "a", 1).await;
    execute(&store, transfer("a", "b", 1)).await.unwrap();
    store.take();

    let err = execute(&store, transfer("a", "b", 1)).await.unwrap_err();
    assert!(matches!(err, ExecuteError::Rejected(_)));
    assert_eq!(store.take(), vec!["read_tails"], "confirmed, then refused");
}

#[tokio::test]
async fn an_undeclared_command_never_uses_the_cache() {
    let store = Calls::default();
    fund(&store, "a", 1).await;
    fund(&store, "a", 1).await;
    assert_eq!(
        store.take(),
        vec!["read_streams", "append", "read_streams", "append"]
    );
    assert!(Executor::new(&store).cache().is_empty());
}
