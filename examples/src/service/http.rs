//! The routes and their handlers.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, Request, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use eventcore::{
    CommandId, CommandLogic, EventStore, EventStoreExt, ExecuteOptions, ExecutionResult, Metadata,
    Position, StreamId, StreamVersion, execute_with,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{App, Problem, views};
use crate::bank::{
    domain::{Account, Amount, BankError, BankEvent, Deposit, OpenAccount, Transfer, Withdraw},
    money,
};

/// The most events or accounts one page holds, and the default.
const MAX_LIMIT: usize = 500;
const DEFAULT_LIMIT: usize = 50;
/// The longest account id and owner name taken.
const MAX_ID_CHARS: usize = 64;
const MAX_OWNER_CHARS: usize = 200;

pub(super) fn router<S>(app: Arc<App<S>>, request_timeout: Duration) -> Router
where
    S: EventStore + Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/accounts", get(list_accounts::<S>))
        .route(
            "/accounts/{id}",
            get(get_account::<S>).post(account_command::<S>),
        )
        .route("/accounts/{id}/events", get(account_events::<S>))
        .route("/transfers", post(transfer::<S>))
        .route("/health", get(health::<S>))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "not-found", "no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "this route does not take that method",
            )
        })
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            within(request_timeout, request, next)
        }))
        .layer(middleware::from_fn(log_request))
        .with_state(app)
}

/// Answers 503 for a request that takes longer than `limit` (its body
/// included), dropping its handler.
async fn within(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than {} ms; a command cut short was applied whole or \
                 not at all: send it again with its Idempotency-Key",
                limit.as_millis()
            ),
        )
        .into_response(),
    }
}

/// One log line per request: method, path, status, time taken.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let start = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        target: "bank_service::http",
        %method,
        %path,
        status = response.status().as_u16(),
        elapsed_ms = %format_args!("{:.3}", start.elapsed().as_secs_f64() * 1000.0),
        "request"
    );
    response
}

/// An account id from a path or body: 1 to 64 of `A-Z a-z 0-9 - _ .`.
fn account(id: &str) -> Result<StreamId, Problem> {
    let ok = !id.is_empty()
        && id.chars().count() <= MAX_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(Problem::bad_request(format!(
            "account id {id:?} is not 1 to {MAX_ID_CHARS} of A-Z, a-z, 0-9, '-', '_', '.'"
        )));
    }
    StreamId::try_new(id).map_err(|e| Problem::bad_request(format!("account id {id:?}: {e}")))
}

/// An amount of money from a request: a JSON number or string of dollars
/// with at most two places, kept as cents.
#[derive(Debug, Clone, Copy)]
struct Money(u64);

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let cents = match &value {
            Value::Number(n) if n.is_u64() => n
                .as_u64()
                .and_then(|d| d.checked_mul(100))
                .filter(|c| *c <= money::MAX_CENTS),
            Value::Number(n) => n.as_f64().and_then(money::cents_from_f64),
            Value::String(s) => money::parse_cents(s),
            _ => None,
        };
        cents.map(Money).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{value} is not an amount: a number of dollars from 0 to {} with at most two \
                 decimal places",
                money::MAX_CENTS / 100
            ))
        })
    }
}

impl Money {
    fn positive(self, what: &str) -> Result<Amount, Problem> {
        Amount::try_new(self.0)
            .map_err(|_| Problem::bad_request(format!("{what} must be more than 0")))
    }
}

/// A command on one account, tagged by `type` as in the RustAPI bank.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum AccountCommand {
    OpenAccount {
        owner: String,
        #[serde(default = "no_money")]
        initial_balance: Money,
    },
    Deposit {
        amount: Money,
    },
    Withdraw {
        amount: Money,
    },
}

fn no_money() -> Money {
    Money(0)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferRequest {
    from: String,
    to: String,
    amount: Money,
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| Problem::bad_request(format!("malformed body: {e}")))
}

