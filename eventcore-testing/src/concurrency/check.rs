//! The checks over a recorded run: what each command decided on, whether
//! the log holds exactly what committed, and whether every decision is the
//! one `execute` makes on the state read, in commit order.

use std::collections::{BTreeMap, HashMap, HashSet};

use eventcore::{CommandLogic, ExecuteError, RecordedEvent, StreamId, StreamVersion, Uuid};

use super::{CommandRecord, Outcome, recorder::AppendResult, recorder::Step};
use crate::decision::{Decision, Versions, decide_on};

/// What a command's steps say it decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Basis {
    /// The versions of the streams its final decision was made on.
    pub(super) observed: Versions,
    /// The step of the append that committed its events, if it did.
    pub(super) committed: Option<usize>,
}

/// Finds what the command decided on, and checks every append against the
/// reads of its attempt: each stream read must be registered at the
/// version read (a discovered stream included), or a write could land on
/// a state the command never saw. A refusal or an empty decision must
/// rest on a read of its last attempt: one made on kept folds alone may be
/// stale.
pub(super) fn basis(
    index: usize,
    steps: &[Step],
    outcome: &Outcome,
    final_versions: Option<(&Versions, bool)>,
    violations: &mut Vec<String>,
) -> Basis {
    let mut current: BTreeMap<StreamId, StreamVersion> = BTreeMap::new();
    for step in steps {
        match step {
            Step::Read(read) => {
                // A read of a stream already read starts a new attempt
                // (discovery rounds read new streams only).
                if read.iter().any(|(s, _)| current.contains_key(s)) {
                    current.clear();
                }
                current.extend(read.iter().cloned());
            }
            Step::FoundRecord => {}
            Step::Append { expected, .. } => {
                for (s, v) in &current {
                    match expected.iter().find(|(e, _)| e == s) {
                        Some((_, w)) if w == v => {}
                        Some((_, w)) => violations.push(format!(
                            "command #{index} read {s}@{v} but its append expected {s}@{w}"
                        )),
                        None => violations.push(format!(
                            "command #{index} read {s}@{v} but its append did not register {s}: \
                             a write there would not be checked against what it read"
                        )),
                    }
                }
                current.clear();
            }
        }
    }
    match outcome {
        Outcome::Applied { .. } => {
            let (versions, repeat) = final_versions.map_or((None, false), |(v, r)| (Some(v), r));
            // A repeat's outcome is that of an earlier append whose reply
            // was lost: the one that leads to the recorded versions.
            let committed = steps.iter().enumerate().rev().find(|(_, step)| match step {
                Step::Append {
                    result: AppendResult::Committed(_),
                    resulting,
                    ..
                } => !repeat || Some(resulting) == versions,
                Step::Append {
                    result:
                        AppendResult::ReplyLost(_)
                        | AppendResult::Failed {
                            maybe_committed: true,
                            ..
                        },
                    resulting,
                    ..
                } => repeat && Some(resulting) == versions,
                _ => false,
            });
            match committed {
                Some((i, Step::Append { expected, .. })) => Basis {
                    observed: expected.clone(),
                    committed: Some(i),
                },
                _ => {
                    violations.push(format!(
                        "command #{index} reported that it was applied, but none of its appends committed"
                    ));
                    Basis {
                        observed: Vec::new(),
                        committed: None,
                    }
                }
            }
        }
        Outcome::NoOp | Outcome::Rejected(_) => {
            if current.is_empty() {
                violations.push(format!(
                    "command #{index} ended {outcome:?} without reading its streams in its last \
                     attempt: it decided on kept state that may be stale"
                ));
            }
            Basis {
                observed: current.into_iter().collect(),
                committed: None,
            }
        }
        Outcome::GaveUp | Outcome::Failed(_) => Basis {
            observed: current.into_iter().collect(),
            committed: None,
        },
    }
}

