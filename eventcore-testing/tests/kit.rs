//! The kit on a correct store: the concurrency checker, fault injection and
//! given/when/then behave as documented.

use eventcore::{ExecuteError, StoreError, execute, execute_with};
use eventcore_memory::InMemoryEventStore;
use eventcore_testing::{
    concurrency::{ConcurrencyConfig, Outcome, check_concurrency, run_concurrently},
    faults::{Fault, FaultPlan, FaultyStore},
    fixtures::{Credit, LedgerCommand, LedgerEvent, Move, ledger_invariant, stream},
    gwt::given,
    strategies::{funded, ledger_batch},
};

#[test]
fn ledger_commands_are_serializable_on_the_memory_store() {
    check_concurrency(
        32,
        || async { InMemoryEventStore::new() },
        funded(4, 100),
        ledger_batch(4, 40),
        ConcurrencyConfig::default(),
        ledger_invariant,
    );
}

/// Replies lost after commit, on a quarter of the appends: with command
/// ids every command is still applied once and the run is serializable,
/// over many seeds and batches.
#[test]
fn lost_replies_apply_each_command_once_with_command_ids() {
    check_concurrency(
        48,
        || async { InMemoryEventStore::new() },
        funded(4, 100),
        ledger_batch(4, 40),
        ConcurrencyConfig::default()
            .with_lost_reply_rate(0.25)
            .with_command_ids(true),
        ledger_invariant,
    );
}

/// `FaultyStore`'s "transient after commit" on a fifth of the appends,
/// with a command id on every command: every command is applied exactly
/// once and the run is serializable, over many seeds and batches.
#[test]
fn transient_after_commit_applies_each_command_once_with_command_ids() {
    let seeds = std::sync::atomic::AtomicU64::new(0);
    check_concurrency(
        48,
        || {
            let seed = seeds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                FaultyStore::new(
                    InMemoryEventStore::new(),
                    FaultPlan::none().with_transient_after_append(0.2),
                    seed,
                )
            }
        },
        funded(4, 100),
        ledger_batch(4, 40),
        ConcurrencyConfig::default().with_command_ids(true),
        ledger_invariant,
    );
}

/// Without command ids the same lost replies apply commands twice, and the
/// checker says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_replies_without_command_ids_are_caught_applying_twice() {
    let (a, b) = (stream("acct-0"), stream("acct-1"));
    let batch: Vec<LedgerCommand> = (0..20)
        .map(|i| {
            LedgerCommand::Credit(Credit {
                account: if i % 2 == 0 { a.clone() } else { b.clone() },
                amount: 1,
            })
        })
        .collect();
    let failure = run_concurrently(
        InMemoryEventStore::new(),
        &funded(2, 50),
        &batch,
        5,
        &ConcurrencyConfig::default().with_lost_reply_rate(0.5),
        ledger_invariant,
    )
    .await
    .expect_err("half the replies lost: some command is applied twice");
    assert!(
        failure
            .violations
            .iter()
            .any(|v| v.contains(" times: the events of its appends")),
        "{:#?}",
        failure.violations
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_records_every_command_once_in_commit_order() {
    let (a, b) = (stream("acct-0"), stream("acct-1"));
    let batch: Vec<LedgerCommand> = (0..30)
        .map(|i| {
            LedgerCommand::Move(Move {
                from: if i % 2 == 0 { a.clone() } else { b.clone() },
                to: if i % 2 == 0 { b.clone() } else { a.clone() },
                amount: 7,
            })
        })
        .collect();
    let history = run_concurrently(
        InMemoryEventStore::new(),
        &funded(2, 50),
        &batch,
        9,
        &ConcurrencyConfig::default(),
        ledger_invariant,
    )
    .await
    .unwrap_or_else(|f| panic!("{f}"));
    let mut indexes: Vec<usize> = history.records.iter().map(|r| r.index).collect();
    indexes.sort_unstable();
    assert_eq!(indexes, (0..30).collect::<Vec<_>>());
    let applied = history
        .records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Applied { .. }))
        .count();
    assert_eq!(history.log.len(), 2 + 2 * applied);
    assert!(history.to_string().contains("seed 9"));
}