/// The command id an `Idempotency-Key` header names, if there is one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<CommandId>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Problem::bad_request("Idempotency-Key must be visible ASCII"))?;
    CommandId::try_new(text)
        .map(Some)
        .map_err(|e| Problem::bad_request(format!("Idempotency-Key: {e}")))
}

/// Runs `command` with the request's idempotency key as its command id.
///
/// With a key, the events also keep what was asked (`request`, the parsed
/// request: kind, accounts, cents) in their metadata. The store's record of
/// a command id holds its kind and streams only; a repeat is checked
/// against the `request` of the event it recorded on `checked`, so a key
/// sent again with another amount or owner is refused instead of answered
/// as the first request.
async fn run<S, C>(
    app: &App<S>,
    command: C,
    key: Option<CommandId>,
    request: Value,
    checked: &StreamId,
) -> Result<ExecutionResult, Problem>
where
    S: EventStore,
    C: CommandLogic<Event = BankEvent, Error = BankError>,
{
    let keyed = key.is_some();
    let mut options = ExecuteOptions::new();
    if let Some(key) = key {
        options = options
            .with_command_id(key)
            .with_metadata(Metadata::new().with_value("request", request.clone()));
    }
    let result = execute_with(&app.store, command, options)
        .await
        .map_err(Problem::from_execute)?;
    if keyed && result.already_applied {
        same_request(app, &result, &request, checked).await?;
    }
    Ok(result)
}

/// Whether the event a repeated command recorded on `stream` was asked for
/// with `request` (events written without one are taken as the same).
async fn same_request<S: EventStore>(
    app: &App<S>,
    result: &ExecutionResult,
    request: &Value,
    stream: &StreamId,
) -> Result<(), Problem> {
    let Some(version) = result.version_of(stream) else {
        return Ok(());
    };
    let before = StreamVersion::new(version.get().saturating_sub(1));
    let read = app
        .store
        .read_tails(&[(stream.clone(), before)])
        .await
        .map_err(|e| Problem::from_store(&e))?;
    let recorded = read
        .events()
        .iter()
        .find(|e| e.version() == version)
        .and_then(|e| e.metadata().value("request"));
    match recorded {
        Some(first) if first != request => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            format!("this Idempotency-Key was used for a different request: {first}"),
        )),
        _ => Ok(()),
    }
}

/// An account folded up to a version: what the service keeps per account
/// so that answering reads only the events after it.
#[derive(Debug, Clone, Default)]
pub(super) struct Folded {
    version: StreamVersion,
    state: Account,
    owner: String,
}

/// How many accounts' folds are kept; past it the map starts over (a
/// fold is only a head start: dropping one costs one full read).
const MAX_FOLDED: usize = 100_000;

/// The account as its first `upto` events leave it (all when `None`), or
/// `None` if it was never opened. Starts from the account's kept fold when
/// that is not past `upto`, reading only the events after it (a tail
/// read): the cost is the new events', not the history's.
async fn account_view<S: EventStore>(
    app: &App<S>,
    id: &StreamId,
    upto: Option<StreamVersion>,
) -> Result<Option<views::AccountView>, Problem> {
    let kept = app
        .folded
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        .filter(|f| upto.is_none_or(|upto| f.version <= upto))
        .cloned();
    let mut folded = kept.unwrap_or_default();
    let read = if folded.version == StreamVersion::INITIAL {
        app.store.read_streams(std::slice::from_ref(id)).await
    } else {
        app.store.read_tails(&[(id.clone(), folded.version)]).await
    }
    .map_err(|e| Problem::from_store(&e))?;
    for recorded in read.events() {
        if recorded.version() <= folded.version {
            continue;
        }
        if upto.is_some_and(|upto| recorded.version() > upto) {
            break;
        }
        let event: BankEvent = recorded.decode().map_err(|e| Problem::from_store(&e))?;
        if let BankEvent::Opened { owner, .. } = &event {
            folded.owner.clone_from(owner);
        }
        folded.state = folded.state.after(&event);
        folded.version = recorded.version();
    }
    let view = folded.state.open.then(|| {
        views::AccountView::new(
            id.as_str(),
            &folded.owner,
            folded.state.balance,
            folded.version.get(),
        )
    });
    if folded.state.open {
        let mut kept = app.folded.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= MAX_FOLDED {
            kept.clear();
        }
        let newer = kept.get(id).is_none_or(|k| k.version < folded.version);
        if newer {
            kept.insert(id.clone(), folded);
        }
    }
    Ok(view)
}

