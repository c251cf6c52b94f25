//! Commands made of per-stream folds ([`Decide`]): what is kept, what is
//! read, and that a kept fold never makes a command decide on a wrong state.

use std::sync::Arc;

use eventcore::{
    CacheConfig, CacheStats, Command, Decide, Event, EventStore, EventStoreExt, Executor, Fold,
    NewEvents, Refusal, StreamId, StreamVersion, StreamWrites, require,
};
use eventcore_memory::InMemoryEventStore;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
enum Ledger {
    Credited {
        #[stream]
        account: StreamId,
        amount: u64,
    },
    Debited {
        #[stream]
        account: StreamId,
        amount: u64,
    },
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Balance(u64);

impl Fold for Balance {
    type Event = Ledger;
    const NAME: &'static str = "test-balance";
    fn apply(&mut self, event: &Ledger) {
        match event {
            Ledger::Credited { amount, .. } => self.0 += amount,
            Ledger::Debited { amount, .. } => self.0 = self.0.saturating_sub(*amount),
        }
    }
}

/// How many events an account's stream holds: a second fold of one stream.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Entries(u64);

impl Fold for Entries {
    type Event = Ledger;
    const NAME: &'static str = "test-entries";
    fn apply(&mut self, _: &Ledger) {
        self.0 += 1;
    }
}

#[derive(Command)]
struct Deposit {
    #[stream]
    account: StreamId,
    amount: u64,
}

impl Decide for Deposit {
    type Event = Ledger;
    type State = Arc<Balance>;
    type Error = Refusal;
    fn folds(&self) -> &StreamId {
        &self.account
    }
    fn handle(&self, _: &Arc<Balance>) -> Result<NewEvents<Ledger>, Refusal> {
        Ok(vec![Ledger::Credited {
            account: self.account.clone(),
            amount: self.amount,
        }]
        .into())
    }
}

#[derive(Command)]
struct Transfer {
    #[stream]
    from: StreamId,
    #[stream]
    to: StreamId,
    amount: u64,
}

impl Decide for Transfer {
    type Event = Ledger;
    type State = (Arc<Balance>, Arc<Balance>);
    type Error = Refusal;
    fn folds(&self) -> (&StreamId, &StreamId) {
        (&self.from, &self.to)
    }
    fn handle(&self, (from, _): &Self::State) -> Result<NewEvents<Ledger>, Refusal> {
        require!(
            from.0 >= self.amount,
            "{} holds {}, cannot pay {}",
            self.from,
            from.0,
            self.amount
        );
        Ok(vec![
            Ledger::Debited {
                account: self.from.clone(),
                amount: self.amount,
            },
            Ledger::Credited {
                account: self.to.clone(),
                amount: self.amount,
            },
        ]
        .into())
    }
}

fn id(s: &str) -> StreamId {
    StreamId::try_new(s).unwrap()
}

fn reads(stats: &CacheStats) -> u64 {
    stats.full_reads + stats.tail_reads
}

/// Deposits `amount` into `account` through `executor`.
async fn deposit<S: EventStore>(executor: &Executor<S>, account: &StreamId, amount: u64) {
    executor
        .execute(Deposit {
            account: account.clone(),
            amount,
        })
        .await
        .unwrap();
}

async fn balance_of<S: EventStore>(store: &S, account: &StreamId) -> u64 {
    let read = store
        .read_streams(std::slice::from_ref(account))
        .await
        .unwrap();
    let mut balance = Balance::default();
    for e in read.events() {
        balance.apply(&e.decode().unwrap());
    }
    balance.0
}

#[tokio::test]
async fn a_transfer_on_kept_folds_appends_without_reading() {
    let executor = Executor::new(InMemoryEventStore::new());
    let (alice, bob) = (id("alice"), id("bob"));
    for account in [&alice, &bob] {
        deposit(&executor, account, 50).await;
    }
    let before = executor.cache().stats();
    let pay = |from: &StreamId, to: &StreamId| Transfer {
        from: from.clone(),
        to: to.clone(),
        amount: 20,
    };
    // The deposits kept both accounts' balance folds: the transfers share them.
    executor.execute(pay(&alice, &bob)).await.unwrap();
    executor.execute(pay(&bob, &alice)).await.unwrap();
    let done = executor.cache().stats().since(&before);
    assert_eq!(reads(&done), 0, "no read: {done:?}");
    assert_eq!((done.appends, done.hits, done.misses), (2, 2, 0));
    assert_eq!(balance_of(executor.store(), &alice).await, 50);
    assert_eq!(balance_of(executor.store(), &bob).await, 50);
}

#[tokio::test]
async fn a_fold_not_kept_is_read_with_the_tails_of_the_others_in_one_read() {
    let executor = Executor::new(InMemoryEventStore::new());
    let (alice, bob) = (id("alice"), id("bob"));
    deposit(&executor, &alice, 30).await;
    // Bob's fold was never kept.
    let before = executor.cache().stats();
    executor
        .execute(Transfer {
            from: alice.clone(),
            to: bob.clone(),
            amount: 30,
        })
        .await
        .unwrap();
    let done = executor.cache().stats().since(&before);
    assert_eq!((done.misses, done.tail_reads, done.full_reads), (1, 1, 0));
    assert_eq!(done.appends, 1);
}

#[tokio::test]
async fn a_fold_made_stale_by_another_process_never_decides() {
    let store = InMemoryEventStore::new();
    let one = Executor::new(store.clone()).with_cache(CacheConfig::default());
    let two = Executor::new(store.clone()).with_cache(CacheConfig::default());
    let (alice, bob) = (id("alice"), id("bob"));
    deposit(&one, &alice, 100).await;
    let pay = |amount| Transfer {
        from: alice.clone(),
        to: bob.clone(),
        amount,
    };
    // One keeps alice at 100; two spends 70 of it.
    one.execute(pay(0)).await.unwrap();
    two.execute(pay(70)).await.unwrap();
    // On its kept fold one would pay 50 more: the append conflicts, the
    // tails are read, and the true balance (30) refuses it.
    let before = one.cache().stats();
    let refused = one.execute(pay(50)).await.unwrap_err();
    assert!(refused.to_string().contains("holds 30"), "{refused}");
    let done = one.cache().stats().since(&before);
    assert_eq!((done.appends, done.tail_reads), (1, 1), "{done:?}");
    // A refusal on a kept fold is confirmed by a read before it is returned.
    deposit(&two, &alice, 40).await;
    one.execute(pay(60)).await.unwrap();
    assert_eq!(balance_of(&store, &alice).await, 10);
    assert_eq!(balance_of(&store, &bob).await, 130);
}

#[tokio::test]
async fn a_write_that_bypasses_the_executor_is_seen() {
    let executor = Executor::new(InMemoryEventStore::new());
    let (alice, bob) = (id("alice"), id("bob"));
    deposit(&executor, &alice, 10).await;
    let mut writes = StreamWrites::new();
    writes.expect(alice.clone(), StreamVersion::new(1)).unwrap();
    writes
        .append(&Ledger::Debited {
            account: alice.clone(),
            amount: 10,
        })
        .unwrap();
    executor.store().append(writes).await.unwrap();
    let refused = executor
        .execute(Transfer {
            from: alice.clone(),
            to: bob,
            amount: 5,
        })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("holds 0"), "{refused}");
}

