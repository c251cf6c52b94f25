use eventcore::{Command, StreamId};

#[derive(Command)]
struct Deposit {
    #[stream]
    account: StreamId,
    #[stream]
    amount: u64,
}

fn main() {}
