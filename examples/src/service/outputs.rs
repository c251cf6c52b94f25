//! What the service sends out of the store: a statement to an HTTP
//! endpoint for every large withdrawal (a reactor and a dispatcher, once
//! per event from the endpoint's point of view through its idempotency
//! key), and its events to NATS JetStream (a relay).

use std::{num::NonZeroU32, time::Duration};

use eventcore::{
    BoxError, Deliver, DispatchConfig, DispatchHandle, DispatchReport, LogQuery, Reaction, Reactor,
    RelayConfig, RelayHandle, RelayReport, RetryPolicy, StoredEffect, SubscriptionConfig,
    SubscriptionHandle, SubscriptionName, dispatch, relay, subscribe,
};
use eventcore_nats::JetStreamSink;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::bank::domain::BankEvent;

/// The reactor that records statements.
pub const STATEMENTS: &str = "bank-service-statements";
/// The relay to JetStream.
pub const RELAY: &str = "bank-service-jetstream";
/// The JetStream stream the service publishes to, and its subject prefix.
pub const JETSTREAM_STREAM: &str = "BANK";
/// Subjects are `bank.{account}.{event type}`.
pub const JETSTREAM_PREFIX: &str = "bank";

/// An `http://host:port/path` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`.
    pub authority: String,
    /// The path, from its `/`.
    pub path: String,
}

/// Why a statements URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?} is not an http://host:port/path URL: {reason}")]
pub struct EndpointError {
    url: String,
    reason: &'static str,
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |reason| EndpointError {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// is supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| bad("it names no port"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad("its host or port is not valid"));
        }
        Ok(Endpoint {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// Where statements go, and for which withdrawals.
#[derive(Debug, Clone)]
pub struct StatementsTo {
    /// The endpoint statements are POSTed to.
    pub endpoint: Endpoint,
    /// The smallest withdrawal, in cents, that gets a statement.
    pub threshold_cents: u64,
}

/// What the service sends out, besides its answers.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Statements for large withdrawals.
    pub statements: Option<StatementsTo>,
    /// The events, relayed to JetStream.
    pub jetstream: Option<JetStreamSink>,
}

/// Records a statement effect for each withdrawal of at least the
/// threshold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LargeWithdrawals {
    pub(crate) threshold_cents: u64,
}

impl Reactor<BankEvent> for LargeWithdrawals {
    async fn react(&mut self, reaction: &mut Reaction, event: &BankEvent) -> Result<(), BoxError> {
        if let BankEvent::Withdrawn { account, amount } = event
            && amount.into_inner() >= self.threshold_cents
        {
            let context = reaction.context();
            let statement = json!({
                "account": account.as_str(),
                "amount_cents": amount.into_inner(),
                "event_id": context.recorded().event_id().to_string(),
                "position": context.position().to_string(),
            });
            reaction.effect("statements", statement);
        }
        Ok(())
    }
}

impl eventcore_postgres::PgReactor<BankEvent> for LargeWithdrawals {
    async fn react(
        &mut self,
        _: &mut sqlx::PgConnection,
        reaction: &mut Reaction,
        event: &BankEvent,
    ) -> Result<(), BoxError> {
        Reactor::react(self, reaction, event).await
    }
}

/// POSTs a statement as JSON with its effect key as `Idempotency-Key`;
/// any answer but 2xx is a failed attempt.
#[derive(Debug, Clone)]
pub(crate) struct Post(pub(crate) Endpoint);

impl Deliver for Post {
    async fn deliver(&self, effect: &StoredEffect) -> Result<(), BoxError> {
        tokio::time::timeout(Duration::from_secs(10), self.post(effect))
            .await
            .map_err(|_| "the statements endpoint did not answer in 10 s")?
    }
}

impl Post {
    async fn post(&self, effect: &StoredEffect) -> Result<(), BoxError> {
        let stream = tokio::net::TcpStream::connect(&self.0.authority).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::post(&self.0.path)
            .header("host", &self.0.authority)
            .header("content-type", "application/json")
            .header("idempotency-key", effect.effect.key.as_str())
            .body(Full::new(bytes::Bytes::from(
                effect.effect.payload.to_string(),
            )))?;
        let answer = sender.send_request(request).await?;
        let status = answer.status();
        // Read to the end, so the endpoint's answer is whole.
        let _ = answer.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the statements endpoint answered {status}").into())
        }
    }
}

