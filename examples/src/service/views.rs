//! What the service answers: accounts and events as JSON, with money as
//! decimal dollars, and the opaque cursors of the history's pages.

use std::time::{SystemTime, UNIX_EPOCH};

use eventcore::{RecordedEvent, StreamVersion};
use serde::Serialize;

use crate::bank::{domain::BankEvent, money};

/// One account: `{"id":"acc-001","owner":"Alice","balance":1300.0,"version":3}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountView {
    /// The account id.
    pub id: String,
    /// Who holds it.
    pub owner: String,
    /// Its balance, in dollars.
    pub balance: f64,
    /// Its stream's version: how many events it has.
    pub version: u64,
}

impl AccountView {
    /// The view of an account with `balance` in cents.
    pub fn new(id: &str, owner: &str, balance: i128, version: u64) -> Self {
        AccountView {
            id: id.to_owned(),
            owner: owner.to_owned(),
            balance: money::dollars(balance),
            version,
        }
    }
}

/// One event of an account's history: the example's fields first
/// (`{"type":"MoneyDeposited","amount":500.0}`), then its version, the
/// time it was recorded, its place in the global log, its ids and the
/// schema version it was stored at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventView {
    /// The stored event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `AccountOpened`: who holds the account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// `AccountOpened`: what it opened with, in dollars.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_balance: Option<f64>,
    /// `TransferReceived`: the payer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `TransferSent`: the payee.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// How much, in dollars.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<f64>,
    /// Its version in the account's stream.
    pub version: u64,
    /// When it was recorded (RFC 3339, UTC).
    pub recorded_at: String,
    /// Its id.
    pub event_id: String,
    /// Its place in the global log.
    pub position: u64,
    /// The id shared by everything one request caused.
    pub correlation_id: Option<String>,
    /// What caused it, if a command id or an event did.
    pub causation_id: Option<String>,
    /// The schema version it was stored at (older ones are upcast).
    pub schema_version: u32,
}

/// The view of `event`, decoded from `recorded`.
pub fn event_view(recorded: &RecordedEvent, event: &BankEvent) -> EventView {
    let metadata = recorded.metadata();
    let mut view = EventView {
        event_type: recorded.event_type().to_owned(),
        owner: None,
        initial_balance: None,
        from: None,
        to: None,
        amount: None,
        version: recorded.version().get(),
        recorded_at: rfc3339(recorded.recorded_at()),
        event_id: recorded.event_id().to_string(),
        position: recorded.global_sequence(),
        correlation_id: metadata.correlation_id().map(|id| id.as_str().to_owned()),
        causation_id: metadata.causation_id().map(|id| id.as_str().to_owned()),
        schema_version: recorded.schema_version(),
    };
    match event {
        BankEvent::Opened {
            owner,
            initial_balance,
            ..
        } => {
            view.owner = Some(owner.clone());
            view.initial_balance = Some(money::dollars(i128::from(*initial_balance)));
        }
        BankEvent::Deposited { amount, .. } | BankEvent::Withdrawn { amount, .. } => {
            view.amount = Some(dollars(amount));
        }
        BankEvent::TransferredOut { to, amount, .. } => {
            view.to = Some(to.as_str().to_owned());
            view.amount = Some(dollars(amount));
        }
        BankEvent::TransferredIn { from, amount, .. } => {
            view.from = Some(from.as_str().to_owned());
            view.amount = Some(dollars(amount));
        }
    }
    view
}

/// The two accounts of a transfer, after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransferView {
    /// The payer.
    pub from: Option<AccountView>,
    /// The payee.
    pub to: Option<AccountView>,
}

/// A page of the accounts read model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountsList {
    /// The accounts, by id.
    pub accounts: Vec<AccountView>,
    /// The `?after=` of the next page, if there is one.
    pub next: Option<String>,
}

/// The service's health.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
    /// `memory` or `postgres`.
    pub store: &'static str,
    /// `running`.
    pub read_model: &'static str,
}

fn dollars(amount: &crate::bank::domain::Amount) -> f64 {
    money::dollars(i128::from(amount.into_inner()))
}

/// The cursor of a place in a history: opaque to clients.
pub fn cursor(version: StreamVersion) -> String {
    format!("v{:x}", version.get())
}

/// The `Link` header (RFC 8288) of a page of `path`'s history: the page
/// after it (`rel="next"`, `?after=`) and before it (`rel="prev"`,
/// `?before=`), keeping the page size asked for; `None` when it has
/// neither. Cursors are `v` and hex digits, so they need no escaping.
pub fn page_links(
    path: &str,
    limit: Option<usize>,
    next: Option<String>,
    prev: Option<String>,
) -> Option<String> {
    let limit = limit.map(|l| format!("limit={l}&")).unwrap_or_default();
    let links: Vec<String> = [(next, "after", "next"), (prev, "before", "prev")]
        .into_iter()
        .filter_map(|(cursor, param, rel)| {
            cursor.map(|c| format!("<{path}?{limit}{param}={c}>; rel=\"{rel}\""))
        })
        .collect();
    (!links.is_empty()).then(|| links.join(", "))
}

/// The version a cursor stands for, if `text` is one.
pub fn parse_cursor(text: &str) -> Option<StreamVersion> {
    let hex = text.strip_prefix('v')?;
    if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(StreamVersion::new)
}

/// `time` as RFC 3339 in UTC with microseconds:
/// `2026-12-02T01:02:03.000004Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_micros()
    )
}

/// The date `days` after 1970-01-01 (Howard Hinnant's civil-from-days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_are_formatted_as_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        // 2024-02-29T12:34:56.789012Z: a leap day.
        let t = UNIX_EPOCH + Duration::from_micros(1_709_210_096_789_012);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789012Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(rfc3339(t), "2099-12-31T23:59:59.000000Z");
    }

    #[test]
    fn page_links_name_the_pages_around() {
        assert_eq!(page_links("/accounts/a/events", Some(2), None, None), None);
        assert_eq!(
            page_links(
                "/accounts/a/events",
                Some(2),
                Some("v2".into()),
                Some("v1".into())
            )
            .as_deref(),
            Some(
                "</accounts/a/events?limit=2&after=v2>; rel=\"next\", \
                 </accounts/a/events?limit=2&before=v1>; rel=\"prev\""
            )
        );
        assert_eq!(
            page_links("/accounts/a/events", None, None, Some("v3".into())).as_deref(),
            Some("</accounts/a/events?before=v3>; rel=\"prev\"")
        );
    }

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        for v in [0, 1, 255, u64::MAX] {
            let c = cursor(StreamVersion::new(v));
            assert_eq!(parse_cursor(&c), Some(StreamVersion::new(v)));
        }
        for bad in ["", "v", "12", "vz", "v-1", "v11111111111111111"] {
            assert_eq!(parse_cursor(bad), None, "{bad:?}");
        }
    }
}
