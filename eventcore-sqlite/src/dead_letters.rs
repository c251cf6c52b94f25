//! Dead letters of subscription lanes in the `eventcore_dead_letters`
//! table, written by the store's writer and fenced by the lanes' tokens in
//! `eventcore_leases`, in the transaction of each write.

use std::time::UNIX_EPOCH;

use eventcore::{
    DeadLetter, DeadLetterAction, DeadLetters, LeaseToken, Position, StoreError, SubscriptionName,
    Uuid,
};
use rusqlite::{Connection, Row, Transaction, TransactionBehavior, params};

use crate::{
    SqliteEventStore,
    checkpoints::{newest_token, sql_position},
    error::{corrupt, sqlite},
    rows::{stream_id, time},
};

/// Runs `write` in an immediate transaction of `c` if `token` is the newest
/// of `name` (else [`StoreError::LeaseLost`], and nothing is written).
fn fenced<T>(
    c: &mut Connection,
    operation: &'static str,
    name: &SubscriptionName,
    token: LeaseToken,
    write: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    let failed = |e| sqlite(operation, e);
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    let current = newest_token(&tx, name.as_ref()).map_err(failed)?;
    if current != token {
        return Err(StoreError::LeaseLost {
            name: name.clone(),
            token,
            current,
        });
    }
    let done = write(&tx).map_err(failed)?;
    tx.commit().map_err(failed)?;
    Ok(done)
}

/// Moves the replay mark of `key` in lane `name` forward to `through`, in
/// `tx` (the caller fenced it); whether it moved (false: no letter, or the
/// mark is there already).
pub(crate) fn move_replay_mark(
    tx: &Transaction<'_>,
    name: &SubscriptionName,
    key: &str,
    through: Position,
) -> rusqlite::Result<bool> {
    let (commit, sequence) = sql_position(through);
    let moved = tx.execute(
        "UPDATE eventcore_dead_letters SET after_commit = ?3, after_sequence = ?4 \
         WHERE name = ?1 AND key = ?2 \
         AND (after_commit IS NULL OR (after_commit, after_sequence) < (?3, ?4))",
        params![name.as_ref(), key, commit, sequence],
    )?;
    Ok(moved > 0)
}

impl DeadLetters for SqliteEventStore {
    async fn park(&self, letter: &DeadLetter, token: LeaseToken) -> Result<(), StoreError> {
        const OP: &str = "park_dead_letter";
        let letter = letter.clone();
        self.write_with(OP, move |c| {
            let parked_us = letter
                .parked_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
            fenced(c, OP, &letter.name, token, |tx| {
                let (commit, sequence) = sql_position(letter.position);
                let (after_commit, after_sequence) = letter.after.map(sql_position).unzip();
                // The replay mark is kept where it is further on.
                tx.execute(
                    "INSERT INTO eventcore_dead_letters AS d (name, key, commit_id, sequence, \
                     event_id, stream_id, event_type, error, attempts, parked_at, action, \
                     after_commit, after_sequence) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, ?11, ?12) \
                     ON CONFLICT (name, key) DO UPDATE SET commit_id = excluded.commit_id, \
                     sequence = excluded.sequence, event_id = excluded.event_id, \
                     stream_id = excluded.stream_id, event_type = excluded.event_type, \
                     error = excluded.error, attempts = excluded.attempts, \
                     parked_at = excluded.parked_at, action = NULL, \
                     after_commit = CASE WHEN d.after_commit IS NULL \
                         OR (excluded.after_commit, excluded.after_sequence) \
                            > (d.after_commit, d.after_sequence) \
                         THEN excluded.after_commit ELSE d.after_commit END, \
                     after_sequence = CASE WHEN d.after_commit IS NULL \
                         OR (excluded.after_commit, excluded.after_sequence) \
                            > (d.after_commit, d.after_sequence) \
                         THEN excluded.after_sequence ELSE d.after_sequence END",
                    params![
                        letter.name.as_ref(),
                        letter.key,
                        commit,
                        sequence,
                        letter.event_id.hyphenated().to_string(),
                        letter.stream_id.as_str(),
                        letter.event_type,
                        letter.error,
                        i64::from(letter.attempts),
                        parked_us,
                        after_commit,
                        after_sequence,
                    ],
                )
                .map(drop)
            })
        })
        .await
    }

