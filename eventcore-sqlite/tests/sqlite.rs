//! The SQLite store beyond the conformance suite: the model test, kept
//! states, the concurrency checker, two store values writing one file as
//! two processes would, immutable events, and a file that outlives its
//! store.

mod support;

use std::num::NonZeroU64;

use eventcore::{
    CacheConfig, EventLog, EventStoreExt, Executor, LogQuery, Position, RetryPolicy, execute,
};
use eventcore_sqlite::{SqliteConfig, SqliteEventStore};
use eventcore_testing::{
    cache::{Stores, check_cache_equivalence, two_processes_conserve_money},
    concurrency::{ConcurrencyConfig, check_concurrency},
    fixtures::{
        Credit, Move, ledger_invariant,
        shop::{shop_batch, shop_invariant, shop_setup},
        stream,
    },
    strategies::{funded, ledger_batch},
};

/// Two store values on one new file: as two processes, each with its own
/// writer and connections.
async fn two_on_one_file() -> (SqliteEventStore, SqliteEventStore) {
    let path = support::fresh_path();
    let first = SqliteEventStore::open(&path, SqliteConfig::default())
        .await
        .expect("open");
    let second = SqliteEventStore::open(&path, SqliteConfig::default())
        .await
        .expect("open again");
    (first, second)
}

#[test]
fn sqlite_store_agrees_with_the_model() {
    eventcore_testing::model::check_store_against_model(128, support::fresh_store);
}

#[test]
fn kept_states_and_snapshots_change_no_outcome() {
    let small = || {
        CacheConfig::default()
            .with_max_entries(2)
            .with_snapshot_every(NonZeroU64::new(3))
    };
    check_cache_equivalence(48, || async move {
        let (first, second) = two_on_one_file().await;
        Stores {
            processes: [
                Executor::new(first).with_cache(small()),
                Executor::new(second).with_cache(small()),
            ],
            reference: Executor::new(support::fresh_store().await)
                .with_cache(CacheConfig::disabled()),
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_file_see_each_other_and_conserve_money() {
    let (first, second) = two_on_one_file().await;
    two_processes_conserve_money([
        Executor::new(first).with_cache(CacheConfig::default()),
        Executor::new(second).with_cache(CacheConfig::default()),
    ])
    .await;
}

#[test]
fn ledger_commands_are_serializable_on_sqlite() {
    check_concurrency(
        24,
        support::fresh_store,
        funded(4, 100),
        ledger_batch(4, 40),
        ConcurrencyConfig::default(),
        ledger_invariant,
    );
}

#[test]
fn the_shop_is_serializable_on_sqlite() {
    check_concurrency(
        16,
        support::fresh_store,
        shop_setup(6, 6),
        shop_batch(6, 30),
        ConcurrencyConfig::default()
            .with_lost_reply_rate(0.1)
            .with_command_ids(true),
        shop_invariant,
    );
}

/// 16 tasks, 8 on each of two store values of one file, released together,
/// each reading then writing (transfers among 4 accounts, so they
/// conflict): no task fails with a store error (SQLite's busy states never
/// surface), money is conserved, and the global log is 1..=n with every
/// event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_on_two_store_values_read_then_write_without_errors() {
    let (first, second) = two_on_one_file().await;
    let accounts: Vec<_> = (0..4).map(|i| stream(&format!("busy-{i}"))).collect();
    for a in &accounts {
        execute(
            &first,
            Credit {
                account: a.clone(),
                amount: 1_000,
            },
        )
        .await
        .expect("fund");
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for t in 0..16usize {
        let store = if t % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let (accounts, barrier) = (accounts.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            for i in 0..20usize {
                let from = &accounts[(t + i) % 4];
                let to = &accounts[(t + i + 1) % 4];
                let policy = RetryPolicy::default()
                    .with_max_attempts(std::num::NonZeroU32::new(1_000).unwrap());
                eventcore::execute_with(
                    &store,
                    Move {
                        from: from.clone(),
                        to: to.clone(),
                        amount: 1,
                    },
                    &policy,
                )
                .await
                .unwrap_or_else(|e| panic!("task {t}, transfer {i}: {e}"));
            }
        }));
    }
    for task in tasks {
        task.await.expect("every task finishes");
    }
    let read = second.read_streams(&accounts).await.expect("read");
    let total: i128 = accounts
        .iter()
        .map(|a| {
            read.events_of(a)
                .map(|e| match e.decode().expect("a ledger event") {
                    eventcore_testing::fixtures::LedgerEvent::Credited { amount, .. } => {
                        i128::from(amount)
                    }
                    eventcore_testing::fixtures::LedgerEvent::Debited { amount, .. } => {
                        -i128::from(amount)
                    }
                })
                .sum::<i128>()
        })
        .sum();
    assert_eq!(total, 4_000, "money conserved");
    let page = first
        .read_all(&LogQuery::from_start(10_000))
        .await
        .expect("the log");
    let positions: Vec<u64> = page.events().iter().map(|(p, _)| p.sequence()).collect();
    let expected: Vec<u64> = (1..=4 + 16 * 20 * 2).collect();
    assert_eq!(positions, expected, "contiguous, every event once");
    assert_eq!(page.next(), Some(Position::new(0, 4 + 16 * 20 * 2)));
}

/// Stored events cannot be changed or deleted, even with SQL on the file.
#[tokio::test]
async fn stored_events_are_immutable() {
    let store = support::fresh_store().await;
    execute(
        &store,
        Credit {
            account: stream("fixed"),
            amount: 5,
        },
    )
    .await
    .expect("credit");
    let sql = rusqlite::Connection::open(store.path()).expect("open the file");
    for statement in [
        "UPDATE eventcore_events SET payload = '{}'",
        "DELETE FROM eventcore_events",
    ] {
        let refused = sql.execute(statement, []).expect_err(statement);
        assert!(
            refused.to_string().contains("immutable"),
            "{statement}: {refused}"
        );
    }
    let read = store.read_streams(&[stream("fixed")]).await.expect("read");
    assert_eq!(read.events().len(), 1);
    assert!(read.events()[0].payload().contains('5'));
}

/// A store opened again on its file finds everything a closed one wrote.
#[tokio::test]
async fn a_reopened_file_keeps_every_event() {
    let path = support::fresh_path();
    let store = SqliteEventStore::open(&path, SqliteConfig::default())
        .await
        .expect("open");
    for i in 0..10 {
        execute(
            &store,
            Credit {
                account: stream("kept"),
                amount: i + 1,
            },
        )
        .await
        .expect("credit");
    }
    drop(store);
    let again = SqliteEventStore::open(&path, SqliteConfig::default())
        .await
        .expect("reopen");
    let read = again.read_streams(&[stream("kept")]).await.expect("read");
    assert_eq!(read.events().len(), 10);
    assert_eq!(read.version(&stream("kept")).map(|v| v.get()), Some(10));
}

/// A lease taken through one store value shuts out another value on the
/// same file (as another process would be) until it is dropped; the next
/// holder's token is newer, and the former holder's checkpoint is refused.
#[tokio::test]
async fn a_lease_on_one_file_has_one_holder_across_store_values() {
    use eventcore::{CheckpointStore, StoreError, SubscriptionLeases, SubscriptionName};
    let (first, second) = two_on_one_file().await;
    let name = SubscriptionName::try_new("one-holder").unwrap();
    let held = first
        .try_acquire(&name)
        .await
        .expect("lease")
        .expect("free");
    let old = first.token(&held);
    assert!(
        second.try_acquire(&name).await.expect("try").is_none(),
        "held by the first"
    );
    assert!(
        first.try_acquire(&name).await.expect("try").is_none(),
        "even for its own value"
    );
    let mut held = held;
    assert!(first.still_held(&mut held).await.expect("check"));
    first
        .save(&name, Position::new(0, 3), old)
        .await
        .expect("the holder saves");
    drop(held);
    let next = second
        .try_acquire(&name)
        .await
        .expect("lease")
        .expect("free once dropped");
    assert!(second.token(&next) > old);
    let refused = first
        .save(&name, Position::new(0, 9), old)
        .await
        .expect_err("a former holder's save");
    assert!(matches!(refused, StoreError::LeaseLost { .. }), "{refused}");
    assert_eq!(
        second.load(&name).await.expect("load"),
        Some(Position::new(0, 3))
    );
}

/// A subscription on one store value is woken by a commit made through
/// another value of the same file (as another process would make it), long
/// before its polling interval (30 s here) would have found it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_by_another_process_wakes_a_subscription() {
    use std::sync::{Arc, Mutex};
    let (writer, reader) = two_on_one_file().await;
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let handler = {
        let seen = seen.clone();
        eventcore::handler_fn(move |_, event: &eventcore_testing::fixtures::LedgerEvent| {
            if let eventcore_testing::fixtures::LedgerEvent::Credited { amount, .. } = event {
                seen.lock().unwrap().push(*amount);
            }
            async { Ok(()) }
        })
    };
    let config = eventcore::SubscriptionConfig::default()
        .with_poll_interval(std::time::Duration::from_secs(30));
    let name = eventcore::SubscriptionName::try_new("woken").unwrap();
    let handle = eventcore::subscribe(reader.clone(), reader, name, handler, config);
    // Let the subscription take its lease and find the log empty.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    execute(
        &writer,
        Credit {
            account: stream("wake"),
            amount: 7,
        },
    )
    .await
    .expect("credit");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while seen.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not woken by the other value's commit"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    handle.stop().await.expect("stop");
    assert_eq!(*seen.lock().unwrap(), vec![7]);
}

