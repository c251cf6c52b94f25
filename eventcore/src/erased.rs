//! What the execute loop and the cache need of folds without knowing their
//! types: erased folds, the slots of a state, and how to assemble it.

use std::{
    any::{Any, TypeId},
    sync::Arc,
};

use serde::Serialize;

use crate::{PendingEvent, RecordedEvent, StoreError, StreamId};

/// A folded part of a state, shared between the cache and commands.
#[doc(hidden)]
pub type Part = Arc<dyn ErasedFold>;

/// How the execute loop builds a folded command's state.
#[doc(hidden)]
pub struct FoldPlan<S> {
    pub(crate) slots: Vec<Slot>,
    pub(crate) assemble: fn(&[Part]) -> Option<S>,
}

impl<S> std::fmt::Debug for FoldPlan<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoldPlan")
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

/// One fold of a state and the stream it is folded from.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Slot {
    pub(crate) stream: StreamId,
    pub(crate) kind: FoldKind,
}

impl Slot {
    /// A slot that folds nothing: a declared stream no fold reads, kept for
    /// its version alone.
    pub(crate) fn version_only(stream: StreamId) -> Self {
        Slot {
            stream,
            kind: FoldKind {
                type_id: TypeId::of::<VersionOnly>(),
                event_type_id: TypeId::of::<()>(),
                name: "eventcore-version",
                schema_version: 1,
                make: || Box::new(VersionOnly),
                decode: |_| None,
            },
        }
    }
}

/// What identifies a fold type, and how to make an empty one.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct FoldKind {
    pub(crate) type_id: TypeId,
    pub(crate) event_type_id: TypeId,
    pub(crate) name: &'static str,
    pub(crate) schema_version: u32,
    pub(crate) make: fn() -> Box<dyn ErasedFold>,
    /// A fold from a snapshot's JSON form; `None` if it does not decode
    /// (or the fold is never snapshotted).
    pub(crate) decode: fn(&str) -> Option<Box<dyn ErasedFold>>,
}

impl std::fmt::Debug for FoldKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoldKind")
            .field("name", &self.name)
            .field("schema_version", &self.schema_version)
            .finish_non_exhaustive()
    }
}

impl FoldKind {
    /// Whether this is a fold of the state (not a declared stream kept for
    /// its version alone).
    pub(crate) fn folds(&self) -> bool {
        self.type_id != TypeId::of::<VersionOnly>()
    }
}

/// A fold with its type erased, for the cache and the execute loop.
#[doc(hidden)]
pub trait ErasedFold: Any + Send + Sync {
    /// Folds a stored event in, decoded as the fold's event type.
    fn apply_recorded(&mut self, event: &RecordedEvent) -> Result<(), StoreError>;

    /// Folds in an event a command just appended: `event` itself when it
    /// is of the fold's event type, else decoded from `pending`.
    fn apply_written(
        &mut self,
        event: &dyn Any,
        pending: Option<&PendingEvent>,
    ) -> Result<(), StoreError>;

    /// A copy to fold more events into.
    fn clone_box(&self) -> Box<dyn ErasedFold>;

    /// The fold as `Any`, to get its type back.
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;

    /// About how many bytes the fold takes: the length of its JSON form.
    fn size(&self) -> usize;

    /// The fold's JSON form, for a snapshot; `None` for a fold that is
    /// never snapshotted.
    fn encode(&self) -> Option<String>;
}

/// The length of `value`'s JSON form (0 if it cannot be serialised),
/// counted without keeping it.
pub(crate) fn json_size<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = ByteCounter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => 0,
    }
}

/// Counts the bytes written to it and keeps none.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The fold of a declared stream that no fold of the state reads.
#[derive(Debug, Clone, Copy)]
struct VersionOnly;

impl ErasedFold for VersionOnly {
    fn apply_recorded(&mut self, _: &RecordedEvent) -> Result<(), StoreError> {
        Ok(())
    }

    fn apply_written(&mut self, _: &dyn Any, _: Option<&PendingEvent>) -> Result<(), StoreError> {
        Ok(())
    }

    fn clone_box(&self) -> Box<dyn ErasedFold> {
        Box::new(*self)
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn size(&self) -> usize {
        0
    }

    fn encode(&self) -> Option<String> {
        None
    }
}
