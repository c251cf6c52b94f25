//! The store: connecting, reading and appending.

use std::{sync::Arc, time::Duration};

use eventcore::{
    AppendOutcome, CausationId, CommandRecords, CorrelationId, EventLog, EventStore, LogPage,
    LogQuery, Metadata, Position, ReadAnswer, ReadRequest, RecordedEvent, StoreError,
    StoreIdentity, StreamId, StreamSet, StreamVersion, StreamWrites,
};
use sqlx::{Row, postgres::PgConnectOptions};
use uuid::Uuid;

use crate::{
    PostgresConfig, PostgresError,
    config::SchemaName,
    conn::{ConnPool, IdleLimits},
    error::{is_duplicate_version, store_error},
    notify::Notifier,
    rows::{
        EventColumns, RecordColumns, clamp_to_bigint, column, conflict_from_row, decode_event,
        decode_streams, decode_tails, find_record, from_bigint, log_position, lookup,
        record_from_row,
    },
    schema,
    snapshots::{self, SnapshotWriter},
};

const READ_STREAMS: &str = include_str!("sql/read_streams.sql");
const READ_TAILS: &str = include_str!("sql/read_tails.sql");
const APPEND: &str = include_str!("sql/append.sql");
const CURRENT_VERSIONS: &str = include_str!("sql/current_versions.sql");
const READ_ALL: &str = include_str!("sql/read_all.sql");
/// How many events a filtered page looks at, per event it may return.
const SCAN_PER_EVENT: i64 = 4;
/// How many events a filtered page looks at, at least.
const MIN_SCAN: i64 = 1_000;
const FIND_COMMAND: &str = include_str!("sql/find_command.sql");
const PRUNE_COMMANDS: &str = include_str!("sql/prune_commands.sql");
const READ_STREAMS_FOR: &str = include_str!("sql/read_streams_for.sql");
const READ_TAILS_FOR: &str = include_str!("sql/read_tails_for.sql");

/// An [`EventStore`] on PostgreSQL. Cheap to clone: clones share the
/// connections and the [identity](EventStore::identity), so `execute` on any
/// clone uses one cache of kept states and one command queue.
///
/// Reading a command's streams is one query, and appending is one call of
/// the `eventcore_append` function in its own implicit transaction: one
/// round trip each. A command with a kept state skips the read. Snapshots
/// are loaded with one query on a cache miss, and saved by a task of the
/// store's own after the command has returned.
#[derive(Debug, Clone)]
pub struct PostgresEventStore {
    conns: Arc<ConnPool>,
    notifier: Arc<Notifier>,
    /// Wake-ups of dispatchers: reactors' commits that recorded effects.
    effects: Arc<Notifier>,
    identity: StoreIdentity,
    snapshots: Arc<SnapshotWriter>,
    max_payload_bytes: usize,
    schema: Option<SchemaName>,
    standby: Arc<std::sync::Mutex<crate::conn::Standby>>,
}

impl PostgresEventStore {
    /// Connects with the default [`PostgresConfig`].
    ///
    /// # Errors
    /// [`PostgresError::InvalidUrl`] or [`PostgresError::Connect`].
    pub async fn connect(url: &str) -> Result<Self, PostgresError> {
        Self::connect_with(url, PostgresConfig::default()).await
    }

    /// Connects with the given settings. Opens one connection to check the
    /// server is reachable; more are opened on demand, never more than
    /// [`PostgresConfig::max_connections`] at once.
    ///
    /// # Errors
    /// [`PostgresError::InvalidUrl`] or [`PostgresError::Connect`].
    pub async fn connect_with(url: &str, config: PostgresConfig) -> Result<Self, PostgresError> {
        let options: PgConnectOptions = url.parse().map_err(PostgresError::InvalidUrl)?;
        Self::connect_with_options(options, config).await
    }

