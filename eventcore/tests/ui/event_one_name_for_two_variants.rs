use eventcore::{Event, StreamId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
enum Account {
    #[serde(rename = "Changed")]
    Renamed { #[stream] account: StreamId },
    Changed { #[stream] account: StreamId },
}

fn main() {}