#[tokio::test]
async fn conflicts_before_the_append_are_retried_without_duplicates() {
    let store = FaultyStore::new(
        InMemoryEventStore::new(),
        FaultPlan::none().with_conflict(0.5),
        1,
    );
    for i in 0..20 {
        execute(
            &store,
            Credit {
                account: stream("a"),
                amount: i + 1,
            },
        )
        .await
        .expect("retried to success");
    }
    assert!(
        store.count(Fault::Conflict) > 0,
        "the plan injected conflicts"
    );
    assert_eq!(
        store.inner().all_events().len(),
        20,
        "each command applied once"
    );
}

#[tokio::test]
async fn transient_failures_before_the_store_are_retried_without_duplicates() {
    let plan = FaultPlan::none()
        .with_transient_before_read(0.3)
        .with_transient_before_append(0.3);
    let store = FaultyStore::new(InMemoryEventStore::new(), plan, 2);
    for i in 0..20 {
        execute(
            &store,
            Credit {
                account: stream("a"),
                amount: i + 1,
            },
        )
        .await
        .expect("retried to success");
    }
    assert!(
        store.count(Fault::TransientBeforeRead) + store.count(Fault::TransientBeforeAppend) > 0
    );
    assert_eq!(store.inner().all_events().len(), 20);
}

#[tokio::test]
async fn a_transient_failure_after_commit_applies_the_command_twice() {
    // The documented gap without a command id: the first append
    // committed, the caller saw a transient error, execute retried.
    let plan = FaultPlan::none().with_transient_after_append(1.0);
    let store = FaultyStore::new(InMemoryEventStore::new(), plan, 3);
    let policy =
        eventcore::RetryPolicy::default().with_max_attempts(std::num::NonZeroU32::new(2).unwrap());
    let err = execute_with(
        &store,
        Credit {
            account: stream("a"),
            amount: 5,
        },
        &policy,
    )
    .await
    .unwrap_err();
    assert!(matches!(
        err,
        ExecuteError::RetriesExhausted {
            attempts: 2,
            last_error: StoreError::Transient { .. }
        }
    ));
    assert_eq!(
        store.inner().all_events().len(),
        2,
        "both attempts committed"
    );
}

#[tokio::test]
async fn a_transient_failure_after_commit_is_applied_once_with_a_command_id() {
    let plan = FaultPlan::none().with_transient_after_append(1.0);
    let store = FaultyStore::new(InMemoryEventStore::new(), plan, 3);
    let options = eventcore::ExecuteOptions::new()
        .with_command_id(eventcore::CommandId::try_new("credit-a-5").unwrap());
    let result = execute_with(
        &store,
        Credit {
            account: stream("a"),
            amount: 5,
        },
        options,
    )
    .await
    .expect("the retry finds the first attempt recorded");
    assert!(result.already_applied);
    assert_eq!(result.attempts, 2);
    assert_eq!(store.count(Fault::TransientAfterAppend), 1);
    assert_eq!(store.inner().all_events().len(), 1, "applied once");
}

#[tokio::test]
async fn same_seed_same_faults_when_sequential() {
    let plan = FaultPlan::none()
        .with_conflict(0.3)
        .with_transient_before_read(0.2)
        .with_transient_after_append(0.1);
    let run = |seed| {
        let plan = plan.clone();
        async move {
            let store = FaultyStore::new(InMemoryEventStore::new(), plan, seed);
            for i in 0..10 {
                let _result = execute(
                    &store,
                    Credit {
                        account: stream("a"),
                        amount: i + 1,
                    },
                )
                .await;
            }
            store.injected()
        }
    };
    assert_eq!(run(7).await, run(7).await);
    assert_ne!(run(7).await, run(8).await);
}

#[tokio::test]
async fn delays_are_injected_and_harmless() {
    let plan = FaultPlan::none()
        .with_delay(1.0)
        .with_max_delay(std::time::Duration::from_millis(2));
    let store = FaultyStore::new(InMemoryEventStore::new(), plan, 4);
    execute(
        &store,
        Credit {
            account: stream("a"),
            amount: 1,
        },
    )
    .await
    .unwrap();
    assert_eq!(store.count(Fault::Delay), 2, "one per read and per append");
}

#[test]
fn given_when_then_passes_on_the_right_decision() {
    let (a, b) = (stream("a"), stream("b"));
    given([LedgerEvent::Credited {
        account: a.clone(),
        amount: 10,
        from: None,
    }])
    .when(Move {
        from: a.clone(),
        to: b.clone(),
        amount: 10,
    })
    .then_events([
        LedgerEvent::Debited {
            account: a.clone(),
            amount: 10,
        },
        LedgerEvent::Credited {
            account: b.clone(),
            amount: 10,
            from: Some(a.clone()),
        },
    ]);
    given(Vec::<LedgerEvent>::new())
        .when(Credit {
            account: a,
            amount: 0,
        })
        .then_nothing();
}

