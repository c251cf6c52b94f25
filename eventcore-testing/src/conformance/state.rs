//! Scenarios for tail reads, kept states and snapshots.

use std::time::Duration;

use eventcore::{
    EventStore, EventStoreExt, ExecuteError, Executor, Fold, ReadRequest, RetryPolicy, Snapshot,
    SnapshotKey, StreamId, StreamVersion, StreamWrites, execute_with,
};

use crate::fixtures::{Balance, Balances, Credit, LedgerEvent, Move, Note, Withdraw, stream};

async fn notes<S: EventStore>(store: &S, id: &StreamId, count: u64) {
    let mut writes = StreamWrites::new();
    writes
        .expect(id.clone(), StreamVersion::INITIAL)
        .expect("register");
    for n in 1..=count {
        writes.append(&Note::new(id, n)).expect("note");
    }
    store.append(writes).await.expect("append notes");
}

/// Tail reads return every stream's current version and only the events
/// after what the caller holds: from 0 (everything), from the middle, from
/// the end (nothing), for several streams at different versions in one
/// call, in global order.
pub async fn tail_reads_from_start_middle_and_end<S: EventStore + Clone + 'static>(store: &S) {
    let (a, b, c, d) = (
        stream("tail-a"),
        stream("tail-b"),
        stream("tail-c"),
        stream("tail-none"),
    );
    notes(store, &a, 5).await;
    notes(store, &b, 3).await;
    notes(store, &c, 4).await;
    let held = [
        (a.clone(), StreamVersion::INITIAL),
        (b.clone(), StreamVersion::new(1)),
        (c.clone(), StreamVersion::new(4)),
        (d.clone(), StreamVersion::INITIAL),
    ];
    let read = store.read_tails(&held).await.expect("tail read");
    let current: Vec<u64> = [&a, &b, &c, &d]
        .iter()
        .map(|id| read.version(id).expect("every stream has a version").get())
        .collect();
    assert_eq!(
        current,
        vec![5, 3, 4, 0],
        "current versions of every stream"
    );
    let got: Vec<(String, u64)> = read
        .events()
        .iter()
        .map(|e| (e.stream_id().to_string(), e.version().get()))
        .collect();
    let want: Vec<(String, u64)> = (1..=5)
        .map(|v| ("tail-a".to_owned(), v))
        .chain((2..=3).map(|v| ("tail-b".to_owned(), v)))
        .collect();
    assert_eq!(
        got, want,
        "only events after the held versions, in global order"
    );
    let sequences: Vec<u64> = read.events().iter().map(|e| e.global_sequence()).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "global order");
    let first = read.events()[5].decode::<Note>().expect("decode");
    assert_eq!(first.n, 2, "the tail starts right after the held version");
}

/// A caller holding more than a stream has (a state from another database,
/// a restored backup) gets the stream's real, lower version and no events.
pub async fn tail_read_beyond_the_end_reports_the_shorter_stream<
    S: EventStore + Clone + 'static,
>(
    store: &S,
) {
    let a = stream("short");
    notes(store, &a, 2).await;
    let read = store
        .read_tails(&[(a.clone(), StreamVersion::new(10))])
        .await
        .expect("tail read");
    assert_eq!(read.version(&a), Some(StreamVersion::new(2)));
    assert!(read.events().is_empty());
}

async fn credit<S: EventStore>(store: &S, account: &StreamId, amount: u64) {
    execute_with(
        store,
        Credit {
            account: account.clone(),
            amount,
        },
        &RetryPolicy::default(),
    )
    .await
    .expect("credit");
}

async fn move_money<S: EventStore>(
    store: &S,
    from: &StreamId,
    to: &StreamId,
    amount: u64,
) -> Result<eventcore::ExecutionResult, ExecuteError> {
    execute_with(
        store,
        Move {
            from: from.clone(),
            to: to.clone(),
            amount,
        },
        &RetryPolicy::default(),
    )
    .await
}

async fn withdraw<S: EventStore>(
    store: &S,
    account: &StreamId,
    amount: u64,
) -> Result<eventcore::ExecutionResult, ExecuteError> {
    execute_with(
        store,
        Withdraw {
            account: account.clone(),
            amount,
        },
        &RetryPolicy::default(),
    )
    .await
}

