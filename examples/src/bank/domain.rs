//! The bank's events and commands.

use std::sync::Arc;

use eventcore::{BoxError, Command, Decide, Event, Fold, FoldState, NewEvents, StreamId, require};
use nutype::nutype;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::money;

/// A positive amount of money, in cents.
#[nutype(
    validate(greater = 0),
    derive(
        Debug,
        Clone,
        Copy,
        PartialEq,
        Eq,
        PartialOrd,
        Ord,
        Display,
        Serialize,
        Deserialize
    )
)]
pub struct Amount(u64);

/// What happens to an account. Each event's stream is its `account`; its
/// stored type is the name serde writes in the `type` tag (the older tag,
/// the variant's name, is still read).
///
/// `MoneyDeposited` is at schema version 2: the first bank wrote its
/// `amount` as a float of dollars (version 1); [`upcast_bank_event`] reads
/// those.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Event)]
#[serde(tag = "type")]
#[event(stream = "account", upcast = upcast_bank_event)]
pub enum BankEvent {
    /// The account was opened.
    #[serde(rename = "AccountOpened", alias = "Opened")]
    Opened {
        /// The account.
        account: StreamId,
        /// Who holds it (empty for accounts opened before owners were kept).
        #[serde(default)]
        owner: String,
        /// What it was opened with, in cents.
        #[serde(default)]
        initial_balance: u64,
    },
    /// Cash was paid in.
    #[serde(rename = "MoneyDeposited", alias = "Deposited")]
    #[event(version = 2)]
    Deposited {
        /// The account.
        account: StreamId,
        /// How much.
        amount: Amount,
    },
    /// Cash was paid out.
    #[serde(rename = "MoneyWithdrawn", alias = "Withdrawn")]
    Withdrawn {
        /// The account.
        account: StreamId,
        /// How much.
        amount: Amount,
    },
    /// Money left for another account (recorded on the payer's stream).
    #[serde(rename = "TransferSent", alias = "TransferredOut")]
    TransferredOut {
        /// The payer.
        account: StreamId,
        /// The payee.
        to: StreamId,
        /// How much.
        amount: Amount,
    },
    /// Money arrived from another account (recorded on the payee's stream).
    #[serde(rename = "TransferReceived", alias = "TransferredIn")]
    TransferredIn {
        /// The payee.
        account: StreamId,
        /// The payer.
        from: StreamId,
        /// How much.
        amount: Amount,
    },
}

/// Brings a bank event stored in an older shape up to date: a version 1
/// `MoneyDeposited` holds its `amount` either as a float of dollars (the
/// first bank's shape, `12.5`) or as integer cents (written by this bank
/// before schema versions were stored, `1250`); JSON keeps the two apart,
/// and both become integer cents. A dollar amount that is not a whole
/// number of cents is refused, never rounded.
///
/// # Errors
/// An event type or version this bank never wrote, or an amount that is not
/// a positive number of cents.
pub fn upcast_bank_event(event_type: &str, from: u32, mut event: Value) -> Result<Value, BoxError> {
    if (event_type, from) != ("MoneyDeposited", 1) {
        return Err(format!("the bank never wrote {event_type} at schema version {from}").into());
    }
    let cents = match &event["amount"] {
        Value::Number(n) if n.is_u64() => n.as_u64(),
        Value::Number(n) => n.as_f64().and_then(money::cents_from_f64),
        _ => None,
    }
    .ok_or_else(|| format!("amount {} is not a whole number of cents", event["amount"]))?;
    event["amount"] = cents.into();
    Ok(event)
}

/// Why the bank refuses a command: callers match on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BankError {
    /// The account is open already.
    #[error("account {0} is already open")]
    AlreadyOpen(StreamId),
    /// The account was never opened.
    #[error("account {0} is not open")]
    NotOpen(StreamId),
    /// Paying out more than the account holds.
    #[error("account {account} holds {balance}, cannot pay out {wanted}")]
    InsufficientFunds {
        /// The account.
        account: StreamId,
        /// What it holds, in cents.
        balance: i128,
        /// What was asked, in cents.
        wanted: u64,
    },
    /// A transfer from an account to itself.
    #[error("cannot transfer from {0} to itself")]
    SameAccount(StreamId),
}

/// One account as its events describe it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Whether it was opened.
    pub open: bool,
    /// Its balance, in cents. Signed so that a broken store's overdraft shows.
    pub balance: i128,
}

