//! Persistent snapshot metadata (the equivalent of containerd's snapshot "storage" package).
//!
//! Stored in [redb](https://docs.rs/redb): a pure-Rust embedded key-value store with ACID
//! transactions and copy-on-write pages, so a crash (or `kill -9`) never leaves a half-written
//! record and a restarted daemon sees exactly the last committed state. One table maps the
//! snapshot key (as containerd sends it, e.g. `default/12/sha256:…`) to a JSON record; a second
//! table holds the id counter.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::SystemTime;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_ID: &str = "next_id";

/// Kind of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Read-only view of a committed snapshot.
    View,
    /// Writable snapshot.
    Active,
    /// Immutable snapshot, usable as a parent.
    Committed,
}

impl Kind {
    /// Name as used in containerd filters (`kind==committed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// One snapshot's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Storage id: the directory name under `snapshots/`.
    pub id: u64,
    /// Kind.
    pub kind: Kind,
    /// Parent key (empty for none).
    pub parent: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time (ns since the Unix epoch).
    pub created_ns: i128,
    /// Update time (ns since the Unix epoch).
    pub updated_ns: i128,
    /// Disk usage in bytes (committed snapshots).
    pub size: i64,
    /// Inodes (committed snapshots).
    pub inodes: i64,
}

/// Which labels an update touches.
#[derive(Debug, Clone)]
pub enum LabelUpdate {
    /// Replace all labels.
    ReplaceAll(BTreeMap<String, String>),
    /// Set (or delete, when absent from the new map) the listed keys only.
    Keys(BTreeMap<String, String>, Vec<String>),
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn enc(r: &Record) -> Vec<u8> {
    serde_json::to_vec(r).expect("a Record always serializes")
}

fn dec(key: &str, b: &[u8]) -> Result<Record> {
    serde_json::from_slice(b)
        .map_err(|e| Error::Db(format!("corrupt record for {key:?}: {e}").into()))
}

/// The metadata store.
#[derive(Debug)]
pub struct MetaStore {
    db: redb::Database,
}

impl MetaStore {
    /// Opens (or creates) the database file.
    pub fn open(path: &Path) -> Result<MetaStore> {
        let db = redb::Database::create(path).map_err(Error::db)?;
        let txn = db.begin_write().map_err(Error::db)?;
        {
            txn.open_table(SNAPSHOTS).map_err(Error::db)?;
            txn.open_table(META).map_err(Error::db)?;
        }
        txn.commit().map_err(Error::db)?;
        Ok(MetaStore { db })
    }

    /// Gets a snapshot.
    pub fn get(&self, key: &str) -> Result<Record> {
        let txn = self.db.begin_read().map_err(Error::db)?;
        let t = txn.open_table(SNAPSHOTS).map_err(Error::db)?;
        match t.get(key).map_err(Error::db)? {
            Some(v) => dec(key, v.value()),
            None => Err(Error::not_found(format!("snapshot {key:?}"))),
        }
    }

    /// The chain of ancestors of `key` (excluding it), nearest first, as `(key, record)`.
    pub fn ancestors(&self, key: &str) -> Result<Vec<(String, Record)>> {
        let txn = self.db.begin_read().map_err(Error::db)?;
        let t = txn.open_table(SNAPSHOTS).map_err(Error::db)?;
        let mut out = Vec::new();
        let mut cur = match t.get(key).map_err(Error::db)? {
            Some(v) => dec(key, v.value())?.parent,
            None => return Err(Error::not_found(format!("snapshot {key:?}"))),
        };
        while !cur.is_empty() {
            let r = match t.get(cur.as_str()).map_err(Error::db)? {
                Some(v) => dec(&cur, v.value())?,
                None => return Err(Error::not_found(format!("parent snapshot {cur:?}"))),
            };
            let next = r.parent.clone();
            out.push((cur, r));
            cur = next;
        }
        Ok(out)
    }

