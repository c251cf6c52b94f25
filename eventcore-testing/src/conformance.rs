//! Scenarios every [`EventStore`] must pass.
//!
//! Each scenario takes a fresh, empty store, panics with a message naming
//! the broken guarantee, and returns when the store behaves. Run them all
//! with [`conformance_tests!`](crate::conformance_tests), or by capability:
//! [`store_conformance_tests!`](crate::store_conformance_tests) (every
//! store), [`execute_conformance_tests!`](crate::execute_conformance_tests),
//! [`snapshot_conformance_tests!`](crate::snapshot_conformance_tests),
//! [`command_id_conformance_tests!`](crate::command_id_conformance_tests),
//! [`log_conformance_tests!`](crate::log_conformance_tests) and
//! [`subscription_conformance_tests!`](crate::subscription_conformance_tests).

use std::sync::Arc;

use eventcore::{
    EventLog, EventStore, EventStoreExt, ExecuteError, LogQuery, Position, RetryPolicy, StoreError,
    StreamId, StreamVersion, StreamWrites, execute_with,
};
use tokio::sync::Barrier;

use crate::fixtures::{Credit, LedgerEvent, Move, Note, stream};

mod commands;
mod discovery;
mod metadata;
mod positions;
mod schema;
mod state;
mod values;
pub use commands::{
    a_command_renamed_and_moved_keeps_its_command_ids,
    command_id_seen_twice_returns_the_first_outcome,
    concurrent_executions_of_one_command_id_apply_once, pruned_command_ids_count_as_new,
    rejected_command_records_nothing, repeat_after_a_lost_reply_finds_the_record_before_deciding,
    reused_command_id_is_refused,
};
pub use discovery::{
    a_discovered_stream_that_moves_conflicts_the_whole_write,
    discovered_streams_are_read_and_written_atomically, discovery_rounds_are_bounded,
};
pub use metadata::{
    execute_gives_a_command_one_correlation_id, follow_up_commands_carry_the_trigger_s_ids,
    metadata_round_trips_exactly, unstorable_metadata_is_refused,
};
pub use positions::{
    a_subscription_is_waited_on_until_it_passes_a_position,
    appends_return_their_last_event_s_position,
};
pub use schema::{
    commands_fold_upcast_events, global_log_events_are_upcast, old_events_are_upcast_when_decoded,
    schema_versions_round_trip, subscriptions_read_upcast_events,
    unreadable_schema_versions_are_typed_errors,
};
pub use state::{
    kept_state_sees_writes_made_around_it, refusal_on_a_kept_state_is_confirmed_first,
    snapshot_is_saved_and_used_after_a_restart,
    tail_read_beyond_the_end_reports_the_shorter_stream, tail_reads_from_start_middle_and_end,
    unusable_snapshots_are_ignored,
};
pub use values::{floats_round_trip_bit_exactly, non_finite_floats_are_refused};

/// The limits a store under test was configured with, for the scenarios
/// that probe them.
///
/// ```
/// use eventcore_testing::conformance::Limits;
/// let limits = Limits::default().with_max_payload_bytes(64 * 1024);
/// assert_eq!(limits.max_payload_bytes(), 64 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    max_payload_bytes: usize,
}

impl Default for Limits {
    /// 1 MiB per event, both built-in stores' default.
    fn default() -> Self {
        Limits {
            max_payload_bytes: 1024 * 1024,
        }
    }
}

impl Limits {
    /// Sets the largest serialised event the store accepts.
    pub fn with_max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// The largest serialised event the store accepts.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }
}

/// Calls `$callback!` with the names of the scenarios of one capability,
/// so each list is written once. Groups: `store` (reads and appends),
/// `limits` (scenarios that take [`Limits`]), `execute` (the execute loop:
/// retries, refusals, kept states, discovery), `snapshots`, `command_ids`,
/// `log` ([`EventLog`](eventcore::EventLog)) and `subscriptions`.
#[doc(hidden)]
#[macro_export]
macro_rules! __scenarios {
    (store, $callback:ident ! ($($args:tt)*)) => {
        $crate::$callback!($($args)*;
            reading_missing_streams_gives_version_zero,
            append_round_trips_every_field,
            versions_are_gap_free,
            stale_version_on_written_stream_conflicts,
            stale_read_only_participant_conflicts,
            expectation_ahead_of_stream_conflicts,
            one_conflict_among_three_streams_writes_nothing,
            empty_append_checks_versions_and_writes_nothing,
            concurrent_writers_with_same_expectation_one_wins,
            large_batch_is_appended_whole,
            odd_stream_ids_round_trip,
            undecodable_event_is_an_error,
            global_sequence_follows_stream_order,
            reads_return_only_requested_streams,
            repeated_stream_ids_in_a_read_count_once,
            interleaved_events_keep_per_stream_order,
            read_only_participant_keeps_its_version,
            store_stays_usable_after_a_conflict,
            concurrent_appends_to_disjoint_streams_all_succeed,
            global_sequences_are_unique_under_concurrency,
            json_scalars_and_numbers_round_trip,
            floats_round_trip_bit_exactly,
            non_finite_floats_are_refused,
            longest_stream_id_round_trips,
            many_streams_in_one_read_and_one_write,
            tail_reads_from_start_middle_and_end,
            tail_read_beyond_the_end_reports_the_shorter_stream,
            unstorable_metadata_is_refused,
            schema_versions_round_trip,
            old_events_are_upcast_when_decoded,
            unreadable_schema_versions_are_typed_errors,
        );
    };
    (limits, $callback:ident ! ($($args:tt)*)) => {
        $crate::$callback!($($args)*;
            oversized_payload_is_refused,
            payload_at_the_limit_is_accepted,
        );
    };
    (execute, $callback:ident ! ($($args:tt)*)) => {
        $crate::$callback!($($args)*;
            overlapping_stream_sets_in_any_order_never_fail_hard,
            concurrent_transfers_conserve_money,
            queued_transfers_conserve_money,
            concurrent_increments_through_execute_all_land,
            queued_increments_through_execute_all_land,
            discovered_streams_are_read_and_written_atomically,
            a_discovered_stream_that_moves_conflicts_the_whole_write,
            discovery_rounds_are_bounded,
            rejected_command_writes_nothing,
            empty_decision_writes_nothing,
            conflicting_registration_is_refused_before_the_store,
            undeclared_stream_is_refused_before_the_store,
            kept_state_sees_writes_made_around_it,
            refusal_on_a_kept_state_is_confirmed_first,
            execute_gives_a_command_one_correlation_id,
            commands_fold_upcast_events,
        );
    };
    (snapshots, $callback:ident ! ($($args:tt)*)) => {
        $crate::$callback!($($args)*;
            snapshot_is_saved_and_used_after_a_restart,
            unusable_snapshots_are_ignored,
        );
    };
    (command_ids, $callback:ident ! ($($args:tt)*)) => {
        $crate::$callback!($($args)*;
            command_id_seen_twice_returns_the_first_outcome,
            repeat_after_a_lost_reply_finds_the_record_before_deciding,
            reused_command_id_is_refused,
            rejected_command_records_nothing,
            concurrent_executions_of_one_command_id_apply_once,
            pruned_command_ids_count_as_new,
            a_command_renamed_and_moved_keeps_its_command_ids,
        );
    };
    (log, $callback:ident ! ($($args:tt)*)) => {
        $crate::$callback!($($args)*;
            metadata_round_trips_exactly,
            global_log_agrees_with_every_stream,
            global_log_pages_from_a_position,
            global_log_prefix_filter_is_literal,
            global_log_filters_by_event_type,
            global_log_filtered_pages_skip_nothing,
            global_log_reader_misses_nothing_under_concurrent_writers,
            global_log_events_are_upcast,
            appends_return_their_last_event_s_position,
        );
    };
    (subscriptions, $callback:ident ! ($($args:tt)*)) => {
        $crate::$callback!($($args)*;
            subscription_catches_up_follows_and_resumes,
            subscription_instances_never_overlap,
            subscription_misses_no_late_commit,
            subscription_stops_at_an_undecodable_event,
            follow_up_commands_carry_the_trigger_s_ids,
            subscriptions_read_upcast_events,
            a_subscription_is_waited_on_until_it_passes_a_position,
            a_checkpoint_keeps_its_whole_position,
        );
    };
}

/// Expands the scenarios every [`EventStore`] must pass, reads and appends
/// only, into `#[tokio::test]`s on a multi-threaded runtime. The first
/// argument is a future (an `async` block) that yields a fresh, empty
/// store; it runs once per test. The second, optional, is the store's
/// [`Limits`] (the default: 1 MiB per event).
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!($factory, $crate::conformance::Limits::default());
    };
    ($factory:expr, $limits:expr) => {
        $crate::__scenarios!(store, __conformance_tests_each!($factory));
        $crate::__scenarios!(limits, __conformance_tests_limited!($factory, $limits));
    };
}

/// Expands the scenarios of the execute loop (retries under real
/// concurrency, with and without the in-process queue, refusals, kept
/// states, discovered streams) for a store factory.
#[macro_export]
macro_rules! execute_conformance_tests {
    ($factory:expr) => {
        $crate::__scenarios!(execute, __conformance_tests_each!($factory));
    };
}

