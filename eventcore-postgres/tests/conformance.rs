//! The whole conformance suite on a real PostgreSQL server, with the
//! store's payload limit passed in.

mod support;

eventcore_testing::conformance_tests!(
    support::fresh_store(),
    eventcore_testing::conformance::Limits::default()
        .with_max_payload_bytes(eventcore_postgres::DEFAULT_MAX_PAYLOAD_BYTES)
);
