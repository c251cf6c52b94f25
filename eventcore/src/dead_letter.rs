//! Dead letters: an event its handler keeps failing on parks its key, and
//! the key's later events wait with it, while other keys go on.
//!
//! Under [`OnHandlerError::Park`](crate::OnHandlerError::Park), a lane of
//! [`subscribe_lanes`](crate::subscribe_lanes) whose handler still fails on
//! an event after its retries records a [`DeadLetter`] for the event's key
//! (with the error) in its store's [`DeadLetters`], and goes on with the
//! other keys: every later event of that key is passed over, in order, as
//! long as the letter stays. An operator then asks for one of two things
//! with [`DeadLetters::resolve`]:
//! - [`DeadLetterAction::Retry`]: the lane hands the key's events again,
//!   from the parked one, to its handler, in log order, up to where the lane
//!   has got; then the key flows with the others. If the handler fails again,
//!   the letter stays (with the new error and the event it failed on).
//! - [`DeadLetterAction::Skip`]: the same, without the parked event.
//!
//! The lane looks at its letters' actions between pages (at least every
//! [`DEAD_LETTER_POLL`]). Replayed events reach the handler with
//! [`EventContext::parked_key`](crate::EventContext::parked_key) set, and the
//! letter keeps how far the replay got ([`DeadLetter::after`]), so a replay
//! cut short by a crash or a handover goes on from there: the exactly-once
//! projections of the stores move that mark in the transaction of their
//! effects, as they move the checkpoint otherwise.
//!
//! Every write of a letter by a lane is fenced by the lane's lease token, as
//! its checkpoint is.

use std::{future::Future, sync::Arc, time::Duration, time::SystemTime};

use crate::{LeaseToken, Position, StoreError, StreamId, SubscriptionName, Uuid};

/// How often a lane with parked keys at least looks for an operator's action.
pub const DEAD_LETTER_POLL: Duration = Duration::from_millis(500);

/// The most characters of a handler's error a letter keeps.
pub const MAX_ERROR_CHARS: usize = 2_000;

/// What an operator asks for a parked key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterAction {
    /// Hand the parked event and the key's later events to the handler again.
    Retry,
    /// Drop the parked event; hand the key's later events to the handler.
    Skip,
}

impl DeadLetterAction {
    /// Its name as stored: `retry` or `skip`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterAction::Retry => "retry",
            DeadLetterAction::Skip => "skip",
        }
    }

    /// The action named `name` (`retry` or `skip`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "retry" => Some(DeadLetterAction::Retry),
            "skip" => Some(DeadLetterAction::Skip),
            _ => None,
        }
    }
}

/// A parked key of one lane: the event its handler failed on, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The lane's subscription name.
    pub name: SubscriptionName,
    /// The parked key (a stream id, or a routing key).
    pub key: String,
    /// Where the event the handler failed on sits in the log.
    pub position: Position,
    /// Its id.
    pub event_id: Uuid,
    /// Its stream.
    pub stream_id: StreamId,
    /// Its type.
    pub event_type: String,
    /// The handler's last error, as text (at most [`MAX_ERROR_CHARS`]).
    pub error: String,
    /// Attempts made on it so far, over all parkings.
    pub attempts: u32,
    /// When it was (last) parked.
    pub parked_at: SystemTime,
    /// What an operator asked for, not yet done.
    pub action: Option<DeadLetterAction>,
    /// The key's events up to this position are dealt with: a replay goes on
    /// after it (before the parked event, until the replay has passed it).
    pub after: Option<Position>,
}

