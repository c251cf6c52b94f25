//! State made of per-stream folds: small states, each folded from the
//! events of one stream, that know nothing of the command deciding on them.

use std::{
    any::{Any, TypeId},
    sync::Arc,
};

use serde::{Serialize, de::DeserializeOwned};

use crate::{
    CommandLogic, CommandStreams, Event, NewEvents, PendingEvent, RecordedEvent, StoreError,
    StreamId, StreamVersion,
    erased::{ErasedFold, FoldKind, FoldPlan, Part, Slot},
};

/// A state folded from the events of **one** stream: an account's balance,
/// an order's lines, a course's seats.
///
/// A fold's identity is its type, its [`NAME`](Self::NAME) and
/// [`SCHEMA_VERSION`](Self::SCHEMA_VERSION), and the stream it is folded
/// from. Nothing of a command enters it: [`apply`](Self::apply) sees the
/// fold and one event, so a fold cannot depend on who asks, and one kept
/// fold of an account serves every command that reads that account (a
/// deposit, a withdrawal, either side of a transfer). A type that holds a
/// reference to a command is refused by the compiler (a fold is `'static`
/// and deserialisable).
///
/// Each fold decodes its own event type, so a command over an order and two
/// warehouses needs no event enum spanning both.
///
/// ```
/// use eventcore::{Event, Fold, StreamId};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize, Event)]
/// enum Ledger {
///     Credited { #[stream] account: StreamId, amount: u64 },
///     Debited { #[stream] account: StreamId, amount: u64 },
/// }
///
/// /// What an account holds.
/// #[derive(Debug, Default, Clone, Serialize, Deserialize)]
/// struct Balance(u64);
///
/// impl Fold for Balance {
///     type Event = Ledger;
///     const NAME: &'static str = "ledger-balance";
///
///     fn apply(&mut self, event: &Ledger) {
///         match event {
///             Ledger::Credited { amount, .. } => self.0 += amount,
///             Ledger::Debited { amount, .. } => self.0 = self.0.saturating_sub(*amount),
///         }
///     }
/// }
/// ```
pub trait Fold: Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The events of the stream, decoded (and upcast) for this fold.
    type Event: Event;

    /// A stable name for this fold (1 to 255 characters, no control
    /// characters), kept with its snapshots.
    const NAME: &'static str;

    /// Bump it whenever the fold's type or its `apply` changes: kept folds
    /// and snapshots of another version are never used.
    const SCHEMA_VERSION: u32 = 1;

    /// Folds one event of the stream into the state.
    fn apply(&mut self, event: &Self::Event);
}

