//! Given/when/then: test a command's decision without a store.
//!
//! ```
//! use eventcore_testing::{fixtures::{Move, LedgerEvent, stream}, gwt::given};
//!
//! let (a, b) = (stream("a"), stream("b"));
//! given([LedgerEvent::Credited { account: a.clone(), amount: 10, from: None }])
//!     .when(Move { from: a.clone(), to: b.clone(), amount: 4 })
//!     .then_events([
//!         LedgerEvent::Debited { account: a.clone(), amount: 4 },
//!         LedgerEvent::Credited { account: b.clone(), amount: 4, from: Some(a.clone()) },
//!     ]);
//!
//! given([LedgerEvent::Credited { account: a.clone(), amount: 3, from: None }])
//!     .when(Move { from: a, to: b, amount: 4 })
//!     .then_rejected_with("cannot move 4");
//! ```

use std::fmt::Debug;

use eventcore::{CommandLogic, Event};

/// Past events, before a command is tried.
#[derive(Debug, Clone)]
pub struct Given<E> {
    events: Vec<E>,
}

/// Starts a scenario from past events. Like a store, the scenario passes
/// each event through its JSON form, so a type that does not round-trip
/// fails here.
pub fn given<E: Event>(events: impl IntoIterator<Item = E>) -> Given<E> {
    Given {
        events: events.into_iter().collect(),
    }
}

impl<E: Event + Debug> Given<E> {
    /// Folds the events of the command's declared streams (as `execute`
    /// would) and asks the command to decide.
    ///
    /// # Panics
    /// If an event does not survive its JSON round trip.
    pub fn when<C: CommandLogic<Event = E> + Debug>(self, command: C) -> When<C> {
        let declared = command.streams();
        let mut state = C::State::default();
        for event in &self.events {
            if !declared.contains(event.stream_id()) {
                continue;
            }
            let json = serde_json::to_string(event)
                .unwrap_or_else(|e| panic!("given event {event:?} does not serialise: {e}"));
            let back: E = serde_json::from_str(&json).unwrap_or_else(|e| {
                panic!("given event {event:?} does not deserialise from its own JSON {json}: {e}")
            });
            state = command.apply(state, &back);
        }
        let outcome = command.handle(&state).map(|events| events.into_vec());
        When {
            given: self.events,
            command,
            outcome,
        }
    }
}

/// A command's decision, ready to be checked.
#[derive(Debug)]
pub struct When<C: CommandLogic> {
    given: Vec<C::Event>,
    command: C,
    outcome: Result<Vec<C::Event>, C::Error>,
}

impl<C> When<C>
where
    C: CommandLogic + Debug,
    C::Event: Debug,
{
    /// The decision itself, for custom checks.
    pub fn outcome(&self) -> &Result<Vec<C::Event>, C::Error> {
        &self.outcome
    }

    fn report(&self, expected: &str) -> String {
        let mut lines = vec![String::new(), "given:".to_owned()];
        if self.given.is_empty() {
            lines.push("  (no events)".to_owned());
        }
        lines.extend(self.given.iter().map(|e| format!("  {e:?}")));
        lines.push(format!("when:\n  {:?}", self.command));
        lines.push(format!("then expected:\n  {expected}"));
        lines.push("but got:".to_owned());
        match &self.outcome {
            Ok(events) if events.is_empty() => lines.push("  no events".to_owned()),
            Ok(events) => lines.extend(events.iter().map(|e| format!("  {e:?}"))),
            Err(e) => lines.push(format!("  error: {e}")),
        }
        lines.join("\n")
    }

    fn check_declared(&self, events: &[C::Event]) {
        let declared = self.command.streams();
        if let Some(stray) = events.iter().find(|e| !declared.contains(e.stream_id())) {
            panic!(
                "{}\n(the event {stray:?} targets stream {}, which the command does not declare; execute would refuse it)",
                self.report("events for declared streams only"),
                stray.stream_id()
            );
        }
    }

    /// Asserts that the command decided exactly these events, in order.
    ///
    /// # Panics
    /// With the given events, the command, and both decisions.
    pub fn then_events(self, expected: impl IntoIterator<Item = C::Event>)
    where
        C::Event: PartialEq,
    {
        let expected: Vec<C::Event> = expected.into_iter().collect();
        let shown = format!("{expected:?}");
        match &self.outcome {
            Ok(events) if *events == expected => self.check_declared(events),
            _ => panic!("{}", self.report(&shown)),
        }
    }

    /// Asserts that the command decided to do nothing.
    ///
    /// # Panics
    /// If it decided events or refused.
    pub fn then_nothing(self) {
        if !matches!(&self.outcome, Ok(events) if events.is_empty()) {
            panic!("{}", self.report("no events"));
        }
    }

    /// Asserts that the command refused, and returns its error (its own
    /// type, to `match` on).
    ///
    /// # Panics
    /// If it decided events or nothing.
    pub fn then_rejected(self) -> C::Error {
        match self.outcome {
            Err(e) => e,
            Ok(_) => panic!("{}", self.report("a refusal")),
        }
    }

    /// Asserts that the command refused with exactly this error.
    ///
    /// # Panics
    /// If it decided events or nothing, or refused with another error.
    pub fn then_rejected_as(self, expected: &C::Error)
    where
        C::Error: PartialEq,
    {
        if !matches!(&self.outcome, Err(e) if e == expected) {
            panic!("{}", self.report(&format!("the error {expected:?}")));
        }
    }

    /// Asserts that the command refused with a message containing `text`,
    /// and returns the error.
    ///
    /// # Panics
    /// If it decided events, or refused with another message.
    pub fn then_rejected_with(self, text: &str) -> C::Error {
        match self.outcome {
            Err(e) if e.to_string().contains(text) => e,
            _ => panic!("{}", self.report(&format!("an error containing {text:?}"))),
        }
    }
}