/// Two folds of one stream, and a declared stream no fold reads.
#[derive(Command)]
struct Audit {
    #[stream]
    account: StreamId,
    #[stream]
    lock: StreamId,
}

impl Decide for Audit {
    type Event = Ledger;
    type State = (Arc<Balance>, Arc<Entries>);
    type Error = Refusal;
    fn folds(&self) -> (&StreamId, &StreamId) {
        (&self.account, &self.account)
    }
    fn handle(&self, (balance, entries): &Self::State) -> Result<NewEvents<Ledger>, Refusal> {
        // A fee of one per entry so far, while the balance allows it.
        let fee = entries.0.min(balance.0);
        Ok(vec![Ledger::Debited {
            account: self.account.clone(),
            amount: fee,
        }]
        .into())
    }
}

#[tokio::test]
async fn two_folds_of_a_stream_and_an_unfolded_declared_stream_are_all_version_checked() {
    let executor = Executor::new(InMemoryEventStore::new());
    let (account, lock) = (id("acct"), id("lock"));
    deposit(&executor, &account, 10).await;
    let audit = || Audit {
        account: account.clone(),
        lock: lock.clone(),
    };
    executor.execute(audit()).await.unwrap(); // fee 1: 9 left, 2 entries
    // Another writer moves the declared stream that no fold reads.
    let mut writes = StreamWrites::new();
    writes.expect(lock.clone(), StreamVersion::INITIAL).unwrap();
    writes
        .append(&Ledger::Credited {
            account: lock.clone(),
            amount: 1,
        })
        .unwrap();
    executor.store().append(writes).await.unwrap();
    let before = executor.cache().stats();
    let done = executor.execute(audit()).await.unwrap(); // fee 2: 7 left
    let stats = executor.cache().stats().since(&before);
    assert_eq!(
        (stats.appends, stats.tail_reads),
        (2, 1),
        "the kept version of the lock conflicted: {stats:?}"
    );
    assert_eq!(done.version_of(&lock), Some(StreamVersion::new(1)));
    assert_eq!(done.version_of(&account), Some(StreamVersion::new(3)));
    assert_eq!(balance_of(executor.store(), &account).await, 7);
}