/// Expands the scenarios of a store that keeps snapshots.
#[macro_export]
macro_rules! snapshot_conformance_tests {
    ($factory:expr) => {
        $crate::__scenarios!(snapshots, __conformance_tests_each!($factory));
    };
}

/// Expands the scenarios of a store that records command ids.
#[macro_export]
macro_rules! command_id_conformance_tests {
    ($factory:expr) => {
        $crate::__scenarios!(command_ids, __conformance_tests_each!($factory));
    };
}

/// Expands the scenarios of a store's global log
/// ([`EventLog`](eventcore::EventLog)).
#[macro_export]
macro_rules! log_conformance_tests {
    ($factory:expr) => {
        $crate::__scenarios!(log, __conformance_tests_each!($factory));
    };
}

/// Expands the scenarios of subscriptions on a store that is also a
/// checkpoint store with leases.
#[macro_export]
macro_rules! subscription_conformance_tests {
    ($factory:expr) => {
        $crate::__scenarios!(subscriptions, __conformance_tests_each!($factory));
    };
}

/// Expands every conformance scenario, all capabilities, into
/// `#[tokio::test]`s: see [`store_conformance_tests!`] for the arguments.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!($factory, $crate::conformance::Limits::default());
    };
    ($factory:expr, $limits:expr) => {
        $crate::store_conformance_tests!($factory, $limits);
        $crate::execute_conformance_tests!($factory);
        $crate::snapshot_conformance_tests!($factory);
        $crate::command_id_conformance_tests!($factory);
        $crate::log_conformance_tests!($factory);
        $crate::subscription_conformance_tests!($factory);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests_each {
    ($factory:expr; $($scenario:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $scenario() {
                let store = $factory.await;
                $crate::conformance::$scenario(&store).await;
            }
        )+
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests_limited {
    ($factory:expr, $limits:expr; $($scenario:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $scenario() {
                let store = $factory.await;
                $crate::conformance::$scenario(&store, &$limits).await;
            }
        )+
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __run_each {
    ($factory:expr, $results:expr; $($scenario:ident),+ $(,)?) => {
        $(
            let store = $factory().await;
            let probe = store.clone();
            let passed = tokio::spawn(async move { $crate::conformance::$scenario(&store).await }).await.is_ok();
            $results.push($crate::conformance::ScenarioReport::of(stringify!($scenario), passed, &probe));
        )+
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __run_each_limited {
    ($factory:expr, $results:expr; $($scenario:ident),+ $(,)?) => {
        $(
            let store = $factory().await;
            let probe = store.clone();
            let passed = tokio::spawn(async move {
                $crate::conformance::$scenario(&store, &$crate::conformance::Limits::default()).await
            }).await.is_ok();
            $results.push($crate::conformance::ScenarioReport::of(stringify!($scenario), passed, &probe));
        )+
    };
}

/// One scenario of [`run_suite`]: whether it passed, and which paths of
/// the execute loop its commands took on the store (the counters of the
/// store's default [`Executor`](eventcore::Executor): kept folds, tail and
/// whole reads, snapshots used and ignored, appends).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScenarioReport {
    /// The scenario's name (its function's).
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// What its commands did through the store's default executor.
    pub paths: eventcore::CacheStats,
}

impl ScenarioReport {
    /// The report of scenario `name` run on `store` (a fresh store, whose
    /// default executor only this scenario used).
    #[doc(hidden)]
    pub fn of<S: EventStore>(name: &'static str, passed: bool, store: &S) -> Self {
        ScenarioReport {
            name,
            passed,
            paths: eventcore::Executor::new(store).cache().stats(),
        }
    }
}

/// One line: the name, the verdict, the paths taken.
impl std::fmt::Display for ScenarioReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.paths;
        write!(
            f,
            "{}: {} (kept folds {} hit, {} stale, {} missed; reads {} tail, {} whole; \
             snapshots {} looked up, {} used, {} ignored, {} offered; {} appends)",
            self.name,
            if self.passed { "passed" } else { "FAILED" },
            p.hits,
            p.stale_hits,
            p.misses,
            p.tail_reads,
            p.full_reads,
            p.snapshot_loads,
            p.snapshots_used,
            p.snapshots_ignored,
            p.snapshots_offered,
            p.appends
        )
    }
}

/// The paths of the execute loop that scenarios exist to take, checked in
/// `reports` (from [`run_suite`]): kept folds used and found stale, tail
/// reads after them, snapshots offered, used and ignored. Returns one line
/// per path a scenario did not take on this store (nothing if all were):
/// a scenario that passes without taking its path proves nothing about it.
pub fn paths_not_taken(reports: &[ScenarioReport]) -> Vec<String> {
    type Took = fn(&eventcore::CacheStats) -> bool;
    let expected: [(&str, &str, Took); 5] = [
        (
            "kept_state_sees_writes_made_around_it",
            "a kept fold used",
            |p| p.hits > 0,
        ),
        (
            "refusal_on_a_kept_state_is_confirmed_first",
            "a tail read after kept folds",
            |p| p.hits > 0 && p.tail_reads > 0,
        ),
        (
            "snapshot_is_saved_and_used_after_a_restart",
            "a snapshot offered",
            |p| p.snapshots_offered > 0,
        ),
        (
            "snapshot_is_saved_and_used_after_a_restart",
            "a snapshot used",
            |p| p.snapshots_used > 0,
        ),
        ("unusable_snapshots_are_ignored", "snapshots ignored", |p| {
            p.snapshots_ignored > 0
        }),
    ];
    expected
        .iter()
        .filter_map(
            |(name, path, took)| match reports.iter().find(|r| r.name == *name) {
                None => Some(format!("{name} did not run")),
                Some(r) if !took(&r.paths) => Some(format!("{name} did not take {path}: {r}")),
                Some(_) => None,
            },
        )
        .collect()
}

/// Runs the whole suite with [`run_suite`], prints each scenario's report,
/// and checks that every scenario passed and took the path it tests
/// ([`paths_not_taken`]).
///
/// # Panics
/// Naming every scenario that failed, or passed without taking its path.
pub async fn check_every_path_taken<S, F, Fut>(factory: F)
where
    S: SubscribableStore,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let reports = run_suite(factory).await;
    for report in &reports {
        println!("{report}");
    }
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed)
        .map(ToString::to_string)
        .collect();
    assert!(failed.is_empty(), "scenarios failed: {failed:#?}");
    let missing = paths_not_taken(&reports);
    assert!(missing.is_empty(), "{missing:#?}");
}

/// Runs every scenario, each on a fresh store from `factory` and in its own
/// task, and reports for each whether it passed and which paths of the
/// execute loop it took. A failing scenario's panic message goes to stderr
/// as usual. For tests that expect a store to fail, such as the kit's own
/// tests on deliberately broken stores, and to show what a store was put
/// through.
pub async fn run_suite<S, F, Fut>(factory: F) -> Vec<ScenarioReport>
where
    S: SubscribableStore,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let mut results = Vec::new();
    crate::__scenarios!(store, __run_each!(factory, results));
    crate::__scenarios!(limits, __run_each_limited!(factory, results));
    crate::__scenarios!(execute, __run_each!(factory, results));
    crate::__scenarios!(snapshots, __run_each!(factory, results));
    crate::__scenarios!(command_ids, __run_each!(factory, results));
    crate::__scenarios!(log, __run_each!(factory, results));
    crate::__scenarios!(subscriptions, __run_each!(factory, results));
    results
}

async fn append_notes<S: EventStore>(
    store: &S,
    expected: &[(&StreamId, u64)],
    notes: &[Note],
) -> Result<eventcore::AppendOutcome, StoreError> {
    let mut writes = StreamWrites::new();
    for (id, v) in expected {
        writes.expect((*id).clone(), StreamVersion::new(*v))?;
    }
    for note in notes {
        writes.append(note)?;
    }
    store.append(writes).await
}

async fn versions_of<S: EventStore>(store: &S, ids: &[StreamId]) -> Vec<u64> {
    let read = store.read_streams(ids).await.expect("read");
    ids.iter()
        .map(|id| {
            read.version(id)
                .expect("every requested stream has a version")
                .get()
        })
        .collect()
}

fn notes_of(store_read: &eventcore::StreamReads, id: &StreamId) -> Vec<u64> {
    store_read
        .events_of(id)
        .map(|e| e.decode::<Note>().expect("decode note").n)
        .collect()
}

/// Streams with no events read as version 0 with no events.
pub async fn reading_missing_streams_gives_version_zero<S: EventStore + Clone + 'static>(
    store: &S,
) {
    let ids = [stream("missing-a"), stream("missing-b")];
    let read = store.read_streams(&ids).await.expect("read");
    assert!(read.events().is_empty(), "a missing stream has no events");
    assert_eq!(
        read.versions().len(),
        2,
        "every requested stream gets a version"
    );
    for id in &ids {
        assert_eq!(read.version(id), Some(StreamVersion::INITIAL));
    }
    let none = store.read_streams(&[]).await.expect("read of no streams");
    assert!(none.events().is_empty() && none.versions().is_empty());
}

