//! A fresh, migrated store per test, each in a schema of its own so tests
//! run in parallel without sharing rows.

#![allow(dead_code, unreachable_pub)]

pub mod cluster;
pub mod proxy;

use std::sync::atomic::{AtomicU32, Ordering};

use eventcore_postgres::{PostgresConfig, PostgresEventStore, SchemaName};

/// The server to test against: `DATABASE_URL` (set by `./scripts/test`,
/// which starts a throwaway cluster from the local PostgreSQL binaries when
/// it is unset); failing that, with the `testcontainers` feature, a
/// PostgreSQL container started once per test process (needs Docker).
pub async fn database_url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => fallback_url().await,
    }
}

#[cfg(not(feature = "testcontainers"))]
async fn fallback_url() -> String {
    panic!(
        "DATABASE_URL is not set: run the tests with ./scripts/test, which starts a throwaway \
         PostgreSQL, point DATABASE_URL at a server you can create schemas in, or enable the \
         `testcontainers` feature to start one in Docker"
    )
}

#[cfg(feature = "testcontainers")]
async fn fallback_url() -> String {
    use testcontainers_modules::{
        postgres::Postgres,
        testcontainers::{ContainerAsync, runners::AsyncRunner},
    };
    static CONTAINER: tokio::sync::OnceCell<(ContainerAsync<Postgres>, String)> =
        tokio::sync::OnceCell::const_new();
    let (_, url) = CONTAINER
        .get_or_init(|| async {
            let container = Postgres::default()
                .start()
                .await
                .expect("DATABASE_URL is unset and Docker could not start PostgreSQL");
            let port = container
                .get_host_port_ipv4(5432)
                .await
                .expect("container port");
            let url = format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres");
            (container, url)
        })
        .await;
    url.clone()
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
    let store = PostgresEventStore::connect_with(&database_url().await, config)
        .await
        .expect("connect to DATABASE_URL");
    store.migrate().await.expect("migrate");
    store
}

/// A pool for a test's own SQL, seeing the schema the way `store` does
/// (its `search_path`), under another application name so that counting
/// or ending the store's sessions leaves it alone. Connects lazily.
pub fn sql(store: &PostgresEventStore) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_lazy_with(
            store
                .connect_options()
                .clone()
                .application_name("eventcore-test-sql"),
        )
}

/// Note 1 appended as version 1 of the empty stream `id` with the store's
/// own append statement (`src/sql/append.sql`), on `conn` (a transaction
/// the caller keeps open, or not): the append's reply row, or the error.
pub async fn append_first_note(
    conn: &mut sqlx::PgConnection,
    id: &eventcore::StreamId,
) -> Result<sqlx::postgres::PgRow, sqlx::Error> {
    use eventcore_testing::fixtures::Note;
    sqlx::query(include_str!("../../src/sql/append.sql"))
        .bind(vec![id.as_str()])
        .bind(vec![0i64])
        .bind(vec![id.as_str()])
        .bind(vec![1i64])
        .bind(vec!["Note"])
        .bind(vec![
            serde_json::to_string(&Note::new(id, 1)).expect("a note serialises"),
        ])
        .bind(vec![uuid::Uuid::now_v7()])
        .bind(vec!["{}"])
        .bind(vec![None::<&str>])
        .bind(vec![None::<&str>])
        .bind(None::<&str>)
        .bind(None::<&str>)
        .bind(None::<Vec<i64>>)
        .bind(vec![1i64])
        .fetch_one(conn)
        .await
}

/// Ends the lease of `name` as the death of its holder's session would:
/// terminates the session that holds the lease's advisory lock. Whether a
/// lease was held to end.
pub async fn lose_lease(sql: &sqlx::PgPool, name: &eventcore::SubscriptionName) -> bool {
    sqlx::query_scalar::<_, Option<bool>>(
        "SELECT bool_or(pg_terminate_backend(l.holder_pid)) FROM eventcore_leases AS l
         WHERE l.name = $1
           AND l.holder_pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)",
    )
    .bind(name.as_ref())
    .fetch_one(sql)
    .await
    .expect("end the lease's session")
    .unwrap_or(false)
}
