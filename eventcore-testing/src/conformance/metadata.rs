//! Scenarios for event metadata: ids, times, correlation and causation,
//! key/values.

use std::time::{Duration, SystemTime};

use eventcore::{
    CausationId, CorrelationId, EventLog, EventStore, EventStoreExt, ExecuteError, ExecuteOptions,
    LogQuery, Metadata, RecordedEvent, StoreError, StreamId, StreamVersion, StreamWrites,
    execute_with,
};
use serde_json::json;

use super::SubscribableStore;
use crate::fixtures::{Credit, LedgerEvent, Move, Note, stream};

fn id<T: TryFrom<String>>(text: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(text.to_owned()).expect("valid id")
}

/// Key/values of every JSON kind, nested; numbers that every store keeps
/// exactly (integers at the ends of `i64` and `u64`, a binary fraction).
fn rich_values() -> Metadata {
    Metadata::new()
        .with_value("user", "alice ü \"quoted\" \\ 😀")
        .with_value(
            "nested",
            json!({
                "roles": ["admin", "auditor"],
                "limits": {"max": u64::MAX, "min": i64::MIN, "ratio": 0.5},
                "active": true,
                "note": null,
                "empty": {}
            }),
        )
}

/// The events of `ids` as read back.
async fn read<S: EventStore>(store: &S, ids: &[StreamId]) -> Vec<RecordedEvent> {
    store
        .read_streams(ids)
        .await
        .expect("read")
        .events()
        .to_vec()
}

/// What was appended comes back on every read: the event id made when the
/// event was added (a UUIDv7, distinct per event), the write's metadata or
/// the event's own (merged with the write's), key/values of every JSON
/// kind exactly; one recorded time per append, from the store's clock.
/// The same through stream reads, tail reads and the global log. An event
/// appended without metadata has none.
pub async fn metadata_round_trips_exactly<S: EventStore + EventLog + Clone + 'static>(store: &S) {
    let a = stream("meta-a");
    let shared = rich_values()
        .with_correlation_id(id::<CorrelationId>("corr ü-1"))
        .with_causation_id(id::<CausationId>("cmd-7"));
    let own = Metadata::new()
        .with_causation_id(id::<CausationId>("evt-x"))
        .with_value("user", "bob");
    let mut writes = StreamWrites::new();
    writes
        .expect(a.clone(), StreamVersion::INITIAL)
        .expect("register");
    writes.set_metadata(shared.clone()).expect("metadata");
    writes.append(&Note::new(&a, 1)).expect("note 1");
    writes
        .append_with_metadata(&Note::new(&a, 2), own)
        .expect("note 2");
    let pending: Vec<_> = writes.events().to_vec();
    let before = SystemTime::now();
    store.append(writes).await.expect("append");
    let after = SystemTime::now();

    let merged = rich_values()
        .with_value("user", "bob")
        .with_correlation_id(id::<CorrelationId>("corr ü-1"))
        .with_causation_id(id::<CausationId>("evt-x"));
    let events = read(store, std::slice::from_ref(&a)).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].metadata(), &shared, "the write's metadata");
    assert_eq!(
        events[1].metadata(),
        &merged,
        "the event's own metadata, the rest from the write's"
    );
    for (recorded, pending) in events.iter().zip(&pending) {
        assert_eq!(recorded.event_id(), pending.event_id(), "the appended id");
        assert_eq!(recorded.event_id().get_version_num(), 7, "a UUIDv7");
    }
    assert_ne!(events[0].event_id(), events[1].event_id());
    assert_eq!(
        events[0].recorded_at(),
        events[1].recorded_at(),
        "one time per append"
    );
    // The store's clock, not the client's: allow for a server whose clock
    // differs a little.
    let slack = Duration::from_secs(60);
    assert!(
        events[0].recorded_at() + slack >= before && events[0].recorded_at() <= after + slack,
        "recorded at the append: {:?} not within a minute of {before:?}..{after:?}",
        events[0].recorded_at()
    );

    let tail = store
        .read_tails(&[(a.clone(), StreamVersion::new(1))])
        .await
        .expect("tail read");
    assert_eq!(tail.events(), &events[1..], "a tail read returns the same");

    let query = LogQuery::from_start(100).with_stream_prefix("meta-a");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let logged = loop {
        let page = store.read_all(&query).await.expect("read_all");
        if page.len() >= 2 || tokio::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let logged: Vec<RecordedEvent> = logged.into_iter().map(|(_, e)| e).collect();
    assert_eq!(logged, events, "the global log returns the same");

    let b = stream("meta-b");
    let mut plain = StreamWrites::new();
    plain
        .expect(b.clone(), StreamVersion::INITIAL)
        .expect("register");
    plain.append(&Note::new(&b, 1)).expect("note");
    store.append(plain).await.expect("append");
    let events = read(store, &[b]).await;
    assert!(events[0].metadata().is_empty(), "no metadata was given");
}

