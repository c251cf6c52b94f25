//! Test kit for eventcore: for store authors, to prove a backend, and for
//! service authors, to test their commands, alone and under concurrency.
//!
//! | module | what it gives |
//! |---|---|
//! | [`conformance`] | the scenarios every [`EventStore`](eventcore::EventStore) must pass, as plain async functions; [`conformance_tests!`] expands them into `#[tokio::test]`s for a store factory |
//! | [`model`] | model-based testing: generated reads and appends with current, stale and future expected versions, compared with a reference model; shrunk failures print the smallest failing sequence |
//! | [`cache`] | proof that kept states and snapshots never change an outcome: random histories on two caching "processes" against a store that keeps nothing, and 16 tasks paying through two processes |
//! | [`concurrency`] | property-tested concurrency for your commands: a batch on many tasks with seeded perturbations, every store call recorded (every read and discovery round, every append), then your invariant, version use, serializability (every decision made again through `execute` on what it read, twice) and no lost or duplicated events; a failure prints the one line that replays it |
//! | [`decision`] | [`decide_on`](decision::decide_on): a command's decision on given events, made by `execute` itself against a store of fixed events |
//! | [`faults`] | [`FaultyStore`](faults::FaultyStore): seeded conflicts, transient errors before and after commit, delays |
//! | [`handover`] | exactly once across lease handovers: one scenario, with a fixture per backend |
//! | [`lanes`] | lanes that share a subscription across instances, and dead letters that park a poison key: scenarios with a fixture per backend |
//! | [`gwt`] | given/when/then for one command's decision, without a store: every stream it reads, discovered ones included, and the writes `execute` accepts |
//! | [`trace`] | [`Capture`](trace::Capture): the spans and events eventcore emits, to assert on |
//! | [`fixtures`], [`strategies`] | the events, commands and proptest strategies the kit's own scenarios use; [`fixtures::shop`], a reservation that discovers its customer |
//! | [`proptest`] | proptest itself, re-exported, so a service's `Cargo.toml` names only `eventcore-testing` |
//!
//! The kit's own tests run the suite, the model test, the handover
//! scenario and the concurrency checker against deliberately broken stores
//! and commands, and assert that each is caught: no version check on
//! read-only participants or on discovered streams, non-atomic appends,
//! reused versions, lost events, dropped metadata or schema versions,
//! forgotten command ids or ids recorded apart from their events, reads
//! that miss records or events after kept folds, snapshots read twice or
//! used at another schema version, kept folds taken from another store's
//! identity, a global log or subscription that skips a late commit, a
//! projection that commits after losing its lease, and folds that ignore
//! an event type or are not deterministic.
//!
//! A backend runs the whole suite with one line, or the parts it
//! implements, one macro per capability: `store_conformance_tests!` (reads
//! and appends; the store's limits passed in), `execute_conformance_tests!`,
//! `snapshot_conformance_tests!`, `command_id_conformance_tests!`,
//! `log_conformance_tests!` and `subscription_conformance_tests!`:
//!
//! ```
//! # // The macro is meant for a test module; here we only show that it expands.
//! # mod demo {
//! eventcore_testing::conformance_tests!(async { eventcore_memory::InMemoryEventStore::new() });
//! # }
//! # mod reads_and_appends {
//! use eventcore_testing::conformance::Limits;
//! eventcore_testing::store_conformance_tests!(
//!     async { eventcore_memory::InMemoryEventStore::new().with_max_payload_bytes(4096) },
//!     Limits::default().with_max_payload_bytes(4096)
//! );
//! eventcore_testing::execute_conformance_tests!(async { eventcore_memory::InMemoryEventStore::new() });
//! # }
//! ```
//!
//! A service checks its commands under concurrency:
//!
//! ```
//! use eventcore_testing::{
//!     concurrency::{ConcurrencyConfig, check_concurrency},
//!     fixtures::ledger_invariant,
//!     strategies::{funded, ledger_batch},
//! };
//!
//! check_concurrency(
//!     4,                                                   // proptest cases
//!     || async { eventcore_memory::InMemoryEventStore::new() },
//!     funded(3, 100),                                      // setup commands
//!     ledger_batch(3, 20),                                 // strategy of command batches
//!     ConcurrencyConfig::default(),
//!     ledger_invariant,                                    // your invariant over the log
//! );
//! ```
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

/// The proptest the kit is built on, re-exported: strategies for your
/// commands (`eventcore_testing::proptest::prelude::*`) match the kit's
/// version without a `proptest` line in your `Cargo.toml`.
pub use proptest;

pub mod cache;
mod cases;
pub mod concurrency;
pub mod conformance;
pub mod decision;
pub mod faults;
pub mod fixtures;
pub mod gwt;
pub mod handover;
pub mod lanes;
pub mod model;
pub mod reactors;
pub mod strategies;
pub mod trace;
