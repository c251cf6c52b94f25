use eventcore::{Command, StreamId};

#[derive(Command)]
#[command(name = "")]
struct Deposit {
    #[stream]
    account: StreamId,
}

fn main() {}
