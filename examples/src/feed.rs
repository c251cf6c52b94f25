//! A consumer of the bank's events on NATS JetStream (`bank-feed`): it
//! keeps every account's balance from the stream alone, never reading the
//! bank's store, and applies each message once through an
//! [`Inbox`] whose position it saves with the
//! balances, in one file written whole.

use std::{collections::BTreeMap, ops::ControlFlow, path::Path, time::Duration};

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use eventcore_nats::{Inbox, InboxError};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::bank::domain::{Account, BankEvent};

/// What the consumer keeps: the stream sequence of the last message
/// applied, and each account's balance in cents after it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedState {
    /// The JetStream stream sequence of the last message applied.
    pub applied: u64,
    /// Every account's balance, in cents.
    pub balances: BTreeMap<String, i128>,
}

/// Why following the stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// JetStream could not be reached or refused.
    #[error("JetStream {what} failed")]
    JetStream {
        /// What was being done.
        what: &'static str,
        /// Its error.
        #[source]
        source: eventcore::BoxError,
    },
    /// A message could not be applied.
    #[error("a message could not be applied")]
    Inbox(#[from] InboxError),
    /// A message was not a bank event.
    #[error("a message is not a bank event")]
    Event(#[from] eventcore::StoreError),
    /// The state file could not be read or written.
    #[error("the state file {path} could not be {what}")]
    State {
        /// The file.
        path: String,
        /// Read or written.
        what: &'static str,
        /// Why.
        #[source]
        source: eventcore::BoxError,
    },
}

fn jetstream(what: &'static str) -> impl FnOnce(eventcore::BoxError) -> FeedError {
    move |source| FeedError::JetStream { what, source }
}

impl FeedState {
    /// The state saved at `path`, or a fresh one if there is none.
    ///
    /// # Errors
    /// [`FeedError::State`] if the file exists and cannot be read.
    pub fn load(path: &Path) -> Result<Self, FeedError> {
        let failed = |source: eventcore::BoxError| FeedError::State {
            path: path.display().to_string(),
            what: "read",
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| failed(e.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FeedState::default()),
            Err(e) => Err(failed(e.into())),
        }
    }

    /// Saves the state at `path` whole: written beside it, then renamed
    /// over it, so a crash leaves the old state or the new one.
    ///
    /// # Errors
    /// [`FeedError::State`] if it cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), FeedError> {
        let failed = |source: eventcore::BoxError| FeedError::State {
            path: path.display().to_string(),
            what: "written",
            source,
        };
        let mut next = path.as_os_str().to_owned();
        next.push(".next");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| failed(e.into()))?;
        std::fs::write(&next, bytes).map_err(|e| failed(e.into()))?;
        std::fs::rename(&next, path).map_err(|e| failed(e.into()))
    }
}

/// Applies the stream's messages after `state.applied` to `state`, in
/// order, each once, on one ordered consumer that starts right after the
/// last message applied, so a restarted consumer neither repeats nor
/// skips (an inbox drops any message it is handed again). Whenever no
/// message arrives for `idle`, calls `on_idle` with the state and the
/// messages applied since the last call (save the state there), and goes
/// on unless it answers [`ControlFlow::Break`]; the number applied in all.
///
/// # Errors
/// [`FeedError`]: JetStream failing, a message that is not a bank event,
/// or `on_idle`'s error.
pub async fn follow(
    context: &jetstream::Context,
    stream: &str,
    state: &mut FeedState,
    idle: Duration,
    mut on_idle: impl FnMut(&FeedState, u64) -> Result<ControlFlow<()>, FeedError>,
) -> Result<u64, FeedError> {
    let stream = context
        .get_stream(stream)
        .await
        .map_err(|e| jetstream("get stream")(e.into()))?;
    let deliver_policy = if state.applied == 0 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: state.applied + 1,
        }
    };
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| jetstream("create consumer")(e.into()))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| jetstream("read messages")(e.into()))?;
    let mut inbox = Inbox::after(state.applied);
    let (mut applied, mut since) = (0, 0);
    loop {
        let message = match tokio::time::timeout(idle, messages.next()).await {
            Err(_) => {
                if on_idle(state, std::mem::take(&mut since))?.is_break() {
                    return Ok(applied);
                }
                continue;
            }
            Ok(None) => return Ok(applied),
            Ok(Some(message)) => message.map_err(|e| jetstream("next message")(e.into()))?,
        };
        if let Some(delivery) = inbox.accept(&message)? {
            let event: BankEvent = delivery.event.decode()?;
            let account = eventcore::Event::stream_id(&event).as_str().to_owned();
            let balance = state.balances.entry(account).or_default();
            *balance = Account {
                open: true,
                balance: *balance,
            }
            .after(&event)
            .balance;
            inbox.mark(delivery.sequence);
            state.applied = inbox.applied();
            applied += 1;
            since += 1;
        }
    }
}
