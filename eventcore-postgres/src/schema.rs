//! Embedded migrations, applied under an advisory lock in one transaction.
//!
//! eventcore keeps its own migration table (`eventcore_migrations`) rather
//! than sqlx's `_sqlx_migrations`: the application usually migrates its own
//! tables with sqlx too, and two migrators sharing one table each see the
//! other's rows as unknown migrations and refuse to run.

use sqlx::{Connection, Executor, PgConnection};

use crate::{PostgresError, config::SchemaName};

struct Migration {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "events table, immutability triggers, append function",
        sql: include_str!("../migrations/0001_events.sql"),
    },
    Migration {
        version: 2,
        description: "index for reading the global log in commit order",
        sql: include_str!("../migrations/0002_commit_order_index.sql"),
    },
    Migration {
        version: 3,
        description: "subscription checkpoints",
        sql: include_str!("../migrations/0003_checkpoints.sql"),
    },
    Migration {
        version: 4,
        description: "snapshots of declared command states; tail reads",
        sql: include_str!("../migrations/0004_snapshots.sql"),
    },
    Migration {
        version: 5,
        description: "event metadata: correlation and causation ids",
        sql: include_str!("../migrations/0005_event_metadata.sql"),
    },
    Migration {
        version: 6,
        description: "command ids recorded with their events; payloads kept verbatim",
        sql: include_str!("../migrations/0006_commands.sql"),
    },
    Migration {
        version: 7,
        description: "schema versions of stored events",
        sql: include_str!("../migrations/0007_schema_versions.sql"),
    },
    Migration {
        version: 8,
        description: "fencing tokens of subscription leases",
        sql: include_str!("../migrations/0008_lease_tokens.sql"),
    },
    Migration {
        version: 9,
        description: "advisory locks in a key space of their own",
        sql: include_str!("../migrations/0009_lock_key_space.sql"),
    },
];

/// Advisory lock that serialises concurrent migrations of one database,
/// on the two-integer form of the key (apart from the bigint keys
/// applications use): "evco" and "migr" in ASCII.
const MIGRATION_LOCK: (i32, i32) = (0x6576_636f, 0x6d69_6772);

pub(crate) async fn migrate(
    conn: &mut PgConnection,
    schema: Option<&SchemaName>,
) -> Result<(), PostgresError> {
    let step = |version: i64, description: &'static str| {
        move |source: sqlx::Error| PostgresError::Migrate {
            version,
            description,
            source,
        }
    };
    let setup = step(0, "lock and migration table");
    let mut tx = conn.begin().await.map_err(setup)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(MIGRATION_LOCK.0)
        .bind(MIGRATION_LOCK.1)
        .execute(&mut *tx)
        .await
        .map_err(step(0, "lock and migration table"))?;
    if let Some(schema) = schema {
        // SchemaName admits only [a-z0-9_], so it needs no quoting.
        let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
        tx.execute(create.as_str())
            .await
            .map_err(step(0, "create schema"))?;
    }
    tx.execute(
        "CREATE TABLE IF NOT EXISTS eventcore_migrations (
             version     bigint PRIMARY KEY,
             description text NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(step(0, "lock and migration table"))?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM eventcore_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(step(0, "lock and migration table"))?;

    let known = MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(found) = applied.iter().copied().filter(|v| *v > known).max() {
        return Err(PostgresError::SchemaTooNew { found, known });
    }
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tx.execute(m.sql)
            .await
            .map_err(step(m.version, m.description))?;
        sqlx::query("INSERT INTO eventcore_migrations (version, description) VALUES ($1, $2)")
            .bind(m.version)
            .bind(m.description)
            .execute(&mut *tx)
            .await
            .map_err(step(m.version, m.description))?;
        tracing::info!(
            version = m.version,
            description = m.description,
            "migration applied"
        );
    }
    tx.commit().await.map_err(step(0, "commit"))
}
