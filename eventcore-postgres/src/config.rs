//! Connection settings.

use std::time::Duration;

use nutype::nutype;

/// The default limit on one event's serialised size: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A PostgreSQL schema to keep eventcore's tables in: 1 to 63 characters,
/// lower-case ASCII letters, digits and `_`, not starting with a digit (so it
/// never needs quoting and cannot inject SQL).
///
/// ```
/// use eventcore_postgres::SchemaName;
/// assert!(SchemaName::try_new("billing_events").is_ok());
/// assert!(SchemaName::try_new("Billing; DROP").is_err());
/// ```
#[nutype(
    validate(len_char_min = 1, len_char_max = 63, predicate = is_identifier),
    derive(Debug, Clone, PartialEq, Eq, AsRef, Display)
)]
pub struct SchemaName(String);

/// How a [`PostgresEventStore`](crate::PostgresEventStore) connects.
///
/// ```
/// use std::time::Duration;
/// use eventcore_postgres::{PostgresConfig, SchemaName};
///
/// let config = PostgresConfig::default()
///     .max_connections(32)
///     .statement_timeout(Some(Duration::from_secs(5)))
///     .schema(SchemaName::try_new("bank").unwrap());
/// assert_eq!(config.max_connections_value(), 32);
/// ```
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub(crate) max_connections: u32,
    pub(crate) acquire_timeout: Duration,
    pub(crate) statement_timeout: Option<Duration>,
    pub(crate) max_payload_bytes: usize,
    pub(crate) schema: Option<SchemaName>,
    pub(crate) application_name: Option<String>,
    pub(crate) idle_check_after: Duration,
    pub(crate) max_lifetime: Duration,
}

impl Default for PostgresConfig {
    /// 16 connections, 10 s to acquire one, a 30 s statement timeout, a
    /// check of connections idle for 10 s, connections
    /// retired after 30 minutes, 1 MiB per event, the connection's default
    /// schema.
    fn default() -> Self {
        PostgresConfig {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            statement_timeout: Some(Duration::from_secs(30)),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            schema: None,
            application_name: None,
            idle_check_after: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(30 * 60),
        }
    }
}

impl PostgresConfig {
    /// Sets the store's connection budget (at least 1; default 16): one
    /// store value and its clones never hold more connections than this, in
    /// total.
    ///
    /// Reads, appends, checkpoints, exactly-once projections, migrations,
    /// the NOTIFY sent after appends and the snapshot writes borrow a
    /// connection for one call (or one transaction). Two kinds of session
    /// hold one for as long as they last: each subscription instance (its
    /// lease, held or waited for) and, once a reader waits for new events,
    /// the LISTEN session. Sessions may take at most `max_connections - 1`,
    /// so one connection is always left for statements; a subscription
    /// whose lease would take the last one stops with a
    /// [`StoreError::Backend`](eventcore::StoreError::Backend) saying so,
    /// and a LISTEN session that finds no room leaves readers polling (see
    /// [`wakeups_live`](crate::PostgresEventStore::wakeups_live)). Size it
    /// as your command concurrency plus one per subscription plus one for
    /// the listener, and the server's `max_connections` for every process.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// The connection budget.
    pub fn max_connections_value(&self) -> u32 {
        self.max_connections
    }

    /// Sets how long to wait for a free connection before failing (transiently).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets the server-side `statement_timeout` of every connection (`None`
    /// keeps the server's default). Sent in the startup packet: no extra
    /// round trip.
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Sets the largest serialised event accepted, in bytes.
    pub fn max_payload_bytes(mut self, limit: usize) -> Self {
        self.max_payload_bytes = limit;
        self
    }

    /// Keeps eventcore's tables in this schema (set as the connections'
    /// `search_path`; [`migrate`](crate::PostgresEventStore::migrate)
    /// creates it).
    pub fn schema(mut self, schema: SchemaName) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Sets how long a connection of the store's own may sit idle before it
    /// is checked (one round trip) on its way out of the pool (default
    /// 10 s): a connection closed by the server, a proxy or a firewall
    /// while idle is replaced instead of failing a command.
    pub fn idle_check_after(mut self, idle: Duration) -> Self {
        self.idle_check_after = idle;
        self
    }

    /// Sets the longest a connection of the store's own is reused (default
    /// 30 minutes); older ones are closed when they come back to the pool.
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// Sets the connections' `application_name`, shown in `pg_stat_activity`.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }
}
