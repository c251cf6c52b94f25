//! Wake-ups for readers when another process (or this one) commits: a
//! thread polls SQLite's `data_version` on a connection of its own, which
//! changes whenever any other connection commits to the file.

use std::{
    path::PathBuf,
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::sync::Notify;

/// How often the watcher looks at the file.
pub(crate) const POLL: Duration = Duration::from_millis(5);

/// Starts the thread that notifies `appended` after every commit by any
/// connection of the file, for as long as `alive` can be upgraded.
pub(crate) fn start(path: PathBuf, appended: Arc<Notify>, alive: Weak<()>) {
    let spawned = std::thread::Builder::new()
        .name("eventcore-sqlite-watch".to_owned())
        .spawn(move || {
            let Ok(connection) = rusqlite::Connection::open(&path) else {
                return;
            };
            let version = |c: &rusqlite::Connection| -> Option<i64> {
                c.query_row("PRAGMA data_version", [], |row| row.get(0))
                    .ok()
            };
            let mut seen = version(&connection);
            while alive.upgrade().is_some() {
                std::thread::sleep(POLL);
                let now = version(&connection);
                if now != seen {
                    seen = now;
                    appended.notify_waiters();
                }
            }
        });
    // Without the thread, readers still poll at their interval.
    drop(spawned);
}
