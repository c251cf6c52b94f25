//! Kept states and snapshots on the in-memory store change no outcome.

use std::num::NonZeroU64;

use eventcore::{CacheConfig, Executor};
use eventcore_memory::InMemoryEventStore;
use eventcore_testing::cache::{Stores, check_cache_equivalence, two_processes_conserve_money};

fn small() -> CacheConfig {
    CacheConfig::default()
        .with_max_entries(2)
        .with_snapshot_every(NonZeroU64::new(3))
}

#[test]
fn kept_states_and_snapshots_change_no_outcome() {
    check_cache_equivalence(128, || async {
        let shared = InMemoryEventStore::new();
        Stores {
            processes: [
                Executor::new(shared.clone()).with_cache(small()),
                Executor::new(shared).with_cache(small()),
            ],
            reference: Executor::new(InMemoryEventStore::new()).with_cache(CacheConfig::disabled()),
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_see_each_other_and_conserve_money() {
    let shared = InMemoryEventStore::new();
    two_processes_conserve_money([
        Executor::new(shared.clone()).with_cache(CacheConfig::default()),
        Executor::new(shared).with_cache(CacheConfig::default()),
    ])
    .await;
}
