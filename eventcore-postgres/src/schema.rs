//! Embedded migrations (tables, indexes, triggers; verified by checksum)
//! and functions (one file each, made again when their text changes),
//! applied under a session advisory lock: each migration in a transaction
//! of its own, or, if marked [`Step::OutsideTransaction`], on its own (an
//! index built `CONCURRENTLY` on a live log), then the functions in one
//! transaction.
//!
//! eventcore keeps its own migration table (`eventcore_migrations`) rather
//! than sqlx's `_sqlx_migrations`: the application usually migrates its own
//! tables with sqlx too, and two migrators sharing one table each see the
//! other's rows as unknown migrations and refuse to run.

use sqlx::{Connection, Executor, PgConnection};

use crate::{PostgresError, config::SchemaName};

pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) description: &'static str,
    pub(crate) sql: &'static str,
    pub(crate) step: Step,
}

/// How a migration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// In a transaction of its own, with its record: it is applied whole or
    /// not at all.
    InTransaction,
    /// On its own, outside any transaction, then recorded: for a statement
    /// PostgreSQL refuses in a transaction block, or one that must not hold
    /// a lock on the events for long (`CREATE INDEX CONCURRENTLY`). Its
    /// file holds one statement, written so that running it again after a
    /// failure is safe (`IF NOT EXISTS`, and dropping an invalid index left
    /// by a failed concurrent build first).
    // No released migration needs it yet; the tests below run one.
    #[cfg_attr(not(test), allow(dead_code))]
    OutsideTransaction,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "events table, immutability triggers, append function",
        sql: include_str!("../migrations/0001_events.sql"),
        step: Step::InTransaction,
    },
    Migration {
        version: 2,
        description: "index for reading the global log in commit order",
        sql: include_str!("../migrations/0002_commit_order_index.sql"),
        step: Step::InTransaction,
    },
    Migration {
        version: 3,
        description: "subscription checkpoints",
        sql: include_str!("../migrations/0003_checkpoints.sql"),
        step: Step::InTransaction,
    },
    Migration {
        version: 4,
        description: "snapshots of declared command states; tail reads",
        sql: include_str!("../migrations/0004_snapshots.sql"),
        step: Step::InTransaction,
    },
    Migration {
        version: 5,
        description: "event metadata: correlation and causation ids",
        sql: include_str!("../migrations/0005_event_metadata.sql"),
        step: Step::InTransaction,
    },
    Migration {
        version: 6,
        description: "command ids recorded with their events; payloads kept verbatim",
        sql: include_str!("../migrations/0006_commands.sql"),
        step: Step::InTransaction,
    },
    Migration {
        version: 7,
        description: "schema versions of stored events",
        sql: include_str!("../migrations/0007_schema_versions.sql"),
        step: Step::InTransaction,
    },
    Migration {
        version: 8,
        description: "fencing tokens of subscription leases",
        sql: include_str!("../migrations/0008_lease_tokens.sql"),
        step: Step::InTransaction,
    },
    Migration {
        version: 9,
        description: "the ids of the events each snapshot folded last",
        sql: include_str!("../migrations/0009_snapshot_event_ids.sql"),
        step: Step::InTransaction,
    },
    Migration {
        version: 10,
        description: "commit keys that survive a restore onto another cluster",
        sql: include_str!("../migrations/0010_log_clock.sql"),
        step: Step::InTransaction,
    },
    Migration {
        version: 11,
        description: "dead letters of subscription lanes",
        sql: include_str!("../migrations/0011_dead_letters.sql"),
        step: Step::InTransaction,
    },
    Migration {
        version: 12,
        description: "the outbox of reactors' external effects",
        sql: include_str!("../migrations/0012_outbox.sql"),
        step: Step::InTransaction,
    },
];

/// Advisory lock that serialises concurrent migrations of one database,
/// on the two-integer form of the key (apart from the bigint keys
/// applications use): "evco" and "migr" in ASCII.
const MIGRATION_LOCK: (i32, i32) = (0x6576_636f, 0x6d69_6772);

