// `#[derive(FoldState)]` names folds by the state's fields: a tuple struct
// has none (use a tuple of folds as the state instead).
use std::sync::Arc;

use eventcore::{Event, Fold, FoldState, StreamId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
enum Ledger {
    Credited {
        #[stream]
        account: StreamId,
        amount: u64,
    },
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Balance(u64);

impl Fold for Balance {
    type Event = Ledger;
    const NAME: &'static str = "balance";
    fn apply(&mut self, Ledger::Credited { amount, .. }: &Ledger) {
        self.0 += amount;
    }
}

#[derive(Default, FoldState)]
struct Pair(Arc<Balance>, Arc<Balance>);

fn main() {}