/// One fold over one of two declared streams: the other is checked only.
#[derive(Command)]
struct GuardedDeposit {
    #[stream]
    account: StreamId,
    #[stream]
    guard: StreamId,
    amount: u64,
}

impl Decide for GuardedDeposit {
    type Event = Ledger;
    type State = Arc<Balance>;
    type Error = Refusal;
    fn folds(&self) -> &StreamId {
        &self.account
    }
    fn handle(&self, balance: &Arc<Balance>) -> Result<NewEvents<Ledger>, Refusal> {
        require!(balance.0 < 100, "{} is full", self.account);
        Ok(vec![Ledger::Credited {
            account: self.account.clone(),
            amount: self.amount,
        }]
        .into())
    }
}

#[tokio::test]
async fn a_one_fold_state_over_more_declared_streams_decides_and_checks_them_all() {
    let executor = Executor::new(InMemoryEventStore::new());
    let (account, guard) = (id("acct"), id("guard"));
    let deposit = |amount| GuardedDeposit {
        account: account.clone(),
        guard: guard.clone(),
        amount,
    };
    executor.execute(deposit(60)).await.unwrap();
    let before = executor.cache().stats();
    let done = executor.execute(deposit(50)).await.unwrap();
    let stats = executor.cache().stats().since(&before);
    assert_eq!((reads(&stats), stats.appends), (0, 1), "{stats:?}");
    assert_eq!(done.version_of(&guard), Some(StreamVersion::INITIAL));
    let refused = executor.execute(deposit(1)).await.unwrap_err();
    assert!(refused.to_string().contains("is full"), "{refused}");
}