/// The header a write's answer carries: where its last event is in the
/// global log (`commit/sequence`), for a read of the read model that must
/// show it (`min_position`).
pub const POSITION_HEADER: &str = "eventcore-position";

/// Marks a replayed answer, and gives the write's position.
fn replayed(result: &ExecutionResult, mut response: Response) -> Response {
    if result.already_applied {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if let Some(position) = result.position
        && let Ok(value) = HeaderValue::from_str(&position.to_string())
    {
        response.headers_mut().insert(POSITION_HEADER, value);
    }
    response
}

async fn account_command<S: EventStore + Clone + Send + Sync + 'static>(
    State(app): State<Arc<App<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let account = account(&id)?;
    let key = idempotency_key(&headers)?;
    let command: AccountCommand = parse_body(&body)?;
    let (result, status) = match command {
        AccountCommand::OpenAccount {
            owner,
            initial_balance,
        } => {
            let owner = owner.trim().to_owned();
            if owner.is_empty() || owner.chars().count() > MAX_OWNER_CHARS || owner.contains('\0') {
                return Err(Problem::bad_request(format!(
                    "owner must be 1 to {MAX_OWNER_CHARS} characters"
                )));
            }
            let request = json!({
                "type": "OpenAccount",
                "account": id,
                "owner": owner,
                "initial_cents": initial_balance.0,
            });
            let open = OpenAccount {
                account: account.clone(),
                owner,
                initial_balance: initial_balance.0,
            };
            let result = run(&app, open, key, request, &account).await?;
            (result, StatusCode::CREATED)
        }
        AccountCommand::Deposit { amount } => {
            let amount = amount.positive("amount")?;
            let request = json!({"type": "Deposit", "account": id, "cents": amount.into_inner()});
            let deposit = Deposit {
                account: account.clone(),
                amount,
            };
            (
                run(&app, deposit, key, request, &account).await?,
                StatusCode::OK,
            )
        }
        AccountCommand::Withdraw { amount } => {
            let amount = amount.positive("amount")?;
            let request = json!({"type": "Withdraw", "account": id, "cents": amount.into_inner()});
            let withdraw = Withdraw {
                account: account.clone(),
                amount,
            };
            (
                run(&app, withdraw, key, request, &account).await?,
                StatusCode::OK,
            )
        }
    };
    let view = account_view(&app, &account, result.version_of(&account))
        .await?
        .ok_or_else(|| Problem::unknown_account(&id))?;
    Ok(replayed(&result, (status, Json(view)).into_response()))
}

async fn get_account<S: EventStore + Clone + Send + Sync + 'static>(
    State(app): State<Arc<App<S>>>,
    Path(id): Path<String>,
) -> Result<Json<views::AccountView>, Problem> {
    let account = account(&id)?;
    account_view(&app, &account, None)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::unknown_account(&id))
}

async fn transfer<S: EventStore + Clone + Send + Sync + 'static>(
    State(app): State<Arc<App<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let request: TransferRequest = parse_body(&body)?;
    let from = account(&request.from)?;
    let to = account(&request.to)?;
    let amount = request.amount.positive("amount")?;
    let asked = json!({
        "type": "Transfer",
        "from": from.as_str(),
        "to": to.as_str(),
        "cents": amount.into_inner(),
    });
    let transfer = Transfer {
        from: from.clone(),
        to: to.clone(),
        amount,
    };
    let result = run(&app, transfer, key, asked, &from).await?;
    let from_view = account_view(&app, &from, result.version_of(&from)).await?;
    let to_view = account_view(&app, &to, result.version_of(&to)).await?;
    let body = views::TransferView {
        from: from_view,
        to: to_view,
    };
    Ok(replayed(&result, Json(body).into_response()))
}

