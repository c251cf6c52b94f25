//! Events and commands the conformance scenarios use.

use std::sync::Arc;

use eventcore::{
    CommandLogic, CommandStreams, Decide, Event, Fold, NewEvents, Refusal, StreamId, require,
};
use serde::{Deserialize, Serialize};

/// A generic event: a note with a number, appended to one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// The stream the note belongs to.
    pub stream: StreamId,
    /// A number the scenario uses to recognise the event.
    pub n: u64,
    /// Free text.
    pub text: String,
}

impl Note {
    /// A note with empty text.
    pub fn new(stream: &StreamId, n: u64) -> Self {
        Note {
            stream: stream.clone(),
            n,
            text: String::new(),
        }
    }
}

impl Event for Note {
    fn stream_id(&self) -> &StreamId {
        &self.stream
    }

    fn event_type(&self) -> &'static str {
        "Note"
    }
}

/// Money moving in or out of a ledger account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerEvent {
    /// Money arrived.
    Credited {
        /// The account.
        account: StreamId,
        /// How much.
        amount: u64,
        /// The account it came from, for a move.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<StreamId>,
    },
    /// Money left.
    Debited {
        /// The account.
        account: StreamId,
        /// How much.
        amount: u64,
    },
}

impl Event for LedgerEvent {
    fn stream_id(&self) -> &StreamId {
        match self {
            LedgerEvent::Credited { account, .. } | LedgerEvent::Debited { account, .. } => account,
        }
    }

    fn event_type(&self) -> &'static str {
        match self {
            LedgerEvent::Credited { .. } => "Credited",
            LedgerEvent::Debited { .. } => "Debited",
        }
    }
}

/// Credits an account (one stream); a zero amount decides nothing.
#[derive(Debug, Clone)]
pub struct Credit {
    /// The account.
    pub account: StreamId,
    /// How much.
    pub amount: u64,
}

impl CommandStreams for Credit {
    fn streams(&self) -> Vec<StreamId> {
        vec![self.account.clone()]
    }
}

impl CommandLogic for Credit {
    type Event = LedgerEvent;
    type State = ();
    type Error = eventcore::Refusal;

    fn apply(&self, state: (), _event: &LedgerEvent) {
        state
    }

    fn handle(&self, _state: &()) -> Result<NewEvents<LedgerEvent>, Refusal> {
        if self.amount == 0 {
            return Ok(NewEvents::none());
        }
        Ok(vec![LedgerEvent::Credited {
            account: self.account.clone(),
            amount: self.amount,
            from: None,
        }]
        .into())
    }
}

/// Moves money between two accounts; refuses to overdraw `from`.
#[derive(Debug, Clone)]
pub struct Move {
    /// The account debited.
    pub from: StreamId,
    /// The account credited.
    pub to: StreamId,
    /// How much.
    pub amount: u64,
}

/// Balance of every account of a log, for invariants and reference folds
/// (no command decides on it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances(pub std::collections::HashMap<StreamId, i128>);

impl Balances {
    /// Applies one ledger event.
    pub fn apply(&mut self, event: &LedgerEvent) {
        match event {
            LedgerEvent::Credited {
                account, amount, ..
            } => *self.0.entry(account.clone()).or_default() += i128::from(*amount),
            LedgerEvent::Debited { account, amount } => {
                *self.0.entry(account.clone()).or_default() -= i128::from(*amount)
            }
        }
    }

    /// The balance of one account.
    pub fn of(&self, account: &StreamId) -> i128 {
        self.0.get(account).copied().unwrap_or(0)
    }
}

/// An account's balance, folded from its stream alone: what [`Move`],
/// [`Withdraw`] and [`LedgerCommand`] decide on, kept per account and
/// shared by all of them. Signed, so a broken store's overdraft shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance(pub i128);

impl Fold for Balance {
    type Event = LedgerEvent;
    const NAME: &'static str = "kit-balance";

    fn apply(&mut self, event: &LedgerEvent) {
        match event {
            LedgerEvent::Credited { amount, .. } => self.0 += i128::from(*amount),
            LedgerEvent::Debited { amount, .. } => self.0 -= i128::from(*amount),
        }
    }
}

/// The folds of the two accounts a ledger command reads (a one-account
/// command's twice).
pub type Pair = (Arc<Balance>, Arc<Balance>);

impl CommandStreams for Move {
    fn streams(&self) -> Vec<StreamId> {
        vec![self.from.clone(), self.to.clone()]
    }
}

impl Decide for Move {
    type Event = LedgerEvent;
    type State = Pair;
    type Error = eventcore::Refusal;

    fn folds(&self) -> (&StreamId, &StreamId) {
        (&self.from, &self.to)
    }