pub(crate) fn reactor_name() -> SubscriptionName {
    SubscriptionName::try_new(STATEMENTS).unwrap_or_else(|_| unreachable!("a valid name"))
}

pub(crate) fn relay_name() -> SubscriptionName {
    SubscriptionName::try_new(RELAY).unwrap_or_else(|_| unreachable!("a valid name"))
}

/// Only withdrawals, patiently retried.
pub(crate) fn reactor_config() -> SubscriptionConfig {
    SubscriptionConfig::default()
        .with_filter(LogQuery::from_start(0).with_event_types(["MoneyWithdrawn"]))
        .with_poll_interval(Duration::from_millis(50))
        .with_retry(
            RetryPolicy::default()
                .with_max_attempts(NonZeroU32::new(300).unwrap_or(NonZeroU32::MIN))
                .with_max_delay(Duration::from_secs(1)),
        )
}

/// Ten attempts, from 50 ms doubling to 5 s, then parked.
pub(crate) fn dispatch_config() -> DispatchConfig {
    DispatchConfig::default()
        .with_lease(Duration::from_secs(30))
        .with_retry(
            RetryPolicy::default()
                .with_max_attempts(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN))
                .with_base_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_secs(5)),
        )
}

/// The running outputs of a service.
#[derive(Debug, Default)]
pub(crate) struct Started {
    pub(crate) reactor: Option<SubscriptionHandle>,
    pub(crate) dispatcher: Option<DispatchHandle>,
    pub(crate) relay: Option<RelayHandle>,
}

/// What the outputs did, when the service stopped.
#[derive(Debug, Default)]
pub struct OutputsReport {
    /// The dispatcher's report, if statements were sent.
    pub statements: Option<DispatchReport>,
    /// The relay's report, if events were relayed.
    pub relay: Option<RelayReport>,
}

impl Started {
    /// Starts what `outputs` asks for on `store` (its log, leases and
    /// outbox), the reactor's handler made by `reacting`.
    pub(crate) fn start<S, C, H>(
        log: S,
        checkpoints: C,
        outputs: Outputs,
        reacting: impl FnOnce(LargeWithdrawals) -> Result<H, BoxError>,
    ) -> Result<Self, BoxError>
    where
        S: eventcore::EventLog + Clone + 'static,
        C: eventcore::CheckpointStore
            + eventcore::SubscriptionLeases
            + eventcore::Outbox
            + Clone
            + 'static,
        H: eventcore::Handler<BankEvent>,
    {
        let mut started = Started::default();
        if let Some(to) = outputs.statements {
            let handler = reacting(LargeWithdrawals {
                threshold_cents: to.threshold_cents,
            })?;
            started.reactor = Some(subscribe(
                log.clone(),
                checkpoints.clone(),
                reactor_name(),
                handler,
                reactor_config(),
            ));
            started.dispatcher = Some(dispatch(
                checkpoints.clone(),
                Post(to.endpoint),
                dispatch_config(),
            ));
        }
        if let Some(sink) = outputs.jetstream {
            started.relay = Some(relay(
                log,
                checkpoints,
                relay_name(),
                sink,
                RelayConfig::default(),
            ));
        }
        Ok(started)
    }

    /// Stops the reactor (its checkpoint saved), the dispatcher after the
    /// delivery under way, and the relay after its batch.
    pub(crate) async fn stop(self) -> Result<OutputsReport, eventcore::SubscriptionError> {
        if let Some(reactor) = self.reactor {
            reactor.stop().await?;
        }
        let statements = match self.dispatcher {
            Some(dispatcher) => Some(dispatcher.stop().await),
            None => None,
        };
        let relay = match self.relay {
            Some(relay) => Some(relay.stop().await),
            None => None,
        };
        Ok(OutputsReport { statements, relay })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_or_say_why_not() {
        let e: Endpoint = "http://127.0.0.1:9000/statements".parse().unwrap();
        assert_eq!(
            (e.authority.as_str(), e.path.as_str()),
            ("127.0.0.1:9000", "/statements")
        );
        let e: Endpoint = "http://localhost:80".parse().unwrap();
        assert_eq!(e.path, "/");
        for bad in [
            "https://a:1/x",
            "http://a/x",
            "http://:1/x",
            "http://a:port/x",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }
}
