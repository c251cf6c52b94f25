use eventcore::{Event, StreamId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, Event)]
enum Wrapped<T> {
    Happened { #[stream] stream: StreamId, value: T },
}

fn main() {}
