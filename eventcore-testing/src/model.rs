//! Model-based testing of a store: random sequences of reads and appends,
//! with current, stale and future expected versions over a few streams,
//! compared step by step with a reference model.
//!
//! ```
//! eventcore_testing::model::check_store_against_model(16, || async {
//!     eventcore_memory::InMemoryEventStore::new()
//! });
//! ```

use std::{collections::BTreeMap, fmt, future::Future};

use eventcore::{EventStore, EventStoreExt, StoreError, StreamId, StreamVersion, StreamWrites};
use proptest::{
    prelude::*,
    test_runner::{TestCaseError, TestError},
};

use crate::fixtures::{Note, stream};

/// How many streams the generated operations use.
const STREAMS: usize = 3;

/// What an append expects of one registered stream, relative to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// The stream's current version.
    Current,
    /// This many versions behind (clamped at 0, which may be current).
    Behind(u8),
    /// This many versions ahead.
    Ahead(u8),
}

/// One step of a generated sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Read these streams (indexes; may repeat).
    Read(Vec<usize>),
    /// Register streams with expectations, then append notes to streams
    /// (an index not registered makes the write fail before the store).
    Append {
        /// Registered streams and what is expected of them.
        expect: Vec<(usize, Expectation)>,
        /// The streams of the notes, in order.
        events: Vec<usize>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let expectation = prop_oneof![
        6 => Just(Expectation::Current),
        2 => (1u8..3).prop_map(Expectation::Behind),
        1 => (1u8..3).prop_map(Expectation::Ahead),
    ];
    prop_oneof![
        1 => proptest::collection::vec(0..STREAMS, 0..4).prop_map(Op::Read),
        3 => (
            proptest::collection::vec((0..STREAMS, expectation), 0..4),
            proptest::collection::vec(0..STREAMS, 0..5),
        )
            .prop_map(|(expect, events)| Op::Append { expect, events }),
    ]
}

/// The reference: each stream is the list of note numbers appended to it.
#[derive(Debug, Default)]
struct Model {
    streams: BTreeMap<usize, Vec<u64>>,
}

impl Model {
    fn version(&self, s: usize) -> u64 {
        self.streams.get(&s).map_or(0, |v| v.len() as u64)
    }
}

fn ids() -> Vec<StreamId> {
    (0..STREAMS)
        .map(|i| stream(&format!("model-{i}")))
        .collect()
}

struct Mismatch(String);

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

