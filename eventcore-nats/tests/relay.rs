//! The relay to JetStream, against real `nats-server`s: every event once,
//! in log order, while commands run; across a relay killed between publish
//! and acknowledgement, two relays publishing at once, a server killed and
//! restarted, and a server down for longer than its de-duplication window;
//! and an inbox consumer whose view equals the write side's; each on the
//! in-memory, PostgreSQL and SQLite logs.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use eventcore::{
    BoxError, EventLog, EventStore, LeaseToken, LogQuery, Position, RecordedEvent, RelayConfig,
    RelayHandle, RelaySink, RetryPolicy, StoreError, StreamVersion, StreamWrites,
    SubscriptionLeases, SubscriptionName, Uuid, execute, relay,
};
use eventcore_nats::{Inbox, JetStreamConfig, JetStreamSink, NatsError};
use eventcore_testing::fixtures::{Balances, Credit, LedgerEvent, Note, stream};
use futures_util::StreamExt;
use support::{Server, client, fresh_config, shared, sink, stored};

/// Every event of the store's log, in log order.
async fn log_of(store: &impl EventLog) -> Vec<(Position, RecordedEvent)> {
    let mut events = Vec::new();
    let mut query = LogQuery::from_start(10_000);
    loop {
        let page = store.read_all(&query).await.expect("read the log");
        if page.is_empty() {
            return events;
        }
        let last = page.events().last().map(|(p, _)| *p).expect("an event");
        events.extend(page.into_events());
        query = LogQuery::after(last, 10_000);
    }
}

/// `tasks` tasks released together, each crediting `each` times one of
/// five accounts.
fn writers<S: EventStore + Clone + Send + Sync + 'static>(
    store: &S,
    tasks: usize,
    each: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let start = Arc::new(tokio::sync::Barrier::new(tasks));
    (0..tasks)
        .map(|t| {
            let (store, start) = (store.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                for i in 0..each {
                    let account = stream(&format!("account-{}", (t + i) % 5));
                    let amount = 1 + u64::try_from(t * 7 + i % 11).unwrap();
                    execute(&store, Credit { account, amount })
                        .await
                        .expect("credit");
                }
            })
        })
        .collect()
}

async fn join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        task.await.expect("a writer");
    }
}

/// Waits until the relay knows the sink stores the log's last event.
async fn caught_up(handle: &RelayHandle, store: &impl EventLog) {
    let last = log_of(store).await.last().map(|(p, _)| *p);
    let mut position = handle.position();
    tokio::time::timeout(Duration::from_secs(60), position.wait_for(|at| *at >= last))
        .await
        .expect("the relay caught up within 60 s")
        .expect("the relay is running");
}

/// The stream holds each event of the log once, in log order, at
/// sequences 1, 2, 3…, every message decoding to the event as stored.
async fn assert_exact(url: &str, config: &JetStreamConfig, store: &impl EventLog) {
    let log = log_of(store).await;
    let messages = stored(url, &config.stream).await;
    let written: Vec<(Position, Uuid)> = log.iter().map(|(p, e)| (*p, e.event_id())).collect();
    let relayed: Vec<(Position, Uuid)> = messages
        .iter()
        .map(|(_, p, e)| (*p, e.event_id()))
        .collect();
    if written != relayed {
        let mut seen = std::collections::HashSet::new();
        let repeated = relayed.iter().filter(|(_, id)| !seen.insert(*id)).count();
        panic!(
            "the stream is not the log: {} events written, {} messages stored, {repeated} repeated",
            written.len(),
            relayed.len()
        );
    }
    for ((sequence, position, event), (n, (at, recorded))) in
        messages.iter().zip(log.iter().enumerate())
    {
        assert_eq!(*sequence, u64::try_from(n + 1).unwrap());
        assert_eq!(position, at);
        assert_eq!(
            event, recorded,
            "message {sequence} carries the event as stored"
        );
    }
}

fn quick() -> RelayConfig {
    RelayConfig::default()
        .with_batch(50)
        .with_poll_interval(Duration::from_millis(20))
        .with_retry(
            RetryPolicy::default()
                .with_base_delay(Duration::from_millis(5))
                .with_max_delay(Duration::from_millis(100)),
        )
}

fn name() -> SubscriptionName {
    SubscriptionName::try_new("jetstream-relay").unwrap()
}

