//! Guarantees specific to the PostgreSQL backend, on a real server.

mod support;

use std::{sync::Arc, time::Duration};

use eventcore::{
    CommandId, CommandRecords, EventLog, EventStore, EventStoreExt, ExecuteOptions, LogQuery,
    StoreError, StreamVersion, StreamWrites, execute, execute_with,
};
use eventcore_postgres::{PostgresError, PostgresEventStore, SchemaName};
use eventcore_testing::fixtures::{Credit, LedgerEvent, Move, Note, stream};
use sqlx::Row;
use tokio::sync::Barrier;

async fn seeded_store() -> PostgresEventStore {
    let store = support::fresh_store().await;
    execute(
        &store,
        Credit {
            account: stream("acct"),
            amount: 5,
        },
    )
    .await
    .expect("seed");
    store
}

/// Appends note 1 as version 1 of the empty stream `id` with the store's
/// own append statement, inside a transaction left open for the caller.
async fn append_in_open_transaction(
    store: &PostgresEventStore,
    id: &eventcore::StreamId,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = support::sql(store).begin().await.unwrap();
    let conflict = support::append_first_note(&mut tx, id).await.unwrap();
    let conflict: Option<String> = conflict.get("conflict_stream");
    assert!(
        conflict.is_none(),
        "the append succeeds inside its transaction"
    );
    tx
}

/// The versions of the migrations the crate ships (one `NNNN_*.sql` file
/// each), so a test's expectation moves with a new migration.
fn shipped_migrations() -> Vec<i64> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    let mut versions: Vec<i64> = std::fs::read_dir(dir)
        .expect("the migrations folder")
        .map(|entry| {
            let name = entry.expect("a migration file").file_name();
            let name = name.to_string_lossy();
            name[..4].parse().expect("NNNN_ prefix")
        })
        .collect();
    versions.sort_unstable();
    versions
}

fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|db| db.code())
        .map(|c| c.into_owned())
}

/// Runs `sql` against a log holding one event, asserts that the
/// immutability trigger refuses it, and that the event is intact.
async fn assert_refused_by_trigger(sql: &str) {
    let store = seeded_store().await;
    let err = sqlx::query(sql)
        .execute(&support::sql(&store))
        .await
        .expect_err("a change to stored events must fail");
    assert_eq!(sqlstate(&err).as_deref(), Some("EC001"), "{sql}: {err}");
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_type, stream_version FROM eventcore_events")
            .fetch_all(&support::sql(&store))
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![("Credited".to_owned(), 1)],
        "{sql} left the log changed"
    );
}

#[tokio::test]
async fn update_of_an_event_is_rejected() {
    assert_refused_by_trigger("UPDATE eventcore_events SET event_type = 'Forged'").await;
}

#[tokio::test]
async fn delete_of_an_event_is_rejected() {
    assert_refused_by_trigger("DELETE FROM eventcore_events").await;
}

#[tokio::test]
async fn truncate_of_the_log_is_rejected() {
    assert_refused_by_trigger("TRUNCATE eventcore_events").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_from_separate_pools_all_succeed() {
    const MIGRATORS: usize = 6;
    let schema = support::unique_schema();
    let barrier = Arc::new(Barrier::new(MIGRATORS));
    let mut tasks = Vec::new();
    for _ in 0..MIGRATORS {
        let config = support::config(schema.clone()).max_connections(1);
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let store = PostgresEventStore::connect_with(&support::database_url().await, config)
                .await
                .expect("connect");
            barrier.wait().await;
            store.migrate().await.map(|()| store)
        }));
    }
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(t.await.unwrap().expect("every concurrent migrate succeeds"));
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM eventcore_migrations ORDER BY version")
            .fetch_all(&support::sql(&stores[0]))
            .await
            .unwrap();
    assert_eq!(applied, shipped_migrations(), "each migration applied once");
    stores[0]
        .migrate()
        .await
        .expect("migrating again is a no-op");
    execute(
        &stores[1],
        Credit {
            account: stream("a"),
            amount: 1,
        },
    )
    .await
    .expect("usable");
}

#[tokio::test]
async fn a_database_newer_than_the_crate_is_refused() {
    let store = support::fresh_store().await;
    sqlx::query("INSERT INTO eventcore_migrations (version, description) VALUES (999, 'future')")
        .execute(&support::sql(&store))
        .await
        .unwrap();
    let err = store.migrate().await.expect_err("unknown migration");
    let newest = *shipped_migrations().last().expect("a migration");
    assert!(
        matches!(
            err,
            PostgresError::SchemaTooNew { found: 999, known } if known == newest
        ),
        "{err:?}"
    );
}

/// Command A read X and Y (both empty) and writes Y. B appends to X and has
/// not committed yet when A appends. A must wait for B, see its write, and be
/// rejected, though A writes nothing to X; nothing of A is stored.
#[tokio::test]
async fn a_writer_cannot_slip_in_behind_a_read_only_participant() {
    let schema = support::unique_schema();
    let store = support::store_with(support::config(schema.clone())).await;
    let (x, y) = (stream("x"), stream("y"));
    // B holds X's lock inside an open transaction while A appends: A waits,
    // then sees B's committed write and is rejected.
    let b = append_in_open_transaction(&store, &x).await;

    let a_store = store.clone();
    let (ax, ay) = (x.clone(), y.clone());
    let a = tokio::spawn(async move {
        let mut writes = StreamWrites::new();
        writes.expect(ax, StreamVersion::INITIAL).unwrap();
        writes.expect(ay.clone(), StreamVersion::INITIAL).unwrap();
        writes.append(&Note::new(&ay, 1)).unwrap();
        a_store.append(writes).await
    });
    // A must be blocked on X's advisory lock while B is open.
    wait_for_lock_waiter(&store, &schema).await;
    assert!(
        !a.is_finished(),
        "A waits for B's lock on the read-only stream"
    );
    b.commit().await.unwrap();

    let err = a.await.unwrap().expect_err("A read a stale X");
    assert!(
        matches!(&err, StoreError::VersionConflict { stream_id, expected, actual }
            if *stream_id == x && *expected == StreamVersion::INITIAL && actual.get() == 1),
        "{err:?}"
    );
    let read = store.read_streams(&[x, y.clone()]).await.unwrap();
    assert_eq!(
        read.version(&y),
        Some(StreamVersion::INITIAL),
        "nothing of A written"
    );
}

/// Opens a transaction that holds stream `x`'s append lock until committed.
async fn hold_stream_lock(
    store: &PostgresEventStore,
    x: &eventcore::StreamId,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = support::sql(store).begin().await.unwrap();
    sqlx::query("SELECT eventcore_lock_streams(ARRAY[$1])")
        .bind(x.as_str())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// The pid of a backend of this test's schema (its application name)
/// waiting on an advisory lock.
async fn wait_for_lock_waiter(store: &PostgresEventStore, schema: &SchemaName) -> i32 {
    wait_for_waiter(store, schema, "advisory").await
}

/// The pid of a backend of this test's schema waiting on a lock of the
/// given kind (`pg_stat_activity.wait_event`).
async fn wait_for_waiter(store: &PostgresEventStore, schema: &SchemaName, wait_event: &str) -> i32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE application_name = $1 AND wait_event_type = 'Lock' AND wait_event = $2
             LIMIT 1",
        )
        .bind(schema.to_string())
        .bind(wait_event)
        .fetch_optional(&support::sql(store))
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no append ever waited on the lock"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_during_append_is_transient() {
    let schema = support::unique_schema();
    let store = support::store_with(support::config(schema.clone())).await;
    let x = stream("x");
    let holder = hold_stream_lock(&store, &x).await;

    let victim = support::store_with(support::config(schema.clone()).max_connections(1)).await;
    let mut writes = StreamWrites::new();
    writes.expect(x.clone(), StreamVersion::INITIAL).unwrap();
    writes.append(&Note::new(&x, 1)).unwrap();
    let append = tokio::spawn(async move { victim.append(writes).await });

    let pid = wait_for_lock_waiter(&store, &schema).await;
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&support::sql(&store))
        .await
        .unwrap();
    assert!(killed);
    let err = append
        .await
        .unwrap()
        .expect_err("its connection was terminated");
    assert!(
        matches!(
            err,
            StoreError::Transient {
                operation: "append",
                ..
            }
        ),
        "{err:?}"
    );
    let source = std::error::Error::source(&err).expect("sqlx error kept as source");
    assert!(source.downcast_ref::<sqlx::Error>().is_some());
    holder.rollback().await.unwrap();
    assert_eq!(
        store
            .read_streams(std::slice::from_ref(&x))
            .await
            .unwrap()
            .version(&x),
        Some(StreamVersion::INITIAL)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_is_transient() {
    let schema = support::unique_schema();
    let store = support::store_with(
        support::config(schema.clone())
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(200)),
    )
    .await;
    let x = stream("x");
    // Another session (the test's own, on the store's schema) holds x's
    // lock, so an append on the store's only connection waits: the store
    // has no connection left for a read.
    let holder = hold_stream_lock(&store, &x).await;
    let (writer, wx) = (store.clone(), x.clone());
    let append = tokio::spawn(async move {
        let mut writes = StreamWrites::new();
        writes.expect(wx.clone(), StreamVersion::INITIAL).unwrap();
        writes.append(&Note::new(&wx, 1)).unwrap();
        writer.append(writes).await
    });
    wait_for_lock_waiter(&store, &schema).await;
    let err = store
        .read_streams(&[stream("a")])
        .await
        .expect_err("no free connection");
    assert!(
        matches!(
            err,
            StoreError::Transient {
                operation: "read_streams",
                ..
            }
        ),
        "{err:?}"
    );
    holder.rollback().await.unwrap();
    append
        .await
        .unwrap()
        .expect("the append goes through once the lock is free");
    store
        .read_streams(&[stream("a")])
        .await
        .expect("works again once a connection is free");
}

