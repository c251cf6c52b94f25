//! The PostgreSQL store against the reference model, on a real server.

mod support;

#[test]
fn postgres_store_agrees_with_the_model() {
    eventcore_testing::model::check_store_against_model(64, support::fresh_store);
}
