//! The artifacts database (spec §4.10) on redb.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use crate::consts::media_type;
use crate::digest::Digest;

/// File name of the database under `--root`. Not `artifacts.db`: that name is the Go CLI's bbolt
/// file, which this format cannot read or write.
pub const ARTIFACTS_DB_FILE: &str = "artifacts.redb";

/// One bucket of the Go DB, one table here: key = artifact digest, value = JSON record.
const TABLE: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("soci_artifacts");

/// The kind of a recorded artifact (`type` in the Go DB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ArtifactKind {
    /// `soci_index`: a SOCI index manifest.
    #[serde(rename = "soci_index")]
    Index,
    /// `soci_layer`: a zTOC.
    #[serde(rename = "soci_layer")]
    Ztoc,
    /// `soci_prefetch`: a prefetch artifact.
    #[serde(rename = "soci_prefetch")]
    Prefetch,
}

impl ArtifactKind {
    /// The Go name (`soci_index`, `soci_layer`, `soci_prefetch`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Index => "soci_index",
            Self::Ztoc => "soci_layer",
            Self::Prefetch => "soci_prefetch",
        }
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One artifact record with the fields of spec §4.10.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArtifactEntry {
    /// The artifact blob's digest (the key).
    pub digest: Digest,
    /// Blob size.
    pub size: u64,
    /// Layer digest (zTOC, prefetch) or manifest digest (index).
    pub location: String,
    /// "Original digest": layer digest for zTOC/prefetch, platform manifest digest for an index.
    pub original_digest: String,
    /// Image (target) digest; index entries only.
    pub image_digest: String,
    /// Platform string, e.g. `linux/amd64`; index entries only.
    pub platform: String,
    /// The kind.
    pub kind: ArtifactKind,
    /// Blob media type.
    pub media_type: String,
    /// Index only: v1 or v2 artifact type.
    pub artifact_type: String,
    /// When the record was created.
    pub created_at: SystemTime,
    /// zTOC span size (0 for others).
    pub span_size: u64,
}

impl ArtifactEntry {
    /// A zTOC record for `layer`, created now.
    #[must_use]
    pub fn ztoc(digest: Digest, size: u64, layer: &Digest, span_size: u64) -> Self {
        Self {
            digest,
            size,
            location: layer.to_string(),
            original_digest: layer.to_string(),
            image_digest: String::new(),
            platform: String::new(),
            kind: ArtifactKind::Ztoc,
            media_type: media_type::ZTOC.to_owned(),
            artifact_type: String::new(),
            created_at: SystemTime::now(),
            span_size,
        }
    }

    /// A prefetch artifact record for `layer`, created now.
    #[must_use]
    pub fn prefetch(digest: Digest, size: u64, layer: &Digest) -> Self {
        Self {
            kind: ArtifactKind::Prefetch,
            media_type: media_type::PREFETCH.to_owned(),
            span_size: 0,
            ..Self::ztoc(digest, size, layer, 0)
        }
    }

    /// A SOCI index record, created now.
    #[must_use]
    pub fn index(
        digest: Digest,
        size: u64,
        manifest: &Digest,
        image: &str,
        platform: &str,
        artifact_type: &str,
    ) -> Self {
        Self {
            digest,
            size,
            location: manifest.to_string(),
            original_digest: manifest.to_string(),
            image_digest: image.to_owned(),
            platform: platform.to_owned(),
            kind: ArtifactKind::Index,
            media_type: media_type::OCI_MANIFEST.to_owned(),
            artifact_type: artifact_type.to_owned(),
            created_at: SystemTime::now(),
            span_size: 0,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Record {
    size: u64,
    location: String,
    oci_digest: String,
    image_digest: String,
    platform: String,
    #[serde(rename = "type")]
    kind: ArtifactKind,
    media_type: String,
    artifact_type: String,
    /// Nanoseconds since the Unix epoch.
    created_at: u128,
    span_size: u64,
}

impl Record {
    fn from_entry(e: &ArtifactEntry) -> Self {
        Self {
            size: e.size,
            location: e.location.clone(),
            oci_digest: e.original_digest.clone(),
            image_digest: e.image_digest.clone(),
            platform: e.platform.clone(),
            kind: e.kind,
            media_type: e.media_type.clone(),
            artifact_type: e.artifact_type.clone(),
            created_at: e
                .created_at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
            span_size: e.span_size,
        }
    }

    fn into_entry(self, digest: Digest) -> ArtifactEntry {
        let nanos = u64::try_from(self.created_at).unwrap_or(u64::MAX);
        ArtifactEntry {
            digest,
            size: self.size,
            location: self.location,
            original_digest: self.oci_digest,
            image_digest: self.image_digest,
            platform: self.platform,
            kind: self.kind,
            media_type: self.media_type,
            artifact_type: self.artifact_type,
            created_at: UNIX_EPOCH + Duration::from_nanos(nanos),
            span_size: self.span_size,
        }
    }
}

/// The artifacts database: an embedded, crash-safe (copy-on-write, fsync on commit) key-value
/// file holding one [`ArtifactEntry`] per artifact. Safe to share between threads.
///
/// ```
/// use soci_index::store::{ArtifactEntry, ArtifactsDb};
/// use soci_index::Digest;
///
/// let dir = tempfile::tempdir()?;
/// let db = ArtifactsDb::open(dir.path().join("artifacts.redb"))?;
/// let layer = Digest::sha256_of(b"layer");
/// db.put(&ArtifactEntry::ztoc(Digest::sha256_of(b"ztoc"), 4, &layer, 4194304))?;
/// assert!(db.find_ztoc(&layer, 4194304)?.is_some());
/// assert!(db.find_ztoc(&layer, 1024)?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ArtifactsDb {
    db: Database,
}

impl ArtifactsDb {
    /// Opens the database file, creating it if needed.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] if the file cannot be opened (e.g. it is not a redb file, or another
    /// process holds it).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let db = Database::create(path.as_ref())?;
        let txn = db.begin_write()?;
        txn.open_table(TABLE)?;
        txn.commit()?;
        Ok(Self { db })
    }

    /// Opens `<root>/artifacts.redb`, creating it if needed.
    ///
    /// # Errors
    ///
    /// As [`ArtifactsDb::open`].
    pub fn open_in(root: &Path) -> Result<Self> {
        Self::open(root.join(ARTIFACTS_DB_FILE))
    }

    /// Inserts or replaces a record.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn put(&self, entry: &ArtifactEntry) -> Result<()> {
        self.put_all(std::slice::from_ref(entry))
    }

