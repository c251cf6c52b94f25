//! Commands: the streams they read and the decisions they make.

use crate::{CommandError, Event, StateKey, StreamId};

/// The streams a command reads, and may write.
///
/// The execute loop reads every declared stream, folds their events into
/// the command's state, and registers every one of them in the append with
/// the version it read, so the append fails if any of them moved meanwhile.
/// Duplicates are removed; a command that declares no stream fails with
/// [`ExecuteError::NoStreams`](crate::ExecuteError::NoStreams).
pub trait CommandStreams {
    /// The streams this command reads.
    fn streams(&self) -> Vec<StreamId>;
}

/// The decision logic of a command.
///
/// Both methods are pure and synchronous: all input comes from the events of
/// the declared streams, so the execute loop can run them again on a retry.
///
/// ```
/// use eventcore::{CommandError, CommandLogic, CommandStreams, Event, NewEvents, StreamId, require};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # enum Ev { Deposited { account: StreamId, amount: u64 }, Withdrawn { account: StreamId, amount: u64 } }
/// # impl Event for Ev {
/// #     fn stream_id(&self) -> &StreamId { match self { Ev::Deposited { account, .. } | Ev::Withdrawn { account, .. } => account } }
/// #     fn event_type(&self) -> &'static str { match self { Ev::Deposited { .. } => "Deposited", Ev::Withdrawn { .. } => "Withdrawn" } }
/// # }
/// struct Withdraw { account: StreamId, amount: u64 }
///
/// impl CommandStreams for Withdraw {
///     fn streams(&self) -> Vec<StreamId> { vec![self.account.clone()] }
/// }
///
/// impl CommandLogic for Withdraw {
///     type Event = Ev;
///     type State = u64; // the balance
///
///     fn apply(&self, balance: u64, event: &Ev) -> u64 {
///         match event {
///             Ev::Deposited { amount, .. } => balance + amount,
///             Ev::Withdrawn { amount, .. } => balance - amount,
///         }
///     }
///
///     fn handle(&self, balance: u64) -> Result<NewEvents<Ev>, CommandError> {
///         require!(balance >= self.amount, "balance {balance} is below {}", self.amount);
///         Ok(vec![Ev::Withdrawn { account: self.account.clone(), amount: self.amount }].into())
///     }
/// }
/// ```
pub trait CommandLogic: CommandStreams + Send + Sync {
    /// The events this command reads and writes.
    type Event: Event;
    /// What the command knows after folding the events of its streams.
    type State: Default + Send;

    /// Folds one event into the state.
    fn apply(&self, state: Self::State, event: &Self::Event) -> Self::State;

    /// Decides which events to append, or refuses.
    ///
    /// # Errors
    /// A [`CommandError`] when a business rule does not hold; the execute
    /// loop returns it without retrying.
    fn handle(&self, state: Self::State) -> Result<NewEvents<Self::Event>, CommandError>;

    /// Declares what this command's state is, so that `execute` can reuse a
    /// state folded before (kept by the store's
    /// [`StateCache`](crate::StateCache), or saved as a
    /// [`Snapshot`](crate::Snapshot)) and read only the events after it.
    /// `None` (the default) folds the streams' whole history every time.
    ///
    /// The key must hold every field of the command that
    /// [`apply`](Self::apply) reads; see [`StateKey`] for the rule and what a
    /// wrong declaration does.
    fn state_key(&self) -> Option<StateKey<Self::State>> {
        None
    }
}

/// The events a command decided to append, in order. Empty means "nothing
/// to do", which succeeds without writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvents<E>(Vec<E>);

impl<E> NewEvents<E> {
    /// No events.
    pub fn none() -> Self {
        NewEvents(Vec::new())
    }

    /// Adds an event after the others.
    pub fn push(&mut self, event: E) {
        self.0.push(event);
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many events there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The events, in order.
    pub fn as_slice(&self) -> &[E] {
        &self.0
    }

    /// The events, in order.
    pub fn into_vec(self) -> Vec<E> {
        self.0
    }
}

impl<E> Default for NewEvents<E> {
    fn default() -> Self {
        Self::none()
    }
}

impl<E> From<Vec<E>> for NewEvents<E> {
    fn from(events: Vec<E>) -> Self {
        NewEvents(events)
    }
}

impl<E> FromIterator<E> for NewEvents<E> {
    fn from_iter<I: IntoIterator<Item = E>>(iter: I) -> Self {
        NewEvents(iter.into_iter().collect())
    }
}

impl<E> IntoIterator for NewEvents<E> {
    type Item = E;
    type IntoIter = std::vec::IntoIter<E>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Returns `Err(CommandError::BusinessRuleViolation(message))` from the
/// enclosing function unless `condition` holds. The message takes
/// `format!` arguments.
///
/// ```
/// use eventcore::{CommandError, require};
///
/// fn withdraw(balance: u64, amount: u64) -> Result<u64, CommandError> {
///     require!(amount <= balance, "cannot withdraw {amount} from {balance}");
///     Ok(balance - amount)
/// }
///
/// assert_eq!(withdraw(10, 3).unwrap(), 7);
/// let err = withdraw(1, 3).unwrap_err();
/// assert_eq!(err.to_string(), "business rule violated: cannot withdraw 3 from 1");
/// ```
#[macro_export]
macro_rules! require {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return ::core::result::Result::Err($crate::CommandError::BusinessRuleViolation(
                ::std::format!($($message)+),
            ));
        }
    };
}
