//! The bank's read side: account balances and the total money, kept by a
//! subscription to the global log.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use eventcore::{
    BoxError, CheckpointStore, EventContext, EventLog, Handler, LogQuery, StreamId,
    SubscriptionConfig, SubscriptionError, SubscriptionLeases, SubscriptionName, subscribe,
};

use super::domain::{Account, BankEvent};

/// Balances per account and the total money, as the events say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Balances {
    /// Each account's balance.
    pub accounts: HashMap<StreamId, i128>,
    /// The sum of all balances.
    pub total: i128,
    /// Events applied.
    pub events: u64,
}

/// The projection: applies bank events to shared [`Balances`].
#[derive(Debug, Clone, Default)]
pub struct BalancesProjection {
    state: Arc<Mutex<Balances>>,
}

impl BalancesProjection {
    /// A copy of the balances so far.
    pub fn snapshot(&self) -> Balances {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Handler<BankEvent> for BalancesProjection {
    async fn handle(&mut self, _: &EventContext, event: &BankEvent) -> Result<(), BoxError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let before = state
            .accounts
            .get(eventcore::Event::stream_id(event))
            .copied()
            .unwrap_or(0);
        let after = Account {
            open: true,
            balance: before,
        }
        .after(event)
        .balance;
        state
            .accounts
            .insert(eventcore::Event::stream_id(event).clone(), after);
        state.total += after - before;
        state.events += 1;
        Ok(())
    }
}

/// Why the read model could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    /// The subscription failed.
    #[error("the balances subscription failed")]
    Subscription(#[from] SubscriptionError),
    /// It did not catch up in time.
    #[error("the read model saw {seen} of {expected} events within {secs} s")]
    TooSlow {
        /// Events applied.
        seen: u64,
        /// Events expected.
        expected: u64,
        /// The time allowed.
        secs: u64,
    },
}

/// Builds the balances of the streams starting with `prefix` by running
/// subscription `name` until it has applied `expected_events` events, then
/// stopping it (its checkpoint saved).
///
/// # Errors
/// A [`ReadModelError`] if the subscription fails or is too slow.
pub async fn catch_up<L, C>(
    log: L,
    checkpoints: C,
    name: SubscriptionName,
    prefix: &str,
    expected_events: u64,
) -> Result<Balances, ReadModelError>
where
    L: EventLog + 'static,
    C: CheckpointStore + SubscriptionLeases + 'static,
{
    let projection = BalancesProjection::default();
    let config = SubscriptionConfig::default()
        .with_filter(LogQuery::from_start(0).with_stream_prefix(prefix))
        .with_poll_interval(Duration::from_millis(10));
    let handle = subscribe(log, checkpoints, name, projection.clone(), config);
    let allowed = Duration::from_secs(60);
    let deadline = tokio::time::Instant::now() + allowed;
    while projection.snapshot().events < expected_events
        && tokio::time::Instant::now() < deadline
        && !handle.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.stop().await?;
    let balances = projection.snapshot();
    if balances.events < expected_events {
        return Err(ReadModelError::TooSlow {
            seen: balances.events,
            expected: expected_events,
            secs: allowed.as_secs(),
        });
    }
    Ok(balances)
}
