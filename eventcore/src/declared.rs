//! The execute loop's attempts for a command that declares its state: start
//! from a kept state or a snapshot, read only tails, keep what was folded.

use std::sync::Arc;

use crate::{
    CommandLogic, EventStore, ExecuteError, ExecutionResult, Metadata, Snapshot, SnapshotKey,
    StateCache, StateKey, StoreError, StreamId, StreamVersion,
    cache::{Count, Entry, EntryKey},
    command::fold,
    target::{Attempt, End, Target, retry_or_end},
};

/// A declared command's state and what it covers.
pub(crate) struct Known<S> {
    state: S,
    /// Sorted by stream id: one entry per declared stream.
    versions: Vec<(StreamId, StreamVersion)>,
    /// Whether `versions` were the streams' current versions at a read made
    /// during this execution (a kept state or a snapshot may be stale).
    verified: bool,
    /// Events (summed over the streams) covered by the newest snapshot
    /// known to exist.
    snapshot_base: u64,
    /// Whether a snapshot was found unusable and should be replaced soon.
    replace_snapshot: bool,
    /// The kept entry's measured size and updates since, if it came from
    /// the cache.
    sized: Option<(usize, u32)>,
}

/// What a tail read found.
enum Tail {
    /// The state now covers every stream's current version.
    Current,
    /// A stream is shorter than the state claims: the state is not of this
    /// store's streams (a restored backup, another database).
    Behind,
}

/// A command's declaration, checked once per execution.
pub(crate) struct Declared<'c, S> {
    key: StateKey<S>,
    entry_key: EntryKey,
    cache: Option<&'c StateCache>,
}

fn total(versions: &[(StreamId, StreamVersion)]) -> u64 {
    versions
        .iter()
        .fold(0u64, |sum, (_, v)| sum.saturating_add(v.get()))
}

impl<'c, S: Default + Send> Declared<'c, S> {
    /// Checks the key; `streams` are sorted and unique.
    pub(crate) fn new<E>(
        key: StateKey<S>,
        streams: &[StreamId],
        cache: Option<&'c StateCache>,
    ) -> Result<Self, ExecuteError<E>> {
        let name = key.name();
        if !crate::writes::is_storable_name(name) {
            return Err(ExecuteError::InvalidStateName { name });
        }
        let params = key
            .params()
            .map_err(|source| ExecuteError::StateKeyField { name, source })?;
        Ok(Declared {
            entry_key: EntryKey {
                type_id: (key.codec().type_id)(),
                name,
                schema_version: key.schema_version(),
                params,
                streams: streams.to_vec(),
            },
            key,
            cache,
        })
    }

    /// Made only when snapshots are used: most executions need none.
    fn snapshot_key(&self) -> SnapshotKey {
        let k = &self.entry_key;
        SnapshotKey::new(k.name, k.params.clone(), &k.streams)
    }

    fn count(&self, what: Count) {
        if let Some(cache) = self.cache {
            cache.count(what);
        }
    }

    fn snapshots_on(&self) -> bool {
        self.cache
            .is_some_and(|c| c.config().snapshot_every().is_some())
    }

