use eventcore::{Event, StreamId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
enum Account {
    Opened { #[stream] account: StreamId },
    Closed { account: StreamId },
}

fn main() {}
