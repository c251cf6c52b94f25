//! Scenarios for command ids: a command applied once, whatever happens to
//! its replies.

use std::{sync::Arc, time::Duration};

use eventcore::{
    CommandId, CommandRecords, EventStore, EventStoreExt, ExecuteError, ExecuteOptions,
    ExecutionResult, ReadRequest, RetryPolicy, StoreError, StreamId, StreamVersion, StreamWrites,
    execute_with,
};
use tokio::sync::Barrier;

use crate::fixtures::{Credit, LedgerEvent, Move, stream};

fn command_id(text: &str) -> CommandId {
    CommandId::try_new(text).expect("valid command id")
}

fn with_id(text: &str) -> ExecuteOptions {
    ExecuteOptions::new().with_command_id(command_id(text))
}

async fn events_of<S: EventStore>(store: &S, ids: &[StreamId]) -> Vec<LedgerEvent> {
    store
        .read_streams(ids)
        .await
        .expect("read")
        .events()
        .iter()
        .map(|e| e.decode().expect("decode"))
        .collect()
}

async fn fund<S: EventStore>(store: &S, account: &StreamId, amount: u64) {
    let credit = Credit {
        account: account.clone(),
        amount,
    };
    execute_with(store, credit, ExecuteOptions::new())
        .await
        .expect("fund");
}

/// A command executed twice with one id is applied once: the second call
/// writes nothing and returns the first call's outcome (stream versions,
/// events written), marked as already applied, even after other commands
/// moved its streams. The store's record agrees with that outcome. Both
/// for a command on kept folds and one that folds the whole history.
pub async fn command_id_seen_twice_returns_the_first_outcome<S: EventStore + Clone + 'static>(
    store: &S,
) {
    let (from, to) = (stream("once-from"), stream("once-to"));
    fund(store, &from, 100).await;
    let pay = Move {
        from: from.clone(),
        to: to.clone(),
        amount: 30,
    };
    let first = execute_with(store, pay.clone(), with_id("pay-1"))
        .await
        .expect("first");
    assert!(!first.already_applied, "the first execution applies it");
    assert_eq!(first.events_written, 2);
    fund(store, &from, 5).await;

    let second = execute_with(store, pay.clone(), with_id("pay-1"))
        .await
        .expect("repeat");
    assert!(second.already_applied, "the repeat is marked");
    assert_eq!(
        second.stream_versions, first.stream_versions,
        "first outcome"
    );
    assert_eq!(second.events_written, first.events_written);
    let events = events_of(store, &[from.clone(), to.clone()]).await;
    assert_eq!(events.len(), 4, "two credits and one move: {events:?}");

    let record = store
        .find_command(&command_id("pay-1"))
        .await
        .expect("look-up")
        .expect("recorded");
    assert_eq!(record.outcome.stream_versions, first.stream_versions);
    assert_eq!(record.outcome.events_written, 2);
    assert_eq!(
        record.command_type, "Move",
        "recorded under its stable name"
    );

    // A command of no folds (whole history) takes the other path through execute.
    let credit = Credit {
        account: to.clone(),
        amount: 7,
    };
    let first = execute_with(store, credit.clone(), with_id("credit-1"))
        .await
        .expect("credit");
    for _ in 0..2 {
        let again = execute_with(store, credit.clone(), with_id("credit-1"))
            .await
            .expect("credit again");
        assert!(again.already_applied);
        assert_eq!(again.stream_versions, first.stream_versions);
    }
    assert_eq!(
        events_of(store, std::slice::from_ref(&to)).await.len(),
        2,
        "one move credit and one credit"
    );
    assert!(
        store
            .find_command(&command_id("never-used"))
            .await
            .expect("look-up")
            .is_none()
    );
}

/// The trap after a lost reply: the first attempt committed, so the
/// streams already hold its events. The retry must find the command id
/// before deciding: deciding on the new state would refuse the move for
/// want of the money it already moved. Every read that `execute` makes
/// with an id finds the record (streams, tails, from a snapshot).
pub async fn repeat_after_a_lost_reply_finds_the_record_before_deciding<
    S: EventStore + Clone + 'static,
