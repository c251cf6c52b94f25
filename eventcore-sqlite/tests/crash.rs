//! A writer killed with SIGKILL in the middle of its work: the file opens
//! again, nothing partial is stored, the log is whole, and the lease the
//! killed process held is free at once.
//!
//! The writer is this test run again as a child process (with
//! `EVENTCORE_SQLITE_CHILD` naming the file), which appends three-stream
//! writes and holds a subscription's lease until it is killed.

mod support;

use std::{process::Command, time::Duration};

use eventcore::{
    EventLog, EventStore, EventStoreExt, LogQuery, StreamVersion, StreamWrites, SubscriptionLeases,
    SubscriptionName,
};
use eventcore_sqlite::{SqliteConfig, SqliteEventStore};
use eventcore_testing::fixtures::{LedgerEvent, stream};

const CHILD: &str = "EVENTCORE_SQLITE_CHILD";

fn lease_name() -> SubscriptionName {
    SubscriptionName::try_new("crash-test").unwrap()
}

/// The child's work: takes the lease, then appends a credit to each of
/// three streams per write, forever.
async fn write_until_killed(path: &str) {
    let store = SqliteEventStore::open(&path, SqliteConfig::default())
        .await
        .expect("open");
    let _lease = store
        .try_acquire(&lease_name())
        .await
        .expect("lease")
        .expect("free");
    let streams = [stream("crash-a"), stream("crash-b"), stream("crash-c")];
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let (store, streams) = (store.clone(), streams.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let read = store.read_streams(&streams).await.expect("read");
                let mut writes = StreamWrites::new();
                for s in &streams {
                    writes
                        .expect(s.clone(), read.version(s).unwrap_or_default())
                        .expect("register");
                    writes
                        .append(&LedgerEvent::Credited {
                            account: s.clone(),
                            amount: t + 1,
                            from: None,
                        })
                        .expect("event");
                }
                // Conflicts between the four tasks are expected.
                let _ = store.append(writes).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_mid_commit_leaves_a_whole_log_and_a_free_lease() {
    if let Ok(path) = std::env::var(CHILD) {
        return write_until_killed(&path).await;
    }
    let path = support::fresh_path();
    let mut child = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "a_writer_killed_mid_commit_leaves_a_whole_log_and_a_free_lease",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, &path)
        .spawn()
        .expect("start the child writer");

    // Wait until the child has committed a good number of writes.
    let store = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(store) = SqliteEventStore::open(&path, SqliteConfig::default()).await
            && let Ok(page) = store.read_all(&LogQuery::from_start(1_000)).await
            && page.len() >= 300
        {
            break store;
        }
        assert!(
            child.try_wait().expect("child").is_none(),
            "the child stopped on its own"
        );
    };
    drop(store);
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");

    let store = SqliteEventStore::open(&path, SqliteConfig::default())
        .await
        .expect("the file opens again");
    let integrity: String = rusqlite::Connection::open(&path)
        .expect("open")
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity check");
    assert_eq!(integrity, "ok");

    let streams = [stream("crash-a"), stream("crash-b"), stream("crash-c")];
    let read = store.read_streams(&streams).await.expect("read");
    // Every write put one event on each stream, atomically.
    let versions: Vec<StreamVersion> = streams
        .iter()
        .map(|s| read.version(s).unwrap_or_default())
        .collect();
    assert!(versions[0].get() > 0);
    assert!(
        versions.iter().all(|v| *v == versions[0]),
        "a partial write: {versions:?}"
    );
    for s in &streams {
        let numbers: Vec<u64> = read.events_of(s).map(|e| e.version().get()).collect();
        assert_eq!(numbers, (1..=versions[0].get()).collect::<Vec<_>>(), "{s}");
    }
    let mut all = Vec::new();
    let mut query = LogQuery::from_start(500);
    loop {
        let page = store.read_all(&query).await.expect("the log");
        if page.is_empty() {
            break;
        }
        let next = page.next();
        all.extend(page.into_events().into_iter().map(|(p, _)| p.sequence()));
        match next {
            Some(at) => query = LogQuery::after(at, 500),
            None => break,
        }
    }
    assert_eq!(
        all,
        (1..=3 * versions[0].get()).collect::<Vec<_>>(),
        "the log is whole"
    );

    // The killed process's lease is free at once, with a newer token.
    let lease = store
        .try_acquire(&lease_name())
        .await
        .expect("lease")
        .expect("the dead holder's lease is free");
    assert_eq!(store.token(&lease).get(), 2);
}
