//! The load tool's workloads run on the in-memory store without a store
//! error and with the bank's invariants holding: a workload whose commands
//! fail (as the fan-out transfer once did, every one of them) is caught
//! here, not first in a bench run.

use std::time::Duration;

use clap::ValueEnum;
use eventcore_examples::load::{LoadConfig, Workload, run};
use eventcore_memory::InMemoryEventStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_without_store_errors() {
    for workload in Workload::value_variants() {
        let config = LoadConfig {
            workload: *workload,
            concurrency: vec![1, 4],
            duration: Duration::from_millis(300),
            seed: 7,
            command_ids: false,
        };
        let report = run(
            InMemoryEventStore::new(),
            "memory",
            config,
            indicatif::ProgressBar::hidden(),
        )
        .await
        .expect("the workload runs");
        for level in &report.levels {
            assert!(
                level.commands > 0,
                "{workload:?} at {}: no command ran",
                level.concurrency
            );
            assert_eq!(
                level.store_errors, 0,
                "{workload:?} at {}: every command must succeed or be refused",
                level.concurrency
            );
        }
        let checks = &report.checks;
        assert!(checks.all_passed(), "{workload:?}: {checks:?}");
    }
}
