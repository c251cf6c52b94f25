//! Read-side measurements: catching up a subscription on a long log, and
//! the latency from commit to handler while writes go on.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use eventcore::{
    BoxError, CheckpointStore, EventContext, EventLog, EventStore, Handler, LogQuery, StoreError,
    StreamId, StreamVersion, StreamWrites, SubscriptionConfig, SubscriptionLeases,
    SubscriptionName, subscribe,
};
use serde::Serialize;

use crate::bank::domain::{Amount, BankEvent};

/// What a read-side run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LogReport {
    /// `catch-up` or `live`.
    pub workload: String,
    /// Which store.
    pub store: String,
    /// Events written before (catch-up) or during (live) the measurement.
    pub events: u64,
    /// Seconds spent writing them (catch-up setup) or writing (live).
    pub write_secs: f64,
    /// Events the subscription handled.
    pub handled: u64,
    /// Catch-up: events handled per second.
    pub events_per_sec: f64,
    /// Live: latency from a write's commit to its handler, percentiles in ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
}

fn one_cent() -> Amount {
    Amount::try_new(1).unwrap_or_else(|_| unreachable!("1 is positive"))
}

fn account(tag: &str, i: u64) -> StreamId {
    StreamId::try_new(format!("log-{tag}-{i}"))
        .unwrap_or_else(|_| unreachable!("short printable id"))
}

/// Counts handled events and, for live runs, records latencies.
#[derive(Clone, Default)]
struct Probe {
    handled: Arc<Mutex<u64>>,
    committed: Arc<Mutex<HashMap<(StreamId, StreamVersion), Instant>>>,
    latencies: Arc<Mutex<Vec<u64>>>,
}

