//! The test kit's warehouse shop on PostgreSQL: reservations that discover
//! the customer they bill, under property-tested concurrency on the real
//! server, each batch in a schema of its own. No wrapper declares the
//! discovered streams.

mod support;

use eventcore_testing::{
    concurrency::{ConcurrencyConfig, check_concurrency},
    fixtures::shop::{shop_batch, shop_invariant, shop_setup},
};

#[test]
fn the_shop_is_serializable_on_postgres() {
    check_concurrency(
        16,
        support::fresh_store,
        shop_setup(6, 6),
        shop_batch(6, 30),
        ConcurrencyConfig::default(),
        shop_invariant,
    );
}

/// Replies lost after commit, every command with an id: each reservation
/// still lands once.
#[test]
fn the_shop_applies_each_command_once_under_lost_replies_on_postgres() {
    check_concurrency(
        6,
        support::fresh_store,
        shop_setup(6, 6),
        shop_batch(6, 30),
        ConcurrencyConfig::default()
            .with_lost_reply_rate(0.2)
            .with_command_ids(true),
        shop_invariant,
    );
}
