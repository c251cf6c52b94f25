//! Live wake-ups for readers of the global log, through LISTEN/NOTIFY.
//!
//! The append itself does not notify: a transaction that sends NOTIFY takes
//! a database-wide lock while it commits, which would make all writers
//! queue behind each other. Instead each store runs a small task that sends
//! one `pg_notify` on a connection of its own after its appends have
//! committed, coalescing the appends that happen while it is sending. A
//! reader's store LISTENs on another connection and wakes its readers.
//! Writers that do not notify (another program, a lost connection) are
//! caught by the readers' polling, which stays as the fallback.

use std::sync::{Arc, OnceLock, Weak};

use sqlx::{ConnectOptions, PgPool, postgres::PgConnectOptions, postgres::PgListener};
use tokio::sync::Notify;

#[derive(Debug)]
pub(crate) struct Notifier {
    channel: String,
    options: PgConnectOptions,
    /// Set by appends, taken by the sending task: one permit coalesces
    /// every append that happens while a notification is on its way.
    dirty: Arc<Notify>,
    sender: OnceLock<()>,
    /// Readers wait on this; the listening task wakes them all.
    woken: Arc<Notify>,
    listener: OnceLock<()>,
}

impl Notifier {
    pub(crate) fn new(channel: String, options: PgConnectOptions) -> Self {
        Notifier {
            channel,
            options,
            dirty: Arc::default(),
            sender: OnceLock::new(),
            woken: Arc::default(),
            listener: OnceLock::new(),
        }
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
    pub(crate) fn woken(self: &Arc<Self>, pool: &PgPool) -> tokio::sync::futures::OwnedNotified {
        self.listener.get_or_init(|| {
            let me = Arc::downgrade(self);
            tokio::spawn(listen_loop(
                me,
                pool.clone(),
                self.channel.clone(),
                self.woken.clone(),
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
    let mut conn: Option<sqlx::PgConnection> = None;
    loop {
        dirty.notified().await;
        let Some(notifier) = me.upgrade() else { return };
        if conn.is_none() {
            conn = notifier.options.connect().await.ok();
        }
        if let Some(c) = conn.as_mut() {
            let sent = sqlx::query("SELECT pg_notify($1, '')")
                .bind(&notifier.channel)
                .execute(c)
                .await;
            if sent.is_err() {
                // Reconnect next time; readers poll meanwhile.
                conn = None;
            }
        }
    }
}

async fn listen_loop(me: Weak<Notifier>, pool: PgPool, channel: String, woken: Arc<Notify>) {
    let Ok(mut listener) = PgListener::connect_with(&pool).await else {
        return;
    };
    if listener.listen(&channel).await.is_err() {
        return;
    }
    loop {
        // recv reconnects by itself after a lost connection.
        let received = listener.recv().await;
        if me.upgrade().is_none() {
            return;
        }
        woken.notify_waiters();
        if received.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}
