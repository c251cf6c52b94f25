//! The in-memory store against the reference model.

#[test]
fn memory_store_agrees_with_the_model() {
    eventcore_testing::model::check_store_against_model(256, || async {
        eventcore_memory::InMemoryEventStore::new()
    });
}