/// A file made before checkpoints kept both parts of their position (its
/// `eventcore_checkpoints` without `commit_id`) gains the column when
/// opened: its saved checkpoints load as they were, and move forward by
/// both parts afterwards.
#[tokio::test]
async fn a_file_with_the_former_checkpoints_table_is_upgraded_on_open() {
    use eventcore::{CheckpointStore, SubscriptionLeases, SubscriptionName};
    let path = support::fresh_path();
    rusqlite::Connection::open(&path)
        .expect("a new file")
        .execute_batch(
            "CREATE TABLE eventcore_checkpoints (
                 name     TEXT    PRIMARY KEY,
                 sequence INTEGER NOT NULL
             ) STRICT, WITHOUT ROWID;
             INSERT INTO eventcore_checkpoints VALUES ('old', 41);",
        )
        .expect("the former table");
    let store = SqliteEventStore::open(&path, SqliteConfig::default())
        .await
        .expect("opens and upgrades");
    let name = SubscriptionName::try_new("old").expect("a name");
    assert_eq!(
        store.load(&name).await.expect("load"),
        Some(Position::new(0, 41))
    );
    let lease = store
        .try_acquire(&name)
        .await
        .expect("acquire")
        .expect("free");
    store
        .save(&name, Position::new(2, 1), store.token(&lease))
        .await
        .expect("save");
    assert_eq!(
        store.load(&name).await.expect("load"),
        Some(Position::new(2, 1))
    );
    drop(lease);
    drop(store);
    SqliteEventStore::open(&path, SqliteConfig::default())
        .await
        .expect("opening an upgraded file again changes nothing");
}
