//! The global log on PostgreSQL: a fence that only appends can hold, the
//! positions appends return, and what the log says when it is held back.

mod support;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use eventcore::{
    EventLog, EventStore, LogQuery, Position, StreamId, StreamVersion, StreamWrites,
    SubscriptionConfig, SubscriptionName, handler_fn, subscribe,
};
use eventcore_postgres::PostgresEventStore;
use eventcore_testing::fixtures::{Note, stream};
use sqlx::{Connection, Executor};
use tokio::sync::Barrier;

/// Appends note `n` to `id` at its `expected` version.
async fn append_note(
    store: &PostgresEventStore,
    id: &StreamId,
    expected: u64,
    n: u64,
) -> eventcore::AppendOutcome {
    let mut writes = StreamWrites::new();
    writes
        .expect(id.clone(), StreamVersion::new(expected))
        .unwrap();
    writes.append(&Note::new(id, n)).unwrap();
    store.append(writes).await.expect("append")
}

/// The whole log as far as a reader sees it now.
async fn read_everything(store: &PostgresEventStore) -> Vec<(Position, StreamId)> {
    let mut seen = Vec::new();
    let mut at = None;
    loop {
        let query = match at {
            Some(p) => LogQuery::after(p, 500),
            None => LogQuery::from_start(500),
        };
        let page = store.read_all(&query).await.expect("read_all");
        let next = page.next();
        let empty = page.is_empty();
        seen.extend(
            page.into_events()
                .into_iter()
                .map(|(p, e)| (p, e.stream_id().clone())),
        );
        if empty || next == at {
            return seen;
        }
        at = next;
    }
}

/// Reads until `count` events show, within `within`; what was seen.
async fn read_until(
    store: &PostgresEventStore,
    count: usize,
    within: Duration,
) -> Vec<(Position, StreamId)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let seen = read_everything(store).await;
        if seen.len() >= count || tokio::time::Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Eight appends, each committed, then read: every one shows within the
/// wake-up latency (well under this 2 s) while `holder` keeps its
/// transaction, with its transaction id, open.
async fn eight_appends_show_while_held(store: &PostgresEventStore, what: &str) {
    let mut positions = Vec::new();
    for i in 0..8 {
        let outcome = append_note(store, &stream(&format!("held-{i}")), 0, i).await;
        positions.push(outcome.position.expect("an append returns its position"));
    }
    let seen = read_until(store, 8, Duration::from_secs(2)).await;
    assert_eq!(
        seen.len(),
        8,
        "{what} must not hold readers back: {} of 8 committed events read",
        seen.len()
    );
    let read: Vec<Position> = seen.iter().map(|(p, _)| *p).collect();
    assert_eq!(read, positions, "each at the position its append returned");
    let page = store
        .read_all(&LogQuery::after(*positions.last().unwrap(), 10))
        .await
        .unwrap();
    assert!(
        !page.held_back(),
        "the end of the log is not reported as held back"
    );
}

/// A session in another database that holds a transaction id (`BEGIN;
/// SELECT pg_current_xact_id()`), as in the report that made the old fence
/// (the snapshot's xmin, cluster-wide) return nothing for 40 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_in_another_database_does_not_hold_readers_back() {
    let store = support::fresh_store().await;
    let url = support::database_url().await;
    let other = format!("ec_idle_{}", fastrand::u32(..));
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    admin
        .execute(format!("CREATE DATABASE {other}").as_str())
        .await
        .unwrap();
    let other_url = match url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{other}"),
        None => panic!("DATABASE_URL names no database: {url}"),
    };
    let mut idle = sqlx::PgConnection::connect(&other_url).await.unwrap();
    idle.execute("BEGIN").await.unwrap();
    idle.execute("SELECT pg_current_xact_id()").await.unwrap();

    eight_appends_show_while_held(&store, "a transaction in another database").await;

    idle.execute("ROLLBACK").await.unwrap();
    idle.close().await.unwrap();
    admin
        .execute(format!("DROP DATABASE {other}").as_str())
        .await
        .unwrap();
}

