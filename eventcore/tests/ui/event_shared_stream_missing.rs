use eventcore::{Event, StreamId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
#[event(stream = "account")]
enum Account {
    Opened { account: StreamId },
    Merged { into: StreamId },
}

fn main() {}
