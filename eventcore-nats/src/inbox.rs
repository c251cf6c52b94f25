//! Applying relayed messages once, on the consumer's side.

use eventcore::{Position, RecordedEvent};

use crate::message::{DecodeError, decode};

/// Why a message cannot be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The message skips messages not applied yet: the consumer must
    /// deliver the stream in order (an ordered consumer, or one message
    /// acknowledged at a time), starting right after
    /// [`Inbox::applied`].
    #[error("message at stream sequence {got} arrived before {expected}, not applied yet")]
    Gap {
        /// The sequence applied next.
        expected: u64,
        /// The message's.
        got: u64,
    },
    /// The message did not come from a JetStream consumer (no
    /// acknowledgement subject to read its stream sequence from).
    #[error("the message carries no JetStream delivery information: {0}")]
    NotJetStream(String),
    /// The message is not a relayed event.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// A message to apply: its stream sequence, and the event it carries.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message's sequence in the JetStream stream.
    pub sequence: u64,
    /// The event's place in the store's log.
    pub position: Position,
    /// The event as the store recorded it.
    pub event: RecordedEvent,
}

/// Applies a relayed stream's messages once: remembers the stream sequence
/// of the last message applied, drops repeats (redeliveries after a lost
/// acknowledgement, a consumer restarted from an older point) and refuses
/// gaps.
///
/// Keep [`applied`](Inbox::applied) with what the messages change, in
/// the same transaction (or the same file write), and start the inbox
/// from it again after a restart: then each message changes the view once
/// whatever the broker redelivers.
///
/// ```
/// use eventcore_nats::{Inbox, InboxError};
/// let mut inbox = Inbox::after(41);
/// assert_eq!(inbox.next_expected(), 42);
/// assert!(inbox.check(41).unwrap() == false); // a repeat: acknowledge and skip
/// assert!(inbox.check(42).unwrap());           // apply, then mark
/// inbox.mark(42);
/// assert!(matches!(inbox.check(44), Err(InboxError::Gap { expected: 43, got: 44 })));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inbox {
    applied: u64,
}

impl Inbox {
    /// An inbox that has applied the stream up to sequence `applied` (0:
    /// nothing yet).
    pub fn after(applied: u64) -> Self {
        Inbox { applied }
    }

    /// The stream sequence of the last message applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The stream sequence to apply next.
    pub fn next_expected(&self) -> u64 {
        self.applied.saturating_add(1)
    }

    /// Whether the message at stream sequence `sequence` is to be applied
    /// (`false`: applied already).
    ///
    /// # Errors
    /// [`InboxError::Gap`] if messages before it are not applied yet.
    pub fn check(&self, sequence: u64) -> Result<bool, InboxError> {
        if sequence <= self.applied {
            return Ok(false);
        }
        if sequence != self.next_expected() {
            return Err(InboxError::Gap {
                expected: self.next_expected(),
                got: sequence,
            });
        }
        Ok(true)
    }

    /// Records that the message at `sequence` was applied.
    pub fn mark(&mut self, sequence: u64) {
        self.applied = self.applied.max(sequence);
    }

    /// The delivery of a JetStream `message` to apply, or `None` for a
    /// repeat (acknowledge it and go on). Call [`mark`](Inbox::mark) with
    /// its sequence once applied.
    ///
    /// # Errors
    /// [`InboxError`]: a gap, or a message that is not a relayed event.
    pub fn accept(
        &self,
        message: &async_nats::jetstream::Message,
    ) -> Result<Option<Delivery>, InboxError> {
        let sequence = message
            .info()
            .map_err(|e| InboxError::NotJetStream(e.to_string()))?
            .stream_sequence;
        if !self.check(sequence)? {
            return Ok(None);
        }
        let empty = async_nats::HeaderMap::new();
        let headers = message.headers.as_ref().unwrap_or(&empty);
        let (position, event) = decode(headers, &message.payload)?;
        Ok(Some(Delivery {
            sequence,
            position,
            event,
        }))
    }
}