    async fn replayed(
        &self,
        name: &SubscriptionName,
        key: &str,
        through: Position,
        token: LeaseToken,
    ) -> Result<(), StoreError> {
        const OP: &str = "replay_dead_letter";
        let (name, key) = (name.clone(), key.to_owned());
        self.write_with(OP, move |c| {
            fenced(c, OP, &name, token, |tx| {
                move_replay_mark(tx, &name, &key, through).map(drop)
            })
        })
        .await
    }

    async fn release(
        &self,
        name: &SubscriptionName,
        key: &str,
        token: LeaseToken,
    ) -> Result<(), StoreError> {
        const OP: &str = "release_dead_letter";
        let (name, key) = (name.clone(), key.to_owned());
        self.write_with(OP, move |c| {
            fenced(c, OP, &name, token, |tx| {
                tx.execute(
                    "DELETE FROM eventcore_dead_letters WHERE name = ?1 AND key = ?2",
                    params![name.as_ref(), key],
                )
                .map(drop)
            })
        })
        .await
    }

    async fn dead_letters(&self, name: &SubscriptionName) -> Result<Vec<DeadLetter>, StoreError> {
        const OP: &str = "dead_letters";
        let name = name.clone();
        self.with_reader(OP, move |c| {
            let failed = |e| sqlite(OP, e);
            let mut query = c
                .prepare_cached(
                    "SELECT key, commit_id, sequence, event_id, stream_id, event_type, error, \
                     attempts, parked_at, action, after_commit, after_sequence \
                     FROM eventcore_dead_letters WHERE name = ?1 ORDER BY commit_id, sequence",
                )
                .map_err(failed)?;
            let letters = query
                .query_map([name.as_ref()], |row| letter(&name, row))
                .map_err(failed)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(failed)?;
            Ok(letters)
        })
        .await
    }

    async fn resolve(
        &self,
        name: &SubscriptionName,
        key: &str,
        action: DeadLetterAction,
    ) -> Result<bool, StoreError> {
        const OP: &str = "resolve_dead_letter";
        let (name, key) = (name.clone(), key.to_owned());
        self.write_with(OP, move |c| {
            c.execute(
                "UPDATE eventcore_dead_letters SET action = ?3 WHERE name = ?1 AND key = ?2",
                params![name.as_ref(), key, action.as_str()],
            )
            .map(|n| n > 0)
            .map_err(|e| sqlite(OP, e))
        })
        .await
    }
}

/// A position read back from columns `index` and `index + 1`.
fn position(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Position>> {
    let part = |i: usize, value: i64| u64::try_from(value).map_err(|e| corrupt(i, "position", e));
    match (
        row.get::<_, Option<i64>>(index)?,
        row.get::<_, Option<i64>>(index + 1)?,
    ) {
        (Some(commit), Some(sequence)) => Ok(Some(Position::new(
            part(index, commit)?,
            part(index + 1, sequence)?,
        ))),
        _ => Ok(None),
    }
}

/// One letter of lane `name` from its row.
fn letter(name: &SubscriptionName, row: &Row<'_>) -> rusqlite::Result<DeadLetter> {
    let event_id: String = row.get(3)?;
    let event_id = Uuid::parse_str(&event_id).map_err(|e| corrupt(3, "event_id", e))?;
    let action = match row.get::<_, Option<String>>(9)? {
        None => None,
        Some(text) => Some(
            DeadLetterAction::from_name(&text)
                .ok_or_else(|| corrupt(9, "action", format!("unknown action {text:?}")))?,
        ),
    };
    let at = position(row, 1)?.ok_or_else(|| corrupt(1, "position", "no position"))?;
    let mut letter = DeadLetter::of_event(
        name.clone(),
        row.get::<_, String>(0)?,
        at,
        event_id,
        stream_id(4, row.get(4)?)?,
        row.get::<_, String>(5)?,
    );
    letter.error = row.get(6)?;
    letter.attempts = u32::try_from(row.get::<_, i64>(7)?).unwrap_or(u32::MAX);
    letter.parked_at = time(row.get(8)?);
    letter.action = action;
    letter.after = position(row, 10)?;
    Ok(letter)
}