/// Stream id, version, type name and payload come back exactly as written.
pub async fn append_round_trips_every_field<S: EventStore + Clone + 'static>(store: &S) {
    let id = stream("round-trip");
    let note = Note {
        stream: id.clone(),
        n: u64::MAX,
        text: "quotes ' \" backslash \\ unicode 日本 emoji 🦀 tab\t".into(),
    };
    let outcome = append_notes(store, &[(&id, 0)], std::slice::from_ref(&note))
        .await
        .expect("append");
    assert_eq!(outcome.events_written, 1);
    assert_eq!(
        outcome.stream_versions,
        vec![(id.clone(), StreamVersion::new(1))]
    );

    let read = store
        .read_streams(std::slice::from_ref(&id))
        .await
        .expect("read");
    assert_eq!(read.version(&id), Some(StreamVersion::new(1)));
    let [event] = read.events() else {
        panic!("expected one event, got {:?}", read.events())
    };
    assert_eq!(event.stream_id(), &id);
    assert_eq!(event.version(), StreamVersion::new(1));
    assert_eq!(event.event_type(), "Note");
    assert!(event.global_sequence() > 0);
    assert_eq!(event.decode::<Note>().expect("decode"), note);
    let as_json: serde_json::Value =
        serde_json::from_str(event.payload()).expect("payload is JSON");
    assert_eq!(as_json, serde_json::to_value(&note).expect("to value"));
}

/// Versions run 1..=n with no gap, over several appends of several events.
pub async fn versions_are_gap_free<S: EventStore + Clone + 'static>(store: &S) {
    let id = stream("gap-free");
    let mut n = 0;
    for batch in [1u64, 3, 2, 5] {
        let notes: Vec<_> = (0..batch).map(|i| Note::new(&id, n + i + 1)).collect();
        append_notes(store, &[(&id, n)], &notes)
            .await
            .expect("append");
        n += batch;
    }
    let read = store
        .read_streams(std::slice::from_ref(&id))
        .await
        .expect("read");
    let versions: Vec<u64> = read.events().iter().map(|e| e.version().get()).collect();
    assert_eq!(versions, (1..=n).collect::<Vec<_>>());
    assert_eq!(
        notes_of(&read, &id),
        (1..=n).collect::<Vec<_>>(),
        "events keep their order"
    );
    assert_eq!(read.version(&id), Some(StreamVersion::new(n)));
}

/// A stale expected version on a written stream is a conflict that names
/// the stream, expected and actual version, and nothing is written.
pub async fn stale_version_on_written_stream_conflicts<S: EventStore + Clone + 'static>(store: &S) {
    let id = stream("stale-written");
    append_notes(store, &[(&id, 0)], &[Note::new(&id, 1), Note::new(&id, 2)])
        .await
        .expect("first append");
    let err = append_notes(store, &[(&id, 1)], &[Note::new(&id, 99)])
        .await
        .expect_err("stale expectation must fail");
    match err {
        StoreError::VersionConflict {
            stream_id,
            expected,
            actual,
        } => {
            assert_eq!(stream_id, id);
            assert_eq!(expected, StreamVersion::new(1));
            assert_eq!(actual, StreamVersion::new(2));
        }
        other => panic!("expected VersionConflict, got {other:?}"),
    }
    let read = store
        .read_streams(std::slice::from_ref(&id))
        .await
        .expect("read");
    assert_eq!(
        notes_of(&read, &id),
        vec![1, 2],
        "nothing of the rejected write"
    );
}

/// A read-only participant that moved makes the whole write fail: command A
/// reads X and writes Y; B writes X meanwhile; A's append is rejected.
pub async fn stale_read_only_participant_conflicts<S: EventStore + Clone + 'static>(store: &S) {
    let (x, y) = (stream("participant-x"), stream("participant-y"));
    append_notes(store, &[(&x, 0)], &[Note::new(&x, 1)])
        .await
        .expect("seed x");
    // A reads x at version 1 and y at 0; B then writes x.
    append_notes(store, &[(&x, 1)], &[Note::new(&x, 2)])
        .await
        .expect("B writes x");
    let err = append_notes(store, &[(&x, 1), (&y, 0)], &[Note::new(&y, 1)])
        .await
        .expect_err("A must be rejected");
    assert!(
        matches!(&err, StoreError::VersionConflict { stream_id, .. } if *stream_id == x),
        "expected a conflict on the read-only stream, got {err:?}"
    );
    assert_eq!(
        versions_of(store, &[x, y]).await,
        vec![2, 0],
        "nothing of A written"
    );
}

/// Expecting a version the stream has not reached is a conflict too.
pub async fn expectation_ahead_of_stream_conflicts<S: EventStore + Clone + 'static>(store: &S) {
    let id = stream("ahead");
    let err = append_notes(store, &[(&id, 5)], &[Note::new(&id, 1)])
        .await
        .expect_err("a stream at 0 is not at 5");
    assert!(
        matches!(err, StoreError::VersionConflict { actual, .. } if actual == StreamVersion::INITIAL)
    );
    assert_eq!(versions_of(store, &[id]).await, vec![0]);
}

/// When one of three streams conflicts, none of the three is written.
pub async fn one_conflict_among_three_streams_writes_nothing<S: EventStore + Clone + 'static>(
    store: &S,
) {
    let ids = [stream("three-a"), stream("three-b"), stream("three-c")];
    let seed: Vec<_> = ids.iter().map(|id| Note::new(id, 1)).collect();
    append_notes(store, &[(&ids[0], 0), (&ids[1], 0), (&ids[2], 0)], &seed)
        .await
        .expect("seed");
    let more: Vec<_> = ids.iter().map(|id| Note::new(id, 2)).collect();
    let err = append_notes(store, &[(&ids[0], 1), (&ids[1], 0), (&ids[2], 1)], &more)
        .await
        .expect_err("middle stream is stale");
    assert!(matches!(&err, StoreError::VersionConflict { stream_id, .. } if *stream_id == ids[1]));
    assert_eq!(versions_of(store, &ids).await, vec![1, 1, 1]);
}

/// A write with no events checks its expectations and writes nothing.
pub async fn empty_append_checks_versions_and_writes_nothing<S: EventStore + Clone + 'static>(
    store: &S,
) {
    let id = stream("empty-append");
    append_notes(store, &[(&id, 0)], &[Note::new(&id, 1)])
        .await
        .expect("seed");
    let ok = append_notes(store, &[(&id, 1)], &[])
        .await
        .expect("current expectation");
    assert_eq!(ok.events_written, 0);
    assert_eq!(
        ok.stream_versions,
        vec![(id.clone(), StreamVersion::new(1))]
    );
    let err = append_notes(store, &[(&id, 0)], &[])
        .await
        .expect_err("stale expectation");
    assert!(matches!(err, StoreError::VersionConflict { .. }));
    assert_eq!(versions_of(store, &[id]).await, vec![1]);
}

/// N writers released together with the same expected version: exactly one wins.
pub async fn concurrent_writers_with_same_expectation_one_wins<S: EventStore + Clone + 'static>(
    store: &S,
) {
    const WRITERS: usize = 16;
    let id = stream("race");
    let barrier = Arc::new(Barrier::new(WRITERS));
    let tasks = (0..WRITERS).map(|w| {
        let barrier = barrier.clone();
        let id = id.clone();
        let store = store.clone();
        async move {
            barrier.wait().await;
            append_notes(&store, &[(&id, 0)], &[Note::new(&id, w as u64)]).await
        }
    });
    let results = spawn_all(tasks).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "exactly one writer may win: {results:?}");
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, StoreError::VersionConflict { .. }),
                "losers conflict: {e:?}"
            );
        }
    }
    assert_eq!(versions_of(store, &[id]).await, vec![1]);
}

/// Commands over overlapping stream sets, listed in random orders, run
/// concurrently: each succeeds or conflicts; no deadlock or other failure
/// reaches the caller, and every stream ends gap-free.
pub async fn overlapping_stream_sets_in_any_order_never_fail_hard<
    S: EventStore + Clone + 'static,
>(
    store: &S,
) {
    const TASKS: usize = 24;
    let ids: Vec<StreamId> = (0..4).map(|i| stream(&format!("overlap-{i}"))).collect();
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks = (0..TASKS).map(|t| {
        let barrier = barrier.clone();
        let mut order = ids.clone();
        let mut rng = fastrand::Rng::with_seed(t as u64);
        rng.shuffle(&mut order);
        order.truncate(2 + t % 3);
        let store = store.clone();
        async move {
            barrier.wait().await;
            let mut outcomes = Vec::new();
            for round in 0..4u64 {
                let read = store.read_streams(&order).await.expect("read");
                let mut writes = StreamWrites::new();
                for id in &order {
                    writes
                        .expect(id.clone(), read.version(id).unwrap_or_default())
                        .expect("register");
                }
                for id in &order {
                    writes.append(&Note::new(id, round)).expect("append");
                }
                outcomes.push(store.append(writes).await.map(|o| o.events_written));
            }
            outcomes
        }
    });
    let outcomes: Vec<_> = spawn_all(tasks).await.into_iter().flatten().collect();
    for o in &outcomes {
        if let Err(e) = o {
            assert!(
                matches!(e, StoreError::VersionConflict { .. }),
                "only conflicts may fail: {e:?}"
            );
        }
    }
    let written: usize = outcomes.iter().filter_map(|o| o.as_ref().ok()).sum();
    let read = store.read_streams(&ids).await.expect("read");
    assert_eq!(
        read.events().len(),
        written,
        "every success is in the log, nothing else"
    );
    for id in &ids {
        let versions: Vec<u64> = read.events_of(id).map(|e| e.version().get()).collect();
        assert_eq!(
            versions,
            (1..=versions.len() as u64).collect::<Vec<_>>(),
            "{id} gap-free"
        );
    }
}

