#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod error;
pub mod filters;
pub mod logging;
pub mod metastore;
pub mod metrics;
pub mod mount;
pub mod remote;
pub mod rpull;
pub mod service;
pub mod snapshotter;

pub use error::{Error, Result};
