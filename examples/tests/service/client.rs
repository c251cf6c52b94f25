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
    /// The `Link` header, as sent.
    pub link: Option<String>,
    /// The `Eventcore-Position` header of a write's answer.
    pub position: Option<String>,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// The target of the `Link` header's link with relation `rel`
    /// (RFC 8288: `<target>; rel="rel"`, comma-separated).
    pub fn link(&self, rel: &str) -> Option<String> {
        let wanted = format!("rel=\"{rel}\"");
        self.link.as_deref()?.split(',').find_map(|link| {
            let (target, params) = link.trim().split_once(';')?;
            params.split(';').any(|p| p.trim() == wanted).then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
        })
    }
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
    let link = response
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let position = response
        .headers()
        .get(service::POSITION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8(bytes.to_vec())?;
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Reply {
        status,
        content_type,
        replayed,
        link,
        position,
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
        Service::start_with(backend, service::Limits::default()).await
    }

    pub async fn start_with(backend: Backend, limits: service::Limits) -> Service {
        Service::start_with_outputs(backend, limits, service::Outputs::default()).await
    }

    pub async fn start_with_outputs(
        backend: Backend,
        limits: service::Limits,
        outputs: service::Outputs,
    ) -> Service {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let running = service::start_with_outputs(backend, listener, shutdown, limits, outputs)
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
    let schema = format!("bank_service_{}_{}", std::process::id(), fastrand::u32(..));
    postgres_store_in(&schema).await
}

/// A migrated store on schema `schema`: called twice, two processes on one
/// database.
pub async fn postgres_store_in(schema: &str) -> PostgresEventStore {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL: run ./scripts/test");
    let schema = schema.to_owned();
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

/// A TCP proxy to the test's PostgreSQL server that can be cut (every
/// connection closed, new ones dropped at once) and restored.
pub struct Proxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy port");
        let port = listener.local_addr().expect("addr").port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (accept_up, accept_links) = (up.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                accept_links.lock().unwrap().push(link);
            }
        });
        Proxy { port, up, links }
    }

    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A migrated store in a schema of its own, reached through a [`Proxy`].
pub async fn postgres_store_behind_proxy() -> (PostgresEventStore, Proxy) {
    use std::str::FromStr;
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL: run ./scripts/test");
    let options = sqlx::postgres::PgConnectOptions::from_str(&url).expect("a URL");
    let host = match options.get_host() {
        "localhost" => "127.0.0.1",
        other => other,
    };
    let target: SocketAddr = format!("{host}:{}", options.get_port())
        .parse()
        .expect("the test server on a loopback address");
    let proxy = Proxy::start(target).await;
    let schema = format!("bank_service_{}_{}", std::process::id(), fastrand::u32(..));
    let config = eventcore_postgres::PostgresConfig::default()
        .schema(eventcore_postgres::SchemaName::try_new(schema).expect("schema name"))
        .acquire_timeout(std::time::Duration::from_secs(1));
    let store = PostgresEventStore::connect_with_options(
        options.host("127.0.0.1").port(proxy.port),
        config,
    )
    .await
    .expect("connect");
    store.migrate().await.expect("migrate");
    (store, proxy)
}