/// 32 tasks released together move money among 5 accounts through
/// `execute`, racing at the store (no in-process queue): money is
/// conserved and every stream is gap-free.
pub async fn concurrent_transfers_conserve_money<S: EventStore + Clone + 'static>(store: &S) {
    transfers_conserve_money(store, false).await;
}

/// The same with the store's in-process queue on, as `execute` runs by
/// default.
pub async fn queued_transfers_conserve_money<S: EventStore + Clone + 'static>(store: &S) {
    transfers_conserve_money(store, true).await;
}

async fn transfers_conserve_money<S: EventStore + Clone + 'static>(store: &S, queue: bool) {
    const TASKS: usize = 32;
    const INITIAL: u64 = 1_000;
    let accounts: Vec<StreamId> = (0..5).map(|i| stream(&format!("acct-{i}"))).collect();
    // Without the queue the race is real and the store's checks decide.
    let policy = RetryPolicy::default()
        .with_queue_in_process(queue)
        .with_max_attempts(std::num::NonZeroU32::new(1_000).expect("non-zero"));
    for a in &accounts {
        execute_with(
            store,
            Credit {
                account: a.clone(),
                amount: INITIAL,
            },
            &policy,
        )
        .await
        .expect("seed");
    }
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks = (0..TASKS).map(|t| {
        let barrier = barrier.clone();
        let accounts = accounts.clone();
        let policy = policy.clone();
        let store = store.clone();
        async move {
            barrier.wait().await;
            let mut rng = fastrand::Rng::with_seed(t as u64);
            let mut results = Vec::new();
            for _ in 0..5 {
                let from = rng.usize(..accounts.len());
                let to = (from + 1 + rng.usize(..accounts.len() - 1)) % accounts.len();
                let cmd = Move {
                    from: accounts[from].clone(),
                    to: accounts[to].clone(),
                    amount: rng.u64(1..400),
                };
                results.push(execute_with(&store, cmd, &policy).await);
            }
            results
        }
    });
    let results: Vec<_> = spawn_all(tasks).await.into_iter().flatten().collect();
    for r in &results {
        match r {
            Ok(_) | Err(ExecuteError::Rejected(_)) => {}
            Err(e) => panic!("a transfer failed with a store error: {e:?}"),
        }
    }
    let read = store.read_streams(&accounts).await.expect("read");
    let mut balances = crate::fixtures::Balances::default();
    for e in read.events() {
        balances.apply(&e.decode::<LedgerEvent>().expect("decode"));
    }
    let total: i128 = accounts.iter().map(|a| balances.of(a)).sum();
    assert_eq!(
        total,
        i128::from(INITIAL) * accounts.len() as i128,
        "money conserved"
    );
    for a in &accounts {
        assert!(balances.of(a) >= 0, "{a} overdrawn: {}", balances.of(a));
        let versions: Vec<u64> = read.events_of(a).map(|e| e.version().get()).collect();
        assert_eq!(
            versions,
            (1..=versions.len() as u64).collect::<Vec<_>>(),
            "{a} gap-free"
        );
    }
    let successes = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        read.events().len(),
        accounts.len() + 2 * successes,
        "two events per transfer"
    );
}

/// 10,000 events in one append are written whole, in order.
pub async fn large_batch_is_appended_whole<S: EventStore + Clone + 'static>(store: &S) {
    const N: u64 = 10_000;
    let (a, b) = (stream("batch-a"), stream("batch-b"));
    let notes: Vec<_> = (1..=N)
        .map(|i| Note::new(if i % 2 == 0 { &a } else { &b }, i))
        .collect();
    let outcome = append_notes(store, &[(&a, 0), (&b, 0)], &notes)
        .await
        .expect("batch");
    assert_eq!(outcome.events_written, N as usize);
    let read = store
        .read_streams(&[a.clone(), b.clone()])
        .await
        .expect("read");
    assert_eq!(read.version(&a), Some(StreamVersion::new(N / 2)));
    assert_eq!(read.version(&b), Some(StreamVersion::new(N / 2)));
    let all: Vec<u64> = read
        .events()
        .iter()
        .map(|e| e.decode::<Note>().expect("decode").n)
        .collect();
    assert_eq!(
        all,
        (1..=N).collect::<Vec<_>>(),
        "global order keeps append order"
    );
}

/// Stream ids with quotes, LIKE metacharacters, backslashes and non-ASCII
/// are stored and read back verbatim, and do not match each other.
pub async fn odd_stream_ids_round_trip<S: EventStore + Clone + 'static>(store: &S) {
    let names = [
        "o'brien",
        "say \"hi\"",
        "100%",
        "a_b",
        "a%b",
        "back\\slash",
        "日本語-ストリーム",
        "🦀",
        "x;DROP TABLE events;--",
    ];
    let ids: Vec<StreamId> = names.iter().map(|n| stream(n)).collect();
    for (i, id) in ids.iter().enumerate() {
        append_notes(store, &[(id, 0)], &[Note::new(id, i as u64)])
            .await
            .expect("append");
    }
    let read = store.read_streams(&ids).await.expect("read");
    for (i, id) in ids.iter().enumerate() {
        let events: Vec<_> = read.events_of(id).collect();
        assert_eq!(events.len(), 1, "{id} has exactly its own event");
        assert_eq!(events[0].stream_id().as_str(), names[i]);
        assert_eq!(events[0].decode::<Note>().expect("decode").n, i as u64);
    }
    let similar = store
        .read_streams(&[stream("a"), stream("ab"), stream("axb")])
        .await
        .expect("read");
    assert!(similar.events().is_empty(), "no pattern matching on ids");
}

/// An event over the store's payload limit is refused with a typed error,
/// and nothing of its write is stored. Assumes the default 1 MiB limit.
pub async fn oversized_payload_is_refused<S: EventStore + Clone + 'static>(
    store: &S,
    limits: &Limits,
) {
    let id = stream("oversized");
    let mut big = Note::new(&id, 2);
    big.text = "x".repeat(limits.max_payload_bytes() + 1);
    let err = append_notes(store, &[(&id, 0)], &[Note::new(&id, 1), big])
        .await
        .expect_err("over the limit");
    assert!(
        matches!(err, StoreError::PayloadTooLarge { limit, .. } if limit == limits.max_payload_bytes()),
        "{err:?}"
    );
    assert_eq!(versions_of(store, &[id]).await, vec![0]);

    let nul = Note {
        stream: stream("nul"),
        n: 1,
        text: "a\0b".into(),
    };
    let mut writes = StreamWrites::new();
    writes
        .expect(nul.stream.clone(), StreamVersion::INITIAL)
        .expect("register");
    assert!(matches!(
        writes.append(&nul),
        Err(StoreError::NulCharacter { .. })
    ));
    assert!(writes.is_empty());
}

/// A stored event that no longer deserialises makes the command fail with a
/// typed error naming the event; it is never skipped.
pub async fn undecodable_event_is_an_error<S: EventStore + Clone + 'static>(store: &S) {
    let id = stream("old-shape");
    append_notes(store, &[(&id, 0)], &[Note::new(&id, 1)])
        .await
        .expect("seed");
    let err = execute_with(
        store,
        Credit {
            account: id.clone(),
            amount: 1,
        },
        &RetryPolicy::no_retry(),
    )
    .await
    .expect_err("a Note is not a LedgerEvent");
    match err {
        ExecuteError::Store(StoreError::Deserialize {
            stream_id,
            version,
            event_type,
            ..
        }) => {
            assert_eq!(stream_id, id);
            assert_eq!(version, StreamVersion::new(1));
            assert_eq!(event_type, "Note");
        }
        other => panic!("expected a Deserialize error, got {other:?}"),
    }
    assert_eq!(
        versions_of(store, &[id]).await,
        vec![1],
        "the failed command wrote nothing"
    );
}

/// Global sequence is strictly increasing in read order and agrees with
/// every stream's version order.
pub async fn global_sequence_follows_stream_order<S: EventStore + Clone + 'static>(store: &S) {
    let ids = [stream("seq-a"), stream("seq-b"), stream("seq-c")];
    for round in 0..5u64 {
        for (i, id) in ids.iter().enumerate() {
            if (round + i as u64).is_multiple_of(2) {
                let v = versions_of(store, std::slice::from_ref(id)).await[0];
                append_notes(store, &[(id, v)], &[Note::new(id, round)])
                    .await
                    .expect("append");
            }
        }
    }
    let read = store.read_streams(&ids).await.expect("read");
    let seqs: Vec<u64> = read.events().iter().map(|e| e.global_sequence()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {seqs:?}"
    );
    for id in &ids {
        let v: Vec<u64> = read.events_of(id).map(|e| e.version().get()).collect();
        assert_eq!(v, (1..=v.len() as u64).collect::<Vec<_>>());
    }
}