    fn handle(&self, (from, _): &Pair) -> Result<NewEvents<LedgerEvent>, Refusal> {
        let available = from.0;
        require!(
            available >= i128::from(self.amount),
            "{} holds {available}, cannot move {}",
            self.from,
            self.amount
        );
        Ok(vec![
            LedgerEvent::Debited {
                account: self.from.clone(),
                amount: self.amount,
            },
            LedgerEvent::Credited {
                account: self.to.clone(),
                amount: self.amount,
                from: Some(self.from.clone()),
            },
        ]
        .into())
    }
}

/// Takes money out of one account on its [`Balance`] fold alone: a
/// one-fold command, which may start from the fold's snapshot.
#[derive(Debug, Clone)]
pub struct Withdraw {
    /// The account.
    pub account: StreamId,
    /// How much.
    pub amount: u64,
}

impl CommandStreams for Withdraw {
    fn streams(&self) -> Vec<StreamId> {
        vec![self.account.clone()]
    }
}

impl Decide for Withdraw {
    type Event = LedgerEvent;
    type State = Arc<Balance>;
    type Error = Refusal;

    fn folds(&self) -> &StreamId {
        &self.account
    }

    fn handle(&self, balance: &Arc<Balance>) -> Result<NewEvents<LedgerEvent>, Refusal> {
        require!(
            balance.0 >= i128::from(self.amount),
            "{} holds {}, cannot withdraw {}",
            self.account,
            balance.0,
            self.amount
        );
        Ok(vec![LedgerEvent::Debited {
            account: self.account.clone(),
            amount: self.amount,
        }]
        .into())
    }
}

/// A faulty command: declares one stream, emits events for it and another.
#[derive(Debug, Clone)]
pub struct Stray {
    /// The declared stream.
    pub declared: StreamId,
    /// A stream it writes without declaring.
    pub stray: StreamId,
}

impl CommandStreams for Stray {
    fn streams(&self) -> Vec<StreamId> {
        vec![self.declared.clone()]
    }
}

impl CommandLogic for Stray {
    type Event = Note;
    type State = ();
    type Error = eventcore::Refusal;

    fn apply(&self, state: (), _event: &Note) {
        state
    }

    fn handle(&self, _state: &()) -> Result<NewEvents<Note>, Refusal> {
        Ok(vec![Note::new(&self.declared, 1), Note::new(&self.stray, 2)].into())
    }
}

/// A stream id from a literal; panics on an invalid one (test code only).
pub fn stream(name: &str) -> StreamId {
    StreamId::try_new(name).unwrap_or_else(|e| panic!("invalid test stream id {name:?}: {e}"))
}

/// Either ledger command, for batches of mixed commands.
#[derive(Debug, Clone)]
pub enum LedgerCommand {
    /// See [`Credit`].
    Credit(Credit),
    /// See [`Move`].
    Move(Move),
}

impl CommandStreams for LedgerCommand {
    fn streams(&self) -> Vec<StreamId> {
        match self {
            LedgerCommand::Credit(c) => c.streams(),
            LedgerCommand::Move(m) => m.streams(),
        }
    }
}

impl Decide for LedgerCommand {
    type Event = LedgerEvent;
    type State = Pair;
    type Error = eventcore::Refusal;

    fn folds(&self) -> (&StreamId, &StreamId) {
        match self {
            LedgerCommand::Credit(c) => (&c.account, &c.account),
            LedgerCommand::Move(m) => m.folds(),
        }
    }

    fn handle(&self, state: &Pair) -> Result<NewEvents<LedgerEvent>, Refusal> {
        match self {
            LedgerCommand::Credit(c) => CommandLogic::handle(c, &()),
            LedgerCommand::Move(m) => Decide::handle(m, state),
        }
    }
}

/// The ledger's invariant over a log: no account ever goes below zero, and
/// moves neither create nor destroy money (their debits and credits sum up
/// to the same amount).
pub fn ledger_invariant(log: &[eventcore::RecordedEvent]) -> Result<(), String> {
    let mut balances = Balances::default();
    let (mut debited, mut credited_by_moves) = (0i128, 0i128);
    for e in log {
        let event: LedgerEvent = e.decode().map_err(|err| err.to_string())?;
        match &event {
            LedgerEvent::Debited { amount, .. } => debited += i128::from(*amount),
            LedgerEvent::Credited {
                amount,
                from: Some(_),
                ..
            } => credited_by_moves += i128::from(*amount),
            LedgerEvent::Credited { from: None, .. } => {}
        }
        balances.apply(&event);
        let account = event.stream_id();
        if balances.of(account) < 0 {
            return Err(format!(
                "{account} went to {} at version {}",
                balances.of(account),
                e.version()
            ));
        }
    }
    if debited != credited_by_moves {
        return Err(format!(
            "moves debited {debited} but credited {credited_by_moves}"
        ));
    }
    Ok(())
}
