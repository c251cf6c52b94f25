//! Persisted snapshots of folds: what a store keeps.

use crate::{StreamId, StreamSet, StreamVersion};

/// What a snapshot is filed under: a fold's [name](crate::Fold::NAME) and
/// the streams it was folded from, sorted and unique (one, for the folds
/// `execute` snapshots). The schema version is not part of it: a snapshot
/// of another schema version is found, and then ignored by `execute`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotKey {
    name: String,
    streams: StreamSet,
}

impl SnapshotKey {
    /// Assembles a key; `streams` are sorted and deduplicated.
    pub fn new(name: impl Into<String>, streams: &[StreamId]) -> Self {
        SnapshotKey {
            name: name.into(),
            streams: streams.into(),
        }
    }

    /// The key of the snapshots of fold `name` over `stream`.
    pub fn of_fold(name: &str, stream: &StreamId) -> Self {
        Self::new(name, std::slice::from_ref(stream))
    }

    /// The fold's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The streams the state was folded from, sorted and unique.
    pub fn streams(&self) -> &[StreamId] {
        &self.streams
    }

    /// The streams as one JSON text, for a store that files snapshots
    /// under one text column besides the name: distinct keys of one name
    /// give distinct texts. (Its form, `{"params":[],"streams":[...]}`,
    /// is the one snapshots were filed under before folds.)
    pub fn streams_text(&self) -> String {
        let streams: Vec<&str> = self.streams.iter().map(StreamId::as_str).collect();
        let streams = serde_json::to_string(&streams).unwrap_or_default();
        format!(r#"{{"params":[],"streams":{streams}}}"#)
    }
}

/// A fold's state as folded from the events of its streams up to given
/// versions, serialised as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    key: SnapshotKey,
    schema_version: u32,
    versions: Vec<StreamVersion>,
    state: String,
}

impl Snapshot {
    /// Assembles a snapshot. `versions` holds one version per stream of
    /// the key, in the key's order; `state` is the state's JSON form.
    pub fn new(
        key: SnapshotKey,
        schema_version: u32,
        versions: Vec<StreamVersion>,
        state: impl Into<String>,
    ) -> Self {
        Snapshot {
            key,
            schema_version,
            versions,
            state: state.into(),
        }
    }

    /// What the snapshot is filed under.
    pub fn key(&self) -> &SnapshotKey {
        &self.key
    }

    /// The fold's schema version when it was saved.
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// The version of each stream of the key that the state covers, in
    /// the key's order.
    pub fn versions(&self) -> &[StreamVersion] {
        &self.versions
    }

    /// The state's JSON form.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// Every stream with the version the state covers, or `None` when the
    /// snapshot holds a different number of versions than streams.
    pub fn stream_versions(&self) -> Option<Vec<(StreamId, StreamVersion)>> {
        (self.versions.len() == self.key.streams.len()).then(|| {
            self.key
                .streams
                .iter()
                .cloned()
                .zip(self.versions.iter().copied())
                .collect()
        })
    }
}