>(
    store: &S,
) {
    let (from, to) = (stream("lost-from"), stream("lost-to"));
    fund(store, &from, 50).await;
    // The first attempt, as execute would have appended it; its reply is
    // never seen.
    let mut writes = StreamWrites::new();
    writes
        .expect(from.clone(), StreamVersion::new(1))
        .expect("from");
    writes
        .expect(to.clone(), StreamVersion::INITIAL)
        .expect("to");
    // Recorded under the full type path, as versions before stable
    // command names did: the retry (named `Move`) still matches it.
    writes.set_command(command_id("lost-1"), std::any::type_name::<Move>());
    writes
        .append(&LedgerEvent::Debited {
            account: from.clone(),
            amount: 50,
        })
        .expect("debit");
    writes
        .append(&LedgerEvent::Credited {
            account: to.clone(),
            amount: 50,
            from: Some(from.clone()),
        })
        .expect("credit");
    let committed = store.append(writes).await.expect("first attempt");

    let id = command_id("lost-1");
    let found = store
        .read(ReadRequest::streams([from.clone(), to.clone()]).with_command_id(id.clone()))
        .await
        .expect("read for");
    assert!(found.record.is_some(), "{found:?}");
    let found = store
        .read(ReadRequest::tails([(from.clone(), StreamVersion::new(1))]).with_command_id(id))
        .await
        .expect("tail read for");
    assert!(found.record.is_some(), "{found:?}");
    let other = store
        .read(
            ReadRequest::tails([(from.clone(), StreamVersion::new(1))])
                .with_command_id(command_id("lost-2")),
        )
        .await
        .expect("tail read for another id");
    assert!(
        other.record.is_none(),
        "another id is not recorded: {other:?}"
    );
    assert_eq!(other.reads.version(&from), Some(StreamVersion::new(2)));
    assert_eq!(other.reads.events().len(), 1, "the tail after version 1");
    assert_eq!(other.after, vec![(from.clone(), StreamVersion::new(1))]);

    let retry = Move {
        from: from.clone(),
        to: to.clone(),
        amount: 50,
    };
    let result = execute_with(store, retry, with_id("lost-1"))
        .await
        .expect("the retry returns the first outcome, not a refusal");
    assert!(result.already_applied);
    assert_eq!(result.stream_versions, committed.stream_versions);
    assert_eq!(events_of(store, &[from, to]).await.len(), 3, "applied once");
}

/// A command id names one command: used again for another command type,
/// or for the same type over other streams, it is refused with
/// [`StoreError::CommandIdReused`], by `execute` and by a raw append, and
/// nothing is written.
pub async fn reused_command_id_is_refused<S: EventStore + Clone + 'static>(store: &S) {
    let (a, b) = (stream("reuse-a"), stream("reuse-b"));
    let credit = |account: &StreamId| Credit {
        account: account.clone(),
        amount: 3,
    };
    execute_with(store, credit(&a), with_id("reuse-1"))
        .await
        .expect("first");

    let err = execute_with(store, credit(&b), with_id("reuse-1"))
        .await
        .expect_err("same type, other stream");
    assert!(
        matches!(&err, ExecuteError::Store(StoreError::CommandIdReused { recorded_streams, streams, .. })
            if recorded_streams == std::slice::from_ref(&a) && streams == std::slice::from_ref(&b)),
        "{err:?}"
    );
    fund(store, &a, 10).await;
    let pay = Move {
        from: a.clone(),
        to: b.clone(),
        amount: 1,
    };
    let err = execute_with(store, pay, with_id("reuse-1"))
        .await
        .expect_err("other type");
    assert!(
        matches!(&err, ExecuteError::Store(StoreError::CommandIdReused { recorded_type, .. })
            if recorded_type == "Credit"),
        "{err:?}"
    );

    // The store refuses it too, whatever the versions.
    let mut writes = StreamWrites::new();
    writes.expect(a.clone(), StreamVersion::new(2)).expect("a");
    writes.set_command(command_id("reuse-1"), "another::Command");
    writes
        .append(&LedgerEvent::Debited {
            account: a.clone(),
            amount: 1,
        })
        .expect("debit");
    let err = store.append(writes).await.expect_err("raw append");
    assert!(matches!(err, StoreError::CommandIdReused { .. }), "{err:?}");
    assert_eq!(
        events_of(store, std::slice::from_ref(&a)).await.len(),
        2,
        "nothing more on a"
    );
    assert!(events_of(store, &[b]).await.is_empty(), "nothing on b");
}

