//! What the kit's property checks share: a proptest runner with no failure
//! file, and a runtime to drive each case's async body.

use proptest::test_runner::{Config, TestRunner};

/// A runner of `cases` cases and a current-thread runtime for their bodies.
///
/// # Panics
/// If the runtime cannot be built (the test cannot run at all).
pub(crate) fn runner(cases: u32) -> (TestRunner, tokio::runtime::Runtime) {
    let runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot build a runtime: {e}"),
    };
    (runner, runtime)
}