/// Checks that the log holds every committed event exactly once and
/// nothing else: each event is setup's or comes from one append of one
/// command (by its id), failed appends left nothing, no command was
/// applied twice, and every stream's versions run 1..=n. Returns each
/// applied command's first global sequence (its place in commit order).
pub(super) fn check_log<C>(
    log: &[RecordedEvent],
    setup_ids: &HashSet<Uuid>,
    records: &[CommandRecord<C>],
    violations: &mut Vec<String>,
) -> HashMap<usize, u64> {
    let mut per_stream: BTreeMap<&StreamId, Vec<u64>> = BTreeMap::new();
    for e in log {
        per_stream
            .entry(e.stream_id())
            .or_default()
            .push(e.version().get());
    }
    for (s, versions) in &mut per_stream {
        versions.sort_unstable();
        let n = versions.len();
        versions.dedup();
        if versions.len() != n {
            violations.push(format!(
                "stream {s} holds {n} events but only {} distinct versions: a version was written twice",
                versions.len()
            ));
        }
        if versions.iter().enumerate().any(|(i, v)| *v != i as u64 + 1) {
            violations.push(format!(
                "stream {s} has versions {versions:?}, not 1..={}",
                versions.len()
            ));
        }
    }

    // Which append of which command each event id was sent by.
    let mut sent: HashMap<Uuid, (usize, usize)> = HashMap::new();
    for (r, record) in records.iter().enumerate() {
        for (i, step) in record.steps.iter().enumerate() {
            if let Step::Append { event_ids, .. } = step {
                for id in event_ids {
                    sent.insert(*id, (r, i));
                }
            }
        }
    }
    let mut landed: HashMap<(usize, usize), Vec<&RecordedEvent>> = HashMap::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    for e in log {
        if !seen.insert(e.event_id()) {
            violations.push(format!(
                "event id {} is in the log twice (at {}@{})",
                e.event_id(),
                e.stream_id(),
                e.version()
            ));
        }
        if setup_ids.contains(&e.event_id()) {
            continue;
        }
        match sent.get(&e.event_id()) {
            Some(at) => landed.entry(*at).or_default().push(e),
            None => violations.push(format!(
                "event {}@{} belongs to no command of the run (its id {} was never sent)",
                e.stream_id(),
                e.version(),
                e.event_id()
            )),
        }
    }

    let mut first_seq = HashMap::new();
    for (r, record) in records.iter().enumerate() {
        let mut committed_steps = Vec::new();
        for (i, step) in record.steps.iter().enumerate() {
            let Step::Append {
                event_ids, result, ..
            } = step
            else {
                continue;
            };
            let here = landed.get(&(r, i)).map_or(&[][..], Vec::as_slice);
            match result {
                // Not known to have committed: its events may or may not
                // be in the log, but all or none.
                AppendResult::Failed {
                    maybe_committed: true,
                    ..
                } if here.is_empty() => {}
                AppendResult::Committed(_)
                | AppendResult::ReplyLost(_)
                | AppendResult::Failed {
                    maybe_committed: true,
                    ..
                } => {
                    if here.len() != event_ids.len() {
                        violations.push(format!(
                            "command #{}'s append #{i} committed {} events, but {} of them are in the log",
                            record.index,
                            event_ids.len(),
                            here.len()
                        ));
                    }
                    if !here.is_empty() {
                        committed_steps.push(i);
                    }
                }
                AppendResult::Repeated(_)
                | AppendResult::InjectedConflict
                | AppendResult::Failed { .. }
                    if !here.is_empty() =>
                {
                    let how = match result {
                        AppendResult::Repeated(_) => "found the command already applied".to_owned(),
                        AppendResult::InjectedConflict => "met an injected conflict".to_owned(),
                        AppendResult::Failed { error, .. } => format!("failed ({error})"),
                        _ => String::new(),
                    };
                    let at: Vec<String> = here
                        .iter()
                        .map(|e| format!("{}@{}", e.stream_id(), e.version()))
                        .collect();
                    violations.push(format!(
                        "command #{}'s append #{i} {how}, yet its events [{}] are in the log",
                        record.index,
                        at.join(", ")
                    ));
                }
                _ => {}
            }
        }
        match (&record.outcome, record.committed) {
            (Outcome::Applied { events_written, .. }, Some(step)) => {
                if let Some(Step::Append { event_ids, .. }) = record.steps.get(step)
                    && event_ids.len() != *events_written
                {
                    violations.push(format!(
                        "command #{} reported {events_written} events but its append carried {}",
                        record.index,
                        event_ids.len()
                    ));
                }
                if let Some(seq) = landed
                    .get(&(r, step))
                    .and_then(|events| events.iter().map(|e| e.global_sequence()).min())
                {
                    first_seq.insert(record.index, seq);
                }
                let others: Vec<usize> = committed_steps
                    .iter()
                    .copied()
                    .filter(|i| *i != step)
                    .collect();
                if !others.is_empty() {
                    violations.push(format!(
                        "command #{} was applied {} times: the events of its appends {:?} and #{step} \
                         are all in the log (a reply was lost and the command ran again)",
                        record.index,
                        others.len() + 1,
                        others
                    ));
                }
            }
            (outcome, _) if !committed_steps.is_empty() => violations.push(format!(
                "command #{} ended {outcome:?}, yet its appends {committed_steps:?} committed events \
                 that are in the log",
                record.index
            )),
            _ => {}
        }
    }
    first_seq
}