#[tokio::test]
async fn event_rows_carry_metadata_columns() {
    let store = seeded_store().await;
    let row = sqlx::query(
        "SELECT event_id, transaction_id::text AS xid, recorded_at IS NOT NULL AS has_time, metadata::text AS metadata
         FROM eventcore_events",
    )
    .fetch_one(&support::sql(&store))
    .await
    .unwrap();
    let id: uuid::Uuid = row.get("event_id");
    assert_eq!(id.get_version_num(), 7, "event ids are UUIDv7");
    let xid: String = row.get("xid");
    assert!(xid.parse::<u64>().unwrap() > 0);
    assert!(row.get::<bool, _>("has_time"));
    assert_eq!(row.get::<String, _>("metadata"), "{}");
}

#[tokio::test]
async fn oversized_limit_is_configurable() {
    let store = support::fresh_store().await.with_max_payload_bytes(64);
    let a = stream("small");
    let mut note = Note::new(&a, 1);
    note.text = "y".repeat(100);
    let mut writes = StreamWrites::new();
    writes.expect(a.clone(), StreamVersion::INITIAL).unwrap();
    writes.append(&note).unwrap();
    let err = store.append(writes).await.expect_err("over 64 bytes");
    assert!(
        matches!(err, StoreError::PayloadTooLarge { limit: 64, .. }),
        "{err:?}"
    );
    assert_eq!(
        store
            .read_streams(std::slice::from_ref(&a))
            .await
            .unwrap()
            .version(&a),
        Some(StreamVersion::INITIAL)
    );
}

/// A writer that bypasses eventcore's locks takes version 1 of `x` while an
/// append expecting `x` at 0 is under way: the unique key stops the append,
/// which reports a version conflict naming the stream, expected and actual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_version_from_a_rogue_writer_is_a_version_conflict() {
    let schema = support::unique_schema();
    let store = support::store_with(support::config(schema.clone())).await;
    let x = stream("x");
    let mut rogue = support::sql(&store).begin().await.unwrap();
    sqlx::query(
        "INSERT INTO eventcore_events (stream_id, stream_version, event_type, payload, event_id)
         VALUES ($1, 1, 'Rogue', '{}', gen_random_uuid())",
    )
    .bind(x.as_str())
    .execute(&mut *rogue)
    .await
    .unwrap();

    let (writer, wx) = (store.clone(), x.clone());
    let append = tokio::spawn(async move {
        let mut writes = StreamWrites::new();
        writes.expect(wx.clone(), StreamVersion::INITIAL).unwrap();
        writes.append(&Note::new(&wx, 1)).unwrap();
        writer.append(writes).await
    });
    // The append waits on the rogue's uncommitted row in the unique index.
    wait_for_waiter(&store, &schema, "transactionid").await;
    rogue.commit().await.unwrap();

    let err = append.await.unwrap().expect_err("version 1 is taken");
    assert!(
        matches!(&err, StoreError::VersionConflict { stream_id, expected, actual }
            if *stream_id == x && *expected == StreamVersion::INITIAL && actual.get() == 1),
        "{err:?}"
    );
    let read = store.read_streams(std::slice::from_ref(&x)).await.unwrap();
    assert_eq!(read.events().len(), 1, "only the rogue's event");
    assert_eq!(read.events()[0].event_type(), "Rogue");
}

/// The late-commit case: T1 appends and stays open; T2 appends to another
/// stream and commits; a reader reads. It must not move past T1's event:
/// once T1 commits, the reader, going on from where it was, gets T1's
/// event and then T2's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_skips_an_event_that_commits_late() {
    let store = support::fresh_store().await;
    let (late, early) = (stream("late"), stream("early"));
    let t1 = append_in_open_transaction(&store, &late).await;

    let mut writes = StreamWrites::new();
    writes
        .expect(early.clone(), StreamVersion::INITIAL)
        .unwrap();
    writes.append(&Note::new(&early, 2)).unwrap();
    store.append(writes).await.expect("T2 commits");

    let before = store.read_all(&LogQuery::from_start(100)).await.unwrap();
    assert!(
        before.is_empty(),
        "while T1 is open the reader must not pass it: {before:?}"
    );

    t1.commit().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let after = loop {
        let page = store.read_all(&LogQuery::from_start(100)).await.unwrap();
        if page.len() == 2 {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log never showed both events: {page:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let streams: Vec<&str> = after
        .events()
        .iter()
        .map(|(_, e)| e.stream_id().as_str())
        .collect();
    assert_eq!(
        streams,
        vec!["late", "early"],
        "T1's event comes first, though T2 committed first"
    );
    assert!(after.events()[0].0 < after.events()[1].0);
}

/// Two instances of one subscription, each with its own store (as two
/// processes would have): never both active; when the first one's session
/// dies, the second takes over from the checkpoint and the first goes back
/// to waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_active_instance_per_subscription_and_takeover_when_it_dies() {
    use eventcore::{SubscriptionConfig, SubscriptionName, handler_fn, subscribe};
    use eventcore_testing::fixtures::LedgerEvent;
    use std::sync::{Arc, Mutex};

    let schema = support::unique_schema();
    let process_a = support::store_with(support::config(schema.clone())).await;
    let process_b = support::store_with(support::config(schema.clone())).await;
    let name = SubscriptionName::try_new("projection").unwrap();
    let config = SubscriptionConfig::default().with_poll_interval(Duration::from_millis(10));
    let instance = |store: &PostgresEventStore, seen: Arc<Mutex<Vec<u64>>>| {
        subscribe(
            store.clone(),
            store.clone(),
            name.clone(),
            handler_fn(move |_, event: &LedgerEvent| {
                if let LedgerEvent::Credited { amount, .. } = event {
                    seen.lock().unwrap().push(*amount);
                }
                async { Ok(()) }
            }),
            config.clone(),
        )
    };
    let wait_for = |seen: Arc<Mutex<Vec<u64>>>, n: usize| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while seen.lock().unwrap().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {:?} delivered",
                seen.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };

    execute(
        &process_a,
        Credit {
            account: stream("a"),
            amount: 1,
        },
    )
    .await
    .unwrap();
    let seen_a: Arc<Mutex<Vec<u64>>> = Arc::default();
    let seen_b: Arc<Mutex<Vec<u64>>> = Arc::default();
    let a = instance(&process_a, seen_a.clone());
    wait_for(seen_a.clone(), 1).await;
    let b = instance(&process_b, seen_b.clone());
    execute(
        &process_a,
        Credit {
            account: stream("a"),
            amount: 2,
        },
    )
    .await
    .unwrap();
    wait_for(seen_a.clone(), 2).await;
    assert!(
        seen_b.lock().unwrap().is_empty(),
        "B must wait while A holds the lease"
    );

    // A's process "dies": its lease session is terminated.
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND s.application_name = $1",
    )
    .bind(schema.to_string())
    .fetch_one(&support::sql(&process_b))
    .await
    .unwrap();
    assert_eq!(killed, 1, "exactly one session held the lease");
    // B takes the lease (A has not noticed yet: it checks on its next page).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND s.application_name = $1",
        )
        .bind(schema.to_string())
        .fetch_one(&support::sql(&process_b))
        .await
        .unwrap();
        if held == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    execute(
        &process_a,
        Credit {
            account: stream("a"),
            amount: 3,
        },
    )
    .await
    .unwrap();
    wait_for(seen_b.clone(), 1).await;
    // A notices when it has a page to handle: once more events arrive.
    execute(
        &process_a,
        Credit {
            account: stream("a"),
            amount: 4,
        },
    )
    .await
    .unwrap();
    wait_for(seen_b.clone(), 2).await;
    assert!(!a.is_finished(), "A waits for the lease");
    let a_end = a
        .stop()
        .await
        .expect("A waits for the lease; it does not stop");
    b.stop().await.unwrap();
    assert_eq!(a_end.leases_lost, 1, "{a_end:?}");
    assert!(
        !seen_a.lock().unwrap().contains(&3) && !seen_a.lock().unwrap().contains(&4),
        "A handled nothing after losing its lease"
    );
    assert_eq!(
        *seen_b.lock().unwrap(),
        vec![3, 4],
        "B resumed after A's checkpoint"
    );
}

