//! The workloads: their accounts and their commands.

use eventcore::{
    CommandStreams, Decide, EventStore, ExecuteError, ExecuteOptions, ExecutionResult, NewEvents,
    StoreError, StreamId, StreamVersion, StreamWrites, execute_with,
};
use serde::Serialize;

use super::Setup;
use crate::bank::domain::{
    Account, Amount, BankError, BankEvent, Deposit, Transfer, TransferState, TransferStateStreams,
};

/// A kind of load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// One stream per command: deposits to 10,000 accounts (uncontended).
    Deposit,
    /// Two streams per command: transfers among 10,000 accounts.
    Transfer,
    /// Two streams per command among 10 accounts: heavy contention.
    TransferHot,
    /// A transfer that also reads 6 other accounts: 8 streams read, 2 written.
    Fanout,
    /// Deposits to 32 accounts that hold 10,000 events each.
    LongStream,
}

const INITIAL: u64 = 1_000_000_000;
const LONG_STREAM_EVENTS: usize = 10_000;

impl Workload {
    fn accounts(self) -> usize {
        match self {
            Workload::Deposit | Workload::Transfer | Workload::Fanout => 10_000,
            Workload::TransferHot => 10,
            Workload::LongStream => 32,
        }
    }

    /// Runs one command of this workload; returns its result and the
    /// balance change per account index it makes if it succeeds.
    pub(super) async fn one_command<S: EventStore>(
        self,
        store: &S,
        accounts: &[StreamId],
        rng: &mut fastrand::Rng,
        options: ExecuteOptions,
    ) -> (
        Result<ExecutionResult, ExecuteError<BankError>>,
        Vec<(usize, i128)>,
    ) {
        let n = accounts.len();
        let a = rng.usize(..n);
        let cents = rng.u64(1..=5);
        let amount = Amount::try_new(cents).unwrap_or_else(|_| unreachable!("1..=5 is positive"));
        let other = |rng: &mut fastrand::Rng| (a + 1 + rng.usize(..n - 1)) % n;
        match self {
            Workload::Deposit | Workload::LongStream => {
                let cmd = Deposit {
                    account: accounts[a].clone(),
                    amount,
                };
                (
                    execute_with(store, cmd, options).await,
                    vec![(a, i128::from(cents))],
                )
            }
            Workload::Transfer | Workload::TransferHot => {
                let b = other(rng);
                let cmd = Transfer {
                    from: accounts[a].clone(),
                    to: accounts[b].clone(),
                    amount,
                };
                let c = i128::from(cents);
                (
                    execute_with(store, cmd, options).await,
                    vec![(a, -c), (b, c)],
                )
            }
            Workload::Fanout => {
                let b = other(rng);
                let watched = (0..6).map(|_| accounts[rng.usize(..n)].clone()).collect();
                let cmd = FanoutTransfer {
                    transfer: Transfer {
                        from: accounts[a].clone(),
                        to: accounts[b].clone(),
                        amount,
                    },
                    watched,
                };
                let c = i128::from(cents);
                (
                    execute_with(store, cmd, options).await,
                    vec![(a, -c), (b, c)],
                )
            }
        }
    }
}

/// A transfer that also reads six other accounts (say, to check limits of
/// related accounts): eight streams read, two written, and the six
/// read-only participants checked at append.
#[derive(Debug, Clone)]
pub struct FanoutTransfer {
    /// The transfer.
    pub transfer: Transfer,
    /// The accounts read but not written.
    pub watched: Vec<StreamId>,
}

impl CommandStreams for FanoutTransfer {
    fn streams(&self) -> Vec<StreamId> {
        let mut streams = self.transfer.streams();
        streams.extend(self.watched.iter().cloned());
        streams
    }
}

impl Decide for FanoutTransfer {
    type Event = BankEvent;
    type State = TransferState;
    type Error = BankError;

    /// The transfer's two folds; the watched accounts are read and checked
    /// for their versions alone.
    fn folds(&self) -> TransferStateStreams<'_> {
        self.transfer.folds()
    }

    fn handle(&self, state: &TransferState) -> Result<NewEvents<BankEvent>, BankError> {
        Decide::handle(&self.transfer, state)
    }
}

/// Opens the workload's accounts with bulk appends (many streams per
/// append), each with `INITIAL` cents and, for long streams, enough
/// one-cent deposits to reach 10,000 events.
pub(super) async fn setup<S: EventStore>(
    store: &S,
    workload: Workload,
    run_tag: &str,
) -> Result<Setup, StoreError> {
    let n = workload.accounts();
    let per_account = if workload == Workload::LongStream {
        LONG_STREAM_EVENTS
    } else {
        2
    };
    let accounts: Vec<StreamId> = (0..n)
        .map(|i| {
            StreamId::try_new(format!("load-{run_tag}-{i}"))
                .unwrap_or_else(|_| unreachable!("short printable id"))
        })
        .collect();
    let one = Amount::try_new(1).unwrap_or_else(|_| unreachable!("1 is positive"));
    let initial_amount = Amount::try_new(INITIAL).unwrap_or_else(|_| unreachable!("positive"));
    let chunk = (20_000 / per_account).max(1);
    let mut initial = Vec::with_capacity(n);
    for group in accounts.chunks(chunk) {
        let mut writes = StreamWrites::new();
        for account in group {
            writes.expect(account.clone(), StreamVersion::INITIAL)?;
            writes.append(&BankEvent::Opened {
                account: account.clone(),
                owner: String::new(),
                initial_balance: 0,
            })?;
            writes.append(&BankEvent::Deposited {
                account: account.clone(),
                amount: initial_amount,
            })?;
            for _ in 2..per_account {
                writes.append(&BankEvent::Deposited {
                    account: account.clone(),
                    amount: one,
                })?;
            }
            let balance =
                Account::default().balance + i128::from(INITIAL) + (per_account as i128 - 2);
            initial.push(balance);
        }
        store.append(writes).await?;
    }
    Ok(Setup {
        accounts,
        initial,
        events: n * per_account,
    })
}
