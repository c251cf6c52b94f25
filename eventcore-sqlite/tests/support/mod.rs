//! A fresh store per test, each in a file of its own under the build's
//! folder for test files (`target/tmp`, which `cargo clean` removes).

#![allow(dead_code, unreachable_pub)]

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use eventcore_sqlite::{SqliteConfig, SqliteEventStore};

/// A new file's path, unique to this test process and call.
pub fn fresh_path() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("eventcore-sqlite-tests");
    std::fs::create_dir_all(&dir).expect("a folder for the test files");
    dir.join(format!(
        "{}-{}-{}.db",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    ))
}

/// A store in a new file.
pub async fn fresh_store() -> SqliteEventStore {
    SqliteEventStore::open(fresh_path(), SqliteConfig::default())
        .await
        .expect("open a new SQLite file")
}