/// How often a migrator waiting for another's lock tries again.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(25);

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
        name: "eventcore_lock_space",
        sql: include_str!("../functions/eventcore_lock_space.sql"),
    },
    Function {
        name: "eventcore_commit_shift",
        sql: include_str!("../functions/eventcore_commit_shift.sql"),
    },
    Function {
        name: "eventcore_running_appends",
        sql: include_str!("../functions/eventcore_running_appends.sql"),
    },
    Function {
        name: "eventcore_log_fence",
        sql: include_str!("../functions/eventcore_log_fence.sql"),
    },
    Function {
        name: "eventcore_read_all",
        sql: include_str!("../functions/eventcore_read_all.sql"),
    },
    Function {
        name: "eventcore_log_holders",
        sql: include_str!("../functions/eventcore_log_holders.sql"),
    },
    Function {
        name: "eventcore_lock_streams",
        sql: include_str!("../functions/eventcore_lock_streams.sql"),
    },
    Function {
        name: "eventcore_record_position",
        sql: include_str!("../functions/eventcore_record_position.sql"),
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
/// indexes, triggers), each verified by checksum once applied and each run
/// as its [`Step`] says, then the functions, made again from their files
/// when any text differs from the one recorded, in one transaction; all
/// under a session advisory lock, so that concurrent migrators take turns.
/// A migration that fails leaves the ones before it applied and recorded.
pub(crate) async fn migrate(
    conn: &mut PgConnection,
    schema: Option<&SchemaName>,
) -> Result<(), PostgresError> {
    migrate_with(conn, schema, MIGRATIONS).await
}

/// [`migrate`] with the given migrations (for the tests of steps no
/// released migration uses yet).
pub(crate) async fn migrate_with(
    conn: &mut PgConnection,
    schema: Option<&SchemaName>,
    migrations: &[Migration],
) -> Result<(), PostgresError> {
    let lock = |source: sqlx::Error| PostgresError::Migrate {
        version: 0,
        description: "migration lock",
        source,
    };
    // Polled, not waited for in one statement: a session blocked in
    // `pg_advisory_lock` keeps a snapshot open, which a `CREATE INDEX
    // CONCURRENTLY` of the holder's must wait for (a deadlock PostgreSQL
    // breaks by failing one of them; seen in this module's tests).
    loop {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(MIGRATION_LOCK.0)
            .bind(MIGRATION_LOCK.1)
            .fetch_one(&mut *conn)
            .await
            .map_err(lock)?;
        if got {
            break;
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
    let done = migrate_locked(conn, schema, migrations).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(MIGRATION_LOCK.0)
        .bind(MIGRATION_LOCK.1)
        .execute(&mut *conn)
        .await;
    // A failed migration's error comes first; an unlock that fails means a
    // broken session, which releases the lock as it ends.
    done?;
    unlocked.map(drop).map_err(lock)
}

async fn migrate_locked(
    conn: &mut PgConnection,
    schema: Option<&SchemaName>,
    migrations: &[Migration],
) -> Result<(), PostgresError> {
    let step = |version: i64, description: &'static str| {
        move |source: sqlx::Error| PostgresError::Migrate {
            version,
            description,
            source,
        }
    };
    let setup = step(0, "migration table");
    let mut tx = conn.begin().await.map_err(setup)?;
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

    let known = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(found) = applied.iter().map(|(v, _)| *v).filter(|v| *v > known).max() {
        return Err(PostgresError::SchemaTooNew { found, known });
    }
    // Every applied migration is verified before anything new runs.
    for m in migrations {
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
            // Applied before checksums were kept: recorded now.
            Some((_, None)) => {
                sqlx::query("UPDATE eventcore_migrations SET checksum = $2 WHERE version = $1")
                    .bind(m.version)
                    .bind(&expected)
                    .execute(&mut *tx)
                    .await
                    .map_err(step(m.version, m.description))?;
            }
            Some((_, Some(_))) | None => {}
        }
    }
    tx.commit().await.map_err(setup)?;

    for m in migrations {
        if applied.iter().any(|(v, _)| *v == m.version) {
            continue;
        }
        let failed = step(m.version, m.description);
        let record = sqlx::query(
            "INSERT INTO eventcore_migrations (version, description, checksum)
             VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.description)
        .bind(checksum(m.sql));
        match m.step {
            Step::InTransaction => {
                let mut tx = conn.begin().await.map_err(failed)?;
                tx.execute(m.sql).await.map_err(failed)?;
                record.execute(&mut *tx).await.map_err(failed)?;
                tx.commit().await.map_err(failed)?;
            }
            Step::OutsideTransaction => {
                conn.execute(m.sql).await.map_err(failed)?;
                record.execute(&mut *conn).await.map_err(failed)?;
            }
        }
        tracing::info!(
            version = m.version,
            description = m.description,
            "migration applied"
        );
    }

    let mut tx = conn.begin().await.map_err(step(0, "functions"))?;
    apply_functions(&mut tx).await?;
    tx.commit().await.map_err(step(0, "commit"))?;
    // The log's clock for this cluster, fixed now in a transaction of its
    // own: otherwise the first append fixes it and, until that append
    // commits, every other append waits on the row (after a restore onto
    // another cluster, this is where the shift is chosen).
    sqlx::query("SELECT eventcore_commit_shift()")
        .execute(&mut *conn)
        .await
        .map_err(step(10, "the log's clock for this cluster"))?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use sqlx::{ConnectOptions, postgres::PgConnectOptions};

    use super::*;

    /// A connection to `DATABASE_URL` (set by `./scripts/test`) whose
    /// search path is a schema of its own.
    async fn fresh(tag: &str) -> (PgConnection, SchemaName) {
        let url = std::env::var("DATABASE_URL").expect(
            "DATABASE_URL is not set: run the tests with ./scripts/test, which starts a \
             throwaway PostgreSQL",
        );
        let name = format!("eventcore_unit_{tag}_{}", std::process::id());
        let schema = SchemaName::try_new(name.clone()).expect("a schema name");
        let options: PgConnectOptions = url.parse().expect("DATABASE_URL");
        let mut conn = options
            .options([("search_path", name.as_str())])
            .connect()
            .await
            .expect("connect");
        conn.execute(format!("DROP SCHEMA IF EXISTS {name} CASCADE").as_str())
            .await
            .expect("drop the schema of an earlier run");
        (conn, schema)
    }

    fn with(extra: Vec<Migration>) -> Vec<Migration> {
        MIGRATIONS
            .iter()
            .map(|m| Migration { ..*m })
            .chain(extra)
            .collect()
    }

    async fn applied(conn: &mut PgConnection) -> Vec<i64> {
        sqlx::query_scalar("SELECT version FROM eventcore_migrations ORDER BY version")
            .fetch_all(conn)
            .await
            .expect("the migration table")
    }

    /// A step marked to run outside the transaction does: PostgreSQL
    /// refuses `CREATE INDEX CONCURRENTLY` in a transaction block, so it
    /// fails if it ran in one. Its record is kept, and migrating again runs
    /// nothing twice.
    #[tokio::test]
    async fn a_step_outside_the_transaction_runs_on_its_own() {
        let (mut conn, schema) = fresh("outside").await;
        let concurrently = "CREATE INDEX CONCURRENTLY IF NOT EXISTS eventcore_events_by_type \
                            ON eventcore_events (event_type)";
        let outside = || Migration {
            version: 100,
            description: "an index built concurrently",
            sql: concurrently,
            step: Step::OutsideTransaction,
        };
        migrate_with(&mut conn, Some(&schema), &with(vec![outside()]))
            .await
            .expect("migrated");
        let valid: bool = sqlx::query_scalar(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE c.relname = 'eventcore_events_by_type'
               AND c.relnamespace = current_schema()::regnamespace",
        )
        .fetch_one(&mut conn)
        .await
        .expect("the index exists");
        assert!(valid, "the concurrent build finished");
        assert_eq!(applied(&mut conn).await.last(), Some(&100));
        migrate_with(&mut conn, Some(&schema), &with(vec![outside()]))
            .await
            .expect("migrated again: nothing to do");

        // The same statement in a transaction fails, as the marker says.
        let (mut other, other_schema) = fresh("inside").await;
        let inside = Migration {
            step: Step::InTransaction,
            ..outside()
        };
        let err = migrate_with(&mut other, Some(&other_schema), &with(vec![inside]))
            .await
            .expect_err("CONCURRENTLY in a transaction block");
        assert!(
            matches!(err, PostgresError::Migrate { version: 100, .. }),
            "{err:?}"
        );
    }

    /// Each migration commits on its own: one that fails names itself,
    /// leaves those before it applied and recorded, and leaves no trace of
    /// its own; the functions are not made over a half-migrated schema.
    #[tokio::test]
    async fn a_failed_migration_keeps_the_ones_before_it() {
        let (mut conn, schema) = fresh("failed").await;
        let extra = vec![
            Migration {
                version: 100,
                description: "a good one",
                sql: "CREATE TABLE eventcore_extra (id bigint PRIMARY KEY)",
                step: Step::InTransaction,
            },
            Migration {
                version: 101,
                description: "a bad one",
                sql: "CREATE TABLE eventcore_half (id bigint); SELECT 1 / 0",
                step: Step::InTransaction,
            },
        ];
        let err = migrate_with(&mut conn, Some(&schema), &with(extra))
            .await
            .expect_err("division by zero");
        assert!(
            matches!(
                err,
                PostgresError::Migrate {
                    version: 101,
                    description: "a bad one",
                    ..
                }
            ),
            "{err:?}"
        );
        let versions = applied(&mut conn).await;
        assert_eq!(versions.last(), Some(&100), "{versions:?}");
        let half: Option<String> = sqlx::query_scalar("SELECT to_regclass('eventcore_half')::text")
            .fetch_one(&mut conn)
            .await
            .expect("look up");
        assert_eq!(half, None, "the failed migration left nothing");
        let functions: i64 = sqlx::query_scalar("SELECT count(*) FROM eventcore_functions")
            .fetch_one(&mut conn)
            .await
            .expect("count");
        assert_eq!(functions, 0, "no functions over a half-migrated schema");
        // The session no longer holds the lock (other tests' migrations may).
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks
             WHERE locktype = 'advisory' AND pid = pg_backend_pid()
               AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 2",
        )
        .bind(i64::from(MIGRATION_LOCK.0))
        .bind(i64::from(MIGRATION_LOCK.1))
        .fetch_one(&mut conn)
        .await
        .expect("look at the locks");
        assert_eq!(held, 0, "the migration lock was released after the failure");
    }
}
