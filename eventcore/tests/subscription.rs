//! Subscription behaviour that needs a purpose-built store or handler:
//! at-least-once redelivery after a lost checkpoint, the handler-failure
//! policies, filters. Catch-up, live follow, resume, single instance and
//! undecodable events are conformance scenarios (eventcore-testing), run on
//! every store.

use std::{
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use eventcore::{
    CheckpointStore, LeaseToken, LogQuery, OnHandlerError, Position, RetryPolicy, StoreError,
    SubscriptionConfig, SubscriptionError, SubscriptionLeases, SubscriptionName, execute,
    handler_fn, subscribe,
};
use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};
use eventcore_testing::fixtures::{Credit, LedgerEvent, stream};

fn name() -> SubscriptionName {
    SubscriptionName::try_new("balances").unwrap()
}

fn config() -> SubscriptionConfig {
    SubscriptionConfig::default()
        .with_page_size(2)
        .with_poll_interval(Duration::from_millis(20))
        .with_retry(
            RetryPolicy::default()
                .with_max_attempts(NonZeroU32::new(2).unwrap())
                .with_max_delay(Duration::from_millis(1)),
        )
}

async fn credit(store: &InMemoryEventStore, account: &str, amount: u64) {
    execute(
        store,
        Credit {
            account: stream(account),
            amount,
        },
    )
    .await
    .unwrap();
}

type Seen = Arc<Mutex<Vec<(Position, u64)>>>;

/// A handler that records each credit's amount.
fn recording(seen: &Seen) -> impl eventcore::Handler<LedgerEvent> {
    let seen = seen.clone();
    handler_fn(
        move |context: &eventcore::EventContext, event: &LedgerEvent| {
            let amount = match event {
                LedgerEvent::Credited { amount, .. } | LedgerEvent::Debited { amount, .. } => {
                    *amount
                }
            };
            seen.lock().unwrap().push((context.position(), amount));
            async { Ok(()) }
        },
    )
}

async fn wait_until_handled(handle: &eventcore::SubscriptionHandle, sequence: u64) {
    let mut position = handle.position();
    tokio::time::timeout(
        Duration::from_secs(10),
        position.wait_for(|p| p.is_some_and(|p| p.sequence() >= sequence)),
    )
    .await
    .expect("the subscription reached the position within 10 s")
    .expect("the subscription is running");
}

/// Polls, with a deadline, until the subscription has stopped by itself.
async fn wait_until_finished(handle: &eventcore::SubscriptionHandle) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !handle.is_finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscription never stopped"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Saves fail for good (a failure no retry cures): the process "crashes"
/// between handling and checkpointing.
#[derive(Clone)]
struct FailingSaves;

impl CheckpointStore for FailingSaves {
    async fn load(&self, _: &SubscriptionName) -> Result<Option<Position>, StoreError> {
        Ok(None)
    }

    async fn save(
        &self,
        _: &SubscriptionName,
        _: Position,
        _: LeaseToken,
    ) -> Result<(), StoreError> {
        Err(StoreError::Backend {
            operation: "save",
            source: "disk gone".into(),
        })
    }
}

/// The first saves fail transiently (a lost connection), then they work.
#[derive(Clone, Default)]
struct FlakySaves {
    failures_left: Arc<Mutex<u32>>,
    saved: Arc<Mutex<Option<Position>>>,
}

impl CheckpointStore for FlakySaves {
    async fn load(&self, _: &SubscriptionName) -> Result<Option<Position>, StoreError> {
        Ok(*self.saved.lock().unwrap())
    }

    async fn save(
        &self,
        _: &SubscriptionName,
        position: Position,
        _: LeaseToken,
    ) -> Result<(), StoreError> {
        let mut left = self.failures_left.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            return Err(StoreError::Transient {
                operation: "save",
                source: "connection lost".into(),
            });
        }
        *self.saved.lock().unwrap() = Some(position);
        Ok(())
    }
}

impl SubscriptionLeases for FlakySaves {
    type Lease = ();

    async fn try_acquire(&self, _: &SubscriptionName) -> Result<Option<()>, StoreError> {
        Ok(Some(()))
    }

    fn token(&self, (): &()) -> LeaseToken {
        LeaseToken::default()
    }

    async fn still_held(&self, _: &mut ()) -> Result<bool, StoreError> {
        Ok(true)
    }
}

