//! `bank-service`: the bank as an HTTP service (axum). A handler parses the
//! request, calls `execute` with the bank's command, and answers with the
//! account's new state; a subscription keeps the accounts read model.
//!
//! | Method | Path | What |
//! |---|---|---|
//! | POST | `/accounts/{id}` | `OpenAccount`, `Deposit` or `Withdraw` (a `type` tag); answers the account |
//! | GET | `/accounts/{id}` | the account: id, owner, balance, version |
//! | GET | `/accounts/{id}/events` | its history, paged with `after`/`before` cursors and `limit` |
//! | POST | `/transfers` | `{"from","to","amount"}`: one command over two streams |
//! | GET | `/accounts` | the read model, paged by id (`after`, `limit`); `min_position` waits until it shows a write |
//! | GET | `/health` | the store answers and the read model runs |
//!
//! Money is decimal dollars with at most two places in requests and
//! answers, integer cents in events. An `Idempotency-Key` header is the
//! command id: a retried request writes nothing more and gets the first
//! answer (with `Idempotent-Replayed: true`). Every write's answer carries
//! `Eventcore-Position: commit/sequence`, where its last event is in the
//! global log; `GET /accounts?min_position=...` with it waits (5 s at most,
//! then 503 `read-model-behind`) until the read model, whichever instance
//! keeps it, has applied that write: read-your-writes. Errors are
//! `application/problem+json`.

mod accounts;
mod http;
mod outputs;
mod problem;
mod views;

use std::{
    future::{Future, IntoFuture},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

pub use accounts::{AccountRow, Accounts, AccountsPage, EVENT_TYPES, SUBSCRIPTION};
use eventcore::{EventStore, SubscriptionHandle, SubscriptionReport};
use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};
use eventcore_postgres::PostgresEventStore;
pub use http::{MIN_POSITION_WAIT, POSITION_HEADER};
pub use outputs::{
    Endpoint, EndpointError, JETSTREAM_PREFIX, JETSTREAM_STREAM, Outputs, OutputsReport, RELAY,
    STATEMENTS, StatementsTo,
};
pub use problem::Problem;
use tokio::{net::TcpListener, sync::Mutex};
pub use views::{
    AccountView, AccountsList, EventView, Health, TransferView, cursor, event_view, parse_cursor,
    rfc3339,
};

/// The store the service runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// In memory: everything is lost when the process ends.
    Memory(InMemoryEventStore, InMemoryCheckpointStore),
    /// PostgreSQL (migrated by the caller).
    Postgres(PostgresEventStore),
    /// An SQLite file.
    Sqlite(eventcore_sqlite::SqliteEventStore),
}

/// What the handlers share: the store, the read model and its
/// subscription.
#[derive(Debug)]
pub struct App<S> {
    store: S,
    accounts: Accounts,
    backend: &'static str,
    subscription: Mutex<Option<SubscriptionHandle>>,
    /// Each account folded as far as the service has read it.
    folded: std::sync::Mutex<std::collections::HashMap<eventcore::StreamId, http::Folded>>,
}

/// A running service.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<Result<SubscriptionReport, ServiceError>>,
}

impl Running {
    /// Waits for the service to end (after its shutdown signal): requests
    /// in flight finished, the read model's subscription stopped with its
    /// checkpoint saved.
    ///
    /// # Errors
    /// The server's I/O error, or the subscription's.
    pub async fn finished(self) -> Result<SubscriptionReport, ServiceError> {
        self.task
            .await
            .map_err(|e| ServiceError::Task(e.to_string()))?
    }
}

