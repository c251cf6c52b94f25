//! The in-process cache of folded states, owned by an executor.

use std::{
    any::TypeId,
    borrow::Borrow,
    hash::{Hash, Hasher},
    num::NonZeroU64,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use lru::LruCache;

use crate::{
    StreamId, StreamVersion, Uuid,
    erased::{FoldKind, Part},
};

/// Limits of a [`StateCache`] and how often it snapshots.
///
/// ```
/// use std::num::NonZeroU64;
/// use eventcore::CacheConfig;
///
/// let config = CacheConfig::default()
///     .with_max_entries(50_000)
///     .with_max_bytes(256 << 20)
///     .with_snapshot_every(NonZeroU64::new(500));
/// assert_eq!(config.max_entries(), 50_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    max_entries: usize,
    max_bytes: usize,
    snapshot_every: Option<NonZeroU64>,
}

impl Default for CacheConfig {
    /// 100,000 folds (each one stream's, so small: the byte limit is the
    /// one that binds for large folds), 64 MiB, a snapshot of a fold every
    /// 100 events of its stream.
    fn default() -> Self {
        CacheConfig {
            max_entries: 100_000,
            max_bytes: 64 << 20,
            snapshot_every: NonZeroU64::new(100),
        }
    }
}

impl CacheConfig {
    /// No in-process states and no snapshots: every command folds its
    /// streams' whole history (a folded command still keeps its folds
    /// across the retries of one execution).
    pub fn disabled() -> Self {
        CacheConfig {
            max_entries: 0,
            max_bytes: 0,
            snapshot_every: None,
        }
    }

    /// Sets how many states are kept at most (0: none; snapshots may still
    /// be used).
    pub fn with_max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// Sets about how many bytes the kept states may take (each counted as
    /// the length of its JSON form plus its versions).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets after how many new events (summed over its streams) a state is
    /// snapshotted again; `None` writes no snapshots and reads none.
    pub fn with_snapshot_every(mut self, events: Option<NonZeroU64>) -> Self {
        self.snapshot_every = events;
        self
    }

    /// How many states are kept at most.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// About how many bytes the kept states may take.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// After how many new events a state is snapshotted again.
    pub fn snapshot_every(&self) -> Option<NonZeroU64> {
        self.snapshot_every
    }
}

/// What a [`StateCache`] has done since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Executions of folded commands that found every fold kept.
    pub hits: u64,
    /// Executions of folded commands that found a fold not kept.
    pub misses: u64,
    /// Hits on a fold known stale (its stream moved through another kept
    /// fold of this cache): they read the tails before deciding.
    pub stale_hits: u64,
    /// Kept folds dropped to respect the limits.
    pub evictions: u64,
    /// Reads of only the events after a known state (after a conflict, to
    /// confirm a refusal, or after a snapshot).
    pub tail_reads: u64,
    /// Reads of folded commands' whole streams.
    pub full_reads: u64,
    /// Snapshots a command started from.
    pub snapshots_used: u64,
    /// Snapshots found but not used: another schema version, a state that
    /// no longer deserialises, versions ahead of the streams.
    pub snapshots_ignored: u64,
    /// Snapshots handed to the store to save.
    pub snapshots_offered: u64,
    /// Snapshot look-ups (one per miss while snapshots are on).
    pub snapshot_loads: u64,
    /// Appends of folded commands (a stale kept fold costs two).
    pub appends: u64,
}

impl CacheStats {
    /// The share of declared executions that started from a kept state.
    pub fn hit_rate(&self) -> f64 {
        self.hits as f64 / (self.hits + self.misses).max(1) as f64
    }

    /// Store calls (reads, snapshot look-ups, appends) of declared
    /// commands: on PostgreSQL, round trips.
    pub fn store_calls(&self) -> u64 {
        self.tail_reads + self.full_reads + self.snapshot_loads + self.appends
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &CacheStats) -> CacheStats {
        CacheStats {
            hits: self.hits - earlier.hits,
            misses: self.misses - earlier.misses,
            stale_hits: self.stale_hits - earlier.stale_hits,
            evictions: self.evictions - earlier.evictions,
            tail_reads: self.tail_reads - earlier.tail_reads,
            full_reads: self.full_reads - earlier.full_reads,
            snapshots_used: self.snapshots_used - earlier.snapshots_used,
            snapshots_ignored: self.snapshots_ignored - earlier.snapshots_ignored,
            snapshots_offered: self.snapshots_offered - earlier.snapshots_offered,
            snapshot_loads: self.snapshot_loads - earlier.snapshot_loads,
            appends: self.appends - earlier.appends,
        }
    }
}

