//! Embedded migrations (tables, indexes, triggers; verified by checksum)
//! and functions (one file each, made again when their text changes),
//! applied under an advisory lock in one transaction.
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
];

/// Advisory lock that serialises concurrent migrations of one database,
/// on the two-integer form of the key (apart from the bigint keys
/// applications use): "evco" and "migr" in ASCII.
const MIGRATION_LOCK: (i32, i32) = (0x6576_636f, 0x6d69_6772);

/// A function of the store's, defined once, in a file of its own.
struct Function {
    name: &'static str,
    sql: &'static str,
}

/// Every function the store calls, re-applied by [`migrate`] when its text
/// changes. The immutability trigger's function stays in migration 1, with
/// its triggers.
const FUNCTIONS: &[Function] = &[
    Function {
        name: "eventcore_lock_streams",
        sql: include_str!("../functions/eventcore_lock_streams.sql"),
    },
    Function {
        name: "eventcore_append",
        sql: include_str!("../functions/eventcore_append.sql"),
    },
    Function {
        name: "eventcore_read_tails",
        sql: include_str!("../functions/eventcore_read_tails.sql"),
    },
    Function {
        name: "eventcore_read_from_snapshot",
        sql: include_str!("../functions/eventcore_read_from_snapshot.sql"),
    },
    Function {
        name: "eventcore_read_streams_for",
        sql: include_str!("../functions/eventcore_read_streams_for.sql"),
    },
    Function {
        name: "eventcore_read_tails_for",
        sql: include_str!("../functions/eventcore_read_tails_for.sql"),
    },
    Function {
        name: "eventcore_read_from_snapshot_for",
        sql: include_str!("../functions/eventcore_read_from_snapshot_for.sql"),
    },
];

/// The SHA-256 of `text`, in hex.
fn checksum(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The eventcore functions of the current schema other than the
/// immutability trigger's, by signature: what [`migrate`] drops before it
/// makes them again, so that no overload or result type of an older
/// version survives.
const OWN_FUNCTIONS: &str =
    "SELECT format('%I(%s)', p.proname, pg_get_function_identity_arguments(p.oid))
     FROM pg_proc AS p
     WHERE p.pronamespace = current_schema()::regnamespace
       AND p.proname LIKE 'eventcore\\_%'
       AND p.proname <> 'eventcore_reject_change'";

/// Migrates the schema: the numbered migrations not applied yet (tables,
/// indexes, triggers), each verified by checksum once applied, then the
/// functions, made again from their files when any text differs from the
/// one recorded; all in one transaction under an advisory lock.
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
        .map_err(setup)?;
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
         );
         ALTER TABLE eventcore_migrations ADD COLUMN IF NOT EXISTS checksum text;
         CREATE TABLE IF NOT EXISTS eventcore_functions (
             name        text PRIMARY KEY,
             checksum    text NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(setup)?;
    let applied: Vec<(i64, Option<String>)> =
        sqlx::query_as("SELECT version, checksum FROM eventcore_migrations")
            .fetch_all(&mut *tx)
            .await
            .map_err(setup)?;

    let known = MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(found) = applied.iter().map(|(v, _)| *v).filter(|v| *v > known).max() {
        return Err(PostgresError::SchemaTooNew { found, known });
    }
    for m in MIGRATIONS {
        let expected = checksum(m.sql);
        match applied.iter().find(|(v, _)| *v == m.version) {
            Some((_, Some(found))) if *found != expected => {
                return Err(PostgresError::MigrationChanged {
                    version: m.version,
                    description: m.description,
                    found: found.clone(),
                    expected,
                });
            }
            Some((_, Some(_))) => {}
            // Applied before checksums were kept: recorded now.
            Some((_, None)) => {
                sqlx::query("UPDATE eventcore_migrations SET checksum = $2 WHERE version = $1")
                    .bind(m.version)
                    .bind(&expected)
                    .execute(&mut *tx)
                    .await
                    .map_err(step(m.version, m.description))?;
            }
            None => {
                tx.execute(m.sql)
                    .await
                    .map_err(step(m.version, m.description))?;
                sqlx::query(
                    "INSERT INTO eventcore_migrations (version, description, checksum)
                     VALUES ($1, $2, $3)",
                )
                .bind(m.version)
                .bind(m.description)
                .bind(&expected)
                .execute(&mut *tx)
                .await
                .map_err(step(m.version, m.description))?;
                tracing::info!(
                    version = m.version,
                    description = m.description,
                    "migration applied"
                );
            }
        }
    }
    apply_functions(&mut tx).await?;
    tx.commit().await.map_err(step(0, "commit"))
}

/// Makes every function again from its file if any file's text differs
/// from the one recorded (or none is): all are dropped first, so that the
/// result is the same whatever versions the database went through.
async fn apply_functions(tx: &mut PgConnection) -> Result<(), PostgresError> {
    let failed = |source: sqlx::Error| PostgresError::Migrate {
        version: 0,
        description: "functions",
        source,
    };
    let recorded: Vec<(String, String)> =
        sqlx::query_as("SELECT name, checksum FROM eventcore_functions")
            .fetch_all(&mut *tx)
            .await
            .map_err(failed)?;
    let current = FUNCTIONS.len() == recorded.len()
        && FUNCTIONS.iter().all(|f| {
            recorded
                .iter()
                .any(|(name, sum)| name == f.name && *sum == checksum(f.sql))
        });
    if current {
        return Ok(());
    }
    let existing: Vec<String> = sqlx::query_scalar(OWN_FUNCTIONS)
        .fetch_all(&mut *tx)
        .await
        .map_err(failed)?;
    for signature in existing {
        tx.execute(format!("DROP FUNCTION {signature}").as_str())
            .await
            .map_err(failed)?;
    }
    tx.execute("DELETE FROM eventcore_functions")
        .await
        .map_err(failed)?;
    for f in FUNCTIONS {
        tx.execute(f.sql)
            .await
            .map_err(|source| PostgresError::Migrate {
                version: 0,
                description: f.name,
                source,
            })?;
        sqlx::query("INSERT INTO eventcore_functions (name, checksum) VALUES ($1, $2)")
            .bind(f.name)
            .bind(checksum(f.sql))
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
    }
    tracing::info!(functions = FUNCTIONS.len(), "functions made again");
    Ok(())
}
