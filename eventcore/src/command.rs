//! Commands: the streams they read and the decisions they make.

use std::borrow::Cow;

use crate::{Event, StreamId};

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

    /// The command's stable name, recorded with its command id: a retried
    /// id is the same command when its name (and streams) match the
    /// record. By default the type's own name without its module path
    /// (`Transfer` for `bank::commands::Transfer`), so moving the type to
    /// another module or crate, or a new compiler, keeps it;
    /// `#[derive(Command)]` writes the name out, and
    /// `#[command(name = "...")]` sets another (keep the old name when you
    /// rename the type). A record made before names were stable, under the
    /// full type path, matches the name of its path's last segment.
    ///
    /// ```
    /// use eventcore::{Command, CommandStreams, StreamId};
    ///
    /// mod billing {
    ///     #[derive(eventcore::Command)]
    ///     pub struct Charge {
    ///         #[stream]
    ///         pub account: eventcore::StreamId,
    ///     }
    ///
    ///     #[derive(eventcore::Command)]
    ///     #[command(name = "Charge")]
    ///     pub struct ChargeCard {
    ///         #[stream]
    ///         pub account: eventcore::StreamId,
    ///     }
    /// }
    /// let account = StreamId::try_new("account-1").unwrap();
    /// assert_eq!(billing::Charge { account: account.clone() }.command_name(), "Charge");
    /// assert_eq!(billing::ChargeCard { account }.command_name(), "Charge");
    /// ```
    fn command_name(&self) -> Cow<'static, str> {
        Cow::Owned(own_name(std::any::type_name::<Self>()))
    }
}

impl<C: CommandStreams + ?Sized> CommandStreams for Box<C> {
    fn streams(&self) -> Vec<StreamId> {
        (**self).streams()
    }

    fn command_name(&self) -> Cow<'static, str> {
        (**self).command_name()
    }
}

/// A type's name as [`std::any::type_name`] spells it, with every module
/// path left out: `Transfer` for `bank::Transfer`, `Pair<Transfer>` for
/// `bank::Pair<bank::Transfer>`.
pub(crate) fn own_name(type_name: &str) -> String {
    let mut out = String::with_capacity(type_name.len());
    let mut segment = String::new();
    let mut chars = type_name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            // What came since the last separator was a module: drop it.
            segment.clear();
        } else if c.is_alphanumeric() || c == '_' {
            segment.push(c);
        } else {
            out.push_str(&segment);
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(&segment);
    out
}

/// The decision logic of a command.
///
/// Both methods are pure and synchronous: all input comes from the events of
/// the declared streams, so the execute loop can run them again on a retry.
///
/// ```
/// use eventcore::{Command, CommandLogic, Event, NewEvents, StreamId, require};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize, Event)]
/// enum Ev {
///     Deposited { #[stream] account: StreamId, amount: u64 },
///     Withdrawn { #[stream] account: StreamId, amount: u64 },
/// }
///
/// #[derive(Debug, PartialEq, thiserror::Error)]
/// #[error("balance {balance} is below {wanted}")]
/// struct Overdraft { balance: u64, wanted: u64 }
///
/// #[derive(Command)]
/// struct Withdraw { #[stream] account: StreamId, amount: u64 }
///
/// impl CommandLogic for Withdraw {
///     type Event = Ev;
///     type State = u64; // the balance
///     type Error = Overdraft;
///
///     fn apply(&self, balance: u64, event: &Ev) -> u64 {
///         match event {
///             Ev::Deposited { amount, .. } => balance + amount,
///             Ev::Withdrawn { amount, .. } => balance - amount,
///         }
///     }
///
///     fn handle(&self, &balance: &u64) -> Result<NewEvents<Ev>, Overdraft> {
///         require!(balance >= self.amount, Overdraft { balance, wanted: self.amount });
///         Ok(vec![Ev::Withdrawn { account: self.account.clone(), amount: self.amount }].into())
///     }
/// }
/// ```
pub trait CommandLogic: CommandStreams + Send + Sync {
    /// The events this command reads and writes.
    type Event: Event;
    /// What the command knows after folding the events of its streams.
    type State: Default + Send;
    /// Why the command refuses: its own error type, returned to the caller
    /// of [`execute`](crate::execute) as
    /// [`ExecuteError::Rejected`](crate::ExecuteError::Rejected), or
    /// [`Refusal`](crate::Refusal) for a message.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Folds one event into the state.
    fn apply(&self, state: Self::State, event: &Self::Event) -> Self::State;

    /// Decides which events to append, or refuses, on a borrowed state: a
    /// command deciding on a kept state costs no copy of it.
    ///
    /// # Errors
    /// The command's [`Error`](Self::Error) when a business rule does not
    /// hold; the execute loop returns it without retrying.
    fn handle(&self, state: &Self::State) -> Result<NewEvents<Self::Event>, Self::Error>;

