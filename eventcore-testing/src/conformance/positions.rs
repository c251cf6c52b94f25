//! Read-your-writes: appends and `execute` say where their last event is in
//! the global log, and a subscription can be waited on until it gets there.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use eventcore::{
    CommandId, EventLog, EventStore, ExecuteOptions, LogQuery, Position, StreamVersion,
    StreamWrites, WaitError, execute, execute_with,
};

use super::SubscribableStore;
use crate::fixtures::{Credit, LedgerEvent, Move, Note, stream};

/// Every event of the log, with its position, by event id.
async fn positions_by_event_id<S: EventLog>(store: &S) -> Vec<(Position, eventcore::Uuid)> {
    let mut all = Vec::new();
    let mut at = None;
    loop {
        let query = match at {
            Some(p) => LogQuery::after(p, 1000),
            None => LogQuery::from_start(1000),
        };
        let page = store.read_all(&query).await.expect("read_all");
        if page.is_empty() {
            return all;
        }
        at = page.next();
        all.extend(page.events().iter().map(|(p, e)| (*p, e.event_id())));
    }
}

/// An append answers with the position of its last event, which is where
/// the log shows that event; `execute` passes it on; an append that writes
/// nothing has none.
pub async fn appends_return_their_last_event_s_position<S>(store: &S)
where
    S: EventStore + EventLog + Clone + 'static,
{
    let (a, b) = (stream("pos-a"), stream("pos-b"));
    let mut writes = StreamWrites::new();
    writes.expect(a.clone(), StreamVersion::INITIAL).expect("a");
    writes.expect(b.clone(), StreamVersion::INITIAL).expect("b");
    let notes = [Note::new(&a, 1), Note::new(&b, 2), Note::new(&a, 3)];
    for note in &notes {
        writes.append(note).expect("note");
    }
    let ids: Vec<eventcore::Uuid> = writes.events().iter().map(|e| e.event_id()).collect();
    let outcome = store.append(writes).await.expect("append");
    let position = outcome
        .position
        .expect("an append that wrote events has a position");

    let log = positions_by_event_id(store).await;
    let last = log
        .iter()
        .filter(|(_, id)| ids.contains(id))
        .map(|(p, _)| *p)
        .max()
        .expect("the append's events are in the log");
    assert_eq!(position, last, "the position of the append's last event");
    assert_eq!(log.last().map(|(p, _)| *p), Some(position));

    let mut nothing = StreamWrites::new();
    nothing.expect(a.clone(), StreamVersion::new(2)).expect("a");
    let empty = store.append(nothing).await.expect("an empty append");
    assert_eq!(empty.position, None, "nothing written, no position");

    let credited = execute(
        store,
        Credit {
            account: stream("pos-c"),
            amount: 4,
        },
    )
    .await
    .expect("credit");
    let at = credited.position.expect("execute passes the position on");
    assert!(at > position, "later in the log than the earlier append");
    let log = positions_by_event_id(store).await;
    assert_eq!(log.last().map(|(p, _)| *p), Some(at));
}

/// Read-your-writes through a subscription: after waiting for the
/// position `execute` returned, the handler has seen the command's events.
/// A repeat of the command under its id returns a position the wait also
/// reaches, and a position not reached yet times out saying how far the
/// subscription got.
pub async fn a_subscription_is_waited_on_until_it_passes_a_position<S>(store: &S)
where
    S: SubscribableStore,
{
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let handler = {
        let seen = seen.clone();
        eventcore::handler_fn(move |_, event: &LedgerEvent| {
            if let LedgerEvent::Credited { amount, .. } = event {
                seen.lock().unwrap_or_else(|p| p.into_inner()).push(*amount);
            }
            async { Ok(()) }
        })
    };
    let config =
        eventcore::SubscriptionConfig::default().with_poll_interval(Duration::from_millis(20));
    let name = eventcore::SubscriptionName::try_new("read-your-writes").expect("valid name");
    let handle = eventcore::subscribe(store.clone(), store.clone(), name, handler, config);

    for amount in 1..=20u64 {
        let result = execute(
            store,
            Credit {
                account: stream(&format!("ryw-{}", amount % 3)),
                amount,
            },
        )
        .await
        .expect("credit");
        let position = result.position.expect("position");
        handle
            .wait_for(position, Duration::from_secs(10))
            .await
            .expect("the subscription gets there");
        assert_eq!(
            seen.lock().unwrap_or_else(|p| p.into_inner()).last(),
            Some(&amount),
            "once waited for, the write is seen"
        );
    }

    let id = CommandId::try_new("ryw-move").expect("id");
    let pay = Move {
        from: stream("ryw-1"),
        to: stream("ryw-2"),
        amount: 1,
    };
    let first = execute_with(
        store,
        pay.clone(),
        ExecuteOptions::new().with_command_id(id.clone()),
    )
    .await
    .expect("move");
    let repeat = execute_with(store, pay, ExecuteOptions::new().with_command_id(id))
        .await
        .expect("repeat");
    assert!(repeat.already_applied);
    let (first_at, repeat_at) = (
        first.position.expect("first"),
        repeat.position.expect("repeat"),
    );
    assert!(
        repeat_at >= first_at,
        "a repeat points at or after the first execution's last event"
    );
    handle
        .wait_for(repeat_at, Duration::from_secs(10))
        .await
        .expect("the repeat's position is reached");

    let beyond = Position::new(repeat_at.commit().saturating_add(1), u64::MAX);
    match handle.wait_for(beyond, Duration::from_millis(50)).await {
        Err(WaitError::TimedOut { reached, .. }) => {
            assert!(
                reached >= Some(repeat_at),
                "says how far it got: {reached:?}"
            )
        }
        other => panic!("a position not reached times out: {other:?}"),
    }
    handle.stop().await.expect("clean stop");
}
