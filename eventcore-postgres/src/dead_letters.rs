//! Dead letters of subscription lanes in the `eventcore_dead_letters`
//! table, fenced by the lanes' tokens in `eventcore_leases`.

use std::time::UNIX_EPOCH;

use eventcore::{
    DeadLetter, DeadLetterAction, DeadLetters, LeaseToken, Position, StoreError, StreamId,
    SubscriptionName, Uuid,
};
use sqlx::{Row, postgres::PgRow};

use crate::{
    PostgresEventStore,
    checkpoints::{fenced, to_bigint},
    error::store_error,
    rows::{from_bigint, from_micros},
};

const PARK: &str = include_str!("sql/park_dead_letter.sql");
const REPLAYED: &str = include_str!("sql/replay_dead_letter.sql");
const RELEASE: &str = include_str!("sql/release_dead_letter.sql");
const LIST: &str = include_str!("sql/dead_letters.sql");
const RESOLVE: &str = include_str!("sql/resolve_dead_letter.sql");

/// The fenced, forward-only move of the replay mark of `key` in lane
/// `name` to `through`; its row is read by [`fenced`] (`moved`: the mark
/// moved).
pub(crate) fn replayed_query<'q>(
    name: &'q SubscriptionName,
    key: &'q str,
    through: Position,
    token: LeaseToken,
) -> Result<sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>, StoreError> {
    let fit = |v| to_bigint("replay_dead_letter", v);
    Ok(sqlx::query(REPLAYED)
        .bind(name.as_ref())
        .bind(key)
        .bind(fit(through.commit())?)
        .bind(fit(through.sequence())?)
        .bind(fit(token.get())?))
}

impl DeadLetters for PostgresEventStore {
    async fn park(&self, letter: &DeadLetter, token: LeaseToken) -> Result<(), StoreError> {
        const OP: &str = "park_dead_letter";
        let fit = |v| to_bigint(OP, v);
        let parked_us = letter
            .parked_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let (after_commit, after_sequence) = match letter.after {
            Some(after) => (Some(fit(after.commit())?), Some(fit(after.sequence())?)),
            None => (None, None),
        };
        let query = sqlx::query(PARK)
            .bind(letter.name.as_ref())
            .bind(letter.key.as_str())
            .bind(fit(letter.position.commit())?)
            .bind(fit(letter.position.sequence())?)
            .bind(letter.event_id)
            .bind(letter.stream_id.as_ref())
            .bind(letter.event_type.as_str())
            .bind(letter.error.as_str())
            .bind(i64::from(letter.attempts))
            .bind(parked_us)
            .bind(after_commit)
            .bind(after_sequence)
            .bind(fit(token.get())?);
        let rows = self.conns().fetch_all(OP, query).await?;
        fenced(OP, &letter.name, token, rows.first()).map(drop)
    }

    async fn replayed(
        &self,
        name: &SubscriptionName,
        key: &str,
        through: Position,
        token: LeaseToken,
    ) -> Result<(), StoreError> {
        const OP: &str = "replay_dead_letter";
        let query = replayed_query(name, key, through, token)?;
        let rows = self.conns().fetch_all(OP, query).await?;
        fenced(OP, name, token, rows.first()).map(drop)
    }

    async fn release(
        &self,
        name: &SubscriptionName,
        key: &str,
        token: LeaseToken,
    ) -> Result<(), StoreError> {
        const OP: &str = "release_dead_letter";
        let query = sqlx::query(RELEASE)
            .bind(name.as_ref())
            .bind(key)
            .bind(to_bigint(OP, token.get())?);
        let rows = self.conns().fetch_all(OP, query).await?;
        fenced(OP, name, token, rows.first()).map(drop)
    }

    async fn dead_letters(&self, name: &SubscriptionName) -> Result<Vec<DeadLetter>, StoreError> {
        const OP: &str = "dead_letters";
        let rows = self
            .conns()
            .fetch_all(OP, sqlx::query(LIST).bind(name.as_ref()))
            .await?;
        rows.iter()
            .map(|row| letter(name, row).map_err(|e| store_error(OP, e)))
            .collect()
    }

    async fn resolve(
        &self,
        name: &SubscriptionName,
        key: &str,
        action: DeadLetterAction,
    ) -> Result<bool, StoreError> {
        const OP: &str = "resolve_dead_letter";
        let done = self
            .conns()
            .execute(
                OP,
                sqlx::query(RESOLVE)
                    .bind(name.as_ref())
                    .bind(key)
                    .bind(action.as_str()),
            )
            .await?;
        Ok(done > 0)
    }
}

/// One letter of lane `name` from its row.
fn letter(name: &SubscriptionName, row: &PgRow) -> Result<DeadLetter, sqlx::Error> {
    let bad = |column: &str, message: String| sqlx::Error::ColumnDecode {
        index: column.into(),
        source: message.into(),
    };
    let part = |column: &str| -> Result<u64, sqlx::Error> {
        Ok(from_bigint(row.try_get::<i64, _>(column)?))
    };
    let stream: String = row.try_get("stream_id")?;
    let stream_id = StreamId::try_new(stream.clone())
        .map_err(|e| bad("stream_id", format!("{stream}: {e}")))?;
    let action = match row.try_get::<Option<String>, _>("action")? {
        None => None,
        Some(text) => Some(
            DeadLetterAction::from_name(&text)
                .ok_or_else(|| bad("action", format!("unknown action {text:?}")))?,
        ),
    };
    let after = match (
        row.try_get::<Option<i64>, _>("after_commit")?,
        row.try_get::<Option<i64>, _>("after_sequence")?,
    ) {
        (Some(commit), Some(sequence)) => {
            Some(Position::new(from_bigint(commit), from_bigint(sequence)))
        }
        _ => None,
    };
    let mut letter = DeadLetter::of_event(
        name.clone(),
        row.try_get::<String, _>("key")?,
        Position::new(part("commit_id")?, part("sequence")?),
        row.try_get::<Uuid, _>("event_id")?,
        stream_id,
        row.try_get::<String, _>("event_type")?,
    );
    letter.error = row.try_get("error")?;
    letter.attempts = u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX);
    letter.after = after;
    letter.parked_at = from_micros(row.try_get("parked_us")?);
    letter.action = action;
    Ok(letter)
}