/// In this database: a transaction that wrote a row of its own table, one
/// that only read events, and one that ran `migrate()`'s lock: none
/// appends, so none holds the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_in_this_database_that_appends_nothing_does_not_hold_readers_back() {
    let store = support::fresh_store().await;
    let sql = support::sql(&store);
    sqlx::query("CREATE TABLE unrelated (n int)")
        .execute(&sql)
        .await
        .unwrap();
    let mut writer = sql.acquire().await.unwrap();
    writer.execute("BEGIN").await.unwrap();
    writer
        .execute("INSERT INTO unrelated VALUES (1)")
        .await
        .unwrap();
    let mut reader = sql.acquire().await.unwrap();
    reader
        .execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    reader
        .execute("SELECT count(*), pg_current_xact_id() FROM eventcore_events")
        .await
        .unwrap();

    eight_appends_show_while_held(&store, "a transaction that appends nothing").await;

    writer.execute("ROLLBACK").await.unwrap();
    reader.execute("ROLLBACK").await.unwrap();
}

/// An append left open holds back what commits after it, and the log says
/// so: the page is held back, and `log_status` names the session, since
/// when, and how long the first waiting event has waited. Rolled back, it
/// leaves neither a stall nor a gap a reader waits on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_append_holds_back_later_commits_says_so_and_a_rollback_frees_them() {
    let store = support::fresh_store().await;
    let sql = support::sql(&store);
    let (late, early) = (stream("late"), stream("early"));
    let mut open = sql.begin().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *open)
        .await
        .unwrap();
    append_in(&mut open, &late).await;
    let early_at = append_note(&store, &early, 0, 2)
        .await
        .position
        .expect("position");

    let page = store.read_all(&LogQuery::from_start(10)).await.unwrap();
    assert!(page.is_empty(), "the open append's successor is held back");
    assert!(page.held_back(), "and the page says it is held back");
    tokio::time::sleep(Duration::from_millis(30)).await;
    let status = store.log_status().await.expect("log status");
    assert_eq!(
        status.holders.len(),
        1,
        "one append holds the log: {status:?}"
    );
    let holder = &status.holders[0];
    assert_eq!(holder.pid, pid, "the holding session");
    assert!(
        holder.commit < early_at.commit(),
        "it began before the event waiting"
    );
    assert!(
        holder
            .transaction_started
            .is_some_and(|t| t.elapsed().unwrap_or_default() >= Duration::from_millis(30)),
        "since when: {holder:?}"
    );
    assert!(
        status
            .lag
            .is_some_and(|lag| lag >= Duration::from_millis(30)),
        "how long the first waiting event has waited: {status:?}"
    );

    open.rollback().await.unwrap();
    let seen = read_until(&store, 1, Duration::from_secs(2)).await;
    assert_eq!(
        seen,
        vec![(early_at, early.clone())],
        "once rolled back, the later commit shows at once"
    );
    let status = store.log_status().await.unwrap();
    assert!(
        status.holders.is_empty() && status.lag.is_none(),
        "{status:?}"
    );
    // Positions are not dense: the rolled-back append's sequence numbers
    // are a hole no reader waits for. What commits next follows.
    let next = append_note(&store, &late, 0, 3).await.position.unwrap();
    assert!(next > early_at);
    let seen = read_until(&store, 2, Duration::from_secs(2)).await;
    assert_eq!(seen.last(), Some(&(next, late)));
}

/// Note 1 appended to the empty stream `id` with the store's own append
/// statement, inside `tx`.
async fn append_in(tx: &mut sqlx::PgConnection, id: &StreamId) {
    let row = support::append_first_note(tx, id).await.unwrap();
    let conflict: Option<String> = sqlx::Row::get(&row, "conflict_stream");
    assert!(
        conflict.is_none(),
        "the append succeeds inside its transaction"
    );
}

/// The fence sees appends by the stream locks they take before their
/// transaction has an id; an append after another write of its
/// transaction could slip under it, so it is refused, and nothing is
/// written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_after_another_write_of_its_transaction_is_refused() {
    let store = support::fresh_store().await;
    let sql = support::sql(&store);
    sqlx::query("CREATE TABLE mine (n int)")
        .execute(&sql)
        .await
        .unwrap();
    let mut tx = sql.begin().await.unwrap();
    sqlx::query("INSERT INTO mine VALUES (1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let id = stream("after-a-write");
    let err = support::append_first_note(&mut tx, &id)
        .await
        .expect_err("refused");
    let code = err
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("EC002"), "{err}");
    drop(tx);
    assert!(read_everything(&store).await.is_empty(), "nothing written");
}

