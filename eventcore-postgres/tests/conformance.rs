//! The whole conformance suite on a real PostgreSQL server.

mod support;

eventcore_testing::conformance_tests!(support::fresh_store());