/// An exactly-once projection whose handler fails after writing (as a
/// crash mid-event would): the failed attempt's write rolls back with its
/// checkpoint, the retry applies the event once; a restart re-applies
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exactly_once_projection_never_applies_an_event_twice() {
    use eventcore::{BoxError, RetryPolicy, SubscriptionConfig, SubscriptionName, subscribe};
    use eventcore_postgres::{ExactlyOnce, ProjectionHandler};
    use eventcore_testing::fixtures::LedgerEvent;

    struct Totals {
        failed_once: bool,
    }

    impl ProjectionHandler<LedgerEvent> for Totals {
        async fn handle(
            &mut self,
            tx: &mut sqlx::PgConnection,
            _: &eventcore::EventContext,
            event: &LedgerEvent,
        ) -> Result<(), BoxError> {
            let LedgerEvent::Credited { amount, .. } = event else {
                return Ok(());
            };
            sqlx::query("UPDATE projection_totals SET total = total + $1, events = events + 1")
                .bind(i64::try_from(*amount)?)
                .execute(&mut *tx)
                .await?;
            if *amount == 3 && !self.failed_once {
                self.failed_once = true;
                return Err("crashed after writing".into());
            }
            Ok(())
        }
    }

    let store = support::fresh_store().await;
    sqlx::raw_sql("CREATE TABLE projection_totals (total bigint NOT NULL, events bigint NOT NULL); INSERT INTO projection_totals VALUES (0, 0)")
        .execute(&support::sql(&store))
        .await
        .unwrap();
    for amount in 1..=5 {
        execute(
            &store,
            Credit {
                account: stream("acct"),
                amount,
            },
        )
        .await
        .unwrap();
    }
    let name = SubscriptionName::try_new("totals").unwrap();
    let config = SubscriptionConfig::default()
        .with_poll_interval(Duration::from_millis(10))
        .with_retry(
            RetryPolicy::default()
                .with_max_attempts(std::num::NonZeroU32::new(3).unwrap())
                .with_max_delay(Duration::from_millis(1)),
        );
    let totals = |store: PostgresEventStore| async move {
        sqlx::query_as::<_, (i64, i64)>("SELECT total, events FROM projection_totals")
            .fetch_one(&support::sql(&store))
            .await
            .unwrap()
    };
    let wait_for_events = |store: PostgresEventStore, n: i64| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (_, events) = totals(store.clone()).await;
            if events >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "projection stuck at {events} events"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };

    let handler = ExactlyOnce::new(store.clone(), name.clone(), Totals { failed_once: false });
    let handle = subscribe(
        store.clone(),
        store.clone(),
        name.clone(),
        handler,
        config.clone(),
    );
    wait_for_events(store.clone(), 5).await;
    handle.stop().await.unwrap();
    assert_eq!(
        totals(store.clone()).await,
        (15, 5),
        "each event applied once, the failed attempt rolled back"
    );

    // A restart applies nothing again, then follows new events.
    let handler = ExactlyOnce::new(store.clone(), name.clone(), Totals { failed_once: true });
    let handle = subscribe(store.clone(), store.clone(), name.clone(), handler, config);
    execute(
        &store,
        Credit {
            account: stream("acct"),
            amount: 6,
        },
    )
    .await
    .unwrap();
    wait_for_events(store.clone(), 6).await;
    handle.stop().await.unwrap();
    assert_eq!(totals(store.clone()).await, (21, 6));
}

