//! Migrations: a database upgraded from any released version ends the same
//! as a fresh one; an applied migration that changed is refused; functions
//! are made again when their text changes.

mod support;

use eventcore::{EventStoreExt, execute};
use eventcore_postgres::{PostgresError, SchemaName};
use eventcore_testing::fixtures::{Credit, stream};

/// The migrations as released (before functions moved to files of their
/// own), each with the text that was applied to databases.
const RELEASED: [(i64, &str, &str); 7] = [
    (
        1,
        "events table, immutability triggers, append function",
        include_str!("fixtures/released_migrations/0001_events.sql"),
    ),
    (
        2,
        "index for reading the global log in commit order",
        include_str!("fixtures/released_migrations/0002_commit_order_index.sql"),
    ),
    (
        3,
        "subscription checkpoints",
        include_str!("fixtures/released_migrations/0003_checkpoints.sql"),
    ),
    (
        4,
        "snapshots of declared states",
        include_str!("fixtures/released_migrations/0004_snapshots.sql"),
    ),
    (
        5,
        "event metadata columns",
        include_str!("fixtures/released_migrations/0005_event_metadata.sql"),
    ),
    (
        6,
        "command ids",
        include_str!("fixtures/released_migrations/0006_commands.sql"),
    ),
    (
        7,
        "schema versions of stored events",
        include_str!("fixtures/released_migrations/0007_schema_versions.sql"),
    ),
];

/// A schema migrated as a released version of the crate left it: the
/// released migrations up to `version`, recorded without checksums.
async fn released_schema(version: i64) -> SchemaName {
    let schema = support::unique_schema();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&support::database_url().await)
        .await
        .expect("connect");
    let mut sql = format!(
        "CREATE SCHEMA {schema}; SET search_path = {schema};
         CREATE TABLE eventcore_migrations (
             version     bigint PRIMARY KEY,
             description text NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now()
         );"
    );
    for (v, description, text) in RELEASED.iter().filter(|(v, ..)| *v <= version) {
        sql.push_str(text);
        sql.push_str(&format!(
            "\nINSERT INTO eventcore_migrations (version, description) VALUES ({v}, '{description}');\n"
        ));
    }
    sqlx::raw_sql(&sql)
        .execute(&pool)
        .await
        .expect("the released migrations");
    pool.close().await;
    schema
}

/// What a schema holds, with its name left out: functions (by
/// `pg_get_functiondef`), columns, indexes, constraints and triggers.
async fn shape(schema: &SchemaName) -> Vec<String> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&support::database_url().await)
        .await
        .expect("connect");
    let queries = [
        "SELECT 'function ' || pg_get_functiondef(p.oid) FROM pg_proc AS p
         WHERE p.pronamespace = $1::regnamespace",
        "SELECT format('column %s.%s #%s %s null=%s default=%s', table_name, column_name,
                       ordinal_position, data_type, is_nullable, column_default)
         FROM information_schema.columns WHERE table_schema = $1",
        "SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = $1",
        "SELECT format('constraint %s %s', conname, pg_get_constraintdef(oid))
         FROM pg_constraint WHERE connamespace = $1::regnamespace",
        "SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger AS t
         JOIN pg_class AS c ON c.oid = t.tgrelid
         WHERE c.relnamespace = $1::regnamespace AND NOT t.tgisinternal",
    ];
    let mut all = Vec::new();
    for query in queries {
        let rows: Vec<String> = sqlx::query_scalar(query)
            .bind(schema.as_ref())
            .fetch_all(&pool)
            .await
            .expect("read the catalog");
        all.extend(
            rows.into_iter()
                .map(|r| r.replace(schema.as_ref(), "SCHEMA")),
        );
    }
    all.sort();
    pool.close().await;
    all
}

/// Upgrading from every released version ends in the very schema a fresh
/// database gets, and the upgraded store works.
#[tokio::test]
async fn a_database_upgraded_from_any_release_equals_a_fresh_one() {
    let fresh = support::unique_schema();
    support::store_with(support::config(fresh.clone())).await;
    let expected = shape(&fresh).await;
    assert!(
        expected
            .iter()
            .any(|s| s.contains("FUNCTION SCHEMA.eventcore_append")),
        "the fresh schema has its functions: {expected:#?}"
    );
    for version in [1, 4, 7] {
        let old = released_schema(version).await;
        let store = support::store_with(support::config(old.clone())).await;
        let upgraded = shape(&old).await;
        let missing: Vec<_> = expected.iter().filter(|s| !upgraded.contains(s)).collect();
        let extra: Vec<_> = upgraded.iter().filter(|s| !expected.contains(s)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "upgraded from {version}: missing {missing:#?}\nextra {extra:#?}"
        );
        execute(
            &store,
            Credit {
                account: stream("upgraded"),
                amount: 1,
            },
        )
        .await
        .expect("the upgraded store appends");
        let read = store.read_streams(&[stream("upgraded")]).await.unwrap();
        assert_eq!(read.events().len(), 1);
        // Migrating again changes nothing.
        store.migrate().await.expect("again");
        assert_eq!(shape(&old).await, upgraded);
    }
}

/// A migration whose applied text is not the one shipped under its number
/// is refused, naming it, and nothing is migrated.
#[tokio::test]
async fn a_changed_applied_migration_is_refused() {
    let schema = support::unique_schema();
    let store = support::store_with(support::config(schema.clone())).await;
    sqlx::query("UPDATE eventcore_migrations SET checksum = 'edited' WHERE version = 3")
        .execute(&support::sql(&store))
        .await
        .unwrap();
    let err = store.migrate().await.expect_err("refused");
    assert!(
        matches!(
            &err,
            PostgresError::MigrationChanged { version: 3, found, .. } if found == "edited"
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("migration 3 (subscription checkpoints)"),
        "{err}"
    );
}

/// A function whose recorded text differs from its file's (a release that
/// changed it, or one dropped by hand) is made again by `migrate`, with
/// every other.
#[tokio::test]
async fn functions_are_made_again_when_their_text_changes() {
    let schema = support::unique_schema();
    let store = support::store_with(support::config(schema.clone())).await;
    let sql = support::sql(&store);
    sqlx::raw_sql(
        "DROP FUNCTION eventcore_read_tails(text[], bigint[]);
         UPDATE eventcore_functions SET checksum = 'older' WHERE name = 'eventcore_read_tails';",
    )
    .execute(&sql)
    .await
    .unwrap();
    store.migrate().await.expect("migrate");
    let a = stream("tails");
    execute(
        &store,
        Credit {
            account: a.clone(),
            amount: 1,
        },
    )
    .await
    .unwrap();
    let tail = store
        .read_tails(&[(a.clone(), eventcore::StreamVersion::INITIAL)])
        .await
        .expect("the tail read's function is back");
    assert_eq!(tail.events().len(), 1);
    let sums: i64 =
        sqlx::query_scalar("SELECT count(*) FROM eventcore_functions WHERE checksum = 'older'")
            .fetch_one(&sql)
            .await
            .unwrap();
    assert_eq!(sums, 0, "the new text's checksum is recorded");
}