/// The events of `log` that a command which read `observed` saw: each of
/// its streams up to the version read.
fn seen_by(log: &[RecordedEvent], observed: &Versions) -> Vec<RecordedEvent> {
    log.iter()
        .filter(|e| {
            observed
                .iter()
                .any(|(s, v)| s == e.stream_id() && e.version() <= *v)
        })
        .cloned()
        .collect()
}

/// How many times each decision is made again to find one that is not
/// deterministic.
const DETERMINISM_TRIES: usize = 8;

/// A decision in a form two decisions compare by: what was read, and the
/// append (without event ids) or the error.
fn summary<E: std::fmt::Display>(d: &Decision<E>) -> String {
    match &d.result {
        Ok(decided) => format!(
            "reads {:?}, expects {:?}, appends {:?}",
            d.reads,
            decided.expected,
            decided.contents()
        ),
        Err(ExecuteError::Rejected(e)) => format!("reads {:?}, refuses: {e}", d.reads),
        Err(e) => format!("reads {:?}, fails: {e}", d.reads),
    }
}

/// Checks every decision by making it again through `execute` on the
/// events the command read: several times (a fold or decision that is not
/// deterministic decides differently), against what it did (the events it
/// appended, its refusal or its empty decision), and, for an applied
/// command, against commit order (its streams must have stood, just before
/// its events, at the versions it read).
pub(super) fn check_decisions<C>(
    records: &[CommandRecord<C>],
    log: &[RecordedEvent],
    first_seq: &HashMap<usize, u64>,
    violations: &mut Vec<String>,
) where
    C: CommandLogic + Clone,
{
    for r in records {
        if matches!(r.outcome, Outcome::GaveUp | Outcome::Failed(_)) {
            continue;
        }
        let seen = seen_by(log, &r.observed);
        let once = decide_on(r.command.clone(), &seen);
        let first = summary(&once);
        // A decision that is not deterministic may agree with itself once
        // by chance: a few more tries tell it from a real mismatch.
        let other = (1..DETERMINISM_TRIES)
            .map(|_| summary(&decide_on(r.command.clone(), &seen)))
            .find(|again| *again != first);
        if let Some(second) = other {
            violations.push(format!(
                "command #{} decides differently on the same events: first {first}; then {second} \
                 (its folds or its decision are not deterministic)",
                r.index
            ));
            continue;
        }
        let decided = match (&r.outcome, &once.result) {
            (Outcome::Applied { .. }, Ok(d)) if !d.events.is_empty() => d,
            (Outcome::NoOp, Ok(d)) if d.events.is_empty() => continue,
            (Outcome::Rejected(m), Err(ExecuteError::Rejected(e))) if *m == e.to_string() => {
                continue;
            }
            (outcome, _) => {
                violations.push(format!(
                    "command #{} ended {outcome:?}, but on the state it read it decides otherwise: {first}",
                    r.index
                ));
                continue;
            }
        };
        let appended: Vec<(StreamId, String, serde_json::Value)> = match r.committed_step() {
            Some(ids) => ids
                .iter()
                .filter_map(|id| log.iter().find(|e| e.event_id() == *id))
                .map(|e| {
                    (
                        e.stream_id().clone(),
                        e.event_type().to_owned(),
                        serde_json::from_str(e.payload()).unwrap_or(serde_json::Value::Null),
                    )
                })
                .collect(),
            None => Vec::new(),
        };
        if decided.contents() != appended {
            violations.push(format!(
                "not serializable: on the state it read, command #{} appends {:?}, but it appended {:?}",
                r.index,
                decided.contents(),
                appended
            ));
            continue;
        }
        let Some(seq) = first_seq.get(&r.index) else {
            continue;
        };
        for (s, v) in &r.observed {
            let before = log
                .iter()
                .filter(|e| e.stream_id() == s && e.global_sequence() < *seq)
                .count() as u64;
            if before != v.get() {
                violations.push(format!(
                    "not serializable: command #{} read {s}@{v}, but in commit order {s} stood at \
                     version {before} when its events landed",
                    r.index
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> StreamId {
        StreamId::try_new(s).unwrap()
    }

    fn at(s: &str, v: u64) -> (StreamId, StreamVersion) {
        (id(s), StreamVersion::new(v))
    }

    fn append(expected: Versions, result: AppendResult) -> Step {
        let resulting = match &result {
            AppendResult::Committed(v) | AppendResult::ReplyLost(v) => v.clone(),
            _ => expected.clone(),
        };
        Step::Append {
            expected,
            event_ids: vec![Uuid::now_v7()],
            resulting,
            result,
        }
    }

    #[test]
    fn a_discovered_stream_missing_from_the_append_is_a_violation() {
        let steps = vec![
            Step::Read(vec![at("order", 1)]),
            Step::Read(vec![at("customer", 2)]),
            append(
                vec![at("order", 1)],
                AppendResult::Committed(vec![at("order", 2)]),
            ),
        ];
        let mut violations = Vec::new();
        let applied = Outcome::Applied {
            attempts: 1,
            events_written: 1,
        };
        let found = basis(0, &steps, &applied, None, &mut violations);
        assert_eq!(found.observed, vec![at("order", 1)]);
        assert_eq!(found.committed, Some(2));
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].contains("did not register customer"));
    }

    #[test]
    fn an_append_at_another_version_than_read_is_a_violation() {
        let steps = vec![
            Step::Read(vec![at("a", 3)]),
            append(
                vec![at("a", 2)],
                AppendResult::Failed {
                    error: "conflict".into(),
                    maybe_committed: false,
                },
            ),
        ];
        let mut violations = Vec::new();
        basis(4, &steps, &Outcome::GaveUp, None, &mut violations);
        assert_eq!(
            violations,
            vec!["command #4 read a@3 but its append expected a@2".to_owned()]
        );
    }

    #[test]
    fn a_refusal_rests_on_every_round_of_its_last_attempt() {
        let steps = vec![
            Step::Read(vec![at("order", 1)]),
            append(vec![at("order", 1)], AppendResult::InjectedConflict),
            Step::Read(vec![at("order", 2)]),
            Step::Read(vec![at("customer", 1)]),
        ];
        let mut violations = Vec::new();
        let refused = Outcome::Rejected("no credit".into());
        let found = basis(0, &steps, &refused, None, &mut violations);
        assert_eq!(found.observed, vec![at("customer", 1), at("order", 2)]);
        assert!(violations.is_empty(), "{violations:?}");

        // A read of streams read before starts the attempt afresh.
        let retried = vec![
            Step::Read(vec![at("order", 1)]),
            Step::Read(vec![at("customer", 1)]),
            Step::Read(vec![at("order", 2)]),
        ];
        let found = basis(0, &retried, &refused, None, &mut violations);
        assert_eq!(found.observed, vec![at("order", 2)]);
    }

    #[test]
    fn a_refusal_without_a_read_in_its_last_attempt_is_a_violation() {
        let steps = vec![
            Step::Read(vec![at("a", 1)]),
            append(vec![at("a", 1)], AppendResult::InjectedConflict),
        ];
        let mut violations = Vec::new();
        basis(
            2,
            &steps,
            &Outcome::Rejected("x".into()),
            None,
            &mut violations,
        );
        assert_eq!(violations.len(), 1);
        assert!(violations[0].contains("may be stale"), "{violations:?}");
    }

    #[test]
    fn a_repeat_rests_on_the_append_whose_reply_was_lost() {
        let steps = vec![
            Step::Read(vec![at("a", 1)]),
            append(vec![at("a", 1)], AppendResult::ReplyLost(vec![at("a", 2)])),
            Step::FoundRecord,
        ];
        let mut violations = Vec::new();
        let applied = Outcome::Applied {
            attempts: 2,
            events_written: 1,
        };
        let now = vec![at("a", 2)];
        let found = basis(0, &steps, &applied, Some((&now, true)), &mut violations);
        assert_eq!(found.committed, Some(1));
        assert_eq!(found.observed, vec![at("a", 1)]);
        assert!(violations.is_empty(), "{violations:?}");
    }
}
