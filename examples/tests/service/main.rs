//! `bank-service` through a real HTTP client on a loopback port, on both
//! stores: every endpoint and error, 16 concurrent clients retrying with
//! idempotency keys, events in an older shape, graceful shutdown, and the
//! README's curl session against the binary.

mod client;
mod outputs;
mod readme;

use std::{collections::HashMap, sync::Arc, time::Duration};

use client::{Reply, Service, postgres_store, sql};
use eventcore::{Event, EventStore, EventStoreExt, StreamId, StreamVersion, StreamWrites};
use eventcore_examples::{bank::domain::bank_invariant, service::Backend};
use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

fn memory() -> (Backend, InMemoryEventStore) {
    let store = InMemoryEventStore::new();
    (
        Backend::Memory(store.clone(), InMemoryCheckpointStore::new()),
        store,
    )
}

/// Every event of `accounts`, in global order (a read of streams sees
/// every committed event, where the log may still hold back the newest).
async fn events_of<S: EventStore>(store: &S, accounts: &[&str]) -> Vec<eventcore::RecordedEvent> {
    let ids: Vec<StreamId> = accounts
        .iter()
        .map(|a| StreamId::try_new(*a).unwrap())
        .collect();
    let read = store.read_streams(&ids).await.expect("read");
    read.into_parts().1
}

fn open(owner: &str, initial: f64) -> String {
    json!({"type": "OpenAccount", "owner": owner, "initial_balance": initial}).to_string()
}

