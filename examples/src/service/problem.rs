//! Errors as `application/problem+json` (RFC 9457), each with the status
//! its cause calls for.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use eventcore::{ExecuteError, StoreError, StoreErrorKind};
use serde::Serialize;

use crate::bank::{domain::BankError, money};

/// An error answer: status, a stable problem type, and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short, stable name of the kind of problem (`insufficient-funds`).
    pub kind: &'static str,
    /// What happened, for a person.
    pub detail: String,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

impl Problem {
    /// A problem with `status`, `kind` and `detail`.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            kind,
            detail: detail.into(),
        }
    }

    /// 400: the request is malformed (body, id, amount, cursor, header).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 404: no such account.
    pub fn unknown_account(id: &str) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-account",
            format!("account {id} does not exist"),
        )
    }

    /// 503: the store did not answer.
    pub fn unavailable(error: &dyn std::error::Error) -> Self {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            format!("the event store is unavailable: {}", chain(error)),
        )
    }

    /// The problem a store error is: 503 when the store could not be
    /// reached or failed, 500 for anything else (an event that cannot be
    /// read, say).
    pub fn from_store(error: &StoreError) -> Self {
        match error.kind() {
            StoreErrorKind::Transient | StoreErrorKind::Backend => Problem::unavailable(error),
            StoreErrorKind::CommandIdReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "this Idempotency-Key was used for a different request",
            ),
            _ => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", chain(error)),
        }
    }

    /// The problem a failed command is: its refusal (404 for an account
    /// that is not open, 422 for other business rules), 409 when every
    /// retry met a conflict, or the store's problem.
    pub fn from_execute(error: ExecuteError<BankError>) -> Self {
        match error {
            ExecuteError::Rejected(BankError::NotOpen(account)) => {
                Problem::unknown_account(account.as_str())
            }
            ExecuteError::Rejected(refusal) => {
                let kind = match &refusal {
                    BankError::AlreadyOpen(_) => "account-already-open",
                    BankError::InsufficientFunds { .. } => "insufficient-funds",
                    BankError::SameAccount(_) => "same-account",
                    BankError::NotOpen(_) => "unknown-account",
                };
                let detail = match &refusal {
                    BankError::InsufficientFunds {
                        account,
                        balance,
                        wanted,
                    } => format!(
                        "account {account} holds {}, cannot pay out {}",
                        money::format(*balance),
                        money::format(i128::from(*wanted))
                    ),
                    other => other.to_string(),
                };
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, kind, detail)
            }
            ExecuteError::RetriesExhausted {
                attempts,
                last_error: StoreError::VersionConflict { .. },
            } => Problem::new(
                StatusCode::CONFLICT,
                "contention",
                format!(
                    "the accounts kept changing: gave up after {attempts} attempts; nothing was \
                     written, try again"
                ),
            ),
            ExecuteError::RetriesExhausted { last_error, .. } | ExecuteError::Store(last_error) => {
                Problem::from_store(&last_error)
            }
            other => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", chain(&other)),
        }
    }
}

/// An error and its causes, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = Body {
            kind: format!("urn:eventcore:bank:{}", self.kind),
            title,
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use eventcore::{StreamId, StreamVersion};

    use super::*;

    fn id(s: &str) -> StreamId {
        StreamId::try_new(s).unwrap()
    }

    fn conflict() -> StoreError {
        StoreError::VersionConflict {
            stream_id: id("a"),
            expected: StreamVersion::new(1),
            actual: StreamVersion::new(2),
        }
    }

    fn down() -> StoreError {
        StoreError::Transient {
            operation: "append",
            source: "connection refused".into(),
        }
    }

    #[test]
    fn each_failure_gets_its_status() {
        let cases: Vec<(ExecuteError<BankError>, u16, &str)> = vec![
            (
                ExecuteError::Rejected(BankError::NotOpen(id("a"))),
                404,
                "unknown-account",
            ),
            (
                ExecuteError::Rejected(BankError::AlreadyOpen(id("a"))),
                422,
                "account-already-open",
            ),
            (
                ExecuteError::Rejected(BankError::SameAccount(id("a"))),
                422,
                "same-account",
            ),
            (
                ExecuteError::Rejected(BankError::InsufficientFunds {
                    account: id("a"),
                    balance: 5,
                    wanted: 1_000,
                }),
                422,
                "insufficient-funds",
            ),
            (
                ExecuteError::RetriesExhausted {
                    attempts: 16,
                    last_error: conflict(),
                },
                409,
                "contention",
            ),
            (
                ExecuteError::RetriesExhausted {
                    attempts: 16,
                    last_error: down(),
                },
                503,
                "store-unavailable",
            ),
            (ExecuteError::Store(down()), 503, "store-unavailable"),
            (ExecuteError::NoStreams, 500, "internal"),
        ];
        for (error, status, kind) in cases {
            let text = error.to_string();
            let problem = Problem::from_execute(error);
            assert_eq!(
                (problem.status.as_u16(), problem.kind),
                (status, kind),
                "{text}"
            );
        }
    }

    #[test]
    fn refusals_name_amounts_in_dollars() {
        let problem = Problem::from_execute(ExecuteError::Rejected(BankError::InsufficientFunds {
            account: id("acc-1"),
            balance: 5,
            wanted: 1_000,
        }));
        assert_eq!(
            problem.detail,
            "account acc-1 holds 0.05, cannot pay out 10.00"
        );
    }
}
