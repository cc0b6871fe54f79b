//! Remote (lazily loaded) layers: the seam between the overlay snapshotter and SOCI.
//!
//! [`RemoteLayers`] is what [`crate::snapshotter::Snapshotter`] calls during `Prepare` of a layer
//! (`containerd.io/snapshot.ref` present), in the availability check, on removal and at restart.
//! Everything touching the registry, the SOCI index and FUSE lives behind it.

pub mod fetcher;
pub mod hosts;
pub mod parallel;
mod resolver;
pub mod soci;
pub mod unpack;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Errors of the remote-layer path. The variants drive the `Prepare` decision tree (spec §5.3.3).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The SOCI index has no zTOC for this layer ⇒ local snapshot.
    #[error("skipping mounting layer {layer} as FUSE mount: no ztoc for layer")]
    NoZtoc {
        /// Layer digest.
        layer: String,
    },
    /// No usable SOCI index for the image ⇒ defer the whole image to the container runtime.
    #[error(
        "unable to fetch SOCI artifacts for image {image:?}: no valid SOCI index found: {cause}"
    )]
    NoIndex {
        /// Image reference.
        image: String,
        /// Why (the cached discovery/fetch failure, with its chain).
        cause: String,
    },
    /// A required label is missing.
    #[error("{0}")]
    MissingLabel(&'static str),
    /// Resolving the layer (zTOC, blob) failed.
    #[error("failed to resolve layer {layer:?} from {image:?}: {cause}")]
    Resolve {
        /// Layer digest.
        layer: String,
        /// Image reference.
        image: String,
        /// The cause, with its chain.
        cause: String,
    },
    /// The layer is not (or no longer) mounted / reachable.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (FUSE mount, local unpack, I/O), with its chain.
    #[error("{context}: {cause}")]
    Other {
        /// What was being done.
        context: &'static str,
        /// The cause.
        cause: String,
    },
}

impl RemoteError {
    pub(crate) fn other(context: &'static str, cause: impl std::fmt::Display) -> RemoteError {
        RemoteError::Other {
            context,
            cause: cause.to_string(),
        }
    }
}

/// Lazy-layer operations used by the snapshotter.
pub trait RemoteLayers: Send + Sync + std::fmt::Debug {
    /// Mounts the layer described by `labels` lazily (FUSE) at `mountpoint`. Returns labels to
    /// record on the committed snapshot (e.g. the SOCI index digest actually used, so a restart
    /// re-mounts with the same index whatever the pull modes are by then).
    fn mount(
        &self,
        mountpoint: &Path,
        labels: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, RemoteError>;
    /// Checks that the lazy layer at `mountpoint` is usable.
    fn check(
        &self,
        mountpoint: &Path,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RemoteError>;
    /// Unmounts a lazy layer.
    fn unmount(&self, mountpoint: &Path) -> Result<(), RemoteError>;
    /// Downloads the layer and unpacks it into `dir` (local snapshot, spec §5.14).
    fn unpack_local(
        &self,
        dir: &Path,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RemoteError>;
    /// Mount points currently served.
    fn mounted(&self) -> Vec<PathBuf>;
    /// Mounts a second view of the lazy layer mounted at `source` at `mountpoint`, reporting
    /// every owner through `map` (id-mapped rootfs, spec §5.3.7). It serves the same layer
    /// data (spans fetched by one are seen by the other) and is undone with
    /// [`RemoteLayers::unmount`], which leaves `source` mounted.
    fn mount_idmapped(
        &self,
        source: &Path,
        mountpoint: &Path,
        map: &soci_fs::IdMap,
    ) -> Result<(), RemoteError>;
    /// Parallel pull/unpack of the layer into `dir` (spec §5.14 `MountParallel`); backends
    /// without it refuse.
    fn unpack_parallel(
        &self,
        _dir: &Path,
        _labels: &BTreeMap<String, String>,
    ) -> Result<(), RemoteError> {
        Err(RemoteError::other(
            "parallel pull/unpack",
            "not supported by this remote backend",
        ))
    }
    /// Cancels the parallel pull job of image manifest `manifest`, if any (snapshot removal).
    fn cancel_parallel(&self, _manifest: &str) {}
}

/// Builds the remote-layer implementation for the daemon (`None` ⇒ every layer is unpacked by
/// containerd).
/// Must be called inside the tokio runtime.
pub fn build(
    cfg: &crate::config::Config,
    root: &Path,
    cri_keychain: Option<std::sync::Arc<crate::cri::Keychain>>,
) -> crate::error::Result<Option<std::sync::Arc<dyn RemoteLayers>>> {
    let mut opts = soci::SociOptions::from_config(cfg);
    opts.cri_keychain = cri_keychain;
    let pp = &cfg.pull_modes.parallel_pull_unpack;
    if pp.enable || pp.experimental_parallel_pull_as_fallback {
        opts.parallel = Some(parallel::ParallelOptions::from_config(cfg, root));
    }
    let s = std::sync::Arc::new(soci::Soci::new(root, opts)?);
    let weak = std::sync::Arc::downgrade(&s);
    crate::metrics::add_refresher(move || {
        if let Some(s) = weak.upgrade() {
            s.refresh_metrics();
        }
    });
    Ok(Some(s))
}