/// Balances folded from the whole streams, with no cache involved.
async fn balances<S: EventStore>(store: &S, ids: &[StreamId]) -> Vec<i128> {
    let read = store.read_streams(ids).await.expect("read");
    let mut folded = Balances::default();
    for e in read.events() {
        folded.apply(&e.decode::<LedgerEvent>().expect("decode"));
    }
    ids.iter().map(|id| folded.of(id)).collect()
}

/// An append that bypasses `execute`, as another process would.
async fn write_behind_the_cache<S: EventStore>(store: &S, event: LedgerEvent) {
    let id = eventcore::Event::stream_id(&event).clone();
    let read = store
        .read_streams(std::slice::from_ref(&id))
        .await
        .expect("read");
    let mut writes = StreamWrites::new();
    writes
        .expect(id.clone(), read.version(&id).unwrap_or_default())
        .expect("register");
    writes.append(&event).expect("event");
    store.append(writes).await.expect("append");
}

/// A folded command whose kept folds were made stale by another writer
/// decides on the real state: a move the stale state allows but the real
/// one does not is refused, and one the real state allows succeeds.
pub async fn kept_state_sees_writes_made_around_it<S: EventStore + Clone + 'static>(store: &S) {
    let (a, b) = (stream("kept-a"), stream("kept-b"));
    credit(store, &a, 10).await;
    move_money(store, &a, &b, 1).await.expect("first move");
    // Another writer drains `a`; the kept state still says 9.
    write_behind_the_cache(
        store,
        LedgerEvent::Debited {
            account: a.clone(),
            amount: 9,
        },
    )
    .await;
    let err = move_money(store, &a, &b, 5)
        .await
        .expect_err("a holds 0 now");
    assert!(matches!(err, ExecuteError::Rejected(_)), "{err:?}");
    // Another writer refills it; a move is decided on the new balance.
    write_behind_the_cache(
        store,
        LedgerEvent::Credited {
            account: a.clone(),
            amount: 7,
            from: None,
        },
    )
    .await;
    move_money(store, &a, &b, 7).await.expect("a holds 7 again");
    assert_eq!(balances(store, &[a, b]).await, vec![0, 8]);
}

/// A refusal decided on a kept state is confirmed against the store before
/// it is returned: money that arrived through another writer counts.
pub async fn refusal_on_a_kept_state_is_confirmed_first<S: EventStore + Clone + 'static>(
    store: &S,
) {
    let (a, b) = (stream("confirm-a"), stream("confirm-b"));
    credit(store, &a, 1).await;
    move_money(store, &a, &b, 1).await.expect("move");
    write_behind_the_cache(
        store,
        LedgerEvent::Credited {
            account: a.clone(),
            amount: 50,
            from: None,
        },
    )
    .await;
    // The kept state says a holds 0: the refusal must not stand.
    let done = move_money(store, &a, &b, 50)
        .await
        .expect("the real balance is 50");
    assert_eq!(done.events_written, 2);
    assert_eq!(balances(store, &[a, b]).await, vec![0, 51]);
}

/// How many events a fold takes before it is snapshotted, from
/// the cache of the store's default executor. A store in the snapshot
/// scenarios must have snapshots on: if not, this fails, naming what is
/// missing.
fn snapshot_every<S: EventStore>(store: &S) -> std::num::NonZeroU64 {
    let Some(every) = Executor::new(store).cache().config().snapshot_every() else {
        panic!(
            "the snapshot scenarios need snapshots: the executor's \
             CacheConfig::snapshot_every is None"
        );
    };
    every
}