    /// Creates an active or view snapshot. The parent (if any) must be committed.
    pub fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Record> {
        if kind == Kind::Committed {
            return Err(Error::InvalidArgument(format!("snapshot type {kind:?} invalid; only snapshots of type Active or View can be created")));
        }
        if key.is_empty() {
            return Err(Error::InvalidArgument(
                "snapshot key must not be empty".into(),
            ));
        }
        let txn = self.db.begin_write().map_err(Error::db)?;
        let rec;
        {
            let mut t = txn.open_table(SNAPSHOTS).map_err(Error::db)?;
            if t.get(key).map_err(Error::db)?.is_some() {
                return Err(Error::already_exists(format!("snapshot {key:?}")));
            }
            if !parent.is_empty() {
                let p = match t.get(parent).map_err(Error::db)? {
                    Some(v) => dec(parent, v.value())?,
                    None => {
                        return Err(Error::not_found(format!(
                            "missing parent {parent:?} bucket"
                        )))
                    }
                };
                if p.kind != Kind::Committed {
                    return Err(Error::InvalidArgument(format!(
                        "parent {parent:?} is not committed snapshot"
                    )));
                }
            }
            let mut m = txn.open_table(META).map_err(Error::db)?;
            let id = m
                .get(NEXT_ID)
                .map_err(Error::db)?
                .map(|v| v.value())
                .unwrap_or(1);
            m.insert(NEXT_ID, id + 1).map_err(Error::db)?;
            let now = now_ns();
            rec = Record {
                id,
                kind,
                parent: parent.to_string(),
                labels,
                created_ns: now,
                updated_ns: now,
                size: 0,
                inodes: 0,
            };
            t.insert(key, enc(&rec).as_slice()).map_err(Error::db)?;
        }
        txn.commit().map_err(Error::db)?;
        Ok(rec)
    }

