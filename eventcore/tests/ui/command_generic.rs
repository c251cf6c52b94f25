use eventcore::{Command, StreamId};

#[derive(Command)]
struct Deposit<T> {
    #[stream]
    account: StreamId,
    amount: T,
}

fn main() {}