#[tokio::test]
async fn transient_checkpoint_failures_are_retried_not_fatal() {
    let store = InMemoryEventStore::new();
    for amount in 1..=4 {
        credit(&store, "a", amount).await;
    }
    let seen = Seen::default();
    let checkpoints = FlakySaves::default();
    *checkpoints.failures_left.lock().unwrap() = 3;
    let handle = subscribe(
        store.clone(),
        checkpoints.clone(),
        name(),
        recording(&seen),
        config(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while checkpoints
        .saved
        .lock()
        .unwrap()
        .is_none_or(|p| p.sequence() < 4)
    {
        assert!(!handle.is_finished(), "stopped on a transient failure");
        assert!(tokio::time::Instant::now() < deadline, "never caught up");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let report = handle.stop().await.expect("still running");
    assert_eq!(report.store_retries, 3, "{report:?}");
    let amounts: std::collections::BTreeSet<u64> =
        seen.lock().unwrap().iter().map(|(_, a)| *a).collect();
    assert_eq!(amounts, (1..=4).collect(), "every event, at least once");
}

impl SubscriptionLeases for FailingSaves {
    type Lease = ();

    async fn try_acquire(&self, _: &SubscriptionName) -> Result<Option<()>, StoreError> {
        Ok(Some(()))
    }

    fn token(&self, (): &()) -> LeaseToken {
        LeaseToken::default()
    }

    async fn still_held(&self, _: &mut ()) -> Result<bool, StoreError> {
        Ok(true)
    }
}

#[tokio::test]
async fn events_handled_before_a_lost_checkpoint_are_delivered_again() {
    let store = InMemoryEventStore::new();
    credit(&store, "a", 1).await;
    credit(&store, "a", 2).await;
    let first = Seen::default();
    let handle = subscribe(
        store.clone(),
        FailingSaves,
        name(),
        recording(&first),
        config(),
    );
    wait_until_finished(&handle).await;
    let err = handle
        .stop()
        .await
        .expect_err("the checkpoint could not be saved");
    assert!(matches!(err, SubscriptionError::Store { .. }), "{err:?}");
    assert!(
        !first.lock().unwrap().is_empty(),
        "events were handled before the failed save"
    );

    let second = Seen::default();
    let checkpoints = InMemoryCheckpointStore::new();
    let handle = subscribe(
        store.clone(),
        checkpoints,
        name(),
        recording(&second),
        config(),
    );
    wait_until_handled(&handle, 2).await;
    handle.stop().await.unwrap();
    let again: Vec<u64> = second.lock().unwrap().iter().map(|(_, a)| *a).collect();
    assert_eq!(
        again,
        vec![1, 2],
        "at least once: redelivered after the lost checkpoint"
    );
}

#[tokio::test]
async fn a_failing_handler_stops_the_subscription_before_the_event() {
    let store = InMemoryEventStore::new();
    let checkpoints = InMemoryCheckpointStore::new();
    for amount in 1..=3 {
        credit(&store, "a", amount).await;
    }
    let attempts = Arc::new(Mutex::new(0));
    let counted = attempts.clone();
    let handler = handler_fn(move |_, event: &LedgerEvent| {
        let fail = matches!(event, LedgerEvent::Credited { amount: 2, .. });
        if fail {
            *counted.lock().unwrap() += 1;
        }
        async move {
            if fail {
                Err("cannot handle 2".into())
            } else {
                Ok(())
            }
        }
    });
    let handle = subscribe(
        store.clone(),
        checkpoints.clone(),
        name(),
        handler,
        config(),
    );
    wait_until_finished(&handle).await;
    match handle.stop().await {
        Err(SubscriptionError::HandlerFailed {
            position, source, ..
        }) => {
            assert_eq!(position.sequence(), 2);
            assert_eq!(source.to_string(), "cannot handle 2");
        }
        other => panic!("expected HandlerFailed, got {other:?}"),
    }
    assert_eq!(
        *attempts.lock().unwrap(),
        2,
        "retried up to the policy's attempts"
    );
    assert_eq!(
        checkpoints
            .load(&name())
            .await
            .unwrap()
            .map(|p| p.sequence()),
        Some(1),
        "checkpoint before the event"
    );
}

#[tokio::test]
async fn a_failing_handler_can_skip_and_record_the_event() {
    let store = InMemoryEventStore::new();
    for amount in 1..=3 {
        credit(&store, "a", amount).await;
    }
    let handler = handler_fn(|_, event: &LedgerEvent| {
        let fail = matches!(event, LedgerEvent::Credited { amount: 2, .. });
        async move {
            if fail {
                Err("cannot handle 2".into())
            } else {
                Ok(())
            }
        }
    });
    let config = config().with_on_error(OnHandlerError::Skip);
    let handle = subscribe(
        store.clone(),
        InMemoryCheckpointStore::new(),
        name(),
        handler,
        config,
    );
    wait_until_handled(&handle, 3).await;
    let report = handle.stop().await.unwrap();
    assert_eq!(report.handled, 2);
    assert_eq!(report.skipped, 1);
    assert_eq!(
        report
            .last_skipped
            .iter()
            .map(|p| p.sequence())
            .collect::<Vec<_>>(),
        vec![2]
    );
}

#[tokio::test]
async fn filters_limit_what_the_handler_sees() {
    let store = InMemoryEventStore::new();
    credit(&store, "acct-1", 1).await;
    credit(&store, "other-1", 2).await;
    credit(&store, "acct-2", 3).await;
    let seen = Seen::default();
    let config = config().with_filter(LogQuery::from_start(0).with_stream_prefix("acct-"));
    let handle = subscribe(
        store.clone(),
        InMemoryCheckpointStore::new(),
        name(),
        recording(&seen),
        config,
    );
    wait_until_handled(&handle, 3).await;
    handle.stop().await.unwrap();
    let amounts: Vec<u64> = seen.lock().unwrap().iter().map(|(_, a)| *a).collect();
    assert_eq!(amounts, vec![1, 3]);
}

/// A handler that fails on every attempt, with retries that would take
/// minutes (300 attempts, waits up to 10 s): stop does not wait for them.
#[tokio::test]
async fn stop_ends_a_handler_retry_wait_at_once() {
    let store = InMemoryEventStore::new();
    credit(&store, "a", 1).await;
    let attempts = Arc::new(Mutex::new(0u32));
    let counted = attempts.clone();
    let handler = handler_fn(move |_, _: &LedgerEvent| {
        *counted.lock().unwrap() += 1;
        async { Err::<(), _>("down".into()) }
    });
    let config = config().with_retry(
        RetryPolicy::default()
            .with_max_attempts(std::num::NonZeroU32::new(300).unwrap())
            .with_base_delay(Duration::from_secs(10))
            .with_max_delay(Duration::from_secs(10)),
    );
    let handle = subscribe(
        store.clone(),
        InMemoryCheckpointStore::new(),
        name(),
        handler,
        config,
    );
    while *attempts.lock().unwrap() == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let started = std::time::Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(2), handle.stop())
        .await
        .expect("stop waited for the handler's retry backoff")
        .expect("stopped cleanly");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(report.handled, 0);
    assert_eq!(
        report.checkpoint, None,
        "the checkpoint stays before the event"
    );
    assert!(
        !report.abandoned_at_stop,
        "nothing was under way: {report:?}"
    );
}

/// A handler that never returns: stop abandons it after the grace, and
/// says so.
#[tokio::test]
async fn stop_abandons_a_stuck_handler_after_its_grace() {
    let store = InMemoryEventStore::new();
    credit(&store, "a", 1).await;
    credit(&store, "a", 2).await;
    let entered = Arc::new(tokio::sync::Notify::new());
    let signal = entered.clone();
    let handler = handler_fn(move |_, event: &LedgerEvent| {
        let stuck = matches!(event, LedgerEvent::Credited { amount: 2, .. });
        let signal = signal.clone();
        async move {
            if stuck {
                signal.notify_one();
                std::future::pending::<()>().await;
            }
            Ok(())
        }
    });
    let checkpoints = InMemoryCheckpointStore::new();
    let handle = subscribe(
        store.clone(),
        checkpoints.clone(),
        name(),
        handler,
        config().with_stop_grace(Duration::from_millis(200)),
    );
    entered.notified().await;
    let started = std::time::Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(3), handle.stop())
        .await
        .expect("stop waited past its grace")
        .expect("stopped cleanly");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "stopped before the grace: {took:?}"
    );
    assert!(report.abandoned_at_stop, "{report:?}");
    assert_eq!(report.handled, 1);
    assert!(
        checkpoints.load(&name()).await.unwrap() < Some(Position::new(0, 2)),
        "the stuck event is not checkpointed"
    );
}

