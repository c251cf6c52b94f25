//! The bank's commands under property-tested concurrency, on both stores:
//! random batches of transfers, deposits and withdrawals run on many tasks
//! at once; money is conserved, no account is overdrawn, and the run is
//! serializable with nothing lost or duplicated.

use eventcore::StreamId;
use eventcore_examples::bank::domain::{
    Amount, BankCommand, Deposit, OpenAccount, Transfer, Withdraw, bank_invariant,
};
use eventcore_postgres::PostgresEventStore;
use eventcore_testing::concurrency::{ConcurrencyConfig, check_concurrency};
use eventcore_testing::proptest::{self, prelude::*};

const ACCOUNTS: usize = 4;

fn account(i: usize) -> StreamId {
    StreamId::try_new(format!("bank-{i}")).unwrap()
}

fn amount(cents: u64) -> Amount {
    Amount::try_new(cents).unwrap()
}

fn setup() -> Vec<BankCommand> {
    (0..ACCOUNTS)
        .flat_map(|i| {
            [
                BankCommand::Open(OpenAccount::new(account(i))),
                BankCommand::Deposit(Deposit {
                    account: account(i),
                    amount: amount(100),
                }),
            ]
        })
        .collect()
}

fn batch() -> impl Strategy<Value = Vec<BankCommand>> {
    let one = prop_oneof![
        6 => (0..ACCOUNTS, 1..ACCOUNTS, 1u64..90).prop_map(|(from, step, cents)| BankCommand::Transfer(Transfer {
            from: account(from),
            to: account((from + step) % ACCOUNTS),
            amount: amount(cents),
        })),
        1 => (0..ACCOUNTS, 1u64..60).prop_map(|(a, cents)| BankCommand::Deposit(Deposit { account: account(a), amount: amount(cents) })),
        2 => (0..ACCOUNTS, 1u64..90).prop_map(|(a, cents)| BankCommand::Withdraw(Withdraw { account: account(a), amount: amount(cents) })),
        1 => (0..ACCOUNTS + 1).prop_map(|a| BankCommand::Open(OpenAccount::new(account(a)))),
    ];
    proptest::collection::vec(one, 1..40)
}

#[test]
fn bank_is_serializable_and_conserves_money_in_memory() {
    check_concurrency(
        64,
        || async { eventcore_memory::InMemoryEventStore::new() },
        setup(),
        batch(),
        ConcurrencyConfig::default(),
        bank_invariant,
    );
}

/// Runs the bank's property test on PostgreSQL, each batch in a schema of
/// its own.
fn check_on_postgres(cases: u32, config: ConcurrencyConfig) {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL: run ./scripts/test");
    let next = std::sync::atomic::AtomicU32::new(0);
    check_concurrency(
        cases,
        || {
            let url = url.clone();
            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                let schema = format!("bank_prop_{}_{n}_{}", std::process::id(), fastrand::u32(..));
                let config = eventcore_postgres::PostgresConfig::default()
                    .max_connections(8)
                    .schema(eventcore_postgres::SchemaName::try_new(schema).unwrap());
                let store = PostgresEventStore::connect_with(&url, config)
                    .await
                    .unwrap();
                store.migrate().await.unwrap();
                store
            }
        },
        setup(),
        batch(),
        config,
        bank_invariant,
    );
}

#[test]
fn bank_is_serializable_and_conserves_money_on_postgres() {
    check_on_postgres(24, ConcurrencyConfig::default());
}

/// A fifth of the replies lost after commit, every command with an id: on
/// the real server each command is still applied exactly once.
#[test]
fn bank_applies_each_command_once_under_lost_replies_on_postgres() {
    check_on_postgres(
        8,
        ConcurrencyConfig::default()
            .with_lost_reply_rate(0.2)
            .with_command_ids(true),
    );
}
