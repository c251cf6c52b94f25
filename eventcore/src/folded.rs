//! The execute loop's attempts for a command made of per-stream folds
//! ([`Decide`](crate::Decide)): start from the folds kept per stream, read
//! only what is not kept, keep what was folded.

use std::{any::Any, sync::Arc};

use crate::{
    CommandLogic, EventStore, ExecuteError, ExecutionResult, Metadata, PendingEvent, ReadAnswer,
    Snapshot, SnapshotKey, StateCache, StoreError, StreamId, StreamSet, StreamVersion, Uuid,
    cache::{Count, FoldEntry},
    erased::{FoldPlan, Part, Slot},
    target::{Attempt, End, Target, appended, retry_or_end},
};

/// A command's folds over its streams, checked once per execution.
pub(crate) struct Folded<'c, S> {
    /// The state's folds, then one version-only slot per declared stream
    /// that no fold reads.
    slots: Vec<Slot>,
    /// How many of `slots` are the state's folds.
    folds: usize,
    assemble: fn(&[Part]) -> Option<S>,
    /// Every stream read, sorted and unique: the declared ones and the
    /// folds' ones.
    streams: StreamSet,
    /// For each slot, the index of its stream in `streams`.
    stream_of: Vec<usize>,
    /// For each stream, its first slot (every stream has one).
    first_slot: Vec<usize>,
    /// Whether a fold reads another event type than the command writes:
    /// its appended events are then decoded from their payloads.
    decode_written: bool,
    cache: &'c StateCache,
}

/// What is known of one fold besides the fold itself.
#[derive(Debug, Clone, Copy)]
struct Meta {
    /// The version of its stream the fold covers.
    version: StreamVersion,
    /// The id of the event at that version, if known.
    last_event: Option<Uuid>,
    /// The kept entry's measured size and updates since, if it was kept.
    sized: Option<(usize, u32)>,
    /// The version of the newest snapshot of the fold known to exist.
    snapshot_base: StreamVersion,
    /// Whether a snapshot of it was found unusable: replace it soon.
    replace_snapshot: bool,
}

const EMPTY: Meta = Meta {
    version: StreamVersion::INITIAL,
    last_event: None,
    sized: None,
    snapshot_base: StreamVersion::INITIAL,
    replace_snapshot: false,
};

/// A folded command's state and what it covers: one part per slot, all
/// the slots of a stream at the same version.
pub(crate) struct Known {
    parts: Vec<Part>,
    meta: Vec<Meta>,
    /// Whether the versions were the streams' current ones at a read made
    /// during this execution (kept folds may be stale).
    verified: bool,
}

impl<'c, S> Folded<'c, S> {
    /// Checks the plan; also returns every stream the command reads.
    pub(crate) fn new<C: CommandLogic<State = S>, E>(
        plan: FoldPlan<S>,
        declared: &StreamSet,
        cache: &'c StateCache,
    ) -> Result<Self, ExecuteError<E>> {
        let FoldPlan {
            mut slots,
            assemble,
        } = plan;
        if let Some(bad) = slots
            .iter()
            .find(|s| !crate::writes::is_storable_name(s.kind.name))
        {
            return Err(ExecuteError::InvalidFoldName {
                name: bad.kind.name,
            });
        }
        let folds = slots.len();
        let mut streams = declared.clone();
        for slot in &slots {
            streams.insert(slot.stream.clone());
        }
        for stream in declared {
            if !slots.iter().any(|s| &s.stream == stream) {
                slots.push(Slot::version_only(stream.clone()));
            }
        }
        let stream_of: Vec<usize> = slots
            .iter()
            .map(|s| streams.binary_search(&s.stream).unwrap_or_default())
            .collect();
        let first_slot = (0..streams.len())
            .map(|i| stream_of.iter().position(|&s| s == i).unwrap_or_default())
            .collect();
        let written = std::any::TypeId::of::<C::Event>();
        let decode_written = slots.iter().any(|s| {
            s.kind.event_type_id != written && s.kind.event_type_id != std::any::TypeId::of::<()>()
        });
        Ok(Folded {
            slots,
            folds,
            assemble,
            streams,
            stream_of,
            first_slot,
            decode_written,
            cache,
        })
    }

