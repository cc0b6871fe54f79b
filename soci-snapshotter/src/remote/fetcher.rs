//! The lazy layer blob fetcher over an image's registry hosts (spec §5.12): the first host that
//! answers `GET` with `Range: bytes=0-1` (redirects followed) serves the range reads; a read that
//! still fails after the client's retries, or a failed connectivity check, resolves the hosts again
//! in order, so reads move to the registry when a mirror goes down and back to the mirror when it
//! returns.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use soci_fs::{BlobSource, RequestKind, SourceError};
use soci_registry::{Digest, Reference};
use tracing::{debug, info, warn};

use super::hosts::Hosts;
use crate::error::chain;

/// Range reads of one layer blob through the first working host of an image.
///
/// [`BlobSource::read_at`] and [`LayerFetcher::check`] run registry calls with `Handle::block_on`:
/// call them from threads outside the runtime (FUSE, blocking-pool, background-fetcher threads).
#[derive(Debug)]
pub struct LayerFetcher {
    rt: tokio::runtime::Handle,
    hosts: Arc<Hosts>,
    reference: Reference,
    digest: Digest,
    /// Index into `hosts` of the host serving reads.
    current: AtomicUsize,
    /// Last successful read or check (for `valid_interval`).
    last_ok: Mutex<Instant>,
    check_interval: Duration,
}

impl LayerFetcher {
    /// A fetcher for blob `digest` of `reference`'s repository over `hosts`, not resolved yet
    /// (see [`LayerFetcher::resolve`]). `check_interval` is `[blob] valid_interval` (zero with
    /// `check_always`).
    pub fn new(
        rt: tokio::runtime::Handle,
        hosts: Arc<Hosts>,
        reference: Reference,
        digest: Digest,
        check_interval: Duration,
    ) -> LayerFetcher {
        LayerFetcher {
            rt,
            hosts,
            reference,
            digest,
            current: AtomicUsize::new(0),
            last_ok: Mutex::new(Instant::now()),
            check_interval,
        }
    }

    /// Resolves the host serving the blob: the first of the hosts whose `GET` with
    /// `Range: bytes=0-1` succeeds (latency metric `blob_redirect`).
    ///
    /// # Errors
    ///
    /// `unable to create remote fetcher: <per-host failures>` when no host serves the blob.
    pub fn resolve(&self) -> Result<(), String> {
        let started = Instant::now();
        let i = self
            .find_host()
            .map_err(|e| format!("unable to create remote fetcher: {e}"))?;
        crate::metrics::observe("blob_redirect", self.digest.as_str(), started.elapsed());
        debug!(layer = %self.digest, host = %self.host_name(i), "resolved layer blob host");
        Ok(())
    }

    fn host_name(&self, i: usize) -> String {
        self.hosts
            .entries()
            .get(i)
            .map(|h| h.host.endpoint.to_string())
            .unwrap_or_default()
    }

    /// The host currently serving reads (its base URL).
    pub fn current_host(&self) -> String {
        self.host_name(self.current.load(Ordering::SeqCst))
    }

    fn probe(&self, i: usize) -> Result<(), soci_registry::Error> {
        let Some(h) = self.hosts.entries().get(i) else {
            return Ok(());
        };
        self.rt
            .block_on(h.blob.read_range(&self.reference, &self.digest, 0, 2))
            .map(drop)
    }

    /// Probes every host in order and makes the first that works current.
    fn find_host(&self) -> Result<usize, String> {
        let mut errors = Vec::new();
        for i in 0..self.hosts.entries().len() {
            match self.probe(i) {
                Ok(()) => {
                    let before = self.current.swap(i, Ordering::SeqCst);
                    if before != i {
                        info!(layer = %self.digest, from = %self.host_name(before), to = %self.host_name(i), "switched layer blob host");
                    }
                    self.touch();
                    return Ok(i);
                }
                Err(e) => errors.push(format!("{}: {}", self.host_name(i), chain(&e))),
            }
        }
        if errors.is_empty() {
            errors.push("no registry host".into());
        }
        Err(errors.join("; "))
    }

    fn touch(&self) {
        *self.last_ok.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn read(&self, i: usize, range: &Range<u64>) -> Result<Vec<u8>, soci_registry::Error> {
        let Some(h) = self.hosts.entries().get(i) else {
            return Ok(Vec::new());
        };
        let len = range.end.saturating_sub(range.start);
        let started = Instant::now();
        let b =
            self.rt.block_on(
                h.blob
                    .read_range(&self.reference, &self.digest, range.start, len),
            )?;
        crate::metrics::observe(
            "remote_registry_get",
            self.digest.as_str(),
            started.elapsed(),
        );
        Ok(b.to_vec())
    }

    /// Connectivity check (`Check`, at most every `valid_interval`; every time with
    /// `check_always`): `GET` bytes 0–1 from the current host; on failure the hosts are resolved
    /// again in order.
    ///
    /// # Errors
    ///
    /// When no host serves the blob.
    pub fn check(&self) -> Result<(), String> {
        let since = self
            .last_ok
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        if !self.check_interval.is_zero() && since < self.check_interval {
            return Ok(());
        }
        let i = self.current.load(Ordering::SeqCst);
        match self.probe(i) {
            Ok(()) => {
                self.touch();
                Ok(())
            }
            Err(e) => {
                warn!(layer = %self.digest, host = %self.host_name(i), error = %chain(&e), "layer blob host check failed; resolving the hosts again");
                self.find_host().map(drop)
            }
        }
    }
}

impl BlobSource for LayerFetcher {
    fn read_at(&self, range: Range<u64>, _kind: RequestKind) -> Result<Vec<u8>, SourceError> {
        let i = self.current.load(Ordering::SeqCst);
        match self.read(i, &range) {
            Ok(b) => {
                self.touch();
                Ok(b)
            }
            Err(e) if self.hosts.entries().len() > 1 => {
                warn!(layer = %self.digest, host = %self.host_name(i), error = %chain(&e), "layer read failed; resolving the hosts again");
                match self.find_host() {
                    Ok(j) => self
                        .read(j, &range)
                        .inspect(|_| self.touch())
                        .map_err(|e| SourceError::Remote(Box::new(e))),
                    Err(all) => {
                        warn!(layer = %self.digest, error = all, "no registry host serves the layer");
                        Err(SourceError::Remote(Box::new(e)))
                    }
                }
            }
            Err(e) => Err(SourceError::Remote(Box::new(e))),
        }
    }
}