/// `?limit=` of a page: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
fn limit(query: &HashMap<String, String>) -> Result<usize, Problem> {
    match query.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| Problem::bad_request(format!("limit must be 1 to {MAX_LIMIT}"))),
    }
}

fn query(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, Problem> {
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    if let Some(unknown) = query.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Problem::bad_request(format!(
            "unknown query parameter {unknown:?}; this route takes {allowed:?}"
        )));
    }
    Ok(query)
}

fn cursor_param(
    query: &HashMap<String, String>,
    name: &str,
) -> Result<Option<StreamVersion>, Problem> {
    query
        .get(name)
        .map(|text| {
            views::parse_cursor(text)
                .ok_or_else(|| Problem::bad_request(format!("{name}: {text:?} is not a cursor")))
        })
        .transpose()
}

/// The history, oldest first, as a JSON array of events: `?after=c` pages
/// forward from a cursor, `?before=c` backward; the pages around it are in
/// a `Link` header (RFC 8288), `rel="next"` for the events after it and
/// `rel="prev"` for those before it, absent at an end.
async fn account_events<S: EventStore + Clone + Send + Sync + 'static>(
    State(app): State<Arc<App<S>>>,
    Path(id): Path<String>,
    uri: axum::http::Uri,
    raw: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<(HeaderMap, Json<Vec<views::EventView>>), Problem> {
    let account = account(&id)?;
    let query = query(raw, &["after", "before", "limit"])?;
    let limit = limit(&query)?;
    let after = cursor_param(&query, "after")?;
    let before = cursor_param(&query, "before")?;
    if after.is_some() && before.is_some() {
        return Err(Problem::bad_request("give `after` or `before`, not both"));
    }
    // Forward pages read only the events past the cursor.
    let read = match after {
        Some(after) => app.store.read_tails(&[(account.clone(), after)]).await,
        None => app.store.read_streams(std::slice::from_ref(&account)).await,
    }
    .map_err(|e| Problem::from_store(&e))?;
    let current = read.version(&account).unwrap_or_default();
    if current == StreamVersion::INITIAL {
        return Err(Problem::unknown_account(&id));
    }
    let events = read.events();
    let (page, has_before, has_after) = match before {
        Some(before) => {
            let older: Vec<_> = events.iter().filter(|e| e.version() < before).collect();
            let skip = older.len().saturating_sub(limit);
            let has_after = before <= current;
            (older[skip..].to_vec(), skip > 0, has_after)
        }
        None => {
            let start = after.unwrap_or_default();
            let newer: Vec<_> = events.iter().filter(|e| e.version() > start).collect();
            let more = newer.len() > limit;
            (
                newer.into_iter().take(limit).collect(),
                start > StreamVersion::INITIAL,
                more,
            )
        }
    };
    let mut items = Vec::with_capacity(page.len());
    for recorded in &page {
        let event: BankEvent = recorded.decode().map_err(|e| Problem::from_store(&e))?;
        items.push(views::event_view(recorded, &event));
    }
    let first = page.first().map(|e| e.version());
    let last = page.last().map(|e| e.version());
    let next = match (has_after, last, before) {
        (true, Some(last), _) => Some(views::cursor(last)),
        (true, None, Some(before)) => Some(views::cursor(StreamVersion::new(
            before.get().saturating_sub(1),
        ))),
        _ => None,
    };
    let prev = match (has_before, first, after) {
        (true, Some(first), _) => Some(views::cursor(first)),
        (true, None, Some(after)) => Some(views::cursor(StreamVersion::new(
            after.get().saturating_add(1),
        ))),
        _ => None,
    };
    let explicit_limit = query.contains_key("limit").then_some(limit);
    let mut headers = HeaderMap::new();
    if let Some(link) = views::page_links(uri.path(), explicit_limit, next, prev)
        && let Ok(value) = HeaderValue::from_str(&link)
    {
        headers.insert(axum::http::header::LINK, value);
    }
    Ok((headers, Json(items)))
}