/// The per-stream folds of [`Decide`](crate::Decide) commands, kept in
/// process by the [`Executor`](crate::Executor) that owns it under each
/// fold's type, schema version and stream, least recently used out when
/// over its entry or byte limit; and when to snapshot them.
///
/// Clones of an executor share its cache; the default executor of a store's
/// [identity](crate::EventStore::identity) (what `execute(&store, ..)` uses)
/// is shared by the store's clones, and separate store values (two
/// processes, two tenants) do not share one.
/// A kept fold is a shortcut, never a source of truth: `execute` appends
/// with the versions it covers, so a fold made stale by another writer
/// makes the append conflict, and `execute` then reads only the newer events.
#[derive(Debug)]
pub struct StateCache {
    config: CacheConfig,
    lru: Mutex<Lru>,
    counters: Counters,
}

#[derive(Debug)]
struct Lru {
    /// Per-stream folds of [`Decide`](crate::Decide) commands.
    folds: LruCache<FoldKey, FoldEntry>,
    bytes: usize,
    /// The newest version of each stream that a kept state of this cache
    /// covered: a kept state behind it is known stale without asking the
    /// store (another key of this process moved one of its streams).
    seen: LruCache<StreamId, StreamVersion>,
    /// How many streams `seen` remembers at most. `seen` grows on demand
    /// (a bounded `LruCache` would allocate all of it up front, for every
    /// store value).
    seen_max: usize,
}

#[derive(Debug, Default)]
struct Counters {
    /// Snapshot look-ups in a row that found nothing.
    empty_lookups: AtomicU64,
    /// Misses that skipped the look-up since the streak began.
    skipped_lookups: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    stale_hits: AtomicU64,
    evictions: AtomicU64,
    tail_reads: AtomicU64,
    full_reads: AtomicU64,
    snapshots_used: AtomicU64,
    snapshots_ignored: AtomicU64,
    snapshots_offered: AtomicU64,
    snapshot_loads: AtomicU64,
    appends: AtomicU64,
}

/// What a kept fold is filed under: its type and schema version, and its
/// stream. Looked up through [`FoldProbe`], which borrows the stream, so a
/// hit allocates nothing.
#[derive(Debug, Clone)]
pub(crate) struct FoldKey {
    type_id: TypeId,
    schema_version: u32,
    stream: StreamId,
}

/// A kept fold's identity, owned or borrowed.
trait FoldIdentity {
    fn identity(&self) -> (TypeId, u32, &str);
}

impl FoldIdentity for FoldKey {
    fn identity(&self) -> (TypeId, u32, &str) {
        (self.type_id, self.schema_version, self.stream.as_str())
    }
}

/// A fold's identity with its stream borrowed.
struct FoldProbe<'a> {
    type_id: TypeId,
    schema_version: u32,
    stream: &'a str,
}

impl FoldIdentity for FoldProbe<'_> {
    fn identity(&self) -> (TypeId, u32, &str) {
        (self.type_id, self.schema_version, self.stream)
    }
}

impl Hash for dyn FoldIdentity + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

impl PartialEq for dyn FoldIdentity + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for dyn FoldIdentity + '_ {}

impl Hash for FoldKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn FoldIdentity).hash(state);
    }
}

impl PartialEq for FoldKey {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for FoldKey {}

impl<'a> Borrow<dyn FoldIdentity + 'a> for FoldKey {
    fn borrow(&self) -> &(dyn FoldIdentity + 'a) {
        self
    }
}

fn probe<'a>(kind: &FoldKind, stream: &'a StreamId) -> FoldProbe<'a> {
    FoldProbe {
        type_id: kind.type_id,
        schema_version: kind.schema_version,
        stream: stream.as_str(),
    }
}