    /// Connects with sqlx's connect options (for an application that
    /// already builds them, or takes them from its own pool with
    /// `pool.connect_options()`) and the given settings, which add the
    /// schema, statement timeout and application name to them. The store's
    /// connections are its own, apart from any pool of the application's.
    ///
    /// # Errors
    /// [`PostgresError::Connect`] when the server cannot be reached.
    pub async fn connect_with_options(
        options: PgConnectOptions,
        config: PostgresConfig,
    ) -> Result<Self, PostgresError> {
        let mut options = options;
        let mut settings = Vec::new();
        if let Some(schema) = &config.schema {
            settings.push(("search_path", schema.to_string()));
        }
        if let Some(timeout) = config.statement_timeout {
            settings.push(("statement_timeout", timeout.as_millis().to_string()));
        }
        options = options.options(settings);
        if let Some(name) = &config.application_name {
            options = options.application_name(name);
        }
        let conns = Arc::new(ConnPool::new(
            options,
            config.max_connections,
            config.acquire_timeout,
            IdleLimits {
                check_after: config.idle_check_after,
                max_lifetime: config.max_lifetime,
            },
        ));
        // One connection now, so that a wrong address or password fails
        // here; it stays in the pool.
        let mut probe = conns.lend().await.map_err(PostgresError::Connect)?;
        probe.settle(&Ok::<(), sqlx::Error>(()));
        drop(probe);
        Ok(PostgresEventStore {
            snapshots: Arc::new(SnapshotWriter::new(conns.clone())),
            identity: StoreIdentity::new(),
            notifier: Arc::new(Notifier::new(
                channel_for("eventcore_appended", config.schema.as_ref()),
                conns.clone(),
            )),
            effects: Arc::new(Notifier::new(
                channel_for("eventcore_effects", config.schema.as_ref()),
                conns.clone(),
            )),
            conns,
            max_payload_bytes: config.max_payload_bytes,
            schema: config.schema,
            standby: Arc::default(),
        })
    }

    /// Sets the largest serialised event accepted, in bytes.
    pub fn with_max_payload_bytes(mut self, limit: usize) -> Self {
        self.max_payload_bytes = limit;
        self
    }

    pub(crate) fn conns(&self) -> &ConnPool {
        &self.conns
    }

    /// The NOTIFY channel reactors wake dispatchers on.
    pub(crate) fn effects_channel(&self) -> &str {
        self.effects.channel()
    }

    /// Completes on the next wake-up of dispatchers.
    pub(crate) fn effects_woken(&self) -> tokio::sync::futures::OwnedNotified {
        self.effects.woken()
    }

    /// Whether this store receives live wake-ups for its readers (its
    /// LISTEN session is up). It starts with the first reader that waits
    /// for new events; while it is down (connection lost, server
    /// restarting) it reconnects with backoff and readers fall back to
    /// polling, so this is a health signal, not a correctness one.
    pub fn wakeups_live(&self) -> bool {
        self.notifier.listening()
    }

    /// What the snapshot writer (shared by this store's clones) did:
    /// snapshots written, and those dropped, by reason. A dropped snapshot
    /// costs speed only; each drop is also a `tracing` warning (for a full
    /// queue, at the 1st, 2nd, 4th, 8th... drop).
    pub fn snapshot_stats(&self) -> crate::SnapshotStats {
        self.snapshots.stats()
    }

    /// Sessions kept by instances waiting for a subscription's lease.
    pub(crate) fn standby_sessions(&self) -> std::sync::MutexGuard<'_, crate::conn::Standby> {
        // A map of sessions: a panic elsewhere cannot leave it inconsistent.
        self.standby.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The options the store's connections are opened with (the
    /// configured schema as `search_path`, statement timeout and
    /// application name included): for an application pool that should
    /// see eventcore's tables the way the store does. Such a pool's
    /// connections are the application's, outside the store's
    /// [`max_connections`](PostgresConfig::max_connections).
    pub fn connect_options(&self) -> &PgConnectOptions {
        self.conns.options()
    }

    /// Creates or upgrades eventcore's tables (and the configured schema).
    /// Safe to call from several processes at once: they take turns on an
    /// advisory lock. Each migration commits on its own (one that fails
    /// leaves those before it applied), then the functions are made in one
    /// transaction.
    ///
    /// # Errors
    /// [`PostgresError::Connect`], [`PostgresError::Migrate`] or
    /// [`PostgresError::SchemaTooNew`].
    pub async fn migrate(&self) -> Result<(), PostgresError> {
        let span = tracing::info_span!(
            "eventcore.migrate",
            schema = self.schema.as_ref().map(|s| s.to_string())
        );
        let mut lease = self.conns.lend().await.map_err(PostgresError::Connect)?;
        let done = tracing::Instrument::instrument(
            schema::migrate(lease.conn(), self.schema.as_ref()),
            span,
        )
        .await;
        if done.is_ok() {
            // Each migration committed: the session is in a known state.
            lease.settle(&Ok::<(), sqlx::Error>(()));
        }
        done
    }
}

