//! The spans and events `execute` and subscriptions emit, captured by
//! `eventcore_testing::trace::Capture` and checked field by field.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use eventcore::{
    AppendOutcome, EventStore, ReadAnswer, ReadRequest, RetryPolicy, StoreError, StoreIdentity,
    StreamWrites, SubscriptionConfig, SubscriptionName, execute, execute_with, handler_fn,
    subscribe,
};
use eventcore_memory::InMemoryEventStore;
use eventcore_testing::{
    fixtures::{Credit, LedgerEvent, Move, stream},
    trace::Capture,
};

/// A store whose first append conflicts without writing.
#[derive(Clone, Default)]
struct ConflictsOnce {
    inner: InMemoryEventStore,
    done: Arc<AtomicBool>,
}

impl EventStore for ConflictsOnce {
    async fn read(&self, request: ReadRequest) -> Result<ReadAnswer, StoreError> {
        self.inner.read(request).await
    }

    fn identity(&self) -> &StoreIdentity {
        self.inner.identity()
    }

    async fn append(&self, writes: StreamWrites) -> Result<AppendOutcome, StoreError> {
        if !self.done.swap(true, Ordering::SeqCst) {
            let (stream_id, expected) = writes.expected_versions()[0].clone();
            return Err(StoreError::VersionConflict {
                stream_id,
                expected,
                actual: expected,
            });
        }
        self.inner.append(writes).await
    }
}

#[tokio::test]
async fn execute_is_a_span_with_its_command_streams_attempts_and_outcome() {
    let capture = Capture::default();
    let _guard = capture.install();
    let store = ConflictsOnce::default();
    let fast = RetryPolicy::default().with_base_delay(Duration::from_millis(1));
    execute_with(
        &store,
        Credit {
            account: stream("traced"),
            amount: 3,
        },
        &fast,
    )
    .await
    .unwrap();

    let spans = capture.spans("eventcore.execute");
    assert_eq!(spans.len(), 1);
    let run = &spans[0].fields;
    assert!(run["command"].ends_with("Credit"), "{run:?}");
    assert!(run["streams"].contains("traced"), "{run:?}");
    assert_eq!(run["attempts"], "2");
    assert_eq!(run["conflicts"], "1");
    assert_eq!(run["events_written"], "1");
    assert_eq!(run["outcome"], "applied");

    let reads = capture.spans("eventcore.read");
    assert_eq!(reads.len(), 2, "one read per attempt");
    assert!(
        reads
            .iter()
            .all(|r| r.parent.as_deref() == Some("eventcore.execute"))
    );
    assert!(reads.iter().all(|r| r.fields.contains_key("elapsed_us")));
    assert_eq!(reads[0].fields["events"], "0");
    let appends = capture.spans("eventcore.append");
    assert_eq!(appends.len(), 2, "one append per attempt");
    assert_eq!(appends[0].fields["events"], "1");
    assert!(appends[0].fields["error"].contains("traced"), "{appends:?}");
    assert!(!appends[1].fields.contains_key("error"));
    let retries = capture.events("attempt failed; retrying");
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].parent.as_deref(), Some("eventcore.execute"));
    assert_eq!(retries[0].fields["attempt"], "1");
}

#[tokio::test]
async fn a_refusal_is_the_rejected_outcome_with_its_error() {
    let capture = Capture::default();
    let _guard = capture.install();
    let store = InMemoryEventStore::new();
    let refused = execute(
        &store,
        Move {
            from: stream("empty"),
            to: stream("other"),
            amount: 5,
        },
    )
    .await;
    assert!(refused.is_err());
    let spans = capture.spans("eventcore.execute");
    let run = &spans[0].fields;
    assert_eq!(run["outcome"], "rejected");
    assert!(run["error"].contains("cannot move 5"), "{run:?}");
    assert!(capture.spans("eventcore.append").is_empty());
}

#[tokio::test]
async fn a_subscription_is_a_span_with_its_lease_and_pages() {
    let capture = Capture::default();
    let _guard = capture.install();
    let store = InMemoryEventStore::new();
    for n in 0..3 {
        execute(
            &store,
            Credit {
                account: stream(&format!("sub-{n}")),
                amount: 1,
            },
        )
        .await
        .unwrap();
    }
    let handled = Arc::new(Mutex::new(0));
    let counter = handled.clone();
    let handle = subscribe(
        store.clone(),
        store.clone(),
        SubscriptionName::try_new("traced").unwrap(),
        handler_fn(move |_: &eventcore::EventContext, _: &LedgerEvent| {
            *counter.lock().unwrap() += 1;
            async { Ok(()) }
        }),
        SubscriptionConfig::default().with_poll_interval(Duration::from_millis(5)),
    );
    while *handled.lock().unwrap() < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handle.stop().await.unwrap();

    let spans = capture.spans("eventcore.subscription");
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].fields["name"], "traced");
    let taken = capture.events("lease taken");
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].parent.as_deref(), Some("eventcore.subscription"));
    let pages = capture.events("page read");
    let read: u64 = pages
        .iter()
        .map(|p| p.fields["events"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(read, 3, "{pages:?}");
    assert!(pages.iter().all(|p| p.fields.contains_key("lag_ms")));
}