/// A kept fold: the version of its stream it covers, the id of the event
/// at that version, and the fold.
#[derive(Clone)]
pub(crate) struct FoldEntry {
    pub(crate) version: StreamVersion,
    pub(crate) last_event: Option<Uuid>,
    pub(crate) part: Part,
    /// The version of the newest snapshot of the fold known to exist.
    pub(crate) snapshot_base: StreamVersion,
    pub(crate) bytes: usize,
    /// Updates since `bytes` was measured.
    pub(crate) unsized_updates: u32,
}

impl std::fmt::Debug for FoldEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoldEntry")
            .field("version", &self.version)
            .field("last_event", &self.last_event)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// What a counter counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    Hit,
    Miss,
    StaleHit,
    TailRead,
    FullRead,
    SnapshotUsed,
    SnapshotIgnored,
    SnapshotOffered,
    SnapshotLoad,
    Append,
}

impl Lru {
    /// Notes that a kept state or fold covers `stream` at `version`.
    fn saw(&mut self, stream: &StreamId, version: StreamVersion) {
        match self.seen.get_mut(stream) {
            Some(newest) => *newest = (*newest).max(version),
            None => {
                self.seen.put(stream.clone(), version);
                if self.seen.len() > self.seen_max {
                    self.seen.pop_lru();
                }
            }
        }
    }
}

impl Default for StateCache {
    fn default() -> Self {
        Self::new(CacheConfig::default())
    }
}

impl StateCache {
    /// An empty cache with these limits.
    pub fn new(config: CacheConfig) -> Self {
        let seen_max = config.max_entries.saturating_mul(4).max(1024);
        StateCache {
            config,
            lru: Mutex::new(Lru {
                folds: LruCache::unbounded(),
                bytes: 0,
                seen: LruCache::unbounded(),
                seen_max,
            }),
            counters: Counters::default(),
        }
    }