#[test]
fn given_when_then_failure_shows_given_when_and_both_decisions() {
    let (a, b) = (stream("a"), stream("b"));
    let failure = std::panic::catch_unwind(|| {
        given([LedgerEvent::Credited {
            account: a.clone(),
            amount: 3,
            from: None,
        }])
        .when(Move {
            from: a.clone(),
            to: b.clone(),
            amount: 5,
        })
        .then_events([LedgerEvent::Debited {
            account: a.clone(),
            amount: 5,
        }]);
    })
    .expect_err("the move is refused, not decided");
    let message = failure
        .downcast_ref::<String>()
        .expect("a formatted message");
    for part in [
        "given:",
        "Credited",
        "when:",
        "Move",
        "then expected:",
        "Debited",
        "but got:",
        "cannot move 5",
    ] {
        assert!(message.contains(part), "{part:?} missing from:\n{message}");
    }
}

#[test]
fn given_when_then_ignores_events_of_undeclared_streams() {
    let (a, b, other) = (stream("a"), stream("b"), stream("other"));
    given([LedgerEvent::Credited {
        account: other,
        amount: 100,
        from: None,
    }])
    .when(Move {
        from: a,
        to: b,
        amount: 1,
    })
    .then_rejected_with("holds 0");
}

/// A command with an error type of its own, for the typed checks.
#[derive(Debug, eventcore::Command)]
struct Spend {
    #[stream]
    account: eventcore::StreamId,
    amount: u64,
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum SpendError {
    #[error("{held} held, {wanted} wanted")]
    Short { held: i128, wanted: u64 },
}

impl eventcore::CommandLogic for Spend {
    type Event = LedgerEvent;
    type State = i128;
    type Error = SpendError;

    fn apply(&self, held: i128, event: &LedgerEvent) -> i128 {
        match event {
            LedgerEvent::Credited { amount, .. } => held + i128::from(*amount),
            LedgerEvent::Debited { amount, .. } => held - i128::from(*amount),
        }
    }

    fn handle(&self, &held: &i128) -> Result<eventcore::NewEvents<LedgerEvent>, SpendError> {
        eventcore::require!(
            held >= i128::from(self.amount),
            SpendError::Short {
                held,
                wanted: self.amount
            }
        );
        Ok(vec![LedgerEvent::Debited {
            account: self.account.clone(),
            amount: self.amount,
        }]
        .into())
    }
}

#[test]
fn given_when_then_asserts_the_command_s_own_error() {
    let a = stream("a");
    let credited = LedgerEvent::Credited {
        account: a.clone(),
        amount: 3,
        from: None,
    };
    let spend = |amount| Spend {
        account: a.clone(),
        amount,
    };
    given([credited.clone()])
        .when(spend(5))
        .then_rejected_as(&SpendError::Short { held: 3, wanted: 5 });
    let SpendError::Short { held, wanted } =
        given([credited.clone()]).when(spend(4)).then_rejected();
    assert_eq!((held, wanted), (3, 4));
    let wrong = std::panic::catch_unwind(|| {
        given([credited.clone()])
            .when(spend(5))
            .then_rejected_as(&SpendError::Short { held: 3, wanted: 6 });
    });
    assert!(wrong.is_err(), "another error fails the check");
    let decided = std::panic::catch_unwind(|| given([credited]).when(spend(1)).then_rejected());
    assert!(decided.is_err(), "a decision is not a refusal");
}

#[tokio::test]
async fn execute_returns_the_command_s_own_error_to_match_on() {
    let store = InMemoryEventStore::new();
    let a = stream("typed");
    execute(
        &store,
        Credit {
            account: a.clone(),
            amount: 2,
        },
    )
    .await
    .unwrap();
    let refused = execute(
        &store,
        Spend {
            account: a.clone(),
            amount: 3,
        },
    )
    .await;
    match refused {
        Err(ExecuteError::Rejected(SpendError::Short { held: 2, wanted: 3 })) => {}
        other => panic!("expected the typed refusal, got {other:?}"),
    }
    let read = eventcore::EventStoreExt::read_streams(&store, &[a])
        .await
        .unwrap();
    assert_eq!(read.events().len(), 1, "nothing written on a refusal");
}
