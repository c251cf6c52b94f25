//! Reactor commit-to-effect latency at idle: one credit at a time, and the
//! time from its command's commit (execute returning) to the dispatcher's
//! call delivering the effect its reactor recorded for it, through the
//! subscription's wake-up, the reactor's transaction and the dispatcher's
//! wake-up and claim. On the in-memory store, SQLite, and PostgreSQL when
//! `DATABASE_URL` is set. Prints p50, p99 and the worst, in milliseconds.
//!
//! `cargo bench -p eventcore-examples --bench reactor` (SAMPLES=… to
//! change the count, 1,000 by default).

use std::time::{Duration, Instant};

use eventcore::{
    BoxError, DispatchConfig, EventStore, Handler, Outbox, Reaction, Reactor, SubscriptionConfig,
    SubscriptionName, deliver_fn, dispatch, execute, subscribe,
};
use eventcore_postgres::{ExactlyOnce, PgReactor, PostgresConfig, PostgresEventStore, SchemaName};
use eventcore_testing::fixtures::{Credit, LedgerEvent, stream};
use tokio::sync::mpsc;

/// One effect per credit; tells when it reacted.
struct Receipts(mpsc::UnboundedSender<Instant>);

impl Reactor<LedgerEvent> for Receipts {
    async fn react(&mut self, reaction: &mut Reaction, _: &LedgerEvent) -> Result<(), BoxError> {
        let _ = self.0.send(Instant::now());
        reaction.effect("receipts", serde_json::json!({}));
        Ok(())
    }
}

impl PgReactor<LedgerEvent> for Receipts {
    async fn react(
        &mut self,
        _: &mut sqlx::PgConnection,
        reaction: &mut Reaction,
        event: &LedgerEvent,
    ) -> Result<(), BoxError> {
        Reactor::react(self, reaction, event).await
    }
}

fn name() -> SubscriptionName {
    SubscriptionName::try_new("receipts").expect("name")
}

async fn measure<S, H>(
    label: &str,
    store: S,
    (handler, mut reacted): (H, mpsc::UnboundedReceiver<Instant>),
    samples: usize,
) where
    S: EventStore
        + eventcore::EventLog
        + eventcore::CheckpointStore
        + eventcore::SubscriptionLeases
        + Outbox
        + Clone
        + 'static,
    H: Handler<LedgerEvent>,
{
    let reactor = subscribe(
        store.clone(),
        store.clone(),
        name(),
        handler,
        SubscriptionConfig::default(),
    );
    let (delivered, mut deliveries) = mpsc::unbounded_channel();
    let dispatcher = dispatch(
        store.clone(),
        deliver_fn(move |_| {
            let delivered = delivered.clone();
            async move {
                let _ = delivered.send(Instant::now());
                Ok::<(), BoxError>(())
            }
        }),
        DispatchConfig::default(),
    );
    let mut latencies = Vec::with_capacity(samples);
    let mut to_reaction = Vec::with_capacity(samples);
    for i in 0..samples + 50 {
        let account = stream(&format!("account-{}", i % 100));
        execute(&store, Credit { account, amount: 1 })
            .await
            .expect("credit");
        let committed = Instant::now();
        let at = tokio::time::timeout(Duration::from_secs(10), deliveries.recv())
            .await
            .expect("an effect within 10 s")
            .expect("the dispatcher runs");
        let began = reacted.recv().await.expect("the reactor ran");
        // A replay's reaction (rolled back, run again) is drained here.
        while reacted.try_recv().is_ok() {}
        if i >= 50 {
            latencies.push(at.saturating_duration_since(committed));
            to_reaction.push(began.saturating_duration_since(committed));
        }
        // Idle between events.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    dispatcher.stop().await;
    reactor.stop().await.expect("the reactor stops");
    latencies.sort();
    to_reaction.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |all: &[Duration], q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((all.len() as f64 * q).ceil() as usize).clamp(1, all.len()) - 1;
        ms(all[i])
    };
    println!(
        "| {label} | {samples} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
        at(&latencies, 0.50),
        at(&latencies, 0.99),
        ms(*latencies.last().expect("samples")),
        at(&to_reaction, 0.50),
        at(&to_reaction, 0.99),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let samples: usize = std::env::var("SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    println!("| store | samples | p50 ms | p99 ms | max ms | to reaction p50 | to reaction p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|");

    let memory = eventcore_memory::InMemoryEventStore::new();
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = eventcore_memory::Reacting::new(&memory, name(), Receipts(tx));
    measure("memory", memory, (handler, rx), samples).await;

    let path =
        std::env::temp_dir().join(format!("eventcore-reactor-bench-{}.db", std::process::id()));
    let sqlite =
        eventcore_sqlite::SqliteEventStore::open(&path, eventcore_sqlite::SqliteConfig::default())
            .await
            .expect("open SQLite");
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = eventcore_sqlite::Reacting::new(&sqlite, name(), Receipts(tx)).expect("reactor");
    measure("SQLite (synchronous=FULL)", sqlite, (handler, rx), samples).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let _ = std::fs::remove_dir_all(format!("{}.leases", path.display()));

    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let schema = SchemaName::try_new(format!("bench_reactor_{}", std::process::id()))
                .expect("schema");
            let store =
                PostgresEventStore::connect_with(&url, PostgresConfig::default().schema(schema))
                    .await
                    .expect("connect");
            store.migrate().await.expect("migrate");
            let (tx, rx) = mpsc::unbounded_channel();
            let handler = ExactlyOnce::reactor(store.clone(), name(), Receipts(tx));
            measure("PostgreSQL", store, (handler, rx), samples).await;
        }
        _ => println!("(PostgreSQL skipped: DATABASE_URL is unset)"),
    }
}