    /// Commits active snapshot `key` as `name`, keeping its id and parent. `labels` become the
    /// committed snapshot's labels.
    pub fn commit(
        &self,
        key: &str,
        name: &str,
        size: i64,
        inodes: i64,
        labels: BTreeMap<String, String>,
    ) -> Result<Record> {
        if name.is_empty() {
            return Err(Error::InvalidArgument(
                "committed name must not be empty".into(),
            ));
        }
        let txn = self.db.begin_write().map_err(Error::db)?;
        let rec;
        {
            let mut t = txn.open_table(SNAPSHOTS).map_err(Error::db)?;
            if t.get(name).map_err(Error::db)?.is_some() {
                return Err(Error::already_exists(format!("snapshot {name:?}")));
            }
            let active = match t.get(key).map_err(Error::db)? {
                Some(v) => dec(key, v.value())?,
                None => return Err(Error::not_found(format!("snapshot {key:?}"))),
            };
            if active.kind != Kind::Active {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {key:?} is not active"
                )));
            }
            let now = now_ns();
            rec = Record {
                kind: Kind::Committed,
                labels,
                created_ns: now,
                updated_ns: now,
                size,
                inodes,
                ..active
            };
            t.remove(key).map_err(Error::db)?;
            t.insert(name, enc(&rec).as_slice()).map_err(Error::db)?;
        }
        txn.commit().map_err(Error::db)?;
        Ok(rec)
    }

    /// Removes a snapshot that has no children.
    pub fn remove(&self, key: &str) -> Result<Record> {
        let txn = self.db.begin_write().map_err(Error::db)?;
        let rec;
        {
            let mut t = txn.open_table(SNAPSHOTS).map_err(Error::db)?;
            rec = match t.get(key).map_err(Error::db)? {
                Some(v) => dec(key, v.value())?,
                None => return Err(Error::not_found(format!("snapshot {key:?}"))),
            };
            for item in t.iter().map_err(Error::db)? {
                let (k, v) = item.map_err(Error::db)?;
                let child = dec(k.value(), v.value())?;
                if child.parent == key {
                    return Err(Error::FailedPrecondition(format!(
                        "cannot remove snapshot {key:?} with child {:?}",
                        k.value()
                    )));
                }
            }
            t.remove(key).map_err(Error::db)?;
        }
        txn.commit().map_err(Error::db)?;
        Ok(rec)
    }

    /// Updates labels.
    pub fn update_labels(&self, key: &str, update: LabelUpdate) -> Result<Record> {
        let txn = self.db.begin_write().map_err(Error::db)?;
        let mut rec;
        {
            let mut t = txn.open_table(SNAPSHOTS).map_err(Error::db)?;
            rec = match t.get(key).map_err(Error::db)? {
                Some(v) => dec(key, v.value())?,
                None => return Err(Error::not_found(format!("snapshot {key:?}"))),
            };
            match update {
                LabelUpdate::ReplaceAll(l) => rec.labels = l,
                LabelUpdate::Keys(l, keys) => {
                    for k in keys {
                        match l.get(&k) {
                            Some(v) if !v.is_empty() => {
                                rec.labels.insert(k, v.clone());
                            }
                            _ => {
                                rec.labels.remove(&k);
                            }
                        }
                    }
                }
            }
            rec.updated_ns = now_ns();
            t.insert(key, enc(&rec).as_slice()).map_err(Error::db)?;
        }
        txn.commit().map_err(Error::db)?;
        Ok(rec)
    }

    /// All snapshots.
    pub fn list(&self) -> Result<Vec<(String, Record)>> {
        let txn = self.db.begin_read().map_err(Error::db)?;
        let t = txn.open_table(SNAPSHOTS).map_err(Error::db)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(Error::db)? {
            let (k, v) = item.map_err(Error::db)?;
            out.push((k.value().to_string(), dec(k.value(), v.value())?));
        }
        Ok(out)
    }

    /// Ids in use.
    pub fn ids(&self) -> Result<HashSet<u64>> {
        Ok(self.list()?.into_iter().map(|(_, r)| r.id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn lifecycle_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.redb");
        {
            let s = MetaStore::open(&path).unwrap();
            let a = s
                .create(Kind::Active, "a", "", labels(&[("x", "1")]))
                .unwrap();
            assert_eq!(a.id, 1);
            assert!(s
                .create(Kind::Active, "a", "", BTreeMap::new())
                .unwrap_err()
                .is_already_exists());
            // parent must be committed
            assert!(matches!(
                s.create(Kind::Active, "b", "a", BTreeMap::new()),
                Err(Error::InvalidArgument(_))
            ));
            assert!(s
                .create(Kind::Active, "b", "nope", BTreeMap::new())
                .unwrap_err()
                .is_not_found());
            let c = s
                .commit("a", "layer1", 10, 2, labels(&[("y", "2")]))
                .unwrap();
            assert_eq!((c.id, c.kind, c.size), (1, Kind::Committed, 10));
            assert!(s.get("a").unwrap_err().is_not_found());
            assert!(matches!(
                s.commit("layer1", "z", 0, 0, BTreeMap::new()),
                Err(Error::FailedPrecondition(_))
            ));
            let b = s
                .create(Kind::Active, "b", "layer1", BTreeMap::new())
                .unwrap();
            assert_eq!(b.id, 2);
            let v = s
                .create(Kind::View, "v", "layer1", BTreeMap::new())
                .unwrap();
            assert!(matches!(
                s.commit("v", "w", 0, 0, BTreeMap::new()),
                Err(Error::FailedPrecondition(_))
            ));
            assert_eq!(v.id, 3);
            assert_eq!(
                s.ancestors("b")
                    .unwrap()
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
                ["layer1"]
            );
            assert!(matches!(
                s.remove("layer1"),
                Err(Error::FailedPrecondition(_))
            ));
            s.remove("v").unwrap();
        }
        // reopen: state survives
        let s = MetaStore::open(&path).unwrap();
        assert_eq!(s.get("layer1").unwrap().labels, labels(&[("y", "2")]));
        assert_eq!(s.list().unwrap().len(), 2);
        let n = s.create(Kind::Active, "n", "", BTreeMap::new()).unwrap();
        assert_eq!(n.id, 4, "ids are never reused");
        s.remove("b").unwrap();
        s.remove("layer1").unwrap();
        assert_eq!(s.ids().unwrap(), HashSet::from([4]));
    }

    #[test]
    fn label_updates() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(&dir.path().join("m.redb")).unwrap();
        s.create(Kind::Active, "a", "", labels(&[("a", "1"), ("b", "2")]))
            .unwrap();
        let r = s
            .update_labels(
                "a",
                LabelUpdate::Keys(
                    labels(&[("a", "9"), ("c", "3")]),
                    vec!["a".into(), "b".into(), "c".into()],
                ),
            )
            .unwrap();
        assert_eq!(r.labels, labels(&[("a", "9"), ("c", "3")]));
        let r = s
            .update_labels("a", LabelUpdate::ReplaceAll(labels(&[("z", "0")])))
            .unwrap();
        assert_eq!(r.labels, labels(&[("z", "0")]));
        assert!(s
            .update_labels("nope", LabelUpdate::ReplaceAll(BTreeMap::new()))
            .unwrap_err()
            .is_not_found());
    }
}