impl EventStore for PostgresEventStore {
    /// One query whatever the request: the whole streams, or a row with
    /// each stream's current version and then the events above the held
    /// versions (from the `(stream_id, stream_version)` index), or the
    /// snapshot row and the events after it; with a command id, the
    /// command's record instead when it is recorded.
    async fn read(&self, request: ReadRequest) -> Result<ReadAnswer, StoreError> {
        let command_id = request.command_id();
        if let Some(key) = request.snapshot() {
            return snapshots::read_from(&self.conns, key, command_id).await;
        }
        let held = request.held();
        let ids: Vec<&str> = held.iter().map(|(id, _)| id.as_str()).collect();
        if held.is_empty() {
            let Some(id) = command_id else {
                return Ok(ReadAnswer::default());
            };
            let rows = self
                .conns
                .fetch_all("find_command", sqlx::query(FIND_COMMAND).bind(id.as_str()))
                .await?;
            let record = find_record(id, &rows).map_err(|e| store_error("find_command", e))?;
            return Ok(ReadAnswer::default().with_record(record));
        }
        if request.is_whole() {
            let streams: StreamSet = held.iter().map(|(id, _)| id.clone()).collect();
            let decode = |rows: &[sqlx::postgres::PgRow]| {
                decode_streams(&streams, rows).map(|reads| ReadAnswer::new(held.to_vec(), reads))
            };
            let decoded = match command_id {
                None => {
                    let query = sqlx::query(READ_STREAMS).bind(&ids);
                    let rows = self.conns.fetch_all("read_streams", query).await?;
                    decode(&rows)
                }
                Some(id) => {
                    let query = sqlx::query(READ_STREAMS_FOR).bind(&ids).bind(id.as_str());
                    let rows = self.conns.fetch_all("read_streams", query).await?;
                    lookup(id, &rows, || decode(&rows))
                }
            };
            return decoded.map_err(|e| store_error("read_streams", e));
        }
        let after: Vec<i64> = held.iter().map(|(_, v)| clamp_to_bigint(v.get())).collect();
        let decode = |rows: &[sqlx::postgres::PgRow]| {
            decode_tails(held.to_vec(), rows).map(|reads| ReadAnswer::new(held.to_vec(), reads))
        };
        let decoded = match command_id {
            None => {
                let query = sqlx::query(READ_TAILS).bind(&ids).bind(&after);
                let rows = self.conns.fetch_all("read_tails", query).await?;
                decode(&rows)
            }
            Some(id) => {
                let query = sqlx::query(READ_TAILS_FOR)
                    .bind(&ids)
                    .bind(&after)
                    .bind(id.as_str());
                let rows = self.conns.fetch_all("read_tails", query).await?;
                lookup(id, &rows, || decode(&rows))
            }
        };
        decoded.map_err(|e| store_error("read_tails", e))
    }

