//! The whole conformance suite on a real PostgreSQL server, with the
//! store's payload limit passed in.

mod support;

eventcore_testing::conformance_tests!(
    support::fresh_store(),
    eventcore_testing::conformance::Limits::default()
        .with_max_payload_bytes(eventcore_postgres::DEFAULT_MAX_PAYLOAD_BYTES)
);

/// The whole suite once more, reporting which paths of the execute loop
/// each scenario took: every scenario passes, and the ones that exist to
/// take a path (kept folds, tail reads, snapshots) took it here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_takes_the_path_it_tests() {
    eventcore_testing::conformance::check_every_path_taken(support::fresh_store).await;
}
