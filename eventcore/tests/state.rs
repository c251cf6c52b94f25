//! Declared states: how many store calls a command costs with and without a
//! kept state, and typed errors for malformed keys.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use eventcore::{
    AppendOutcome, CommandLogic, CommandStreams, EventStore, EventStoreExt, ExecuteError, Executor,
    NewEvents, ReadAnswer, ReadRequest, Refusal, StateKey, StoreError, StoreIdentity, StreamId,
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
        vec!["read_from_snapshot", "append"],
        "a miss reads the streams from a snapshot if there is one, in one call, and appends"
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

#[tokio::test]
async fn a_state_moved_through_another_kept_state_reads_the_tail_first() {
    let store = Calls::default();
    fund(&store, "a", 100).await;
    execute(&store, transfer("a", "b", 1)).await.unwrap();
    // Kept under the streams {a, c}: moves `a` past the state of {a, b}.
    execute(&store, transfer("a", "c", 1)).await.unwrap();
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

/// A command whose key is chosen by the test.
struct Keyed {
    account: StreamId,
    name: &'static str,
    field: Option<HashMap<(u8, u8), u8>>,
}

impl CommandStreams for Keyed {
    fn streams(&self) -> Vec<StreamId> {
        vec![self.account.clone()]
    }
}

impl CommandLogic for Keyed {
    type Event = LedgerEvent;
    type State = u64;
    type Error = eventcore::Refusal;

    fn apply(&self, n: u64, _: &LedgerEvent) -> u64 {
        n + 1
    }

    fn handle(&self, &_: &u64) -> Result<NewEvents<LedgerEvent>, Refusal> {
        Ok(vec![LedgerEvent::Debited {
            account: self.account.clone(),
            amount: 1,
        }]
        .into())
    }

    fn state_key(&self) -> Option<StateKey<u64>> {
        let key = StateKey::new(self.name, 1);
        Some(match &self.field {
            Some(field) => key.with(field),
            None => key,
        })
    }
}

#[tokio::test]
async fn malformed_state_keys_are_typed_errors_and_write_nothing() {
    let store = Calls::default();
    let account = stream("keyed");
    let long: &'static str = Box::leak("n".repeat(256).into_boxed_str());
    for name in ["", "line\nbreak", long] {
        let err = execute(
            &store,
            Keyed {
                account: account.clone(),
                name,
                field: None,
            },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, ExecuteError::InvalidStateName { name: n } if n == name),
            "{name:?}: {err:?}"
        );
    }
    // JSON maps need string keys: this field cannot be serialised.
    let err = execute(
        &store,
        Keyed {
            account: account.clone(),
            name: "counted",
            field: Some(HashMap::from([((1, 2), 3)])),
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            ExecuteError::StateKeyField {
                name: "counted",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(store.take().is_empty(), "nothing read or written");
    execute(
        &store,
        Keyed {
            account,
            name: "counted",
            field: None,
        },
    )
    .await
    .expect("a valid key works");
}
