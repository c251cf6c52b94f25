//! The whole conformance suite on the in-memory store.

eventcore_testing::conformance_tests!(async { eventcore_memory::InMemoryEventStore::new() });
