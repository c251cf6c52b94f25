//! What a workload's clients saw succeed, and the invariant checks that
//! compare it with what the store holds.

use eventcore::{EventStore, EventStoreExt, ExecuteError, ExecutionResult, StoreError, StreamId};
use serde::Serialize;

use super::domain::{Account, BankError, BankEvent};

/// The client's view of a workload: outcomes, and each account's net change
/// implied by the commands that succeeded.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Read-decide-append cycles of successful commands.
    pub attempts: u64,
    /// Successful commands.
    pub successes: usize,
    /// Events the successful commands appended.
    pub events: usize,
    /// Commands refused by a business rule.
    pub rejections: usize,
    /// Commands that met conflicts on every attempt.
    pub gave_up: usize,
    /// Commands that failed with a store error.
    pub store_errors: usize,
    /// Net change per account (indexed like the workload's accounts).
    pub deltas: Vec<i128>,
}

impl Tally {
    /// An empty tally over `accounts` accounts.
    pub fn new(accounts: usize) -> Self {
        Tally {
            deltas: vec![0; accounts],
            ..Tally::default()
        }
    }

    /// Records one command's result; `effect` lists the (account index,
    /// change) it makes if it succeeded.
    pub fn record(
        &mut self,
        result: &Result<ExecutionResult, ExecuteError<BankError>>,
        effect: &[(usize, i128)],
    ) {
        match result {
            Ok(done) => {
                self.attempts += u64::from(done.attempts);
                self.successes += 1;
                self.events += done.events_written;
                for (account, delta) in effect {
                    self.deltas[*account] += delta;
                }
            }
            Err(ExecuteError::Rejected(_)) => self.rejections += 1,
            Err(ExecuteError::RetriesExhausted { .. }) => self.gave_up += 1,
            Err(_) => self.store_errors += 1,
        }
    }

    /// Adds another tally over the same accounts.
    pub fn merge(&mut self, other: &Tally) {
        self.attempts += other.attempts;
        self.successes += other.successes;
        self.events += other.events;
        self.rejections += other.rejections;
        self.gave_up += other.gave_up;
        self.store_errors += other.store_errors;
        for (sum, d) in self.deltas.iter_mut().zip(&other.deltas) {
            *sum += d;
        }
    }

    /// Attempts beyond the first of each successful command.
    pub fn retries(&self) -> u64 {
        self.attempts.saturating_sub(self.successes as u64)
    }
}

/// The invariants checked after a run.
#[derive(Debug, Clone, Serialize)]
pub struct Checks {
    /// The sum of all balances equals what was paid in minus paid out.
    pub money_conserved: bool,
    /// Every account's fold of its own events equals the balance implied by
    /// the commands that succeeded.
    pub balances_match: bool,
    /// No account went below zero.
    pub no_overdraft: bool,
    /// Every account's versions run 1..=n with no gap or duplicate.
    pub versions_gap_free: bool,
    /// The log holds exactly the events of setup and of the commands that succeeded.
    pub events_accounted: bool,
}

impl Checks {
    /// Whether every check held.
    pub fn all_passed(&self) -> bool {
        self.money_conserved
            && self.balances_match
            && self.no_overdraft
            && self.versions_gap_free
            && self.events_accounted
    }
}

/// Reads every account back and checks it against the tally: `initial`
/// holds each account's balance after setup, which wrote `setup_events`.
/// Returns the checks and each account's balance.
///
/// # Errors
/// The store's error if an account cannot be read or an event decoded.
pub async fn verify<S: EventStore>(
    store: &S,
    accounts: &[StreamId],
    initial: &[i128],
    setup_events: usize,
    tally: &Tally,
) -> Result<(Checks, Vec<i128>), StoreError> {
    let mut balances = Vec::with_capacity(accounts.len());
    let mut versions_gap_free = true;
    let mut events = 0usize;
    let mut lowest = 0i128;
    for chunk in accounts.chunks(256) {
        let read = store.read_streams(chunk).await?;
        events += read.events().len();
        for account in chunk {
            let mut state = Account::default();
            for (i, recorded) in read.events_of(account).enumerate() {
                versions_gap_free &= recorded.version().get() == i as u64 + 1;
                state = state.after(&recorded.decode::<BankEvent>()?);
                lowest = lowest.min(state.balance);
            }
            balances.push(state.balance);
        }
    }
    let total: i128 = balances.iter().sum();
    let expected_total: i128 = initial.iter().sum::<i128>() + tally.deltas.iter().sum::<i128>();
    let balances_match = balances
        .iter()
        .zip(initial)
        .zip(&tally.deltas)
        .all(|((b, i), d)| *b == i + d);
    let checks = Checks {
        money_conserved: total == expected_total,
        balances_match,
        no_overdraft: lowest >= 0,
        versions_gap_free,
        events_accounted: events == setup_events + tally.events,
    };
    Ok((checks, balances))
}