/// A save under a token that is no longer the newest is refused and
/// writes nothing; a save behind the checkpoint writes nothing.
#[tokio::test]
async fn checkpoints_move_only_forward_and_only_under_the_newest_lease() {
    let checkpoints = InMemoryCheckpointStore::new();
    let first = checkpoints
        .try_acquire(&name())
        .await
        .unwrap()
        .expect("free");
    let old = checkpoints.token(&first);
    checkpoints
        .save(&name(), Position::new(0, 5), old)
        .await
        .unwrap();
    assert!(checkpoints.expire_lease(&name()));
    let second = checkpoints
        .try_acquire(&name())
        .await
        .unwrap()
        .expect("expired");
    let new = checkpoints.token(&second);
    assert!(new > old);
    let refused = checkpoints.save(&name(), Position::new(0, 9), old).await;
    assert!(
        matches!(refused, Err(StoreError::LeaseLost { token, current, .. }) if token == old && current == new),
        "{refused:?}"
    );
    checkpoints
        .save(&name(), Position::new(0, 3), new)
        .await
        .unwrap();
    assert_eq!(
        checkpoints.load(&name()).await.unwrap(),
        Some(Position::new(0, 5)),
        "neither the stale save nor the one behind moved it"
    );
    assert_eq!(
        checkpoints.writes(&name()),
        vec![(None, Position::new(0, 5))]
    );
}