/// Sixteen writers released together; a trigger makes one append in ten
/// sleep 5-35 ms after inserting its events (it commits late, after many
/// appends that began after it). A subscription follows: every event once,
/// in one order that agrees with each stream's, and nothing read past an
/// event that committed later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_commits_under_sixteen_writers_are_delivered_once_in_order() {
    const WRITERS: u64 = 16;
    const APPENDS: u64 = 25;
    let store = support::fresh_store().await;
    let sql = support::sql(&store);
    sqlx::raw_sql(
        "CREATE FUNCTION delay_some() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF random() < 0.1 THEN PERFORM pg_sleep(0.005 + random() * 0.03); END IF;
             RETURN NULL;
         END $$;
         CREATE TRIGGER delay_some AFTER INSERT ON eventcore_events
             FOR EACH STATEMENT EXECUTE FUNCTION delay_some();",
    )
    .execute(&sql)
    .await
    .unwrap();

    let seen: Arc<Mutex<Vec<(Position, String, u64)>>> = Arc::default();
    let handle = {
        let seen = seen.clone();
        subscribe(
            store.clone(),
            store.clone(),
            SubscriptionName::try_new("late-commits").unwrap(),
            handler_fn(move |ctx: &eventcore::EventContext, note: &Note| {
                seen.lock().unwrap().push((
                    ctx.position(),
                    ctx.recorded().stream_id().to_string(),
                    ctx.recorded().version().get(),
                ));
                let _ = note;
                async { Ok(()) }
            }),
            SubscriptionConfig::default().with_poll_interval(Duration::from_millis(20)),
        )
    };
    let barrier = Arc::new(Barrier::new(WRITERS as usize));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                let id = stream(&format!("w-{w}"));
                barrier.wait().await;
                for i in 0..APPENDS {
                    append_note(&store, &id, i, w * APPENDS + i).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let total = (WRITERS * APPENDS) as usize;
    let position = read_until(&store, total, Duration::from_secs(10))
        .await
        .last()
        .map(|(p, _)| *p)
        .expect("events");
    handle
        .wait_for(position, Duration::from_secs(10))
        .await
        .expect("the subscription gets to the end");
    handle.stop().await.expect("clean stop");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        total,
        "every event once, none skipped, none twice"
    );
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "delivered in one ascending order"
    );
    let mut versions: HashMap<String, u64> = HashMap::new();
    for (_, stream, version) in &seen {
        let last = versions.entry(stream.clone()).or_default();
        assert_eq!(*version, *last + 1, "{stream}: each stream's order kept");
        *last = *version;
    }
    assert_eq!(read_everything(&store).await.len(), total);
}

/// Appends `n` notes, one append each, to streams `prefix-0..3`.
async fn write_notes(store: &PostgresEventStore, prefix: &str, n: u64) -> Vec<Position> {
    let mut versions = [0u64; 3];
    let mut positions = Vec::new();
    for i in 0..n {
        let s = (i % 3) as usize;
        let outcome = append_note(store, &stream(&format!("{prefix}-{s}")), versions[s], i).await;
        versions[s] += 1;
        positions.push(outcome.position.expect("position"));
    }
    positions
}

