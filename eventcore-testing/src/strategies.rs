//! proptest strategies for the fixtures' commands.

use proptest::prelude::*;

use crate::fixtures::{Credit, LedgerCommand, Move, stream};

/// `n` ledger accounts named `acct-0` .. `acct-{n-1}`.
pub fn accounts(n: usize) -> Vec<eventcore::StreamId> {
    (0..n).map(|i| stream(&format!("acct-{i}"))).collect()
}

/// Setup that credits each of `n` accounts with `amount`.
pub fn funded(n: usize, amount: u64) -> Vec<LedgerCommand> {
    accounts(n)
        .into_iter()
        .map(|account| LedgerCommand::Credit(Credit { account, amount }))
        .collect()
}

/// Batches of 1 to `max_len` commands over `n` accounts: mostly moves of
/// 1..80 between two different accounts, some credits of 0..50 (0 is a no-op).
pub fn ledger_batch(n: usize, max_len: usize) -> impl Strategy<Value = Vec<LedgerCommand>> {
    let ids = accounts(n.max(2));
    let count = ids.len();
    let one = prop_oneof![
        4 => (0..count, 1..count, 1u64..80).prop_map({
            let ids = ids.clone();
            move |(from, step, amount)| LedgerCommand::Move(Move {
                from: ids[from].clone(),
                to: ids[(from + step) % count].clone(),
                amount,
            })
        }),
        1 => (0..count, 0u64..50).prop_map(move |(a, amount)| LedgerCommand::Credit(Credit { account: ids[a].clone(), amount })),
    ];
    proptest::collection::vec(one, 1..=max_len.max(1))
}