    /// Every stream the command reads and checks.
    pub(crate) fn streams(&self) -> &StreamSet {
        &self.streams
    }

    /// Each stream with the version the state covers.
    fn versions(&self, k: &Known) -> Vec<(StreamId, StreamVersion)> {
        self.streams
            .iter()
            .zip(&self.first_slot)
            .map(|(s, &slot)| (s.clone(), k.meta[slot].version))
            .collect()
    }

    /// One decide-append cycle, preceded by whatever read brings `known` up
    /// to date: none when every fold is kept, a read of the tails after
    /// what is kept otherwise.
    pub(crate) async fn attempt<St, C>(
        &self,
        target: &Target<'_, St>,
        command: &C,
        metadata: &Arc<Metadata>,
        known: &mut Option<Known>,
    ) -> Attempt<ExecutionResult, C::Error>
    where
        St: EventStore,
        C: CommandLogic<State = S>,
    {
        let mut k = match known.take() {
            Some(mut k) => {
                if let Err(e) = self.catch_up(target, &mut k).await? {
                    *known = Some(k);
                    return Ok(Err(e));
                }
                k
            }
            None => match self.start(target).await? {
                Ok(k) => k,
                Err(e) => return Ok(Err(e)),
            },
        };

        // At most two rounds: a speculative append with the versions of
        // kept folds, and, if that conflicts, one on the folds brought up
        // to date; only a conflict on folds read in this attempt fails it.
        loop {
            let decided = loop {
                let state = (self.assemble)(&k.parts[..self.folds]).ok_or_else(|| {
                    StoreError::Unsupported {
                        what: "folds of another type than the state's",
                        operation: "execute",
                        store: "the execute loop",
                    }
                })?;
                match command.handle(&state) {
                    Ok(events) if !events.is_empty() => break events,
                    // A refusal or an empty decision is final only on
                    // folds known to be current.
                    settled if k.verified => {
                        let stream_versions = self.versions(&k);
                        drop(state);
                        self.keep(k);
                        return match settled {
                            Ok(_) => Ok(Ok(ExecutionResult {
                                attempts: 0,
                                stream_versions,
                                events_written: 0,
                                already_applied: false,
                                position: None,
                            })),
                            Err(refused) => Err(End::rejected(refused)),
                        };
                    }
                    _ => {}
                }
                drop(state);
                if let Err(e) = self.catch_up(target, &mut k).await? {
                    *known = Some(k);
                    return Ok(Err(e));
                }
            };

            let mut writes = target.writes(metadata);
            for (stream, version) in self.versions(&k) {
                writes.expect(stream, version)?;
            }
            for event in decided.as_slice() {
                writes.append(event)?;
            }
            let ids: Vec<Uuid> = writes.events().iter().map(PendingEvent::event_id).collect();
            let pending = self.decode_written.then(|| writes.events().to_vec());
            // The folds once the append succeeds, and a snapshot of one
            // of them if one is due, to travel with the append.
            let next = self.fold_written(
                &k,
                &Written {
                    events: decided.as_slice(),
                    ids: &ids,
                    pending: pending.as_deref(),
                },
            );
            let snapshot = next.as_ref().ok().and_then(|n| self.due_snapshot(n));
            let (writes, snapshotted) = match snapshot {
                Some((slot, snapshot)) => (writes.with_snapshot(snapshot), Some(slot)),
                None => (writes, None),
            };
            self.cache.count(Count::Append);
            match target.append(writes).await {
                // Applied before, its reply lost: the kept folds do not
                // hold its events.
                Ok(outcome) if outcome.already_applied => {
                    self.forget();
                    return Ok(Ok(appended(outcome)));
                }
                Ok(outcome) => {
                    match next {
                        Ok(mut next) => {
                            // The versions the store says the streams are at.
                            for (slot, m) in self.slots.iter().zip(&mut next.meta) {
                                let at = outcome
                                    .stream_versions
                                    .iter()
                                    .find(|(id, _)| *id == slot.stream);
                                if let Some((_, version)) = at {
                                    m.version = *version;
                                }
                            }
                            if let Some(slot) = snapshotted {
                                self.cache.count(Count::SnapshotOffered);
                                let m = &mut next.meta[slot];
                                m.snapshot_base = m.version;
                                m.replace_snapshot = false;
                            }
                            self.keep(next);
                        }
                        // A fold cannot read what was written: the next
                        // command reads the stream and reports it.
                        Err(_) => self.forget(),
                    }
                    return Ok(Ok(appended(outcome)));
                }
                Err(StoreError::VersionConflict { .. }) if !k.verified => {
                    if let Err(e) = self.catch_up(target, &mut k).await? {
                        *known = Some(k);
                        return Ok(Err(e));
                    }
                }
                Err(e) => {
                    // Stale, or not known to have committed: read the
                    // tails next.
                    k.verified = false;
                    *known = Some(k);
                    return retry_or_end(e);
                }
            }
        }
    }