fn start<S: Store>(store: &S, sink: impl RelaySink, config: RelayConfig) -> RelayHandle {
    relay(store.clone(), store.clone(), name(), sink, config)
}

async fn every_event_is_relayed_once_in_log_order_while_commands_run<S: Store>() {
    let (url, _server) = shared().await;
    let store = S::fresh().await;
    // Some history before the relay starts, more while it runs.
    join(writers(&store, 4, 25)).await;
    let config = fresh_config();
    let handle = start(&store, sink(&url, config.clone()).await, quick());
    join(writers(&store, 8, 60)).await;
    caught_up(&handle, &store).await;
    let report = handle.stop().await;
    assert_eq!(report.published, 4 * 25 + 8 * 60);
    assert_exact(&url, &config, &store).await;
}

/// Hands the `nth` publish to the real sink in a task of its own (the
/// messages are sent and stored) and never returns from it: a relay that
/// hangs between its publish and the acknowledgement, to be killed there.
struct HangAfterSend {
    inner: Arc<JetStreamSink>,
    nth: usize,
    calls: AtomicUsize,
    stored: Arc<AtomicBool>,
}

impl RelaySink for HangAfterSend {
    async fn last_relayed(&self) -> Result<Option<Position>, BoxError> {
        self.inner.last_relayed().await
    }

    async fn publish(&self, events: &[(Position, RecordedEvent)]) -> Result<(), BoxError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 != self.nth {
            return self.inner.publish(events).await;
        }
        let (inner, events, stored) = (self.inner.clone(), events.to_vec(), self.stored.clone());
        tokio::spawn(async move {
            inner.publish(&events).await.expect("the batch is stored");
            stored.store(true, Ordering::SeqCst);
        });
        std::future::pending().await
    }
}

async fn until(flag: &AtomicBool, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !flag.load(Ordering::SeqCst) {
        assert!(tokio::time::Instant::now() < deadline, "{what} within 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn a_relay_killed_between_publish_and_acknowledgement_is_resumed_exactly<S: Store>() {
    let (url, _server) = shared().await;
    let store = S::fresh().await;
    join(writers(&store, 4, 50)).await;
    let config = fresh_config();
    let stored_flag = Arc::new(AtomicBool::new(false));
    let hanging = HangAfterSend {
        inner: Arc::new(sink(&url, config.clone()).await),
        nth: 2,
        calls: AtomicUsize::new(0),
        stored: stored_flag.clone(),
    };
    let first = start(&store, hanging, quick());
    until(&stored_flag, "the second batch is stored").await;
    // Its acknowledgement never reached the relay: killed there.
    first.abort();
    // Its lease went with it.
    let writing = writers(&store, 4, 25);
    let second = start(&store, sink(&url, config.clone()).await, quick());
    join(writing).await;
    caught_up(&second, &store).await;
    second.stop().await;
    assert_exact(&url, &config, &store).await;
}

/// Leases every instance holds at once: two relays that both believe they
/// are the one.
#[derive(Clone)]
struct Everyone;

impl SubscriptionLeases for Everyone {
    type Lease = ();

    async fn try_acquire(&self, _: &SubscriptionName) -> Result<Option<()>, StoreError> {
        Ok(Some(()))
    }

    fn token(&self, (): &()) -> LeaseToken {
        LeaseToken::new(1)
    }

    async fn still_held(&self, (): &mut ()) -> Result<bool, StoreError> {
        Ok(true)
    }
}

/// Waits up to 250 ms before each publish: a relay whose view of the
/// stream goes stale for longer than the server's de-duplication window.
struct Sluggish(JetStreamSink);

impl RelaySink for Sluggish {
    async fn last_relayed(&self) -> Result<Option<Position>, BoxError> {
        self.0.last_relayed().await
    }

    async fn publish(&self, events: &[(Position, RecordedEvent)]) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=250))).await;
        self.0.publish(events).await
    }
}