    /// The limits.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// What the cache has done so far.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            hits: c.hits.load(Relaxed),
            misses: c.misses.load(Relaxed),
            stale_hits: c.stale_hits.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            tail_reads: c.tail_reads.load(Relaxed),
            full_reads: c.full_reads.load(Relaxed),
            snapshots_used: c.snapshots_used.load(Relaxed),
            snapshots_ignored: c.snapshots_ignored.load(Relaxed),
            snapshots_offered: c.snapshots_offered.load(Relaxed),
            snapshot_loads: c.snapshot_loads.load(Relaxed),
            appends: c.appends.load(Relaxed),
        }
    }

    /// How many states (and per-stream folds) are kept.
    pub fn len(&self) -> usize {
        self.lru().folds.len()
    }

    /// Whether no state is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// About how many bytes the kept states take.
    pub fn bytes(&self) -> usize {
        self.lru().bytes
    }

    /// Drops every kept state (snapshots stay in the store).
    pub fn clear(&self) {
        let mut lru = self.lru();
        lru.folds.clear();
        lru.bytes = 0;
        lru.seen.clear();
    }

    fn lru(&self) -> std::sync::MutexGuard<'_, Lru> {
        // Every update leaves the map and its byte count consistent before
        // anything that could panic, so a poisoned lock guards a valid cache.
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn count(&self, what: Count) {
        let c = &self.counters;
        let counter = match what {
            Count::Hit => &c.hits,
            Count::Miss => &c.misses,
            Count::StaleHit => &c.stale_hits,
            Count::TailRead => &c.tail_reads,
            Count::FullRead => &c.full_reads,
            Count::SnapshotUsed => &c.snapshots_used,
            Count::SnapshotIgnored => &c.snapshots_ignored,
            Count::SnapshotOffered => &c.snapshots_offered,
            Count::SnapshotLoad => &c.snapshot_loads,
            Count::Append => &c.appends,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Whether a miss should look for a snapshot. After 64 look-ups in a
    /// row found none (commands whose keys never repeat, such as transfers
    /// between random pairs, or states too short to snapshot), only one
    /// miss in 64 looks, and the others read the streams alone: a cheaper
    /// read, and the same result, since there was nothing to find. One
    /// snapshot found resumes the look-ups.
    pub(crate) fn look_for_snapshot(&self) -> bool {
        const STREAK: u64 = 64;
        let c = &self.counters;
        c.empty_lookups.load(Relaxed) < STREAK
            || c.skipped_lookups
                .fetch_add(1, Relaxed)
                .is_multiple_of(STREAK)
    }

    /// Records what a snapshot look-up found.
    pub(crate) fn looked_for_snapshot(&self, found: bool) {
        let c = &self.counters;
        if found {
            c.empty_lookups.store(0, Relaxed);
            c.skipped_lookups.store(0, Relaxed);
        } else {
            c.empty_lookups.fetch_add(1, Relaxed);
        }
    }

    /// The kept fold of `kind` over `stream`, if any, and whether it is
    /// known stale (another kept state or fold of this cache covers a newer
    /// version of the stream). Counts nothing: the execute loop counts per
    /// command.
    pub(crate) fn get_fold(&self, kind: &FoldKind, stream: &StreamId) -> Option<(FoldEntry, bool)> {
        let probe = probe(kind, stream);
        let mut lru = self.lru();
        let entry = lru.folds.get(&probe as &dyn FoldIdentity)?.clone();
        let stale = lru
            .seen
            .peek(stream)
            .is_some_and(|newest| *newest > entry.version);
        Some((entry, stale))
    }

    /// Keeps the fold of `kind` over `stream`, unless the one kept covers a
    /// newer version; then evicts the least recently used folds until
    /// within the limits.
    pub(crate) fn put_fold(&self, kind: &FoldKind, stream: &StreamId, entry: FoldEntry) {
        if self.config.max_entries == 0 || entry.bytes > self.config.max_bytes {
            return;
        }
        let mut lru = self.lru();
        lru.saw(stream, entry.version);
        let added = entry.bytes;
        let probe = probe(kind, stream);
        let replaced = match lru.folds.get_mut(&probe as &dyn FoldIdentity) {
            Some(old) if old.version > entry.version => return,
            Some(old) => Some(std::mem::replace(old, entry).bytes),
            None => {
                let key = FoldKey {
                    type_id: kind.type_id,
                    schema_version: kind.schema_version,
                    stream: stream.clone(),
                };
                lru.folds.put(key, entry);
                None
            }
        };
        lru.bytes = lru.bytes - replaced.unwrap_or(0) + added;
        while lru.folds.len() > self.config.max_entries || lru.bytes > self.config.max_bytes {
            let Some((_, out)) = lru.folds.pop_lru() else {
                break;
            };
            lru.bytes -= out.bytes;
            self.counters.evictions.fetch_add(1, Relaxed);
        }
    }

    /// Forgets the fold of `kind` over `stream`.
    pub(crate) fn remove_fold(&self, kind: &FoldKind, stream: &StreamId) {
        let probe = probe(kind, stream);
        let mut lru = self.lru();
        if let Some(old) = lru.folds.pop(&probe as &dyn FoldIdentity) {
            lru.bytes -= old.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::erased::{FoldKind, Slot};

    /// Two fold types over one event type.
    #[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
    struct Seen(u64);

    #[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
    struct Other(u64);

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct Ev(StreamId);

    impl crate::Event for Ev {
        fn stream_id(&self) -> &StreamId {
            &self.0
        }
        fn event_type(&self) -> &'static str {
            "Ev"
        }
    }

    impl crate::Fold for Seen {
        type Event = Ev;
        const NAME: &'static str = "seen";
        fn apply(&mut self, _: &Ev) {
            self.0 += 1;
        }
    }

    impl crate::Fold for Other {
        type Event = Ev;
        const NAME: &'static str = "other";
        fn apply(&mut self, _: &Ev) {}
    }

    fn kind<F: crate::Fold>() -> FoldKind {
        Slot::of::<F>(&id("any")).kind
    }

    fn id(s: &str) -> StreamId {
        StreamId::try_new(s).unwrap()
    }

    fn entry(version: u64, bytes: usize) -> FoldEntry {
        FoldEntry {
            version: StreamVersion::new(version),
            last_event: None,
            part: Arc::new(Seen(version)),
            snapshot_base: StreamVersion::INITIAL,
            bytes,
            unsized_updates: 0,
        }
    }

    #[test]
    fn least_recently_used_goes_first_when_over_the_entry_limit() {
        let cache = StateCache::new(CacheConfig::default().with_max_entries(2));
        let seen = kind::<Seen>();
        cache.put_fold(&seen, &id("a"), entry(1, 10));
        cache.put_fold(&seen, &id("b"), entry(1, 10));
        assert!(cache.get_fold(&seen, &id("a")).is_some());
        cache.put_fold(&seen, &id("c"), entry(1, 10));
        assert!(
            cache.get_fold(&seen, &id("b")).is_none(),
            "b was least recently used"
        );
        assert!(cache.get_fold(&seen, &id("a")).is_some());
        assert!(cache.get_fold(&seen, &id("c")).is_some());
        assert_eq!(cache.stats().evictions, 1);
    }

    #[test]
    fn folds_are_kept_by_type_and_stream() {
        let cache = StateCache::default();
        cache.put_fold(&kind::<Seen>(), &id("a"), entry(3, 10));
        assert!(cache.get_fold(&kind::<Other>(), &id("a")).is_none());
        assert!(cache.get_fold(&kind::<Seen>(), &id("b")).is_none());
        let (kept, stale) = cache.get_fold(&kind::<Seen>(), &id("a")).unwrap();
        assert_eq!((kept.version, stale), (StreamVersion::new(3), false));
    }

    #[test]
    fn the_byte_limit_evicts_too() {
        let cache = StateCache::new(CacheConfig::default().with_max_bytes(25));
        let seen = kind::<Seen>();
        for s in ["a", "b", "c"] {
            cache.put_fold(&seen, &id(s), entry(1, 10));
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.bytes(), 20);
        cache.put_fold(&seen, &id("d"), entry(1, 26));
        assert_eq!(cache.len(), 2, "a fold over the whole limit is not kept");
    }

    #[test]
    fn an_older_fold_never_replaces_a_newer_one() {
        let cache = StateCache::default();
        let seen = kind::<Seen>();
        cache.put_fold(&seen, &id("a"), entry(5, 10));
        cache.put_fold(&seen, &id("a"), entry(4, 10));
        let (kept, stale) = cache.get_fold(&seen, &id("a")).unwrap();
        assert_eq!(kept.version, StreamVersion::new(5));
        assert!(!stale);
        cache.put_fold(&seen, &id("a"), entry(6, 12));
        assert_eq!(cache.bytes(), 12);
    }

    #[test]
    fn a_fold_behind_another_kept_fold_of_its_stream_is_known_stale() {
        let cache = StateCache::default();
        cache.put_fold(&kind::<Seen>(), &id("a"), entry(5, 10));
        cache.put_fold(&kind::<Other>(), &id("a"), entry(7, 10));
        assert!(
            cache.get_fold(&kind::<Seen>(), &id("a")).unwrap().1,
            "stream a moved to 7 through the other fold"
        );
        assert!(!cache.get_fold(&kind::<Other>(), &id("a")).unwrap().1);
    }

    #[test]
    fn the_streams_remembered_for_staleness_are_bounded() {
        let cache = StateCache::new(CacheConfig::default().with_max_entries(1));
        for n in 0..3000u32 {
            cache.put_fold(&kind::<Seen>(), &id(&format!("s-{n}")), entry(1, 1));
        }
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.lru().seen.len(), 1024, "at least 1,024, 4 per entry");
    }

    #[test]
    fn a_removed_fold_is_gone_with_its_bytes() {
        let cache = StateCache::default();
        cache.put_fold(&kind::<Seen>(), &id("a"), entry(1, 10));
        cache.remove_fold(&kind::<Seen>(), &id("a"));
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn empty_snapshot_look_ups_thin_out_until_one_finds_something() {
        let cache = StateCache::default();
        for _ in 0..64 {
            assert!(cache.look_for_snapshot());
            cache.looked_for_snapshot(false);
        }
        let looks = (0..640).filter(|_| cache.look_for_snapshot()).count();
        assert_eq!(looks, 10, "one miss in 64 looks");
        cache.looked_for_snapshot(true);
        assert!(
            (0..10).all(|_| cache.look_for_snapshot()),
            "found one: look again"
        );
    }

    #[test]
    fn a_disabled_cache_keeps_nothing() {
        let cache = StateCache::new(CacheConfig::disabled());
        cache.put_fold(&kind::<Seen>(), &id("a"), entry(1, 1));
        assert!(cache.is_empty());
    }
}