/// A command whose state is made of per-stream [`Fold`]s: the one kind of
/// kept state that cannot be declared wrong.
///
/// [`folds`](Self::folds) names the stream of each fold of the
/// [`State`](Self::State) (a fold type, held in an `Arc`, or a tuple of up
/// to eight of them); `execute` keeps each fold per stream in the
/// executor's [`StateCache`](crate::StateCache), shared by every command
/// that folds that stream the same way. A command whose folds are all kept
/// decides at once and appends with their versions: one round trip. A fold
/// made stale by another writer costs a conflict, then a read of the tails
/// of the streams. A command that implements `Decide` is a
/// [`CommandLogic`] (do not implement both).
///
/// ```
/// use std::sync::Arc;
/// use eventcore::{Command, Decide, Event, Fold, NewEvents, Refusal, StreamId, execute, require};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize, Event)]
/// enum Ledger {
///     Credited { #[stream] account: StreamId, amount: u64 },
///     Debited { #[stream] account: StreamId, amount: u64 },
/// }
///
/// #[derive(Debug, Default, Clone, Serialize, Deserialize)]
/// struct Balance(u64);
///
/// impl Fold for Balance {
///     type Event = Ledger;
///     const NAME: &'static str = "ledger-balance";
///     fn apply(&mut self, event: &Ledger) {
///         match event {
///             Ledger::Credited { amount, .. } => self.0 += amount,
///             Ledger::Debited { amount, .. } => self.0 = self.0.saturating_sub(*amount),
///         }
///     }
/// }
///
/// #[derive(Command)]
/// struct Transfer { #[stream] from: StreamId, #[stream] to: StreamId, amount: u64 }
///
/// impl Decide for Transfer {
///     type Event = Ledger;
///     type State = (Arc<Balance>, Arc<Balance>);
///     type Error = Refusal;
///
///     fn folds(&self) -> (&StreamId, &StreamId) {
///         (&self.from, &self.to)
///     }
///
///     fn handle(&self, (from, _to): &Self::State) -> Result<NewEvents<Ledger>, Refusal> {
///         require!(from.0 >= self.amount, "{} holds only {}", self.from, from.0);
///         Ok(vec![
///             Ledger::Debited { account: self.from.clone(), amount: self.amount },
///             Ledger::Credited { account: self.to.clone(), amount: self.amount },
///         ]
///         .into())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use eventcore::{EventStore, StreamVersion, StreamWrites};
/// let store = eventcore_memory::InMemoryEventStore::new();
/// let (alice, bob) = (StreamId::try_new("alice").unwrap(), StreamId::try_new("bob").unwrap());
/// # let mut writes = StreamWrites::new();
/// # writes.expect(alice.clone(), StreamVersion::INITIAL).unwrap();
/// # writes.append(&Ledger::Credited { account: alice.clone(), amount: 10 }).unwrap();
/// # store.append(writes).await.unwrap();
/// let pay = |amount| Transfer { from: alice.clone(), to: bob.clone(), amount };
/// execute(&store, pay(6)).await.unwrap();
/// // Decided on the kept folds of both accounts: no read.
/// assert!(execute(&store, pay(6)).await.is_err(), "alice holds only 4");
/// # }
/// ```
pub trait Decide: CommandStreams + Send + Sync {
    /// The events this command writes.
    type Event: Event;
    /// The folds it decides on: `Arc<F>` for one fold, a tuple of
    /// `Arc`s for several.
    type State: FoldState;
    /// Why the command refuses (see [`CommandLogic::Error`]).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The stream each fold of the state is folded from, in the state's
    /// order: `&self.account` for one, `(&self.from, &self.to)` for two.
    /// Two folds may read the same stream. Every declared stream
    /// ([`CommandStreams::streams`]) is read and version-checked; a fold's
    /// stream that is not declared is read and checked too.
    fn folds(&self) -> <Self::State as FoldState>::Streams<'_>;

    /// Decides which events to append, or refuses, on the folds (see
    /// [`CommandLogic::handle`]).
    ///
    /// # Errors
    /// The command's [`Error`](Self::Error) when a business rule does not
    /// hold.
    fn handle(&self, state: &Self::State) -> Result<NewEvents<Self::Event>, Self::Error>;
}

impl<C: Decide> CommandLogic for C {
    type Event = C::Event;
    type State = C::State;
    type Error = C::Error;

    /// Applies `event` to every fold of its stream; `execute` does not call
    /// it (it folds each stream's events with the fold's own event type),
    /// but the test kit's replay does.
    fn apply(&self, mut state: Self::State, event: &Self::Event) -> Self::State {
        state.apply_event(self.folds(), event);
        state
    }

    fn handle(&self, state: &Self::State) -> Result<NewEvents<Self::Event>, Self::Error> {
        Decide::handle(self, state)
    }

    fn fold_plan(&self) -> Option<FoldPlan<Self::State>> {
        let mut slots = Vec::new();
        C::State::slots(self.folds(), &mut slots);
        Some(FoldPlan {
            slots,
            assemble: C::State::assemble,
        })
    }
}

