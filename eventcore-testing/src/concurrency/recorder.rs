//! The store as one command of a run sees it: perturbed, and every call
//! recorded as a [`Step`].

use std::sync::Mutex;

use eventcore::{
    AppendOutcome, EventStore, PendingEvent, ReadAnswer, ReadRequest, StoreError, StoreIdentity,
    StreamWrites, Uuid,
};

use crate::decision::Versions;

/// One store call a command made, in the order it made them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// A read (the declared streams, a round of discovered ones, the tails
    /// after kept folds): every stream asked for, at the version it stood.
    Read(Versions),
    /// A read that found the command's id recorded: the command was
    /// applied before.
    FoundRecord,
    /// An append: every stream registered at its expected version, the
    /// ids of the events it carried, and how it ended.
    Append {
        /// The versions expected.
        expected: Versions,
        /// The ids of its events, in order.
        event_ids: Vec<Uuid>,
        /// The versions its streams would stand at once it committed.
        resulting: Versions,
        /// How it ended.
        result: AppendResult,
    },
}

/// How one append ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppendResult {
    /// Committed, with the streams' versions after it.
    Committed(Versions),
    /// The store found the command's id recorded and wrote nothing; the
    /// recorded outcome's versions.
    Repeated(Versions),
    /// Committed, but the checker reported a lost connection instead.
    ReplyLost(Versions),
    /// Refused by a conflict the checker injected; never reached the store.
    InjectedConflict,
    /// Refused or failed in the store.
    Failed {
        /// The error.
        error: String,
        /// Whether the store cannot know if it committed (a connection
        /// lost during the commit): its events may be in the log.
        maybe_committed: bool,
    },
}

impl Step {
    fn show(&self) -> String {
        let at = |v: &Versions| {
            v.iter()
                .map(|(s, v)| format!("{s}@{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Step::Read(v) => format!("read [{}]", at(v)),
            Step::FoundRecord => "read: command id already recorded".to_owned(),
            Step::Append {
                expected,
                event_ids,
                result,
                ..
            } => {
                let ended = match result {
                    AppendResult::Committed(v) => format!("committed, now [{}]", at(v)),
                    AppendResult::Repeated(v) => format!("already applied, at [{}]", at(v)),
                    AppendResult::ReplyLost(v) => {
                        format!("committed, now [{}], reply lost", at(v))
                    }
                    AppendResult::InjectedConflict => "injected conflict".to_owned(),
                    AppendResult::Failed { error, .. } => format!("failed: {error}"),
                };
                format!(
                    "append {} events expecting [{}]: {ended}",
                    event_ids.len(),
                    at(expected)
                )
            }
        }
    }
}

/// Steps, one per line, for a history.
pub(super) fn show_steps(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| format!("      {}", s.show()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Wraps the store for one command: perturbs, and records every call.
pub(super) struct Recorder<'a, S> {
    pub(super) inner: &'a S,
    pub(super) rng: Mutex<fastrand::Rng>,
    pub(super) max_yields: u32,
    pub(super) conflict_rate: f64,
    pub(super) lost_reply_rate: f64,
    pub(super) steps: Mutex<Vec<Step>>,
}

/// The error of a reply lost after commit.
#[derive(Debug, thiserror::Error)]
#[error("reply lost after the append committed (injected by the concurrency checker)")]
struct LostReply;

async fn yields(n: u32) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

impl<S> Recorder<'_, S> {
    fn draw(&self) -> (u32, bool, bool) {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        (
            rng.u32(0..=self.max_yields),
            self.conflict_rate > 0.0 && rng.f64() < self.conflict_rate,
            self.lost_reply_rate > 0.0 && rng.f64() < self.lost_reply_rate,
        )
    }

    fn record(&self, step: Step) {
        self.steps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(step);
    }

    pub(super) fn into_steps(self) -> Vec<Step> {
        self.steps.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every method forwarded, so that commands run through the paths of the
/// store under test (its reads for a command id, its snapshots; the
/// executor's cache and queue, through the store's identity); the lint
/// catches one forgotten.
#[deny(clippy::missing_trait_methods)]
impl<S: EventStore> EventStore for Recorder<'_, S> {
    async fn read(&self, request: ReadRequest) -> Result<ReadAnswer, StoreError> {
        let (n, _, _) = self.draw();
        yields(n).await;
        let answer = self.inner.read(request).await?;
        self.record(match answer.record {
            Some(_) => Step::FoundRecord,
            None => Step::Read(answer.reads.versions().to_vec()),
        });
        Ok(answer)
    }

    fn identity(&self) -> &StoreIdentity {
        self.inner.identity()
    }

    async fn append(&self, writes: StreamWrites) -> Result<AppendOutcome, StoreError> {
        let (n, conflict, lose_reply) = self.draw();
        yields(n).await;
        let expected = writes.expected_versions().to_vec();
        let event_ids = writes.events().iter().map(PendingEvent::event_id).collect();
        let resulting = writes.resulting_versions().unwrap_or_default();
        let step = |result| Step::Append {
            expected: expected.clone(),
            event_ids: Clone::clone(&event_ids),
            resulting: resulting.clone(),
            result,
        };
        if conflict && let Some((stream_id, expected)) = expected.first().cloned() {
            self.record(step(AppendResult::InjectedConflict));
            return Err(StoreError::VersionConflict {
                stream_id,
                expected,
                actual: expected,
            });
        }
        match self.inner.append(writes).await {
            Err(e) => {
                let maybe_committed =
                    e.is_retryable() && !matches!(e, StoreError::VersionConflict { .. });
                self.record(step(AppendResult::Failed {
                    error: e.to_string(),
                    maybe_committed,
                }));
                Err(e)
            }
            Ok(outcome) if outcome.already_applied => {
                self.record(step(AppendResult::Repeated(
                    outcome.stream_versions.clone(),
                )));
                Ok(outcome)
            }
            Ok(outcome) if lose_reply => {
                self.record(step(AppendResult::ReplyLost(outcome.stream_versions)));
                Err(StoreError::Transient {
                    operation: "append",
                    source: Box::new(LostReply),
                })
            }
            Ok(outcome) => {
                self.record(step(AppendResult::Committed(
                    outcome.stream_versions.clone(),
                )));
                Ok(outcome)
            }
        }
    }
}