    /// One decide-append cycle, preceded by whatever read brings `known` up
    /// to date: none on a cache hit, a tail read after a conflict or after a
    /// snapshot, a full read otherwise.
    pub(crate) async fn attempt<St, C>(
        &self,
        target: &Target<'_, St>,
        command: &C,
        metadata: &Arc<Metadata>,
        known: &mut Option<Known<S>>,
    ) -> Attempt<ExecutionResult, C::Error>
    where
        St: EventStore,
        C: CommandLogic<State = S>,
    {
        let mut k = match known.take() {
            Some(mut k) => {
                if let Err(e) = self.catch_up(target, command, &mut k).await? {
                    *known = Some(k);
                    return Ok(Err(e));
                }
                k
            }
            None => match self.start(target, command).await? {
                Ok(k) => k,
                Err(e) => return Ok(Err(e)),
            },
        };

        // At most two rounds: a speculative append with the versions of a
        // kept state or snapshot, and, if that conflicts, one on the state
        // brought up to date. Only a conflict on a state read during this
        // attempt counts as a failed attempt, as without a kept state.
        loop {
            let decided = loop {
                if !command.discover_streams(&k.state).is_empty() {
                    return Err(ExecuteError::DiscoveryWithDeclaredState {
                        name: self.key.name(),
                    }
                    .into());
                }
                let decision = command.handle(&k.state);
                match decision {
                    Ok(events) if !events.is_empty() => break events,
                    // A refusal or an empty decision is final only on a
                    // state known to be current.
                    settled if k.verified => {
                        let versions = k.versions.clone();
                        self.keep(k);
                        return match settled {
                            Ok(_) => Ok(Ok(ExecutionResult {
                                attempts: 0,
                                stream_versions: versions,
                                events_written: 0,
                                already_applied: false,
                            })),
                            Err(refused) => Err(End::rejected(refused)),
                        };
                    }
                    _ => {}
                }
                if let Err(e) = self.catch_up(target, command, &mut k).await? {
                    *known = Some(k);
                    return Ok(Err(e));
                }
            };

            let mut writes = target.writes(metadata);
            for (stream, version) in &k.versions {
                writes.expect(stream.clone(), *version)?;
            }
            for event in decided.as_slice() {
                writes.append(event)?;
            }
            let planned = self.due_snapshot(command, &k, &writes, decided.as_slice());
            let (writes, next) = match planned {
                Some((next, snapshot)) => (writes.with_snapshot(snapshot), Some(next)),
                None => (writes, None),
            };
            self.count(Count::Append);
            match target.append(writes).await {
                // The command was applied before, and its reply lost: the
                // state kept here does not hold its events.
                Ok(outcome) if outcome.already_applied => {
                    if let Some(cache) = self.cache {
                        cache.remove(&self.entry_key);
                    }
                    return Ok(Ok(crate::target::appended(outcome)));
                }
                Ok(outcome) => {
                    let snapshotted = next.is_some();
                    let state = match next {
                        Some(next) => next,
                        None => decided
                            .as_slice()
                            .iter()
                            .fold(k.state, |state, event| command.apply(state, event)),
                    };
                    let mut done = Known {
                        state,
                        versions: outcome.stream_versions.clone(),
                        verified: true,
                        snapshot_base: k.snapshot_base,
                        replace_snapshot: k.replace_snapshot,
                        sized: k.sized,
                    };
                    if snapshotted {
                        self.count(Count::SnapshotOffered);
                        done.snapshot_base = total(&done.versions);
                        done.replace_snapshot = false;
                    }
                    self.keep(done);
                    return Ok(Ok(crate::target::appended(outcome)));
                }
                Err(StoreError::VersionConflict { .. }) if !k.verified => {
                    if let Err(e) = self.catch_up(target, command, &mut k).await? {
                        *known = Some(k);
                        return Ok(Err(e));
                    }
                }
                Err(e) => {
                    // Stale, or not known to have committed: read the tail next.
                    k.verified = false;
                    *known = Some(k);
                    return retry_or_end(e);
                }
            }
        }
    }

    /// Brings `k` up to date: the tail after it, or the whole streams if
    /// they are shorter than `k` claims. On a retryable error `k` is as
    /// it was.
    async fn catch_up<St, C>(
        &self,
        target: &Target<'_, St>,
        command: &C,
        k: &mut Known<S>,
    ) -> Attempt<(), C::Error>
    where
        St: EventStore,
        C: CommandLogic<State = S>,
    {
        match self.refresh(target, command, k).await? {
            Ok(Tail::Current) => Ok(Ok(())),
            Ok(Tail::Behind) => match self.replay(target, command, true).await? {
                Ok(fresh) => {
                    *k = fresh;
                    Ok(Ok(()))
                }
                Err(e) => Ok(Err(e)),
            },
            Err(e) => Ok(Err(e)),
        }
    }