async fn two_relays_publishing_at_once_neither_repeat_nor_reorder<S: Store>() {
    let (url, _server) = shared().await;
    let store = S::fresh().await;
    // The shortest window JetStream allows, shorter than the relays'
    // stalls: the server's de-duplication cannot keep a stale relay's
    // batch out, only the sequence fence can.
    let config = fresh_config().with_duplicate_window(Duration::from_millis(100));
    let small = quick().with_batch(7);
    let relays: Vec<RelayHandle> = futures_util::future::join_all((0..2).map(|_| {
        let (store, url, config, small) =
            (store.clone(), url.clone(), config.clone(), small.clone());
        async move {
            let sink = Sluggish(sink(&url, config).await);
            relay(store, Everyone, name(), sink, small)
        }
    }))
    .await;
    join(writers(&store, 8, 20)).await;
    for handle in &relays {
        caught_up(handle, &store).await;
    }
    let mut refused = 0;
    for handle in relays {
        refused += handle.stop().await.failures;
    }
    assert_exact(&url, &config, &store).await;
    // The fence was tested, not idle: publishes were refused.
    assert!(refused > 0, "the two relays never raced");
}

/// Appends `count` notes to stream `name`, a thousand per append.
async fn backlog<S: EventStore>(store: &S, name: &str, count: u64) {
    let notes = stream(name);
    for first in (0..count).step_by(1_000) {
        let mut writes = StreamWrites::new();
        writes
            .expect(notes.clone(), StreamVersion::new(first))
            .expect("expect");
        for n in first..(first + 1_000).min(count) {
            writes.append(&Note::new(&notes, n)).expect("append");
        }
        store.append(writes).await.expect("the backlog");
    }
}

async fn a_jetstream_killed_and_restarted_loses_and_repeats_nothing<S: Store>() {
    let mut server = Server::start().await;
    let url = server.url();
    let store = S::fresh().await;
    // A backlog in small batches, so the relay is mid-stream when the
    // server dies: its batch in flight is lost with it.
    backlog(&store, "backlog", 20_000).await;
    let kill_at = log_of(&store).await[2_000].0;
    let config = fresh_config();
    let handle = start(&store, sink(&url, config.clone()).await, quick());
    let writing = writers(&store, 4, 100);
    let mut position = handle.position();
    tokio::time::timeout(
        Duration::from_secs(30),
        position.wait_for(|at| *at >= Some(kill_at)),
    )
    .await
    .expect("relaying began")
    .expect("running");
    server.kill().await;
    // Where the relay had got when the server died: short of the backlog's
    // end, so the outage fell in the middle of its work. (Whether it also
    // counts a failure depends on timing: the client holds publishes made
    // while it reconnects and sends them to the restarted server.)
    let at_kill = *handle.position().borrow();
    let backlog_end = log_of(&store).await[19_999].0;
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.restart().await;
    join(writing).await;
    caught_up(&handle, &store).await;
    handle.stop().await;
    assert!(
        at_kill < Some(backlog_end),
        "the relay had finished the backlog before the server died"
    );
    assert_exact(&url, &config, &store).await;
}

