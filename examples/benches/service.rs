//! `bank-service` answering `GET /accounts/{id}` over loopback HTTP, on the
//! in-memory store, for an account of 10 events and one of 10,000: with the
//! service's kept fold per account, an answer reads only the events after
//! it, so the two should cost about the same. Also `POST` of a deposit on
//! the long account (the command, then its answer).

use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use eventcore::{EventStore, StreamId, StreamVersion, StreamWrites};
use eventcore_examples::{
    bank::domain::{Amount, BankEvent},
    service::{self, Backend},
};
use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::runtime::Runtime;

/// Opens `id` and deposits `events - 1` times, in one append.
async fn seed(store: &InMemoryEventStore, id: &str, events: u64) {
    let account = StreamId::try_new(id).expect("id");
    let mut writes = StreamWrites::new();
    writes
        .expect(account.clone(), StreamVersion::INITIAL)
        .expect("register");
    writes
        .append(&BankEvent::Opened {
            account: account.clone(),
            owner: "Bench".into(),
            initial_balance: 0,
        })
        .expect("open");
    let cent = Amount::try_new(1).expect("positive");
    for _ in 1..events {
        writes
            .append(&BankEvent::Deposited {
                account: account.clone(),
                amount: cent,
            })
            .expect("deposit");
    }
    store.append(writes).await.expect("seed");
}

/// One keep-alive connection to the service.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Client { sender }
    }

    async fn send(&mut self, method: &str, path: &str, body: &'static str) -> u16 {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "bench")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("request");
        self.sender.ready().await.expect("connection ready");
        let response = self.sender.send_request(request).await.expect("answer");
        let status = response.status().as_u16();
        response.into_body().collect().await.expect("body");
        status
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = InMemoryEventStore::new();
    rt.block_on(seed(&store, "short", 10));
    rt.block_on(seed(&store, "long", 10_000));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("port");
    let running = rt
        .block_on(service::start(
            Backend::Memory(store, InMemoryCheckpointStore::new()),
            listener,
            std::future::pending(),
        ))
        .expect("service");
    let mut client = rt.block_on(Client::connect(running.addr));
    let mut group = c.benchmark_group("bank-service");
    for id in ["short", "long"] {
        let path = format!("/accounts/{id}");
        group.bench_function(format!("GET /accounts/{{id}} ({id})"), |b| {
            b.iter(|| assert_eq!(block(&rt, client.send("GET", &path, "")), 200));
        });
    }
    group.bench_function("POST deposit (long)", |b| {
        b.iter(|| {
            let body = r#"{"type":"Deposit","amount":0.01}"#;
            assert_eq!(block(&rt, client.send("POST", "/accounts/long", body)), 200);
        });
    });
    group.finish();
}

fn block<F: std::future::Future>(rt: &Runtime, future: F) -> F::Output {
    rt.block_on(future)
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(std::time::Duration::from_secs(3))
        .warm_up_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
