//! The in-process queue belongs to an executor: the default executor of a
//! store's identity is shared by the store's clones and by wrappers that
//! forward the identity; other store values (another tenant, another
//! schema, another test's store) and executors with a state of their own do
//! not wait behind it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use eventcore::{
    AppendOutcome, CacheConfig, EventStore, EventStoreExt, Executor, ReadAnswer, ReadRequest,
    RetryPolicy, StoreError, StoreIdentity, StreamId, StreamWrites, execute, execute_with,
};
use eventcore_memory::InMemoryEventStore;
use eventcore_testing::fixtures::{Credit, stream};
use tokio::sync::Semaphore;

/// A store whose appends wait for a permit at `gate`; `at_gate` counts
/// the appends that reached it.
#[derive(Clone)]
struct Gated {
    inner: InMemoryEventStore,
    gate: Arc<Semaphore>,
    at_gate: Arc<AtomicUsize>,
}

impl Gated {
    fn new() -> Self {
        Gated {
            inner: InMemoryEventStore::new(),
            gate: Arc::new(Semaphore::new(0)),
            at_gate: Arc::default(),
        }
    }

    /// Waits until `n` appends have reached the gate.
    async fn reached(&self, n: usize, what: &str) {
        let wait = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.at_gate.load(Ordering::SeqCst) < n {
            assert!(tokio::time::Instant::now() < wait, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl EventStore for Gated {
    async fn read(&self, request: ReadRequest) -> Result<ReadAnswer, StoreError> {
        self.inner.read(request).await
    }

    fn identity(&self) -> &StoreIdentity {
        self.inner.identity()
    }

    async fn append(&self, writes: StreamWrites) -> Result<AppendOutcome, StoreError> {
        // Held until the test lets it through.
        self.at_gate.fetch_add(1, Ordering::SeqCst);
        let permit = self.gate.acquire().await;
        drop(permit);
        self.inner.append(writes).await
    }
}

fn credit(account: &StreamId) -> Credit {
    Credit {
        account: account.clone(),
        amount: 1,
    }
}

type Running = tokio::task::JoinHandle<Result<eventcore::ExecutionResult, eventcore::ExecuteError>>;

/// Starts a command on `x` with `policy` on a clone of `store`.
fn start(store: &Gated, x: &StreamId, policy: RetryPolicy) -> Running {
    let (store, x) = (store.clone(), x.clone());
    tokio::spawn(async move { execute_with(&store, credit(&x), &policy).await })
}

/// A store whose first command on `x` holds its queue while its append
/// waits at the gate.
async fn stuck_on(x: &StreamId) -> (Gated, Running) {
    let stuck = Gated::new();
    let first = start(&stuck, x, RetryPolicy::default());
    stuck
        .reached(1, "the first command reached its append")
        .await;
    (stuck, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_store_value_does_not_wait_behind_a_stuck_command() {
    let x = stream("shared-id");
    let (stuck, first) = stuck_on(&x).await;

    // Another store value, same stream id: not queued behind it.
    let other = InMemoryEventStore::new();
    tokio::time::timeout(Duration::from_secs(5), execute(&other, credit(&x)))
        .await
        .expect("another store value's command does not wait")
        .expect("applied");

    // An executor with a state of its own over the stuck store: not queued
    // behind it either (its append meets the version check instead).
    let own = Executor::new(stuck.clone()).with_cache(CacheConfig::default());
    let own_command = tokio::spawn({
        let x = x.clone();
        async move { own.execute(credit(&x)).await }
    });
    stuck
        .reached(2, "an executor of its own reads and appends at once")
        .await;

    // A clone of the stuck store shares its queue: it waits its turn.
    let second = start(&stuck, &x, RetryPolicy::default());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        stuck.at_gate.load(Ordering::SeqCst),
        2,
        "a clone queues behind the first, before its read"
    );
    assert!(!second.is_finished() && !first.is_finished());

    stuck.gate.add_permits(8);
    first.await.unwrap().expect("the first lands");
    second.await.unwrap().expect("then the second");
    own_command
        .await
        .unwrap()
        .expect("and the own executor's, after a retry");
    let read = stuck.inner.read_streams(&[x]).await.unwrap();
    assert_eq!(read.events().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_with_queueing_off_does_not_wait_for_the_queue() {
    let x = stream("unqueued");
    let (stuck, first) = stuck_on(&x).await;
    // Queueing off: this one reads at once and reaches the append while the
    // first still holds the queue.
    let unqueued = start(
        &stuck,
        &x,
        RetryPolicy::default().with_queue_in_process(false),
    );
    stuck
        .reached(2, "the unqueued command never reached the append")
        .await;
    stuck.gate.add_permits(4);
    first.await.unwrap().expect("the first lands");
    // One of the two conflicted at the version check and retried.
    unqueued.await.unwrap().expect("the unqueued one lands too");
}
