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
        FaultPlan {
            conflict: 0.5,
            ..FaultPlan::none()
        },
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
    let plan = FaultPlan {
        transient_before_read: 0.3,
        transient_before_append: 0.3,
        ..FaultPlan::none()
    };
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
    // The documented gap until idempotent commands: the first append
    // committed, the caller saw a transient error, execute retried.
    let plan = FaultPlan {
        transient_after_append: 1.0,
        ..FaultPlan::none()
    };
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
async fn same_seed_same_faults_when_sequential() {
    let plan = FaultPlan {
        conflict: 0.3,
        transient_before_read: 0.2,
        transient_after_append: 0.1,
        ..FaultPlan::none()
    };
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
    let plan = FaultPlan {
        delay: 1.0,
        max_delay: std::time::Duration::from_millis(2),
        ..FaultPlan::none()
    };
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
