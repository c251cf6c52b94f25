//! Examples for eventcore. [`bank`] is the domain behind the `bank` demo
//! and [`service`], the bank as an HTTP service (`bank-service`).
#![warn(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

pub mod bank;
pub mod cli;
pub mod feed;
pub mod load;
pub mod service;
