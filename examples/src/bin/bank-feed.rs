//! Keeps every account's balance from the bank's events on NATS JetStream
//! alone: `cargo run -p eventcore-examples --bin bank-feed -- --nats-url
//! nats://127.0.0.1:4222`, beside a `bank-service --nats-url ...`. Saves
//! its position and balances in `--state` (each message applied once,
//! across restarts); `--until-idle` stops once no message came for a
//! second and prints the balances as JSON.

use std::{ops::ControlFlow, path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use eventcore_examples::{
    cli,
    feed::{FeedState, follow},
    service::JETSTREAM_STREAM,
};

#[derive(Debug, Parser)]
#[command(about = "Balances of the eventcore bank, from its events on JetStream")]
struct Args {
    /// The NATS server the bank's service relays to.
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Where the position and balances are kept.
    #[arg(long, value_name = "PATH", default_value = "bank-feed.json")]
    state: PathBuf,
    /// Stop once caught up (no message for a second) and print the balances.
    #[arg(long)]
    until_idle: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli::report(e.as_ref()),
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let client = async_nats::connect(&args.nats_url).await?;
    let context = async_nats::jetstream::new(client);
    let mut state = FeedState::load(&args.state)?;
    let path = args.state.clone();
    let until_idle = args.until_idle;
    // One consumer for the whole run; the state is saved whenever the
    // stream goes quiet for a second, and at Ctrl-C.
    let followed = tokio::select! {
        followed = follow(&context, JETSTREAM_STREAM, &mut state, Duration::from_secs(1), |state, since| {
            state.save(&path)?;
            if since > 0 {
                eprintln!("applied {since} messages, through stream sequence {}", state.applied);
            }
            Ok(if until_idle { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
        }) => Some(followed),
        _ = tokio::signal::ctrl_c() => None,
    };
    if let Some(followed) = followed {
        followed?;
    }
    state.save(&args.state)?;
    if args.until_idle {
        println!("{}", serde_json::to_string_pretty(&state.balances)?);
    }
    Ok(())
}
