//! Proof that kept states and snapshots never change what a command does.
//!
//! [`check_cache_equivalence`] runs random histories of commands on two
//! "processes" ([`Executor`]s over one log, each with its own small
//! [`StateCache`](eventcore::StateCache), snapshots every few events),
//! with writes that bypass both caches and restarts that empty one, and the
//! same history on a reference store that keeps nothing. Every outcome and
//! the final log must be the same. [`two_processes_conserve_money`] runs
//! 16 tasks released together on two such processes.
//!
//! ```
//! use std::num::NonZeroU64;
//! use eventcore::{CacheConfig, Executor};
//! use eventcore_memory::InMemoryEventStore;
//! use eventcore_testing::cache::{Stores, check_cache_equivalence};
//!
//! check_cache_equivalence(8, || async {
//!     let shared = InMemoryEventStore::new();
//!     let small = CacheConfig::default()
//!         .with_max_entries(2)
//!         .with_snapshot_every(NonZeroU64::new(3));
//!     let process = |config| Executor::new(shared.clone()).with_cache(config);
//!     Stores {
//!         processes: [process(small.clone()), process(small)],
//!         reference: Executor::new(InMemoryEventStore::new()).with_cache(CacheConfig::disabled()),
//!     }
//! });
//! ```

use std::{fmt, future::Future, sync::Arc};

use eventcore::{
    EventStore, EventStoreExt, ExecuteError, Executor, RetryPolicy, StreamId, StreamWrites,
};
use proptest::{
    prelude::*,
    test_runner::{TestCaseError, TestError},
};

use crate::fixtures::{Credit, LedgerEvent, Move, Withdraw, stream};

/// The executors one case runs on.
#[derive(Debug, Clone)]
pub struct Stores<S> {
    /// Two executors over one log, each with its own cache (two processes).
    pub processes: [Executor<S>; 2],
    /// An executor over a store of its own that keeps no state.
    pub reference: Executor<S>,
}

/// One step of a generated history.
#[derive(Debug, Clone)]
pub enum Step {
    /// Process `0` or `1` executes a credit.
    Credit(usize, usize, u64),
    /// Process `0` or `1` executes a [`Move`] (state: the
    /// [`Balance`](crate::fixtures::Balance) folds of both accounts).
    Move(usize, usize, usize, u64),
    /// Process `0` or `1` executes a [`Withdraw`] (state: the account's
    /// fold, or its snapshot).
    Withdraw(usize, usize, u64),
    /// A debit appended by neither process's `execute` (another program).
    External(usize, u64),
    /// Process `0` or `1` restarts: its kept states are gone.
    Restart(usize),
}

const ACCOUNTS: usize = 3;

fn step() -> impl Strategy<Value = Step> {
    let p = 0..2usize;
    let acct = 0..ACCOUNTS;
    prop_oneof![
        3 => (p.clone(), acct.clone(), 1..20u64).prop_map(|(p, a, n)| Step::Credit(p, a, n)),
        4 => (p.clone(), acct.clone(), acct.clone(), 1..30u64)
            .prop_map(|(p, a, b, n)| Step::Move(p, a, b, n)),
        3 => (p.clone(), acct.clone(), 1..15u64).prop_map(|(p, a, n)| Step::Withdraw(p, a, n)),
        1 => (acct, 1..10u64).prop_map(|(a, n)| Step::External(a, n)),
        1 => p.prop_map(Step::Restart),
    ]
}

fn account(i: usize) -> StreamId {
    stream(&format!("acct-{i}"))
}

