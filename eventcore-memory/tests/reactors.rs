//! Reactors and the outbox on the in-memory store: the kit's scenarios,
//! with the reactor's database writes applied in the step that records its
//! effects and moves its checkpoint.

use std::sync::{Arc, Mutex};

use eventcore::{BoxError, EventContext, Lane, SubscriptionName, Uuid};
use eventcore_memory::{InMemoryEventStore, MemoryProjection, Reacting};
use eventcore_testing::{
    fixtures::LedgerEvent,
    reactors::{
        ReactorFixture, Statements, a_poison_effect_parks_while_others_are_delivered,
        outbox_claims_are_fenced, reactors_act_once_across_kills,
        reactors_in_lanes_act_once_across_kills,
    },
};

type Written = Arc<Mutex<Vec<Uuid>>>;

/// The reactor's database write: the event's id, under the store's lock.
struct Write(Written);

impl MemoryProjection<LedgerEvent> for Write {
    fn apply(&mut self, context: &EventContext, _: &LedgerEvent) -> Result<(), BoxError> {
        self.0.lock().unwrap().push(context.recorded().event_id());
        Ok(())
    }
}

#[derive(Default)]
struct Memory {
    store: InMemoryEventStore,
    written: Written,
}

impl ReactorFixture for Memory {
    type Store = InMemoryEventStore;
    type Handler = Reacting<Statements<InMemoryEventStore>, Write>;

    fn store(&self) -> &InMemoryEventStore {
        &self.store
    }

    async fn process(&self, _instance: usize) -> InMemoryEventStore {
        self.store.clone()
    }

    fn reacting(
        &self,
        store: &InMemoryEventStore,
        name: &SubscriptionName,
        reactor: Statements<InMemoryEventStore>,
    ) -> Self::Handler {
        Reacting::new(store, name.clone(), reactor).with_writes(Write(self.written.clone()))
    }

    fn reacting_in_lanes(
        &self,
        store: &InMemoryEventStore,
    ) -> impl FnMut(&Lane, Statements<InMemoryEventStore>) -> Self::Handler + Send + 'static {
        let (store, written) = (store.clone(), self.written.clone());
        move |lane, reactor| {
            Reacting::in_lane(&store, lane, reactor).with_writes(Write(written.clone()))
        }
    }

    async fn lose_lease(&self, name: &SubscriptionName) -> bool {
        self.store.checkpoints().expire_lease(name)
    }

    async fn written(&self) -> Vec<Uuid> {
        self.written.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reactors_act_once_across_kills_in_memory() {
    reactors_act_once_across_kills(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_effect_parks_while_others_are_delivered_in_memory() {
    a_poison_effect_parks_while_others_are_delivered(&Memory::default()).await;
}

#[tokio::test]
async fn outbox_claims_are_fenced_in_memory() {
    outbox_claims_are_fenced(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reactors_in_lanes_act_once_across_kills_in_memory() {
    reactors_in_lanes_act_once_across_kills(&Memory::default()).await;
}