/// `execute` stamps every event of one command with one correlation id,
/// made up per call when the options hold none; a caller's metadata is
/// stored as given.
pub async fn execute_gives_a_command_one_correlation_id<S: EventStore + Clone + 'static>(
    store: &S,
) {
    let (from, to) = (stream("meta-from"), stream("meta-to"));
    let credit = Credit {
        account: from.clone(),
        amount: 100,
    };
    execute_with(store, credit, ExecuteOptions::new())
        .await
        .expect("credit");
    let pay = |amount| Move {
        from: from.clone(),
        to: to.clone(),
        amount,
    };
    execute_with(store, pay(10), ExecuteOptions::new())
        .await
        .expect("first move");
    execute_with(store, pay(20), ExecuteOptions::new())
        .await
        .expect("second move");
    let given = Metadata::new()
        .with_correlation_id(id::<CorrelationId>("request-42"))
        .with_value("user", "carol");
    execute_with(
        store,
        pay(30),
        ExecuteOptions::new().with_metadata(given.clone()),
    )
    .await
    .expect("third move");

    let events = read(store, &[from.clone(), to.clone()]).await;
    let of_move = |amount: u64| -> Vec<&RecordedEvent> {
        events
            .iter()
            .filter(|e| match e.decode::<LedgerEvent>().expect("decode") {
                LedgerEvent::Debited { amount: a, .. } => a == amount,
                LedgerEvent::Credited {
                    amount: a, from, ..
                } => a == amount && from.is_some(),
            })
            .collect()
    };
    let correlation = |e: &RecordedEvent| e.metadata().correlation_id().cloned();
    let (first, second, third) = (of_move(10), of_move(20), of_move(30));
    assert_eq!(first.len(), 2);
    assert!(correlation(first[0]).is_some(), "a correlation id was made");
    assert_eq!(
        correlation(first[0]),
        correlation(first[1]),
        "one per command"
    );
    assert_eq!(correlation(second[0]), correlation(second[1]));
    assert_ne!(
        correlation(first[0]),
        correlation(second[0]),
        "another per command"
    );
    for event in third {
        assert_eq!(event.metadata(), &given, "the caller's metadata, as given");
    }
}

/// Metadata that no store can keep (U+0000 in a key or string value) is
/// refused with a typed error, by the write and by `execute`, and nothing
/// is written.
pub async fn unstorable_metadata_is_refused<S: EventStore + Clone + 'static>(store: &S) {
    let a = stream("meta-nul");
    let bad = Metadata::new().with_value("user", "a\u{0}b");
    let mut writes = StreamWrites::new();
    writes
        .expect(a.clone(), StreamVersion::INITIAL)
        .expect("register");
    assert!(matches!(
        writes.set_metadata(bad.clone()),
        Err(StoreError::InvalidMetadata { .. })
    ));
    assert!(matches!(
        writes.append_with_metadata(&Note::new(&a, 1), Metadata::new().with_value("k\u{0}", 1)),
        Err(StoreError::InvalidMetadata { .. })
    ));
    assert!(writes.is_empty(), "the write is unchanged");
    let credit = Credit {
        account: a.clone(),
        amount: 5,
    };
    let err = execute_with(store, credit, ExecuteOptions::new().with_metadata(bad))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, ExecuteError::Store(StoreError::InvalidMetadata { .. })),
        "{err:?}"
    );
    assert!(read(store, &[a]).await.is_empty(), "nothing was written");
}

/// A subscription handler that issues a command because of an event
/// passes the event on in one call; the command's events carry the
/// trigger's correlation id and the trigger's id as causation id.
pub async fn follow_up_commands_carry_the_trigger_s_ids<S>(store: &S)
where
    S: SubscribableStore,
{
    let trigger = stream("meta-trigger");
    let follow = stream("meta-follow");
    let mut writes = StreamWrites::new();
    writes
        .expect(trigger.clone(), StreamVersion::INITIAL)
        .expect("register");
    writes
        .set_metadata(Metadata::new().with_correlation_id(id::<CorrelationId>("saga-9")))
        .expect("metadata");
    writes.append(&Note::new(&trigger, 1)).expect("note");
    store.append(writes).await.expect("trigger");

    let handler_store = store.clone();
    let account = follow.clone();
    let handler = eventcore::handler_fn(move |context: &eventcore::EventContext, _: &Note| {
        let store = handler_store.clone();
        let options = ExecuteOptions::new().caused_by(context.recorded());
        let credit = Credit {
            account: account.clone(),
            amount: 1,
        };
        async move {
            execute_with(&store, credit, options).await?;
            Ok(())
        }
    });
    let config = eventcore::SubscriptionConfig::default()
        .with_filter(LogQuery::from_start(0).with_stream_prefix("meta-trigger"))
        .with_poll_interval(Duration::from_millis(10));
    let name = eventcore::SubscriptionName::try_new("follow-up").expect("valid name");
    let handle = eventcore::subscribe(store.clone(), store.clone(), name, handler, config);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let followed = loop {
        let events = read(store, std::slice::from_ref(&follow)).await;
        if !events.is_empty() {
            break events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no follow-up within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    handle.stop().await.expect("clean stop");
    let trigger_event = read(store, &[trigger]).await.remove(0);
    let metadata = followed[0].metadata();
    assert_eq!(
        metadata.correlation_id().map(CorrelationId::as_str),
        Some("saga-9"),
        "the trigger's correlation id"
    );
    assert_eq!(
        metadata.causation_id().map(CausationId::as_str),
        Some(trigger_event.event_id().to_string().as_str()),
        "the trigger's id as causation id"
    );
}