async fn step<S: EventStore>(
    store: &S,
    model: &mut Model,
    op: &Op,
    next_note: &mut u64,
) -> Result<(), Mismatch> {
    let ids = ids();
    match op {
        Op::Read(which) => {
            let wanted: Vec<StreamId> = which.iter().map(|i| ids[*i].clone()).collect();
            let read = store
                .read_streams(&wanted)
                .await
                .map_err(|e| Mismatch(format!("read failed: {e}")))?;
            for i in which {
                let got_version = read.version(&ids[*i]).map(StreamVersion::get);
                let got: Vec<u64> = read
                    .events_of(&ids[*i])
                    .map(|e| e.decode::<Note>().map(|n| n.n).unwrap_or(u64::MAX))
                    .collect();
                let want = model.streams.get(i).cloned().unwrap_or_default();
                if got_version != Some(model.version(*i)) || got != want {
                    return Err(Mismatch(format!(
                        "stream {i}: store has version {got_version:?} and notes {got:?}, model has {} and {want:?}",
                        model.version(*i)
                    )));
                }
            }
            if read.events().len()
                != which
                    .iter()
                    .collect::<std::collections::BTreeSet<_>>()
                    .iter()
                    .map(|i| model.version(**i) as usize)
                    .sum::<usize>()
            {
                return Err(Mismatch(format!(
                    "read returned {} events, more than the requested streams hold",
                    read.events().len()
                )));
            }
            Ok(())
        }
        Op::Append { expect, events } => {
            let mut writes = StreamWrites::new();
            let mut registered: BTreeMap<usize, u64> = BTreeMap::new();
            let mut build_error = None;
            for (i, e) in expect {
                let current = model.version(*i);
                let v = match e {
                    Expectation::Current => current,
                    Expectation::Behind(k) => current.saturating_sub(u64::from(*k)),
                    Expectation::Ahead(k) => current + u64::from(*k),
                };
                match writes.expect(ids[*i].clone(), StreamVersion::new(v)) {
                    Ok(()) => {
                        registered.insert(*i, v);
                    }
                    Err(err) => {
                        // Same stream, two versions: refused before any I/O.
                        if !matches!(err, StoreError::ConflictingExpectation { .. })
                            || registered.get(i) == Some(&v)
                        {
                            return Err(Mismatch(format!("unexpected registration error: {err}")));
                        }
                        build_error = Some(());
                        break;
                    }
                }
            }
            if build_error.is_some() {
                return Ok(());
            }
            let mut notes = Vec::new();
            for s in events {
                *next_note += 1;
                let note = Note::new(&ids[*s], *next_note);
                match writes.append(&note) {
                    Ok(()) => notes.push((*s, *next_note)),
                    Err(StoreError::UndeclaredStream { .. }) if !registered.contains_key(s) => {
                        return Ok(());
                    }
                    Err(err) => {
                        return Err(Mismatch(format!("unexpected append-building error: {err}")));
                    }
                }
            }
            let stale: Vec<usize> = registered
                .iter()
                .filter(|(i, v)| model.version(**i) != **v)
                .map(|(i, _)| *i)
                .collect();
            match store.append(writes).await {
                Ok(outcome) if stale.is_empty() => {
                    for (s, n) in &notes {
                        model.streams.entry(*s).or_default().push(*n);
                    }
                    let want: Vec<(StreamId, StreamVersion)> = registered
                        .keys()
                        .map(|i| (ids[*i].clone(), StreamVersion::new(model.version(*i))))
                        .collect();
                    if outcome.stream_versions != want || outcome.events_written != notes.len() {
                        return Err(Mismatch(format!(
                            "append reported {outcome:?}, model expects {want:?}"
                        )));
                    }
                    Ok(())
                }
                Ok(outcome) => Err(Mismatch(format!(
                    "append succeeded ({outcome:?}) though streams {stale:?} were stale"
                ))),
                Err(StoreError::VersionConflict {
                    stream_id,
                    expected,
                    actual,
                }) => {
                    let Some(i) = ids.iter().position(|id| *id == stream_id) else {
                        return Err(Mismatch(format!(
                            "conflict names unknown stream {stream_id}"
                        )));
                    };
                    if !stale.contains(&i)
                        || registered.get(&i) != Some(&expected.get())
                        || actual.get() != model.version(i)
                    {
                        return Err(Mismatch(format!(
                            "conflict on stream {i} (expected {expected}, actual {actual}) but model: stale {stale:?}, version {}",
                            model.version(i)
                        )));
                    }
                    Ok(())
                }
                Err(err) => Err(Mismatch(format!("append failed: {err}"))),
            }
        }
    }
}

/// Runs `cases` generated sequences of up to 40 operations, each on a fresh
/// store from `factory`, and compares every answer with the model.
///
/// # Panics
/// On the first mismatch, after shrinking: the message names the step, what
/// the store and the model said, and the smallest failing sequence.
pub fn check_store_against_model<S, F, Fut>(cases: u32, factory: F)
where
    S: EventStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let (mut runner, runtime) = crate::cases::runner(cases);
    let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        runtime.block_on(async {
            let store = factory().await;
            let mut model = Model::default();
            let mut next_note = 0;
            for (n, op) in ops.iter().enumerate() {
                step(&store, &mut model, op, &mut next_note)
                    .await
                    .map_err(|m| TestCaseError::fail(format!("step {n} {op:?}: {m}")))?;
            }
            Ok(())
        })
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => {
            panic!("store disagrees with the model: {reason}\nsmallest failing sequence: {ops:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("model test aborted: {reason}"),
    }
}
