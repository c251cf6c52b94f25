//! Which events a store value shows, and the in-process state that the
//! default executor of those events keeps.

use std::sync::{Arc, OnceLock};

use crate::{CacheConfig, CommandQueue, StateCache};

/// The identity of the events a store value shows, returned by
/// [`EventStore::identity`](crate::EventStore::identity). A store makes one
/// when it is created and its clones share it; a wrapper that shows the
/// same events returns the wrapped store's. [`execute`](crate::execute) and
/// [`Executor::new`](crate::Executor::new) run commands with the kept
/// states and command queue of the store's identity, made on first use, so
/// that every value showing the same events shares them and no two sets of
/// events ever do.
#[derive(Clone, Default)]
pub struct StoreIdentity(Arc<OnceLock<Arc<InProcess>>>);

/// The identity's address, not the states kept for it.
impl std::fmt::Debug for StoreIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreIdentity({:p})", Arc::as_ptr(&self.0))
    }
}

impl StoreIdentity {
    /// A new identity, unlike every other.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `self` and `other` are one identity.
    pub fn same_as(&self, other: &StoreIdentity) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The default in-process state of these events.
    pub(crate) fn in_process(&self) -> &Arc<InProcess> {
        self.0
            .get_or_init(|| Arc::new(InProcess::new(CacheConfig::default())))
    }
}

/// What an executor keeps in process: folded states and the queue of
/// commands on the same streams.
pub(crate) struct InProcess {
    pub(crate) cache: StateCache,
    pub(crate) queue: CommandQueue,
}

/// The limits and how many states are kept, not the states.
impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("config", self.cache.config())
            .field("kept", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl InProcess {
    pub(crate) fn new(config: CacheConfig) -> Self {
        InProcess {
            cache: StateCache::new(config),
            queue: CommandQueue::new(),
        }
    }
}