/// 16 writers append concurrently while an exactly-once projection copies
/// every event into a table keyed by (stream, version): afterwards the
/// table holds exactly the committed events (a duplicate would break the
/// key), and each stream's rows were applied in version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exactly_once_projection_under_concurrent_writers_gets_every_event_once() {
    use eventcore::{BoxError, Event, SubscriptionConfig, SubscriptionName, subscribe};
    use eventcore_postgres::{ExactlyOnce, ProjectionHandler};
    use eventcore_testing::fixtures::LedgerEvent;

    struct Copy;

    impl ProjectionHandler<LedgerEvent> for Copy {
        async fn handle(
            &mut self,
            tx: &mut sqlx::PgConnection,
            context: &eventcore::EventContext,
            event: &LedgerEvent,
        ) -> Result<(), BoxError> {
            // The next version of the stream in the copy; the key forbids duplicates.
            sqlx::query(
                "INSERT INTO copied (stream_id, version, seq)
                 SELECT $1, coalesce(max(version), 0) + 1, $2 FROM copied WHERE stream_id = $1",
            )
            .bind(event.stream_id().as_str())
            .bind(i64::try_from(context.position().sequence())?)
            .execute(&mut *tx)
            .await?;
            Ok(())
        }
    }

    let store = support::fresh_store().await;
    sqlx::raw_sql("CREATE TABLE copied (stream_id text, version bigint, seq bigint, PRIMARY KEY (stream_id, version))")
        .execute(&support::sql(&store))
        .await
        .unwrap();
    let name = SubscriptionName::try_new("copy").unwrap();
    let config = SubscriptionConfig::default().with_poll_interval(Duration::from_millis(5));
    let handle = subscribe(
        store.clone(),
        store.clone(),
        name.clone(),
        ExactlyOnce::new(store.clone(), name, Copy),
        config,
    );

    let barrier = Arc::new(Barrier::new(16));
    let writers: Vec<_> = (0..16u64)
        .map(|w| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                for _ in 0..10 {
                    // Pairs of writers share an account, so some commands conflict and retry.
                    execute(
                        &store,
                        Credit {
                            account: stream(&format!("acct-{}", w / 2)),
                            amount: w + 1,
                        },
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let copied: i64 = sqlx::query_scalar("SELECT count(*) FROM copied")
            .fetch_one(&support::sql(&store))
            .await
            .unwrap();
        if copied >= 160 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the projection copied only {copied} of 160 events"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.stop().await.unwrap();
    let (copied, matching): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(e.global_position) FROM copied c
         LEFT JOIN eventcore_events e ON e.stream_id = c.stream_id AND e.stream_version = c.version AND e.global_position = c.seq",
    )
    .fetch_one(&support::sql(&store))
    .await
    .unwrap();
    assert_eq!(copied, 160, "every committed event exactly once");
    assert_eq!(
        matching, 160,
        "each stream's events were applied in version order"
    );
}

/// A subscription on PostgreSQL is woken by the writer's notification, not
/// by its poll: with a 60 s poll interval, each new event still arrives
/// within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_events_wake_a_subscription_without_waiting_for_its_poll_even_after_the_listener_dies()
{
    use eventcore::{SubscriptionConfig, SubscriptionName, handler_fn, subscribe};
    use eventcore_testing::fixtures::LedgerEvent;
    use std::sync::Mutex;

    let schema = support::unique_schema();
    let store = support::store_with(support::config(schema.clone())).await;
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let record = seen.clone();
    let config = SubscriptionConfig::default().with_poll_interval(Duration::from_secs(60));
    let name = SubscriptionName::try_new("live").unwrap();
    let handler = handler_fn(move |_, event: &LedgerEvent| {
        if let LedgerEvent::Credited { amount, .. } = event {
            record.lock().unwrap().push(*amount);
        }
        async { Ok(()) }
    });
    let handle = subscribe(store.clone(), store.clone(), name, handler, config);
    let wait_for = |n: usize, within: Duration| {
        let seen = seen.clone();
        async move {
            let deadline = tokio::time::Instant::now() + within;
            while seen.lock().unwrap().len() < n {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "only {:?} within {within:?}",
                    seen.lock().unwrap()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    // Wait until this store's listening session has run its LISTEN.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN %'",
        )
        .bind(schema.to_string())
        .fetch_one(&support::sql(&store))
        .await
        .unwrap();
        if listening > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store never started listening"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Each new event must now arrive long before the 60 s poll.
    for amount in 1..=4 {
        execute(
            &store,
            Credit {
                account: stream("a"),
                amount,
            },
        )
        .await
        .unwrap();
        wait_for(amount as usize, Duration::from_secs(5)).await;
    }
    assert!(store.wakeups_live());

    // The listening session dies: the store LISTENs again on a new one,
    // and wake-ups resume (the poll is still 60 s away).
    let killed: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN %' \
         AND pg_terminate_backend(pid)",
    )
    .bind(schema.to_string())
    .fetch_all(&support::sql(&store))
    .await
    .unwrap();
    assert_eq!(killed.len(), 1, "one listening session");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let fresh: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
             AND query LIKE 'LISTEN %' AND pid <> $2",
        )
        .bind(schema.to_string())
        .bind(killed[0])
        .fetch_one(&support::sql(&store))
        .await
        .unwrap();
        if fresh > 0 && store.wakeups_live() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let rows: Vec<(i32, String, String)> = sqlx::query_as(
                "SELECT pid, state, query FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(schema.to_string())
            .fetch_all(&support::sql(&store))
            .await
            .unwrap();
            panic!(
                "the store never listened again: live {} {rows:?}",
                store.wakeups_live()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for amount in 5..=6 {
        execute(
            &store,
            Credit {
                account: stream("a"),
                amount,
            },
        )
        .await
        .unwrap();
        wait_for(amount as usize, Duration::from_secs(5)).await;
    }
    let report = handle.stop().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(report.store_retries, 0, "the subscription saw no failure");
}

/// Account `{prefix}-a` holding 3, and the key of its balance fold's
/// snapshots (what the snapshot-row tests plant under).
async fn holding_three(
    store: &PostgresEventStore,
    prefix: &str,
) -> (eventcore::StreamId, eventcore::SnapshotKey) {
    let a = stream(&format!("{prefix}-a"));
    execute(
        store,
        Credit {
            account: a.clone(),
            amount: 3,
        },
    )
    .await
    .unwrap();
    let key = eventcore::SnapshotKey::of_fold(
        <eventcore_testing::fixtures::Balance as eventcore::Fold>::NAME,
        &a,
    );
    (a, key)
}

/// A withdrawal of `amount` from `account`, by a process with no kept folds.
async fn withdraw_cold(
    store: &PostgresEventStore,
    account: &eventcore::StreamId,
    amount: u64,
) -> (
    Result<eventcore::ExecutionResult, eventcore::ExecuteError>,
    eventcore::CacheStats,
) {
    let fresh =
        eventcore::Executor::new(store.clone()).with_cache(eventcore::CacheConfig::default());
    let done = fresh
        .execute(eventcore_testing::fixtures::Withdraw {
            account: account.clone(),
            amount,
        })
        .await;
    (done, fresh.cache().stats())
}

/// Rows of `eventcore_snapshots` written by hand, as a damaged table or a
/// careless migration would leave them: each is ignored and the command
/// decides on the events.
#[tokio::test]
async fn damaged_snapshot_rows_are_ignored() {
    use eventcore::ExecuteError;

    let store = support::fresh_store().await;
    let (a, key) = holding_three(&store, "row").await;
    let rich = "1000000";
    let rows: [(i64, &str, &str); 4] = [
        (1, "{-5}", rich),               // negative version
        (1 << 40, "{1}", rich),          // schema version out of range
        (1, "{1,7}", rich),              // one version too many
        (1, "{1}", "\"not a balance\""), // state of another shape
    ];
    for (schema_version, versions, state) in rows {
        sqlx::query("DELETE FROM eventcore_snapshots")
            .execute(&support::sql(&store))
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO eventcore_snapshots (state_name, state_key, schema_version, versions, state)
             VALUES ($1, $2, $3, $4::bigint[], $5)",
        )
        .bind(key.name())
        .bind(key.streams_text())
        .bind(schema_version)
        .bind(versions)
        .bind(state)
        .execute(&support::sql(&store))
        .await
        .unwrap();
        let (done, _) = withdraw_cold(&store, &a, 4).await;
        let err = done.expect_err("a holds 3 whatever the row says");
        assert!(
            matches!(err, ExecuteError::Rejected(_)),
            "{versions} {state}: {err:?}"
        );
    }
}

/// Snapshots are not events: the immutability triggers leave them alone.
#[tokio::test]
async fn snapshots_can_be_deleted_and_events_still_cannot() {
    let store = support::fresh_store().await;
    sqlx::query("DELETE FROM eventcore_snapshots")
        .execute(&support::sql(&store))
        .await
        .expect("snapshots may be deleted");
    sqlx::query("TRUNCATE eventcore_snapshots")
        .execute(&support::sql(&store))
        .await
        .expect("and truncated");
    let err = sqlx::query("TRUNCATE eventcore_events")
        .execute(&support::sql(&store))
        .await
        .expect_err("events may not");
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("EC001")
    );
}

/// A store reached through a proxy that can lose a reply after commit.
async fn store_behind_proxy() -> (support::proxy::LossyProxy, PostgresEventStore) {
    let url = support::database_url().await;
    let proxy = support::proxy::LossyProxy::start(&url).await;
    let store = PostgresEventStore::connect_with(
        &proxy.url(&url),
        support::config(support::unique_schema()).max_connections(2),
    )
    .await
    .expect("connect through the proxy");
    store.migrate().await.expect("migrate");
    (proxy, store)
}

/// Credits of `amount` on `account`, as stored.
async fn credits_of(
    store: &PostgresEventStore,
    account: &eventcore::StreamId,
    amount: u64,
) -> usize {
    store
        .read_streams(std::slice::from_ref(account))
        .await
        .unwrap()
        .events()
        .iter()
        .filter(|e| {
            matches!(e.decode::<LedgerEvent>().unwrap(),
                LedgerEvent::Credited { amount: a, .. } if a == amount)
        })
        .count()
}

/// The reply-lost fault on a real server: the proxy forwards the append,
/// the server commits it, and the connection drops before the reply
/// reaches the client. With a command id the retry finds the record and
/// returns the first outcome: the events are in the log once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_lost_after_commit_is_applied_once_with_a_command_id() {
    let (proxy, store) = store_behind_proxy().await;
    let account = stream("lost-reply");
    let credit = |amount| Credit {
        account: account.clone(),
        amount,
    };
    execute(&store, credit(1)).await.expect("warm up");

    // The amount appears only in the append's payload.
    proxy.lose_reply_to(b"987654");
    let id = CommandId::try_new("lost-reply-credit").unwrap();
    let result = execute_with(
        &store,
        credit(987_654),
        ExecuteOptions::new().with_command_id(id),
    )
    .await
    .expect("the retry returns the first outcome");
    assert_eq!(proxy.lost(), 1, "the reply was lost after commit");
    assert!(result.already_applied, "{result:?}");
    assert_eq!(result.attempts, 2);
    assert_eq!(result.version_of(&account), Some(StreamVersion::new(2)));
    assert_eq!(
        credits_of(&store, &account, 987_654).await,
        1,
        "applied once"
    );

    // The same through a kept state: a transfer decided on it appends with
    // no read, and its retry finds the record on the tail read.
    let other = stream("lost-reply-to");
    let pay = |amount| Move {
        from: account.clone(),
        to: other.clone(),
        amount,
    };
    execute(&store, credit(1_000_000)).await.expect("funds");
    execute(&store, pay(1)).await.expect("keeps the state");
    let hits = eventcore::Executor::new(&store).cache().stats().hits;
    proxy.lose_reply_to(b"424242");
    let id = CommandId::try_new("lost-reply-move").unwrap();
    let result = execute_with(
        &store,
        pay(424_242),
        ExecuteOptions::new().with_command_id(id),
    )
    .await
    .expect("the retry returns the first outcome, not a refusal");
    assert_eq!(proxy.lost(), 2);
    assert_eq!(
        eventcore::Executor::new(&store).cache().stats().hits,
        hits + 1,
        "decided on the kept state"
    );
    assert!(result.already_applied, "{result:?}");
    assert_eq!(credits_of(&store, &other, 424_242).await, 1, "moved once");
}

