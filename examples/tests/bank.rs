//! The bank workload and its invariant checks, on both stores.

use eventcore::{ExecuteError, execute};
use eventcore_examples::bank::{
    domain::{Amount, Deposit, OpenAccount, Transfer, Withdraw},
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
async fn business_rules_refuse_bad_commands() {
    let store = InMemoryEventStore::new();
    let (a, b) = (stream("a"), stream("b"));
    let rejected = |r: Result<_, ExecuteError>| matches!(r, Err(ExecuteError::Rejected(_)));

    assert!(
        rejected(
            execute(
                &store,
                Deposit {
                    account: a.clone(),
                    amount: cents(5)
                }
            )
            .await
        ),
        "closed account"
    );
    execute(&store, OpenAccount { account: a.clone() })
        .await
        .unwrap();
    assert!(
        rejected(execute(&store, OpenAccount { account: a.clone() }).await),
        "opened twice"
    );
    execute(
        &store,
        Deposit {
            account: a.clone(),
            amount: cents(5),
        },
    )
    .await
    .unwrap();
    assert!(
        rejected(
            execute(
                &store,
                Withdraw {
                    account: a.clone(),
                    amount: cents(6)
                }
            )
            .await
        ),
        "overdraft"
    );
    assert!(
        rejected(
            execute(
                &store,
                Transfer {
                    from: a.clone(),
                    to: b.clone(),
                    amount: cents(1)
                }
            )
            .await
        ),
        "payee closed"
    );
    execute(&store, OpenAccount { account: b.clone() })
        .await
        .unwrap();
    assert!(
        rejected(
            execute(
                &store,
                Transfer {
                    from: a.clone(),
                    to: b.clone(),
                    amount: cents(6)
                }
            )
            .await
        ),
        "insufficient"
    );
    assert!(
        rejected(
            execute(
                &store,
                Transfer {
                    from: a.clone(),
                    to: a.clone(),
                    amount: cents(1)
                }
            )
            .await
        ),
        "to itself"
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
