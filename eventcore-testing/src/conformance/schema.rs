//! Scenarios for events stored in an older (or newer) shape: the schema
//! version written with each event comes back, and every read that decodes
//! (a read of streams, a command's fold, the global log, a subscription)
//! brings older events up to date through the type's upcaster without
//! touching what is stored.

use std::sync::Arc;

use eventcore::{
    BoxError, Command, CommandLogic, Event, EventLog, EventStore, EventStoreExt, ExecuteError,
    LogQuery, NewEvents, RetryPolicy, StoreError, StreamId, StreamVersion, StreamWrites,
    execute_with,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::SubscribableStore;
use crate::fixtures::stream;

/// The stored type name of every price event, whatever its version.
const PRICE_SET: &str = "PriceSet";

/// A price as the first version of an application wrote it: a float of
/// euros in `amount` (schema version 1, the default).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PriceV1 {
    item: StreamId,
    amount: f64,
}

impl Event for PriceV1 {
    fn stream_id(&self) -> &StreamId {
        &self.item
    }

    fn event_type(&self) -> &'static str {
        PRICE_SET
    }
}

/// A price as newer code than the reader's writes it (schema version 3).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PriceV3 {
    item: StreamId,
    cents: u64,
    currency: String,
}

impl Event for PriceV3 {
    fn stream_id(&self) -> &StreamId {
        &self.item
    }

    fn event_type(&self) -> &'static str {
        PRICE_SET
    }

    fn schema_version(_: &str) -> u32 {
        3
    }
}

/// The reader's events: a price in integer cents is schema version 2,
/// derived, with [`upcast_price`] reading version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Event)]
#[serde(tag = "type")]
#[event(stream = "item", upcast = upcast_price)]
enum Catalogue {
    #[serde(rename = "PriceSet")]
    #[event(version = 2)]
    Price {
        item: StreamId,
        cents: u64,
    },
    Listed {
        item: StreamId,
    },
}

/// Version 1 → 2: euros as a float become whole cents. A negative price
/// could never have been meant, and is refused.
fn upcast_price(event_type: &str, from: u32, v: Value) -> Result<Value, BoxError> {
    if event_type != PRICE_SET || from != 1 {
        return Err(format!("no upcaster for {event_type} v{from}").into());
    }
    let euros = v["amount"].as_f64().ok_or("amount is not a number")?;
    if euros < 0.0 {
        return Err(format!("a negative price ({euros})").into());
    }
    Ok(json!({
        "type": PRICE_SET,
        "item": v["item"],
        // At most a few million euros in tests: the product is exact in f64.
        "cents": (euros * 100.0).round() as u64,
    }))
}

async fn append<S: EventStore, E: Event>(store: &S, id: &StreamId, at: u64, events: &[E]) {
    let mut writes = StreamWrites::new();
    writes
        .expect(id.clone(), StreamVersion::new(at))
        .expect("register");
    for event in events {
        writes.append(event).expect("append");
    }
    store.append(writes).await.expect("stored");
}

fn v1(item: &StreamId, amount: f64) -> PriceV1 {
    PriceV1 {
        item: item.clone(),
        amount,
    }
}

fn price(item: &StreamId, cents: u64) -> Catalogue {
    Catalogue::Price {
        item: item.clone(),
        cents,
    }
}