/// The same fault without a command id: the retry applies the command a
/// second time, as the documentation warns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_lost_after_commit_is_applied_twice_without_a_command_id() {
    let (proxy, store) = store_behind_proxy().await;
    let account = stream("lost-reply-twice");
    let credit = |amount| Credit {
        account: account.clone(),
        amount,
    };
    execute(&store, credit(1)).await.expect("warm up");
    proxy.lose_reply_to(b"987655");
    let result = execute(&store, credit(987_655))
        .await
        .expect("the retry succeeds");
    assert_eq!(proxy.lost(), 1);
    assert!(!result.already_applied);
    assert_eq!(result.attempts, 2);
    assert_eq!(
        credits_of(&store, &account, 987_655).await,
        2,
        "the command was applied twice"
    );
}

/// Records are rows of `eventcore_commands`, written with the events and
/// removed by `prune_commands` only.
#[tokio::test]
async fn command_records_are_rows_written_with_the_events() {
    let store = support::fresh_store().await;
    let id = CommandId::try_new("row-1").unwrap();
    let account = stream("rows");
    execute_with(
        &store,
        Credit {
            account: account.clone(),
            amount: 3,
        },
        ExecuteOptions::new().with_command_id(id),
    )
    .await
    .unwrap();
    let row = sqlx::query(
        "SELECT command_type, streams, versions, events_written FROM eventcore_commands WHERE command_id = 'row-1'",
    )
    .fetch_one(&support::sql(&store))
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), "Credit");
    assert_eq!(row.get::<Vec<String>, _>(1), vec!["rows".to_owned()]);
    assert_eq!(row.get::<Vec<i64>, _>(2), vec![1]);
    assert_eq!(row.get::<i32, _>(3), 1);
    let causation: Option<String> =
        sqlx::query_scalar("SELECT causation_id FROM eventcore_events WHERE stream_id = 'rows'")
            .fetch_one(&support::sql(&store))
            .await
            .unwrap();
    assert_eq!(
        causation.as_deref(),
        Some("row-1"),
        "the command id as causation id"
    );
}

/// Ends every session of this test's store (they share its
/// `application_name`) but the one asking.
async fn terminate_sessions(store: &PostgresEventStore, schema: &SchemaName) -> i64 {
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND pid <> pg_backend_pid()) AS t",
    )
    .bind(schema.to_string())
    .fetch_one(&support::sql(store))
    .await
    .unwrap();
    // Let the server finish closing them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    killed
}

/// A session ended by the server (`pg_terminate_backend`: FATAL 57P01) is
/// not lent out again: at most the call that finds it dead fails, and
/// transiently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_session_fails_one_call_at_most() {
    let schema = support::unique_schema();
    let store = support::store_with(support::config(schema.clone()).max_connections(1)).await;
    let x = stream("terminated");
    store.read_streams(std::slice::from_ref(&x)).await.unwrap();
    assert!(terminate_sessions(&store, &schema).await >= 1);
    if let Err(e) = store.read_streams(std::slice::from_ref(&x)).await {
        assert!(e.is_retryable(), "{e:?}");
    }
    store
        .read_streams(std::slice::from_ref(&x))
        .await
        .expect("the dead session was closed, not lent again");
}

/// A connection idle past `idle_check_after` is checked before it is lent:
/// one killed while idle costs no failed call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_checked_before_reuse() {
    let schema = support::unique_schema();
    let config = support::config(schema.clone())
        .max_connections(1)
        .idle_check_after(Duration::ZERO);
    let store = support::store_with(config).await;
    let x = stream("idle-check");
    store.read_streams(std::slice::from_ref(&x)).await.unwrap();
    assert!(terminate_sessions(&store, &schema).await >= 1);
    store
        .read_streams(std::slice::from_ref(&x))
        .await
        .expect("the dead idle connection was replaced");
}

/// Connections older than `max_lifetime` are closed when they come back,
/// not kept: with a zero lifetime, killing every session costs no failed
/// call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_their_lifetime_are_not_kept() {
    let schema = support::unique_schema();
    let config = support::config(schema.clone())
        .max_connections(1)
        .max_lifetime(Duration::ZERO);
    let store = support::store_with(config).await;
    let x = stream("lifetime");
    store.read_streams(std::slice::from_ref(&x)).await.unwrap();
    terminate_sessions(&store, &schema).await;
    store
        .read_streams(std::slice::from_ref(&x))
        .await
        .expect("no old connection was kept");
}

/// What a run under faults saw.
struct FaultedRun {
    /// Commands that succeeded, and that failed (transiently, out of
    /// retries) while the faults ran.
    ok: usize,
    failed: usize,
    /// Faults caused (connections cut, restarts).
    faults: usize,
    report: eventcore::SubscriptionReport,
}

