//! A small HTTP/1.1 client (hyper), one connection per request, and the
//! service started on a loopback port for a test.

use std::net::SocketAddr;

use eventcore_examples::service::{self, Backend, Running};
use eventcore_postgres::PostgresEventStore;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::oneshot;

/// An answer: status, headers, body text and its JSON (Null if none).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub replayed: bool,
    pub text: String,
    pub json: Value,
}

/// Sends one request on a new connection.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(hyper::body::Bytes::from(
        body.unwrap_or_default().to_owned(),
    )))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let bytes = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8(bytes.to_vec())?;
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Reply {
        status,
        content_type,
        replayed,
        text,
        json,
    })
}

/// A service started for one test, and how to stop it.
pub struct Service {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    running: Option<Running>,
}

impl Service {
    pub async fn start(backend: Backend) -> Service {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let (stop, stopped) = oneshot::channel::<()>();
        let running = service::start(backend, listener, async move {
            let _ = stopped.await;
        })
        .await
        .expect("the service starts");
        Service {
            addr: running.addr,
            stop: Some(stop),
            running: Some(running),
        }
    }

    pub async fn send(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        send(self.addr, method, path, &[], body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        send(self.addr, method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Signals shutdown (requests in flight still finish).
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Signals shutdown and waits until the service has ended.
    pub async fn stop(self) -> eventcore::SubscriptionReport {
        self.stop_result().await.expect("a clean stop")
    }

    /// As [`stop`](Self::stop), returning how the service ended.
    pub async fn stop_result(
        mut self,
    ) -> Result<eventcore::SubscriptionReport, eventcore_examples::service::ServiceError> {
        self.signal_stop();
        self.running.take().expect("running").finished().await
    }
}

/// A migrated PostgreSQL store in a schema of its own.
pub async fn postgres_store() -> PostgresEventStore {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL: run ./scripts/test");
    let schema = format!("bank_service_{}_{}", std::process::id(), fastrand::u32(..));
    let config = eventcore_postgres::PostgresConfig::default()
        .schema(eventcore_postgres::SchemaName::try_new(schema).expect("schema name"));
    let store = PostgresEventStore::connect_with(&url, config)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store
}

/// A pool on the store's database and schema, for what a test does in SQL.
pub async fn sql(store: &PostgresEventStore) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(store.connect_options().clone())
        .await
        .expect("sql pool")
}
