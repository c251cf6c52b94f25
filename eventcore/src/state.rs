//! What a command declares about its state so that a folded state can be
//! reused: kept in a store's [`StateCache`](crate::StateCache) and saved as
//! a [`Snapshot`](crate::Snapshot).

use std::{any::Any, fmt, sync::Arc};

use serde::{Serialize, de::DeserializeOwned};

/// The identity of a command's folded state, declared by
/// [`CommandLogic::state_key`](crate::CommandLogic::state_key).
///
/// A declared state is reused: `execute` keeps it, keyed by this
/// declaration **and the set of streams the command reads**, in the store's
/// [`StateCache`](crate::StateCache) and in persisted snapshots, and hands
/// it to any later command with the same declaration over the same
/// streams, instead of folding the streams' whole history again.
///
/// # The rule
/// Two commands that declare equal keys over the same streams must fold
/// the same events into the same state. So the key names the state type
/// ([`new`](Self::new): a name, and a schema version to bump whenever the
/// state type or the fold changes), and [`with`](Self::with) adds **every
/// field of the command that [`apply`](crate::CommandLogic::apply) reads**.
/// `handle` may read any field: only the fold matters.
///
/// A transfer whose fold tracks the payer's balance reads `self.from` in
/// `apply`, so `from` belongs in the key:
///
/// ```
/// # use eventcore::{Refusal, CommandLogic, CommandStreams, Event, NewEvents, StateKey, StreamId, require};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # enum Ledger { Credited { account: StreamId, amount: i64 }, Debited { account: StreamId, amount: i64 } }
/// # impl Event for Ledger {
/// #     fn stream_id(&self) -> &StreamId { match self { Ledger::Credited { account, .. } | Ledger::Debited { account, .. } => account } }
/// #     fn event_type(&self) -> &'static str { match self { Ledger::Credited { .. } => "Credited", Ledger::Debited { .. } => "Debited" } }
/// # }
/// struct Transfer { from: StreamId, to: StreamId, amount: i64 }
/// # impl CommandStreams for Transfer {
/// #     fn streams(&self) -> Vec<StreamId> { vec![self.from.clone(), self.to.clone()] }
/// # }
///
/// impl CommandLogic for Transfer {
///     type Event = Ledger;
///     type State = i64; // the payer's balance
///     type Error = eventcore::Refusal;
///
///     fn apply(&self, balance: i64, event: &Ledger) -> i64 {
///         match event {
///             Ledger::Credited { account, amount } if *account == self.from => balance + amount,
///             Ledger::Debited { account, amount } if *account == self.from => balance - amount,
///             _ => balance,
///         }
///     }
///
///     fn handle(&self, &balance: &i64) -> Result<NewEvents<Ledger>, Refusal> {
///         require!(balance >= self.amount, "{} holds only {balance}", self.from);
///         # Ok(NewEvents::none())
///     }
///
///     fn state_key(&self) -> Option<StateKey<i64>> {
///         // Right: the fold depends on who pays.
///         Some(StateKey::new("payer-balance", 1).with(&self.from))
///     }
/// }
/// ```
///
/// **A wrong declaration** leaves `.with(&self.from)` out:
/// `StateKey::new("payer-balance", 1)`. A transfer from Alice to Bob and one
/// from Bob to Alice then read the same streams with equal keys, so the
/// second is handed the first one's state, *Alice's* balance, and lets Bob
/// spend money he does not have. Nothing can detect this at run time: the
/// versions match, only the meaning differs. When in doubt, add the field;
/// a key with a field too many only shares less. A command that declares no
/// key (the default) is never cached: it folds its streams on every
/// execution, always correct.
#[derive(Clone)]
pub struct StateKey<S> {
    name: &'static str,
    schema_version: u32,
    params: Result<String, Arc<serde_json::Error>>,
    codec: Codec<S>,
}

impl<S> fmt::Debug for StateKey<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateKey")
            .field("name", &self.name)
            .field("schema_version", &self.schema_version)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl<S> StateKey<S>
