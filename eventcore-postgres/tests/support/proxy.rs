//! A loopback TCP proxy in front of the test server that can lose a reply:
//! armed with a marker, it forwards the next client message holding the
//! marker, lets the server execute and commit it, swallows the reply and
//! drops the connection. The server has committed; the client sees a lost
//! connection: the fault `execute` cannot tell from one before the commit.
//! It can also cut every connection, refuse new ones, and delay traffic.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use sqlx::{ConnectOptions, postgres::PgConnectOptions};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

pub struct LossyProxy {
    addr: SocketAddr,
    armed: Arc<Mutex<Option<Vec<u8>>>>,
    fired: Arc<AtomicUsize>,
    relays: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    refusing: Arc<AtomicBool>,
    /// Microseconds each chunk waits before it is forwarded, either way.
    delay: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl LossyProxy {
    /// A proxy on a free loopback port, forwarding to `url`'s server.
    pub async fn start(url: &str) -> Self {
        let options: PgConnectOptions = url.parse().expect("a PostgreSQL URL");
        let upstream = format!("{}:{}", options.get_host(), options.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let armed: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let fired = Arc::new(AtomicUsize::new(0));
        let (armed_in, fired_in) = (armed.clone(), fired.clone());
        let relays: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let relays_in = relays.clone();
        let refusing = Arc::new(AtomicBool::new(false));
        let refusing_in = refusing.clone();
        let delay = Arc::new(AtomicU64::new(0));
        let delay_in = delay.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if refusing_in.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let task = tokio::spawn(relay(
                    client,
                    server,
                    armed_in.clone(),
                    fired_in.clone(),
                    delay_in.clone(),
                ));
                let mut relays = relays_in.lock().unwrap();
                relays.retain(|r| !r.is_finished());
                relays.push(task.abort_handle());
            }
        });
        LossyProxy {
            addr,
            armed,
            fired,
            relays,
            refusing,
            delay,
            accept,
        }
    }

    /// Delays every chunk of traffic by `delay` before forwarding it, in
    /// both directions, on open connections and new ones (zero: none).
    pub fn delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.delay.store(micros, Ordering::SeqCst);
    }

    /// `url` with its host and port replaced by the proxy's (TLS off: the
    /// proxy reads the protocol).
    pub fn url(&self, url: &str) -> String {
        let options: PgConnectOptions = url.parse().expect("a PostgreSQL URL");
        options
            .host("127.0.0.1")
            .port(self.addr.port())
            .ssl_mode(sqlx::postgres::PgSslMode::Disable)
            .to_url_lossy()
            .to_string()
    }

    /// The next client message that holds `marker` is executed and its
    /// reply lost (once).
    pub fn lose_reply_to(&self, marker: &[u8]) {
        *self.armed.lock().unwrap() = Some(marker.to_vec());
    }

    /// Cuts every connection open through the proxy (both sides see the
    /// connection closed); new ones are accepted as before. Returns how
    /// many were cut.
    pub fn cut_all(&self) -> usize {
        let relays = std::mem::take(&mut *self.relays.lock().unwrap());
        let n = relays.iter().filter(|r| !r.is_finished()).count();
        for relay in relays {
            relay.abort();
        }
        n
    }

    /// While on, new connections are closed as soon as they are accepted
    /// (a server that is down); open ones are left alone.
    pub fn refuse_new(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
    }

    /// How many replies were lost.
    pub fn lost(&self) -> usize {
        self.fired.load(Ordering::SeqCst)
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<Mutex<Option<Vec<u8>>>>,
    fired: Arc<AtomicUsize>,
    delay: Arc<AtomicU64>,
) {
    let pause = move || {
        let micros = delay.load(Ordering::SeqCst);
        async move {
            if micros > 0 {
                tokio::time::sleep(Duration::from_micros(micros)).await;
            }
        }
    };
    let pause_down = pause.clone();
    let doomed = Arc::new(AtomicBool::new(false));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let doomed_up = doomed.clone();
    // Both directions in this one task: cutting it (abort) closes both
    // sockets at once.
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            {
                let mut armed = armed.lock().unwrap();
                if let Some(marker) = armed.as_ref()
                    && chunk.windows(marker.len()).any(|w| w == marker.as_slice())
                {
                    *armed = None;
                    // Set before the server can see the message.
                    doomed_up.store(true, Ordering::SeqCst);
                }
            }
            pause().await;
            if server_write.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let down = async move {
        // Server to client: after the doomed message, hold everything back
        // until the statement completed (CommandComplete) and the implicit
        // transaction committed (ReadyForQuery), then drop both sides.
        let mut held: Vec<u8> = Vec::new();
        let mut completed = false;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !doomed.load(Ordering::SeqCst) {
                pause_down().await;
                if client_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                continue;
            }
            held.extend_from_slice(&buf[..n]);
            let mut committed = false;
            while held.len() >= 5 {
                let kind = held[0];
                let len = u32::from_be_bytes([held[1], held[2], held[3], held[4]]) as usize;
                if held.len() < 1 + len {
                    break;
                }
                held.drain(..1 + len);
                match kind {
                    b'C' => completed = true,
                    b'Z' if completed => committed = true,
                    _ => {}
                }
            }
            if committed {
                fired.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    };
    // When either direction ends, both halves of both sockets are dropped.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}