// A command over two kinds of stream, each fold decoding its own event type.

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
enum OrderEvent {
    Placed {
        #[stream]
        order: StreamId,
        quantity: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
enum StockEvent {
    Stocked {
        #[stream]
        warehouse: StreamId,
        quantity: u64,
    },
    Reserved {
        #[stream]
        warehouse: StreamId,
        quantity: u64,
    },
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Ordered(u64);

impl Fold for Ordered {
    type Event = OrderEvent;
    const NAME: &'static str = "test-ordered";
    fn apply(&mut self, OrderEvent::Placed { quantity, .. }: &OrderEvent) {
        self.0 += quantity;
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct OnHand(u64);

impl Fold for OnHand {
    type Event = StockEvent;
    const NAME: &'static str = "test-on-hand";
    fn apply(&mut self, event: &StockEvent) {
        match event {
            StockEvent::Stocked { quantity, .. } => self.0 += quantity,
            StockEvent::Reserved { quantity, .. } => self.0 -= quantity,
        }
    }
}

/// What the reserving command writes: the warehouse's events, under
/// another Rust type than the fold reads them as.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
enum Reservation {
    Reserved {
        #[stream]
        warehouse: StreamId,
        quantity: u64,
    },
}

#[derive(Command)]
struct Reserve {
    #[stream]
    order: StreamId,
    #[stream]
    warehouse: StreamId,
}

impl Decide for Reserve {
    type Event = Reservation;
    type State = (Arc<Ordered>, Arc<OnHand>);
    type Error = Refusal;
    fn folds(&self) -> (&StreamId, &StreamId) {
        (&self.order, &self.warehouse)
    }
    fn handle(&self, (ordered, on_hand): &Self::State) -> Result<NewEvents<Reservation>, Refusal> {
        require!(
            on_hand.0 >= ordered.0,
            "{} on hand, {} ordered",
            on_hand.0,
            ordered.0
        );
        Ok(vec![Reservation::Reserved {
            warehouse: self.warehouse.clone(),
            quantity: ordered.0,
        }]
        .into())
    }
}

#[tokio::test]
async fn each_fold_decodes_its_own_event_type_and_folds_what_was_written() {
    let executor = Executor::new(InMemoryEventStore::new());
    let (order, warehouse) = (id("order-1"), id("warehouse-1"));
    let mut writes = StreamWrites::new();
    writes
        .expect(order.clone(), StreamVersion::INITIAL)
        .unwrap();
    writes
        .expect(warehouse.clone(), StreamVersion::INITIAL)
        .unwrap();
    writes
        .append(&OrderEvent::Placed {
            order: order.clone(),
            quantity: 2,
        })
        .unwrap();
    writes
        .append(&StockEvent::Stocked {
            warehouse: warehouse.clone(),
            quantity: 5,
        })
        .unwrap();
    executor.store().append(writes).await.unwrap();
    let reserve = || Reserve {
        order: order.clone(),
        warehouse: warehouse.clone(),
    };
    executor.execute(reserve()).await.unwrap(); // 3 left
    let before = executor.cache().stats();
    // Decided on the kept folds, the warehouse's holding the reservation
    // just written (decoded from its payload as a StockEvent).
    executor.execute(reserve()).await.unwrap(); // 1 left
    let done = executor.cache().stats().since(&before);
    assert_eq!((reads(&done), done.appends), (0, 1), "{done:?}");
    let refused = executor.execute(reserve()).await.unwrap_err();
    assert!(refused.to_string().contains("1 on hand"), "{refused}");
}

#[tokio::test]
async fn a_cleared_cache_reads_the_streams_again() {
    let executor = Executor::new(InMemoryEventStore::new());
    let alice = id("alice");
    let deposit = || Deposit {
        account: alice.clone(),
        amount: 1,
    };
    executor.execute(deposit()).await.unwrap();
    executor.cache().clear();
    let before = executor.cache().stats();
    executor.execute(deposit()).await.unwrap();
    let done = executor.cache().stats().since(&before);
    assert_eq!((done.misses, done.full_reads), (1, 1));
    assert_eq!(balance_of(executor.store(), &alice).await, 2);
}

#[tokio::test]
async fn an_invalid_fold_name_is_refused_before_anything_is_read() {
    #[derive(Debug, Default, Clone, Serialize, Deserialize)]
    struct Nameless;
    impl Fold for Nameless {
        type Event = Ledger;
        const NAME: &'static str = "";
        fn apply(&mut self, _: &Ledger) {}
    }
    #[derive(Command)]
    struct Touch {
        #[stream]
        account: StreamId,
    }
    impl Decide for Touch {
        type Event = Ledger;
        type State = Arc<Nameless>;
        type Error = Refusal;
        fn folds(&self) -> &StreamId {
            &self.account
        }
        fn handle(&self, _: &Arc<Nameless>) -> Result<NewEvents<Ledger>, Refusal> {
            Ok(NewEvents::none())
        }
    }
    let executor = Executor::new(InMemoryEventStore::new());
    let error = executor
        .execute(Touch {
            account: id("alice"),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(error, eventcore::ExecuteError::InvalidFoldName { name: "" }),
        "{error}"
    );
    assert_eq!(reads(&executor.cache().stats()), 0);
}

#[tokio::test]
async fn concurrent_transfers_on_kept_folds_conserve_money() {
    const ACCOUNTS: usize = 6;
    const TASKS: usize = 16;
    let store = InMemoryEventStore::new();
    // Two processes, each with its own kept folds.
    let processes = [
        Executor::new(store.clone()).with_cache(CacheConfig::default()),
        Executor::new(store.clone()).with_cache(CacheConfig::default()),
    ];
    let accounts: Vec<StreamId> = (0..ACCOUNTS).map(|i| id(&format!("c-{i}"))).collect();
    for a in &accounts {
        deposit(&processes[0], a, 100).await;
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let executor = processes[t % 2].clone();
        let (barrier, accounts) = (barrier.clone(), accounts.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(t as u64);
            barrier.wait().await;
            for _ in 0..40 {
                let a = rng.usize(..ACCOUNTS);
                let b = (a + 1 + rng.usize(..ACCOUNTS - 1)) % ACCOUNTS;
                let pay = Transfer {
                    from: accounts[a].clone(),
                    to: accounts[b].clone(),
                    amount: rng.u64(1..80),
                };
                let policy = eventcore::RetryPolicy::default()
                    .with_queue_in_process(false)
                    .with_max_attempts(std::num::NonZeroU32::new(1_000).unwrap());
                match executor.execute_with(pay, &policy).await {
                    Ok(_) | Err(eventcore::ExecuteError::Rejected(_)) => {}
                    Err(e) => panic!("task {t}: {e}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let read = store.read_streams(&accounts).await.unwrap();
    let mut balances = [0i128; ACCOUNTS];
    for e in read.events() {
        let i = accounts.iter().position(|a| a == e.stream_id()).unwrap();
        match e.decode::<Ledger>().unwrap() {
            Ledger::Credited { amount, .. } => balances[i] += i128::from(amount),
            Ledger::Debited { amount, .. } => balances[i] -= i128::from(amount),
        }
        assert!(
            balances[i] >= 0,
            "{} overdrawn at {}",
            e.stream_id(),
            e.version()
        );
    }
    assert_eq!(balances.iter().sum::<i128>(), 100 * ACCOUNTS as i128);
    let hits: u64 = processes.iter().map(|p| p.cache().stats().hits).sum();
    assert!(hits > 0, "the processes decided on kept folds");
}

fn snapshotting(every: u64) -> CacheConfig {
    CacheConfig::default().with_snapshot_every(std::num::NonZeroU64::new(every))
}

#[tokio::test]
async fn a_cold_process_starts_a_long_stream_from_its_folds_snapshot() {
    let store = InMemoryEventStore::new();
    let warm = Executor::new(store.clone()).with_cache(snapshotting(10));
    let (alice, bob) = (id("alice"), id("bob"));
    for _ in 0..25 {
        deposit(&warm, &alice, 2).await;
    }
    assert!(warm.cache().stats().snapshots_offered >= 2);
    // Another process: alice's fold from its snapshot and the events after.
    let cold = Executor::new(store.clone()).with_cache(snapshotting(10));
    deposit(&cold, &alice, 2).await;
    let stats = cold.cache().stats();
    assert_eq!(
        (stats.snapshot_loads, stats.snapshots_used),
        (1, 1),
        "{stats:?}"
    );
    // The snapshot of the fold serves every command on the account: the
    // cold process decides a transfer of all of it on the kept fold.
    cold.execute(Transfer {
        from: alice.clone(),
        to: bob.clone(),
        amount: 52,
    })
    .await
    .unwrap();
    assert_eq!(balance_of(&store, &alice).await, 0);
    assert_eq!(balance_of(&store, &bob).await, 52);
}

#[tokio::test]
async fn a_snapshot_of_another_schema_version_of_the_fold_is_not_used() {
    /// `Balance` at schema version 2: doubled, to tell it apart.
    #[derive(Debug, Default, Clone, Serialize, Deserialize)]
    struct Doubled(u64);
    impl Fold for Doubled {
        type Event = Ledger;
        const NAME: &'static str = "test-balance";
        const SCHEMA_VERSION: u32 = 2;
        fn apply(&mut self, event: &Ledger) {
            if let Ledger::Credited { amount, .. } = event {
                self.0 += 2 * amount;
            }
        }
    }
    #[derive(Command)]
    struct Check {
        #[stream]
        account: StreamId,
        expect: u64,
    }
    impl Decide for Check {
        type Event = Ledger;
        type State = Arc<Doubled>;
        type Error = Refusal;
        fn folds(&self) -> &StreamId {
            &self.account
        }
        fn handle(&self, state: &Arc<Doubled>) -> Result<NewEvents<Ledger>, Refusal> {
            require!(
                state.0 == self.expect,
                "folded {}, expected {}",
                state.0,
                self.expect
            );
            Ok(NewEvents::none())
        }
    }
    let store = InMemoryEventStore::new();
    let alice = id("alice");
    let first = Executor::new(store.clone()).with_cache(snapshotting(5));
    for _ in 0..6 {
        deposit(&first, &alice, 1).await;
    }
    assert_eq!(first.cache().stats().snapshots_offered, 1);
    let second = Executor::new(store).with_cache(snapshotting(5));
    second
        .execute(Check {
            account: alice.clone(),
            expect: 12,
        })
        .await
        .unwrap();
    let stats = second.cache().stats();
    assert_eq!(
        (stats.snapshots_used, stats.snapshots_ignored),
        (0, 1),
        "{stats:?}"
    );
}

/// A state whose folds are named by its fields, one of them a pair of
/// folds over one stream.
#[derive(Debug, Default, eventcore::FoldState)]
struct Statement {
    payer: Arc<Balance>,
    payee: (Arc<Balance>, Arc<Entries>),
}

#[derive(Command)]
struct Pay {
    #[stream]
    from: StreamId,
    #[stream]
    to: StreamId,
    amount: u64,
}

impl Decide for Pay {
    type Event = Ledger;
    type State = Statement;
    type Error = Refusal;
    fn folds(&self) -> StatementStreams<'_> {
        StatementStreams {
            payer: &self.from,
            payee: (&self.to, &self.to),
        }
    }
    fn handle(&self, state: &Statement) -> Result<NewEvents<Ledger>, Refusal> {
        require!(
            state.payer.0 >= self.amount,
            "payer holds {}",
            state.payer.0
        );
        // A payee may take two payments at most: its second fold counts.
        require!(state.payee.1.0 < 2, "payee has {} entries", state.payee.1.0);
        Ok(vec![
            Ledger::Debited {
                account: self.from.clone(),
                amount: self.amount,
            },
            Ledger::Credited {
                account: self.to.clone(),
                amount: self.amount,
            },
        ]
        .into())
    }
}

#[tokio::test]
async fn a_derived_state_names_its_folds_by_field_and_keeps_each() {
    let executor = Executor::new(InMemoryEventStore::new());
    let (alice, bob) = (id("alice"), id("bob"));
    deposit(&executor, &alice, 10).await;
    let pay = || Pay {
        from: alice.clone(),
        to: bob.clone(),
        amount: 3,
    };
    executor.execute(pay()).await.unwrap(); // bob: 1 entry
    let before = executor.cache().stats();
    executor.execute(pay()).await.unwrap(); // bob: 2 entries
    let done = executor.cache().stats().since(&before);
    assert_eq!(
        (reads(&done), done.appends),
        (0, 1),
        "three folds kept: {done:?}"
    );
    let refused = executor.execute(pay()).await.unwrap_err();
    assert!(
        refused.to_string().contains("payee has 2 entries"),
        "{refused}"
    );
    assert_eq!(balance_of(executor.store(), &alice).await, 4);
    assert_eq!(balance_of(executor.store(), &bob).await, 6);
}
