//! The conformance suite on the SQLite store, by capability: reads and
//! appends, the execute loop, snapshots, command ids and the global log.

mod support;

eventcore_testing::store_conformance_tests!(support::fresh_store());
eventcore_testing::execute_conformance_tests!(support::fresh_store());
eventcore_testing::snapshot_conformance_tests!(support::fresh_store());
eventcore_testing::command_id_conformance_tests!(support::fresh_store());
eventcore_testing::log_conformance_tests!(support::fresh_store());
