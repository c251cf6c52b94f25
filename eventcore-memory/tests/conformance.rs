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

/// A store that implements only the required methods, reading, appending
/// and its identity: no global log, subscriptions, command ids or
/// snapshots (it drops the ones it is handed). It runs the store and
/// execute parts of the suite, through the executor's cache and queue as
/// every store does.
mod reads_and_appends_only {
    use eventcore::{
        AppendOutcome, EventStore, ReadAnswer, ReadRequest, StoreError, StoreIdentity, StreamWrites,
    };

    #[derive(Clone, Default)]
    pub struct Minimal(super::InMemoryEventStore);

    impl EventStore for Minimal {
        async fn read(&self, request: ReadRequest) -> Result<ReadAnswer, StoreError> {
            if request.command_id().is_some() {
                return Err(StoreError::command_ids_unsupported::<Self>("find_command"));
            }
            // Whole or tails only: no snapshot is looked for.
            self.0
                .read(ReadRequest::tails(request.held().iter().cloned()))
                .await
        }

        async fn append(&self, mut writes: StreamWrites) -> Result<AppendOutcome, StoreError> {
            if writes.command().is_some() {
                return Err(StoreError::command_ids_unsupported::<Self>("append"));
            }
            drop(writes.take_snapshot());
            self.0.append(writes).await
        }

        fn identity(&self) -> &StoreIdentity {
            self.0.identity()
        }
    }

    eventcore_testing::store_conformance_tests!(async { Minimal::default() });
    eventcore_testing::execute_conformance_tests!(async { Minimal::default() });

    /// A command with an id on a store without command ids is refused with
    /// a typed error naming what is missing, the call and the store, and
    /// writes nothing.
    #[tokio::test]
    async fn a_missing_capability_is_unsupported_naming_the_store() {
        let store = Minimal::default();
        let id = eventcore::CommandId::try_new("needs-ids").unwrap();
        let err = eventcore::execute_with(
            &store,
            eventcore_testing::fixtures::Credit {
                account: eventcore_testing::fixtures::stream("unsupported"),
                amount: 1,
            },
            eventcore::ExecuteOptions::new().with_command_id(id),
        )
        .await
        .expect_err("no command ids here");
        let eventcore::ExecuteError::Store(StoreError::Unsupported {
            what,
            operation,
            store: named,
        }) = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!((*what, *operation), ("command ids", "find_command"));
        assert!(named.ends_with("Minimal"), "{named}");
        assert!(
            err.to_string()
                .contains("Minimal does not support command ids"),
            "{err}"
        );
        assert!(store.0.all_events().is_empty(), "nothing written");
    }

    /// A store that keeps no snapshots does not pass the snapshot scenarios
    /// vacuously: each fails, saying the snapshot was not kept.
    #[tokio::test]
    async fn the_snapshot_scenarios_fail_on_a_store_without_snapshots() {
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
            let panic = run.await.expect_err("passed without snapshots");
            let panic = panic.into_panic();
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|m| (*m).to_owned()))
                .unwrap_or_default();
            assert!(
                message.contains("no snapshot after") || message.contains("was not kept within"),
                "{message}"
            );
        }
    }
}

/// The whole suite once more, reporting which paths of the execute loop
/// each scenario took: every scenario passes, and the ones that exist to
/// take a path (kept folds, tail reads, snapshots) took it here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_takes_the_path_it_tests() {
    eventcore_testing::conformance::check_every_path_taken(|| async { InMemoryEventStore::new() })
        .await;
}