where
    S: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// A key for the state type named `name` (1 to 255 characters, no
    /// control characters; checked by `execute`) at `schema_version`.
    /// Snapshots saved under another schema version are ignored, so bump it
    /// whenever the state type or the fold changes.
    pub fn new(name: &'static str, schema_version: u32) -> Self {
        StateKey {
            name,
            schema_version,
            params: Ok(String::from("[")),
            codec: Codec::of(),
        }
    }
}

impl<S> StateKey<S> {
    /// Adds a field of the command that the fold depends on. Fields are
    /// compared by their JSON form, in the order they are added.
    ///
    /// A field that cannot be serialised makes `execute` fail with
    /// [`ExecuteError::InvalidStateName`](crate::ExecuteError::InvalidStateName).
    pub fn with(mut self, field: &impl Serialize) -> Self {
        if let Ok(params) = &mut self.params {
            match serde_json::to_string(field) {
                Ok(json) => {
                    if params.len() > 1 {
                        params.push(',');
                    }
                    params.push_str(&json);
                }
                Err(e) => self.params = Err(Arc::new(e)),
            }
        }
        self
    }

    /// The state type's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The state type's schema version.
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// The declared fields as a JSON array, or why one could not be serialised.
    pub(crate) fn params(&self) -> Result<String, Arc<serde_json::Error>> {
        self.params
            .as_ref()
            .map(|p| format!("{p}]"))
            .map_err(Arc::clone)
    }

    pub(crate) fn codec(&self) -> &Codec<S> {
        &self.codec
    }
}

/// What `execute` needs to do with a declared state without knowing its
/// bounds: function pointers made where the bounds were known.
pub(crate) struct Codec<S> {
    pub(crate) clone: fn(&S) -> S,
    pub(crate) encode: fn(&S) -> Result<String, serde_json::Error>,
    pub(crate) decode: fn(&str) -> Result<S, serde_json::Error>,
    pub(crate) erase: fn(S) -> Arc<dyn Any + Send + Sync>,
    pub(crate) view: fn(&(dyn Any + Send + Sync)) -> Option<&S>,
    pub(crate) type_id: fn() -> std::any::TypeId,
    /// Approximate heap and inline bytes: the length of its JSON form.
    pub(crate) size: fn(&S) -> usize,
}

impl<S> Clone for Codec<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Codec<S> {}

impl<S> Codec<S>
where
    S: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn of() -> Self {
        Codec {
            clone: S::clone,
            encode: |s| serde_json::to_string(s),
            decode: |text| serde_json::from_str(text),
            erase: |s| Arc::new(s),
            view: |any| any.downcast_ref::<S>(),
            type_id: std::any::TypeId::of::<S>,
            size: |s| json_size(s) + std::mem::size_of::<S>(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_kept_in_order_as_json() {
        let key = StateKey::<u64>::new("balance", 2).with(&"a").with(&7);
        assert_eq!(key.params().unwrap(), r#"["a",7]"#);
        assert_eq!(StateKey::<u64>::new("b", 1).params().unwrap(), "[]");
    }

    #[test]
    fn an_unserialisable_field_is_remembered() {
        let mut bad = std::collections::HashMap::new();
        bad.insert((1, 2), 3);
        let key = StateKey::<u64>::new("balance", 1).with(&bad).with(&1);
        assert!(key.params().is_err());
    }

    #[test]
    fn the_codec_round_trips_and_views_its_own_type_only() {
        let codec = Codec::<Vec<u32>>::of();
        let text = (codec.encode)(&vec![1, 2]).unwrap();
        assert_eq!((codec.decode)(&text).unwrap(), vec![1, 2]);
        let erased = (codec.erase)(vec![3]);
        assert_eq!((codec.view)(&*erased), Some(&vec![3]));
        assert!((Codec::<String>::of().view)(&*erased).is_none());
        assert_eq!(
            (codec.size)(&vec![1, 2]),
            5 + std::mem::size_of::<Vec<u32>>()
        );
    }
}