    /// The state to start from: kept, from a snapshot, or folded from the
    /// whole streams.
    async fn start<St, C>(
        &self,
        target: &Target<'_, St>,
        command: &C,
    ) -> Attempt<Known<S>, C::Error>
    where
        St: EventStore,
        C: CommandLogic<State = S>,
    {
        let codec = self.key.codec();
        if let Some((entry, stale)) = self.cache.and_then(|c| c.get(&self.entry_key))
            && let Some(state) = (codec.view)(&*entry.state)
        {
            let mut k = Known {
                state: (codec.clone)(state),
                versions: entry.versions,
                verified: false,
                snapshot_base: entry.snapshot_base,
                replace_snapshot: false,
                sized: Some((entry.bytes, entry.unsized_updates)),
            };
            // Known stale: an append with these versions would only
            // conflict, so read the tail first.
            if stale && let Err(e) = self.catch_up(target, command, &mut k).await? {
                return Ok(Err(e));
            }
            return Ok(Ok(k));
        }
        let look = self.snapshots_on() && self.cache.is_some_and(StateCache::look_for_snapshot);
        if !look {
            return self.replay(target, command, false).await;
        }
        // A snapshot may only make a command faster: whatever is wrong with
        // it, the state is folded from the events instead.
        self.count(Count::SnapshotLoad);
        let found = match target.read_from_snapshot(&self.snapshot_key()).await {
            Ok(crate::ReadAnswer {
                record: Some(record),
                ..
            }) => return Err(End::Recorded(Box::new(record))),
            Ok(found) => found,
            Err(e) if e.is_retryable() => return Ok(Err(e)),
            // Perhaps the snapshots (not the events) cannot be read, say a
            // table not migrated yet: read the events alone.
            Err(_) => {
                self.count(Count::SnapshotIgnored);
                return self.replay(target, command, true).await;
            }
        };
        let present = found.snapshot.is_some();
        if let Some(cache) = self.cache {
            cache.looked_for_snapshot(present);
        }
        let usable = found
            .snapshot
            .as_ref()
            .and_then(|s| self.usable_snapshot(s))
            .filter(|k| {
                k.versions
                    .iter()
                    .map(|(_, v)| *v)
                    .eq(found.after.iter().map(|(_, v)| *v))
            });
        let from_start = found
            .after
            .iter()
            .all(|(_, v)| *v == StreamVersion::INITIAL);
        let used = usable.is_some();
        let (state, snapshot_base) = match usable {
            Some(k) => (k.state, k.snapshot_base),
            None if from_start => (S::default(), 0),
            // The store read after a snapshot that cannot be used.
            None => {
                self.count(Count::SnapshotIgnored);
                return self.replay(target, command, true).await;
            }
        };
        let behind = self
            .entry_key
            .streams
            .iter()
            .zip(&found.after)
            .any(|(id, (_, after))| found.reads.version(id).is_none_or(|now| now < *after));
        if behind {
            self.count(Count::SnapshotIgnored);
            return self.replay(target, command, true).await;
        }
        let state = fold(command, state, found.reads.events())?;
        if used {
            self.count(Count::SnapshotUsed);
        } else if present {
            self.count(Count::SnapshotIgnored);
        }
        Ok(Ok(Known {
            state,
            versions: found.reads.versions().to_vec(),
            verified: true,
            snapshot_base,
            replace_snapshot: present && !used,
            sized: None,
        }))
    }

    /// A state from a snapshot of this declaration, if it is usable.
    fn usable_snapshot(&self, snapshot: &Snapshot) -> Option<Known<S>> {
        if snapshot.schema_version() != self.key.schema_version()
            || snapshot.key() != &self.snapshot_key()
        {
            return None;
        }
        let versions = snapshot.stream_versions()?;
        let state = (self.key.codec().decode)(snapshot.state()).ok()?;
        Some(Known {
            state,
            snapshot_base: total(&versions),
            versions,
            verified: false,
            replace_snapshot: false,
            sized: None,
        })
    }