/// A read returns the requested streams' events and nothing of others.
pub async fn reads_return_only_requested_streams<S: EventStore + Clone + 'static>(store: &S) {
    let (a, b, c) = (stream("only-a"), stream("only-b"), stream("only-c"));
    for (i, id) in [&a, &b, &c].into_iter().enumerate() {
        append_notes(store, &[(id, 0)], &[Note::new(id, i as u64)])
            .await
            .expect("append");
    }
    let read = store
        .read_streams(&[a.clone(), c.clone()])
        .await
        .expect("read");
    let streams: Vec<&StreamId> = read.events().iter().map(|e| e.stream_id()).collect();
    assert_eq!(streams, vec![&a, &c]);
    assert_eq!(read.version(&b), None, "an unrequested stream has no entry");
}

/// Naming a stream twice in one read returns its events once.
pub async fn repeated_stream_ids_in_a_read_count_once<S: EventStore + Clone + 'static>(store: &S) {
    let a = stream("twice");
    append_notes(store, &[(&a, 0)], &[Note::new(&a, 1), Note::new(&a, 2)])
        .await
        .expect("append");
    let read = store
        .read_streams(&[a.clone(), a.clone(), a.clone()])
        .await
        .expect("read");
    assert_eq!(read.events().len(), 2);
    assert_eq!(read.versions(), &[(a, StreamVersion::new(2))][..]);
}

/// One write interleaving events of two streams numbers each stream's
/// events consecutively, in the order given.
pub async fn interleaved_events_keep_per_stream_order<S: EventStore + Clone + 'static>(store: &S) {
    let (a, b) = (stream("weave-a"), stream("weave-b"));
    append_notes(store, &[(&a, 0)], &[Note::new(&a, 0)])
        .await
        .expect("seed");
    let notes = [
        Note::new(&b, 1),
        Note::new(&a, 2),
        Note::new(&b, 3),
        Note::new(&a, 4),
        Note::new(&a, 5),
    ];
    let outcome = append_notes(store, &[(&a, 1), (&b, 0)], &notes)
        .await
        .expect("append");
    assert_eq!(
        outcome.stream_versions,
        vec![
            (a.clone(), StreamVersion::new(4)),
            (b.clone(), StreamVersion::new(2))
        ]
    );
    let read = store
        .read_streams(&[a.clone(), b.clone()])
        .await
        .expect("read");
    assert_eq!(notes_of(&read, &a), vec![0, 2, 4, 5]);
    assert_eq!(notes_of(&read, &b), vec![1, 3]);
    let all: Vec<u64> = read
        .events()
        .iter()
        .map(|e| e.decode::<Note>().expect("decode").n)
        .collect();
    assert_eq!(
        all,
        vec![0, 1, 2, 3, 4, 5],
        "global order follows the write's order"
    );
}

/// A successful write leaves a read-only participant at its version, and
/// says so in its outcome.
pub async fn read_only_participant_keeps_its_version<S: EventStore + Clone + 'static>(store: &S) {
    let (r, w) = (stream("ro-reader"), stream("ro-writer"));
    append_notes(store, &[(&r, 0)], &[Note::new(&r, 1)])
        .await
        .expect("seed");
    let outcome = append_notes(store, &[(&r, 1), (&w, 0)], &[Note::new(&w, 1)])
        .await
        .expect("append");
    assert_eq!(
        outcome.stream_versions,
        vec![
            (r.clone(), StreamVersion::new(1)),
            (w.clone(), StreamVersion::new(1))
        ]
    );
    assert_eq!(versions_of(store, &[r, w]).await, vec![1, 1]);
}

/// After a conflict the store accepts the next correct write.
pub async fn store_stays_usable_after_a_conflict<S: EventStore + Clone + 'static>(store: &S) {
    let a = stream("after-conflict");
    append_notes(store, &[(&a, 0)], &[Note::new(&a, 1)])
        .await
        .expect("seed");
    append_notes(store, &[(&a, 0)], &[Note::new(&a, 99)])
        .await
        .expect_err("stale");
    append_notes(store, &[(&a, 1)], &[Note::new(&a, 2)])
        .await
        .expect("current");
    let read = store
        .read_streams(std::slice::from_ref(&a))
        .await
        .expect("read");
    assert_eq!(notes_of(&read, &a), vec![1, 2]);
}

/// Writers to disjoint streams released together never conflict.
pub async fn concurrent_appends_to_disjoint_streams_all_succeed<S: EventStore + Clone + 'static>(
    store: &S,
) {
    const WRITERS: usize = 16;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let tasks = (0..WRITERS).map(|w| {
        let (barrier, store) = (barrier.clone(), store.clone());
        async move {
            let id = stream(&format!("disjoint-{w}"));
            barrier.wait().await;
            for v in 0..5 {
                append_notes(&store, &[(&id, v)], &[Note::new(&id, v)]).await?;
            }
            Ok::<_, StoreError>(id)
        }
    });
    let ids: Vec<StreamId> = spawn_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("no conflict between disjoint streams"))
        .collect();
    assert!(versions_of(store, &ids).await.iter().all(|v| *v == 5));
}

/// Many tasks append to one stream through `execute`, racing at the store
/// (no in-process queue); with retries every one lands, exactly once.
pub async fn concurrent_increments_through_execute_all_land<S: EventStore + Clone + 'static>(
    store: &S,
) {
    increments_all_land(store, false).await;
}

/// The same with the store's in-process queue on.
pub async fn queued_increments_through_execute_all_land<S: EventStore + Clone + 'static>(
    store: &S,
) {
    increments_all_land(store, true).await;
}

async fn increments_all_land<S: EventStore + Clone + 'static>(store: &S, queue: bool) {
    const TASKS: usize = 16;
    let counter = stream("counter");
    // Without the queue the race is real and the store's checks decide.
    let policy = RetryPolicy::default()
        .with_queue_in_process(queue)
        .with_max_attempts(std::num::NonZeroU32::new(10_000).expect("non-zero"));
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks = (0..TASKS).map(|t| {
        let (barrier, store, policy, counter) = (
            barrier.clone(),
            store.clone(),
            policy.clone(),
            counter.clone(),
        );
        async move {
            barrier.wait().await;
            execute_with(
                &store,
                Credit {
                    account: counter,
                    amount: t as u64 + 1,
                },
                &policy,
            )
            .await
        }
    });
    for r in spawn_all(tasks).await {
        r.expect("every increment lands");
    }
    let read = store
        .read_streams(std::slice::from_ref(&counter))
        .await
        .expect("read");
    let mut amounts: Vec<u64> = read
        .events()
        .iter()
        .map(|e| match e.decode::<LedgerEvent>().expect("decode") {
            LedgerEvent::Credited { amount, .. } | LedgerEvent::Debited { amount, .. } => amount,
        })
        .collect();
    amounts.sort_unstable();
    assert_eq!(
        amounts,
        (1..=TASKS as u64).collect::<Vec<_>>(),
        "each task's event exactly once"
    );
}

/// Concurrent writers never share a global sequence number.
pub async fn global_sequences_are_unique_under_concurrency<S: EventStore + Clone + 'static>(
    store: &S,
) {
    const WRITERS: usize = 12;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let ids: Vec<StreamId> = (0..WRITERS).map(|w| stream(&format!("gseq-{w}"))).collect();
    let tasks = ids.iter().cloned().map(|id| {
        let (barrier, store) = (barrier.clone(), store.clone());
        async move {
            barrier.wait().await;
            let notes: Vec<_> = (0..3).map(|n| Note::new(&id, n)).collect();
            append_notes(&store, &[(&id, 0)], &notes)
                .await
                .expect("append");
        }
    });
    spawn_all(tasks).await;
    let read = store.read_streams(&ids).await.expect("read");
    let mut seqs: Vec<u64> = read.events().iter().map(|e| e.global_sequence()).collect();
    assert_eq!(seqs.len(), WRITERS * 3);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "read in strictly increasing global order"
    );
    seqs.dedup();
    assert_eq!(seqs.len(), WRITERS * 3, "no shared sequence number");
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Odd {
    stream: StreamId,
    value: serde_json::Value,
}

impl eventcore::Event for Odd {
    fn stream_id(&self) -> &StreamId {
        &self.stream
    }
    fn event_type(&self) -> &'static str {
        "Odd"
    }
}

/// Scalars, floats, big integers, nested structures and empty containers
/// come back equal after the store's JSON round trip.
pub async fn json_scalars_and_numbers_round_trip<S: EventStore + Clone + 'static>(store: &S) {
    let id = stream("json");
    let values = [
        serde_json::json!(null),
        serde_json::json!(true),
        serde_json::json!(0.1),
        serde_json::json!(-1.5e300),
        serde_json::json!(u64::MAX),
        serde_json::json!(i64::MIN),
        serde_json::json!("tab\t \"quoted\" \\u0000 as text"),
        serde_json::json!({"z": 1, "a": [], "m": {}, "nested": {"k": [1, "two", null]}}),
        serde_json::json!([]),
    ];
    let mut writes = StreamWrites::new();
    writes
        .expect(id.clone(), StreamVersion::INITIAL)
        .expect("register");
    for value in &values {
        writes
            .append(&Odd {
                stream: id.clone(),
                value: value.clone(),
            })
            .expect("serialise");
    }
    store.append(writes).await.expect("append");
    let read = store
        .read_streams(std::slice::from_ref(&id))
        .await
        .expect("read");
    let back: Vec<serde_json::Value> = read
        .events()
        .iter()
        .map(|e| e.decode::<Odd>().expect("decode").value)
        .collect();
    assert_eq!(back, values);
}