async fn a_jetstream_down_longer_than_its_duplicate_window_repeats_nothing<S: Store>() {
    let mut server = Server::start().await;
    let url = server.url();
    let store = S::fresh().await;
    join(writers(&store, 4, 50)).await;
    let window = Duration::from_millis(500);
    let config = fresh_config().with_duplicate_window(window);
    let stored_flag = Arc::new(AtomicBool::new(false));
    let hanging = HangAfterSend {
        inner: Arc::new(sink(&url, config.clone()).await),
        nth: 3,
        calls: AtomicUsize::new(0),
        stored: stored_flag.clone(),
    };
    let first = start(&store, hanging, quick());
    until(&stored_flag, "the third batch is stored").await;
    server.kill().await;
    first.abort();
    // Its lease went with it.
    // Down for three windows: the server's de-duplication forgets the batch.
    tokio::time::sleep(window * 3).await;
    server.restart().await;
    let second = start(&store, sink(&url, config.clone()).await, quick());
    caught_up(&second, &store).await;
    second.stop().await;
    assert_exact(&url, &config, &store).await;
    // The window had really passed: the hung batch's last event, sent
    // again without the relay's fence, is stored a second time.
    let hung = stored(&url, &config.stream).await;
    let (_, last, event) = hung.get(3 * 50 - 1).cloned().expect("the hung batch");
    let context = async_nats::jetstream::new(client(&url).await);
    let ack = context
        .publish_with_headers(
            eventcore_nats::subject(&config.prefix, &event),
            eventcore_nats::headers(last, &event),
            event.payload().to_owned().into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    assert!(
        !ack.duplicate,
        "JetStream still de-duplicated after the window"
    );
}

async fn an_inbox_consumer_applies_each_message_once_and_matches_the_write_side<S: Store>() {
    let (url, _server) = shared().await;
    let store = S::fresh().await;
    let config = fresh_config();
    let handle = start(&store, sink(&url, config.clone()).await, quick());
    join(writers(&store, 6, 40)).await;
    caught_up(&handle, &store).await;
    handle.stop().await;
    let mut written = Balances::default();
    for (_, event) in log_of(&store).await {
        written.apply(&event.decode::<LedgerEvent>().expect("a ledger event"));
    }
    let stream = async_nats::jetstream::new(client(&url).await)
        .get_stream(&config.stream)
        .await
        .expect("the stream");
    // The consumer dies after 100 messages and restarts from the start of
    // the stream, as a consumer whose acknowledgements were lost would be
    // redelivered everything: the inbox keeps the view exact.
    let mut view = Balances::default();
    let mut inbox = Inbox::default();
    let mut repeats = 0;
    for stop_after in [Some(100_u64), None] {
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await
            .expect("an ordered consumer");
        let mut messages = consumer.messages().await.expect("messages");
        let last = stored(&url, &config.stream).await.len() as u64;
        while inbox.applied() < stop_after.unwrap_or(last).min(last) {
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .expect("a message within 10 s")
                .expect("the consumer goes on")
                .expect("a message");
            match inbox.accept(&message).expect("in order") {
                Some(delivery) => {
                    view.apply(
                        &delivery
                            .event
                            .decode::<LedgerEvent>()
                            .expect("a ledger event"),
                    );
                    inbox.mark(delivery.sequence);
                }
                None => repeats += 1,
            }
        }
    }
    assert_eq!(
        repeats, 100,
        "the restarted consumer was handed the first 100 again"
    );
    assert_eq!(view, written);
}

#[tokio::test]
async fn a_stream_that_does_not_take_the_relays_subjects_is_refused() {
    let (url, _server) = shared().await;
    let config = fresh_config();
    let context = async_nats::jetstream::new(client(&url).await);
    context
        .create_stream(async_nats::jetstream::stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.other", config.prefix)],
            ..Default::default()
        })
        .await
        .expect("a stream of someone else's");
    let error = JetStreamSink::new(client(&url).await, config)
        .await
        .unwrap_err();
    assert!(matches!(error, NatsError::Subjects { .. }), "{error}");
}

#[tokio::test]
async fn a_stream_whose_last_message_is_not_an_event_is_refused_before_anything_is_published() {
    let (url, _server) = shared().await;
    let config = fresh_config();
    let sink = sink(&url, config.clone()).await;
    let context = async_nats::jetstream::new(client(&url).await);
    context
        .publish(format!("{}.stray", config.prefix), "hello".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let error = sink.last_relayed().await.unwrap_err();
    let error = error.downcast::<NatsError>().expect("a NatsError");
    assert!(
        matches!(*error, NatsError::Foreign { sequence: 1, .. }),
        "{error}"
    );
    assert_eq!(stored_count(&url, &config.stream).await, 1);
}

async fn stored_count(url: &str, stream: &str) -> u64 {
    async_nats::jetstream::new(client(url).await)
        .get_stream(stream)
        .await
        .expect("the stream")
        .info()
        .await
        .expect("info")
        .state
        .messages
}

#[test]
fn names_jetstream_would_refuse_are_refused_with_the_reason() {
    for (stream, prefix) in [
        ("", "p"),
        ("a.b", "p"),
        ("ok", ""),
        ("ok", "a.*"),
        ("ok", "a..b"),
        ("ok", "a b"),
    ] {
        let error = JetStreamConfig::new(stream, prefix).unwrap_err();
        assert!(matches!(error, NatsError::Config { .. }), "{error}");
    }
    assert!(JetStreamConfig::new("EVENTS", "shop.events").is_ok());
}

async fn an_event_jetstream_refuses_halts_the_relay_before_it_and_nothing_after_it_is_stored<
    S: Store,
>() {
    let (url, _server) = shared().await;
    let config = fresh_config();
    // A stream that refuses messages over 1,000 bytes: the relay's batch
    // holds one, with small ones after it that JetStream would take.
    async_nats::jetstream::new(client(&url).await)
        .create_stream(async_nats::jetstream::stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.>", config.prefix)],
            max_message_size: 1_000,
            ..Default::default()
        })
        .await
        .expect("the stream");
    let store = S::fresh().await;
    let notes = stream("notes");
    let mut writes = StreamWrites::new();
    writes
        .expect(notes.clone(), StreamVersion::INITIAL)
        .expect("expect");
    for n in 0..10 {
        let mut note = Note::new(&notes, n);
        if n == 4 {
            note.text = "x".repeat(2_000);
        }
        writes.append(&note).expect("append");
    }
    store.append(writes).await.expect("the notes");
    let handle = start(&store, sink(&url, config.clone()).await, quick());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stored_count(&url, &config.stream).await < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first four within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Time for several retries of the refused batch.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = handle.stop().await;
    assert!(report.failures >= 2, "the refused event was retried");
    let kept: Vec<u64> = stored(&url, &config.stream)
        .await
        .iter()
        .map(|(_, _, e)| e.decode::<Note>().expect("a note").n)
        .collect();
    assert_eq!(kept, vec![0, 1, 2, 3], "nothing after the refused event");
}

