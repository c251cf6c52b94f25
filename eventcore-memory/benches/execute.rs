//! Cost of one `execute` on the in-memory store: a command on a new stream,
//! a two-stream transfer, and a command on a stream that already holds
//! 1,000 or 10,000 events (read and fold cost, which grows with length).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use eventcore::{
    CommandStreams, Decide, EventStore, Fold, NewEvents, Refusal, StreamId, StreamVersion,
    StreamWrites, execute,
};
use eventcore_memory::InMemoryEventStore;
use eventcore_testing::fixtures::{Credit, LedgerEvent, Move, stream};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

/// Runs a future that completes without waiting, as the in-memory store's
/// append does (setup runs inside the benchmark's runtime, which cannot be
/// entered again).
fn now<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("setup future did not complete at once"),
    }
}

/// A store whose `account` holds `events` credits of 1.
fn store_with_stream(rt: &Runtime, events: u64) -> InMemoryEventStore {
    let store = InMemoryEventStore::new();
    let account = stream("long");
    let mut writes = StreamWrites::new();
    writes
        .expect(account.clone(), StreamVersion::INITIAL)
        .expect("register");
    for _ in 0..events {
        writes
            .append(&LedgerEvent::Credited {
                account: account.clone(),
                amount: 1,
                from: None,
            })
            .expect("append");
    }
    rt.block_on(store.append(writes)).expect("seed");
    store
}

/// How many events a stream holds: the fold a [`CountedDeposit`] decides on.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
struct Count(u64);

impl Fold for Count {
    type Event = LedgerEvent;
    const NAME: &'static str = "bench-count";

    fn apply(&mut self, _: &LedgerEvent) {
        self.0 += 1;
    }
}

/// A deposit on its stream's kept [`Count`] fold.
struct CountedDeposit(StreamId);

impl CommandStreams for CountedDeposit {
    fn streams(&self) -> Vec<StreamId> {
        vec![self.0.clone()]
    }
}

impl Decide for CountedDeposit {
    type Event = LedgerEvent;
    type State = Arc<Count>;
    type Error = eventcore::Refusal;

    fn folds(&self) -> &StreamId {
        &self.0
    }

    fn handle(&self, _: &Arc<Count>) -> Result<NewEvents<LedgerEvent>, Refusal> {
        Ok(vec![LedgerEvent::Credited {
            account: self.0.clone(),
            amount: 1,
            from: None,
        }]
        .into())
    }
}

fn benches(c: &mut Criterion) {
    let rt = runtime();

    let store = InMemoryEventStore::new();
    let next = AtomicU64::new(0);
    c.bench_function("execute/new_stream", |b| {
        b.to_async(&rt).iter(|| async {
            let account = stream(&format!("new-{}", next.fetch_add(1, Ordering::Relaxed)));
            execute(&store, Credit { account, amount: 5 })
                .await
                .expect("credit")
        })
    });

    c.bench_function("execute/two_stream_transfer", |b| {
        // The routine hands the store back, so that criterion drops it
        // outside the timed region.
        b.to_async(&rt).iter_batched(
            || {
                let store = InMemoryEventStore::new();
                let mut writes = StreamWrites::new();
                writes
                    .expect(stream("a"), StreamVersion::INITIAL)
                    .expect("register");
                writes
                    .append(&LedgerEvent::Credited {
                        account: stream("a"),
                        amount: 100,
                        from: None,
                    })
                    .expect("credit");
                now(store.append(writes)).expect("fund");
                store
            },
            |store| async move {
                let done = execute(
                    &store,
                    Move {
                        from: stream("a"),
                        to: stream("b"),
                        amount: 10,
                    },
                )
                .await;
                (store, done.expect("transfer"))
            },
            BatchSize::SmallInput,
        )
    });

    for events in [1_000u64, 10_000] {
        // A zero credit reads and folds the whole stream, then decides to do
        // nothing, so the stream keeps its length across iterations.
        let store = store_with_stream(&rt, events);
        c.bench_function(&format!("execute/noop_on_stream_of_{events}"), |b| {
            b.to_async(&rt).iter(|| async {
                execute(
                    &store,
                    Credit {
                        account: stream("long"),
                        amount: 0,
                    },
                )
                .await
                .expect("noop")
            })
        });
    }
}

fn declared(c: &mut Criterion) {
    let rt = runtime();
    // The same transfer as above on a long-lived store: both accounts'
    // folds are kept.
    let store = store_with_stream(&rt, 1);
    let flip = AtomicU64::new(0);
    c.bench_function("execute/two_stream_transfer_kept_state", |b| {
        b.to_async(&rt).iter(|| async {
            let (from, to) = if flip.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
                (stream("long"), stream("other"))
            } else {
                (stream("other"), stream("long"))
            };
            execute(
                &store,
                Move {
                    from,
                    to,
                    amount: 1,
                },
            )
            .await
            .expect("transfer")
        })
    });
    for events in [10u64, 10_000] {
        let store = store_with_stream(&rt, events);
        c.bench_function(
            &format!("execute/declared_deposit_on_stream_of_{events}"),
            |b| {
                b.to_async(&rt).iter(|| async {
                    execute(&store, CountedDeposit(stream("long")))
                        .await
                        .expect("deposit")
                })
            },
        );
    }
}

criterion_group!(name = execute_benches; config = Criterion::default().sample_size(30); targets = benches, declared);
criterion_main!(execute_benches);