    /// The kept folds, if every one is kept and current as far as this
    /// process knows; else the folds read after what is kept.
    async fn start<St: EventStore, E>(&self, target: &Target<'_, St>) -> Attempt<Known, E> {
        let mut parts = Vec::with_capacity(self.slots.len());
        let mut meta = Vec::with_capacity(self.slots.len());
        let mut missing = false;
        let mut stale = false;
        for slot in &self.slots {
            match self.cache.get_fold(&slot.kind, &slot.stream) {
                Some((entry, known_stale)) => {
                    stale |= known_stale;
                    parts.push(Some(entry.part));
                    meta.push(Meta {
                        version: entry.version,
                        last_event: entry.last_event,
                        sized: Some((entry.bytes, entry.unsized_updates)),
                        snapshot_base: entry.snapshot_base,
                        replace_snapshot: false,
                    });
                }
                None => {
                    missing = true;
                    parts.push(None);
                    meta.push(EMPTY);
                }
            }
        }
        if missing {
            self.cache.count(Count::Miss);
            if self.snapshots_on() && self.slots.len() == 1 && self.cache.look_for_snapshot() {
                return self.start_from_snapshot(target).await;
            }
        } else {
            self.cache.count(Count::Hit);
            // Folds of one stream kept at different versions need a read
            // to line them up.
            let uneven = self
                .stream_of
                .iter()
                .zip(&meta)
                .any(|(&s, m)| m.version != meta[self.first_slot[s]].version);
            if stale || uneven {
                self.cache.count(Count::StaleHit);
            } else {
                return Ok(Ok(Known {
                    parts: parts.into_iter().flatten().collect(),
                    meta,
                    verified: false,
                }));
            }
        }
        self.read(target, parts, meta).await
    }

