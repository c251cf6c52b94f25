//! Commands applied once: what a store records for a command id.

use std::{borrow::Cow, time::SystemTime};

use crate::{AppendOutcome, CommandId, StoreError, StreamId, StreamWrites};

/// What a store keeps for a command executed with a [`CommandId`]: written
/// in the same transaction as the command's events, so that a command id
/// is recorded if and only if its events are stored.
///
/// `execute` compares a record with the command it is running: the same
/// command type over the same streams is the same command (its first
/// outcome is returned and nothing is written again); anything else is
/// [`StoreError::CommandIdReused`](crate::StoreError::CommandIdReused).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandRecord {
    /// The command id.
    pub command_id: CommandId,
    /// The command's name ([`CommandStreams::command_name`](crate::CommandStreams::command_name));
    /// in records made before names were stable, its full type path.
    pub command_type: Cow<'static, str>,
    /// The first execution's outcome: every stream it registered, sorted by
    /// stream id, with its version after the append, and how many events
    /// it appended.
    pub outcome: AppendOutcome,
    /// When the store recorded it, by the store's clock (microseconds).
    pub recorded_at: SystemTime,
}

impl CommandRecord {
    /// Assembles a record; for store implementations.
    pub fn new(
        command_id: CommandId,
        command_type: impl Into<Cow<'static, str>>,
        outcome: AppendOutcome,
        recorded_at: SystemTime,
    ) -> Self {
        CommandRecord {
            command_id,
            command_type: command_type.into(),
            outcome,
            recorded_at,
        }
    }

    /// The record a store keeps for `writes` once they are appended with
    /// `outcome`, if they carry a command id.
    pub fn of_append(
        writes: &StreamWrites,
        outcome: &AppendOutcome,
        recorded_at: SystemTime,
    ) -> Option<Self> {
        let (id, command_type) = writes.command()?;
        Some(CommandRecord::new(
            id.clone(),
            command_type.to_owned(),
            AppendOutcome::new(outcome.stream_versions.clone(), outcome.events_written)
                .with_position(outcome.position),
            recorded_at,
        ))
    }

    /// Whether the record was made for a command named `name`: under that
    /// name, or (made before names were stable) under a type path whose
    /// own name it is (`bank::Transfer` for `Transfer`).
    pub fn is_named(&self, name: &str) -> bool {
        self.command_type == name
            || (self.command_type.contains("::")
                && crate::command::own_name(&self.command_type) == name)
    }

    /// Whether the record is of the same command as one of `command_type`
    /// over `streams` (sorted by stream id).
    pub fn is_same_command<'a>(
        &self,
        command_type: &str,
        streams: impl IntoIterator<Item = &'a StreamId>,
    ) -> bool {
        self.is_named(command_type)
            && self
                .outcome
                .stream_versions
                .iter()
                .map(|(id, _)| id)
                .eq(streams)
    }

    /// Whether the record is of a command of `command_type` that read at
    /// least `streams` (sorted by stream id): the same command when it
    /// also discovered streams while deciding.
    pub fn covers<'a>(
        &self,
        command_type: &str,
        streams: impl IntoIterator<Item = &'a StreamId>,
    ) -> bool {
        self.is_named(command_type)
            && streams.into_iter().all(|id| {
                self.outcome
                    .stream_versions
                    .binary_search_by(|(s, _)| s.cmp(id))
                    .is_ok()
            })
    }

    /// What an append of `writes`, which carry this record's command id,
    /// returns: the first outcome, marked
    /// [`already_applied`](AppendOutcome::already_applied), if they are of
    /// the same command; for store implementations.
    ///
    /// # Errors
    /// [`StoreError::CommandIdReused`] if the writes are of another
    /// command type or register other streams.
    pub fn repeat(&self, writes: &StreamWrites) -> Result<AppendOutcome, StoreError> {
        let command_type = writes.command().map_or("", |(_, ty)| ty);
        let streams = writes.expected_versions().iter().map(|(id, _)| id);
        if !self.is_same_command(command_type, streams.clone()) {
            return Err(self.reused_by(command_type, streams));
        }
        let mut outcome = AppendOutcome::new(
            self.outcome.stream_versions.clone(),
            self.outcome.events_written,
        )
        .with_position(self.outcome.position);
        outcome.already_applied = true;
        Ok(outcome)
    }

    /// The error for a command of `command_type` over `streams` that
    /// reuses this record's command id.
    pub fn reused_by<'a>(
        &self,
        command_type: &str,
        streams: impl IntoIterator<Item = &'a StreamId>,
    ) -> StoreError {
        StoreError::CommandIdReused {
            command_id: self.command_id.clone(),
            recorded_type: self.command_type.clone().into_owned(),
            recorded_streams: self
                .outcome
                .stream_versions
                .iter()
                .map(|(id, _)| id.clone())
                .collect(),
            command_type: command_type.to_owned(),
            streams: streams.into_iter().cloned().collect(),
        }
    }
}
