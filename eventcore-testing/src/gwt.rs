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

use eventcore::{CommandLogic, Event, ExecuteError};

use crate::decision::{decide_on, decode_all, recorded};

/// Past events, before a command is tried.
#[derive(Debug, Clone)]
pub struct Given<E> {
    events: Vec<E>,
}

/// Starts a scenario from past events, in the order they happened. Like a
/// store, the scenario passes each event through its JSON form, so a type
/// that does not round-trip fails here.
pub fn given<E: Event>(events: impl IntoIterator<Item = E>) -> Given<E> {
    Given {
        events: events.into_iter().collect(),
    }
}

impl<E: Event + Debug> Given<E> {
    /// Runs the command through `execute` on a store holding the given
    /// events (see [`decide_on`]): it reads its declared streams and every
    /// stream it discovers, each with its given events, folds them as
    /// `execute` does, and decides. An event it decides for a stream it
    /// did not read is refused as `execute` refuses it.
    ///
    /// # Panics
    /// If an event, given or decided, does not survive its JSON round trip.
    pub fn when<C: CommandLogic<Event = E> + Debug>(self, command: C) -> When<C> {
        let shown = format!("{command:?}");
        let decision = decide_on(command, &recorded(self.events.iter().cloned()));
        let outcome = decision.result.map(|decided| {
            decode_all::<E>(&decided.events).unwrap_or_else(|e| {
                panic!("the command's events do not deserialise from their own JSON: {e}")
            })
        });
        When {
            given: self.events,
            command: shown,
            read: decision.reads.into_iter().flatten().collect(),
            outcome,
        }
    }
}

/// A command's decision, ready to be checked.
#[derive(Debug)]
pub struct When<C: CommandLogic> {
    given: Vec<C::Event>,
    command: String,
    read: Vec<(eventcore::StreamId, eventcore::StreamVersion)>,
    outcome: Result<Vec<C::Event>, ExecuteError<C::Error>>,
}

impl<C> When<C>
where
    C: CommandLogic + Debug,
    C::Event: Debug,
{
    /// The decision itself, for custom checks: the events, the command's
    /// refusal ([`ExecuteError::Rejected`]), or why `execute` ends it.
    pub fn outcome(&self) -> &Result<Vec<C::Event>, ExecuteError<C::Error>> {
        &self.outcome
    }

    /// Every stream the command read (declared and discovered), with the
    /// version it stood at, in the order read.
    pub fn read(&self) -> &[(eventcore::StreamId, eventcore::StreamVersion)] {
        &self.read
    }

    fn report(&self, expected: &str) -> String {
        let mut lines = vec![String::new(), "given:".to_owned()];
        if self.given.is_empty() {
            lines.push("  (no events)".to_owned());
        }
        lines.extend(self.given.iter().map(|e| format!("  {e:?}")));
        lines.push(format!("when:\n  {}", self.command));
        let read: Vec<String> = self.read.iter().map(|(s, v)| format!("{s}@{v}")).collect();
        lines.push(format!("  (it read [{}])", read.join(", ")));
        lines.push(format!("then expected:\n  {expected}"));
        lines.push("but got:".to_owned());
        match &self.outcome {
            Ok(events) if events.is_empty() => lines.push("  no events".to_owned()),
            Ok(events) => lines.extend(events.iter().map(|e| format!("  {e:?}"))),
            Err(ExecuteError::Rejected(e)) => lines.push(format!("  refusal: {e}")),
            Err(e) => lines.push(format!("  execute ends it: {e}")),
        }
        lines.join("\n")
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
        if !matches!(&self.outcome, Ok(events) if *events == expected) {
            panic!("{}", self.report(&shown));
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
            Err(ExecuteError::Rejected(e)) => e,
            _ => panic!("{}", self.report("a refusal")),
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
        if !matches!(&self.outcome, Err(ExecuteError::Rejected(e)) if e == expected) {
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
            Err(ExecuteError::Rejected(e)) if e.to_string().contains(text) => e,
            _ => panic!("{}", self.report(&format!("an error containing {text:?}"))),
        }
    }
}
