use eventcore::{Command, StreamId};

#[derive(Command)]
#[command(rename = "Deposit")]
struct AddFunds {
    #[stream]
    account: StreamId,
}

fn main() {}
