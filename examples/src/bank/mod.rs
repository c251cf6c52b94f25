//! A bank: accounts, deposits, withdrawals and transfers between two
//! accounts, with a concurrent workload that checks the bank's invariants.

pub mod domain;
pub mod ledger;
pub mod money;
pub mod read_model;
pub mod workload;
