//! # soci-snapshotter
//!
//! The SOCI snapshotter daemon (`soci-snapshotter-grpc`) as a library: a containerd proxy
//! snapshotter with overlayfs semantics whose image layers can be mounted lazily over FUSE from a
//! registry, using a SOCI index (spec §5).
//!
//! Core pieces:
//! - [`snapshotter::Snapshotter`]: overlay snapshots + the remote `Prepare` decision tree;
//! - [`metastore::MetaStore`]: crash-safe snapshot metadata in redb;
//! - [`service::Service`]: the containerd snapshots gRPC adapter;
//! - [`config::Config`]: the TOML configuration of the reference daemon;
//! - [`remote`]: lazy layers (SOCI index discovery, zTOCs, FUSE) behind [`remote::RemoteLayers`];
//! - [`rpull`]: client-side "remote pull" through containerd (the `soci image rpull` command);
//! - [`daemon::run`]: the daemon entry point.
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
