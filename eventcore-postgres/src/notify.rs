//! Live wake-ups for readers of the global log, through LISTEN/NOTIFY.
//!
//! The append itself does not notify: a transaction that sends NOTIFY takes
//! a database-wide lock while it commits, which would make all writers
//! queue behind each other. Instead each store runs a small task that sends
//! one `pg_notify` on a connection borrowed from the store's pool after its
//! appends have committed, coalescing the appends that happen while it is
//! sending. A reader's store LISTENs on a session that holds one of the
//! pool's slots and wakes its readers.
//! Writers that do not notify (another program, a lost connection) are
//! caught by the readers' polling, which stays as the fallback.

use std::{
    sync::{
        Arc, OnceLock, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::Notify;

use crate::conn::ConnPool;

#[derive(Debug)]
pub(crate) struct Notifier {
    channel: String,
    conns: Arc<ConnPool>,
    /// Set by appends, taken by the sending task: one permit coalesces
    /// every append that happens while a notification is on its way.
    dirty: Arc<Notify>,
    sender: OnceLock<()>,
    /// Readers wait on this; the listening task wakes them all.
    woken: Arc<Notify>,
    listener: OnceLock<()>,
    /// Whether the listening task holds a LISTENing session right now.
    listening: Arc<AtomicBool>,
}

impl Notifier {
    pub(crate) fn new(channel: String, conns: Arc<ConnPool>) -> Self {
        Notifier {
            channel,
            conns,
            dirty: Arc::default(),
            sender: OnceLock::new(),
            woken: Arc::default(),
            listener: OnceLock::new(),
            listening: Arc::default(),
        }
    }

    /// The channel it sends and listens on.
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// Whether wake-ups arrive: the listening task is connected and
    /// LISTENing. While it is not, readers find new events by polling.
    pub(crate) fn listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    /// Called after an append committed events.
    pub(crate) fn committed(self: &Arc<Self>) {
        self.sender.get_or_init(|| {
            let me = Arc::downgrade(self);
            let dirty = self.dirty.clone();
            tokio::spawn(send_loop(me, dirty));
        });
        self.dirty.notify_one();
    }

    /// A future that completes on the next notification; registered now.
    pub(crate) fn woken(self: &Arc<Self>) -> tokio::sync::futures::OwnedNotified {
        self.listener.get_or_init(|| {
            let me = Arc::downgrade(self);
            tokio::spawn(listen_loop(
                me,
                self.conns.clone(),
                self.channel.clone(),
                self.woken.clone(),
                self.listening.clone(),
            ));
        });
        self.woken.clone().notified_owned()
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        // Lets the sending task see that the store is gone and end.
        self.dirty.notify_one();
    }
}

async fn send_loop(me: Weak<Notifier>, dirty: Arc<Notify>) {
    loop {
        dirty.notified().await;
        let Some(notifier) = me.upgrade() else { return };
        // A failed send tries once more at once (on another connection: the
        // pool closed the failed one), so a lost connection does not cost
        // the readers a wake-up.
        for _ in 0..2 {
            let Ok(mut lease) = notifier.conns.get("notify").await else {
                break;
            };
            let sent = sqlx::query("SELECT pg_notify($1, '')")
                .bind(&notifier.channel)
                .execute(lease.conn())
                .await;
            lease.settle(&sent);
            if sent.is_ok() {
                break;
            }
        }
    }
}

/// Longest wait between two attempts to (re)connect the listener.
const MAX_LISTEN_BACKOFF: Duration = Duration::from_secs(5);

/// Connects, LISTENs and wakes readers on each notification, for as long as
/// the store lives; reconnects with capped backoff when the connection or
/// the LISTEN fails (readers poll meanwhile, and are woken once when it is
/// back, in case they missed something).
async fn listen_loop(
    me: Weak<Notifier>,
    conns: Arc<ConnPool>,
    channel: String,
    woken: Arc<Notify>,
    listening: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if me.upgrade().is_none() {
            return;
        }
        // The session's slot in the store's budget; the one-connection
        // pool below is what sqlx's listener connects (and reconnects)
        // through.
        let Ok(slot) = conns.reserve_session("listen").await else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_LISTEN_BACKOFF);
            continue;
        };
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(conns.options().clone());
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(_) => {
                pool.close().await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_LISTEN_BACKOFF);
                continue;
            }
        };
        if listener.listen(&channel).await.is_err() {
            drop(listener);
            pool.close().await;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_LISTEN_BACKOFF);
            continue;
        }
        listening.store(true, Ordering::Relaxed);
        backoff = Duration::from_millis(50);
        woken.notify_waiters();
        loop {
            // `try_recv` reports a lost connection as `Ok(None)` after
            // reconnecting (eagerly, the default), or as an error.
            let received = listener.try_recv().await;
            if me.upgrade().is_none() {
                listening.store(false, Ordering::Relaxed);
                drop(listener);
                pool.close().await;
                return;
            }
            match received {
                Ok(Some(_)) => {
                    listening.store(true, Ordering::Relaxed);
                    woken.notify_waiters();
                }
                Ok(None) => {
                    // The connection was lost and sqlx has reconnected and
                    // LISTENs again (it reports a failed reconnect as an
                    // error): wake readers, who may have missed something.
                    listening.store(true, Ordering::Relaxed);
                    woken.notify_waiters();
                }
                Err(_) => {
                    listening.store(false, Ordering::Relaxed);
                    break;
                }
            }
        }
        drop(listener);
        pool.close().await;
        drop(slot);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_LISTEN_BACKOFF);
    }
}
