use eventcore::{Event, StreamId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
enum Ledger {
    Moved { #[stream] from: StreamId, #[stream] to: StreamId },
}

fn main() {}
