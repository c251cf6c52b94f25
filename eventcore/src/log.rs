//! The global log: every event of a store in one commit-consistent order.

use std::{fmt, future::Future, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::{RecordedEvent, StoreError};

/// A place in a store's global log, as returned with each event by
/// [`EventLog::read_all`]. Opaque: compare and store it (it is what a
/// checkpoint holds), and pass it back to read on from there.
///
/// Positions are totally ordered, and the order agrees with every stream's
/// own order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Position {
    /// The writing transaction, where the store has one (0 otherwise).
    commit: u64,
    /// The event's global sequence.
    sequence: u64,
}

impl Position {
    /// Assembles a position; for store implementations. `commit` orders
    /// first, `sequence` within it.
    pub const fn new(commit: u64, sequence: u64) -> Self {
        Position { commit, sequence }
    }

    /// The commit part; for store implementations.
    pub const fn commit(self) -> u64 {
        self.commit
    }

    /// The sequence part; for store implementations.
    pub const fn sequence(self) -> u64 {
        self.sequence
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.commit, self.sequence)
    }
}

/// A text that is not a [`Position`] (`commit/sequence`, as [`Position`]'s
/// `Display` writes it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a log position: expected two unsigned integers as commit/sequence")]
pub struct ParsePositionError {
    text: String,
}

/// Reads a position back from its `Display` text, as a service takes it
/// from a client (a header or query parameter).
///
/// ```
/// use eventcore::Position;
/// let position = Position::new(812, 4031);
/// assert_eq!(position.to_string().parse::<Position>(), Ok(position));
/// assert!("812".parse::<Position>().is_err());
/// ```
impl std::str::FromStr for Position {
    type Err = ParsePositionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ParsePositionError {
            text: text.chars().take(64).collect(),
        };
        let (commit, sequence) = text.split_once('/').ok_or_else(bad)?;
        let number = |part: &str| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse::<u64>().map_err(|_| bad())
        };
        Ok(Position::new(number(commit)?, number(sequence)?))
    }
}

/// What to read from the global log.
///
/// ```
/// use eventcore::LogQuery;
/// let query = LogQuery::from_start(500).with_stream_prefix("account-").with_event_types(["Deposited"]);
/// assert_eq!(query.limit(), 500);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    after: Option<Position>,
    limit: usize,
    stream_prefix: Option<String>,
    event_types: Option<Vec<String>>,
}

impl LogQuery {
    /// Up to `limit` events from the start of the log.
    pub fn from_start(limit: usize) -> Self {
        LogQuery {
            after: None,
            limit,
            stream_prefix: None,
            event_types: None,
        }
    }

    /// Up to `limit` events after `position` (exclusive).
    pub fn after(position: Position, limit: usize) -> Self {
        LogQuery {
            after: Some(position),
            ..LogQuery::from_start(limit)
        }
    }

    /// Only events of streams whose id starts with `prefix`, taken
    /// literally (`%` and `_` are ordinary characters).
    pub fn with_stream_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.stream_prefix = Some(prefix.into());
        self
    }

    /// Only events of these types.
    pub fn with_event_types<I, T>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.event_types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// Where reading starts (exclusive); `None` for the start of the log.
    pub fn start(&self) -> Option<Position> {
        self.after
    }

    /// The most events returned.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The stream-id prefix filter.
    pub fn stream_prefix(&self) -> Option<&str> {
        self.stream_prefix.as_deref()
    }

    /// The event-type filter.
    pub fn event_types(&self) -> Option<&[String]> {
        self.event_types.as_deref()
    }

    /// Whether an event passes the filters (for stores that filter in
    /// memory; a database store filters in its query).
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.stream_prefix
            .as_deref()
            .is_none_or(|p| event.stream_id().as_str().starts_with(p))
            && self
                .event_types
                .as_deref()
                .is_none_or(|types| types.iter().any(|t| t == event.event_type()))
    }
}

/// A page of the global log, as [`EventLog::read_all`] returns it: the
/// matching events, and where to read on from.
///
/// A page may hold fewer events than the query's limit, even none, while
/// more follow: a store may stop after looking at a bounded number of events
/// that the filters leave out, and then [`next`](LogPage::next) has moved
/// past them. Read on from `next` until a page holds no events and `next`
/// has not moved; then the reader has seen everything visible so far.
///
/// ```
/// use eventcore::{LogPage, Position};
/// let page = LogPage::new(Vec::new(), Some(Position::new(0, 7)));
/// assert!(page.is_empty());
/// assert_eq!(page.next(), Some(Position::new(0, 7)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct LogPage {
    events: Vec<(Position, RecordedEvent)>,
    next: Option<Position>,
    held_back: bool,
}