impl Account {
    /// The account after one of its events.
    pub fn after(mut self, event: &BankEvent) -> Self {
        match event {
            BankEvent::Opened {
                initial_balance, ..
            } => {
                self.open = true;
                self.balance += i128::from(*initial_balance);
            }
            BankEvent::Deposited { amount, .. } | BankEvent::TransferredIn { amount, .. } => {
                self.balance += i128::from(amount.into_inner())
            }
            BankEvent::Withdrawn { amount, .. } | BankEvent::TransferredOut { amount, .. } => {
                self.balance -= i128::from(amount.into_inner())
            }
        }
        self
    }

    /// Folds a whole stream.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a BankEvent>) -> Self {
        events.into_iter().fold(Account::default(), Account::after)
    }

    fn require_open(&self, account: &StreamId) -> Result<(), BankError> {
        require!(self.open, BankError::NotOpen(account.clone()));
        Ok(())
    }

    fn require_funds(&self, account: &StreamId, amount: Amount) -> Result<(), BankError> {
        let wanted = amount.into_inner();
        require!(
            self.balance >= i128::from(wanted),
            BankError::InsufficientFunds {
                account: account.clone(),
                balance: self.balance,
                wanted,
            }
        );
        Ok(())
    }
}

/// An account's fold: every bank command decides on the `Account` folds of
/// the accounts it touches, kept per account and shared by all of them.
impl Fold for Account {
    type Event = BankEvent;
    const NAME: &'static str = "bank-account";

    fn apply(&mut self, event: &BankEvent) {
        *self = self.after(event);
    }
}

/// Opens an account; refuses if it is open already.
#[derive(Debug, Clone, Command)]
pub struct OpenAccount {
    /// The account.
    #[stream]
    pub account: StreamId,
    /// Who holds it.
    pub owner: String,
    /// What it opens with, in cents.
    pub initial_balance: u64,
}

impl OpenAccount {
    /// Opens `account` empty, with no owner named.
    pub fn new(account: StreamId) -> Self {
        OpenAccount {
            account,
            owner: String::new(),
            initial_balance: 0,
        }
    }
}

impl Decide for OpenAccount {
    type Event = BankEvent;
    type State = Arc<Account>;
    type Error = BankError;

    fn folds(&self) -> &StreamId {
        &self.account
    }

    fn handle(&self, state: &Arc<Account>) -> Result<NewEvents<BankEvent>, BankError> {
        require!(!state.open, BankError::AlreadyOpen(self.account.clone()));
        Ok(vec![BankEvent::Opened {
            account: self.account.clone(),
            owner: self.owner.clone(),
            initial_balance: self.initial_balance,
        }]
        .into())
    }
}

/// Pays cash into an open account.
#[derive(Debug, Clone, Command)]
pub struct Deposit {
    /// The account.
    #[stream]
    pub account: StreamId,
    /// How much.
    pub amount: Amount,
}

impl Decide for Deposit {
    type Event = BankEvent;
    type State = Arc<Account>;
    type Error = BankError;

    fn folds(&self) -> &StreamId {
        &self.account
    }

    fn handle(&self, state: &Arc<Account>) -> Result<NewEvents<BankEvent>, BankError> {
        state.require_open(&self.account)?;
        Ok(vec![BankEvent::Deposited {
            account: self.account.clone(),
            amount: self.amount,
        }]
        .into())
    }
}

/// Pays cash out of an open account; refuses an overdraft.
#[derive(Debug, Clone, Command)]
pub struct Withdraw {
    /// The account.
    #[stream]
    pub account: StreamId,
    /// How much.
    pub amount: Amount,
}

impl Decide for Withdraw {
    type Event = BankEvent;
    type State = Arc<Account>;
    type Error = BankError;

    fn folds(&self) -> &StreamId {
        &self.account
    }

    fn handle(&self, state: &Arc<Account>) -> Result<NewEvents<BankEvent>, BankError> {
        state.require_open(&self.account)?;
        state.require_funds(&self.account, self.amount)?;
        Ok(vec![BankEvent::Withdrawn {
            account: self.account.clone(),
            amount: self.amount,
        }]
        .into())
    }
}

/// Moves money between two open accounts: a command over two streams.
#[derive(Debug, Clone, Command)]
pub struct Transfer {
    /// The payer.
    #[stream]
    pub from: StreamId,
    /// The payee.
    #[stream]
    pub to: StreamId,
    /// How much.
    pub amount: Amount,
}