    /// One call of `eventcore_append`. A snapshot the write carries is
    /// queued, after the commit, for a task of the store's own, which
    /// writes the newest snapshot of each key on a connection of the
    /// store's pool.
    async fn append(&self, mut writes: StreamWrites) -> Result<AppendOutcome, StoreError> {
        let snapshot = writes.take_snapshot();
        writes.check_payload_limit(self.max_payload_bytes)?;
        let stream_versions = writes.resulting_versions()?;

        let expected = writes.expected_versions();
        let streams: Vec<&str> = expected.iter().map(|(id, _)| id.as_str()).collect();
        let versions = expected
            .iter()
            .map(|(id, v)| to_bigint(id, *v))
            .collect::<Result<Vec<i64>, _>>()?;
        let events = writes.events();
        let event_streams: Vec<&str> = events.iter().map(|e| e.stream_id().as_str()).collect();
        let event_versions = number_events(&writes)?;
        let event_types: Vec<&str> = events.iter().map(|e| e.event_type()).collect();
        let payloads: Vec<&str> = events.iter().map(|e| e.payload()).collect();
        let event_ids: Vec<Uuid> = events.iter().map(|e| e.event_id()).collect();
        let schema_versions: Vec<i64> = events
            .iter()
            .map(|e| i64::from(e.schema_version()))
            .collect();
        let metadata = EventMetadataColumns::of(events);
        let command = writes.command();
        let resulting: Option<Vec<i64>> = match command {
            Some(_) => Some(
                stream_versions
                    .iter()
                    .map(|(id, v)| to_bigint(id, *v))
                    .collect::<Result<_, _>>()?,
            ),
            None => None,
        };

        let mut lease = self.conns.get("append").await?;
        let reply = sqlx::query(APPEND)
            .bind(&streams)
            .bind(&versions)
            .bind(&event_streams)
            .bind(&event_versions)
            .bind(&event_types)
            .bind(&payloads)
            .bind(&event_ids)
            .bind(&metadata.values)
            .bind(&metadata.correlation)
            .bind(&metadata.causation)
            .bind(command.map(|(id, _)| id.as_str()))
            .bind(command.map(|(_, command_type)| command_type))
            .bind(&resulting)
            .bind(&schema_versions)
            // Run to completion (one row), not fetched as one row of a
            // portal left suspended.
            .fetch_all(lease.conn())
            .await;
        lease.settle(&reply);
        drop(lease);
        let row = match reply.map(|rows| rows.into_iter().next()) {
            Ok(Some(row)) => row,
            Ok(None) => return Err(store_error("append", sqlx::Error::RowNotFound)),
            Err(e) if is_duplicate_version(&e) => {
                return Err(self.explain_duplicate(&writes, e).await);
            }
            Err(e) => return Err(store_error("append", e)),
        };
        let failed = |e| store_error("append", e);
        if row
            .try_get::<Option<&str>, _>("conflict_stream")
            .map_err(failed)?
            .is_some()
        {
            return Err(conflict_from_row(&row).map_err(failed)?);
        }
        if let Some((id, _)) = command
            && let Some(record) = RecordColumns::of(&row)
                .and_then(|c| record_from_row(id, &row, &c))
                .map_err(failed)?
        {
            return record.repeat(&writes);
        }
        let position = log_position(
            &row,
            column(&row, "out_commit").map_err(failed)?,
            column(&row, "out_position").map_err(failed)?,
        )
        .map_err(failed)?;
        if !events.is_empty() {
            self.notifier.committed();
        }
        if let Some(snapshot) = snapshot {
            self.snapshots.offer(snapshot);
        }
        Ok(AppendOutcome::new(stream_versions, events.len()).with_position(position))
    }

    fn identity(&self) -> &StoreIdentity {
        &self.identity
    }
}

impl CommandRecords for PostgresEventStore {
    /// One `DELETE` of the records older than `older_than` by the server's
    /// clock. It takes no lock that appends wait for, other than on the
    /// rows it deletes.
    async fn prune_commands(&self, older_than: Duration) -> Result<u64, StoreError> {
        let micros = i64::try_from(older_than.as_micros()).unwrap_or(i64::MAX);
        self.conns
            .execute("prune_commands", sqlx::query(PRUNE_COMMANDS).bind(micros))
            .await
    }
}

impl EventLog for PostgresEventStore {
    /// Reads in (commit key, global position) order, and only events of
    /// appends below the log's fence (`eventcore_read_all`; see the crate
    /// docs): every append below it has ended, so no event can later
    /// appear before what was returned. Only a running append holds
    /// readers back, and only from events committed after it began; then
    /// the page is [held back](LogPage::held_back).
    ///
    /// Without filters a page is one walk of the commit-order index that
    /// stops at the limit. With a stream-prefix or event-type filter the
    /// walk stops after `max(4 × limit, 1,000)` events, matching or not, so
    /// a page costs the same whatever the filter's selectivity and the
    /// table's statistics; a page that is not full then ends where the walk
    /// stopped ([`LogPage::next`]).
    async fn read_all(&self, query: &LogQuery) -> Result<LogPage, StoreError> {
        let after = query.start().unwrap_or_default();
        let limit = clamp_to_bigint(u64::try_from(query.limit()).unwrap_or(u64::MAX));
        let filtered = query.stream_prefix().is_some() || query.event_types().is_some();
        let scan = if filtered {
            limit.saturating_mul(SCAN_PER_EVENT).max(MIN_SCAN)
        } else {
            limit
        };
        let statement = sqlx::query(READ_ALL)
            .bind(after.commit().to_string())
            .bind(clamp_to_bigint(after.sequence()))
            .bind(query.stream_prefix())
            .bind(query.event_types())
            .bind(limit)
            .bind(scan);
        let rows = self.conns.fetch_all("read_all", statement).await?;
        decode_log_page(query, &rows).map_err(|e| store_error("read_all", e))
    }