impl DeadLetter {
    /// A letter for `key` of lane `name`, parked now on the event at
    /// `position`, after `attempts` attempts that ended with `error`; the
    /// key's events up to `after` are dealt with.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: SubscriptionName,
        key: impl Into<String>,
        position: Position,
        event: &crate::RecordedEvent,
        error: &str,
        attempts: u32,
        after: Option<Position>,
    ) -> Self {
        let mut letter = DeadLetter::of_event(
            name,
            key,
            position,
            event.event_id(),
            event.stream_id().clone(),
            event.event_type(),
        );
        letter.error = error.chars().take(MAX_ERROR_CHARS).collect();
        letter.attempts = attempts;
        letter.after = after;
        letter
    }

    /// A letter for `key` of lane `name` naming the event at `position`
    /// (its id, stream and type), parked now, with no error, attempt,
    /// action or replay mark yet: for a store that reads its letters back
    /// and sets the other fields.
    pub fn of_event(
        name: SubscriptionName,
        key: impl Into<String>,
        position: Position,
        event_id: Uuid,
        stream_id: StreamId,
        event_type: impl Into<String>,
    ) -> Self {
        DeadLetter {
            name,
            key: key.into(),
            position,
            event_id,
            stream_id,
            event_type: event_type.into(),
            error: String::new(),
            attempts: 0,
            parked_at: SystemTime::now(),
            action: None,
            after: None,
        }
    }
}

/// Where lanes keep their dead letters: beside their checkpoints.
///
/// # Contract
/// At most one letter per (name, key). The writes a lane makes (`park`,
/// `replayed`, `release`) succeed only under the newest lease token of
/// `name` (else [`StoreError::LeaseLost`], and nothing is written), as
/// [`CheckpointStore::save`](crate::CheckpointStore::save) does.
/// - `park` writes the letter whole, replacing one of the same key (its
///   action is cleared, its `after` kept if further on).
/// - `replayed` moves the letter's `after` forward to `through` (never
///   back); nothing if there is no letter.
/// - `release` removes the letter.
/// - `dead_letters` lists a name's letters, oldest position first;
///   `resolve` sets the action of one (whether it exists). Neither is fenced:
///   they are the operator's.
pub trait DeadLetters: Send + Sync {
    /// Records `letter`.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] under a superseded token; the backend's failure.
    fn park(
        &self,
        letter: &DeadLetter,
        token: LeaseToken,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves how far the replay of `key` got.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] under a superseded token; the backend's failure.
    fn replayed(
        &self,
        name: &SubscriptionName,
        key: &str,
        through: Position,
        token: LeaseToken,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the letter of `key`: the key flows again.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] under a superseded token; the backend's failure.
    fn release(
        &self,
        name: &SubscriptionName,
        key: &str,
        token: LeaseToken,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The letters of lane `name`, oldest position first.
    ///
    /// # Errors
    /// The backend's failure.
    fn dead_letters(
        &self,
        name: &SubscriptionName,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, StoreError>> + Send;

    /// Asks for `action` on the letter of `key`; whether there is one.
    ///
    /// # Errors
    /// The backend's failure.
    fn resolve(
        &self,
        name: &SubscriptionName,
        key: &str,
        action: DeadLetterAction,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Forwarding impls for `&S`, `Arc<S>` and `Box<S>`; every method is
/// forwarded (the lint catches one forgotten).
macro_rules! forward_dead_letters {
    ($($wrapper:ty),+) => {$(
        #[warn(clippy::missing_trait_methods)]
        impl<S: DeadLetters + ?Sized> DeadLetters for $wrapper {
            fn park(
                &self,
                letter: &DeadLetter,
                token: LeaseToken,
            ) -> impl Future<Output = Result<(), StoreError>> + Send {
                (**self).park(letter, token)
            }

            fn replayed(
                &self,
                name: &SubscriptionName,
                key: &str,
                through: Position,
                token: LeaseToken,
            ) -> impl Future<Output = Result<(), StoreError>> + Send {
                (**self).replayed(name, key, through, token)
            }

            fn release(
                &self,
                name: &SubscriptionName,
                key: &str,
                token: LeaseToken,
            ) -> impl Future<Output = Result<(), StoreError>> + Send {
                (**self).release(name, key, token)
            }

            fn dead_letters(
                &self,
                name: &SubscriptionName,
            ) -> impl Future<Output = Result<Vec<DeadLetter>, StoreError>> + Send {
                (**self).dead_letters(name)
            }

            fn resolve(
                &self,
                name: &SubscriptionName,
                key: &str,
                action: DeadLetterAction,
            ) -> impl Future<Output = Result<bool, StoreError>> + Send {
                (**self).resolve(name, key, action)
            }
        }
    )+};
}

forward_dead_letters!(&S, Arc<S>, Box<S>);