/// Each event's schema version comes back as it was appended, on reads of
/// whole streams and of their tails: 1 for the default, the type's own
/// version otherwise, one per event even within one append.
pub async fn schema_versions_round_trip<S: EventStore + Clone + 'static>(store: &S) {
    let id = stream("schema-versions");
    append(store, &id, 0, &[v1(&id, 1.5)]).await;
    let mut writes = StreamWrites::new();
    writes
        .expect(id.clone(), StreamVersion::new(1))
        .expect("register");
    writes.append(&price(&id, 200)).expect("v2");
    writes
        .append(&PriceV3 {
            item: id.clone(),
            cents: 300,
            currency: "EUR".into(),
        })
        .expect("v3");
    writes
        .append(&Catalogue::Listed { item: id.clone() })
        .expect("v1 of another type");
    let pending: Vec<u32> = writes.events().iter().map(|e| e.schema_version()).collect();
    assert_eq!(pending, [2, 3, 1], "each event carries its type's version");
    store.append(writes).await.expect("stored");

    let read = store
        .read_streams(std::slice::from_ref(&id))
        .await
        .expect("read");
    let versions: Vec<u32> = read.events().iter().map(|e| e.schema_version()).collect();
    assert_eq!(versions, [1, 2, 3, 1]);
    let tail = store
        .read_tails(&[(id.clone(), StreamVersion::new(1))])
        .await
        .expect("tail");
    let versions: Vec<u32> = tail.events().iter().map(|e| e.schema_version()).collect();
    assert_eq!(versions, [2, 3, 1]);
}

/// An event stored at an older schema version is read through the type's
/// upcaster, next to current ones; the stored payload is the text the old
/// writer wrote, with its version, untouched.
pub async fn old_events_are_upcast_when_decoded<S: EventStore + Clone + 'static>(store: &S) {
    let id = stream("schema-upcast");
    append(store, &id, 0, &[v1(&id, 12.34), v1(&id, 0.1)]).await;
    append(store, &id, 2, &[price(&id, 500)]).await;
    let read = store
        .read_streams(std::slice::from_ref(&id))
        .await
        .expect("read");
    let decoded: Vec<Catalogue> = read
        .events()
        .iter()
        .map(|e| e.decode().expect("every version decodes"))
        .collect();
    assert_eq!(decoded, [price(&id, 1234), price(&id, 10), price(&id, 500)]);
    let first = &read.events()[0];
    assert_eq!(first.schema_version(), 1);
    assert_eq!(
        serde_json::from_str::<Value>(first.payload()).expect("json"),
        json!({"item": id.as_str(), "amount": 12.34}),
        "the stored event is never rewritten"
    );
    assert_eq!(
        first.decode::<Value>().expect("raw json"),
        json!({"item": id.as_str(), "amount": 12.34}),
        "decoding as JSON gives the payload as stored, not upcast"
    );
}

/// An event no upcaster can read is a typed error naming it, never skipped
/// nor defaulted: one written by newer code (a higher version than the
/// reader's), and an old one the upcaster refuses.
pub async fn unreadable_schema_versions_are_typed_errors<S: EventStore + Clone + 'static>(
    store: &S,
) {
    let newer = stream("schema-newer");
    append(
        store,
        &newer,
        0,
        &[PriceV3 {
            item: newer.clone(),
            cents: 1,
            currency: "EUR".into(),
        }],
    )
    .await;
    let refused = stream("schema-refused");
    append(store, &refused, 0, &[v1(&refused, -1.0)]).await;
    let read = store
        .read_streams(&[newer.clone(), refused.clone()])
        .await
        .expect("read");
    for (event, stored) in read.events().iter().zip([3, 1]) {
        match event.decode::<Catalogue>() {
            Err(StoreError::Upcast {
                stream_id,
                version,
                event_type,
                schema_version,
                current,
                ..
            }) => {
                assert_eq!(&stream_id, event.stream_id());
                assert_eq!(version, StreamVersion::new(1));
                assert_eq!(event_type, PRICE_SET);
                assert_eq!((schema_version, current), (stored, 2));
            }
            other => panic!("expected an upcast error, got {other:?}"),
        }
    }
}

/// What a [`Reprice`] sees: the item's price in cents.
#[derive(Debug, Clone, Default)]
struct Current(Option<u64>);

/// Raises an item's price by a cent amount; its fold reads every version
/// of the price.
#[derive(Debug, Clone, Command)]
struct Reprice {
    #[stream]
    item: StreamId,
    by: u64,
}

impl CommandLogic for Reprice {
    type Event = Catalogue;
    type State = Current;
    type Error = eventcore::Refusal;