/// What a step did, comparable across stores.
#[derive(PartialEq, Eq)]
enum Outcome {
    Wrote(usize),
    Refused(String),
    Failed(String),
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Wrote(n) => write!(f, "wrote {n} events"),
            Outcome::Refused(why) => write!(f, "refused: {why}"),
            Outcome::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

fn outcome<E: std::error::Error + 'static>(
    result: Result<eventcore::ExecutionResult, ExecuteError<E>>,
) -> Outcome {
    match result {
        Ok(done) => Outcome::Wrote(done.events_written),
        Err(ExecuteError::Rejected(why)) => Outcome::Refused(why.to_string()),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

async fn run<S: EventStore>(executor: &Executor<S>, step: &Step) -> Outcome {
    let policy = RetryPolicy::default();
    let store = executor.store();
    match *step {
        Step::Credit(_, a, amount) => outcome(
            executor
                .execute_with(
                    Credit {
                        account: account(a),
                        amount,
                    },
                    &policy,
                )
                .await,
        ),
        Step::Move(_, a, b, amount) => outcome(
            executor
                .execute_with(
                    Move {
                        from: account(a),
                        to: account(b),
                        amount,
                    },
                    &policy,
                )
                .await,
        ),
        Step::Withdraw(_, a, amount) => outcome(
            executor
                .execute_with(
                    Withdraw {
                        account: account(a),
                        amount,
                    },
                    &policy,
                )
                .await,
        ),
        Step::External(a, amount) => {
            let id = account(a);
            let read = match store.read_streams(std::slice::from_ref(&id)).await {
                Ok(read) => read,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            let mut writes = StreamWrites::new();
            let prepared = writes
                .expect(id.clone(), read.version(&id).unwrap_or_default())
                .and_then(|()| {
                    writes.append(&LedgerEvent::Debited {
                        account: id.clone(),
                        amount,
                    })
                });
            if let Err(e) = prepared {
                return Outcome::Failed(e.to_string());
            }
            match store.append(writes).await {
                Ok(done) => Outcome::Wrote(done.events_written),
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
        Step::Restart(_) => {
            executor.cache().clear();
            Outcome::Wrote(0)
        }
    }
}

/// Every stored event of the accounts: stream, version, type and payload.
async fn log_of<S: EventStore>(store: &S) -> Result<Vec<(String, u64, String, String)>, String> {
    let ids: Vec<StreamId> = (0..ACCOUNTS).map(account).collect();
    let read = store.read_streams(&ids).await.map_err(|e| e.to_string())?;
    let mut log: Vec<_> = read
        .events()
        .iter()
        .map(|e| {
            (
                e.stream_id().to_string(),
                e.version().get(),
                e.event_type().to_owned(),
                e.payload().to_owned(),
            )
        })
        .collect();
    log.sort();
    Ok(log)
}

/// Runs `cases` generated histories of up to 60 steps, each on fresh
/// stores from `factory`, and compares every outcome and the final log of
/// the processes with the reference store's.
///
/// # Panics
/// On the first difference, after shrinking: the message names the step
/// and both outcomes, and prints the smallest failing history.
pub fn check_cache_equivalence<S, F, Fut>(cases: u32, factory: F)
where
    S: EventStore,
    F: Fn() -> Fut,
    Fut: Future<Output = Stores<S>>,
{
    let (mut runner, runtime) = crate::cases::runner(cases);
    let result = runner.run(&proptest::collection::vec(step(), 1..60), |steps| {
        runtime.block_on(async {
            let stores = factory().await;
            for (n, s) in steps.iter().enumerate() {
                let process = match *s {
                    Step::Credit(p, ..) | Step::Move(p, ..) | Step::Withdraw(p, ..) => p,
                    Step::Restart(p) => p,
                    Step::External(..) => 0,
                };
                let cached = run(&stores.processes[process], s).await;
                let reference = run(&stores.reference, s).await;
                if cached != reference {
                    return Err(TestCaseError::fail(format!(
                        "step {n} {s:?}: with kept states {cached:?}, without {reference:?}"
                    )));
                }
            }
            let cached = log_of(stores.processes[0].store())
                .await
                .map_err(TestCaseError::fail)?;
            let reference = log_of(stores.reference.store())
                .await
                .map_err(TestCaseError::fail)?;
            if cached != reference {
                return Err(TestCaseError::fail(format!(
                    "the logs differ:\nwith kept states {cached:#?}\nwithout {reference:#?}"
                )));
            }
            Ok(())
        })
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, steps)) => {
            panic!("kept states changed an outcome: {reason}\nsmallest failing history: {steps:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("cache equivalence test aborted: {reason}"),
    }
}

/// Two processes (executors over one log, each with its own cache):
/// commands alternating between them decide on each other's writes; then
/// 16 tasks released together pay among 8 accounts through either process.
/// Afterwards money is conserved, no balance is negative, versions are
/// gap-free and exactly the successful commands' events are in the log.
///
/// # Panics
/// When a guarantee does not hold.
pub async fn two_processes_conserve_money<S>(processes: [Executor<S>; 2])
where
    S: EventStore + Clone + 'static,
{
    let [p0, p1] = processes;
    let (x, y) = (stream("alt-x"), stream("alt-y"));
    p0.execute_with(
        Credit {
            account: x.clone(),
            amount: 100,
        },
        &RetryPolicy::default(),
    )
    .await
    .expect("fund");
    // Each pays everything it holds to the other, through the other process
    // than the last payment: a stale kept state would refuse or overdraw.
    let mut holder = (x.clone(), y.clone());
    for i in 0..20 {
        let store = if i % 2 == 0 { &p1 } else { &p0 };
        store
            .execute_with(
                Move {
                    from: holder.0.clone(),
                    to: holder.1.clone(),
                    amount: 100,
                },
                &RetryPolicy::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("payment {i} on process {}: {e}", (i + 1) % 2));
        holder = (holder.1, holder.0);
    }
    // A one-fold command on the other process sees the last payment.
    p1.execute_with(
        Withdraw {
            account: holder.0.clone(),
            amount: 100,
        },
        &RetryPolicy::default(),
    )
    .await
    .expect("the holder holds 100");

    const N: usize = 8;
    const TASKS: usize = 16;
    const EACH: usize = 25;
    let accounts: Vec<StreamId> = (0..N).map(|i| stream(&format!("two-{i}"))).collect();
    for a in &accounts {
        p1.execute_with(
            Credit {
                account: a.clone(),
                amount: 100,
            },
            &RetryPolicy::default(),
        )
        .await
        .expect("fund");
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (barrier, accounts) = (barrier.clone(), accounts.clone());
        let store = if t % 2 == 0 { p0.clone() } else { p1.clone() };
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(t as u64);
            barrier.wait().await;
            let mut written = 0;
            for _ in 0..EACH {
                let a = rng.usize(..N);
                let b = (a + 1 + rng.usize(..N - 1)) % N;
                let (from, to, amount) = (accounts[a].clone(), accounts[b].clone(), rng.u64(1..60));
                // Without the in-process queue, so the processes' own
                // commands race too.
                let policy = RetryPolicy::default()
                    .with_queue_in_process(false)
                    .with_max_attempts(
                        std::num::NonZeroU32::new(1_000).unwrap_or(std::num::NonZeroU32::MIN),
                    );
                let result = store.execute_with(Move { from, to, amount }, &policy).await;
                match result {
                    Ok(done) => written += done.events_written,
                    Err(ExecuteError::Rejected(_)) => {}
                    Err(e) => panic!("task {t}: {e}"),
                }
            }
            written
        }));
    }
    let mut written = 0;
    for task in tasks {
        written += task.await.expect("task");
    }
    let read = p0.store().read_streams(&accounts).await.expect("read");
    assert_eq!(
        read.events().len(),
        N + written,
        "exactly the funding and the successful payments are in the log"
    );
    let mut balances = [0i128; N];
    for (i, a) in accounts.iter().enumerate() {
        let versions: Vec<u64> = read.events_of(a).map(|e| e.version().get()).collect();
        assert_eq!(
            versions,
            (1..=versions.len() as u64).collect::<Vec<_>>(),
            "{a}: gap-free versions"
        );
        for e in read.events_of(a) {
            match e.decode::<LedgerEvent>().expect("decode") {
                LedgerEvent::Credited { amount, .. } => balances[i] += i128::from(amount),
                LedgerEvent::Debited { amount, .. } => {
                    balances[i] -= i128::from(amount);
                    assert!(balances[i] >= 0, "{a} overdrawn at version {}", e.version());
                }
            }
        }
    }
    assert_eq!(
        balances.iter().sum::<i128>(),
        100 * N as i128,
        "money conserved"
    );
}