    /// Brings `k` up to date; on a retryable error `k` is as it was.
    async fn catch_up<St: EventStore, E>(
        &self,
        target: &Target<'_, St>,
        k: &mut Known,
    ) -> Attempt<(), E> {
        let parts = k.parts.iter().cloned().map(Some).collect();
        match self.read(target, parts, k.meta.clone()).await? {
            Ok(fresh) => {
                *k = fresh;
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// Reads every stream after the lowest version its folds cover (a
    /// missing fold covers none) and folds the events in. A stream shorter
    /// than a fold claims (folds of another database's streams) is read
    /// again whole, its folds made anew.
    async fn read<St: EventStore, E>(
        &self,
        target: &Target<'_, St>,
        mut parts: Vec<Option<Part>>,
        mut meta: Vec<Meta>,
    ) -> Attempt<Known, E> {
        let read = loop {
            let held: Vec<(StreamId, StreamVersion)> = self
                .streams
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let lowest = self
                        .stream_of
                        .iter()
                        .zip(&parts)
                        .zip(&meta)
                        .filter(|((of, _), _)| **of == i)
                        .map(|((_, part), m)| match part {
                            Some(_) => m.version,
                            None => StreamVersion::INITIAL,
                        })
                        .min()
                        .unwrap_or(StreamVersion::INITIAL);
                    (s.clone(), lowest)
                })
                .collect();
            let tails = held.iter().any(|(_, v)| *v != StreamVersion::INITIAL);
            self.cache.count(if tails {
                Count::TailRead
            } else {
                Count::FullRead
            });
            let read = match target.read_tails(&held).await? {
                Ok(read) => read,
                Err(e) => return Ok(Err(e)),
            };
            let mut behind = false;
            for (i, (stream, lowest)) in held.iter().enumerate() {
                if read.version(stream).is_none_or(|now| now < *lowest) {
                    behind = true;
                    for (j, _) in self.stream_of.iter().enumerate().filter(|(_, s)| **s == i) {
                        parts[j] = None;
                        meta[j] = EMPTY;
                        self.cache
                            .remove_fold(&self.slots[j].kind, &self.slots[j].stream);
                    }
                }
            }
            if !behind {
                break read;
            }
        };
        let mut folded = Vec::with_capacity(self.slots.len());
        for ((slot, part), m) in self.slots.iter().zip(parts).zip(meta.iter_mut()) {
            let now = read.version(&slot.stream).unwrap_or(StreamVersion::INITIAL);
            let from = match part {
                Some(_) => m.version,
                None => StreamVersion::INITIAL,
            };
            let mut events = read
                .events_of(&slot.stream)
                .filter(|e| e.version() > from)
                .peekable();
            let part = match part {
                Some(part) if events.peek().is_none() => part,
                part => {
                    let mut fold = match part {
                        Some(part) => part.clone_box(),
                        None => (slot.kind.make)(),
                    };
                    for event in events {
                        fold.apply_recorded(event)?;
                        m.last_event = Some(event.event_id());
                    }
                    Part::from(fold)
                }
            };
            m.version = now;
            folded.push(part);
        }
        Ok(Ok(Known {
            parts: folded,
            meta,
            verified: true,
        }))
    }

    /// The folds after `written` is appended: each slot's events folded
    /// in, at the version its stream will have.
    fn fold_written<E: crate::Event>(
        &self,
        k: &Known,
        written: &Written<'_, E>,
    ) -> Result<Known, StoreError> {
        let mut parts = k.parts.clone();
        let mut meta = k.meta.clone();
        for (j, slot) in self.slots.iter().enumerate() {
            let mine = || {
                written
                    .events
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.stream_id() == &slot.stream)
            };
            if mine().next().is_none() {
                continue;
            }
            let mut fold = parts[j].clone_box();
            for (i, event) in mine() {
                let pending = written.pending.and_then(|p| p.get(i));
                fold.apply_written(event as &dyn Any, pending)?;
                meta[j].last_event = written.ids.get(i).copied();
                meta[j].version = StreamVersion::new(meta[j].version.get().saturating_add(1));
            }
            parts[j] = Part::from(fold);
        }
        Ok(Known {
            parts,
            meta,
            verified: true,
        })
    }

    fn snapshots_on(&self) -> bool {
        self.cache.config().snapshot_every().is_some()
    }

    /// A snapshot of the first fold of `k` that is due one: enough events
    /// since its last, or the one found could not be used.
    fn due_snapshot(&self, k: &Known) -> Option<(usize, Snapshot)> {
        let every = self.cache.config().snapshot_every()?.get();
        let (slot, (part, m)) = self
            .slots
            .iter()
            .zip(k.parts.iter().zip(&k.meta))
            .enumerate()
            .find(|(_, (slot, (_, m)))| {
                slot.kind.folds()
                    && (m.replace_snapshot
                        || m.version.get().saturating_sub(m.snapshot_base.get()) >= every)
            })
            .map(|(i, (_, found))| (i, found))?;
        let of = &self.slots[slot];
        let snapshot = Snapshot::new(
            SnapshotKey::of_fold(of.kind.name, &of.stream),
            of.kind.schema_version,
            vec![m.version],
            part.encode()?,
        );
        Some((slot, snapshot))
    }