/// 16 writers moving money with command ids among 8 accounts named
/// `prefix`-n for `run_for`, and a subscription on them, while `fault`
/// runs (it is told through the flag when the writers are done, and
/// returns how many faults it caused). Then checks what must hold: no
/// command hung (30 s each), money rejected never, commands succeed again
/// after the faults, money conserved, versions gap-free, and the
/// subscription, which never stopped, delivered every event.
async fn run_under_faults<F, Fut>(
    store: PostgresEventStore,
    prefix: &str,
    run_for: Duration,
    fault: F,
) -> FaultedRun
where
    F: FnOnce(Arc<std::sync::atomic::AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = usize> + Send + 'static,
{
    use eventcore::{RetryPolicy, SubscriptionConfig, SubscriptionName, handler_fn, subscribe};
    use std::collections::HashSet;
    use std::sync::Mutex;

    let accounts: Vec<eventcore::StreamId> =
        (0..8).map(|i| stream(&format!("{prefix}{i}"))).collect();
    for a in &accounts {
        execute(
            &store,
            Credit {
                account: a.clone(),
                amount: 1_000,
            },
        )
        .await
        .unwrap();
    }

    let seen: Arc<Mutex<HashSet<uuid::Uuid>>> = Arc::default();
    let seen_in = seen.clone();
    let handle = subscribe(
        store.clone(),
        store.clone(),
        SubscriptionName::try_new(format!("{prefix}projection")).unwrap(),
        handler_fn(move |context: &eventcore::EventContext, _: &LedgerEvent| {
            seen_in
                .lock()
                .unwrap()
                .insert(context.recorded().event_id());
            async { Ok(()) }
        }),
        SubscriptionConfig::default()
            .with_filter(LogQuery::from_start(0).with_stream_prefix(prefix))
            .with_poll_interval(Duration::from_millis(20))
            .with_retry(
                RetryPolicy::default()
                    .with_base_delay(Duration::from_millis(5))
                    .with_max_delay(Duration::from_millis(200)),
            ),
    );

    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let faults = tokio::spawn(fault(running.clone()));
    let deadline = tokio::time::Instant::now() + run_for;
    let mut writers = Vec::new();
    for w in 0..16usize {
        let (store, accounts, prefix) = (store.clone(), accounts.clone(), prefix.to_owned());
        writers.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut n) = (0, 0, 0usize);
            while tokio::time::Instant::now() < deadline {
                n += 1;
                let from = (w + n) % accounts.len();
                let pay = Move {
                    from: accounts[from].clone(),
                    to: accounts[(from + 1 + n % 7) % accounts.len()].clone(),
                    amount: 1,
                };
                let id = CommandId::try_new(format!("{prefix}{w}-{n}")).unwrap();
                let options = ExecuteOptions::new().with_command_id(id);
                match tokio::time::timeout(
                    Duration::from_secs(30),
                    execute_with(&store, pay, options),
                )
                .await
                {
                    Ok(Ok(_)) => ok += 1,
                    Ok(Err(e)) => {
                        assert!(
                            !matches!(e, eventcore::ExecuteError::Rejected(_)),
                            "money ran out: {e}"
                        );
                        failed += 1;
                    }
                    Err(_) => panic!("a command hung for 30 s"),
                }
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (0, 0);
    for w in writers {
        let (o, f) = w.await.unwrap();
        ok += o;
        failed += f;
    }
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    let faults = faults.await.unwrap();
    assert!(
        ok > 0,
        "commands succeeded between faults ({failed} failed)"
    );

    // Once the faults stop, commands succeed again.
    execute(
        &store,
        Credit {
            account: accounts[0].clone(),
            amount: 1,
        },
    )
    .await
    .expect("a command after the faults");

    let log = store.read_streams(&accounts).await.unwrap();
    let total: i128 = log
        .events()
        .iter()
        .map(|e| match e.decode::<LedgerEvent>().unwrap() {
            LedgerEvent::Credited { amount, .. } => i128::from(amount),
            LedgerEvent::Debited { amount, .. } => -i128::from(amount),
        })
        .sum();
    assert_eq!(total, 8 * 1_000 + 1, "money is conserved");
    for a in &accounts {
        let versions: Vec<u64> = log
            .events()
            .iter()
            .filter(|e| e.stream_id() == a)
            .map(|e| e.version().get())
            .collect();
        assert_eq!(
            versions,
            (1..=versions.len() as u64).collect::<Vec<_>>(),
            "{a} gap-free"
        );
    }
    let want: HashSet<uuid::Uuid> = log.events().iter().map(|e| e.event_id()).collect();
    let wait = tokio::time::Instant::now() + Duration::from_secs(30);
    while *seen.lock().unwrap() != want {
        assert!(!handle.is_finished(), "the subscription stopped");
        assert!(
            tokio::time::Instant::now() < wait,
            "the subscription delivered {} of {} events",
            seen.lock().unwrap().len(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = handle.stop().await.expect("never stopped by the faults");
    FaultedRun {
        ok,
        failed,
        faults,
        report,
    }
}

/// Connections cut every 300 ms for 3 s, with every chunk of traffic
/// delayed by 1 ms, under 16 concurrent writers and a subscription, all
/// through the proxy: everything [`run_under_faults`] checks holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_connections_stop_nothing_and_lose_nothing() {
    let url = support::database_url().await;
    let proxy = Arc::new(support::proxy::LossyProxy::start(&url).await);
    let store = PostgresEventStore::connect_with(
        &proxy.url(&url),
        support::config(support::unique_schema())
            .max_connections(20)
            .acquire_timeout(Duration::from_secs(5)),
    )
    .await
    .expect("connect through the proxy");
    store.migrate().await.expect("migrate");
    proxy.delay(Duration::from_millis(1));
    let cutter = proxy.clone();
    let run = run_under_faults(
        store,
        "cut-",
        Duration::from_secs(3),
        move |running| async move {
            let mut cuts = 0;
            while running.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(300)).await;
                cuts += cutter.cut_all();
            }
            cuts
        },
    )
    .await;
    assert!(run.faults > 0, "the proxy cut connections");
    assert!(
        run.report.store_retries + run.report.leases_lost > 0,
        "the subscription saw the cuts: {:?}",
        run.report
    );
}

/// `pg_ctl restart -m fast` of a cluster of the test's own, one second into
/// a run of 16 writers and a subscription: every session ends, the server
/// is down for a moment, and everything [`run_under_faults`] checks holds;
/// wake-ups come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_restart_mid_run_stops_nothing_and_loses_nothing() {
    let cluster = Arc::new(
        tokio::task::spawn_blocking(support::cluster::Cluster::start)
            .await
            .unwrap(),
    );
    let store = PostgresEventStore::connect_with(
        &cluster.url(),
        support::config(support::unique_schema())
            .max_connections(20)
            .acquire_timeout(Duration::from_secs(5)),
    )
    .await
    .expect("connect to the test's own cluster");
    store.migrate().await.expect("migrate");
    let restarter = cluster.clone();
    let run = run_under_faults(
        store.clone(),
        "restart-",
        Duration::from_secs(4),
        move |_| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tokio::task::spawn_blocking(move || restarter.restart())
                .await
                .unwrap();
            1
        },
    )
    .await;
    assert_eq!(run.faults, 1);
    assert!(
        run.report.store_retries + run.report.leases_lost > 0,
        "the subscription saw the restart: {:?}",
        run.report
    );
    let wait = tokio::time::Instant::now() + Duration::from_secs(15);
    while !store.wakeups_live() {
        assert!(
            tokio::time::Instant::now() < wait,
            "wake-ups did not come back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "restart run: {} commands ok, {} failed transiently",
        run.ok, run.failed
    );
}

/// The LISTEN task keeps trying when its first connection fails (a server
/// that is down when the first reader waits), and wake-ups start once it
/// gets through; meanwhile `wakeups_live` says they are off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_keeps_trying_until_the_server_answers() {
    let (proxy, store) = store_behind_proxy().await;
    proxy.cut_all();
    proxy.refuse_new(true);
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { store.appended().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!store.wakeups_live(), "nothing can listen while refused");
    proxy.refuse_new(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !store.wakeups_live() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener gave up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("readers are woken when listening starts")
        .unwrap();
}

/// An append stuck behind a lock past the configured `statement_timeout`
/// fails with a typed error naming the cancelled statement, writes
/// nothing, and leaves the store usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_is_a_typed_error_and_writes_nothing() {
    let schema = support::unique_schema();
    let store = support::store_with(support::config(schema.clone())).await;
    let x = stream("timeout");
    let holder = hold_stream_lock(&store, &x).await;
    // Already migrated by `store`: migrating again would wait for the
    // migration lock, which other tests' migrations may hold past 200 ms.
    let impatient = PostgresEventStore::connect_with(
        &support::database_url().await,
        support::config(schema.clone()).statement_timeout(Some(Duration::from_millis(200))),
    )
    .await
    .expect("connect");
    let mut writes = StreamWrites::new();
    writes.expect(x.clone(), StreamVersion::INITIAL).unwrap();
    writes.append(&Note::new(&x, 1)).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), impatient.append(writes))
        .await
        .expect("no hang")
        .expect_err("cancelled by the statement timeout");
    assert!(
        matches!(
            err,
            StoreError::Backend {
                operation: "append",
                ..
            }
        ),
        "{err:?}"
    );
    let source = std::error::Error::source(&err).expect("the sqlx error");
    let code = source.downcast_ref::<sqlx::Error>().and_then(sqlstate);
    assert_eq!(code.as_deref(), Some("57014"), "query_canceled");
    holder.rollback().await.unwrap();
    assert_eq!(
        impatient
            .read_streams(std::slice::from_ref(&x))
            .await
            .unwrap()
            .version(&x),
        Some(StreamVersion::INITIAL),
        "nothing written"
    );
    execute(
        &impatient,
        Credit {
            account: x,
            amount: 1,
        },
    )
    .await
    .expect("usable after the timeout");
}

/// How many sessions the store of `schema` has open (they carry its
/// `application_name`), and how many of them last ran the lease query.
async fn sessions_of(sql: &sqlx::PgPool, schema: &SchemaName) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE query LIKE '%pg_try_advisory_lock%') \
         FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(schema.to_string())
    .fetch_one(sql)
    .await
    .unwrap()
}

