//! In-process queueing of commands that touch the same streams.
//!
//! Optimistic concurrency alone turns contention into conflicts: commands
//! on a hot stream read, decide, collide, back off and read again, and at
//! high concurrency most attempts are wasted (measured: 16 tasks on 10
//! accounts fell to ~120 commands/s with a p99 of 600 ms). Within one
//! process there is no need to collide: before each attempt, `execute`
//! takes an async lock per stripe of its streams, in ascending stripe order
//! (so two commands can never wait on each other in a cycle), and releases
//! them when the attempt ends. Commands on disjoint streams rarely share a
//! stripe; commands on the same streams queue in FIFO order instead of
//! conflicting. Other processes are still kept out by the store's version
//! check, and their conflicts are retried as before.

use std::sync::LazyLock;

use tokio::sync::{Mutex, MutexGuard};

use crate::StreamId;

const STRIPES: usize = 1024;

static LOCKS: LazyLock<Vec<Mutex<()>>> =
    LazyLock::new(|| (0..STRIPES).map(|_| Mutex::new(())).collect());

/// The stripe of a stream: a fixed hash (FNV-1a), so the order is the same
/// in every task.
fn stripe(stream: &StreamId) -> usize {
    let hash = stream
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    (hash % STRIPES as u64) as usize
}

/// Holds the stripes of a command's streams until dropped.
pub(crate) struct Held(#[allow(dead_code)] Vec<MutexGuard<'static, ()>>);

/// Waits for, and takes, the stripes of `streams`, in ascending order.
pub(crate) async fn enter(streams: &[StreamId]) -> Held {
    let mut stripes: Vec<usize> = streams.iter().map(stripe).collect();
    stripes.sort_unstable();
    stripes.dedup();
    let mut held = Vec::with_capacity(stripes.len());
    for s in stripes {
        held.push(LOCKS[s].lock().await);
    }
    Held(held)
}