    /// Woken by NOTIFYs that stores send after their appends commit (see
    /// the crate docs); readers still poll as a fallback.
    fn appended(&self) -> impl std::future::Future<Output = ()> + Send {
        self.notifier.woken()
    }
}

/// The NOTIFY channel of a schema's log (at most 63 bytes, PostgreSQL's
/// limit: a long schema name is replaced by its hash).
fn channel_for(prefix: &str, schema: Option<&SchemaName>) -> String {
    let Some(schema) = schema else {
        return prefix.to_owned();
    };
    let channel = format!("{prefix}_{schema}");
    if channel.len() <= 63 {
        return channel;
    }
    let hash = schema
        .as_ref()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("{prefix}_{hash:016x}")
}

/// The rows of `eventcore_read_all`: events (`out_kind` 0), then, after a
/// filtered walk, the last event looked at (1), and a row (2) when
/// committed events wait above the fence.
fn decode_log_page(
    query: &LogQuery,
    rows: &[sqlx::postgres::PgRow],
) -> Result<LogPage, sqlx::Error> {
    let mut events = Vec::with_capacity(rows.len());
    let mut scanned_to = None;
    let mut held_back = false;
    if let Some(first) = rows.first() {
        let columns = EventColumns::of(first)?;
        let commit_at = column(first, "out_commit")?;
        let kind_at = column(first, "out_kind")?;
        for row in rows {
            match row.try_get::<i32, _>(kind_at)? {
                2 => held_back = true,
                1 => {
                    let commit = decode_commit(row, commit_at)?;
                    let sequence = from_bigint(columns.position(row)?.unwrap_or(0));
                    scanned_to = Some(Position::new(commit, sequence));
                }
                _ => {
                    let commit = decode_commit(row, commit_at)?;
                    events.push(decode_log_row(row, &columns, commit)?);
                }
            }
        }
    }
    // A full page ends at its last event: matching events may follow it
    // within the part looked at.
    let next = if events.len() < query.limit() {
        scanned_to.max(query.start())
    } else {
        query.start()
    };
    Ok(LogPage::new(events, next).with_held_back(held_back))
}

/// The writing transaction of a log row, sent as text.
fn decode_commit(row: &sqlx::postgres::PgRow, at: usize) -> Result<u64, sqlx::Error> {
    row.try_get::<&str, _>(at)?
        .parse()
        .map_err(|e| sqlx::Error::ColumnDecode {
            index: "out_commit".into(),
            source: Box::new(e),
        })
}

/// Decodes one event row of the global log.
fn decode_log_row(
    row: &sqlx::postgres::PgRow,
    columns: &EventColumns,
    commit: u64,
) -> Result<(Position, RecordedEvent), sqlx::Error> {
    let stream = columns.stream(row)?.unwrap_or_default();
    let stream_id = StreamId::try_new(stream).map_err(|e| sqlx::Error::ColumnDecode {
        index: "out_stream".into(),
        source: Box::new(e),
    })?;
    let version = StreamVersion::new(from_bigint(columns.version(row)?.unwrap_or(0)));
    let event = decode_event(row, columns, stream_id, version)?;
    Ok((Position::new(commit, event.global_sequence()), event))
}

