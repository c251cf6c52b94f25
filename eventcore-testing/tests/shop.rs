//! The kit on a command that discovers a stream while deciding: a
//! reservation that reads an order and two warehouses and discovers the
//! order's customer. Given/when/then and the concurrency checker follow
//! every stream it reads, with no wrapper declaring them.

use eventcore::{
    CommandLogic, CommandStreams, ExecuteError, NewEvents, Refusal, StoreError, StreamId,
};
use eventcore_memory::InMemoryEventStore;
use eventcore_testing::{
    concurrency::{ConcurrencyConfig, check_concurrency, run_concurrently},
    fixtures::{
        shop::{
            ReserveStock, Shop, ShopCommand, ShopEvent, customer, order, shop_batch,
            shop_invariant, shop_setup, warehouses,
        },
        stream,
    },
    gwt::given,
    proptest::strategy::Strategy,
};

fn reserve(i: usize) -> ReserveStock {
    ReserveStock {
        order: order(i),
        warehouses: warehouses(),
    }
}

fn placed(i: usize, quantity: u32) -> ShopEvent {
    ShopEvent::Placed {
        order: order(i),
        customer: customer(0),
        quantity,
    }
}

fn stocked(w: usize, quantity: u32) -> ShopEvent {
    ShopEvent::Stocked {
        warehouse: warehouses()[w].clone(),
        quantity,
    }
}

fn credit(limit: u32) -> ShopEvent {
    ShopEvent::CreditSet {
        customer: customer(0),
        limit,
    }
}

/// The given credit of the discovered customer is what the command decides
/// on: enough credit reserves, too little refuses.
#[test]
fn given_when_then_reads_the_events_of_a_discovered_stream() {
    let [first, second] = warehouses();
    given([placed(0, 3), stocked(0, 1), stocked(1, 5), credit(4)])
        .when(reserve(0))
        .then_events([
            ShopEvent::Reserved {
                warehouse: second.clone(),
                order: order(0),
                quantity: 3,
            },
            ShopEvent::OrderReserved {
                order: order(0),
                warehouse: second,
            },
        ]);
    given([placed(0, 3), stocked(0, 5), credit(2)])
        .when(reserve(0))
        .then_rejected_with("exceeds customer-0's credit limit of 2");
    given([placed(0, 2), stocked(0, 5), credit(1), credit(2)])
        .when(reserve(0))
        .then_events([
            ShopEvent::Reserved {
                warehouse: first.clone(),
                order: order(0),
                quantity: 2,
            },
            ShopEvent::OrderReserved {
                order: order(0),
                warehouse: first,
            },
        ]);
    let when = given([placed(0, 9), credit(9)]).when(reserve(0));
    let read: Vec<&StreamId> = when.read().iter().map(|(s, _)| s).collect();
    assert!(read.contains(&&customer(0)), "read {read:?}");
    when.then_rejected_with("no warehouse holds 9");
}

/// Uses up a customer's credit: discovers the customer from the order and
/// writes to that stream, as `execute` allows for any stream it read.
#[derive(Debug, Clone)]
struct UseCredit {
    order: StreamId,
    /// Writes to this stream instead, when set: one it never reads.
    stray: Option<StreamId>,
}

impl CommandStreams for UseCredit {
    fn streams(&self) -> Vec<StreamId> {
        vec![self.order.clone()]
    }
}

impl CommandLogic for UseCredit {
    type Event = ShopEvent;
    type State = Shop;
    type Error = Refusal;

    fn apply(&self, mut shop: Shop, event: &ShopEvent) -> Shop {
        shop.apply(event);
        shop
    }

    fn discover_streams(&self, shop: &Shop) -> Vec<StreamId> {
        shop.orders
            .get(&self.order)
            .map(|o| o.customer.clone())
            .into_iter()
            .collect()
    }

    fn handle(&self, shop: &Shop) -> Result<NewEvents<ShopEvent>, Refusal> {
        let order = shop
            .orders
            .get(&self.order)
            .ok_or_else(|| Refusal::new("no order"))?;
        let limit = shop
            .limits
            .get(&order.customer)
            .copied()
            .unwrap_or_default();
        Ok(vec![ShopEvent::CreditSet {
            customer: self.stray.clone().unwrap_or_else(|| order.customer.clone()),
            limit: limit.saturating_sub(order.quantity),
        }]
        .into())
    }
}

#[tokio::test]
async fn given_when_then_accepts_writes_to_a_discovered_stream_exactly_as_execute_does() {
    let use_credit = UseCredit {
        order: order(0),
        stray: None,
    };
    given([placed(0, 2), credit(5)])
        .when(use_credit.clone())
        .then_events([ShopEvent::CreditSet {
            customer: customer(0),
            limit: 3,
        }]);
    let store = InMemoryEventStore::new();
    for cmd in [
        ShopCommand::Place {
            order: order(0),
            customer: customer(0),
            quantity: 2,
        },
        ShopCommand::SetCredit {
            customer: customer(0),
            limit: 5,
        },
    ] {
        eventcore::execute(&store, cmd).await.unwrap();
    }
    eventcore::execute(&store, use_credit)
        .await
        .expect("execute accepts it too");

    // A stream neither declared nor discovered: refused by both, the same way.
    let stray = UseCredit {
        order: order(0),
        stray: Some(stream("customer-9")),
    };
    let when = given([placed(0, 2), credit(5)]).when(stray.clone());
    let Err(ExecuteError::Store(StoreError::UndeclaredStream { stream_id, .. })) = when.outcome()
    else {
        panic!("refused as an undeclared stream: {:?}", when.outcome());
    };
    assert_eq!(stream_id, &stream("customer-9"));
    let refused = eventcore::execute(&store, stray).await.unwrap_err();
    assert!(
        matches!(
            refused,
            ExecuteError::Store(StoreError::UndeclaredStream { .. })
        ),
        "{refused}"
    );
}