/// The stores a relay reads the log of.
trait Store:
    EventStore + EventLog + eventcore::SubscriptionLeases + Clone + Send + Sync + 'static
{
    async fn fresh() -> Self;
}

impl Store for eventcore_memory::InMemoryEventStore {
    async fn fresh() -> Self {
        Self::new()
    }
}

impl Store for eventcore_postgres::PostgresEventStore {
    async fn fresh() -> Self {
        let url = std::env::var("DATABASE_URL").expect("DATABASE_URL: run ./scripts/test");
        let schema = eventcore_postgres::SchemaName::try_new(support::unique("relay_"))
            .expect("a schema name");
        let config = eventcore_postgres::PostgresConfig::default().schema(schema);
        let store = Self::connect_with(&url, config).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
    }
}

impl Store for eventcore_sqlite::SqliteEventStore {
    async fn fresh() -> Self {
        let dir =
            std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("eventcore-nats-tests");
        std::fs::create_dir_all(&dir).expect("a folder");
        let path = dir.join(format!("{}.db", support::unique("log")));
        Self::open(path, eventcore_sqlite::SqliteConfig::default())
            .await
            .expect("open")
    }
}

/// Each scenario on the in-memory, PostgreSQL and SQLite logs.
macro_rules! on_every_store {
    ($($scenario:ident),+ $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $scenario() {
                super::$scenario::<eventcore_memory::InMemoryEventStore>().await;
            })+
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $scenario() {
                super::$scenario::<eventcore_postgres::PostgresEventStore>().await;
            })+
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $scenario() {
                super::$scenario::<eventcore_sqlite::SqliteEventStore>().await;
            })+
        }
    };
}

on_every_store!(
    every_event_is_relayed_once_in_log_order_while_commands_run,
    a_relay_killed_between_publish_and_acknowledgement_is_resumed_exactly,
    two_relays_publishing_at_once_neither_repeat_nor_reorder,
    a_jetstream_killed_and_restarted_loses_and_repeats_nothing,
    a_jetstream_down_longer_than_its_duplicate_window_repeats_nothing,
    an_inbox_consumer_applies_each_message_once_and_matches_the_write_side,
    an_event_jetstream_refuses_halts_the_relay_before_it_and_nothing_after_it_is_stored
);

/// The client lends a permit per publish until its acknowledgement is
/// awaited (5,000 by default): a batch larger than that must still go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_larger_than_the_clients_window_of_acknowledgements_is_published() {
    let (url, _server) = shared().await;
    let store = eventcore_memory::InMemoryEventStore::new();
    let notes = stream("many");
    let mut writes = StreamWrites::new();
    writes
        .expect(notes.clone(), StreamVersion::INITIAL)
        .expect("expect");
    for n in 0..6_500 {
        writes.append(&Note::new(&notes, n)).expect("append");
    }
    store.append(writes).await.expect("the notes");
    let config = fresh_config();
    let handle = start(
        &store,
        sink(&url, config.clone()).await,
        quick().with_batch(6_500),
    );
    caught_up(&handle, &store).await;
    handle.stop().await;
    assert_exact(&url, &config, &store).await;
}