/// An event exactly at the default 1 MiB limit is accepted.
pub async fn payload_at_the_limit_is_accepted<S: EventStore + Clone + 'static>(
    store: &S,
    limits: &Limits,
) {
    let id = stream("at-limit");
    let mut note = Note::new(&id, 1);
    let overhead = serde_json::to_string(&note).expect("json").len();
    note.text = "x".repeat(limits.max_payload_bytes() - overhead);
    assert_eq!(
        serde_json::to_string(&note).expect("json").len(),
        limits.max_payload_bytes()
    );
    append_notes(store, &[(&id, 0)], std::slice::from_ref(&note))
        .await
        .expect("at the limit");
    let read = store
        .read_streams(std::slice::from_ref(&id))
        .await
        .expect("read");
    assert_eq!(read.events()[0].decode::<Note>().expect("decode"), note);
}

/// A stream id of the maximum length, in multi-byte characters, round-trips.
pub async fn longest_stream_id_round_trips<S: EventStore + Clone + 'static>(store: &S) {
    let id = stream(&"é".repeat(eventcore::MAX_STREAM_ID_CHARS));
    append_notes(store, &[(&id, 0)], &[Note::new(&id, 1)])
        .await
        .expect("append");
    let read = store
        .read_streams(std::slice::from_ref(&id))
        .await
        .expect("read");
    assert_eq!(read.events()[0].stream_id(), &id);
}

/// One write may register 200 streams, and one read return them all.
pub async fn many_streams_in_one_read_and_one_write<S: EventStore + Clone + 'static>(store: &S) {
    let ids: Vec<StreamId> = (0..200).map(|i| stream(&format!("wide-{i:03}"))).collect();
    let expected: Vec<(&StreamId, u64)> = ids.iter().map(|id| (id, 0)).collect();
    let notes: Vec<Note> = ids.iter().step_by(2).map(|id| Note::new(id, 1)).collect();
    append_notes(store, &expected, &notes)
        .await
        .expect("wide append");
    let versions = versions_of(store, &ids).await;
    let want: Vec<u64> = (0..200).map(|i| u64::from(i % 2 == 0)).collect();
    assert_eq!(versions, want);
}

/// A command refused by a business rule writes nothing.
pub async fn rejected_command_writes_nothing<S: EventStore + Clone + 'static>(store: &S) {
    let (a, b) = (stream("poor"), stream("rich"));
    let err = execute_with(
        store,
        Move {
            from: a.clone(),
            to: b.clone(),
            amount: 1,
        },
        &RetryPolicy::default(),
    )
    .await
    .expect_err("no money");
    assert!(matches!(err, ExecuteError::Rejected(_)));
    assert_eq!(versions_of(store, &[a, b]).await, vec![0, 0]);
}

/// A command that decides nothing succeeds and writes nothing.
pub async fn empty_decision_writes_nothing<S: EventStore + Clone + 'static>(store: &S) {
    let a = stream("zero");
    let done = execute_with(
        store,
        Credit {
            account: a.clone(),
            amount: 0,
        },
        &RetryPolicy::default(),
    )
    .await
    .expect("a zero credit is a no-op");
    assert_eq!(done.events_written, 0);
    assert_eq!(versions_of(store, &[a]).await, vec![0]);
}

/// Registering one stream with two versions fails before any I/O.
pub async fn conflicting_registration_is_refused_before_the_store<
    S: EventStore + Clone + 'static,
>(
    store: &S,
) {
    let a = stream("double");
    let mut writes = StreamWrites::new();
    writes
        .expect(a.clone(), StreamVersion::INITIAL)
        .expect("first");
    writes
        .expect(a.clone(), StreamVersion::INITIAL)
        .expect("same version again is fine");
    let err = writes
        .expect(a.clone(), StreamVersion::new(1))
        .expect_err("second version");
    assert!(matches!(err, StoreError::ConflictingExpectation { .. }));
    assert_eq!(writes.expected_versions().len(), 1);
    assert_eq!(versions_of(store, &[a]).await, vec![0]);
}

/// A command emitting an event for a stream it did not declare fails, and
/// nothing is written, not even its other events.
pub async fn undeclared_stream_is_refused_before_the_store<S: EventStore + Clone + 'static>(
    store: &S,
) {
    let (a, b) = (stream("declared"), stream("undeclared"));
    let err = execute_with(
        store,
        crate::fixtures::Stray {
            declared: a.clone(),
            stray: b.clone(),
        },
        &RetryPolicy::default(),
    )
    .await
    .expect_err("undeclared");
    assert!(
        matches!(&err, ExecuteError::Store(StoreError::UndeclaredStream { stream_id, .. }) if *stream_id == b),
        "{err:?}"
    );
    assert_eq!(versions_of(store, &[a, b]).await, vec![0, 0]);
}

/// Waits until the global log shows `events` events. A store may hold
/// back committed events while an older transaction is still running
/// anywhere (PostgreSQL's no-skip fence), for example one of another test;
/// polls for up to 15 seconds.
async fn wait_for_log<S: EventLog>(store: &S, events: usize) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let seen = store
            .read_all(&LogQuery::from_start(events + 1))
            .await
            .expect("read_all")
            .len();
        assert!(
            seen <= events,
            "the log shows {seen} events, more than the {events} written"
        );
        if seen == events {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log still shows {seen} of {events} events after 15 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Appends one note to each of `ids`, one write per stream, in order.
async fn one_note_each<S: EventStore>(store: &S, ids: &[StreamId], n: u64) {
    for id in ids {
        let v = versions_of(store, std::slice::from_ref(id)).await[0];
        append_notes(store, &[(id, v)], &[Note::new(id, n)])
            .await
            .expect("append");
    }
}

/// The global log holds every event once, in an order that agrees with
/// every stream's versions, with strictly increasing positions.
pub async fn global_log_agrees_with_every_stream<S: EventStore + EventLog + Clone + 'static>(
    store: &S,
) {
    let ids = [stream("log-a"), stream("log-b"), stream("log-c")];
    for round in 0..4 {
        one_note_each(store, &ids, round).await;
    }
    wait_for_log(store, 12).await;
    let all = store
        .read_all(&LogQuery::from_start(1_000))
        .await
        .expect("read_all");
    assert_eq!(all.len(), 12);
    assert!(
        all.events().windows(2).all(|w| w[0].0 < w[1].0),
        "positions strictly increase"
    );
    for id in &ids {
        let versions: Vec<u64> = all
            .events()
            .iter()
            .filter(|(_, e)| e.stream_id() == id)
            .map(|(_, e)| e.version().get())
            .collect();
        assert_eq!(versions, vec![1, 2, 3, 4], "{id} in version order");
    }
    let read = store.read_streams(&ids).await.expect("read");
    let mut from_streams: Vec<(String, u64)> = read
        .events()
        .iter()
        .map(|e| (e.stream_id().to_string(), e.version().get()))
        .collect();
    let mut from_log: Vec<(String, u64)> = all
        .events()
        .iter()
        .map(|(_, e)| (e.stream_id().to_string(), e.version().get()))
        .collect();
    from_streams.sort();
    from_log.sort();
    assert_eq!(
        from_log, from_streams,
        "the log holds exactly the streams' events"
    );
}

/// Reading on from the last position returned visits every event once.
pub async fn global_log_pages_from_a_position<S: EventStore + EventLog + Clone + 'static>(
    store: &S,
) {
    let ids: Vec<StreamId> = (0..5).map(|i| stream(&format!("page-{i}"))).collect();
    for round in 0..3 {
        one_note_each(store, &ids, round).await;
    }
    wait_for_log(store, 15).await;
    let mut seen = Vec::new();
    let mut after: Option<Position> = None;
    loop {
        let query = match after {
            Some(p) => LogQuery::after(p, 4),
            None => LogQuery::from_start(4),
        };
        let page = store.read_all(&query).await.expect("page");
        assert!(page.len() <= 4, "the limit holds");
        let Some((last, _)) = page.events().last() else {
            break;
        };
        after = Some(*last);
        seen.extend(page.into_iter().map(|(p, _)| p));
    }
    assert_eq!(seen.len(), 15, "every event exactly once");
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let tail = store
        .read_all(&LogQuery::after(*seen.last().expect("events"), 10))
        .await
        .expect("tail");
    assert!(tail.is_empty(), "nothing after the last event");
}