impl Probe {
    fn handled(&self) -> u64 {
        *self.handled.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counts events, and matches each with its commit time by (stream,
/// version): it sees every event of its streams in order, so the nth event
/// of a stream is its version n.
struct ProbeHandler {
    probe: Probe,
    seen_per_stream: HashMap<StreamId, u64>,
}

impl Handler<BankEvent> for ProbeHandler {
    async fn handle(&mut self, _: &EventContext, event: &BankEvent) -> Result<(), BoxError> {
        *self.probe.handled.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let stream = eventcore::Event::stream_id(event).clone();
        let version = self.seen_per_stream.entry(stream.clone()).or_default();
        *version += 1;
        let key = (stream, StreamVersion::new(*version));
        if let Some(at) = self
            .probe
            .committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
        {
            let micros = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.probe
                .latencies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(micros);
        }
        Ok(())
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

async fn run_until<L, C>(
    log: L,
    checkpoints: C,
    name: &str,
    prefix: &str,
    probe: &Probe,
    target: u64,
    limit: Duration,
) -> Result<f64, StoreError>
where
    L: EventLog + 'static,
    C: CheckpointStore + SubscriptionLeases + 'static,
{
    let name =
        SubscriptionName::try_new(name).unwrap_or_else(|_| unreachable!("short printable name"));
    let config = SubscriptionConfig::default()
        .with_filter(LogQuery::from_start(0).with_stream_prefix(prefix))
        .with_page_size(5_000)
        .with_poll_interval(Duration::from_millis(5));
    let started = Instant::now();
    let handler = ProbeHandler {
        probe: probe.clone(),
        seen_per_stream: HashMap::new(),
    };
    let handle = subscribe(log, checkpoints, name, handler, config);
    while probe.handled() < target && started.elapsed() < limit && !handle.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    handle.stop().await.map_err(|e| StoreError::Backend {
        operation: "subscription",
        source: Box::new(e),
    })?;
    Ok(secs)
}

/// Writes `events` one-cent deposits over 1,000 streams in bulk appends,
/// then measures how fast a fresh subscription handles them all.
///
/// # Errors
/// The store's error.
pub async fn catch_up<S, C>(
    store: S,
    checkpoints: C,
    store_name: &str,
    events: u64,
) -> Result<LogReport, StoreError>
where
    S: EventStore + EventLog + Clone + 'static,
    C: CheckpointStore + SubscriptionLeases + 'static,
{
    let tag = format!("{:08x}", fastrand::u32(..));
    let streams = 1_000u64.min(events.max(1));
    let written = Instant::now();
    let mut next_version = vec![0u64; streams as usize];
    let mut left = events;
    while left > 0 {
        let batch = left.min(10_000);
        let mut writes = StreamWrites::new();
        for i in 0..streams {
            writes.expect(
                account(&tag, i),
                StreamVersion::new(next_version[i as usize]),
            )?;
        }
        for n in 0..batch {
            let i = (events - left + n) % streams;
            writes.append(&BankEvent::Deposited {
                account: account(&tag, i),
                amount: one_cent(),
            })?;
            next_version[i as usize] += 1;
        }
        store.append(writes).await?;
        left -= batch;
    }
    let write_secs = written.elapsed().as_secs_f64();
    let probe = Probe::default();
    let secs = run_until(
        store,
        checkpoints,
        &format!("catch-up-{tag}"),
        &format!("log-{tag}-"),
        &probe,
        events,
        Duration::from_secs(600),
    )
    .await?;
    let handled = probe.handled();
    Ok(LogReport {
        workload: "catch-up".into(),
        store: store_name.into(),
        events,
        write_secs,
        handled,
        events_per_sec: handled as f64 / secs.max(1e-9),
        p50_ms: 0.0,
        p95_ms: 0.0,
        p99_ms: 0.0,
        max_ms: 0.0,
    })
}

/// Appends `rate` single-event deposits per second for `duration` while a
/// subscription follows, and measures commit-to-handler latency.
///
/// # Errors
/// The store's error.
pub async fn live<S, C>(
    store: S,
    checkpoints: C,
    store_name: &str,
    rate: u64,
    duration: Duration,
) -> Result<LogReport, StoreError>
where
    S: EventStore + EventLog + Clone + 'static,
    C: CheckpointStore + SubscriptionLeases + 'static,
{
    let tag = format!("{:08x}", fastrand::u32(..));
    let probe = Probe::default();
    let total = rate * duration.as_secs().max(1);
    let subscriber = {
        let (store, probe, tag) = (store.clone(), probe.clone(), tag.clone());
        tokio::spawn(async move {
            run_until(
                store,
                checkpoints,
                &format!("live-{tag}"),
                &format!("log-{tag}-"),
                &probe,
                total,
                Duration::from_secs(600),
            )
            .await
        })
    };
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut ticker = tokio::time::interval(interval);
    let streams = 100u64;
    let mut versions = vec![0u64; streams as usize];
    for n in 0..total {
        ticker.tick().await;
        let i = n % streams;
        let id = account(&tag, i);
        let mut writes = StreamWrites::new();
        writes.expect(id.clone(), StreamVersion::new(versions[i as usize]))?;
        writes.append(&BankEvent::Deposited {
            account: id.clone(),
            amount: one_cent(),
        })?;
        store.append(writes).await?;
        versions[i as usize] += 1;
        probe
            .committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                (id, StreamVersion::new(versions[i as usize])),
                Instant::now(),
            );
    }
    let write_secs = started.elapsed().as_secs_f64();
    match subscriber.await {
        Ok(result) => {
            result?;
        }
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
    let mut latencies =
        std::mem::take(&mut *probe.latencies.lock().unwrap_or_else(|p| p.into_inner()));
    latencies.sort_unstable();
    Ok(LogReport {
        workload: "live".into(),
        store: store_name.into(),
        events: total,
        write_secs,
        handled: probe.handled(),
        events_per_sec: probe.handled() as f64 / write_secs.max(1e-9),
        p50_ms: percentile(&latencies, 50.0),
        p95_ms: percentile(&latencies, 95.0),
        p99_ms: percentile(&latencies, 99.0),
        max_ms: latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
    })
}