/// What a [`Transfer`] decides on: the folds of the payer and the payee.
#[derive(Debug, Default, FoldState)]
pub struct TransferState {
    /// The payer's account.
    pub from: Arc<Account>,
    /// The payee's account.
    pub to: Arc<Account>,
}

impl Decide for Transfer {
    type Event = BankEvent;
    type State = TransferState;
    type Error = BankError;

    fn folds(&self) -> TransferStateStreams<'_> {
        TransferStateStreams {
            from: &self.from,
            to: &self.to,
        }
    }

    fn handle(
        &self,
        TransferState { from, to }: &TransferState,
    ) -> Result<NewEvents<BankEvent>, BankError> {
        require!(
            self.from != self.to,
            BankError::SameAccount(self.from.clone())
        );
        from.require_open(&self.from)?;
        to.require_open(&self.to)?;
        from.require_funds(&self.from, self.amount)?;
        Ok(vec![
            BankEvent::TransferredOut {
                account: self.from.clone(),
                to: self.to.clone(),
                amount: self.amount,
            },
            BankEvent::TransferredIn {
                account: self.to.clone(),
                from: self.from.clone(),
                amount: self.amount,
            },
        ]
        .into())
    }
}

/// Any bank command, for batches of mixed commands (such as the
/// concurrency property test). Reads the streams of the command it wraps,
/// and decides exactly as it does.
#[derive(Debug, Clone, Command)]
pub enum BankCommand {
    /// See [`OpenAccount`].
    Open(OpenAccount),
    /// See [`Deposit`].
    Deposit(Deposit),
    /// See [`Withdraw`].
    Withdraw(Withdraw),
    /// See [`Transfer`].
    Transfer(Transfer),
}

impl Decide for BankCommand {
    type Event = BankEvent;
    /// The folds of the command's accounts: a one-account command's twice.
    type State = TransferState;
    type Error = BankError;

    fn folds(&self) -> TransferStateStreams<'_> {
        match self {
            BankCommand::Open(OpenAccount { account, .. })
            | BankCommand::Deposit(Deposit { account, .. })
            | BankCommand::Withdraw(Withdraw { account, .. }) => TransferStateStreams {
                from: account,
                to: account,
            },
            BankCommand::Transfer(c) => c.folds(),
        }
    }

    fn handle(&self, state: &TransferState) -> Result<NewEvents<BankEvent>, BankError> {
        match self {
            BankCommand::Open(c) => Decide::handle(c, &state.from),
            BankCommand::Deposit(c) => Decide::handle(c, &state.from),
            BankCommand::Withdraw(c) => Decide::handle(c, &state.from),
            BankCommand::Transfer(c) => Decide::handle(c, state),
        }
    }
}

/// The bank's invariants over a log: money moves between accounts without
/// being created or destroyed (every transfer's two halves match), no
/// account is ever overdrawn, and nothing happens to an account before it
/// is opened, or opens it twice.
pub fn bank_invariant(log: &[eventcore::RecordedEvent]) -> Result<(), String> {
    let mut accounts: std::collections::HashMap<StreamId, Account> =
        std::collections::HashMap::new();
    let (mut sent, mut received) = (0i128, 0i128);
    for recorded in log {
        let event: BankEvent = recorded.decode().map_err(|e| e.to_string())?;
        let account = accounts.entry(event.stream_id().clone()).or_default();
        match &event {
            BankEvent::Opened { .. } if account.open => {
                return Err(format!("{} opened twice", event.stream_id()));
            }
            BankEvent::Opened { .. } => {}
            _ if !account.open => {
                return Err(format!("{} used before it was opened", event.stream_id()));
            }
            BankEvent::TransferredOut { amount, .. } => sent += i128::from(amount.into_inner()),
            BankEvent::TransferredIn { amount, .. } => received += i128::from(amount.into_inner()),
            BankEvent::Deposited { .. } | BankEvent::Withdrawn { .. } => {}
        }
        *account = account.after(&event);
        if account.balance < 0 {
            return Err(format!(
                "{} overdrawn: {}",
                event.stream_id(),
                account.balance
            ));
        }
    }
    if sent != received {
        return Err(format!("transfers sent {sent} but received {received}"));
    }
    Ok(())
}
