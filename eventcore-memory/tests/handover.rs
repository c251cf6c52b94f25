//! Exactly once across lease handovers on the in-memory store: the kit's
//! scenario with slow and fast handlers, many handovers and a stale
//! holder; and a projection that ignores the lease's token, caught by it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use eventcore::{
    BoxError, CheckpointStore, EventContext, Handler, Position, SubscriptionConfig,
    SubscriptionHandle, SubscriptionName, Uuid, subscribe,
};
use eventcore_memory::{ExactlyOnce, InMemoryEventStore, MemoryProjection};
use eventcore_testing::{
    fixtures::LedgerEvent,
    handover::{Handover, HandoverPlan, Pace, Paced, exactly_once_across_handovers},
};

type Applied = Arc<Mutex<HashMap<Uuid, u64>>>;

/// Counts applications per event id, under the checkpoint store's lock.
struct Count(Applied);

impl MemoryProjection<LedgerEvent> for Count {
    fn apply(&mut self, context: &EventContext, _: &LedgerEvent) -> Result<(), BoxError> {
        *self
            .0
            .lock()
            .unwrap()
            .entry(context.recorded().event_id())
            .or_default() += 1;
        Ok(())
    }
}

/// A projection whose effect is not committed with its checkpoint: it
/// applies, then saves the checkpoint (fenced), so a stale holder's effect
/// happens before its save is refused.
struct Unfenced {
    store: InMemoryEventStore,
    name: SubscriptionName,
    applied: Applied,
}

impl Handler<LedgerEvent> for Unfenced {
    async fn handle(&mut self, context: &EventContext, _: &LedgerEvent) -> Result<(), BoxError> {
        *self
            .applied
            .lock()
            .unwrap()
            .entry(context.recorded().event_id())
            .or_default() += 1;
        self.store
            .checkpoints()
            .save(&self.name, context.position(), context.lease_token())
            .await?;
        Ok(())
    }
}

struct Memory {
    store: InMemoryEventStore,
    applied: Applied,
    fenced: bool,
}

impl Memory {
    fn new(fenced: bool) -> Self {
        Memory {
            store: InMemoryEventStore::new(),
            applied: Applied::default(),
            fenced,
        }
    }
}

impl Handover for Memory {
    type Store = InMemoryEventStore;

    fn store(&self) -> &InMemoryEventStore {
        &self.store
    }

    async fn start(
        &self,
        _instance: usize,
        name: &SubscriptionName,
        pace: Pace,
        page_size: usize,
    ) -> SubscriptionHandle {
        let process = self.store.clone();
        let config = SubscriptionConfig::default()
            .with_page_size(page_size)
            .with_poll_interval(Duration::from_millis(5));
        if self.fenced {
            let inner = ExactlyOnce::new(&process, name.clone(), Count(self.applied.clone()));
            let handler = Paced::new(pace, inner);
            subscribe(process.clone(), process, name.clone(), handler, config)
        } else {
            let inner = Unfenced {
                store: process.clone(),
                name: name.clone(),
                applied: self.applied.clone(),
            };
            let handler = Paced::new(pace, inner);
            subscribe(process.clone(), process, name.clone(), handler, config)
        }
    }

    async fn lose_lease(&self, name: &SubscriptionName) -> bool {
        self.store.checkpoints().expire_lease(name)
    }

    async fn applied(&self) -> HashMap<Uuid, u64> {
        self.applied.lock().unwrap().clone()
    }

    async fn checkpoint_writes(
        &self,
        name: &SubscriptionName,
    ) -> Vec<(Option<Position>, Position)> {
        self.store.checkpoints().writes(name)
    }

    async fn checkpoint(&self, name: &SubscriptionName) -> Option<Position> {
        self.store.checkpoints().load(name).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_fast_handovers_apply_every_event_once() {
    exactly_once_across_handovers(&Memory::new(true), HandoverPlan::many_fast_handovers()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_handover_applies_every_event_once() {
    exactly_once_across_handovers(&Memory::new(true), HandoverPlan::one_slow_handover()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_holder_commits_nothing() {
    exactly_once_across_handovers(&Memory::new(true), HandoverPlan::stale_holder()).await;
}

/// The scenario catches a projection whose effect is not committed with
/// its checkpoint: the stale holder applies its slow first event after the
/// new holder did.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unfenced_projection_is_caught() {
    let caught = tokio::spawn(async {
        exactly_once_across_handovers(&Memory::new(false), HandoverPlan::stale_holder()).await;
    })
    .await;
    let panic = caught.expect_err("the scenario passed an unfenced projection");
    let message = panic
        .into_panic()
        .downcast::<String>()
        .map(|m| *m)
        .unwrap_or_default();
    assert!(
        message.contains("applied more than once") || message.contains("did not move it forward"),
        "caught for another reason: {message}"
    );
}
