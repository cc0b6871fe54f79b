//! Local SOCI state: the `soci` content store (an OCI image layout) and the artifacts database
//! (spec §4.10). Synchronous, no runtime, usable from the CLI and the snapshotter alike.
//!
//! * [`ContentStore`]: blobs at `<dir>/blobs/<alg>/<hex>`, written atomically (temp file, fsync,
//!   rename, directory fsync) and verified against their digest before they become visible.
//! * [`ArtifactsDb`]: one record ([`ArtifactEntry`]) per zTOC, SOCI index and prefetch artifact,
//!   kept in an embedded ACID database (redb). The Go CLI's bbolt file cannot be shared with it;
//!   the file is private state that [`rebuild`] can always reconstruct from a content store.
//! * [`rebuild`]: repairs drift between the two (`soci rebuild-db`), over any [`BlobStore`].

mod content;
mod db;
mod error;
mod rebuild;

pub use content::{BlobWriter, ContentStore, OCI_LAYOUT_VERSION};
pub use db::{ArtifactEntry, ArtifactKind, ArtifactsDb, ARTIFACTS_DB_FILE};
pub use error::{Error, Result};
pub use rebuild::{rebuild, BlobStore, RebuildReport};

/// Default `--root` of the CLI and the daemon.
pub const DEFAULT_ROOT: &str = "/var/lib/soci-snapshotter-grpc/";

/// The `soci` content store directory under a root: `<root>/content`.
#[must_use]
pub fn content_dir(root: &std::path::Path) -> std::path::PathBuf {
    root.join("content")
}
