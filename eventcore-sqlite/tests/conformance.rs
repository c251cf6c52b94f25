//! The whole conformance suite on the SQLite store, and once more through
//! `run_suite`, which must see every scenario take the path it tests.

mod support;

eventcore_testing::conformance_tests!(support::fresh_store());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_takes_the_path_it_tests() {
    let reports = eventcore_testing::conformance::run_suite(support::fresh_store).await;
    for report in &reports {
        println!("{report}");
    }
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed)
        .map(ToString::to_string)
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let missing = eventcore_testing::conformance::paths_not_taken(&reports);
    assert!(missing.is_empty(), "{missing:#?}");
}