/// The real discovering commands, no wrapper: the checker passes on the
/// in-memory store.
#[test]
fn the_shop_is_serializable_on_the_memory_store() {
    check_concurrency(
        48,
        || async { InMemoryEventStore::new() },
        shop_setup(6, 6),
        shop_batch(6, 30),
        ConcurrencyConfig::default(),
        shop_invariant,
    );
}

/// A run's history holds every round of a discovering command: the read
/// of its declared streams, the discovered customer, and the append that
/// registers them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_history_holds_every_round_of_a_discovering_command() {
    let history = run_concurrently(
        InMemoryEventStore::new(),
        &shop_setup(2, 6),
        &[ShopCommand::Reserve(reserve(0))],
        1,
        &ConcurrencyConfig::default().with_conflict_rate(0.0),
        shop_invariant,
    )
    .await
    .unwrap_or_else(|f| panic!("{f}"));
    let steps = &history.records[0].steps;
    use eventcore_testing::concurrency::Step;
    let reads: Vec<&Step> = steps
        .iter()
        .filter(|s| matches!(s, Step::Read(_)))
        .collect();
    assert_eq!(reads.len(), 2, "{steps:?}");
    let Step::Read(second) = reads[1] else {
        unreachable!()
    };
    assert_eq!(
        second.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>(),
        vec![customer(0)]
    );
    let Some(Step::Append { expected, .. }) = steps.last() else {
        panic!("ends with its append: {steps:?}");
    };
    assert!(
        expected.iter().any(|(s, _)| *s == customer(0)),
        "{expected:?}"
    );
}

/// The same commands with a reservation that checks for some stock
/// instead of enough: the checker catches it.
#[derive(Debug, Clone)]
struct IgnoresQuantity(ShopCommand);

impl CommandStreams for IgnoresQuantity {
    fn streams(&self) -> Vec<StreamId> {
        self.0.streams()
    }
}

impl CommandLogic for IgnoresQuantity {
    type Event = ShopEvent;
    type State = Shop;
    type Error = Refusal;

    fn apply(&self, shop: Shop, event: &ShopEvent) -> Shop {
        self.0.apply(shop, event)
    }

    fn discover_streams(&self, shop: &Shop) -> Vec<StreamId> {
        self.0.discover_streams(shop)
    }

    fn handle(&self, shop: &Shop) -> Result<NewEvents<ShopEvent>, Refusal> {
        let ShopCommand::Reserve(reserve) = &self.0 else {
            return self.0.handle(shop);
        };
        let Some(order) = shop.orders.get(&reserve.order) else {
            return Err(Refusal::new("no order"));
        };
        if order.reserved.is_some() {
            return Ok(NewEvents::none());
        }
        let Some(warehouse) = reserve.warehouses.iter().find(|w| shop.on_hand(w) > 0) else {
            return Err(Refusal::new("out of stock"));
        };
        Ok(vec![
            ShopEvent::Reserved {
                warehouse: warehouse.clone(),
                order: reserve.order.clone(),
                quantity: order.quantity,
            },
            ShopEvent::OrderReserved {
                order: reserve.order.clone(),
                warehouse: warehouse.clone(),
            },
        ]
        .into())
    }
}

/// Runs the quantity-ignoring shop under `config`; the panic message if
/// the checker failed it.
fn check_ignoring_quantity(config: ConcurrencyConfig) -> Option<String> {
    std::panic::catch_unwind(|| {
        check_concurrency(
            64,
            || async { InMemoryEventStore::new() },
            shop_setup(6, 4).into_iter().map(IgnoresQuantity).collect(),
            shop_batch(6, 30).prop_map(|b| b.into_iter().map(IgnoresQuantity).collect::<Vec<_>>()),
            config,
            shop_invariant,
        );
    })
    .err()
    .map(|panic| panic.downcast_ref::<String>().cloned().unwrap_or_default())
}

/// The part of a failure that names the smallest failing batch.
fn smallest_batch(message: &str) -> &str {
    let from = message
        .find("smallest failing batch")
        .expect("names the batch");
    let to = message
        .find("replay exactly this case")
        .expect("names the replay");
    &message[from..to]
}

#[test]
fn a_reservation_that_ignores_the_quantity_is_caught_and_replayed() {
    let message = check_ignoring_quantity(ConcurrencyConfig::default())
        .expect("a reservation that oversells is caught");
    assert!(
        message.contains("invariant violated: warehouse-"),
        "{message}"
    );
    assert!(message.contains("went to -"), "{message}");

    // The one line printed runs exactly that case again.
    let replay = message
        .split("EVENTCORE_REPLAY=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the failure prints its replay");
    let pinned = ConcurrencyConfig::default().with_replay(replay.parse().unwrap());
    let again = check_ignoring_quantity(pinned).expect("the replayed case fails again");
    assert_eq!(smallest_batch(&again), smallest_batch(&message));
}

/// A shrunk batch of one reservation on an idle store: nothing to report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_reservation_on_an_idle_store_passes() {
    for seed in 0..10 {
        run_concurrently(
            InMemoryEventStore::new(),
            &shop_setup(2, 6),
            &[ShopCommand::Reserve(reserve(seed % 2))],
            seed as u64,
            &ConcurrencyConfig::default(),
            shop_invariant,
        )
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    }
}
