//! PostgreSQL event store for eventcore.
//!
//! ```no_run
//! use eventcore_postgres::PostgresEventStore;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresEventStore::connect("postgres://postgres@127.0.0.1/bank").await?;
//! store.migrate().await?;
//! # Ok(()) }
//! ```
//!
//! # Design
//! - **Schema.** One table, `eventcore_events`: global position (identity),
//!   stream id, stream version, event type, payload (`json`: the text kept
//!   verbatim, so numbers come back exactly as written; cast to `jsonb` in
//!   queries that need its operators) and metadata (`jsonb`),
//!   event id (UUIDv7), the writing transaction's id, the time recorded and
//!   the schema version of the event's type it was written at (`DEFAULT 1`,
//!   so rows written before migration 7 read as version 1).
//!   Its only index besides the primary key is the unique
//!   `(stream_id, stream_version)`, which serves both stream reads and the
//!   version check. Row triggers reject `UPDATE` and `DELETE`, a statement
//!   trigger rejects `TRUNCATE` (SQLSTATE `EC001`).
//! - **Read.** One query, `stream_id = ANY($1)`, returns every event of the
//!   command's streams in global order; each stream's version is its last
//!   event's version (0 when it has none).
//! - **Tail read.** One query returns a row with each stream's current
//!   version (a backward probe of the `(stream_id, stream_version)` index)
//!   and the events above the versions the caller holds (a range scan of
//!   the same index): its cost depends on the new events only.
//! - **Kept states and snapshots.** The executor keeps folded states
//!   ([`Executor`](eventcore::Executor); `execute(&store, ..)` uses the
//!   default one of the store's identity, shared by its clones); with a kept
//!   state a command sends only its append. Snapshots live in `eventcore_snapshots` (state name,
//!   key text with the command's fields and streams, schema version,
//!   versions, state as text kept verbatim, and the id of the event at
//!   each version, looked up when the row is written), unique on the name
//!   and the key's md5; a row whose ids are not those of the events at its
//!   versions is returned but not started from. A miss loads one with one query; snapshots carried by appends are queued
//!   (1,024 at most, then dropped) and written by a task of the store's own
//!   on a connection of its pool, newest per key, after the commands that
//!   made them have returned. Snapshots are not events: rows are replaced
//!   and may be deleted; the immutability triggers cover events only.
//! - **Append.** One call of the `eventcore_append` function, one round trip
//!   and one implicit transaction. It takes a transaction-scoped advisory
//!   lock per registered stream, on the two-integer form of the key (the
//!   first names the schema and the purpose, so neither another eventcore
//!   schema on the database nor an application's own advisory locks, which
//!   usually take bigint keys, can collide with them; leases and the
//!   migration lock are keyed the same way), in ascending order of lock key (so writers
//!   over overlapping stream sets cannot deadlock, and writers to disjoint
//!   streams never wait for each other), then checks every registered
//!   stream's version, read-only participants included, and inserts all
//!   events or none. A read-only participant stays locked until commit, so
//!   no writer can slip in between the check and the commit. Payloads travel
//!   as arrays, so a batch of any size binds the same thirteen parameters.
//! - **Command ids.** After the version check, the append inserts the
//!   command's record into `eventcore_commands` (primary key on the id)
//!   with `ON CONFLICT DO NOTHING`, then the events, in the same
//!   transaction. An id already recorded (or recorded meanwhile by an
//!   append on other streams: the insert waits for it to commit) returns
//!   that record and writes nothing. A repeat of an applied command
//!   usually fails the version check first (its streams moved); `execute`
//!   then reads, and the read finds the record. Reads for a command with
//!   an id are one statement: the record if there is one, else the events
//!   (a one-time `NOT EXISTS` filter keeps the events unread when it is
//!   there). Ids made by `CommandId::generate` are time-ordered, so their
//!   index grows at its right edge; random ids (UUIDv4 idempotency keys)
//!   insert at random places and cost more (see docs/performance.md).
//!   `prune_commands` is one `DELETE` by age; there is no index on the time
//!   recorded, so it scans the table (run it rarely, off peak).
//! - **Connections.** One store value and its clones never hold more than
//!   [`PostgresConfig::max_connections`] connections, in total: statements
//!   (reads, appends, checkpoints, exactly-once projections, migrations,
//!   the NOTIFY after appends, snapshot writes) borrow one per call, and
//!   long-lived sessions (each subscription instance's lease, held or
//!   waited for, and the LISTEN session) hold one each, at most
//!   `max_connections - 1` of them, so one is always left for statements.
//!   The pool closes a connection on any error that ends the session
//!   (FATAL, class 08, `57P01`–`57P03`, I/O), pings connections idle for
//!   longer than [`PostgresConfig::idle_check_after`] before lending them,
//!   and retires them after [`PostgresConfig::max_lifetime`]. It is the
//!   store's own rather than sqlx's `PgPool`, which sends a round trip to
//!   test every connection given back to it; an application's own queries
//!   use a pool of its own, built from
//!   [`PostgresEventStore::connect_options`] if it should see eventcore's
//!   schema.
//! - **Migrations.** [`PostgresEventStore::migrate`] applies embedded SQL
//!   under a session advisory lock (polled, so that a waiting migrator holds
//!   no snapshot an index build would wait for), each migration in a
//!   transaction of its own or, when marked so, outside one (an index built
//!   `CONCURRENTLY` on a live log, which never holds a lock that appends
//!   wait for), then the functions in one transaction; recorded in its own
//!   `eventcore_migrations` table (not sqlx's `_sqlx_migrations`, which the
//!   application's own sqlx migrator owns). Tables, indexes and triggers
//!   are in numbered migrations that never change once released: each is
//!   recorded with the SHA-256 of its text, and a database whose applied
//!   migration differs from the one shipped under its number is refused
//!   with [`PostgresError::MigrationChanged`]. Functions are defined once
//!   each, in a file of their own (`functions/`), and made again, all of
//!   them, whenever any text differs from the one recorded in
//!   `eventcore_functions`, dropping older overloads first: a database
//!   upgraded from any release ends with the same schema as a fresh one
//!   (tested against the catalog). With [`PostgresConfig::schema`]
//!   everything lives in that schema.
//! - **Global order.** Positions come from an identity column, so writers do
//!   not serialise on one global lock; but a position is taken before
//!   commit, and a transaction can commit after one holding a higher
//!   position. Each event therefore carries its transaction's *commit key*
//!   (its transaction id, lifted by a per-cluster shift, below), and the log
//!   is read in (commit key, position) order, below a **fence** that only
//!   appends can hold: an append takes its stream locks (transaction-scoped
//!   advisory locks) before its transaction has an id and keeps them until
//!   its commit is visible, so a reader finds the appends that may still
//!   commit in one snapshot of the lock table (`pg_locks`), takes the
//!   lowest of their transaction ids (or, when none runs, the next id to be
//!   assigned, read first) as the fence, and reads in a later snapshot only
//!   the events below it. No event can later appear behind what a reader
//!   has seen, and a transaction that appends nothing, in this database or
//!   another, never delays readers. An append's own long transaction holds
//!   back what commits after it began (the page says it is
//!   [held back](eventcore::LogPage::held_back), and
//!   [`PostgresEventStore::log_status`] names the session, since when, and
//!   the lag). An append must be its transaction's first write (otherwise
//!   it would have an id before its locks): one that is not is refused
//!   (SQLSTATE `EC002`).
//! - **Positions that survive operations.** Transaction ids belong to a
//!   cluster; a dump restored onto another cluster may start far below the
//!   keys stored. The first use of the log on a cluster (by its system
//!   identifier) fixes a shift that lifts every later transaction above the
//!   highest key stored (0 on the cluster that wrote them), in
//!   `eventcore_log_clock`; a standby promoted after a failover is the same
//!   cluster and keeps it. Positions and checkpoints therefore keep their
//!   meaning across a dump and restore or a failover (both tested).
//! - **Read-your-writes.** An append returns the position of its last
//!   event ([`AppendOutcome::position`](eventcore::AppendOutcome::position)),
//!   and so does `execute`; a subscription can be waited on until it passes
//!   it ([`SubscriptionHandle::wait_for`](eventcore::SubscriptionHandle::wait_for)).
//! - **Subscriptions.** [`PostgresEventStore`] is also a checkpoint store
//!   (`eventcore_checkpoints`) and hands out one lease per subscription name
//!   (a session-level advisory lock on a connection of its own), so one
//!   instance runs at a time across processes. Taking the lock raises the
//!   name's fencing token in `eventcore_leases` in the same statement; a
//!   checkpoint save checks the token under a share lock on that row and
//!   moves the checkpoint only forward, so an instance whose session died
//!   commits nothing once another took over. Live readers are woken
//!   through LISTEN/NOTIFY: not from inside the append (a notifying commit
//!   takes a database-wide lock, which would queue all writers), but by a
//!   small task per store that sends one `pg_notify` after its appends
//!   commit, coalescing bursts. Polling stays as the fallback for missed
//!   notifications and for writers that do not notify. [`ExactlyOnce`]
//!   applies a projection's writes and its fenced checkpoint save in one
//!   transaction.
//! - **Errors.** Mapped by SQLSTATE and constraint name, never by message:
//!   a stale expected version, found by the append function, is a
//!   [`StoreError::VersionConflict`](eventcore::StoreError::VersionConflict)
//!   naming the stream, expected and actual version; so is a unique
//!   violation of `(stream_id, stream_version)`, which only a writer
//!   bypassing the function can cause (the store then reads the current
//!   versions to name the stream); serialization failures, deadlocks, lost connections and pool time-outs
//!   are [`StoreError::Transient`](eventcore::StoreError::Transient) (the
//!   execute loop retries them); anything else is
//!   [`StoreError::Backend`](eventcore::StoreError::Backend) with the
//!   `sqlx::Error` as its source.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod checkpoints;
mod config;
mod conn;
mod dead_letters;
mod error;
mod log_status;
mod notify;
mod outbox;
mod projection;
mod rows;
mod schema;
mod snapshots;
mod store;

pub use checkpoints::PostgresLease;
pub use config::{DEFAULT_MAX_PAYLOAD_BYTES, PostgresConfig, SchemaName, SchemaNameError};
pub use error::PostgresError;
pub use log_status::{LogHolder, LogStatus};
pub use outbox::{PgReactor, Reacting};
pub use projection::{ExactlyOnce, ProjectionHandler};
pub use snapshots::SnapshotStats;
pub use store::PostgresEventStore;