    /// A single fold's state from its snapshot and the events after it;
    /// from its whole stream when the snapshot cannot be used.
    async fn start_from_snapshot<St: EventStore, E>(
        &self,
        target: &Target<'_, St>,
    ) -> Attempt<Known, E> {
        let slot = &self.slots[0];
        let key = SnapshotKey::of_fold(slot.kind.name, &slot.stream);
        self.cache.count(Count::SnapshotLoad);
        // A snapshot may only make a command faster: whatever is wrong
        // with it, the fold is made from the events instead.
        let found = match target.read_from_snapshot(&key).await {
            Ok(ReadAnswer {
                record: Some(record),
                ..
            }) => return Err(End::Recorded(Box::new(record))),
            Ok(found) => found,
            Err(e) if e.is_retryable() => return Ok(Err(e)),
            Err(_) => return self.read_whole(target, true).await,
        };
        let present = found.snapshot.is_some();
        self.cache.looked_for_snapshot(present);
        let after = found
            .after
            .first()
            .map_or(StreamVersion::INITIAL, |(_, v)| *v);
        let usable = found
            .snapshot
            .as_ref()
            .filter(|s| {
                s.schema_version() == slot.kind.schema_version
                    && s.key() == &key
                    && s.versions() == [after]
            })
            .and_then(|s| (slot.kind.decode)(s.state()));
        let used = usable.is_some();
        let mut fold = match usable {
            Some(fold) => fold,
            None if after == StreamVersion::INITIAL => (slot.kind.make)(),
            // The store started after a snapshot this fold cannot use.
            None => return self.read_whole(target, true).await,
        };
        let now = found.reads.version(&slot.stream).unwrap_or_default();
        if now < after {
            return self.read_whole(target, true).await;
        }
        let mut last_event = None;
        for event in found.reads.events_of(&slot.stream) {
            if event.version() > after {
                fold.apply_recorded(event)?;
                last_event = Some(event.event_id());
            }
        }
        self.cache.count(if used {
            Count::SnapshotUsed
        } else if present {
            Count::SnapshotIgnored
        } else {
            Count::FullRead
        });
        Ok(Ok(Known {
            parts: vec![Part::from(fold)],
            meta: vec![Meta {
                version: now,
                last_event,
                sized: None,
                snapshot_base: if used { after } else { StreamVersion::INITIAL },
                replace_snapshot: present && !used,
            }],
            verified: true,
        }))
    }

    /// Every fold from its whole stream; with `replace`, a snapshot found
    /// unusable is replaced at the next append.
    async fn read_whole<St: EventStore, E>(
        &self,
        target: &Target<'_, St>,
        replace: bool,
    ) -> Attempt<Known, E> {
        if replace {
            self.cache.count(Count::SnapshotIgnored);
        }
        let n = self.slots.len();
        match self.read(target, vec![None; n], vec![EMPTY; n]).await? {
            Ok(mut k) => {
                for m in &mut k.meta {
                    m.replace_snapshot = replace;
                }
                Ok(Ok(k))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// Keeps folds known to be current. A fold's size is measured (by
    /// serialising it) when first kept and then every 32 updates.
    fn keep(&self, k: Known) {
        const RESIZE_EVERY: u32 = 32;
        for ((slot, part), m) in self.slots.iter().zip(k.parts).zip(k.meta) {
            let (bytes, unsized_updates) = match m.sized {
                Some((bytes, n)) if n < RESIZE_EVERY => (bytes, n + 1),
                _ => (part.size() + slot.stream.as_str().len() + 64, 0),
            };
            self.cache.put_fold(
                &slot.kind,
                &slot.stream,
                FoldEntry {
                    version: m.version,
                    last_event: m.last_event,
                    part,
                    snapshot_base: m.snapshot_base,
                    bytes,
                    unsized_updates,
                },
            );
        }
    }

    /// Forgets the kept folds of every slot.
    fn forget(&self) {
        for slot in &self.slots {
            self.cache.remove_fold(&slot.kind, &slot.stream);
        }
    }
}

/// What an append writes, to fold into the kept folds.
struct Written<'a, E> {
    events: &'a [E],
    ids: &'a [Uuid],
    pending: Option<&'a [PendingEvent]>,
}
