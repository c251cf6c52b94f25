//! The whole conformance suite on the SQLite store, and once more through
//! `run_suite`, which must see every scenario take the path it tests.

mod support;

eventcore_testing::conformance_tests!(support::fresh_store());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_takes_the_path_it_tests() {
    eventcore_testing::conformance::check_every_path_taken(support::fresh_store).await;
}
