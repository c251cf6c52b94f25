//! What the service sends out: a statement for every large withdrawal to
//! a loopback HTTP endpoint that refuses or loses the first answer to
//! each, across a restart of the service, seen once per withdrawal by the
//! endpoint; and the events relayed to JetStream, from which the feed's
//! balances, resumed from their saved state, equal the write side's.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use eventcore::{EventStore, EventStoreExt, StreamId};
use eventcore_examples::{
    bank::domain::{Account, BankEvent},
    feed::{FeedState, follow},
    service::{Backend, Endpoint, Outputs, StatementsTo},
};
use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};
use eventcore_nats::{JetStreamConfig, JetStreamSink};
use serde_json::{Value, json};

use crate::client::{Service, postgres_store};

/// What the statements endpoint saw.
#[derive(Debug, Default)]
struct Seen {
    /// Every request's idempotency key, in order.
    attempts: Vec<String>,
    /// The statement applied for each key, once.
    applied: HashMap<String, Value>,
}

/// A statements endpoint that drops repeats by `Idempotency-Key`, and
/// answers the first request for each key badly: half are refused (503,
/// nothing applied), half applied and then answered 500, as a reply lost
/// after the work was done.
async fn endpoint() -> (SocketAddr, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = Router::new()
        .route(
            "/statements",
            post(
                |State(seen): State<Arc<Mutex<Seen>>>, headers: HeaderMap, body: String| async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let mut seen = seen.lock().unwrap();
                    seen.attempts.push(key.clone());
                    let first = seen.attempts.iter().filter(|k| **k == key).count() == 1;
                    let refuse = key.bytes().map(u32::from).sum::<u32>() % 2 == 0;
                    if first && refuse {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let statement: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    seen.applied.entry(key).or_insert(statement);
                    if first {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::OK
                    }
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

fn statements_to(addr: SocketAddr) -> Outputs {
    Outputs {
        statements: Some(StatementsTo {
            endpoint: format!("http://{addr}/statements")
                .parse::<Endpoint>()
                .unwrap(),
            threshold_cents: 100_000,
        }),
        jetstream: None,
    }
}

const ACCOUNTS: [&str; 4] = ["st-1", "st-2", "st-3", "st-4"];

/// `clients` clients released together, each making ten withdrawals,
/// every other one of $1,500 (a statement), the rest of $20.
async fn withdraw(service: &Service, clients: usize) {
    let start = Arc::new(tokio::sync::Barrier::new(clients));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (addr, start) = (service.addr, start.clone());
            tokio::spawn(async move {
                start.wait().await;
                for i in 0..10 {
                    let amount = if i % 2 == 0 { "1500.00" } else { "20.00" };
                    let account = ACCOUNTS[(c + i) % ACCOUNTS.len()];
                    let body = json!({"type": "Withdraw", "amount": amount}).to_string();
                    let r = crate::client::send(
                        addr,
                        "POST",
                        &format!("/accounts/{account}"),
                        &[],
                        Some(&body),
                    )
                    .await
                    .expect("withdraw");
                    assert_eq!(r.status, 200, "{}", r.text);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a client");
    }
}

/// The event ids of every withdrawal of at least $1,000.
async fn large_withdrawals<S: EventStore>(store: &S) -> Vec<String> {
    let ids: Vec<StreamId> = ACCOUNTS
        .iter()
        .map(|a| StreamId::try_new(*a).unwrap())
        .collect();
    let read = store.read_streams(&ids).await.expect("read");
    read.into_parts()
        .1
        .iter()
        .filter(|e| {
            matches!(e.decode::<BankEvent>(), Ok(BankEvent::Withdrawn { amount, .. }) if amount.into_inner() >= 100_000)
        })
        .map(|e| e.event_id().to_string())
        .collect()
}

async fn statements_reach_the_endpoint_once<S: EventStore>(backend: Backend, store: S) {
    let (addr, seen) = endpoint().await;
    let service =
        Service::start_with_outputs(backend.clone(), Default::default(), statements_to(addr)).await;
    for account in ACCOUNTS {
        let body = json!({"type": "OpenAccount", "owner": account, "initial_balance": 1_000_000.0});
        let r = service
            .send(
                "POST",
                &format!("/accounts/{account}"),
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    withdraw(&service, 8).await;
    // Stopped with statements recorded and not all delivered; the next
    // instance's reactor and dispatcher go on from there.
    service.stop().await;
    let service =
        Service::start_with_outputs(backend, Default::default(), statements_to(addr)).await;
    withdraw(&service, 8).await;
    let expected = large_withdrawals(&store).await;
    assert_eq!(expected.len(), 80, "16 clients, 5 large withdrawals each");
    // Every first answer fails, so a statement is done once the endpoint
    // has answered it a second time (its 200).
    let answered_twice = |seen: &Seen| {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for key in &seen.attempts {
            *counts.entry(key.as_str()).or_default() += 1;
        }
        counts.values().filter(|n| **n >= 2).count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while answered_twice(&seen.lock().unwrap()) < expected.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "every statement within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service.stop().await;
    let seen = seen.lock().unwrap();
    let mut applied: Vec<String> = seen
        .applied
        .values()
        .map(|s| s["event_id"].as_str().expect("an event id").to_owned())
        .collect();
    applied.sort();
    let mut expected = expected;
    expected.sort();
    // Half the statements were applied at their first attempt and sent
    // again after its lost answer: the key kept them to one.
    assert_eq!(
        applied, expected,
        "one statement per large withdrawal, no other"
    );
    assert_eq!(seen.applied.len(), expected.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statements_reach_the_endpoint_once_per_large_withdrawal_in_memory() {
    let store = InMemoryEventStore::new();
    let backend = Backend::Memory(store.clone(), InMemoryCheckpointStore::new());
    statements_reach_the_endpoint_once(backend, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statements_reach_the_endpoint_once_per_large_withdrawal_on_postgres() {
    let store = postgres_store().await;
    statements_reach_the_endpoint_once(Backend::Postgres(store.clone()), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statements_reach_the_endpoint_once_per_large_withdrawal_on_sqlite() {
    let path = std::env::temp_dir().join(format!(
        "eventcore-statements-{}-{}.db",
        std::process::id(),
        fastrand::u32(..)
    ));
    let store =
        eventcore_sqlite::SqliteEventStore::open(&path, eventcore_sqlite::SqliteConfig::default())
            .await
            .expect("open");
    statements_reach_the_endpoint_once(Backend::Sqlite(store.clone()), store).await;
}

/// The NATS server of `NATS_URL` (`./scripts/test` starts one), or one of
/// the test's own, killed when the returned child drops.
async fn nats() -> (String, Option<tokio::process::Child>) {
    if let Ok(url) = std::env::var("NATS_URL")
        && !url.is_empty()
    {
        return (url, None);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("eventcore-feed-js-{}-{port}", std::process::id()));
    let binary = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".to_owned());
    let child = tokio::process::Command::new(&binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {binary:?} ({e}): apt-get install nats-server, or ./scripts/test")
        });
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (format!("nats://127.0.0.1:{port}"), Some(child))
}

/// Stops following at the first quiet moment.
fn until_idle(
    _: &FeedState,
    _: u64,
) -> Result<std::ops::ControlFlow<()>, eventcore_examples::feed::FeedError> {
    Ok(std::ops::ControlFlow::Break(()))
}

/// Every account's balance on the write side, in cents.
async fn write_side<S: EventStore>(store: &S, accounts: &[String]) -> BTreeMap<String, i128> {
    let mut balances = BTreeMap::new();
    for account in accounts {
        let id = StreamId::try_new(account.as_str()).unwrap();
        let read = store
            .read_streams(std::slice::from_ref(&id))
            .await
            .expect("read");
        let events: Vec<BankEvent> = read
            .into_parts()
            .1
            .iter()
            .map(|e| e.decode().expect("a bank event"))
            .collect();
        balances.insert(account.clone(), Account::from_events(&events).balance);
    }
    balances
}

/// Eight clients released together, each making six deposits,
/// withdrawals and transfers among `accounts`.
async fn eight_clients_write(addr: SocketAddr, accounts: &[String]) {
    let tasks: Vec<_> = (0..8)
        .map(|c| {
            let accounts = accounts.to_vec();
            tokio::spawn(async move {
                for i in 0..6 {
                    let (from, to) = (&accounts[(c + i) % 6], &accounts[(c + i + 1) % 6]);
                    let (path, body) = match i % 3 {
                        0 => (
                            format!("/accounts/{from}"),
                            json!({"type": "Deposit", "amount": 3.5}),
                        ),
                        1 => (
                            format!("/accounts/{from}"),
                            json!({"type": "Withdraw", "amount": "1.25"}),
                        ),
                        _ => (
                            "/transfers".to_owned(),
                            json!({"from": from, "to": to, "amount": 2.0}),
                        ),
                    };
                    crate::client::send(addr, "POST", &path, &[], Some(&body.to_string()))
                        .await
                        .expect("a write");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a client");
    }
}

async fn the_feed_from_jetstream_alone_equals_the_write_side<S: EventStore>(
    backend: Backend,
    store: S,
) {
    let (url, _server) = nats().await;
    let stream = format!("BANKT{}x{}", std::process::id(), fastrand::u32(..));
    let prefix = format!("bankt{}x{}", std::process::id(), fastrand::u32(..));
    let client = async_nats::connect(&url).await.expect("connect");
    let sink = JetStreamSink::new(
        client.clone(),
        JetStreamConfig::new(&stream, &prefix).unwrap(),
    )
    .await
    .expect("the stream");
    let outputs = Outputs {
        statements: None,
        jetstream: Some(sink),
    };
    let service = Service::start_with_outputs(backend, Default::default(), outputs).await;
    let accounts: Vec<String> = (0..6).map(|i| format!("feed-{i}")).collect();
    for account in &accounts {
        let body = json!({"type": "OpenAccount", "owner": account, "initial_balance": 500.0});
        service
            .send(
                "POST",
                &format!("/accounts/{account}"),
                Some(&body.to_string()),
            )
            .await;
    }
    let context = async_nats::jetstream::new(client);
    let file = std::env::temp_dir().join(format!("eventcore-feed-{stream}.json"));
    let mut round = 0;
    for _ in 0..2 {
        eight_clients_write(service.addr, &accounts).await;
        round += 1;
        // The feed, resumed from its saved state, catches up.
        let expected = write_side(&store, &accounts).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut state = FeedState::load(&file).expect("the feed's state");
            follow(
                &context,
                &stream,
                &mut state,
                Duration::from_millis(300),
                until_idle,
            )
            .await
            .expect("follow");
            state.save(&file).expect("save");
            if state.balances == expected {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: the feed did not reach the write side in 60 s: {:?} against {expected:?}",
                state.balances
            );
        }
    }
    // Followed without a stop, on one consumer across quiet moments,
    // saving at each: the saved state reaches the write side.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let quiet = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let follower = {
        let (context, stream, file, stop, quiet) = (
            context.clone(),
            stream.clone(),
            file.clone(),
            stop.clone(),
            quiet.clone(),
        );
        tokio::spawn(async move {
            let mut state = FeedState::load(&file).expect("the feed's state");
            follow(
                &context,
                &stream,
                &mut state,
                Duration::from_millis(100),
                |state, _| {
                    state.save(&file)?;
                    quiet.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        std::ops::ControlFlow::Break(())
                    } else {
                        std::ops::ControlFlow::Continue(())
                    })
                },
            )
            .await
            .expect("follow");
        })
    };
    // The writes come after a quiet moment: only a follower that goes on
    // past it sees them.
    while quiet.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eight_clients_write(service.addr, &accounts).await;
    let expected = write_side(&store, &accounts).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while FeedState::load(&file).expect("the feed's state").balances != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the follower never reached the write side"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    follower.await.expect("the follower");
    // Started again from scratch, the feed applies each message once.
    let mut fresh = FeedState::default();
    follow(
        &context,
        &stream,
        &mut fresh,
        Duration::from_millis(300),
        until_idle,
    )
    .await
    .expect("follow");
    assert_eq!(fresh, FeedState::load(&file).unwrap());
    let _ = std::fs::remove_file(&file);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_feed_from_jetstream_alone_equals_the_write_side_in_memory() {
    let store = InMemoryEventStore::new();
    let backend = Backend::Memory(store.clone(), InMemoryCheckpointStore::new());
    the_feed_from_jetstream_alone_equals_the_write_side(backend, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_feed_from_jetstream_alone_equals_the_write_side_on_postgres() {
    let store = postgres_store().await;
    the_feed_from_jetstream_alone_equals_the_write_side(Backend::Postgres(store.clone()), store)
        .await;
}
