use eventcore::{Command, StreamId};

#[derive(Command)]
struct Deposit {
    #[stream]
    account: StreamId,
}

#[derive(Command)]
enum AnyCommand {
    Deposit(Deposit),
    Nothing,
}

fn main() {}
