//! PostgreSQL event store for eventcore.