/// Runs subscription `name` until it has handled `expect` notes (and no
/// more arrive for a moment), then stops it (saving its checkpoint); the
/// notes it handled.
async fn run_subscription(store: &PostgresEventStore, name: &str, expect: usize) -> Vec<u64> {
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let handle = {
        let seen = seen.clone();
        subscribe(
            store.clone(),
            store.clone(),
            SubscriptionName::try_new(name).unwrap(),
            handler_fn(move |_, note: &Note| {
                seen.lock().unwrap().push(note.n);
                async { Ok(()) }
            }),
            SubscriptionConfig::default().with_poll_interval(Duration::from_millis(10)),
        )
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while seen.lock().unwrap().len() < expect && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    handle.stop().await.expect("clean stop");
    seen.lock().unwrap().clone()
}

async fn current_transaction_id(store: &PostgresEventStore) -> u64 {
    let id: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(&support::sql(store))
        .await
        .unwrap();
    id.parse().unwrap()
}

/// A schema dumped with `pg_dump` and restored onto a new cluster, whose
/// transaction ids are far below the commit keys stored: the restored
/// events keep their positions, and what is appended there comes after
/// them, so a subscription resumes from its restored checkpoint and gets
/// exactly the new events. (With transaction ids as commit keys unshifted,
/// the new events would sort before the old and the fence would hide the
/// old ones.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_and_checkpoints_survive_a_dump_restored_onto_another_cluster() {
    let schema = support::unique_schema();
    let source = support::store_with(support::config(schema.clone())).await;
    // The source's ids well above those of a fresh cluster.
    let sql = support::sql(&source);
    while current_transaction_id(&source).await < 20_000 {
        sqlx::raw_sql("SELECT pg_current_xact_id()")
            .execute(&sql)
            .await
            .unwrap();
    }
    let before = write_notes(&source, "dumped", 30).await;
    assert_eq!(run_subscription(&source, "restored", 30).await.len(), 30);
    let before_log = read_everything(&source).await;

    let target = support::cluster::Cluster::start();
    let dump = std::env::temp_dir().join(format!("eventcore-dump-{}.sql", fastrand::u64(..)));
    let url = support::database_url().await;
    let status = target
        .client("pg_dump")
        .args([
            "--no-owner",
            "--no-privileges",
            "--schema",
            schema.as_ref(),
            "-f",
        ])
        .arg(&dump)
        .arg(&url)
        .status()
        .expect("pg_dump");
    assert!(status.success(), "pg_dump");
    let status = target
        .client("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-d", &target.url(), "-f"])
        .arg(&dump)
        .status()
        .expect("psql");
    assert!(status.success(), "restore");
    let _ = std::fs::remove_file(&dump);

    let restored = PostgresEventStore::connect_with(&target.url(), support::config(schema.clone()))
        .await
        .expect("connect to the new cluster");
    restored.migrate().await.expect("migrate");
    assert!(
        current_transaction_id(&restored).await < before[0].commit(),
        "the new cluster's ids are below the stored keys: the case under test"
    );
    assert_eq!(
        read_everything(&restored).await,
        before_log,
        "every restored event at its position"
    );
    let after = write_notes(&restored, "after", 6).await;
    assert!(
        after[0] > *before.last().unwrap(),
        "new events come after the restored ones: {:?} vs {:?}",
        after[0],
        before.last()
    );
    assert_eq!(
        run_subscription(&restored, "restored", 6).await,
        (0..6).collect::<Vec<_>>(),
        "the subscription resumes from its restored checkpoint with exactly the new events"
    );
    let log = read_everything(&restored).await;
    assert_eq!(log.len(), 36);
    assert!(log.windows(2).all(|w| w[0].0 < w[1].0));
}

/// A failover: the cluster copied while it runs (`pg_basebackup`), the old
/// primary stopped, the copy started as the primary. Positions and the
/// checkpoint carry over; appends go on after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_and_checkpoints_survive_a_failover_to_a_copy() {
    let primary = support::cluster::Cluster::start();
    let schema = support::unique_schema();
    let store = PostgresEventStore::connect_with(&primary.url(), support::config(schema.clone()))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let before = write_notes(&store, "primary", 20).await;
    assert_eq!(run_subscription(&store, "failover", 20).await.len(), 20);
    let before_log = read_everything(&store).await;

    let promoted = primary.base_backup();
    drop(store);
    drop(primary);
    let store = PostgresEventStore::connect_with(&promoted.url(), support::config(schema))
        .await
        .expect("connect to the promoted copy");
    store.migrate().await.expect("migrate");
    assert_eq!(read_everything(&store).await, before_log);
    let after = write_notes(&store, "promoted", 5).await;
    assert!(after[0] > *before.last().unwrap());
    assert_eq!(
        run_subscription(&store, "failover", 5).await,
        (0..5).collect::<Vec<_>>()
    );
}
