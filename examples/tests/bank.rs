//! The bank workload and its invariant checks, on both stores.

use eventcore::{ExecuteError, execute};
use eventcore_examples::bank::{
    domain::{Amount, BankError, Deposit, OpenAccount, Transfer, Withdraw},
    workload::{self, WorkloadConfig},
};
use eventcore_memory::InMemoryEventStore;
use eventcore_postgres::PostgresEventStore;
use eventcore_testing::fixtures::stream;
use indicatif::ProgressBar;

fn config() -> WorkloadConfig {
    WorkloadConfig {
        accounts: 5,
        transfers: 400,
        deposits: 40,
        withdrawals: 40,
        workers: 16,
        seed: 7,
        initial_balance: 1_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workload_keeps_every_invariant_in_memory() {
    let summary = workload::run(
        InMemoryEventStore::new(),
        eventcore_memory::InMemoryCheckpointStore::new(),
        "memory",
        config(),
        ProgressBar::hidden(),
    )
    .await
    .unwrap();
    assert!(summary.checks.all_passed(), "{summary:#?}");
    assert!(summary.read_model_matches, "{summary:#?}");
    assert_eq!(summary.store_errors, 0);
    assert!(
        summary.repeated_requests > 0,
        "some requests were sent again"
    );
    assert!(summary.repeats_applied_once, "{summary:#?}");
    let last = summary.history.last().expect("a history");
    let id = last.causation_id.as_deref().expect("caused by a request");
    assert!(
        id.contains("-request-"),
        "the command id as causation: {last:?}"
    );
    assert_eq!(summary.commands, 480);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workload_keeps_every_invariant_on_postgres() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL: run ./scripts/test");
    let schema = format!("bank_workload_{}_{}", std::process::id(), fastrand::u32(..));
    let pg_config = eventcore_postgres::PostgresConfig::default()
        .schema(eventcore_postgres::SchemaName::try_new(schema).unwrap());
    let store = PostgresEventStore::connect_with(&url, pg_config)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let summary = workload::run(
        store.clone(),
        store,
        "postgres",
        config(),
        ProgressBar::hidden(),
    )
    .await
    .unwrap();
    assert!(summary.checks.all_passed(), "{summary:#?}");
    assert!(summary.read_model_matches, "{summary:#?}");
    assert_eq!(summary.store_errors, 0);
    assert!(
        summary.repeated_requests > 0,
        "some requests were sent again"
    );
    assert!(summary.repeats_applied_once, "{summary:#?}");
    let last = summary.history.last().expect("a history");
    let id = last.causation_id.as_deref().expect("caused by a request");
    assert!(
        id.contains("-request-"),
        "the command id as causation: {last:?}"
    );
}

fn cents(n: u64) -> Amount {
    Amount::try_new(n).unwrap()
}

#[tokio::test]
async fn business_rules_refuse_bad_commands_with_the_bank_s_own_errors() {
    let store = InMemoryEventStore::new();
    let (a, b) = (stream("a"), stream("b"));
    // The caller matches the command's own error type: no downcast, no text.
    fn refusal(r: Result<eventcore::ExecutionResult, ExecuteError<BankError>>) -> BankError {
        match r {
            Err(ExecuteError::Rejected(e)) => e,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    let deposit = |account: &eventcore::StreamId, n| Deposit {
        account: account.clone(),
        amount: cents(n),
    };
    let transfer = |from: &eventcore::StreamId, to: &eventcore::StreamId, n| Transfer {
        from: from.clone(),
        to: to.clone(),
        amount: cents(n),
    };

    assert_eq!(
        refusal(execute(&store, deposit(&a, 5)).await),
        BankError::NotOpen(a.clone())
    );
    execute(&store, OpenAccount::new(a.clone())).await.unwrap();
    assert_eq!(
        refusal(execute(&store, OpenAccount::new(a.clone())).await),
        BankError::AlreadyOpen(a.clone())
    );
    execute(&store, deposit(&a, 5)).await.unwrap();
    let overdraft = Withdraw {
        account: a.clone(),
        amount: cents(6),
    };
    assert_eq!(
        refusal(execute(&store, overdraft).await),
        BankError::InsufficientFunds {
            account: a.clone(),
            balance: 5,
            wanted: 6
        }
    );
    assert_eq!(
        refusal(execute(&store, transfer(&a, &b, 1)).await),
        BankError::NotOpen(b.clone()),
        "payee closed"
    );
    execute(&store, OpenAccount::new(b.clone())).await.unwrap();
    assert!(matches!(
        refusal(execute(&store, transfer(&a, &b, 6)).await),
        BankError::InsufficientFunds {
            balance: 5,
            wanted: 6,
            ..
        }
    ));
    assert_eq!(
        refusal(execute(&store, transfer(&a, &a, 1)).await),
        BankError::SameAccount(a.clone())
    );
    execute(
        &store,
        Transfer {
            from: a.clone(),
            to: b.clone(),
            amount: cents(5),
        },
    )
    .await
    .unwrap();
    assert!(Amount::try_new(0).is_err(), "zero is not an amount");
    assert_eq!(
        store.all_events().len(),
        5,
        "open a, deposit, open b, transfer out and in"
    );
}
