// A fold cannot depend on the command deciding on it: a fold that holds a
// reference to its command (to sort events by the payer, say) is refused,
// since a fold is `'static` and deserialisable.
use eventcore::{Event, Fold, StreamId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
enum Ledger {
    Credited {
        #[stream]
        account: StreamId,
        amount: u64,
    },
}

#[derive(Debug)]
struct Transfer {
    from: StreamId,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct PayerBalance<'c> {
    #[serde(skip)]
    command: Option<&'c Transfer>,
    balance: u64,
}

impl<'c> Fold for PayerBalance<'c> {
    type Event = Ledger;
    const NAME: &'static str = "payer-balance";

    fn apply(&mut self, event: &Ledger) {
        let Ledger::Credited { account, amount } = event;
        if self.command.is_some_and(|c| &c.from == account) {
            self.balance += amount;
        }
    }
}

fn main() {}
