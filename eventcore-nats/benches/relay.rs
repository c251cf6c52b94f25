//! Relay throughput: a log of 1,000,000 events (in memory) relayed into a
//! local JetStream stream kept in files, from the first event until the
//! last is acknowledged; printed as events per second for several batch
//! sizes. Starts a `nats-server -js` of its own (NATS_SERVER_BIN or
//! `nats-server` on the PATH) on a free loopback port.
//!
//! `cargo bench -p eventcore-nats --bench relay` (EVENTS=… to change the
//! log's size).

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use eventcore::{
    EventLog, EventStore, RelayConfig, StreamVersion, StreamWrites, SubscriptionName, relay,
};
use eventcore_memory::InMemoryEventStore;
use eventcore_nats::{JetStreamConfig, JetStreamSink};
use eventcore_testing::fixtures::{LedgerEvent, stream};

const PER_APPEND: u64 = 1_000;

async fn fill(store: &InMemoryEventStore, events: u64) {
    for a in 0..events.div_ceil(PER_APPEND) {
        let account = stream(&format!("account-{a}"));
        let mut writes = StreamWrites::new();
        writes
            .expect(account.clone(), StreamVersion::INITIAL)
            .expect("expect");
        for i in 0..PER_APPEND.min(events - a * PER_APPEND) {
            writes
                .append(&LedgerEvent::Credited {
                    account: account.clone(),
                    amount: 1 + i % 97,
                    from: None,
                })
                .expect("append");
        }
        store.append(writes).await.expect("the log");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --benches` runs this with --bench absent: only build.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let events: u64 = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("eventcore-relay-bench-{}", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let binary = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".to_owned());
    let mut server = std::process::Command::new(&binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary:?}: {e} (apt-get install nats-server)"));
    let url = format!("nats://127.0.0.1:{port}");
    let client = loop {
        if let Ok(client) = async_nats::connect(&url).await {
            break client;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let store = InMemoryEventStore::new();
    let filled = Instant::now();
    fill(&store, events).await;
    println!(
        "log of {events} events written in {:.1} s",
        filled.elapsed().as_secs_f64()
    );
    let last = store
        .read_all(&eventcore::LogQuery::from_start(usize::MAX))
        .await
        .expect("log")
        .events()
        .last()
        .map(|(p, _)| *p);
    println!("| batch | seconds | events/s |");
    println!("|---:|---:|---:|");
    for (run, batch) in [500_usize, 1_000, 4_000].into_iter().enumerate() {
        let config =
            JetStreamConfig::new(format!("BENCH{run}"), format!("bench{run}")).expect("config");
        let sink = JetStreamSink::new(client.clone(), config)
            .await
            .expect("sink");
        let name = SubscriptionName::try_new(format!("relay-bench-{run}")).expect("name");
        let start = Instant::now();
        let handle = relay(
            store.clone(),
            store.checkpoints().clone(),
            name,
            sink,
            RelayConfig::default().with_batch(batch),
        );
        handle
            .position()
            .wait_for(|at| *at >= last)
            .await
            .expect("the relay runs");
        let secs = start.elapsed().as_secs_f64();
        let report = handle.stop().await;
        assert_eq!(report.published, events, "every event published once");
        #[allow(clippy::cast_precision_loss)]
        let rate = events as f64 / secs;
        println!("| {batch} | {secs:.2} | {rate:.0} |");
        client.clone().flush().await.expect("flush");
        async_nats::jetstream::new(client.clone())
            .delete_stream(format!("BENCH{run}"))
            .await
            .expect("delete the stream");
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