/// Why the service could not start or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The read model could not be set up.
    #[error("the read model could not start")]
    ReadModel(#[source] eventcore::BoxError),
    /// Serving failed.
    #[error("serving failed")]
    Serve(#[source] std::io::Error),
    /// The read model's subscription failed.
    #[error("the read model's subscription failed")]
    Subscription(#[from] eventcore::SubscriptionError),
    /// The statements reactor could not start.
    #[error("the statements reactor could not start")]
    Outputs(#[source] eventcore::BoxError),
    /// The service's task panicked or was cancelled.
    #[error("the service's task ended abnormally: {0}")]
    Task(String),
}

/// How long the service waits, for a request and at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest a request may take, its body included; past it the
    /// client gets a 503 (with an `Idempotency-Key` it is safe to send it
    /// again: a command cut short either committed whole or not at all).
    pub request_timeout: Duration,
    /// After the shutdown signal, how long requests in flight may take to
    /// finish before the service stops anyway (a client that never
    /// finishes sending cannot hold the shutdown up).
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    /// 30 s each.
    fn default() -> Self {
        Limits {
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves the bank on `listener` until `shutdown` completes, then stops
/// taking connections, lets requests in flight finish (for
/// [`Limits::shutdown_grace`] at most), and stops the read model's
/// subscription (its checkpoint saved). [`Limits::default`] applies.
///
/// # Errors
/// [`ServiceError::ReadModel`] when the read model cannot start.
pub async fn start(
    backend: Backend,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, ServiceError> {
    start_with(backend, listener, shutdown, Limits::default()).await
}

/// [`start`] with `limits`.
///
/// # Errors
/// [`ServiceError::ReadModel`] when the read model cannot start.
pub async fn start_with(
    backend: Backend,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> Result<Running, ServiceError> {
    start_with_outputs(backend, listener, shutdown, limits, Outputs::default()).await
}

/// [`start_with`], also sending what `outputs` asks for: statements of
/// large withdrawals to an HTTP endpoint (a reactor and its dispatcher),
/// the events to JetStream (a relay). They stop with the service.
///
/// # Errors
/// [`ServiceError::ReadModel`] when the read model cannot start,
/// [`ServiceError::Outputs`] when the statements reactor cannot.
pub async fn start_with_outputs(
    backend: Backend,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
    outputs: Outputs,
) -> Result<Running, ServiceError> {
    let addr = listener.local_addr().map_err(ServiceError::Serve)?;
    let task = match backend {
        Backend::Memory(store, checkpoints) => {
            let (accounts, handle) = accounts::start_memory(&store, &checkpoints);
            let kept = checkpoints.clone();
            let started = outputs::Started::start(store.clone(), checkpoints, outputs, |r| {
                Ok(eventcore_memory::Reacting::with_checkpoints(
                    kept,
                    outputs::reactor_name(),
                    r,
                ))
            })
            .map_err(ServiceError::Outputs)?;
            spawn(
                App::new(store, accounts, "memory", handle),
                listener,
                shutdown,
                limits,
                started,
            )
        }
        Backend::Postgres(store) => {
            let (accounts, handle) = accounts::start_postgres(&store)
                .await
                .map_err(ServiceError::ReadModel)?;
            let started = outputs::Started::start(store.clone(), store.clone(), outputs, |r| {
                Ok(eventcore_postgres::ExactlyOnce::reactor(
                    store.clone(),
                    outputs::reactor_name(),
                    r,
                ))
            })
            .map_err(ServiceError::Outputs)?;
            spawn(
                App::new(store, accounts, "postgres", handle),
                listener,
                shutdown,
                limits,
                started,
            )
        }
        Backend::Sqlite(store) => {
            let (accounts, handle) =
                accounts::start_sqlite(&store).map_err(ServiceError::ReadModel)?;
            let started = outputs::Started::start(store.clone(), store.clone(), outputs, |r| {
                Ok(eventcore_sqlite::Reacting::new(
                    &store,
                    outputs::reactor_name(),
                    r,
                )?)
            })
            .map_err(ServiceError::Outputs)?;
            spawn(
                App::new(store, accounts, "sqlite", handle),
                listener,
                shutdown,
                limits,
                started,
            )
        }
    };
    Ok(Running { addr, task })
}

impl<S> App<S> {
    fn new(
        store: S,
        accounts: Accounts,
        backend: &'static str,
        handle: SubscriptionHandle,
    ) -> Self {
        App {
            store,
            accounts,
            backend,
            subscription: Mutex::new(Some(handle)),
            folded: std::sync::Mutex::default(),
        }
    }
}

fn spawn<S>(
    app: App<S>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
    started: outputs::Started,
) -> tokio::task::JoinHandle<Result<SubscriptionReport, ServiceError>>
where
    S: EventStore + Clone + Send + Sync + 'static,
{
    let app = Arc::new(app);
    let router = http::router(app.clone(), limits.request_timeout);
    tokio::spawn(async move {
        let (signalled, mut was_signalled) = tokio::sync::watch::channel(false);
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = signalled.send(true);
        });
        let grace_over = async move {
            let _ = was_signalled.wait_for(|s| *s).await;
            tokio::time::sleep(limits.shutdown_grace).await;
        };
        let served = tokio::select! {
            served = serve.into_future() => served,
            () = grace_over => {
                tracing::warn!(
                    target: "bank_service",
                    grace_ms = u64::try_from(limits.shutdown_grace.as_millis()).unwrap_or(u64::MAX),
                    "requests still in flight when the shutdown grace ran out; stopping anyway"
                );
                Ok(())
            }
        };
        let handle = app.subscription.lock().await.take();
        let report = match handle {
            Some(handle) => handle.stop().await?,
            None => SubscriptionReport::default(),
        };
        let sent = started.stop().await?;
        if let Some(statements) = sent.statements {
            tracing::info!(target: "bank_service", delivered = statements.delivered, failed = statements.failed, parked = statements.parked, "statements stopped");
        }
        if let Some(relay) = sent.relay {
            tracing::info!(target: "bank_service", published = relay.published, "relay to JetStream stopped");
        }
        tracing::info!(target: "bank_service", "stopped: read model checkpoint saved");
        served.map_err(ServiceError::Serve)?;
        Ok(report)
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