/// A state made of folds, each over a stream named by the command: a fold
/// in an `Arc` (`Arc<Balance>`), a tuple of them (`(Arc<Balance>,
/// Arc<Balance>)`), or a struct whose fields are folds, with
/// `#[derive(FoldState)]`: the folds are then named by the state's fields,
/// and the command names their streams field for field in the generated
/// `{State}Streams`. The folds are shared with the executor's cache, so a
/// command deciding on kept folds copies none of them.
///
/// ```
/// use std::sync::Arc;
/// use eventcore::{Command, Decide, Event, Fold, FoldState, NewEvents, Refusal, StreamId, require};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize, Event)]
/// enum Shop {
///     Placed { #[stream] order: StreamId, quantity: u64 },
///     Stocked { #[stream] warehouse: StreamId, quantity: u64 },
///     Reserved { #[stream] warehouse: StreamId, quantity: u64 },
/// }
///
/// #[derive(Debug, Default, Clone, Serialize, Deserialize)]
/// struct Ordered(u64);
/// impl Fold for Ordered {
///     type Event = Shop;
///     const NAME: &'static str = "ordered";
///     fn apply(&mut self, event: &Shop) {
///         if let Shop::Placed { quantity, .. } = event { self.0 += quantity }
///     }
/// }
///
/// #[derive(Debug, Default, Clone, Serialize, Deserialize)]
/// struct OnHand(u64);
/// impl Fold for OnHand {
///     type Event = Shop;
///     const NAME: &'static str = "on-hand";
///     fn apply(&mut self, event: &Shop) {
///         match event {
///             Shop::Stocked { quantity, .. } => self.0 += quantity,
///             Shop::Reserved { quantity, .. } => self.0 -= quantity,
///             Shop::Placed { .. } => {}
///         }
///     }
/// }
///
/// /// What a reservation decides on, one fold per field.
/// #[derive(Debug, Default, FoldState)]
/// struct Reservation { order: Arc<Ordered>, stock: Arc<OnHand> }
///
/// #[derive(Command)]
/// struct Reserve { #[stream] order: StreamId, #[stream] warehouse: StreamId }
///
/// impl Decide for Reserve {
///     type Event = Shop;
///     type State = Reservation;
///     type Error = Refusal;
///     fn folds(&self) -> ReservationStreams<'_> {
///         ReservationStreams { order: &self.order, stock: &self.warehouse }
///     }
///     fn handle(&self, state: &Reservation) -> Result<NewEvents<Shop>, Refusal> {
///         require!(state.stock.0 >= state.order.0, "only {} on hand", state.stock.0);
///         Ok(vec![Shop::Reserved { warehouse: self.warehouse.clone(), quantity: state.order.0 }].into())
///     }
/// }
/// # let id = |s: &str| StreamId::try_new(s).unwrap();
/// # let r = Reserve { order: id("o"), warehouse: id("w") };
/// # assert!(eventcore::CommandLogic::fold_plan(&r).is_some());
/// ```
pub trait FoldState: Default + Send + Sync + Sized + 'static {
    /// The stream of each fold: `&StreamId`, or a tuple of them, or the
    /// `{State}Streams` struct of a derived state.
    type Streams<'a>;

    /// How many folds the state holds.
    #[doc(hidden)]
    const LEN: usize;

    /// Appends one slot per fold, in order; for `execute`.
    #[doc(hidden)]
    fn slots(streams: Self::Streams<'_>, out: &mut Vec<Slot>);

    /// The state from one folded part per slot; `None` if a part is of
    /// another type (never, for parts made from the slots).
    #[doc(hidden)]
    fn assemble(parts: &[Part]) -> Option<Self>;

    /// Applies a command's event to the folds of its stream (converted
    /// through its JSON form when a fold reads another event type).
    #[doc(hidden)]
    fn apply_event<E: Event>(&mut self, streams: Self::Streams<'_>, event: &E);
}

impl Slot {
    /// A slot for fold `F` over `stream`.
    pub fn of<F: Fold>(stream: &StreamId) -> Self {
        Slot {
            stream: stream.clone(),
            kind: FoldKind::of::<F>(),
        }
    }
}

impl FoldKind {
    pub(crate) fn of<F: Fold>() -> Self {
        FoldKind {
            type_id: TypeId::of::<F>(),
            event_type_id: TypeId::of::<F::Event>(),
            name: F::NAME,
            schema_version: F::SCHEMA_VERSION,
            make: || Box::new(F::default()),
            decode: |json| {
                serde_json::from_str::<F>(json)
                    .ok()
                    .map(|f| Box::new(f) as Box<dyn ErasedFold>)
            },
        }
    }
}

impl<F: Fold> ErasedFold for F {
    fn apply_recorded(&mut self, event: &RecordedEvent) -> Result<(), StoreError> {
        let event: F::Event = event.decode()?;
        self.apply(&event);
        Ok(())
    }

    fn apply_written(
        &mut self,
        event: &dyn Any,
        pending: Option<&PendingEvent>,
    ) -> Result<(), StoreError> {
        if let Some(event) = event.downcast_ref::<F::Event>() {
            self.apply(event);
            return Ok(());
        }
        let Some(pending) = pending else {
            return Err(StoreError::Unsupported {
                what: "folding an event of another type without its payload",
                operation: "apply_written",
                store: "the execute loop",
            });
        };
        let recorded = RecordedEvent::new(
            pending.stream_id().clone(),
            StreamVersion::INITIAL,
            0,
            pending.event_type().to_owned(),
            pending.payload().to_owned(),
        )
        .with_schema_version(pending.schema_version());
        self.apply_recorded(&recorded)
    }

    fn clone_box(&self) -> Box<dyn ErasedFold> {
        Box::new(self.clone())
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn size(&self) -> usize {
        crate::erased::json_size(self) + std::mem::size_of::<F>()
    }

    fn encode(&self) -> Option<String> {
        serde_json::to_string(self).ok()
    }
}

/// `part` as the fold `F`, sharing it.
fn downcast<F: Fold>(part: &Part) -> Option<Arc<F>> {
    Arc::clone(part).into_any().downcast::<F>().ok()
}

/// Applies a command's event to one fold if it is of the fold's stream.
fn apply_to<F: Fold, E: Event>(fold: &mut Arc<F>, stream: &StreamId, event: &E) {
    if event.stream_id() != stream {
        return;
    }
    let converted;
    let event: &F::Event = match (event as &dyn Any).downcast_ref::<F::Event>() {
        Some(same) => same,
        None => match serde_json::to_value(event).and_then(serde_json::from_value) {
            Ok(other) => {
                converted = other;
                &converted
            }
            // Not an event of this fold's type: nothing it folds.
            Err(_) => return,
        },
    };
    Arc::make_mut(fold).apply(event);
}

impl<F: Fold> FoldState for Arc<F> {
    type Streams<'a> = &'a StreamId;
    const LEN: usize = 1;

    fn slots(stream: &StreamId, out: &mut Vec<Slot>) {
        out.push(Slot::of::<F>(stream));
    }

    fn assemble(parts: &[Part]) -> Option<Self> {
        match parts {
            [part] => downcast(part),
            _ => None,
        }
    }

    fn apply_event<E: Event>(&mut self, stream: &StreamId, event: &E) {
        apply_to(self, stream, event);
    }
}

macro_rules! tuple_fold_state {
    ($($fold:ident $index:tt),+) => {
        impl<$($fold: Fold),+> FoldState for ($(Arc<$fold>,)+) {
            type Streams<'a> = ($(tuple_fold_state!(@stream $fold),)+);
            const LEN: usize = 0 $(+ tuple_fold_state!(@one $fold))+;

            fn slots(streams: Self::Streams<'_>, out: &mut Vec<Slot>) {
                $(out.push(Slot::of::<$fold>(streams.$index));)+
            }

            fn assemble(parts: &[Part]) -> Option<Self> {
                Some(($(downcast::<$fold>(parts.get($index)?)?,)+))
            }

            fn apply_event<Ev: Event>(&mut self, streams: Self::Streams<'_>, event: &Ev) {
                $(apply_to(&mut self.$index, streams.$index, event);)+
            }
        }
    };
    (@stream $fold:ident) => { &'a StreamId };
    (@one $fold:ident) => { 1 };
}

tuple_fold_state!(A 0);
tuple_fold_state!(A 0, B 1);
tuple_fold_state!(A 0, B 1, C 2);
tuple_fold_state!(A 0, B 1, C 2, D 3);
tuple_fold_state!(A 0, B 1, C 2, D 3, E 4);
tuple_fold_state!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_fold_state!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_fold_state!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    enum Ev {
        Added { stream: StreamId, n: u64 },
    }

    impl Event for Ev {
        fn stream_id(&self) -> &StreamId {
            match self {
                Ev::Added { stream, .. } => stream,
            }
        }
        fn event_type(&self) -> &'static str {
            "Added"
        }
    }

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    struct Sum(u64);

    impl Fold for Sum {
        type Event = Ev;
        const NAME: &'static str = "sum";
        fn apply(&mut self, Ev::Added { n, .. }: &Ev) {
            self.0 += n;
        }
    }

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    struct Count(u64);

    impl Fold for Count {
        type Event = Ev;
        const NAME: &'static str = "count";
        const SCHEMA_VERSION: u32 = 3;
        fn apply(&mut self, _: &Ev) {
            self.0 += 1;
        }
    }

    fn id(s: &str) -> StreamId {
        StreamId::try_new(s).unwrap()
    }

    #[test]
    fn a_tuple_names_one_slot_per_fold_in_order() {
        let (a, b) = (id("a"), id("b"));
        let mut slots = Vec::new();
        <(Arc<Sum>, Arc<Count>)>::slots((&a, &b), &mut slots);
        let named: Vec<_> = slots
            .iter()
            .map(|s| (s.stream.as_str(), s.kind.name, s.kind.schema_version))
            .collect();
        assert_eq!(named, [("a", "sum", 1), ("b", "count", 3)]);
    }

    #[test]
    fn parts_assemble_into_the_state_they_were_made_for() {
        let parts: Vec<Part> = vec![Arc::new(Sum(4)), Arc::new(Count(2))];
        let (sum, count) = <(Arc<Sum>, Arc<Count>)>::assemble(&parts).unwrap();
        assert_eq!((sum.0, count.0), (4, 2));
        assert!(<(Arc<Count>, Arc<Sum>)>::assemble(&parts).is_none());
        assert!(<Arc<Sum>>::assemble(&parts).is_none(), "one part per slot");
    }

    #[test]
    fn a_commands_event_reaches_only_the_folds_of_its_stream() {
        let (a, b) = (id("a"), id("b"));
        let mut state = <(Arc<Sum>, Arc<Sum>)>::default();
        state.apply_event(
            (&a, &b),
            &Ev::Added {
                stream: b.clone(),
                n: 5,
            },
        );
        assert_eq!((state.0.0, state.1.0), (0, 5));
    }

    #[test]
    fn a_folds_size_is_its_json_length_and_its_inline_size() {
        assert_eq!(ErasedFold::size(&Sum(123)), 3 + std::mem::size_of::<Sum>());
    }

    #[test]
    fn an_appended_event_is_folded_without_its_payload_when_the_types_match() {
        let mut sum = Sum(1);
        let event = Ev::Added {
            stream: id("a"),
            n: 2,
        };
        ErasedFold::apply_written(&mut sum, &event, None).unwrap();
        assert_eq!(sum, Sum(3));
        let other = 7u8;
        assert!(ErasedFold::apply_written(&mut sum, &other, None).is_err());
    }
}
