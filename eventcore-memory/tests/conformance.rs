//! The whole conformance suite on the in-memory store; again through an
//! `Arc`; the read-and-append part with a smaller payload limit; and the
//! parts a store that only reads and appends can run.

use eventcore_memory::InMemoryEventStore;
use eventcore_testing::conformance::Limits;

eventcore_testing::conformance_tests!(async { InMemoryEventStore::new() });

/// The forwarding impls every trait has for `&S`, `Arc<S>` and `Box<S>`
/// are written once per trait by a macro under
/// `clippy::missing_trait_methods`; a forwarding impl that forgot a method
/// falls back to its default, which fails scenarios here for the methods
/// whose default refuses (command ids, snapshots).
mod through_an_arc {
    eventcore_testing::conformance_tests!(async {
        std::sync::Arc::new(super::InMemoryEventStore::new())
    });
}

/// Limits are the store's, passed in: here 4 KiB per event.
mod small_payload_limit {
    eventcore_testing::store_conformance_tests!(
        async { super::InMemoryEventStore::new().with_max_payload_bytes(4096) },
        super::Limits::default().with_max_payload_bytes(4096)
    );
}

/// A store that implements only the two required methods, reading and
/// appending: no global log, subscriptions, command ids, snapshots, kept
/// states or queue. It runs the store and execute parts of the suite.
mod reads_and_appends_only {
    use eventcore::{AppendOutcome, EventStore, StoreError, StreamId, StreamReads, StreamWrites};

    #[derive(Clone, Default)]
    pub struct Minimal(super::InMemoryEventStore);

    impl EventStore for Minimal {
        async fn read_streams(&self, streams: &[StreamId]) -> Result<StreamReads, StoreError> {
            self.0.read_streams(streams).await
        }

        async fn append(&self, writes: StreamWrites) -> Result<AppendOutcome, StoreError> {
            self.0.append(writes).await
        }
    }

    eventcore_testing::store_conformance_tests!(async { Minimal::default() });
    eventcore_testing::execute_conformance_tests!(async { Minimal::default() });

    /// A wrapper that forwards nothing optional does not pass the snapshot
    /// scenarios vacuously: each fails, naming the capability it lacks.
    #[tokio::test]
    async fn the_snapshot_scenarios_fail_naming_the_missing_state_cache() {
        use eventcore_testing::conformance::{
            snapshot_is_saved_and_used_after_a_restart, unusable_snapshots_are_ignored,
        };
        let runs = [
            tokio::spawn(async {
                snapshot_is_saved_and_used_after_a_restart(&Minimal::default()).await;
            }),
            tokio::spawn(async {
                unusable_snapshots_are_ignored(&Minimal::default()).await;
            }),
        ];
        for run in runs {
            let panic = run.await.expect_err("passed without a state cache");
            let panic = panic.into_panic();
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|m| (*m).to_owned()))
                .unwrap_or_default();
            assert!(
                message.contains("need a state cache")
                    && message.contains("EventStore::state_cache returned None"),
                "{message}"
            );
        }
    }
}
