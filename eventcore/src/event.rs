//! The events a domain records.

use serde::{Serialize, de::DeserializeOwned};

use crate::{BoxError, StreamId};

/// A domain event: a fact that happened to one stream.
///
/// Events are stored in their JSON form (`serde_json`) and read back by
/// deserialising that form, on every store, so a type whose serialisation does
/// not round-trip fails the same way in tests on the in-memory store as it
/// would in production on PostgreSQL.
///
/// Usually derived on an enum, one variant per kind of fact, with
/// [`#[derive(Event)]`](macro@crate::Event) (the `derive` feature, on by
/// default). By hand it looks like this:
///
/// ```
/// use eventcore::{Event, StreamId};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// enum AccountEvent {
///     Opened { account: StreamId },
///     Deposited { account: StreamId, amount: u64 },
/// }
///
/// impl Event for AccountEvent {
///     fn stream_id(&self) -> &StreamId {
///         match self {
///             AccountEvent::Opened { account } | AccountEvent::Deposited { account, .. } => account,
///         }
///     }
///
///     fn event_type(&self) -> &'static str {
///         match self {
///             AccountEvent::Opened { .. } => "AccountOpened",
///             AccountEvent::Deposited { .. } => "MoneyDeposited",
///         }
///     }
/// }
/// ```
pub trait Event: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The stream this event belongs to.
    fn stream_id(&self) -> &StreamId;

    /// A stable name for this kind of event (one per variant), stored next to
    /// the payload so that readers can filter and route without decoding it.
    fn event_type(&self) -> &'static str;

    /// The schema version this code writes `event_type` at: 1 until its
    /// shape changes in a way older payloads no longer deserialise into.
    /// Stored with every event; an event read back at an older version
    /// goes through [`upcast`](Self::upcast) first, one at a newer version
    /// (written by newer code) is a typed error.
    ///
    /// [`#[derive(Event)]`](macro@crate::Event) takes it from
    /// `#[event(version = N)]` on the variant.
    fn schema_version(event_type: &str) -> u32 {
        let _ = event_type;
        1
    }

    /// Brings the payload of an event stored at an older `from_version` of
    /// `event_type` to the shape this code reads (the current
    /// [`schema_version`](Self::schema_version)). Called only for such
    /// events, on every read that decodes (command folds, the global log,
    /// subscriptions); the stored event never changes. The default has no
    /// upcaster and refuses.
    ///
    /// [`#[derive(Event)]`](macro@crate::Event) calls the function named by
    /// `#[event(upcast = path)]` on the enum.
    ///
    /// ```
    /// use eventcore::{BoxError, Event, StreamId};
    /// use serde::{Deserialize, Serialize};
    /// use serde_json::{Value, json};
    ///
    /// /// V1 stored `amount` as a float of dollars; V2 stores integer cents.
    /// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    /// struct Deposited { account: StreamId, cents: u64 }
    ///
    /// impl Event for Deposited {
    ///     fn stream_id(&self) -> &StreamId { &self.account }
    ///     fn event_type(&self) -> &'static str { "MoneyDeposited" }
    ///     fn schema_version(_: &str) -> u32 { 2 }
    ///     fn upcast(_: &str, from: u32, mut v: Value) -> Result<Value, BoxError> {
    ///         if from == 1 {
    ///             let dollars = v["amount"].as_f64().ok_or("V1 amount is not a number")?;
    ///             v["cents"] = json!((dollars * 100.0).round() as u64);
    ///         }
    ///         Ok(v)
    ///     }
    /// }
    ///
    /// let v1 = json!({"account": "acc-1", "amount": 12.34});
    /// let now: Deposited = serde_json::from_value(Deposited::upcast("MoneyDeposited", 1, v1)?)?;
    /// assert_eq!(now.cents, 1234);
    /// # Ok::<(), BoxError>(())
    /// ```
    ///
    /// # Errors
    /// Whatever the upcaster returns; the read fails with
    /// [`StoreError::Upcast`](crate::StoreError::Upcast) naming the event.
    fn upcast(
        event_type: &str,
        from_version: u32,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, BoxError> {
        let _ = payload;
        Err(format!(
            "no upcaster for `{event_type}` at schema version {from_version}: the type reads version {}",
            Self::schema_version(event_type)
        )
        .into())
    }
}