impl LogPage {
    /// A page; for store implementations. `next` is where the store
    /// stopped looking; it is raised to the last event's position if it is
    /// below it.
    pub fn new(events: Vec<(Position, RecordedEvent)>, next: Option<Position>) -> Self {
        let last = events.last().map(|(p, _)| *p);
        LogPage {
            next: next.max(last),
            events,
            held_back: false,
        }
    }

    /// The page, marked as [held back](LogPage::held_back) or not; for
    /// store implementations.
    pub fn with_held_back(mut self, held_back: bool) -> Self {
        self.held_back = held_back;
        self
    }

    /// Whether events already committed wait after this page, held back
    /// by a writer that began before them and is still running (so that
    /// no reader skips the writer's events when it commits): not the end of
    /// the log. A store that numbers events in commit order is never held
    /// back. The PostgreSQL store says who holds it back and for how long
    /// (`PostgresEventStore::log_status`).
    pub fn held_back(&self) -> bool {
        self.held_back
    }

    /// The matching events, in log order, each with its position.
    pub fn events(&self) -> &[(Position, RecordedEvent)] {
        &self.events
    }

    /// The events, owned.
    pub fn into_events(self) -> Vec<(Position, RecordedEvent)> {
        self.events
    }

    /// Where the next read starts (exclusive; `None`: from the start of the
    /// log, nothing was looked at). At or after the last event's position;
    /// every matching event after the query's start and at or before
    /// `next` is in this page, and none can appear there later.
    pub fn next(&self) -> Option<Position> {
        self.next
    }

    /// Whether the page holds no events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// How many events the page holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }
}

impl IntoIterator for LogPage {
    type Item = (Position, RecordedEvent);
    type IntoIter = std::vec::IntoIter<(Position, RecordedEvent)>;

    fn into_iter(self) -> Self::IntoIter {
        self.events.into_iter()
    }
}

/// A store whose events can be read in one global order.
///
/// # Contract
/// - Events come in ascending [`Position`] order, which agrees with every
///   stream's version order.
/// - **No skipping:** once a read has returned an event at position `P`, no
///   event can later become visible at or before `P`. A store whose writers
///   commit out of order holds back events until every earlier writer has
///   finished, rather than let a reader move past them.
/// - Filters are applied by the store; the limit counts matching events.
/// - A page's [`next`](LogPage::next) is at or after its last event and
///   never past a matching event the page does not hold; the no-skip rule
///   holds for it as for an event's position.
pub trait EventLog: Send + Sync {
    /// Reads up to `query.limit()` matching events after `query.start()`,
    /// each with its position, and where to read on from (see [`LogPage`]:
    /// fewer events than the limit do not mean the end of the log).
    ///
    /// # Errors
    /// [`StoreError::Transient`] or [`StoreError::Backend`] on backend failure.
    fn read_all(
        &self,
        query: &LogQuery,
    ) -> impl Future<Output = Result<LogPage, StoreError>> + Send;

    /// Completes when events may have been appended since it was called
    /// (and possibly spuriously). Readers call it before they read and await
    /// it when the read found nothing, so an implementation must register
    /// interest when called, not when first polled. A store that cannot
    /// tell never completes it, and readers fall back to polling.
    fn appended(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

/// Forwarding impls for `&S`, `Arc<S>` and `Box<S>`; every method is
/// forwarded, default ones included (the lint catches one forgotten).
macro_rules! forward_event_log {
    ($($wrapper:ty),+) => {$(
        #[warn(clippy::missing_trait_methods)]
        impl<S: EventLog + ?Sized> EventLog for $wrapper {
            fn read_all(
                &self,
                query: &LogQuery,
            ) -> impl Future<Output = Result<LogPage, StoreError>> + Send {
                (**self).read_all(query)
            }

            fn appended(&self) -> impl Future<Output = ()> + Send {
                (**self).appended()
            }
        }
    )+};
}

forward_event_log!(&S, Arc<S>, Box<S>);