async fn every_endpoint_answers(service: &Service) {
    let r = service
        .send("POST", "/accounts/acc-001", Some(&open("Alice", 1000.0)))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"id": "acc-001", "owner": "Alice", "balance": 1000.0, "version": 1})
    );
    let r = service
        .send(
            "POST",
            "/accounts/acc-001",
            Some(r#"{"type":"Deposit","amount":500.0}"#),
        )
        .await;
    assert_eq!((r.status, &r.json["balance"]), (200, &json!(1500.0)));
    let r = service
        .send(
            "POST",
            "/accounts/acc-001",
            Some(r#"{"type":"Withdraw","amount":"200.00"}"#),
        )
        .await;
    assert_eq!((r.status, &r.json["balance"]), (200, &json!(1300.0)));
    let r = service.send("GET", "/accounts/acc-001", None).await;
    assert_eq!(
        r.json,
        json!({"id": "acc-001", "owner": "Alice", "balance": 1300.0, "version": 3})
    );
    // Exact cents: ten deposits of 0.1 make exactly 1.0.
    service
        .send("POST", "/accounts/acc-002", Some(&open("Bob", 0.0)))
        .await;
    for _ in 0..10 {
        let r = service
            .send(
                "POST",
                "/accounts/acc-002",
                Some(r#"{"type":"Deposit","amount":0.1}"#),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let r = service.send("GET", "/accounts/acc-002", None).await;
    assert_eq!(r.json["balance"], json!(1.0), "no float drift");

    let r = service
        .send(
            "POST",
            "/transfers",
            Some(r#"{"from":"acc-001","to":"acc-002","amount":300.25}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["from"]["balance"], json!(999.75));
    assert_eq!(r.json["to"]["balance"], json!(301.25));
    assert_eq!(r.json["to"]["version"], json!(12));

    // The history: a bare array of events, the example's fields first.
    let r = service.send("GET", "/accounts/acc-001/events", None).await;
    assert_eq!(r.status, 200);
    let events = r.json.as_array().expect("the history is a JSON array");
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "AccountOpened",
            "MoneyDeposited",
            "MoneyWithdrawn",
            "TransferSent"
        ]
    );
    assert_eq!(events[0]["owner"], json!("Alice"));
    assert_eq!(events[0]["initial_balance"], json!(1000.0));
    assert_eq!(events[1]["amount"], json!(500.0));
    assert_eq!(events[3]["to"], json!("acc-002"));
    assert_eq!(events[3]["amount"], json!(300.25));
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["version"], json!(i + 1));
        assert!(e["recorded_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(e["event_id"].as_str().unwrap().len(), 36);
        assert!(e["correlation_id"].is_string());
        assert!(e["position"].as_u64().unwrap() >= 1);
    }
    assert_eq!(r.link, None, "one page: no links");

    let versions = |r: &Reply| -> Vec<u64> {
        r.json
            .as_array()
            .unwrap_or_else(|| panic!("an array: {}", r.text))
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect()
    };
    // Paging forward by fives through acc-002's 12 events, following the
    // `Link` header's rel="next", then back by rel="prev".
    let mut seen = Vec::new();
    let mut path = "/accounts/acc-002/events?limit=5".to_owned();
    let last_page = loop {
        let r = service.send("GET", &path, None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        seen.extend(versions(&r));
        match r.link("next") {
            Some(next) => {
                assert!(
                    next.starts_with("/accounts/acc-002/events?limit=5&after="),
                    "{next}"
                );
                path = next;
            }
            None => break r,
        }
    };
    assert_eq!(seen, (1..=12).collect::<Vec<u64>>());
    assert_eq!(versions(&last_page), [11, 12]);
    assert!(
        last_page.link("prev").is_some(),
        "the last page points back"
    );
    let mut back = versions(&last_page);
    let mut prev = last_page.link("prev");
    while let Some(path) = prev {
        assert!(
            path.starts_with("/accounts/acc-002/events?limit=5&before="),
            "{path}"
        );
        let r = service.send("GET", &path, None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        back.splice(0..0, versions(&r));
        assert!(r.link("next").is_some(), "a backward page points forward");
        prev = r.link("prev");
    }
    assert_eq!(back, (1..=12).collect::<Vec<u64>>());

    // The read model catches up with the write side.
    let list = wait_for_read_model(service, 2).await;
    assert_eq!(
        list,
        json!([
            {"id": "acc-001", "owner": "Alice", "balance": 999.75, "version": 4},
            {"id": "acc-002", "owner": "Bob", "balance": 301.25, "version": 12},
        ])
    );
    let r = service.send("GET", "/accounts?limit=1", None).await;
    assert_eq!(r.json["next"], json!("acc-001"));
    let r = service
        .send("GET", "/accounts?limit=1&after=acc-001", None)
        .await;
    assert_eq!(r.json["accounts"][0]["id"], json!("acc-002"));
    assert_eq!(r.json["next"], Value::Null);

    let r = service.send("GET", "/health", None).await;
    assert_eq!((r.status, &r.json["status"]), (200, &json!("ok")));
}

/// Polls `GET /accounts` until every account there matches `GET
/// /accounts/{id}` and there are `accounts` of them; returns the list.
async fn wait_for_read_model(service: &Service, accounts: usize) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut all = Vec::new();
        let mut path = "/accounts?limit=500".to_owned();
        loop {
            let r = service.send("GET", &path, None).await;
            assert_eq!(r.status, 200, "{}", r.text);
            all.extend(r.json["accounts"].as_array().unwrap().iter().cloned());
            match r.json["next"].as_str() {
                Some(next) => path = format!("/accounts?limit=500&after={next}"),
                None => break,
            }
        }
        let mut matches = all.len() == accounts;
        for account in &all {
            let id = account["id"].as_str().unwrap();
            let live = service.send("GET", &format!("/accounts/{id}"), None).await;
            matches &= live.json == *account;
        }
        if matches {
            return Value::Array(all);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the read model never matched the write side: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_answers_in_memory() {
    let (backend, _) = memory();
    let service = Service::start(backend).await;
    every_endpoint_answers(&service).await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_answers_on_postgres() {
    let service = Service::start(Backend::Postgres(postgres_store().await)).await;
    every_endpoint_answers(&service).await;
    service.stop().await;
}

/// A bad request: method, path, body, headers, and the status and problem
/// type it must get.
type Case<'a> = (
    &'a str,
    String,
    Option<&'a str>,
    &'a [(&'a str, &'a str)],
    u16,
    &'a str,
);

/// Each bad request gets its problem, and nothing is written.
async fn errors_are_problems<S: EventStore>(service: &Service, store: &S) {
    service
        .send("POST", "/accounts/acc-1", Some(&open("Ann", 10.0)))
        .await;
    service
        .send("POST", "/accounts/acc-2", Some(&open("Ben", 0.0)))
        .await;
    service
        .send_with(
            "POST",
            "/accounts/acc-1",
            &[("Idempotency-Key", "deposit-1")],
            Some(r#"{"type":"Deposit","amount":1}"#),
        )
        .await;
    let touched = ["acc-1", "acc-2", "acc-3", "nobody"];
    let before = events_of(store, &touched).await.len();
    let reopen = open("Ann", 1.0);
    let long_id = "a".repeat(65);
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/accounts/acc-1".into(),
            Some("{not json"),
            &[],
            400,
            "bad-request",
        ),
        (
            "POST",
            "/accounts/acc-1".into(),
            Some(r#"{"type":"Steal","amount":1}"#),
            &[],
            400,
            "bad-request",
        ),
        (
            "POST",
            "/accounts/acc-1".into(),
            Some(r#"{"type":"Deposit"}"#),
            &[],
            400,
            "bad-request",
        ),
        (
            "POST",
            "/accounts/acc-1".into(),
            Some(r#"{"type":"Deposit","amount":1,"extra":2}"#),
            &[],
            400,
            "bad-request",
        ),
        (
            "POST",
            "/accounts/acc-1".into(),
            Some(r#"{"type":"Deposit","amount":0}"#),
            &[],
            400,
            "bad-request",
        ),
        (
            "POST",
            "/accounts/acc-1".into(),
            Some(r#"{"type":"Deposit","amount":0.001}"#),
            &[],
            400,
            "bad-request",
        ),
        (
            "POST",
            "/accounts/acc-1".into(),
            Some(r#"{"type":"Deposit","amount":-5}"#),
            &[],
            400,
            "bad-request",
        ),
        (
            "POST",
            "/accounts/acc-1".into(),
            Some(r#"{"type":"Deposit","amount":"1e3"}"#),
            &[],
            400,
            "bad-request",
        ),
        (
            "POST",
            "/accounts/acc-1".into(),
            Some(r#"{"type":"Deposit","amount":1e300}"#),
            &[],
            400,
            "bad-request",
        ),
        (
            "POST",
            "/accounts/acc-3".into(),
            Some(r#"{"type":"OpenAccount","owner":"  "}"#),
            &[],
            400,
            "bad-request",
        ),
        (
            "POST",
            "/accounts/bad%20id".into(),
            Some(r#"{"type":"Deposit","amount":1}"#),
            &[],
            400,
            "bad-request",
        ),
        (
            "POST",
            format!("/accounts/{long_id}"),
            Some(r#"{"type":"Deposit","amount":1}"#),
            &[],
            400,
            "bad-request",
        ),
        (
            "POST",
            "/accounts/acc-1".into(),
            Some(r#"{"type":"Deposit","amount":1}"#),
            &[("Idempotency-Key", "")],
            400,
            "bad-request",
        ),
        (
            "POST",
            "/transfers".into(),
            Some(r#"{"from":"acc-1","to":"acc-2"}"#),
            &[],
            400,
            "bad-request",
        ),
        (
            "GET",
            "/accounts/acc-1/events?after=zz".into(),
            None,
            &[],
            400,
            "bad-request",
        ),
        (
            "GET",
            "/accounts/acc-1/events?after=v1&before=v2".into(),
            None,
            &[],
            400,
            "bad-request",
        ),
        (
            "GET",
            "/accounts/acc-1/events?limit=0".into(),
            None,
            &[],
            400,
            "bad-request",
        ),
        (
            "GET",
            "/accounts/acc-1/events?colour=red".into(),
            None,
            &[],
            400,
            "bad-request",
        ),
        (
            "GET",
            "/accounts?limit=501".into(),
            None,
            &[],
            400,
            "bad-request",
        ),
        (
            "GET",
            "/accounts/nobody".into(),
            None,
            &[],
            404,
            "unknown-account",
        ),
        (
            "GET",
            "/accounts/nobody/events".into(),
            None,
            &[],
            404,
            "unknown-account",
        ),
        (
            "POST",
            "/accounts/nobody".into(),
            Some(r#"{"type":"Deposit","amount":1}"#),
            &[],
            404,
            "unknown-account",
        ),
        (
            "POST",
            "/transfers".into(),
            Some(r#"{"from":"acc-1","to":"nobody","amount":1}"#),
            &[],
            404,
            "unknown-account",
        ),
        ("GET", "/no/such/route".into(), None, &[], 404, "not-found"),
        (
            "DELETE",
            "/accounts/acc-1".into(),
            None,
            &[],
            405,
            "method-not-allowed",
        ),
        (
            "POST",
            "/accounts/acc-1".into(),
            Some(&reopen),
            &[],
            422,
            "account-already-open",
        ),
        (
            "POST",
            "/accounts/acc-2".into(),
            Some(r#"{"type":"Withdraw","amount":0.01}"#),
            &[],
            422,
            "insufficient-funds",
        ),
        (
            "POST",
            "/transfers".into(),
            Some(r#"{"from":"acc-1","to":"acc-2","amount":11.01}"#),
            &[],
            422,
            "insufficient-funds",
        ),
        (
            "POST",
            "/transfers".into(),
            Some(r#"{"from":"acc-1","to":"acc-1","amount":1}"#),
            &[],
            422,
            "same-account",
        ),
        // The key of the deposit above, for another amount.
        (
            "POST",
            "/accounts/acc-1".into(),
            Some(r#"{"type":"Deposit","amount":2}"#),
            &[("Idempotency-Key", "deposit-1")],
            422,
            "idempotency-key-reused",
        ),
        // The key of the deposit above, for a withdrawal.
        (
            "POST",
            "/accounts/acc-1".into(),
            Some(r#"{"type":"Withdraw","amount":1}"#),
            &[("Idempotency-Key", "deposit-1")],
            422,
            "idempotency-key-reused",
        ),
    ];
    for (method, path, body, headers, status, kind) in cases {
        let r = service.send_with(method, &path, headers, body).await;
        assert_eq!(r.status, status, "{method} {path} {body:?}: {}", r.text);
        assert_eq!(
            r.content_type, "application/problem+json",
            "{method} {path}"
        );
        assert_eq!(
            r.json["type"],
            json!(format!("urn:eventcore:bank:{kind}")),
            "{path}"
        );
        assert_eq!(r.json["status"], json!(status));
        assert!(
            r.json["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}",
            r.text
        );
    }
    let r = service
        .send(
            "POST",
            "/accounts/acc-2",
            Some(r#"{"type":"Withdraw","amount":5}"#),
        )
        .await;
    assert_eq!(
        r.json["detail"],
        json!("account acc-2 holds 0.00, cannot pay out 5.00")
    );
    assert_eq!(
        events_of(store, &touched).await.len(),
        before,
        "no error wrote anything"
    );
    // The same request again, its amount written another way: the replay.
    let again = service
        .send_with(
            "POST",
            "/accounts/acc-1",
            &[("Idempotency-Key", "deposit-1")],
            Some(r#"{"type":"Deposit","amount":"1.00"}"#),
        )
        .await;
    assert_eq!(
        (again.status, again.replayed),
        (200, true),
        "{}",
        again.text
    );
    assert_eq!(again.json["balance"], json!(11.0));
    assert_eq!(events_of(store, &touched).await.len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_are_problems_and_write_nothing_in_memory() {
    let (backend, store) = memory();
    let service = Service::start(backend).await;
    errors_are_problems(&service, &store).await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_are_problems_and_write_nothing_on_postgres() {
    let store = postgres_store().await;
    let service = Service::start(Backend::Postgres(store.clone())).await;
    errors_are_problems(&service, &store).await;
    service.stop().await;
}

const ACCOUNTS: usize = 6;
const CLIENTS: usize = 16;
const TRANSFERS_PER_CLIENT: usize = 12;

/// 16 clients released together send transfers between six accounts, each
/// request sent twice at once under one idempotency key (a client retrying
/// after a timeout). Afterwards: no key moved money twice, every 200 moved
/// it once, money is conserved, no account is overdrawn, and the read
/// model equals the write side.
async fn concurrent_clients_with_retries<S: EventStore>(service: &Service, store: &S) {
    for a in 0..ACCOUNTS {
        let r = service
            .send(
                "POST",
                &format!("/accounts/acct-{a}"),
                Some(&open("Owner", 100.0)),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let addr = service.addr;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(c as u64);
            barrier.wait().await;
            let mut outcomes = Vec::new();
            for t in 0..TRANSFERS_PER_CLIENT {
                let from = rng.usize(..ACCOUNTS);
                let to = (from + 1 + rng.usize(..ACCOUNTS - 1)) % ACCOUNTS;
                let cents = rng.u64(1..=4_000);
                let body = json!({
                    "from": format!("acct-{from}"),
                    "to": format!("acct-{to}"),
                    "amount": format!("{}.{:02}", cents / 100, cents % 100),
                })
                .to_string();
                let key = format!("client-{c}-transfer-{t}");
                let headers = [("Idempotency-Key", key.as_str())];
                let (first, retry) = tokio::join!(
                    client::send(addr, "POST", "/transfers", &headers, Some(&body)),
                    client::send(addr, "POST", "/transfers", &headers, Some(&body)),
                );
                let (first, retry) = (first.expect("answer"), retry.expect("answer"));
                let statuses = [first.status, retry.status];
                if statuses == [200, 200] {
                    assert!(
                        first.replayed != retry.replayed,
                        "{key}: one of two answers is the replay"
                    );
                    assert_eq!(first.json, retry.json, "{key}: the replay answers the same");
                }
                for status in statuses {
                    assert!(
                        matches!(status, 200 | 409 | 422),
                        "transfer {key}: status {status}"
                    );
                }
                outcomes.push((key, statuses));
            }
            outcomes
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.expect("client"));
    }
    let names: Vec<String> = (0..ACCOUNTS).map(|a| format!("acct-{a}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let log = events_of(store, &names).await;
    bank_invariant(&log).expect("no overdraft, every transfer whole");
    let mut moved: HashMap<String, usize> = HashMap::new();
    for e in &log {
        if e.event_type() == "TransferSent" {
            let key = e
                .metadata()
                .causation_id()
                .expect("a transfer is caused by its request's key")
                .as_str()
                .to_owned();
            *moved.entry(key).or_default() += 1;
        }
    }
    let mut applied = 0;
    for (key, statuses) in &outcomes {
        let times = moved.get(key).copied().unwrap_or(0);
        assert!(times <= 1, "{key} moved money {times} times");
        if statuses.contains(&200) {
            assert_eq!(times, 1, "{key} answered 200 but moved nothing");
            applied += 1;
        }
    }
    assert!(applied > CLIENTS, "most transfers went through: {applied}");
    let list = wait_for_read_model(service, ACCOUNTS).await;
    let total: f64 = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["balance"].as_f64().unwrap())
        .sum();
    assert!(
        (total - 100.0 * ACCOUNTS as f64).abs() < 1e-6,
        "money is conserved: {total}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_retrying_never_move_money_twice_in_memory() {
    let (backend, store) = memory();
    let service = Service::start(backend).await;
    concurrent_clients_with_retries(&service, &store).await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_retrying_never_move_money_twice_on_postgres() {
    let store = postgres_store().await;
    let service = Service::start(Backend::Postgres(store.clone())).await;
    concurrent_clients_with_retries(&service, &store).await;
    service.stop().await;
}

/// A deposit as the first bank wrote it: a float of dollars, schema
/// version 1 (the default).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
enum FirstBank {
    MoneyDeposited { account: StreamId, amount: f64 },
}

impl Event for FirstBank {
    fn stream_id(&self) -> &StreamId {
        match self {
            FirstBank::MoneyDeposited { account, .. } => account,
        }
    }

    fn event_type(&self) -> &'static str {
        "MoneyDeposited"
    }
}

/// The old deposits of `old-1` are read correctly by every endpoint.
async fn old_deposits_are_read(service: &Service) {
    let history = service.send("GET", "/accounts/old-1/events", None).await;
    assert_eq!(history.status, 200, "{}", history.text);
    let events = history.json.as_array().unwrap();
    let amounts: Vec<(&Value, &Value)> = events[1..]
        .iter()
        .map(|e| (&e["amount"], &e["schema_version"]))
        .collect();
    assert_eq!(
        amounts,
        [
            (&json!(12.34), &json!(1)),
            (&json!(5.0), &json!(1)),
            (&json!(1.0), &json!(2)),
        ]
    );
    let r = service.send("GET", "/accounts/old-1", None).await;
    assert_eq!(r.json["balance"], json!(1018.34), "{}", r.text);
    let list = wait_for_read_model(service, 2).await;
    assert_eq!(list[0]["balance"], json!(1018.34));
    // A command folds them too: the whole balance can be paid out.
    let r = service
        .send(
            "POST",
            "/accounts/old-1",
            Some(r#"{"type":"Withdraw","amount":1018.34}"#),
        )
        .await;
    assert_eq!(
        (r.status, &r.json["balance"]),
        (200, &json!(0.0)),
        "{}",
        r.text
    );
}

/// After an old deposit no upcaster can read lands in `old-2`: reading
/// the account is an error naming the event, and the read model stops at
/// it rather than skip it (health says so, and so does the stop).
async fn unreadable_deposit_is_an_error(service: Service) {
    let r = service.send("GET", "/accounts/old-2", None).await;
    assert_eq!(r.status, 500, "{}", r.text);
    let detail = r.json["detail"].as_str().unwrap();
    assert!(
        detail.contains("old-2")
            && detail.contains("MoneyDeposited")
            && detail.contains("schema version 1"),
        "{detail}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = service.send("GET", "/health", None).await;
        if r.status == 503 {
            assert_eq!(
                r.json["type"],
                json!("urn:eventcore:bank:read-model-stopped")
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the read model went on"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = service
        .stop_result()
        .await
        .expect_err("the subscription stopped");
    assert!(
        matches!(
            err,
            eventcore_examples::service::ServiceError::Subscription(
                eventcore::SubscriptionError::Undecodable { .. }
            )
        ),
        "{err:?}"
    );
}

/// Opens `old-1` and `old-2` with 1000.00, lets `write_old` add deposits
/// in older shapes to `old-1` (12.34 and 5.00), and deposits 1.00 more
/// through the service.
async fn with_old_deposits<F, Fut>(service: &Service, write_old: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for id in ["old-1", "old-2"] {
        let r = service
            .send(
                "POST",
                &format!("/accounts/{id}"),
                Some(&open("Old", 1000.0)),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    write_old().await;
    let r = service
        .send(
            "POST",
            "/accounts/old-1",
            Some(r#"{"type":"Deposit","amount":1}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// `MoneyDeposited` with integer cents at schema version 1: what this bank
/// wrote before schema versions were stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename = "MoneyDeposited")]
struct CentsV1 {
    account: StreamId,
    amount: u64,
}

impl Event for CentsV1 {
    fn stream_id(&self) -> &StreamId {
        &self.account
    }

    fn event_type(&self) -> &'static str {
        "MoneyDeposited"
    }
}

async fn append_one<S: EventStore, E: Event>(store: &S, id: &str, at: u64, event: &E) {
    let mut writes = StreamWrites::new();
    writes
        .expect(StreamId::try_new(id).unwrap(), StreamVersion::new(at))
        .unwrap();
    writes.append(event).unwrap();
    store.append(writes).await.unwrap();
}

/// Deposits appended through `store` in the shapes older code wrote them
/// (dollars as a float, then cents at schema version 1) are read by every
/// endpoint; one that no longer decodes is an error.
async fn old_event_shapes_are_read<S: EventStore>(service: Service, store: &S) {
    let old = StreamId::try_new("old-1").unwrap();
    with_old_deposits(&service, || async {
        let dollars = FirstBank::MoneyDeposited {
            account: old.clone(),
            amount: 12.34,
        };
        append_one(store, "old-1", 1, &dollars).await;
        let cents = CentsV1 {
            account: old.clone(),
            amount: 500,
        };
        append_one(store, "old-1", 2, &cents).await;
    })
    .await;
    old_deposits_are_read(&service).await;
    let bad = FirstBank::MoneyDeposited {
        account: StreamId::try_new("old-2").unwrap(),
        amount: 0.005,
    };
    append_one(store, "old-2", 1, &bad).await;
    unreadable_deposit_is_an_error(service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_event_shapes_are_read_by_every_endpoint_in_memory() {
    let (backend, store) = memory();
    old_event_shapes_are_read(Service::start(backend).await, &store).await;
}

/// Inserts a row as an older version wrote it: no schema_version column
/// named, so the column's default (1) applies.
async fn insert_old_row(pool: &sqlx::PgPool, stream: &str, version: i64, payload: &str) {
    sqlx::query(
        "INSERT INTO eventcore_events (stream_id, stream_version, event_type, payload, event_id)
         VALUES ($1, $2, 'MoneyDeposited', $3::json, $4)",
    )
    .bind(stream)
    .bind(version)
    .bind(payload)
    .bind(uuid::Uuid::now_v7())
    .execute(pool)
    .await
    .expect("insert an old row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_event_shapes_are_read_by_every_endpoint_on_postgres() {
    let store = postgres_store().await;
    let pool = sql(&store).await;
    let service = Service::start(Backend::Postgres(store.clone())).await;
    let dollars = r#"{"type":"MoneyDeposited","account":"old-1","amount":12.34}"#;
    with_old_deposits(&service, || async {
        insert_old_row(&pool, "old-1", 2, dollars).await;
        let cents = r#"{"type":"MoneyDeposited","account":"old-1","amount":500}"#;
        insert_old_row(&pool, "old-1", 3, cents).await;
    })
    .await;
    old_deposits_are_read(&service).await;
    let stored: String = sqlx::query_scalar(
        "SELECT payload::text FROM eventcore_events WHERE stream_id = 'old-1' AND stream_version = 2",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored, dollars, "the stored row never changes");
    let bad = r#"{"type":"MoneyDeposited","account":"old-2","amount":0.005}"#;
    insert_old_row(&pool, "old-2", 2, bad).await;
    unreadable_deposit_is_an_error(service).await;
}

/// With the store out of reach, every route that needs it answers 503
/// (with `Retry-After`) and writes nothing; once it is back, the same
/// requests succeed and the read model carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_store_is_503_until_it_comes_back_on_postgres() {
    let (store, proxy) = client::postgres_store_behind_proxy().await;
    let service = Service::start(Backend::Postgres(store.clone())).await;
    let r = service
        .send("POST", "/accounts/acc-9", Some(&open("Ida", 10.0)))
        .await;
    assert_eq!(r.status, 201);
    // Cut for longer than a subscription's default handler retries last
    // (about 4 s): if the read model was applying an event when the cut came
    // (it was in one CI run), it must ride the outage out, not stop.
    proxy.cut();
    let cut_at = tokio::time::Instant::now();
    let deposit = r#"{"type":"Deposit","amount":2.5}"#;
    let key = [("Idempotency-Key", "deposit-while-down")];
    for (method, path, body) in [
        ("GET", "/health", None),
        ("GET", "/accounts/acc-9", None),
        ("GET", "/accounts/acc-9/events", None),
        ("POST", "/accounts/acc-9", Some(deposit)),
    ] {
        let r = service.send_with(method, path, &key, body).await;
        assert_eq!(r.status, 503, "{method} {path}: {}", r.text);
        assert_eq!(r.content_type, "application/problem+json");
        assert_eq!(
            r.json["type"],
            json!("urn:eventcore:bank:store-unavailable")
        );
    }
    tokio::time::sleep_until(cut_at + Duration::from_secs(8)).await;
    proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = service.send("GET", "/health", None).await;
        if r.status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", r.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = service
        .send_with("POST", "/accounts/acc-9", &key, Some(deposit))
        .await;
    assert_eq!(
        (r.status, &r.json["balance"]),
        (200, &json!(12.5)),
        "{}",
        r.text
    );
    let events = events_of(&store, &["acc-9"]).await;
    assert_eq!(events.len(), 2, "the failed deposit wrote nothing");
    wait_for_read_model(&service, 1).await;
    service.stop().await;
}

/// Sends a deposit's head and half its body, waits, and returns the
/// stream to finish with [`finish_deposit`].
async fn start_deposit(addr: std::net::SocketAddr, account: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let body = r#"{"type":"Deposit","amount":7.25}"#;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /accounts/{account} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{}",
        body.len(),
        &body[..10]
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

async fn finish_deposit(mut stream: tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"type":"Deposit","amount":7.25}"#;
    stream
        .write_all(&body.as_bytes()[10..])
        .await
        .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
}

/// Shutdown with a request half sent: the service takes no new
/// connection, finishes that request, and stops its read model.
async fn shutdown_finishes_in_flight(backend: Backend) -> Service {
    let mut service = Service::start(backend).await;
    let r = service
        .send("POST", "/accounts/acc-5", Some(&open("Eve", 1.0)))
        .await;
    assert_eq!(r.status, 201);
    let in_flight = start_deposit(service.addr, "acc-5").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    service.signal_stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = client::send(service.addr, "GET", "/health", &[], None).await;
    assert!(late.is_err(), "a new request after shutdown got {late:?}");
    let answer = finish_deposit(in_flight).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""balance":8.25"#), "{answer}");
    service
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_finishes_requests_in_flight_in_memory() {
    let (backend, _) = memory();
    let service = shutdown_finishes_in_flight(backend).await;
    service.stop().await;
}

/// On PostgreSQL the read model's checkpoint is saved with its table: a
/// service started again on the same database resumes from it, applying
/// nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_finishes_requests_in_flight_and_the_read_model_resumes_on_postgres() {
    let store = postgres_store().await;
    let service = shutdown_finishes_in_flight(Backend::Postgres(store.clone())).await;
    service.stop().await;
    let name =
        eventcore::SubscriptionName::try_new(eventcore_examples::service::SUBSCRIPTION).unwrap();
    let saved = eventcore::CheckpointStore::load(&store, &name)
        .await
        .expect("load");
    assert!(saved.is_some(), "the read model's checkpoint is saved");
    let again = Service::start(Backend::Postgres(store.clone())).await;
    one_more_deposit_is_applied_once(again).await;
}

/// After a restart (acc-5 at 8.25 in the read model), one more deposit of 1
/// shows once in the resumed read model: nothing applied twice.
async fn one_more_deposit_is_applied_once(again: Service) {
    let r = again
        .send(
            "POST",
            "/accounts/acc-5",
            Some(r#"{"type":"Deposit","amount":1}"#),
        )
        .await;
    assert_eq!(r.status, 200);
    let list = wait_for_read_model(&again, 1).await;
    assert_eq!(list[0]["balance"], json!(9.25), "nothing applied twice");
    again.stop().await;
}

/// A request whose body stops coming is answered 503 once the request
/// timeout passes, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_that_takes_too_long_is_a_503() {
    use tokio::io::AsyncReadExt;
    let (backend, store) = memory();
    let limits = eventcore_examples::service::Limits {
        request_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let service = Service::start_with(backend, limits).await;
    let r = service
        .send("POST", "/accounts/acc-7", Some(&open("Tim", 1.0)))
        .await;
    assert_eq!(r.status, 201);
    let mut stalled = start_deposit(service.addr, "acc-7").await;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stalled.read_to_string(&mut answer))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("urn:eventcore:bank:timeout"), "{answer}");
    assert_eq!(
        events_of(&store, &["acc-7"]).await.len(),
        1,
        "nothing written"
    );
    service.stop().await;
}

/// A client that never finishes its request cannot hold the shutdown up
/// past the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_ends_within_its_grace_however_slow_a_client_is() {
    let (backend, _) = memory();
    let limits = eventcore_examples::service::Limits {
        request_timeout: Duration::from_secs(60),
        shutdown_grace: Duration::from_millis(300),
    };
    let mut service = Service::start_with(backend, limits).await;
    let r = service
        .send("POST", "/accounts/acc-8", Some(&open("Sam", 1.0)))
        .await;
    assert_eq!(r.status, 201);
    let _stalled = start_deposit(service.addr, "acc-8").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    service.signal_stop();
    tokio::time::timeout(Duration::from_secs(10), service.stop_result())
        .await
        .expect("the service stopped within 10 s")
        .expect("a clean stop");
}

/// Two service instances on one store, as two processes would run: one
/// holds the read model's lease, the other waits. `end_lease` ends the
/// holder's lease (whether there was one to end) ten times while deposits
/// arrive through both, 8 clients at once, so the read model moves between
/// them mid-page: every balance it shows still equals the write side's
/// (nothing applied twice, nothing missed).
async fn two_instances_keep_the_read_model_right<F, Fut>(a: Service, b: Service, end_lease: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let accounts = 8;
    for i in 0..accounts {
        let body = format!(r#"{{"type":"OpenAccount","owner":"owner {i}","initial_balance":10}}"#);
        let r = a
            .send("POST", &format!("/accounts/two-{i}"), Some(&body))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let killer = tokio::spawn(async move {
        let mut ended = 0;
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            ended += usize::from(end_lease().await);
        }
        ended
    });
    let (a, b) = (Arc::new(a), Arc::new(b));
    let clients: Vec<_> = (0..accounts)
        .map(|i| {
            let service = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                for _ in 0..DEPOSITS {
                    let r = service
                        .send(
                            "POST",
                            &format!("/accounts/two-{i}"),
                            Some(r#"{"type":"Deposit","amount":1}"#),
                        )
                        .await;
                    assert_eq!(r.status, 200, "{}", r.text);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let ended = killer.await.unwrap();
    assert!(ended >= 2, "the lease moved only {ended} times");
    let list = wait_for_read_model(&a, accounts).await;
    let total: f64 = list
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["balance"].as_f64().unwrap())
        .sum();
    let opened = f64::from(u32::try_from(accounts).unwrap());
    assert_eq!(total, opened * (10.0 + f64::from(DEPOSITS)));
    assert_eq!(wait_for_read_model(&b, accounts).await, list);
    for service in [a, b] {
        Arc::into_inner(service)
            .expect("no client left")
            .stop()
            .await;
    }
}

/// On PostgreSQL the lease is ended by killing the holder's session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_database_keep_the_read_model_right_across_handovers() {
    let schema = format!("bank_service_{}_{}", std::process::id(), fastrand::u32(..));
    let first = client::postgres_store_in(&schema).await;
    let a = Service::start(Backend::Postgres(first.clone())).await;
    let b = Service::start(Backend::Postgres(client::postgres_store_in(&schema).await)).await;
    let pool = sql(&first).await;
    two_instances_keep_the_read_model_right(a, b, move || {
        let pool = pool.clone();
        async move {
            let ended: Option<bool> = sqlx::query_scalar(
                "SELECT bool_or(pg_terminate_backend(holder_pid)) FROM eventcore_leases
                 WHERE name = $1",
            )
            .bind(eventcore_examples::service::SUBSCRIPTION)
            .fetch_one(&pool)
            .await
            .expect("end the lease's session");
            ended == Some(true)
        }
    })
    .await;
}

/// Deposits per account in the two-instance test.
const DEPOSITS: u32 = 60;

/// Read-your-writes: each write's answer gives its position, and a read of
/// the read model with it as `min_position` shows the write, on whichever
/// instance it is asked, whether or not that instance keeps the read model.
/// Each client alternates instances between the write and the read. A
/// position the read model cannot reach is a 503 after the wait; a bad
/// one, a 400.
async fn a_read_after_a_write_with_its_position_shows_the_write(a: Arc<Service>, b: Arc<Service>) {
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (a, b) = (a.clone(), b.clone());
            tokio::spawn(async move {
                let account = format!("ryw-{c}");
                let body =
                    format!(r#"{{"type":"OpenAccount","owner":"o{c}","initial_balance":1}}"#);
                let r = a
                    .send("POST", &format!("/accounts/{account}"), Some(&body))
                    .await;
                assert_eq!(r.status, 201, "{}", r.text);
                for n in 1..=25u32 {
                    let (writer, reader) = if n % 2 == 0 { (&a, &b) } else { (&b, &a) };
                    let r = writer
                        .send(
                            "POST",
                            &format!("/accounts/{account}"),
                            Some(r#"{"type":"Deposit","amount":1}"#),
                        )
                        .await;
                    assert_eq!(r.status, 200, "{}", r.text);
                    let position = r.position.expect("a write's answer gives its position");
                    let list = reader
                        .send(
                            "GET",
                            &format!("/accounts?min_position={position}&limit=100"),
                            None,
                        )
                        .await;
                    assert_eq!(list.status, 200, "{}", list.text);
                    let row = list.json["accounts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|row| row["id"] == account.as_str())
                        .cloned()
                        .unwrap_or_else(|| {
                            panic!("{account} not in the read model: {}", list.text)
                        });
                    assert_eq!(
                        row["balance"].as_f64(),
                        Some(1.0 + f64::from(n)),
                        "the read after deposit {n} shows it"
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let bad = a.send("GET", "/accounts?min_position=soon", None).await;
    assert_eq!(bad.status, 400, "{}", bad.text);
}

async fn stop_both(a: Arc<Service>, b: Arc<Service>) {
    for service in [a, b] {
        Arc::into_inner(service)
            .expect("no client left")
            .stop()
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_after_a_write_shows_it_in_memory() {
    let (backend, _) = memory();
    // In memory the read model lives in its one process: one instance.
    let service = Arc::new(Service::start(backend).await);
    a_read_after_a_write_with_its_position_shows_the_write(service.clone(), service.clone()).await;
    Arc::into_inner(service)
        .expect("no client left")
        .stop()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_after_a_write_shows_it_on_postgres_on_either_instance() {
    let schema = format!("bank_service_{}_{}", std::process::id(), fastrand::u32(..));
    let a = Service::start(Backend::Postgres(client::postgres_store_in(&schema).await)).await;
    let b = Service::start(Backend::Postgres(client::postgres_store_in(&schema).await)).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    a_read_after_a_write_with_its_position_shows_the_write(a.clone(), b.clone()).await;
    stop_both(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_after_a_write_shows_it_on_sqlite_on_either_instance() {
    let (store, path) = sqlite_store().await;
    let other =
        eventcore_sqlite::SqliteEventStore::open(&path, eventcore_sqlite::SqliteConfig::default())
            .await
            .expect("a second store value on the file");
    let a = Service::start(Backend::Sqlite(store)).await;
    let b = Service::start(Backend::Sqlite(other)).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    a_read_after_a_write_with_its_position_shows_the_write(a.clone(), b.clone()).await;
    stop_both(a, b).await;
}

/// A new SQLite file for a service, and its path.
async fn sqlite_store() -> (eventcore_sqlite::SqliteEventStore, std::path::PathBuf) {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "service-{}-{}.sqlite",
        std::process::id(),
        fastrand::u64(..)
    ));
    let store =
        eventcore_sqlite::SqliteEventStore::open(&path, eventcore_sqlite::SqliteConfig::default())
            .await
            .expect("open a new SQLite file");
    (store, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_answers_on_sqlite() {
    let (store, _) = sqlite_store().await;
    let service = Service::start(Backend::Sqlite(store)).await;
    every_endpoint_answers(&service).await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_are_problems_and_write_nothing_on_sqlite() {
    let (store, _) = sqlite_store().await;
    let service = Service::start(Backend::Sqlite(store.clone())).await;
    errors_are_problems(&service, &store).await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_retrying_never_move_money_twice_on_sqlite() {
    let (store, _) = sqlite_store().await;
    let service = Service::start(Backend::Sqlite(store.clone())).await;
    concurrent_clients_with_retries(&service, &store).await;
    service.stop().await;
}

/// On SQLite the accounts and the read model's checkpoint live in the file:
/// a service started again on it (a new store value, as after a restart)
/// keeps every account and resumes its read model, applying nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_service_keeps_its_accounts_on_sqlite() {
    let (store, path) = sqlite_store().await;
    let service = shutdown_finishes_in_flight(Backend::Sqlite(store.clone())).await;
    service.stop().await;
    drop(store);
    let reopened =
        eventcore_sqlite::SqliteEventStore::open(&path, eventcore_sqlite::SqliteConfig::default())
            .await
            .expect("reopen");
    let again = Service::start(Backend::Sqlite(reopened)).await;
    let r = again.send("GET", "/accounts/acc-5", None).await;
    assert_eq!(
        (r.status, &r.json["balance"]),
        (200, &json!(8.25)),
        "{}",
        r.text
    );
    one_more_deposit_is_applied_once(again).await;
}

/// On SQLite (two store values of one file, as two processes) the lease
/// is ended by deleting its lock file, as its holder's death would free it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_sqlite_file_keep_the_read_model_right_across_handovers() {
    let (first, path) = sqlite_store().await;
    let second =
        eventcore_sqlite::SqliteEventStore::open(&path, eventcore_sqlite::SqliteConfig::default())
            .await
            .expect("open as a second process");
    let lease = first.lease_file(
        &eventcore::SubscriptionName::try_new(eventcore_examples::service::SUBSCRIPTION).unwrap(),
    );
    let a = Service::start(Backend::Sqlite(first)).await;
    let b = Service::start(Backend::Sqlite(second)).await;
    two_instances_keep_the_read_model_right(a, b, move || {
        let ended = std::fs::remove_file(&lease).is_ok();
        async move { ended }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_event_shapes_are_read_by_every_endpoint_on_sqlite() {
    let (store, _) = sqlite_store().await;
    let service = Service::start(Backend::Sqlite(store.clone())).await;
    old_event_shapes_are_read(service, &store).await;
}