/// A command refused by its business rule, or one that decides to write
/// nothing, records nothing: executed again with the same id, it decides
/// again, and applies once the rule holds.
pub async fn rejected_command_records_nothing<S: EventStore + Clone + 'static>(store: &S) {
    let (from, to) = (stream("refused-from"), stream("refused-to"));
    let pay = Move {
        from: from.clone(),
        to: to.clone(),
        amount: 40,
    };
    let err = execute_with(store, pay.clone(), with_id("refused-1"))
        .await
        .expect_err("no money yet");
    assert!(matches!(err, ExecuteError::Rejected(_)), "{err:?}");
    assert!(
        store
            .find_command(&command_id("refused-1"))
            .await
            .expect("look-up")
            .is_none(),
        "a refusal is not recorded"
    );
    fund(store, &from, 40).await;
    let applied = execute_with(store, pay, with_id("refused-1"))
        .await
        .expect("now it holds");
    assert!(!applied.already_applied, "decided again, and applied");
    assert_eq!(applied.events_written, 2);

    let nothing = Credit {
        account: to.clone(),
        amount: 0,
    };
    let result = execute_with(store, nothing, with_id("empty-1"))
        .await
        .expect("empty decision");
    assert_eq!(result.events_written, 0);
    assert!(
        store
            .find_command(&command_id("empty-1"))
            .await
            .expect("look-up")
            .is_none(),
        "an empty decision is not recorded"
    );
    let something = Credit {
        account: to.clone(),
        amount: 2,
    };
    let result = execute_with(store, something, with_id("empty-1"))
        .await
        .expect("decided again");
    assert!(!result.already_applied);
    assert_eq!(result.events_written, 1);
}

/// Sixteen tasks released together execute one command with one id,
/// without the in-process queue: it is applied exactly once, and every
/// task gets its outcome.
pub async fn concurrent_executions_of_one_command_id_apply_once<S: EventStore + Clone + 'static>(
    store: &S,
) {
    const TASKS: usize = 16;
    let (from, to) = (stream("race-from"), stream("race-to"));
    fund(store, &from, 1_000).await;
    let barrier = Arc::new(Barrier::new(TASKS));
    let policy = RetryPolicy::default()
        .with_queue_in_process(false)
        .with_max_attempts(std::num::NonZeroU32::new(50).expect("non-zero"));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (store, barrier, policy) = (store.clone(), barrier.clone(), policy.clone());
        let pay = Move {
            from: from.clone(),
            to: to.clone(),
            amount: 100,
        };
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            execute_with(&store, pay, with_id("race-1").with_policy(policy)).await
        }));
    }
    let mut results: Vec<ExecutionResult> = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task").expect("every task succeeds"));
    }
    let applied = results.iter().filter(|r| !r.already_applied).count();
    assert_eq!(applied, 1, "exactly one execution applies it");
    for r in &results {
        assert_eq!(r.stream_versions, results[0].stream_versions, "one outcome");
    }
    let events = events_of(store, &[from, to]).await;
    assert_eq!(events.len(), 3, "the funding and one move: {events:?}");
}

/// Records last until pruned: pruning with an age limit removes only
/// older records, and a pruned command id counts as new (the command is
/// applied again, as the documentation warns).
pub async fn pruned_command_ids_count_as_new<S: CommandRecords + Clone + 'static>(store: &S) {
    let a = stream("prune-a");
    let credit = Credit {
        account: a.clone(),
        amount: 4,
    };
    execute_with(store, credit.clone(), with_id("prune-1"))
        .await
        .expect("first");
    let pruned = store
        .prune_commands(Duration::from_secs(3600))
        .await
        .expect("prune old");
    assert_eq!(pruned, 0, "the record is younger than an hour");
    let again = execute_with(store, credit.clone(), with_id("prune-1"))
        .await
        .expect("repeat");
    assert!(again.already_applied, "still recorded");

    tokio::time::sleep(Duration::from_millis(20)).await;
    let pruned = store
        .prune_commands(Duration::from_millis(1))
        .await
        .expect("prune");
    assert!(pruned >= 1, "the record is older than a millisecond");
    assert!(
        store
            .find_command(&command_id("prune-1"))
            .await
            .expect("look-up")
            .is_none()
    );
    let after = execute_with(store, credit, with_id("prune-1"))
        .await
        .expect("after pruning");
    assert!(!after.already_applied, "a pruned id is new");
    assert_eq!(
        events_of(store, &[a]).await.len(),
        2,
        "applied a second time"
    );
}