/// `%` and `_` in a stream-id prefix match only themselves.
pub async fn global_log_prefix_filter_is_literal<S: EventStore + EventLog + Clone + 'static>(
    store: &S,
) {
    let names = ["a_1", "ab1", "a%2", "aX2", "b_1", "a_"];
    let ids: Vec<StreamId> = names.iter().map(|n| stream(n)).collect();
    one_note_each(store, &ids, 0).await;
    wait_for_log(store, names.len()).await;
    let got = |prefix: &'static str| {
        let store = store.clone();
        async move {
            let mut ids: Vec<String> =
                read_matching(&store, LogQuery::from_start(100).with_stream_prefix(prefix))
                    .await
                    .events
                    .into_iter()
                    .map(|(_, e)| e.stream_id().to_string())
                    .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(got("a_").await, vec!["a_", "a_1"]);
    assert_eq!(got("a%").await, vec!["a%2"]);
    assert_eq!(got("a").await, vec!["a%2", "aX2", "a_", "a_1", "ab1"]);
    assert!(got("zzz").await.is_empty());
}

/// The event-type filter keeps only the named types, and the limit counts
/// matching events.
pub async fn global_log_filters_by_event_type<S: EventStore + EventLog + Clone + 'static>(
    store: &S,
) {
    let a = stream("typed");
    for amount in [0u64, 1, 2] {
        execute_with(
            store,
            Credit {
                account: a.clone(),
                amount: amount + 1,
            },
            &RetryPolicy::default(),
        )
        .await
        .expect("credit");
        one_note_each(store, std::slice::from_ref(&stream("typed-notes")), amount).await;
    }
    wait_for_log(store, 6).await;
    let credits = read_matching(
        store,
        LogQuery::from_start(100).with_event_types(["Credited"]),
    )
    .await
    .events;
    assert_eq!(credits.len(), 3);
    assert!(credits.iter().all(|(_, e)| e.event_type() == "Credited"));
    let both = read_matching(
        store,
        LogQuery::from_start(2).with_event_types(["Credited", "Note"]),
    )
    .await;
    assert_eq!(both.events.len(), 6, "the limit counts matching events");
    assert!(
        both.pages >= 3,
        "pages of at most two ({} pages)",
        both.pages
    );
    let none = read_matching(store, LogQuery::from_start(100).with_event_types(["Nope"])).await;
    assert!(none.events.is_empty());
}

/// What [`read_matching`] read.
struct Matching {
    events: Vec<(Position, eventcore::RecordedEvent)>,
    pages: usize,
    /// The last page's `next`: where a reader that caught up waits.
    end: Option<Position>,
}

/// Every event `query` matches after its start, read page by page from
/// `next` until a page holds nothing and `next` stays put, checking each
/// page's limit and `next` on the way.
async fn read_matching<S: EventLog>(store: &S, query: LogQuery) -> Matching {
    let mut read = Matching {
        events: Vec::new(),
        pages: 0,
        end: query.start(),
    };
    loop {
        let mut q = match read.end {
            Some(p) => LogQuery::after(p, query.limit()),
            None => LogQuery::from_start(query.limit()),
        };
        if let Some(prefix) = query.stream_prefix() {
            q = q.with_stream_prefix(prefix);
        }
        if let Some(types) = query.event_types() {
            q = q.with_event_types(types.iter().cloned());
        }
        let page = store.read_all(&q).await.expect("read_all");
        read.pages += 1;
        assert!(page.len() <= query.limit(), "the limit holds");
        if let Some((last, _)) = page.events().last() {
            assert!(
                page.next() >= Some(*last),
                "next is at or after the last event"
            );
        }
        assert!(page.next() >= read.end, "next never moves back");
        let (empty, next) = (page.is_empty(), page.next());
        read.events.extend(page);
        if empty && next == read.end {
            return read;
        }
        read.end = next;
        assert!(read.pages < 10_000, "paging never ends");
    }
}

/// A filtered reader paging from each page's `next` through a log where
/// its few matching events sit among thousands of others gets every match
/// once, in order: a page may stop early and move past events the filter
/// leaves out, never past a match it did not return.
pub async fn global_log_filtered_pages_skip_nothing<S: EventStore + EventLog + Clone + 'static>(
    store: &S,
) {
    let (noise_a, noise_b) = (stream("noise-a"), stream("noise-b"));
    let (sparse_a, sparse_b) = (stream("sparse-a"), stream("sparse-b"));
    // (stream, its version before, notes): 1,200 others, a match, 1,300
    // others, three matches, 10 others.
    let appends = [
        (&noise_a, 0, 1_200),
        (&sparse_a, 0, 1),
        (&noise_b, 0, 1_300),
        (&sparse_b, 0, 3),
        (&noise_a, 1_200, 10),
        // After the reader caught up: 5 others, a late match.
        (&noise_b, 1_300, 5),
        (&sparse_a, 1, 1),
    ];
    let write = |from: usize, to: usize| async move {
        for (id, before, n) in &appends[from..to] {
            let notes: Vec<Note> = (*before..before + n).map(|i| Note::new(id, i)).collect();
            append_notes(store, &[(id, *before)], &notes)
                .await
                .expect("append");
        }
    };
    write(0, 5).await;
    wait_for_log(store, 2_514).await;

    let sparse = LogQuery::from_start(2).with_stream_prefix("sparse-");
    let read = read_matching(store, sparse.clone()).await;
    let got: Vec<(String, u64)> = read
        .events
        .iter()
        .map(|(_, e)| (e.stream_id().to_string(), e.version().get()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("sparse-a".to_owned(), 1),
            ("sparse-b".to_owned(), 1),
            ("sparse-b".to_owned(), 2),
            ("sparse-b".to_owned(), 3),
        ],
        "every match once, in order"
    );
    let none = read_matching(store, LogQuery::from_start(5).with_stream_prefix("absent-")).await;
    assert!(none.events.is_empty(), "no match, no event");

    // Another match after the reader caught up is found from its `next`.
    write(5, 7).await;
    wait_for_log(store, 2_520).await;
    let from = match read.end {
        Some(p) => LogQuery::after(p, 2),
        None => LogQuery::from_start(2),
    };
    let late = read_matching(store, from.with_stream_prefix("sparse-")).await;
    let late: Vec<(String, u64)> = late
        .events
        .iter()
        .map(|(_, e)| (e.stream_id().to_string(), e.version().get()))
        .collect();
    assert_eq!(
        late,
        vec![("sparse-a".to_owned(), 2)],
        "the late match, once"
    );
}

/// A reader paging through the global log while 16 writers append
/// concurrently delivers every committed event exactly once, in an order
/// consistent with each stream.
pub async fn global_log_reader_misses_nothing_under_concurrent_writers<
    S: EventStore + EventLog + Clone + 'static,
