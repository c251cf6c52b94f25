//! Lanes and dead letters on the in-memory store: the kit's scenarios,
//! with the store's exactly-once projection recording what it applies.

use std::sync::{Arc, Mutex};

use eventcore::{BoxError, EventContext, Lane};
use eventcore_memory::{ExactlyOnce, InMemoryEventStore, MemoryProjection};
use eventcore_testing::{
    fixtures::LedgerEvent,
    lanes::{
        Application, LanesFixture, a_poison_event_parks_only_its_key, dead_letters_are_fenced,
        lanes_share_the_work_across_kills,
    },
};

type Applied = Arc<Mutex<Vec<Application>>>;

/// Records each application under the store's lock, in the step that
/// moves the lane's checkpoint (or its dead letter's replay mark).
struct Record {
    lane: String,
    applied: Applied,
}

impl MemoryProjection<LedgerEvent> for Record {
    fn apply(&mut self, context: &EventContext, _: &LedgerEvent) -> Result<(), BoxError> {
        self.applied.lock().unwrap().push(Application {
            event_id: context.recorded().event_id(),
            lane: self.lane.clone(),
        });
        Ok(())
    }
}

#[derive(Default)]
struct Memory {
    store: InMemoryEventStore,
    applied: Applied,
}

impl LanesFixture for Memory {
    type Store = InMemoryEventStore;
    type Projection = ExactlyOnce<Record>;

    fn store(&self) -> &InMemoryEventStore {
        &self.store
    }

    async fn process(&self, _instance: usize) -> InMemoryEventStore {
        self.store.clone()
    }

    fn projector(
        &self,
        store: &InMemoryEventStore,
    ) -> impl FnMut(&Lane) -> ExactlyOnce<Record> + Send + 'static {
        let store = store.clone();
        let applied = self.applied.clone();
        move |lane: &Lane| {
            let record = Record {
                lane: lane.name().to_string(),
                applied: applied.clone(),
            };
            ExactlyOnce::new(&store, lane.name().clone(), record)
        }
    }

    async fn applied(&self) -> Vec<Application> {
        self.applied.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lanes_share_the_work_across_kills_in_memory() {
    lanes_share_the_work_across_kills(&Memory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_parks_only_its_key_in_memory() {
    a_poison_event_parks_only_its_key(&Memory::default()).await;
}

#[tokio::test]
async fn dead_letters_are_fenced_in_memory() {
    dead_letters_are_fenced(&InMemoryEventStore::new()).await;
}