/// The commands of two deploys of one service: the first as it was, the
/// second after the type moved to another module and was renamed, keeping
/// its stable name.
mod deploys {
    use eventcore::{CommandLogic, NewEvents, Refusal, StreamId};

    use crate::fixtures::LedgerEvent;

    fn credit(account: &StreamId, amount: u64) -> Result<NewEvents<LedgerEvent>, Refusal> {
        Ok(vec![LedgerEvent::Credited {
            account: account.clone(),
            amount,
            from: None,
        }]
        .into())
    }

    pub(super) mod first {
        /// Named `Deposit` by the derive.
        #[derive(Debug, Clone, eventcore::Command)]
        pub(crate) struct Deposit {
            #[stream]
            pub(crate) account: eventcore::StreamId,
            pub(crate) amount: u64,
        }
    }

    pub(super) mod second {
        pub(crate) mod accounts {
            /// `Deposit` renamed and moved; its stable name kept.
            #[derive(Debug, Clone, eventcore::Command)]
            #[command(name = "Deposit")]
            pub(crate) struct AddFunds {
                #[stream]
                pub(crate) account: eventcore::StreamId,
                pub(crate) amount: u64,
            }
        }
    }

    impl CommandLogic for first::Deposit {
        type Event = LedgerEvent;
        type State = ();
        type Error = Refusal;

        fn apply(&self, (): (), _: &LedgerEvent) {}

        fn handle(&self, (): &()) -> Result<NewEvents<LedgerEvent>, Refusal> {
            credit(&self.account, self.amount)
        }
    }

    impl CommandLogic for second::accounts::AddFunds {
        type Event = LedgerEvent;
        type State = ();
        type Error = Refusal;

        fn apply(&self, (): (), _: &LedgerEvent) {}

        fn handle(&self, (): &()) -> Result<NewEvents<LedgerEvent>, Refusal> {
            credit(&self.account, self.amount)
        }
    }
}

/// A command id retried after a deploy that moved and renamed the command's
/// type returns the first outcome and writes nothing: records are made
/// under the stable name; one made by a version before stable names,
/// under the full type path, is matched by the path's last segment.
pub async fn a_command_renamed_and_moved_keeps_its_command_ids<S: EventStore + Clone + 'static>(
    store: &S,
) {
    use deploys::{first::Deposit, second::accounts::AddFunds};
    use eventcore::CommandStreams;

    let account = stream("deploy-acct");
    let first = execute_with(
        store,
        Deposit {
            account: account.clone(),
            amount: 10,
        },
        with_id("deposit-1"),
    )
    .await
    .expect("first deploy");
    let renamed = AddFunds {
        account: account.clone(),
        amount: 10,
    };
    assert_eq!(renamed.command_name(), "Deposit");
    let retried = execute_with(store, renamed.clone(), with_id("deposit-1"))
        .await
        .expect("the retry after the deploy is the same command");
    assert!(retried.already_applied, "{retried:?}");
    assert_eq!(retried.stream_versions, first.stream_versions);
    assert_eq!(
        events_of(store, std::slice::from_ref(&account)).await.len(),
        1,
        "applied once"
    );

    // A record from before stable names: the full path of a type that has
    // since moved.
    let mut writes = StreamWrites::new();
    writes
        .expect(account.clone(), StreamVersion::new(1))
        .expect("account");
    writes.set_command(command_id("deposit-0"), "shop_v0::handlers::Deposit");
    writes
        .append(&LedgerEvent::Credited {
            account: account.clone(),
            amount: 10,
            from: None,
        })
        .expect("credit");
    let old = store
        .append(writes)
        .await
        .expect("the old version's append");
    let retried = execute_with(store, renamed, with_id("deposit-0"))
        .await
        .expect("a record under the old path is read");
    assert!(retried.already_applied, "{retried:?}");
    assert_eq!(retried.stream_versions, old.stream_versions);
    assert_eq!(
        events_of(store, std::slice::from_ref(&account)).await.len(),
        2,
        "nothing written by the retry"
    );

    // Another command under the same id is still refused.
    let other = execute_with(
        store,
        Credit {
            account,
            amount: 10,
        },
        with_id("deposit-1"),
    )
    .await;
    assert!(
        matches!(
            other,
            Err(ExecuteError::Store(StoreError::CommandIdReused { .. }))
        ),
        "{other:?}"
    );
}