/// One budget: under 16 writers, a subscription holding its lease, a
/// second instance waiting for it, the LISTEN session, the NOTIFY sender
/// and the checkpoint saves, the store never has more sessions open on the
/// server than `max_connections`; and a waiting instance that stops closes
/// the session it kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_never_holds_more_connections_than_configured() {
    use eventcore::{SubscriptionConfig, SubscriptionName, handler_fn, subscribe};
    const BUDGET: i64 = 6;

    let schema = support::unique_schema();
    let store = support::store_with(
        support::config(schema.clone())
            .max_connections(BUDGET as u32)
            .acquire_timeout(Duration::from_secs(20)),
    )
    .await;
    let name = SubscriptionName::try_new("budget").unwrap();
    let config = SubscriptionConfig::default()
        .with_filter(LogQuery::from_start(0).with_stream_prefix("budget-"))
        .with_poll_interval(Duration::from_millis(20));
    let delivered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = delivered.clone();
    let active = subscribe(
        store.clone(),
        store.clone(),
        name.clone(),
        handler_fn(move |_: &eventcore::EventContext, _: &LedgerEvent| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async { Ok(()) }
        }),
        config.clone(),
    );
    // Started after the first, so it waits for the lease.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = subscribe(
        store.clone(),
        store.clone(),
        name.clone(),
        handler_fn(|_: &eventcore::EventContext, _: &LedgerEvent| async { Ok(()) }),
        config,
    );

    let sql = support::sql(&store);
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (sql, schema, sampling) = (sql.clone(), schema.clone(), sampling.clone());
        tokio::spawn(async move {
            let (mut most, mut samples) = (0, 0);
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                most = most.max(sessions_of(&sql, &schema).await.0);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (most, samples)
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut writers = Vec::new();
    for w in 0..16 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while tokio::time::Instant::now() < deadline {
                execute(
                    &store,
                    Credit {
                        account: stream(&format!("budget-{}", w % 4)),
                        amount: 1,
                    },
                )
                .await
                .expect("a command within the budget");
                n += 1;
            }
            n
        }));
    }
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    let wait = tokio::time::Instant::now() + Duration::from_secs(20);
    while delivered.load(std::sync::atomic::Ordering::Relaxed) < written {
        assert!(tokio::time::Instant::now() < wait, "events not delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    let (most, samples) = sampler.await.unwrap();
    assert!(samples > 10, "sampled the sessions ({samples} samples)");
    assert!(
        most <= BUDGET,
        "{most} sessions open at once, budget {BUDGET}"
    );
    // The lease, the waiting instance's session, the listener and at
    // least one statement were seen together.
    assert!(most >= 4, "only {most} sessions seen at once");
    assert!(store.wakeups_live(), "the listener fit in the budget");

    assert_eq!(sessions_of(&sql, &schema).await.1, 2, "holder and waiter");
    waiting.stop().await.expect("the waiting instance stops");
    // The server drops a closed session from its view shortly after.
    let wait = tokio::time::Instant::now() + Duration::from_secs(5);
    while sessions_of(&sql, &schema).await.1 != 1 {
        assert!(
            tokio::time::Instant::now() < wait,
            "the waiting instance's session was not closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    active.stop().await.expect("the active instance stops");
}

/// Sessions never take the last connection: with a budget of one, a
/// subscription cannot hold a lease session, and stops at once with an
/// error that says why instead of retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_would_spend_the_last_connection_stops_and_says_why() {
    use eventcore::{SubscriptionConfig, SubscriptionName, handler_fn, subscribe};
    let store =
        support::store_with(support::config(support::unique_schema()).max_connections(1)).await;
    let handle = subscribe(
        store.clone(),
        store.clone(),
        SubscriptionName::try_new("no-room").unwrap(),
        handler_fn(|_: &eventcore::EventContext, _: &LedgerEvent| async { Ok(()) }),
        SubscriptionConfig::default(),
    );
    let wait = tokio::time::Instant::now() + Duration::from_secs(10);
    while !handle.is_finished() {
        assert!(
            tokio::time::Instant::now() < wait,
            "stops instead of retrying"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = handle
        .stop()
        .await
        .expect_err("no connection for the lease");
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    assert!(text.contains("max_connections is 1"), "{text}");
    execute(
        &store,
        Credit {
            account: stream("still-works"),
            amount: 1,
        },
    )
    .await
    .expect("statements still have their connection");
}

/// Migrations and the store's statements are spans: each migration applied
/// is an event in `eventcore.migrate`, each statement an
/// `eventcore.postgres` span with its operation, rows and time.
#[tokio::test]
async fn migrations_and_statements_are_traced() {
    let capture = eventcore_testing::trace::Capture::default();
    let _guard = capture.install();
    let schema = support::unique_schema();
    let store = support::store_with(support::config(schema.clone())).await;
    let migrate = capture.spans("eventcore.migrate");
    assert_eq!(migrate.len(), 1);
    assert!(migrate[0].fields["schema"].contains(schema.as_ref()));
    let applied: Vec<String> = capture
        .events("migration applied")
        .iter()
        .filter(|e| e.parent.as_deref() == Some("eventcore.migrate"))
        .map(|e| e.fields["version"].clone())
        .collect();
    let shipped: Vec<String> = shipped_migrations().iter().map(i64::to_string).collect();
    assert_eq!(applied, shipped);

    let x = stream("traced");
    store.read_streams(std::slice::from_ref(&x)).await.unwrap();
    let reads: Vec<_> = capture
        .spans("eventcore.postgres")
        .into_iter()
        .filter(|s| s.fields["operation"] == "read_streams")
        .collect();
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].fields["rows"], "0");
    assert!(reads[0].fields.contains_key("elapsed_us"));

    // A statement that returns no rows is traced too, with the rows it
    // affected (none here: nothing to prune).
    store
        .prune_commands(std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    let prunes: Vec<_> = capture
        .spans("eventcore.postgres")
        .into_iter()
        .filter(|s| s.fields["operation"] == "prune_commands")
        .collect();
    assert_eq!(prunes.len(), 1);
    assert_eq!(prunes[0].fields["rows"], "0");
    assert!(prunes[0].fields.contains_key("elapsed_us"));
}

/// PostgreSQL out of reach while an exactly-once projection's handler is
/// retrying (300 attempts, waits up to 1 s, as the bank service's read
/// model has): `stop()` returns within its grace instead of waiting out
/// the retries, with the checkpoint as last committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_returns_within_its_grace_while_the_database_is_down() {
    use eventcore::{BoxError, RetryPolicy, SubscriptionConfig, SubscriptionName, subscribe};
    use eventcore_postgres::{ExactlyOnce, ProjectionHandler};

    /// Cuts the database off on its first call, then writes.
    struct CutsOff {
        proxy: Arc<support::proxy::LossyProxy>,
        attempts: Arc<std::sync::atomic::AtomicU32>,
    }

    impl ProjectionHandler<LedgerEvent> for CutsOff {
        async fn handle(
            &mut self,
            tx: &mut sqlx::PgConnection,
            _: &eventcore::EventContext,
            _: &LedgerEvent,
        ) -> Result<(), BoxError> {
            if self
                .attempts
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                == 0
            {
                self.proxy.refuse_new(true);
                self.proxy.cut_all();
            }
            sqlx::query("SELECT 1").execute(&mut *tx).await?;
            Ok(())
        }
    }

    let url = support::database_url().await;
    let proxy = Arc::new(support::proxy::LossyProxy::start(&url).await);
    let store = PostgresEventStore::connect_with(
        &proxy.url(&url),
        support::config(support::unique_schema())
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(1)),
    )
    .await
    .expect("connect through the proxy");
    store.migrate().await.expect("migrate");
    execute(
        &store,
        Credit {
            account: stream("a"),
            amount: 1,
        },
    )
    .await
    .unwrap();
    let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let name = SubscriptionName::try_new("down").unwrap();
    let handler = ExactlyOnce::new(
        store.clone(),
        name.clone(),
        CutsOff {
            proxy: proxy.clone(),
            attempts: attempts.clone(),
        },
    );
    let config = SubscriptionConfig::default()
        .with_poll_interval(Duration::from_millis(10))
        .with_retry(
            RetryPolicy::default()
                .with_max_attempts(std::num::NonZeroU32::new(300).unwrap())
                .with_base_delay(Duration::from_millis(10))
                .with_max_delay(Duration::from_secs(1)),
        );
    let handle = subscribe(store.clone(), store.clone(), name.clone(), handler, config);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while attempts.load(std::sync::atomic::Ordering::SeqCst) < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the handler was never called"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the retries start (each now fails to get a connection, before
    // the handler), with the database cut off; the default grace is 5 s.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!handle.is_finished(), "the subscription gave up");
    let started = std::time::Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(7), handle.stop())
        .await
        .expect("stop waited out the handler's retries")
        .expect("stopped cleanly");
    assert!(started.elapsed() < Duration::from_secs(7));
    assert_eq!(report.handled, 0, "{report:?}");
    proxy.refuse_new(false);
    assert_eq!(
        eventcore::CheckpointStore::load(&store, &name)
            .await
            .unwrap(),
        None,
        "nothing was committed"
    );
}