/// Has the store keep `snapshot`, whatever it holds (an append of no
/// events that carries it, expecting its streams' current versions), and
/// waits until the store returns it.
async fn plant<S: EventStore>(store: &S, snapshot: Snapshot) {
    snapshot_every(store);
    let key = snapshot.key().clone();
    let now = store.read_streams(key.streams()).await.expect("read");
    let mut writes = StreamWrites::new();
    for (stream, version) in now.versions() {
        writes.expect(stream.clone(), *version).expect("register");
    }
    store
        .append(writes.with_snapshot(snapshot.clone()))
        .await
        .expect("an empty write carrying a snapshot");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if store.load_snapshot(&key).await.expect("load snapshot") == Some(snapshot.clone()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a snapshot carried by an append was not kept within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn forget_kept_states<S: EventStore>(store: &S) {
    Executor::new(store).cache().clear();
}

/// After enough events a fold is snapshotted; with the kept folds gone (a
/// restart), the next one-fold command starts from the snapshot, reads
/// only the events after it, and decides as a full fold would.
pub async fn snapshot_is_saved_and_used_after_a_restart<S: EventStore + Clone + 'static>(
    store: &S,
) {
    let a = stream("snap-a");
    let every = snapshot_every(store);
    for _ in 0..every.get() {
        credit(store, &a, 1).await;
    }
    withdraw(store, &a, 1).await.expect("withdraw");
    let key = SnapshotKey::of_fold(<Balance as Fold>::NAME, &a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let snapshot = loop {
        if let Some(s) = store.load_snapshot(&key).await.expect("load") {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot after {} events",
            every.get() + 1
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(snapshot.versions(), &[StreamVersion::new(every.get() + 1)]);
    assert_eq!(snapshot.schema_version(), <Balance as Fold>::SCHEMA_VERSION);
    credit(store, &a, 5).await;
    // The store starts after the snapshot it keeps, with only the events
    // after it.
    let answer = store
        .read(ReadRequest::from_snapshot(key.clone()))
        .await
        .expect("read from the snapshot");
    assert_eq!(
        answer.after,
        vec![(a.clone(), StreamVersion::new(every.get() + 1))],
        "the read starts after the snapshot"
    );
    let versions: Vec<u64> = answer
        .reads
        .events()
        .iter()
        .map(|e| e.version().get())
        .collect();
    assert_eq!(
        versions,
        vec![every.get() + 2],
        "only the events after the snapshot are returned"
    );
    forget_kept_states(store);
    let used_before = Executor::new(store).cache().stats().snapshots_used;
    let err = withdraw(store, &a, every.get() + 5)
        .await
        .expect_err("a holds every - 1 + 5");
    assert!(matches!(err, ExecuteError::Rejected(_)));
    let used = Executor::new(store).cache().stats().snapshots_used;
    assert_eq!(
        used,
        used_before + 1,
        "the command started from the snapshot"
    );
    withdraw(store, &a, every.get() + 4)
        .await
        .expect("exactly the balance");
    assert_eq!(balances(store, &[a]).await, vec![0]);
}

/// Snapshots that cannot be trusted are ignored and the fold is made from
/// the events: one of another schema version, one whose state does not
/// deserialise, one ahead of its stream (a restored backup), one with more
/// versions than streams. Each claims a balance far above the real one; a
/// withdrawal of more than the real balance must still be refused.
pub async fn unusable_snapshots_are_ignored<S: EventStore + Clone + 'static>(store: &S) {
    let a = stream("bad-snap-a");
    credit(store, &a, 3).await;
    let key = SnapshotKey::of_fold(<Balance as Fold>::NAME, &a);
    let rich = "1000000";
    let bad = [
        ("stale schema version", 99, vec![1], rich),
        ("corrupt state", 1, vec![1], "{not json"),
        ("state of the wrong shape", 1, vec![1], r#"[1,2,3]"#),
        ("ahead of the stream", 1, vec![500], rich),
        ("too many versions", 1, vec![1, 0], rich),
    ];
    for (what, schema, versions, state) in bad {
        let versions = versions.into_iter().map(StreamVersion::new).collect();
        plant(store, Snapshot::new(key.clone(), schema, versions, state)).await;
        forget_kept_states(store);
        let err = withdraw(store, &a, 4)
            .await
            .expect_err("a holds 3 whatever the snapshot says");
        assert!(matches!(err, ExecuteError::Rejected(_)), "{what}: {err:?}");
    }
    forget_kept_states(store);
    withdraw(store, &a, 3).await.expect("a holds 3");
    assert_eq!(balances(store, &[a]).await, vec![0]);
}
