//! Streams discovered while deciding: the queue stays deadlock-free when a
//! command's set of streams grows.

use std::{sync::Arc, time::Duration};

use eventcore::{
    Command, CommandLogic, Event, EventStore, EventStoreExt, NewEvents, Refusal, RetryPolicy,
    StreamId, StreamVersion, StreamWrites, execute_with,
};
use eventcore_memory::InMemoryEventStore;
use serde::{Deserialize, Serialize};

fn id(s: &str) -> StreamId {
    StreamId::try_new(s).unwrap()
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
enum Linked {
    /// This stream's partner.
    Partner {
        #[stream]
        stream: StreamId,
        partner: StreamId,
    },
    Touched {
        #[stream]
        stream: StreamId,
    },
}

/// Declares one stream, discovers its partner, and touches both.
#[derive(Debug, Clone, Command)]
struct TouchBoth {
    #[stream]
    start: StreamId,
}

impl CommandLogic for TouchBoth {
    type Event = Linked;
    type State = Option<StreamId>;
    type Error = Refusal;

    fn apply(&self, partner: Option<StreamId>, event: &Linked) -> Option<StreamId> {
        match event {
            Linked::Partner { stream, partner } if *stream == self.start => Some(partner.clone()),
            _ => partner,
        }
    }

    fn discover_streams(&self, partner: &Option<StreamId>) -> Vec<StreamId> {
        partner.iter().cloned().collect()
    }

    fn handle(&self, partner: &Option<StreamId>) -> Result<NewEvents<Linked>, Refusal> {
        let partner = partner.clone().ok_or_else(|| Refusal::new("no partner"))?;
        Ok(vec![
            Linked::Touched {
                stream: self.start.clone(),
            },
            Linked::Touched { stream: partner },
        ]
        .into())
    }
}

async fn link(store: &InMemoryEventStore, a: &StreamId, b: &StreamId) {
    let mut writes = StreamWrites::new();
    writes.expect(a.clone(), StreamVersion::INITIAL).unwrap();
    writes.expect(b.clone(), StreamVersion::INITIAL).unwrap();
    for (s, p) in [(a, b), (b, a)] {
        writes
            .append(&Linked::Partner {
                stream: s.clone(),
                partner: p.clone(),
            })
            .unwrap();
    }
    store.append(writes).await.unwrap();
}

/// Half the tasks start from `x` and discover `y`, half the other way
/// round, all released together with the queue on: a command that waited
/// for the queue on one stream and then needs the other must not wait on a
/// command doing the opposite. Every command lands, none hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_discovering_each_other_s_streams_never_deadlock_the_queue() {
    const TASKS: usize = 16;
    let store = InMemoryEventStore::new();
    let (x, y) = (id("x"), id("y"));
    link(&store, &x, &y).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let policy = RetryPolicy::default()
        .with_max_attempts(std::num::NonZeroU32::new(1_000).unwrap())
        .with_base_delay(Duration::from_millis(1));
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (store, barrier, policy) = (store.clone(), barrier.clone(), policy.clone());
            let start = if i % 2 == 0 { x.clone() } else { y.clone() };
            tokio::spawn(async move {
                barrier.wait().await;
                execute_with(&store, TouchBoth { start }, &policy).await
            })
        })
        .collect();
    let all = async {
        for t in tasks {
            t.await.unwrap().expect("every command lands");
        }
    };
    tokio::time::timeout(Duration::from_secs(20), all)
        .await
        .expect("no command waits forever");
    let read = store.read_streams(&[x.clone(), y.clone()]).await.unwrap();
    assert_eq!(read.version(&x), Some(StreamVersion::new(1 + TASKS as u64)));
    assert_eq!(read.version(&y), Some(StreamVersion::new(1 + TASKS as u64)));
}