    /// Inserts or replaces several records in one transaction.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn put_all(&self, entries: &[ArtifactEntry]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            for e in entries {
                let value = serde_json::to_vec(&Record::from_entry(e))
                    .expect("invariant: a record of strings and integers always serializes");
                table.insert(e.digest.as_str(), value.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The record for `digest`, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Database`], [`Error::CorruptRecord`].
    pub fn get(&self, digest: &str) -> Result<Option<ArtifactEntry>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TABLE)?;
        let Some(value) = table.get(digest)? else {
            return Ok(None);
        };
        decode(digest, value.value()).map(Some)
    }

    /// Removes a record; returns whether it existed.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn remove(&self, digest: &str) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let existed = {
            let mut table = txn.open_table(TABLE)?;
            let old = table.remove(digest)?;
            old.is_some()
        };
        txn.commit()?;
        Ok(existed)
    }

    /// Removes several records in one transaction; returns how many existed.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn remove_all<'a>(&self, digests: impl IntoIterator<Item = &'a str>) -> Result<usize> {
        let txn = self.db.begin_write()?;
        let mut n = 0;
        {
            let mut table = txn.open_table(TABLE)?;
            for d in digests {
                if table.remove(d)?.is_some() {
                    n += 1;
                }
            }
        }
        txn.commit()?;
        Ok(n)
    }

    /// Every record, by digest. Records whose key is not a valid digest are skipped.
    ///
    /// # Errors
    ///
    /// [`Error::Database`], [`Error::CorruptRecord`].
    pub fn entries(&self) -> Result<Vec<ArtifactEntry>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TABLE)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            if Digest::parse(k.value()).is_err() {
                continue;
            }
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Records of one kind.
    ///
    /// # Errors
    ///
    /// As [`ArtifactsDb::entries`].
    pub fn entries_of(&self, kind: ArtifactKind) -> Result<Vec<ArtifactEntry>> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect())
    }

    /// A zTOC built for `layer` with `span_size` (spec §4.5: reuse unless `--force`).
    ///
    /// # Errors
    ///
    /// As [`ArtifactsDb::entries`].
    pub fn find_ztoc(&self, layer: &Digest, span_size: u64) -> Result<Option<ArtifactEntry>> {
        Ok(self
            .entries_of(ArtifactKind::Ztoc)?
            .into_iter()
            .find(|e| e.original_digest == layer.as_str() && e.span_size == span_size))
    }
}

fn decode(key: &str, value: &[u8]) -> Result<ArtifactEntry> {
    let record: Record = serde_json::from_slice(value).map_err(|source| Error::CorruptRecord {
        key: key.to_owned(),
        source,
    })?;
    let digest = Digest::from_str(key).map_err(|_| Error::CorruptRecord {
        key: key.to_owned(),
        source: <serde_json::Error as serde::de::Error>::custom("key is not a digest"),
    })?;
    Ok(record.into_entry(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_remove_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ARTIFACTS_DB_FILE);
        let layer = Digest::sha256_of(b"l");
        let index = ArtifactEntry::index(
            Digest::sha256_of(b"i"),
            10,
            &Digest::sha256_of(b"m"),
            "sha256:img",
            "linux/amd64",
            media_type::SOCI_INDEX_V1,
        );
        {
            let db = ArtifactsDb::open(&path).unwrap();
            db.put_all(&[
                ArtifactEntry::ztoc(Digest::sha256_of(b"z"), 3, &layer, 42),
                index.clone(),
            ])
            .unwrap();
        }
        let db = ArtifactsDb::open(&path).unwrap();
        let got = db.get(index.digest.as_str()).unwrap().unwrap();
        // Nanosecond precision survives.
        assert_eq!(got, index);
        assert_eq!(db.entries().unwrap().len(), 2);
        assert_eq!(
            db.entries_of(ArtifactKind::Index).unwrap(),
            vec![index.clone()]
        );
        assert!(db.remove(index.digest.as_str()).unwrap());
        assert!(!db.remove(index.digest.as_str()).unwrap());
        assert_eq!(db.find_ztoc(&layer, 42).unwrap().unwrap().size, 3);
    }
}
