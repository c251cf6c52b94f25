use eventcore::Event;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
enum Counter {
    Counted { #[stream] count: u64 },
}

fn main() {}
