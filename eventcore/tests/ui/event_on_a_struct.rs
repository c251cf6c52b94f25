use eventcore::{Event, StreamId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
struct Opened {
    #[stream]
    account: StreamId,
}

fn main() {}
