//! Test kit for eventcore.
//!
//! [`conformance`] holds the scenarios every [`EventStore`](eventcore::EventStore)
//! must pass, written once as plain async functions;
//! [`conformance_tests!`] expands them into `#[tokio::test]`s for a store
//! factory, so each backend proves the same guarantees:
//!
//! ```
//! # // The macro is meant for a test module; here we only show that it expands.
//! # mod demo {
//! eventcore_testing::conformance_tests!(eventcore_memory::InMemoryEventStore::new());
//! # }
//! ```
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod concurrency;
pub mod conformance;
pub mod faults;
pub mod fixtures;
pub mod gwt;
pub mod model;
pub mod strategies;