    /// Streams to read besides the declared ones, named from what the
    /// command has learnt so far: a student's current course, an order's
    /// warehouse. After folding the declared streams `execute` asks for
    /// more; it reads the ones not read yet (one round trip per round),
    /// folds their events in after those read before, and asks again, at
    /// most [`MAX_DISCOVERY_ROUNDS`](crate::MAX_DISCOVERY_ROUNDS) times.
    /// Every stream read, declared or discovered, is version-checked in the
    /// one atomic append: if a discovered stream moves before it, the whole
    /// write conflicts and the command runs again. On a retry the streams
    /// discovered before queue with the declared ones.
    ///
    /// None by default. A command of per-stream folds
    /// ([`Decide`](crate::Decide)) names all its streams up front and
    /// discovers none.
    ///
    /// ```
    /// use eventcore::{Command, CommandLogic, Event, NewEvents, Refusal, StreamId, execute};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Debug, Clone, Serialize, Deserialize, Event)]
    /// enum Shop {
    ///     Placed { #[stream] order: StreamId, warehouse: StreamId },
    ///     Reserved { #[stream] warehouse: StreamId, order: StreamId },
    /// }
    ///
    /// /// Reserves an order's goods in the warehouse its order names.
    /// #[derive(Command)]
    /// struct Reserve { #[stream] order: StreamId }
    ///
    /// impl CommandLogic for Reserve {
    ///     type Event = Shop;
    ///     type State = Option<StreamId>; // the order's warehouse
    ///     type Error = Refusal;
    ///     fn apply(&self, found: Option<StreamId>, event: &Shop) -> Option<StreamId> {
    ///         match event {
    ///             Shop::Placed { warehouse, .. } => Some(warehouse.clone()),
    ///             Shop::Reserved { .. } => found,
    ///         }
    ///     }
    ///     fn discover_streams(&self, warehouse: &Option<StreamId>) -> Vec<StreamId> {
    ///         warehouse.iter().cloned().collect()
    ///     }
    ///     fn handle(&self, warehouse: &Option<StreamId>) -> Result<NewEvents<Shop>, Refusal> {
    ///         let warehouse = warehouse.clone().ok_or_else(|| Refusal::new("no such order"))?;
    ///         Ok(vec![Shop::Reserved { warehouse, order: self.order.clone() }].into())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let store = eventcore_memory::InMemoryEventStore::new();
    /// let (order, north) = (StreamId::try_new("order-1").unwrap(), StreamId::try_new("warehouse-north").unwrap());
    /// let placed = Shop::Placed { order: order.clone(), warehouse: north.clone() };
    /// # let mut writes = eventcore::StreamWrites::new();
    /// # writes.expect(order.clone(), eventcore::StreamVersion::INITIAL).unwrap();
    /// # writes.append(&placed).unwrap();
    /// # eventcore::EventStore::append(&store, writes).await.unwrap();
    /// let done = execute(&store, Reserve { order }).await.unwrap();
    /// // The warehouse was discovered, read and written in the same append.
    /// assert_eq!(done.version_of(&north).map(|v| v.get()), Some(1));
    /// # }
    /// ```
    fn discover_streams(&self, state: &Self::State) -> Vec<StreamId> {
        let _ = state;
        Vec::new()
    }

    /// How `execute` builds the state of a command made of per-stream
    /// folds; implemented for every [`Decide`](crate::Decide) command, and
    /// by a wrapper of commands by forwarding it.
    #[doc(hidden)]
    fn fold_plan(&self) -> Option<crate::erased::FoldPlan<Self::State>> {
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

/// Returns from the enclosing function with an error unless `condition`
/// holds. The error is either a message, with `format!` arguments, made
/// into a [`Refusal`](crate::Refusal), or an error value; either goes
/// through `From` into the function's error type.
///
/// ```
/// use eventcore::{Refusal, require};
///
/// fn withdraw(balance: u64, amount: u64) -> Result<u64, Refusal> {
///     require!(amount <= balance, "cannot withdraw {amount} from {balance}");
///     Ok(balance - amount)
/// }
///
/// assert_eq!(withdraw(10, 3).unwrap(), 7);
/// assert_eq!(withdraw(1, 3).unwrap_err().message(), "cannot withdraw 3 from 1");
///
/// #[derive(Debug, PartialEq, thiserror::Error)]
/// enum TransferError {
///     #[error("{held} held, {wanted} wanted")]
///     InsufficientFunds { held: u64, wanted: u64 },
///     #[error(transparent)]
///     Other(#[from] Refusal),
/// }
///
/// fn pay(balance: u64, amount: u64) -> Result<u64, TransferError> {
///     require!(amount > 0, "nothing to pay");
///     require!(amount <= balance, TransferError::InsufficientFunds { held: balance, wanted: amount });
///     Ok(balance - amount)
/// }
///
/// assert_eq!(pay(1, 3), Err(TransferError::InsufficientFunds { held: 1, wanted: 3 }));
/// assert!(matches!(pay(1, 0), Err(TransferError::Other(_))));
/// ```
#[macro_export]
macro_rules! require {
    ($condition:expr, $message:literal $(, $argument:expr)* $(,)?) => {
        if !$condition {
            return ::core::result::Result::Err(::core::convert::From::from(
                $crate::Refusal::new(::std::format!($message $(, $argument)*)),
            ));
        }
    };
    ($condition:expr, $error:expr $(,)?) => {
        if !$condition {
            return ::core::result::Result::Err(::core::convert::From::from($error));
        }
    };
}

/// Folds `events` into `state`; shared by both execute paths.
pub(crate) fn fold<C: CommandLogic>(
    command: &C,
    mut state: C::State,
    events: &[crate::RecordedEvent],
) -> Result<C::State, crate::StoreError> {
    for recorded in events {
        let event: C::Event = recorded.decode()?;
        state = command.apply(state, &event);
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::own_name;

    #[test]
    fn own_names_leave_module_paths_out() {
        assert_eq!(own_name("bank::commands::Transfer"), "Transfer");
        assert_eq!(own_name("Transfer"), "Transfer");
        assert_eq!(
            own_name("bank::Pair<bank::Transfer, alloc::string::String>"),
            "Pair<Transfer, String>"
        );
        assert_eq!(own_name("&[core::option::Option<a::B>]"), "&[Option<B>]");
    }
}