    /// Folds the declared streams' whole history.
    async fn replay<St, C>(
        &self,
        target: &Target<'_, St>,
        command: &C,
        replace: bool,
    ) -> Attempt<Known<S>, C::Error>
    where
        St: EventStore,
        C: CommandLogic<State = S>,
    {
        if replace && let Some(cache) = self.cache {
            cache.remove(&self.entry_key);
        }
        self.count(Count::FullRead);
        let read = match target.read_streams(&self.entry_key.streams).await? {
            Ok(read) => read,
            Err(e) => return Ok(Err(e)),
        };
        let state = fold(command, S::default(), read.events())?;
        Ok(Ok(Known {
            state,
            versions: read.versions().to_vec(),
            verified: true,
            snapshot_base: 0,
            replace_snapshot: replace,
            sized: None,
        }))
    }

    /// Reads the events after `k` and folds them in.
    async fn refresh<St, C>(
        &self,
        target: &Target<'_, St>,
        command: &C,
        k: &mut Known<S>,
    ) -> Attempt<Tail, C::Error>
    where
        St: EventStore,
        C: CommandLogic<State = S>,
    {
        self.count(Count::TailRead);
        let read = match target.read_tails(&k.versions).await? {
            Ok(read) => read,
            Err(e) => return Ok(Err(e)),
        };
        let behind = k
            .versions
            .iter()
            .any(|(id, held)| read.version(id).is_none_or(|now| now < *held));
        if behind {
            return Ok(Ok(Tail::Behind));
        }
        let state = std::mem::take(&mut k.state);
        k.state = fold(command, state, read.events())?;
        k.versions = read.versions().to_vec();
        k.verified = true;
        Ok(Ok(Tail::Current))
    }

    /// The state after `writes` and a snapshot of it, when one is due once
    /// they are appended: enough events since the last snapshot, or the
    /// one found could not be used.
    fn due_snapshot<C>(
        &self,
        command: &C,
        k: &Known<S>,
        writes: &crate::StreamWrites,
        decided: &[C::Event],
    ) -> Option<(S, Snapshot)>
    where
        C: CommandLogic<State = S>,
    {
        let every = self.cache.and_then(|c| c.config().snapshot_every())?;
        // Every event is of a registered stream: the events covered after
        // the append, counted without building the versions.
        let covered = total(&k.versions).saturating_add(decided.len() as u64);
        let due = k.replace_snapshot || covered.saturating_sub(k.snapshot_base) >= every.get();
        if !due {
            return None;
        }
        let after = writes.resulting_versions().ok()?;
        let codec = self.key.codec();
        let state = decided
            .iter()
            .fold((codec.clone)(&k.state), |state, event| {
                command.apply(state, event)
            });
        let encoded = (codec.encode)(&state).ok()?;
        let snapshot = Snapshot::new(
            self.snapshot_key(),
            self.key.schema_version(),
            after.iter().map(|(_, v)| *v).collect(),
            encoded,
        );
        Some((state, snapshot))
    }

    /// Keeps a state known to be current in the cache. Its size is measured
    /// (by serialising it) when first kept and then every 32 updates.
    fn keep(&self, k: Known<S>) {
        const RESIZE_EVERY: u32 = 32;
        let Some(cache) = self.cache else { return };
        let codec = self.key.codec();
        let (bytes, unsized_updates) = match k.sized {
            Some((bytes, n)) if n < RESIZE_EVERY => (bytes, n + 1),
            _ => {
                let versions: usize = k
                    .versions
                    .iter()
                    .map(|(id, _)| id.as_str().len() + 32)
                    .sum();
                ((codec.size)(&k.state) + versions, 0)
            }
        };
        cache.put(
            &self.entry_key,
            Entry {
                versions: k.versions,
                state: (codec.erase)(k.state),
                snapshot_base: k.snapshot_base,
                bytes,
                unsized_updates,
            },
        );
    }
}