/// How long a read of the read model waits for `min_position` at most.
pub const MIN_POSITION_WAIT: Duration = Duration::from_secs(5);

/// Waits until the read model has applied every event up to `position`
/// (as a write's [`POSITION_HEADER`] gave it), [`MIN_POSITION_WAIT`] at
/// most: read-your-writes. Another instance may be the one keeping the
/// read model, so besides this instance's subscription it looks at the
/// checkpoint the read model commits with its rows.
async fn wait_for_read_model<S>(app: &App<S>, position: Position) -> Result<(), Problem> {
    let deadline = tokio::time::Instant::now() + MIN_POSITION_WAIT;
    let local = app.subscription.lock().await.as_ref().map(|h| h.position());
    let mut checked_shared = tokio::time::Instant::now();
    loop {
        if local
            .as_ref()
            .is_some_and(|p| p.borrow().is_some_and(|at| at >= position))
        {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= checked_shared {
            let shared = app
                .accounts
                .checkpoint()
                .await
                .map_err(|e| Problem::unavailable(e.as_ref()))?;
            if shared.is_some_and(|at| at >= position) {
                return Ok(());
            }
            checked_shared = now + Duration::from_millis(10);
        }
        if now >= deadline {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "read-model-behind",
                format!(
                    "the accounts read model has not reached position {position} within {} s; \
                     ask again",
                    MIN_POSITION_WAIT.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The read model, by account id: `?after=id&limit=n`, and
/// `min_position=commit/sequence` (a write's [`POSITION_HEADER`]) to wait
/// until the read model shows that write.
async fn list_accounts<S: EventStore + Clone + Send + Sync + 'static>(
    State(app): State<Arc<App<S>>>,
    raw: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<views::AccountsList>, Problem> {
    let query = query(raw, &["after", "limit", "min_position"])?;
    let limit = limit(&query)?;
    if let Some(text) = query.get("min_position") {
        let position: Position = text
            .parse()
            .map_err(|e: eventcore::ParsePositionError| Problem::bad_request(e.to_string()))?;
        wait_for_read_model(&app, position).await?;
    }
    let after = query.get("after").map(|a| account(a)).transpose()?;
    let page = app
        .accounts
        .page(after.as_ref().map(StreamId::as_str), limit)
        .await
        .map_err(|e| Problem::unavailable(e.as_ref()))?;
    let next = page
        .more
        .then(|| page.accounts.last().map(|a| a.id.clone()))
        .flatten();
    let accounts: Vec<views::AccountView> = page
        .accounts
        .iter()
        .map(|a| views::AccountView::new(&a.id, &a.owner, a.balance, a.version))
        .collect();
    Ok(Json(views::AccountsList { accounts, next }))
}

/// 200 when the store answers a read and the read model's subscription
/// runs; 503 otherwise.
async fn health<S: EventStore + Clone + Send + Sync + 'static>(
    State(app): State<Arc<App<S>>>,
) -> Result<Json<views::Health>, Problem> {
    let probe =
        StreamId::try_new("health-probe").unwrap_or_else(|_| unreachable!("a valid stream id"));
    app.store
        .read_streams(std::slice::from_ref(&probe))
        .await
        .map_err(|e| Problem::unavailable(&e))?;
    let running = app
        .subscription
        .lock()
        .await
        .as_ref()
        .is_some_and(|h| !h.is_finished());
    if !running {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "read-model-stopped",
            "the accounts read model's subscription has stopped",
        ));
    }
    Ok(Json(views::Health {
        status: "ok",
        store: app.backend,
        read_model: "running",
    }))
}
