use eventcore::{Event, StreamId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(stream = "account")]
enum Account {
    Opened { account: StreamId },
    #[event(version = 2)]
    Deposited { account: StreamId, cents: u64 },
}

fn main() {}
