//! A fresh, migrated store per test, each in a schema of its own so tests
//! run in parallel without sharing rows.

#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU32, Ordering};

use eventcore_postgres::{PostgresConfig, PostgresEventStore, SchemaName};

/// The server to test against: `DATABASE_URL` (set by `./scripts/test`,
/// which starts a throwaway cluster when it is unset).
pub fn database_url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "DATABASE_URL is not set: run the tests with ./scripts/test, which starts a \
             throwaway PostgreSQL, or point DATABASE_URL at a server you can create schemas in"
        ),
    }
}

/// A schema name unique to this test process and call.
pub fn unique_schema() -> SchemaName {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "ec_test_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    );
    SchemaName::try_new(name).expect("valid schema name")
}

pub fn config(schema: SchemaName) -> PostgresConfig {
    PostgresConfig::default()
        .max_connections(16)
        .application_name(schema.to_string())
        .schema(schema)
}

/// A migrated store in a new schema.
pub async fn fresh_store() -> PostgresEventStore {
    store_with(config(unique_schema())).await
}

/// A migrated store with the given settings.
pub async fn store_with(config: PostgresConfig) -> PostgresEventStore {
    let store = PostgresEventStore::connect_with(&database_url(), config)
        .await
        .expect("connect to DATABASE_URL");
    store.migrate().await.expect("migrate");
    store
}