impl PostgresEventStore {
    /// A unique violation on (stream, version) means another writer
    /// bypassed eventcore's locks and took a version this write expected to
    /// be free: report it as the version conflict it is, naming the stream,
    /// from a read of the current versions (one more round trip, on this rare
    /// path only).
    async fn explain_duplicate(&self, writes: &StreamWrites, error: sqlx::Error) -> StoreError {
        let streams: Vec<&str> = writes
            .expected_versions()
            .iter()
            .map(|(id, _)| id.as_str())
            .collect();
        let Ok(mut lease) = self.conns.get("append").await else {
            return store_error("append", error);
        };
        let rows = sqlx::query(CURRENT_VERSIONS)
            .bind(&streams)
            .fetch_all(lease.conn())
            .await;
        lease.settle(&rows);
        drop(lease);
        let Ok(rows) = rows else {
            return store_error("append", error);
        };
        for (id, expected) in writes.expected_versions() {
            let actual = rows
                .iter()
                .find(|row| row.try_get::<&str, _>("stream_id").ok() == Some(id.as_str()))
                .and_then(|row| row.try_get::<i64, _>("version").ok())
                .map_or(StreamVersion::INITIAL, |v| {
                    StreamVersion::new(from_bigint(v))
                });
            if actual != *expected {
                return StoreError::VersionConflict {
                    stream_id: id.clone(),
                    expected: *expected,
                    actual,
                };
            }
        }
        store_error("append", error)
    }
}

/// Each event's version ([`StreamWrites::event_versions`]), as bound.
fn number_events(writes: &StreamWrites) -> Result<Vec<i64>, StoreError> {
    writes
        .event_versions()?
        .into_iter()
        .zip(writes.events())
        .map(|(version, event)| to_bigint(event.stream_id(), version))
        .collect()
}

/// The metadata columns of an append, one entry per event. Events of one
/// command share their metadata (one `Arc`), so its JSON is made once.
struct EventMetadataColumns<'a> {
    values: Vec<String>,
    correlation: Vec<Option<&'a str>>,
    causation: Vec<Option<&'a str>>,
}

impl<'a> EventMetadataColumns<'a> {
    fn of(events: &'a [eventcore::PendingEvent]) -> Self {
        let mut values: Vec<String> = Vec::with_capacity(events.len());
        let mut last: Option<(&Arc<Metadata>, usize)> = None;
        for event in events {
            let m = event.metadata();
            match last {
                Some((prev, i)) if Arc::ptr_eq(prev, m) => values.push(values[i].clone()),
                _ => {
                    last = Some((m, values.len()));
                    values.push(m.values_json());
                }
            }
        }
        EventMetadataColumns {
            values,
            correlation: events
                .iter()
                .map(|e| e.metadata().correlation_id().map(CorrelationId::as_str))
                .collect(),
            causation: events
                .iter()
                .map(|e| e.metadata().causation_id().map(CausationId::as_str))
                .collect(),
        }
    }
}

fn to_bigint(stream_id: &StreamId, version: StreamVersion) -> Result<i64, StoreError> {
    i64::try_from(version.get()).map_err(|_| StoreError::VersionOverflow {
        stream_id: stream_id.clone(),
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_channels_fit_postgres_identifiers() {
        let long = SchemaName::try_new("s".repeat(63)).unwrap();
        let short = SchemaName::try_new("bank").unwrap();
        for prefix in ["eventcore_appended", "eventcore_effects"] {
            assert!(channel_for(prefix, Some(&long)).len() <= 63);
            assert_ne!(
                channel_for(prefix, Some(&long)),
                channel_for(prefix, Some(&short))
            );
        }
        assert_eq!(
            channel_for("eventcore_appended", Some(&short)),
            "eventcore_appended_bank"
        );
        assert_eq!(
            channel_for("eventcore_effects", Some(&short)),
            "eventcore_effects_bank"
        );
        assert_eq!(channel_for("eventcore_effects", None), "eventcore_effects");
    }

    fn assert_send<T: Send>(_: T) {}

    /// Spawning these futures on a multi-threaded runtime needs them `Send`.
    #[allow(dead_code, clippy::let_underscore_future)]
    fn futures_are_send(store: PostgresEventStore) {
        assert_send(store.migrate());
        assert_send(PostgresEventStore::connect("postgres://localhost/x"));
        assert_send(store.read(eventcore::ReadRequest::default()));
        assert_send(store.append(StreamWrites::new()));
    }
}
