//! `soci rebuild-db`: bring the artifacts DB back in line with a content store.

use std::collections::{HashMap, HashSet};

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

/// Read access to a content store, as [`rebuild`] needs it: implemented by [`ContentStore`] (the
/// `soci` store); the CLI implements it over containerd's content API.
pub trait BlobStore {
    /// Every blob as `(digest, size)`.
    ///
    /// # Errors
    ///
    /// Failing to list the store.
    fn list_blobs(&self) -> Result<Vec<(Digest, u64)>>;

    /// The bytes of blob `digest`.
    ///
    /// # Errors
    ///
    /// Failing to read it (missing, I/O, ...).
    fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>>;
}

impl BlobStore for ContentStore {
    fn list_blobs(&self) -> Result<Vec<(Digest, u64)>> {
        self.list()
    }

    fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        self.read(digest)
    }
}

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
    store: &dyn BlobStore,
    platform_of: &dyn Fn(&Descriptor) -> Option<String>,
) -> Result<RebuildReport> {
    let present: HashMap<Digest, u64> = store.list_blobs()?.into_iter().collect();
    let mut report = RebuildReport::default();
    for entry in db.entries()? {
        if !present.contains_key(&entry.digest) {
            report.removed.push(entry.digest);
        }
    }
    db.remove_all(report.removed.iter().map(Digest::as_str))?;

    let known: HashSet<Digest> = db.entries()?.into_iter().map(|e| e.digest).collect();
    let mut candidates: Vec<(&Digest, u64)> = present.iter().map(|(d, s)| (d, *s)).collect();
    candidates.sort();
    let mut new_entries = Vec::new();
    for (digest, size) in candidates {
        if !(MIN_INDEX_SIZE..=MAX_INDEX_SIZE).contains(&size) || known.contains(digest) {
            continue;
        }
        let Ok(bytes) = store.read_blob(digest) else {
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
        report.added_indexes.push(digest.clone());
        for blob in index.blobs() {
            if known.contains(&blob.digest) || !present.contains_key(&blob.digest) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ArtifactKind, Error};

    /// A store that is not a directory: the same algorithm must work over any [`BlobStore`].
    #[derive(Default)]
    struct MemStore(HashMap<Digest, Vec<u8>>);

    impl MemStore {
        fn put(&mut self, bytes: &[u8]) -> Digest {
            let d = Digest::sha256_of(bytes);
            self.0.insert(d.clone(), bytes.to_vec());
            d
        }
    }

    impl BlobStore for MemStore {
        fn list_blobs(&self) -> Result<Vec<(Digest, u64)>> {
            Ok(self
                .0
                .iter()
                .map(|(d, b)| (d.clone(), b.len() as u64))
                .collect())
        }
        fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
            self.0.get(digest).cloned().ok_or_else(|| Error::NotFound {
                digest: digest.clone(),
            })
        }
    }

    fn ztoc_desc(bytes: &[u8], layer: &Digest) -> Descriptor {
        Descriptor::for_content(media_type::ZTOC, bytes)
            .with_annotation(annotation::IMAGE_LAYER_DIGEST, layer.as_str())
            .with_annotation(
                annotation::IMAGE_LAYER_MEDIA_TYPE,
                media_type::OCI_LAYER_GZIP,
            )
            .with_annotation(annotation::SPAN_SIZE, "65536")
    }

    #[test]
    fn rebuild_over_any_store_adds_v1_and_drops_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = ArtifactsDb::open(dir.path().join("db.redb")).expect("db");
        let mut store = MemStore::default();
        let manifest = Descriptor::for_content(media_type::OCI_MANIFEST, b"{\"m\":1}");
        let (z1, z2) = (b"ztoc one bytes".as_slice(), b"ztoc two bytes".as_slice());
        let (l1, l2) = (Digest::sha256_of(b"l1"), Digest::sha256_of(b"l2"));
        store.put(z1);
        // z2 is referenced but absent: no record for it.
        let index = Index::new_v1(
            vec![ztoc_desc(z1, &l1), ztoc_desc(z2, &l2)],
            &manifest,
            "test",
        );
        let idx = store.put(&index.to_json());
        // A v2 index (no subject) and small junk are ignored.
        let v2 = Index::new_v2(vec![ztoc_desc(z1, &l1)], "test");
        store.put(&v2.to_json());
        store.put(b"{}");
        // A stale record whose blob is gone.
        let gone = Digest::sha256_of(b"gone");
        db.put(&ArtifactEntry::ztoc(gone.clone(), 4, &l2, 65536))
            .expect("put");

        let platform = |d: &Descriptor| (d.digest == manifest.digest).then(|| "linux/arm64".into());
        let report = rebuild(&db, &store, &platform).expect("rebuild");
        assert_eq!(report.removed, vec![gone.clone()]);
        assert_eq!(report.added_indexes, vec![idx.clone()]);
        assert_eq!(report.added_blobs, vec![Digest::sha256_of(z1)]);
        let e = db.get(idx.as_str()).expect("get").expect("index entry");
        assert_eq!(e.kind, ArtifactKind::Index);
        assert_eq!(e.platform, "linux/arm64");
        assert_eq!(e.original_digest, manifest.digest.as_str());
        let z = db
            .get(Digest::sha256_of(z1).as_str())
            .expect("get")
            .expect("ztoc entry");
        assert_eq!((z.kind, z.span_size), (ArtifactKind::Ztoc, 65536));
        assert!(db.get(gone.as_str()).expect("get").is_none());

        // Idempotent; removing the index blob and the zTOC drops both records.
        assert_eq!(
            rebuild(&db, &store, &platform).expect("again"),
            RebuildReport::default()
        );
        store.0.remove(&idx);
        store.0.remove(&Digest::sha256_of(z1));
        let report = rebuild(&db, &store, &platform).expect("after delete");
        assert_eq!(report.removed.len(), 2);
        assert!(db.entries().expect("entries").is_empty());
    }
}