>(
    store: &S,
) {
    const WRITERS: usize = 16;
    const APPENDS: u64 = 10;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut delivered: Vec<(Position, String, u64)> = Vec::new();
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let writers_done = done.load(std::sync::atomic::Ordering::SeqCst);
                let query = match delivered.last() {
                    Some((p, _, _)) => LogQuery::after(*p, 7),
                    None => LogQuery::from_start(7),
                };
                let page = store.read_all(&query).await.expect("read_all");
                let empty = page.is_empty();
                delivered.extend(
                    page.into_iter()
                        .map(|(p, e)| (p, e.stream_id().to_string(), e.version().get())),
                );
                if writers_done && empty && delivered.len() as u64 >= WRITERS as u64 * APPENDS {
                    return delivered;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "reader stuck at {} events",
                    delivered.len()
                );
                if empty {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let barrier = Arc::new(Barrier::new(WRITERS));
    let writers = (0..WRITERS).map(|w| {
        let (store, barrier) = (store.clone(), barrier.clone());
        async move {
            // Writers share streams pairwise, so some of them contend.
            let id = stream(&format!("live-{}", w / 2));
            barrier.wait().await;
            let mut written = 0;
            while written < APPENDS {
                let v = store
                    .read_streams(std::slice::from_ref(&id))
                    .await
                    .expect("read")
                    .version(&id)
                    .unwrap_or_default();
                if append_notes(&store, &[(&id, v.get())], &[Note::new(&id, w as u64)])
                    .await
                    .is_ok()
                {
                    written += 1;
                }
            }
        }
    });
    spawn_all(writers).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let delivered = match reader.await {
        Ok(d) => d,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    assert_eq!(
        delivered.len(),
        WRITERS * APPENDS as usize,
        "every committed event, once"
    );
    assert!(
        delivered.windows(2).all(|w| w[0].0 < w[1].0),
        "positions strictly increase"
    );
    let mut per_stream: std::collections::BTreeMap<&str, Vec<u64>> =
        std::collections::BTreeMap::new();
    for (_, s, v) in &delivered {
        per_stream.entry(s).or_default().push(*v);
    }
    for (s, versions) in per_stream {
        assert_eq!(
            versions,
            (1..=versions.len() as u64).collect::<Vec<_>>(),
            "{s} in order, no gap"
        );
    }
}

/// A store with every capability (command-record pruning, the global log,
/// and its subscriptions' checkpoints and leases), as both stores of this
/// workspace are; what [`run_suite`] and the subscription scenarios need.
pub trait SubscribableStore:
    EventStore
    + eventcore::CommandRecords
    + EventLog
    + eventcore::CheckpointStore
    + eventcore::SubscriptionLeases
    + Clone
    + 'static
{
}

impl<S> SubscribableStore for S where
    S: EventStore
        + eventcore::CommandRecords
        + EventLog
        + eventcore::CheckpointStore
        + eventcore::SubscriptionLeases
        + Clone
        + 'static
{
}

type Notes = Arc<std::sync::Mutex<Vec<u64>>>;

/// Starts subscription `name` recording each note's number.
fn note_subscription<S>(store: &S, name: &str, seen: &Notes) -> eventcore::SubscriptionHandle
where
    S: SubscribableStore,
{
    let seen = seen.clone();
    let handler = eventcore::handler_fn(move |_, note: &Note| {
        seen.lock().unwrap_or_else(|p| p.into_inner()).push(note.n);
        async { Ok(()) }
    });
    let config = eventcore::SubscriptionConfig::default()
        .with_poll_interval(std::time::Duration::from_millis(10));
    let name = eventcore::SubscriptionName::try_new(name).expect("valid name");
    eventcore::subscribe(store.clone(), store.clone(), name, handler, config)
}

/// Waits (15 s at most) until `seen` holds `n` notes.
async fn wait_for_notes(seen: &Notes, n: usize) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let len = seen.lock().unwrap_or_else(|p| p.into_inner()).len();
        if len >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {len} of {n} notes delivered in 15 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A checkpoint keeps both parts of its position and moves forward by
/// both, the commit part first (a lane's member slot beats by counting in
/// the commit part; the global log of a store may use it too).
pub async fn a_checkpoint_keeps_its_whole_position<S>(store: &S)
where
    S: SubscribableStore,
{
    let name = eventcore::SubscriptionName::try_new("whole-position").expect("valid name");
    let lease = store
        .try_acquire(&name)
        .await
        .expect("acquire")
        .expect("a free lease");
    let token = store.token(&lease);
    let save = |at: Position| store.save(&name, at, token);
    save(Position::new(3, 7)).await.expect("save");
    assert_eq!(
        store.load(&name).await.expect("load"),
        Some(Position::new(3, 7)),
        "both parts kept"
    );
    save(Position::new(2, 9)).await.expect("an earlier commit");
    assert_eq!(
        store.load(&name).await.expect("load"),
        Some(Position::new(3, 7)),
        "an earlier commit part is behind, whatever its sequence"
    );
    save(Position::new(4, 0)).await.expect("a later commit");
    assert_eq!(
        store.load(&name).await.expect("load"),
        Some(Position::new(4, 0)),
        "a later commit part is ahead, whatever its sequence"
    );
    save(Position::new(4, 2)).await.expect("a later sequence");
    assert_eq!(
        store.load(&name).await.expect("load"),
        Some(Position::new(4, 2)),
        "the sequence breaks a tie"
    );
}

/// A subscription catches up, follows new events, saves its checkpoint on
/// stop, and a new run resumes after it.
pub async fn subscription_catches_up_follows_and_resumes<S>(store: &S)
where
    S: SubscribableStore,
{
    let id = stream("sub-notes");
    append_notes(
        store,
        &[(&id, 0)],
        &[Note::new(&id, 1), Note::new(&id, 2), Note::new(&id, 3)],
    )
    .await
    .expect("seed");
    let seen = Notes::default();
    let handle = note_subscription(store, "resume", &seen);
    wait_for_notes(&seen, 3).await;
    append_notes(store, &[(&id, 3)], &[Note::new(&id, 4), Note::new(&id, 5)])
        .await
        .expect("live");
    wait_for_notes(&seen, 5).await;
    let report = handle.stop().await.expect("clean stop");
    assert_eq!(
        *seen.lock().unwrap_or_else(|p| p.into_inner()),
        vec![1, 2, 3, 4, 5]
    );
    let name = eventcore::SubscriptionName::try_new("resume").expect("valid name");
    assert_eq!(
        store.load(&name).await.expect("load"),
        report.checkpoint,
        "stop saved the checkpoint"
    );

    append_notes(store, &[(&id, 5)], &[Note::new(&id, 6)])
        .await
        .expect("later");
    let again = Notes::default();
    let handle = note_subscription(store, "resume", &again);
    wait_for_notes(&again, 1).await;
    handle.stop().await.expect("clean stop");
    assert_eq!(
        *again.lock().unwrap_or_else(|p| p.into_inner()),
        vec![6],
        "resumed after the checkpoint"
    );
}

/// Two instances of one subscription: the second waits while the first
/// runs, and takes over from its checkpoint when it stops.
pub async fn subscription_instances_never_overlap<S>(store: &S)
where
    S: SubscribableStore,
{
    let id = stream("sub-single");
    append_notes(store, &[(&id, 0)], &[Note::new(&id, 1)])
        .await
        .expect("seed");
    let (a_seen, b_seen) = (Notes::default(), Notes::default());
    let a = note_subscription(store, "single", &a_seen);
    wait_for_notes(&a_seen, 1).await;
    let b = note_subscription(store, "single", &b_seen);
    append_notes(store, &[(&id, 1)], &[Note::new(&id, 2)])
        .await
        .expect("second");
    wait_for_notes(&a_seen, 2).await;
    assert!(
        b_seen.lock().unwrap_or_else(|p| p.into_inner()).is_empty(),
        "B must wait while A runs"
    );
    a.stop().await.expect("A stops");
    append_notes(store, &[(&id, 2)], &[Note::new(&id, 3)])
        .await
        .expect("third");
    wait_for_notes(&b_seen, 1).await;
    b.stop().await.expect("B stops");
    assert_eq!(
        *b_seen.lock().unwrap_or_else(|p| p.into_inner()),
        vec![3],
        "B took over after A's checkpoint"
    );
}

/// A subscription running while 8 writers append (each to a stream of its
/// own, so their commits race to the log in any order) delivers every
/// event exactly once: an append that commits after a later-numbered one
/// is not skipped.
pub async fn subscription_misses_no_late_commit<S>(store: &S)
where
    S: SubscribableStore,
{
    const WRITERS: u64 = 8;
    const APPENDS: u64 = 12;
    let seen = Notes::default();
    let handle = note_subscription(store, "late-commits", &seen);
    let barrier = Arc::new(Barrier::new(WRITERS as usize));
    let writers = (0..WRITERS).map(|w| {
        let (store, barrier) = (store.clone(), barrier.clone());
        async move {
            let id = stream(&format!("sub-late-{w}"));
            barrier.wait().await;
            for i in 0..APPENDS {
                append_notes(&store, &[(&id, i)], &[Note::new(&id, w * APPENDS + i)])
                    .await
                    .expect("each writer owns its stream");
            }
        }
    });
    spawn_all(writers).await;
    wait_for_notes(&seen, (WRITERS * APPENDS) as usize).await;
    // Whatever was skipped would be missing here; whatever was repeated, extra.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    handle.stop().await.expect("clean stop");
    let mut got = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    got.sort_unstable();
    assert_eq!(
        got,
        (0..WRITERS * APPENDS).collect::<Vec<_>>(),
        "every note once"
    );
}

/// An event that does not decode stops the subscription with a typed
/// error, after the events before it, and the checkpoint stays before it.
pub async fn subscription_stops_at_an_undecodable_event<S>(store: &S)
where
    S: SubscribableStore,
{
    let notes = stream("sub-mixed-notes");
    append_notes(store, &[(&notes, 0)], &[Note::new(&notes, 1)])
        .await
        .expect("note");
    execute_with(
        store,
        Credit {
            account: stream("sub-mixed-ledger"),
            amount: 5,
        },
        &RetryPolicy::default(),
    )
    .await
    .expect("credit");
    append_notes(store, &[(&notes, 1)], &[Note::new(&notes, 3)])
        .await
        .expect("note");
    wait_for_log(store, 3).await;
    let seen = Notes::default();
    let handle = note_subscription(store, "strict", &seen);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while !handle.is_finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscription never stopped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let err = handle
        .stop()
        .await
        .expect_err("a ledger event is not a note");
    assert!(
        matches!(err, eventcore::SubscriptionError::Undecodable { .. }),
        "{err:?}"
    );
    assert_eq!(
        *seen.lock().unwrap_or_else(|p| p.into_inner()),
        vec![1],
        "nothing after the bad event"
    );
    let name = eventcore::SubscriptionName::try_new("strict").expect("valid name");
    let checkpoint = store.load(&name).await.expect("load");
    let first = store
        .read_all(&LogQuery::from_start(1))
        .await
        .expect("read_all");
    assert_eq!(
        checkpoint,
        first.events().first().map(|(p, _)| *p),
        "checkpoint after the last good event"
    );
}

/// Spawns every future as its own tokio task (so they run in parallel on a
/// multi-threaded runtime) and collects their outputs in order. A panic in a
/// task is re-raised here.
async fn spawn_all<F, T>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(v) => outputs.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    outputs
}

#[cfg(test)]
mod path_tests {
    use super::{ScenarioReport, paths_not_taken};

    #[test]
    fn a_scenario_that_passes_without_its_path_is_named() {
        let report = |name| ScenarioReport {
            name,
            passed: true,
            paths: eventcore::CacheStats::default(),
        };
        let reports = vec![
            report("kept_state_sees_writes_made_around_it"),
            report("unusable_snapshots_are_ignored"),
        ];
        let missing = paths_not_taken(&reports);
        assert_eq!(missing.len(), 5, "{missing:#?}");
        assert!(
            missing[0].contains("did not take a kept fold used"),
            "{missing:#?}"
        );
        assert!(
            missing
                .iter()
                .any(|m| m == "refusal_on_a_kept_state_is_confirmed_first did not run"),
            "{missing:#?}"
        );
    }
}
