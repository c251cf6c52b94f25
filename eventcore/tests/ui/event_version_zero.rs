use eventcore::{BoxError, Event, StreamId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(stream = "account", upcast = upcast)]
enum Account {
    #[event(version = 0)]
    Opened { account: StreamId },
}

fn upcast(_: &str, _: u32, v: serde_json::Value) -> Result<serde_json::Value, BoxError> {
    Ok(v)
}

fn main() {}
