//! Durable appends on the SQLite store: 16 tasks each appending 50
//! single-event writes to a stream of its own (synchronous=FULL, group
//! commit), and the same through `execute` with a credit command; one
//! iteration is 800 appends, so appends/s = 800 / time per iteration.

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventcore::{EventStore, StreamVersion, StreamWrites, execute};
use eventcore_sqlite::{SqliteConfig, SqliteEventStore, Synchronous};
use eventcore_testing::fixtures::{Credit, LedgerEvent, stream};

const TASKS: u64 = 16;
const PER_TASK: u64 = 50;

fn open(rt: &tokio::runtime::Runtime, synchronous: Synchronous) -> SqliteEventStore {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join("eventcore-sqlite-bench");
    std::fs::create_dir_all(&dir).expect("bench folder");
    let path = dir.join(format!(
        "{}-{}.db",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    rt.block_on(SqliteEventStore::open(
        path,
        SqliteConfig::default().synchronous(synchronous),
    ))
    .expect("open")
}

fn appends(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("sqlite_16_tasks");
    group.throughput(Throughput::Elements(TASKS * PER_TASK));
    group.sample_size(20);
    for (name, synchronous) in [
        ("append_full", Synchronous::Full),
        ("append_normal", Synchronous::Normal),
    ] {
        let store = open(&rt, synchronous);
        let round = AtomicU64::new(0);
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let r = round.fetch_add(1, Ordering::Relaxed);
                let store = store.clone();
                async move {
                    let tasks: Vec<_> = (0..TASKS)
                        .map(|t| {
                            let store = store.clone();
                            tokio::spawn(async move {
                                let account = stream(&format!("bench-{r}-{t}"));
                                for v in 0..PER_TASK {
                                    let mut writes = StreamWrites::new();
                                    writes
                                        .expect(account.clone(), StreamVersion::new(v))
                                        .expect("register");
                                    writes
                                        .append(&LedgerEvent::Credited {
                                            account: account.clone(),
                                            amount: 1,
                                            from: None,
                                        })
                                        .expect("event");
                                    store.append(writes).await.expect("append");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("task");
                    }
                }
            });
        });
    }
    let store = open(&rt, Synchronous::Full);
    let round = AtomicU64::new(0);
    group.bench_function("deposit_full", |b| {
        b.to_async(&rt).iter(|| {
            let r = round.fetch_add(1, Ordering::Relaxed);
            let store = store.clone();
            async move {
                let tasks: Vec<_> = (0..TASKS)
                    .map(|t| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            let account = stream(&format!("deposit-{r}-{t}"));
                            for _ in 0..PER_TASK {
                                execute(
                                    &store,
                                    Credit {
                                        account: account.clone(),
                                        amount: 1,
                                    },
                                )
                                .await
                                .expect("deposit");
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
            }
        });
    });
    group.finish();
}

criterion_group!(benches, appends);
criterion_main!(benches);