/// A snapshot for the key `snap-{n}` over one stream.
fn numbered_snapshot(n: u64) -> eventcore::Snapshot {
    let key = eventcore::SnapshotKey::new("writer-test", &[stream(&format!("snap-{n}"))]);
    // At version 0: the stream holds no events, so the append that carries
    // the snapshot finds it there.
    eventcore::Snapshot::new(key, 1, vec![StreamVersion::INITIAL], n.to_string())
}

/// Offers snapshots numbered from `*next` until `done` says the writer
/// got there (each offer waits a little for the writer).
async fn offer_until(
    store: &PostgresEventStore,
    next: &mut u64,
    done: impl Fn(eventcore_postgres::SnapshotStats) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !done(store.snapshot_stats()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the snapshot writer never got there: {:?}",
            store.snapshot_stats()
        );
        // A connection opened on a runtime that has ended fails once,
        // transiently, and is replaced.
        match store.offer_snapshot(numbered_snapshot(*next)).await {
            Ok(()) | Err(eventcore::StoreError::Transient { .. }) => {}
            Err(e) => panic!("an empty append carrying a snapshot: {e}"),
        }
        *next += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Nothing the snapshot writer drops goes uncounted: a batch whose write
/// fails; and a writer whose runtime ended is started again on the next
/// one. (Snapshots reach the writer with an append, which runs on a
/// runtime, so one offered outside any runtime can no longer happen.)
#[test]
fn the_snapshot_writer_counts_what_it_drops_and_outlives_its_runtime() {
    let first = tokio::runtime::Runtime::new().unwrap();
    let store = first.block_on(support::fresh_store());
    let mut next = 1;
    first.block_on(offer_until(&store, &mut next, |s| s.written >= 1));
    drop(first);

    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let written = store.snapshot_stats().written;
        offer_until(&store, &mut next, |s| s.written > written).await;
        let stats = store.snapshot_stats();
        assert_eq!(stats.writer_restarts, 1, "{stats:?}");

        // A write that fails (the table gone for a moment): counted.
        let sql = support::sql(&store);
        sqlx::query("ALTER TABLE eventcore_snapshots RENAME TO eventcore_snapshots_away")
            .execute(&sql)
            .await
            .unwrap();
        offer_until(&store, &mut next, |s| s.dropped_write_failed >= 1).await;
        sqlx::query("ALTER TABLE eventcore_snapshots_away RENAME TO eventcore_snapshots")
            .execute(&sql)
            .await
            .unwrap();
        let written = store.snapshot_stats().written;
        offer_until(&store, &mut next, |s| s.written > written).await;
        let stats = store.snapshot_stats();
        assert_eq!(stats.dropped_queue_full, 0, "{stats:?}");
        let last = store
            .load_snapshot(numbered_snapshot(next - 1).key())
            .await
            .unwrap();
        assert!(last.is_some(), "the writer writes again: {stats:?}");
    });
}

/// The store's advisory locks are its own: an application lock on the key
/// the append used to take for a stream (a bigint), or the same stream
/// locked in another schema, holds up neither appends nor leases, while
/// the stream's lock in the same schema still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_locks_are_in_a_key_space_of_their_own() {
    use sqlx::Connection;
    let schema_a = support::unique_schema();
    let a = support::store_with(support::config(schema_a.clone())).await;
    let b = support::fresh_store().await;
    let sql_a = support::sql(&a);
    // The application's own locks on the keys the old code used: the
    // stream's bigint key, and the old lease key.
    let mut app = sql_a.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('shared-acct', 0))")
        .execute(&mut *app)
        .await
        .unwrap();
    sqlx::query(
        "SELECT pg_advisory_lock(hashtextextended(current_schema() || ':eventcore-subscription:' || 'locks', 0))",
    )
    .execute(&mut *app)
    .await
    .unwrap();
    let credit = |store: PostgresEventStore| async move {
        tokio::time::timeout(
            Duration::from_secs(5),
            execute(
                &store,
                Credit {
                    account: stream("shared-acct"),
                    amount: 1,
                },
            ),
        )
        .await
    };
    credit(a.clone())
        .await
        .expect("an application lock held up the append")
        .unwrap();
    let name = eventcore::SubscriptionName::try_new("locks").unwrap();
    let lease = eventcore::SubscriptionLeases::try_acquire(&a, &name)
        .await
        .unwrap();
    assert!(lease.is_some(), "an application lock held up the lease");
    drop(lease);

    // Schema A's lock on the stream, held in an open transaction.
    let mut holder = sql_a.acquire().await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SELECT eventcore_lock_streams(ARRAY['shared-acct'])")
        .execute(&mut *tx)
        .await
        .unwrap();
    credit(b.clone())
        .await
        .expect("another schema's lock held up the append")
        .unwrap();
    // The same schema waits for it: the lock is real.
    let waiting = tokio::spawn(credit(a.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the stream's lock was not taken");
    tx.commit().await.unwrap();
    waiting
        .await
        .unwrap()
        .expect("the append waited past the lock's release")
        .unwrap();
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *app)
        .await
        .unwrap();
}

/// Waits until the snapshot writer has saved a snapshot under `key`.
async fn saved_snapshot(store: &PostgresEventStore, key: &eventcore::SnapshotKey) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.load_snapshot(key).await.unwrap().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no snapshot saved");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The versions a read from the snapshot under `key` starts after (the
/// snapshot's if the store uses it, else 0); the row must be returned.
async fn started_after(store: &PostgresEventStore, key: &eventcore::SnapshotKey) -> Vec<u64> {
    let answer = store
        .read(eventcore::ReadRequest::from_snapshot(key.clone()))
        .await
        .unwrap();
    assert!(answer.snapshot.is_some(), "the row is returned");
    answer.after.iter().map(|(_, v)| v.get()).collect()
}

/// A snapshot is tied to the events it folded: the row records the id of
/// the event at each of its versions, and is used only while those events
/// are still there. A row restored from another database (other ids) or
/// written by hand (no ids) that claims a balance far above the true one is
/// ignored, so an overdraft is still refused; the row the store saved
/// itself is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_row_that_does_not_match_its_stream_is_ignored() {
    use eventcore::Snapshot;
    let store = support::fresh_store().await;
    let sql = support::sql(&store);
    let (a, key) = holding_three(&store, "tied").await;
    // A snapshot at the stream's true version with a wrong state.
    let rich = "1000000";
    let versions = vec![StreamVersion::new(1)];
    store
        .offer_snapshot(Snapshot::new(key.clone(), 1, versions.clone(), rich))
        .await
        .unwrap();
    saved_snapshot(&store, &key).await;
    assert_eq!(
        started_after(&store, &key).await,
        vec![1],
        "the row the store saved matches its stream"
    );
    let (_, stats) = withdraw_cold(&store, &a, 0).await;
    assert_eq!(stats.snapshots_used, 1, "and a cold process starts from it");

    let cases = [
        (
            "restored from another database",
            "ARRAY[gen_random_uuid()]::uuid[]",
        ),
        ("written by hand", "NULL"),
    ];
    for (what, ids) in cases {
        sqlx::query(&format!(
            "UPDATE eventcore_snapshots SET event_ids = {ids} WHERE state_name = $1"
        ))
        .bind(key.name())
        .execute(&sql)
        .await
        .unwrap();
        assert_eq!(
            started_after(&store, &key).await,
            vec![0],
            "{what}: read from the start"
        );
        // A process without kept folds starts from the store's answer.
        let (done, stats) = withdraw_cold(&store, &a, 4).await;
        let err = done.expect_err("a holds 3 whatever the row says");
        assert!(
            matches!(err, eventcore::ExecuteError::Rejected(_)),
            "{what}: {err:?}"
        );
        assert_eq!(stats.snapshots_used, 0, "{what}");
    }
}
