//! The whole conformance suite on the in-memory store, and again through
//! an `Arc` (the forwarding impls every trait has for `&S`, `Arc<S>` and
//! `Box<S>`, written once per trait by a macro under
//! `clippy::missing_trait_methods`): a forwarding impl that forgot a method
//! falls back to its default, which fails scenarios here for the methods
//! whose default refuses (command ids, snapshots).

eventcore_testing::conformance_tests!(async { eventcore_memory::InMemoryEventStore::new() });

mod through_an_arc {
    eventcore_testing::conformance_tests!(async {
        std::sync::Arc::new(eventcore_memory::InMemoryEventStore::new())
    });
}
