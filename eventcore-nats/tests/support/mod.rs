//! NATS servers for the tests: the one `NATS_URL` names (`./scripts/test`
//! starts a throwaway one), or one of the test's own, started from the
//! `nats-server` binary, which the tests that restart it always use.

#![allow(dead_code, unreachable_pub)]

use std::{
    path::PathBuf,
    process::Stdio,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use eventcore_nats::{JetStreamConfig, JetStreamSink};
use tokio::process::{Child, Command};

/// A name unique to this test process and call, for streams and prefixes.
pub fn unique(kind: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{kind}{}x{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    )
}

/// A JetStream config with a stream and prefix no other test uses.
pub fn fresh_config() -> JetStreamConfig {
    JetStreamConfig::new(unique("S"), unique("t")).expect("a valid config")
}

/// A `nats-server -js` of the test's own, on a free loopback port, its
/// JetStream files in a folder of its own; killed when dropped.
pub struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Server {
    /// Starts a server and waits until it takes connections.
    pub async fn start() -> Server {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("eventcore-nats-tests")
            .join(unique("js"));
        std::fs::create_dir_all(&dir).expect("a folder for JetStream");
        let mut server = Server {
            child: None,
            port: free_port(),
            dir,
        };
        server.run().await;
        server
    }

    async fn run(&mut self) {
        let binary = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".to_owned());
        let child = Command::new(&binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {binary:?} ({e}): install it (apt-get install nats-server), \
                     or run the tests with ./scripts/test"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill nats-server");
        }
    }

    /// Starts the server again on the same port and files.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.run().await;
    }
}

/// A client that reconnects for as long as it takes.
pub async fn client(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|_| Duration::from_millis(50))
        .connect(url)
        .await
        .expect("connect to NATS")
}

/// The server of `NATS_URL`, or one of the test's own (kept alive by the
/// returned value).
pub async fn shared() -> (String, Option<Server>) {
    match std::env::var("NATS_URL") {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let server = Server::start().await;
            (server.url(), Some(server))
        }
    }
}

/// A sink on a fresh stream of the server at `url`.
pub async fn sink(url: &str, config: JetStreamConfig) -> JetStreamSink {
    JetStreamSink::new(client(url).await, config)
        .await
        .expect("the sink's stream")
}

/// Every message of the stream, in stream order, decoded.
pub async fn stored(
    url: &str,
    stream: &str,
) -> Vec<(u64, eventcore::Position, eventcore::RecordedEvent)> {
    let context = async_nats::jetstream::new(client(url).await);
    let mut stream = context.get_stream(stream).await.expect("the stream");
    let last = stream.info().await.expect("its info").state.last_sequence;
    let mut messages = Vec::new();
    for sequence in 1..=last {
        let message = stream
            .get_raw_message(sequence)
            .await
            .unwrap_or_else(|e| panic!("message {sequence}: {e}"));
        let (position, event) =
            eventcore_nats::decode(&message.headers, &message.payload).expect("a relayed event");
        messages.push((sequence, position, event));
    }
    messages
}