    fn apply(&self, _: Current, event: &Catalogue) -> Current {
        match event {
            Catalogue::Price { cents, .. } => Current(Some(*cents)),
            Catalogue::Listed { .. } => Current(None),
        }
    }

    fn handle(&self, state: &Current) -> Result<NewEvents<Catalogue>, eventcore::Refusal> {
        let now = state.0.ok_or_else(|| eventcore::Refusal::new("no price"))?;
        Ok(vec![price(&self.item, now + self.by)].into())
    }
}

/// A command's fold reads events stored in an old shape as the current
/// one; a stream holding an event it cannot read fails the command with
/// the typed error and writes nothing.
pub async fn commands_fold_upcast_events<S: EventStore + Clone + 'static>(store: &S) {
    let id = stream("schema-command");
    append(store, &id, 0, &[v1(&id, 19.99)]).await;
    execute_with(
        store,
        Reprice {
            item: id.clone(),
            by: 1,
        },
        &RetryPolicy::default(),
    )
    .await
    .expect("the old price is read");
    let read = store
        .read_streams(std::slice::from_ref(&id))
        .await
        .expect("read");
    assert_eq!(
        read.events()[1].decode::<Catalogue>().expect("decode"),
        price(&id, 2000)
    );
    assert_eq!(read.events()[1].schema_version(), 2);

    let bad = stream("schema-command-bad");
    append(store, &bad, 0, &[v1(&bad, -5.0)]).await;
    let err = execute_with(
        store,
        Reprice {
            item: bad.clone(),
            by: 1,
        },
        &RetryPolicy::default(),
    )
    .await
    .expect_err("an unreadable event stops the command");
    assert!(
        matches!(err, ExecuteError::Store(StoreError::Upcast { .. })),
        "{err:?}"
    );
    let read = store
        .read_streams(std::slice::from_ref(&bad))
        .await
        .expect("read");
    assert_eq!(
        read.version(&bad),
        Some(StreamVersion::new(1)),
        "nothing written"
    );
}

/// The global log hands out events of every version, decoded alike.
pub async fn global_log_events_are_upcast<S: EventStore + EventLog + Clone + 'static>(store: &S) {
    let id = stream("schema-log");
    append(store, &id, 0, &[v1(&id, 2.5)]).await;
    append(store, &id, 1, &[price(&id, 300)]).await;
    super::wait_for_log(store, 2).await;
    let page = store
        .read_all(&LogQuery::from_start(10).with_stream_prefix(id.as_str()))
        .await
        .expect("read_all");
    let decoded: Vec<Catalogue> = page
        .events()
        .iter()
        .map(|(_, e)| e.decode().expect("decode"))
        .collect();
    assert_eq!(decoded, [price(&id, 250), price(&id, 300)]);
}

/// A subscription's handler receives old events in the current shape.
pub async fn subscriptions_read_upcast_events<S: SubscribableStore>(store: &S) {
    let id = stream("schema-sub");
    append(store, &id, 0, &[v1(&id, 7.0), v1(&id, 0.07)]).await;
    append(store, &id, 2, &[price(&id, 9)]).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let handler = eventcore::handler_fn(move |_, event: &Catalogue| {
        if let Catalogue::Price { cents, .. } = event {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(*cents);
        }
        async { Ok(()) }
    });
    let config = eventcore::SubscriptionConfig::default()
        .with_poll_interval(std::time::Duration::from_millis(10));
    let name = eventcore::SubscriptionName::try_new("schema-sub").expect("valid name");
    let handle = eventcore::subscribe(store.clone(), store.clone(), name, handler, config);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while seen.lock().unwrap_or_else(|p| p.into_inner()).len() < 3 {
        if handle.is_finished() {
            panic!("the subscription stopped: {:?}", handle.stop().await);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "three prices not seen in 15 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    handle.stop().await.expect("clean stop");
    assert_eq!(*seen.lock().unwrap_or_else(|p| p.into_inner()), [700, 7, 9]);
}
