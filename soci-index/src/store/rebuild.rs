//! `soci rebuild-db`: bring the artifacts DB back in line with a content store.

use super::content::ContentStore;
use super::db::{ArtifactEntry, ArtifactsDb};
use super::error::Result;
use crate::consts::{annotation, media_type};
use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::index::{Index, IndexVersion};

/// Blobs smaller than this are never SOCI indexes (Go skips them too).
const MIN_INDEX_SIZE: u64 = 10;
/// Larger blobs are layers, not manifests; they are not parsed.
const MAX_INDEX_SIZE: u64 = 4 << 20;

/// What [`rebuild`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RebuildReport {
    /// Records dropped because their blob is gone.
    pub removed: Vec<Digest>,
    /// SOCI v1 indexes found in the store and added.
    pub added_indexes: Vec<Digest>,
    /// zTOCs and prefetch artifacts of those indexes added.
    pub added_blobs: Vec<Digest>,
}

/// Syncs `db` with `store` (spec §6.2 `rebuild-db`):
///
/// 1. drops every record whose blob is not in the store;
/// 2. scans the store for SOCI **v1** indexes with a subject that are not recorded yet (blobs of
///    10 bytes to 4 MiB that decode as an index) and adds them, with a record for each of their
///    zTOCs and prefetch artifacts that is present in the store.
///
/// `platform_of` names the platform of a subject manifest (`linux/amd64`); the CLI reads it from
/// the manifest's config. v2 indexes are not rediscovered: without a subject there is nothing to
/// tie them to an image.
///
/// # Errors
///
/// Store and database errors.
pub fn rebuild(
    db: &ArtifactsDb,
    store: &ContentStore,
    platform_of: &dyn Fn(&Descriptor) -> Option<String>,
) -> Result<RebuildReport> {
    let mut report = RebuildReport::default();
    for entry in db.entries()? {
        if !store.contains(&entry.digest) {
            report.removed.push(entry.digest);
        }
    }
    db.remove_all(report.removed.iter().map(Digest::as_str))?;

    let known: std::collections::HashSet<Digest> =
        db.entries()?.into_iter().map(|e| e.digest).collect();
    let mut new_entries = Vec::new();
    for (digest, size) in store.list()? {
        if !(MIN_INDEX_SIZE..=MAX_INDEX_SIZE).contains(&size) || known.contains(&digest) {
            continue;
        }
        let Ok(bytes) = store.read(&digest) else {
            continue;
        };
        if bytes.first() != Some(&b'{') {
            continue;
        }
        let Ok(index) = Index::from_json(&bytes) else {
            continue;
        };
        if index.version() != IndexVersion::V1 {
            continue;
        }
        let Some(subject) = index.subject() else {
            continue;
        };
        let platform = platform_of(subject).unwrap_or_default();
        new_entries.push(ArtifactEntry::index(
            digest.clone(),
            size,
            &subject.digest,
            "",
            &platform,
            media_type::SOCI_INDEX_V1,
        ));
        report.added_indexes.push(digest);
        for blob in index.blobs() {
            if known.contains(&blob.digest) || !store.contains(&blob.digest) {
                continue;
            }
            let Some(layer) = blob
                .annotation(annotation::IMAGE_LAYER_DIGEST)
                .and_then(|l| Digest::parse(l).ok())
            else {
                continue;
            };
            let entry = if blob.media_type == media_type::PREFETCH {
                ArtifactEntry::prefetch(blob.digest.clone(), blob.size, &layer)
            } else {
                let span = blob
                    .annotation(annotation::SPAN_SIZE)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                ArtifactEntry::ztoc(blob.digest.clone(), blob.size, &layer, span)
            };
            if !report.added_blobs.contains(&entry.digest) {
                report.added_blobs.push(entry.digest.clone());
                new_entries.push(entry);
            }
        }
    }
    db.put_all(&new_entries)?;
    Ok(report)
}
