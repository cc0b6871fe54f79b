#![doc = include_str!("../README.md")]
// `unsafe` is denied (workspace lints); the one exception is adopting the socket inherited from
// systemd, in `activation`.

pub mod activation;
pub mod config;
pub mod cri;
pub mod daemon;
pub mod error;
pub mod filters;
pub mod idmap;
pub mod logging;
pub mod metastore;
pub mod metrics;
pub mod mount;
pub mod remote;
pub mod rpull;
pub mod service;
pub mod snapshotter;

pub use error::{Error, Result};
