//! The overlay snapshotter with remote layers (spec §5.3): containerd's overlayfs semantics for
//! ordinary snapshots, plus the `Prepare` decision tree that mounts layers lazily.
//!
//! All methods are synchronous (filesystem + database work); the gRPC adapter runs them on
//! blocking threads. Directory layout under `<root>/snapshotter`: `snapshots/<id>/fs` and
//! `snapshots/<id>/work`, metadata in `metadata.redb`.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_client::types::Mount;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::metastore::{Kind, LabelUpdate, MetaStore, Record};
use crate::remote::{RemoteError, RemoteLayers};

/// Label keys (spec §5.3.1, §5.3.2).
pub mod label {
    /// Name under which an unpacked layer must be committed (chain id).
    pub const TARGET_SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";
    /// Image reference.
    pub const CRI_IMAGE_REF: &str = "containerd.io/snapshot/cri.image-ref";
    /// Platform manifest digest.
    pub const CRI_MANIFEST_DIGEST: &str = "containerd.io/snapshot/cri.manifest-digest";
    /// Layer blob digest.
    pub const CRI_LAYER_DIGEST: &str = "containerd.io/snapshot/cri.layer-digest";
    /// Comma-separated layer digests of the image.
    pub const CRI_IMAGE_LAYERS: &str = "containerd.io/snapshot/cri.image-layers";
    /// Layer size.
    pub const SOCI_SIZE: &str = "containerd.io/snapshot/remote/soci.size";
    /// Sizes matching `cri.image-layers`.
    pub const IMAGE_LAYERS_SIZE: &str = "containerd.io/snapshot/remote/image.layers.size";
    /// Explicit SOCI index digest.
    pub const SOCI_INDEX_DIGEST: &str = "containerd.io/snapshot/remote/soci.index.digest";
    /// Namespace of the request (stored for restart).
    pub const REMOTE_NAMESPACE: &str = "containerd.io/snapshot/remote/namespace";
    /// Marks a lazily loaded (FUSE) layer.
    pub const REMOTE: &str = "containerd.io/snapshot/remote";
    /// Value of [`REMOTE`].
    pub const REMOTE_VALUE: &str = "remote snapshot";
    /// Layer prepared by SOCI itself.
    pub const HAS_SOCI_INDEX_DIGEST: &str = "containerd.io/snapshot/remote/has.soci.index.digest";
}

/// Options of the snapshotter.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `[snapshotter].min_layer_size`.
    pub min_layer_size: i64,
    /// `[snapshotter].allow_invalid_mounts_on_restart`.
    pub allow_invalid_mounts_on_restart: bool,
    /// Append `userxattr` to overlay mounts.
    pub userxattr: bool,
    /// `[pull_modes.parallel_pull_unpack]`: when layers are pulled and unpacked in parallel.
    pub parallel: ParallelMode,
}

/// When the parallel pull/unpack path is taken (spec §5.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ParallelMode {
    /// Never.
    #[default]
    Off,
    /// For every layer (`enable = true`): no remote attempt.
    Primary,
    /// For images without a SOCI index (`experimental_parallel_pull_as_fallback = true`).
    Fallback,
}

impl ParallelMode {
    /// From the config: `enable` wins over the fallback key.
    pub fn from_config(c: &crate::config::Config) -> ParallelMode {
        let p = &c.pull_modes.parallel_pull_unpack;
        if p.enable {
            ParallelMode::Primary
        } else if p.experimental_parallel_pull_as_fallback {
            ParallelMode::Fallback
        } else {
            ParallelMode::Off
        }
    }
}

/// Snapshot info as returned by `Stat`/`List`.
#[derive(Debug, Clone)]
pub struct Info {
    /// Key.
    pub name: String,
    /// The record.
    pub record: Record,
}

impl crate::filters::Fields for Info {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "name" => Some(self.name.clone()),
            "parent" => Some(self.record.parent.clone()),
            "kind" => Some(self.record.kind.as_str().to_string()),
            "labels" => self.record.labels.get(&path[1..].join(".")).cloned(),
            _ => None,
        }
    }
}

/// The snapshotter.
#[derive(Debug)]
pub struct Snapshotter {
    pub(crate) root: PathBuf,
    pub(crate) store: MetaStore,
    pub(crate) remote: Option<Arc<dyn RemoteLayers>>,
    pub(crate) opts: Options,
    /// Held while a snapshot directory is being created (temp dir → metadata → rename) and while
    /// `Cleanup` scans, so `Cleanup` never mistakes an in-flight `new-*` directory for an orphan.
    dirs: std::sync::Mutex<()>,
}

impl Snapshotter {
    /// Opens the snapshotter at `root` (`<daemon root>/snapshotter`).
    pub fn open(
        root: &Path,
        remote: Option<Arc<dyn RemoteLayers>>,
        opts: Options,
    ) -> Result<Snapshotter> {
        let snaps = root.join("snapshots");
        std::fs::create_dir_all(&snaps).map_err(Error::io("failed to create", &snaps))?;
        let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700));
        let store = MetaStore::open(&root.join("metadata.redb"))?;
        Ok(Snapshotter {
            root: root.to_path_buf(),
            store,
            remote,
            opts,
            dirs: std::sync::Mutex::new(()),
        })
    }

    /// The metadata store (read access for the gRPC adapter and tests).
    pub fn store(&self) -> &MetaStore {
        &self.store
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    /// The `fs` directory of snapshot id.
    pub fn fs_dir(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Record> {
        // `cleanup` removes every directory without a record, so the directory is created and
        // renamed to its id under the same lock (containerd calls Cleanup while other Prepares run).
        let _guard = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = self
            .root
            .join("snapshots")
            .join(format!("new-{}", unique()));
        let fs = tmp.join("fs");
        std::fs::create_dir_all(&fs).map_err(Error::io("failed to create", &fs))?;
        std::fs::set_permissions(&fs, std::fs::Permissions::from_mode(0o755))
            .map_err(Error::io("failed to chmod", &fs))?;
        if kind == Kind::Active {
            let work = tmp.join("work");
            std::fs::create_dir(&work).map_err(Error::io("failed to create", &work))?;
            std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o711))
                .map_err(Error::io("failed to chmod", &work))?;
        }
        let rec = match self.store.create(kind, key, parent, labels) {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        if !parent.is_empty() {
            if let Ok(p) = self.store.get(parent) {
                if let Ok(md) = std::fs::metadata(self.fs_dir(p.id)) {
                    let _ = std::os::unix::fs::chown(&fs, Some(md.uid()), Some(md.gid()));
                }
            }
        }
        let dst = self.dir(rec.id);
        if let Err(e) = std::fs::rename(&tmp, &dst) {
            let _ = self.store.remove(key);
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(Error::io("failed to rename", dst)(e));
        }
        Ok(rec)
    }

    /// `Prepare` (spec §5.3.3). `namespace` is the containerd namespace of the request.
    pub fn prepare(
        &self,
        namespace: Option<&str>,
        key: &str,
        parent: &str,
        mut labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        debug!(key, parent, "preparing snapshot");
        let target = labels.get(label::TARGET_SNAPSHOT_REF).cloned();
        if target.is_some() {
            if let Some(ns) = namespace {
                labels.insert(label::REMOTE_NAMESPACE.into(), ns.to_string());
            }
        }
        if target.is_some() && namespace.is_none() {
            return Err(Error::FailedPrecondition(
                "context has no namespace attached".into(),
            ));
        }
        let idmap = match target {
            None => crate::idmap::from_labels(&labels)?,
            Some(_) => None,
        };
        let rec = self.create(Kind::Active, key, parent, labels.clone())?;
        let Some(target) = target else {
            if let Some(map) = idmap {
                if let Err(e) = self.setup_idmap(key, &rec, &map) {
                    self.discard_active(key, rec.id);
                    return Err(e);
                }
            }
            return self.mounts_of(key, &rec);
        };
        let Some(remote) = self.remote.clone() else {
            // No remote support configured: containerd unpacks the layer itself.
            return self.mounts_of(key, &rec);
        };
        let fs = self.fs_dir(rec.id);
        let layer_digest = labels
            .get(label::CRI_LAYER_DIGEST)
            .cloned()
            .unwrap_or_default();
        let mut defer = false;
        let parallel_primary = self.opts.parallel == ParallelMode::Primary;
        let skip_remote = self.opts.min_layer_size > 0
            && labels
                .get(label::SOCI_SIZE)
                .and_then(|s| s.parse::<i64>().ok())
                .is_some_and(|s| s < self.opts.min_layer_size);
        if parallel_primary {
            debug!(
                key,
                "parallel pull/unpack is the primary mode; skipping remote snapshot preparation"
            );
        } else if skip_remote {
            info!(
                key,
                "layer size less than runtime min_layer_size, skipping remote snapshot preparation"
            );
        } else {
            info!(
                key,
                "preparing filesystem mount at mountpoint={}",
                fs.display()
            );
            match remote.mount(&fs, &labels) {
                Ok(extra) => {
                    let mut l = labels.clone();
                    l.extend(extra);
                    l.insert(label::REMOTE.into(), label::REMOTE_VALUE.into());
                    l.insert(label::HAS_SOCI_INDEX_DIGEST.into(), "true".into());
                    return match self.store.commit(key, &target, 0, 0, l) {
                        Ok(_) => {
                            info!(
                                key,
                                "remote-snapshot-prepared" = "true",
                                "remote snapshot successfully prepared."
                            );
                            Err(Error::already_exists(format!("target snapshot {target:?}")))
                        }
                        Err(e) if e.is_already_exists() => {
                            // Another namespace committed the same chain first: containerd will
                            // find that one; drop ours (the Go version rolls the transaction back).
                            let _ = remote.unmount(&fs);
                            self.discard_active(key, rec.id);
                            Err(Error::already_exists(format!("target snapshot {target:?}")))
                        }
                        Err(e) => {
                            warn!(key, error = %crate::error::chain(&e), "failed to internally commit remote snapshot");
                            let _ = remote.unmount(&fs);
                            self.discard_active(key, rec.id);
                            Err(e)
                        }
                    };
                }
                Err(e) => {
                    warn!(key, "remote-snapshot-prepared" = "false", error = %e, "failed to prepare remote snapshot");
                    match e {
                        RemoteError::NoZtoc { .. } => {}
                        RemoteError::NoIndex { .. } => defer = true,
                        _ => crate::metrics::inc_global("fuse_mount_failure_count"),
                    }
                }
            }
        }
        let mounts = self.mounts_of(key, &rec)?;
        let parallel = parallel_primary || (defer && self.opts.parallel == ParallelMode::Fallback);
        if defer {
            if !parallel {
                warn!(
                    key,
                    "defer-snapshot-runtime" = "true",
                    "no valid SOCI index found; deferring to container runtime"
                );
                return Ok(mounts);
            }
            info!(key, layerDigest = %layer_digest, "no SOCI index found; falling back to parallel pull/unpack");
        }
        if parallel {
            info!(key, layerDigest = %layer_digest, "preparing snapshot with parallel pull/unpack");
        } else {
            info!(key, layerDigest = %layer_digest, "preparing snapshot as local snapshot");
        }
        info!(
            key,
            "preparing local filesystem at mountpoint={}",
            fs.display()
        );
        let unpacked = if parallel {
            remote.unpack_parallel(&fs, &labels)
        } else {
            remote.unpack_local(&fs, &labels)
        };
        let unpacked = match unpacked {
            Err(e) if parallel => {
                // The parallel path has no runtime fallback: the error goes back to the client
                // and no partial snapshot is left behind.
                warn!(key, layerDigest = %layer_digest, error = %e, "failed to prepare snapshot with parallel pull/unpack");
                self.discard_active(key, rec.id);
                return Err(Error::Remote(e));
            }
            other => other,
        };
        match unpacked {
            Ok(()) => {
                let mut l = labels.clone();
                l.insert(label::HAS_SOCI_INDEX_DIGEST.into(), "true".into());
                let (size, inodes) = disk_usage(&fs);
                match self.store.commit(key, &target, size, inodes, l) {
                    Ok(_) => {
                        info!(
                            key,
                            "local-snapshot-prepared" = "true",
                            "local snapshot successfully prepared"
                        );
                        Err(Error::already_exists(format!("target snapshot {target:?}")))
                    }
                    Err(e) if e.is_already_exists() => {
                        self.discard_active(key, rec.id);
                        Err(Error::already_exists(format!("target snapshot {target:?}")))
                    }
                    Err(e) => {
                        warn!(key, error = %crate::error::chain(&e), "failed to internally commit local snapshot");
                        self.discard_active(key, rec.id);
                        Err(e)
                    }
                }
            }
            Err(e) => {
                warn!(key, "defer-snapshot-runtime" = "true", error = %e, "failed to prepare local snapshot; deferring to container runtime");
                crate::metrics::inc_global("local_mount_failure_count");
                // Leave an empty directory for containerd's own unpack.
                clear_dir(&fs);
                Ok(mounts)
            }
        }
    }

    /// `View`.
    pub fn view(
        &self,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        let rec = self.create(Kind::View, key, parent, labels)?;
        self.mounts_of(key, &rec)
    }

    /// `Mounts`.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let rec = self.store.get(key)?;
        self.mounts_of(key, &rec)
    }

    fn check_availability(&self, ancestors: &[(String, Record)]) -> Result<()> {
        for (key, r) in ancestors {
            let mp = self.fs_dir(r.id);
            if r.labels.contains_key(label::REMOTE) {
                debug!(key = %key, "mount-point" = %mp.display(), "checking mount point");
                let res = match &self.remote {
                    Some(remote) => remote.check(&mp, &r.labels),
                    None => Err(RemoteError::Unavailable(
                        "remote layers are not enabled".into(),
                    )),
                };
                if let Err(e) = res {
                    warn!(key = %key, "mount-point" = %mp.display(), error = %e, "layer is unavailable");
                    return Err(Error::Unavailable {
                        id: r.id.to_string(),
                    });
                }
            } else {
                debug!(key = %key, "mount-point" = %mp.display(), "layer is normal snapshot(overlayfs)");
            }
        }
        Ok(())
    }

    fn mounts_of(&self, key: &str, rec: &Record) -> Result<Vec<Mount>> {
        let ancestors = if rec.parent.is_empty() {
            Vec::new()
        } else {
            self.store.ancestors(key)?
        };
        if !ancestors.is_empty() {
            debug!(key, "checking layer availability");
            self.check_availability(&ancestors)?;
        }
        Ok(self.build_mounts(rec, &ancestors))
    }

    fn build_mounts(&self, rec: &Record, ancestors: &[(String, Record)]) -> Vec<Mount> {
        let s = |p: PathBuf| p.to_string_lossy().into_owned();
        if ancestors.is_empty() {
            let ro = if rec.kind == Kind::Active { "rw" } else { "ro" };
            return vec![Mount {
                r#type: "bind".into(),
                source: s(self.fs_dir(rec.id)),
                target: String::new(),
                options: vec![ro.into(), "rbind".into()],
            }];
        }
        if rec.kind != Kind::Active && ancestors.len() == 1 {
            return vec![Mount {
                r#type: "bind".into(),
                source: s(self.fs_dir(ancestors[0].1.id)),
                target: String::new(),
                options: vec!["ro".into(), "rbind".into()],
            }];
        }
        let mut options = Vec::new();
        if rec.kind == Kind::Active {
            options.push(format!(
                "workdir={}",
                self.dir(rec.id).join("work").display()
            ));
            options.push(format!("upperdir={}", self.fs_dir(rec.id).display()));
        }
        let idmapped = self.is_idmapped(rec);
        let lower: Vec<String> = ancestors
            .iter()
            .map(|(_, r)| {
                s(if idmapped {
                    self.idmap_dir(r.id, rec.id)
                } else {
                    self.fs_dir(r.id)
                })
            })
            .collect();
        options.push(format!("lowerdir={}", lower.join(":")));
        if self.opts.userxattr {
            options.push("userxattr".into());
        }
        vec![Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options,
        }]
    }

    /// `Commit`: scans the disk usage of `fs` and commits.
    pub fn commit(&self, name: &str, key: &str, labels: BTreeMap<String, String>) -> Result<()> {
        let rec = self.store.get(key)?;
        let (size, inodes) = disk_usage(&self.fs_dir(rec.id));
        self.store.commit(key, name, size, inodes, labels)?;
        Ok(())
    }

    /// `Remove`: metadata first, then (best effort) the FUSE mount and the directory; `Cleanup`
    /// catches whatever is left.
    pub fn remove(&self, key: &str) -> Result<()> {
        let rec = self.store.remove(key)?;
        let fs = self.fs_dir(rec.id);
        if let (Some(remote), Some(manifest)) =
            (&self.remote, rec.labels.get(label::CRI_MANIFEST_DIGEST))
        {
            if self.opts.parallel != ParallelMode::Off {
                remote.cancel_parallel(manifest);
            }
        }
        if rec.labels.contains_key(label::REMOTE) {
            if let Some(remote) = &self.remote {
                if let Err(e) = remote.unmount(&fs) {
                    warn!(key, error = %e, "failed to unmount remote snapshot");
                }
            }
        }
        self.remove_dir(rec.id);
        Ok(())
    }

    /// Removes an active snapshot created by this `Prepare` that will not be handed to containerd.
    fn discard_active(&self, key: &str, id: u64) {
        if let Err(e) = self.store.remove(key) {
            warn!(key, error = %crate::error::chain(&e), "failed to discard active snapshot");
            return;
        }
        self.remove_dir(id);
    }

    fn remove_dir(&self, id: u64) {
        self.remove_idmap_dirs(id);
        let dir = self.dir(id);
        let fs = dir.join("fs");
        if crate::mount::is_mount_point(&fs) {
            let _ = crate::mount::force_unmount(&fs);
        }
        let trash = self.root.join("snapshots").join(format!("rm-{id}"));
        let target = if std::fs::rename(&dir, &trash).is_ok() {
            trash
        } else {
            dir
        };
        if let Err(e) = std::fs::remove_dir_all(&target) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(path = %target.display(), error = %e, "failed to remove snapshot directory");
            }
        }
    }

    /// `Stat`.
    pub fn stat(&self, key: &str) -> Result<Info> {
        Ok(Info {
            name: key.to_string(),
            record: self.store.get(key)?,
        })
    }

    /// `Update` (labels only). `fieldpaths` empty ⇒ replace all labels.
    pub fn update(
        &self,
        key: &str,
        labels: BTreeMap<String, String>,
        fieldpaths: &[String],
    ) -> Result<Info> {
        let update = if fieldpaths.is_empty() {
            LabelUpdate::ReplaceAll(labels)
        } else {
            let mut keys = Vec::new();
            let mut replace = false;
            for p in fieldpaths {
                if p == "labels" {
                    replace = true;
                } else if let Some(k) = p.strip_prefix("labels.") {
                    keys.push(k.to_string());
                } else {
                    return Err(Error::InvalidArgument(format!(
                        "cannot update {p:?} field on snapshot {key:?}"
                    )));
                }
            }
            if replace {
                LabelUpdate::ReplaceAll(labels)
            } else {
                LabelUpdate::Keys(labels, keys)
            }
        };
        Ok(Info {
            name: key.to_string(),
            record: self.store.update_labels(key, update)?,
        })
    }

    /// `Usage`: active ⇒ scan `fs`; committed ⇒ stored value.
    pub fn usage(&self, key: &str) -> Result<(i64, i64)> {
        let rec = self.store.get(key)?;
        if rec.kind == Kind::Active {
            Ok(disk_usage(&self.fs_dir(rec.id)))
        } else {
            Ok((rec.size, rec.inodes))
        }
    }

    /// `List` (`Walk`) with containerd filters.
    pub fn list(&self, filters: &[String]) -> Result<Vec<Info>> {
        let parsed = filters
            .iter()
            .map(|f| crate::filters::Filter::parse(f))
            .collect::<Result<Vec<_>>>()?;
        Ok(self
            .store
            .list()?
            .into_iter()
            .map(|(name, record)| Info { name, record })
            .filter(|i| crate::filters::any_match(&parsed, i))
            .collect())
    }

    /// `Cleanup`: removes directories that no snapshot owns (unmounting them first).
    pub fn cleanup(&self) -> Result<()> {
        let _guard = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        let ids = self.store.ids()?;
        let snaps = self.root.join("snapshots");
        let rd = std::fs::read_dir(&snaps).map_err(Error::io("failed to read", &snaps))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.rsplit('_').next().and_then(|s| s.parse::<u64>().ok());
            if id.is_some_and(|id| ids.contains(&id)) {
                continue;
            }
            let fs = e.path().join("fs");
            if crate::mount::is_mount_point(&fs) {
                if let Some(remote) = &self.remote {
                    let _ = remote.unmount(&fs);
                }
                let _ = crate::mount::force_unmount(&fs);
            }
            debug!(path = %e.path().display(), "removing orphan snapshot directory");
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                warn!(path = %e.path().display(), error = %err, "failed to remove orphan directory");
            }
        }
        Ok(())
    }

    /// Restart handling (spec §5.3.6): force-unmount everything under `snapshots/`, then re-mount
    /// every remote snapshot from its stored labels.
    pub fn restore(&self) -> Result<()> {
        for m in crate::mount::mounts_under(&self.root.join("snapshots")) {
            info!(mountpoint = %m.mount_point.display(), "unmounting stale mount");
            if let Err(e) = crate::mount::force_unmount(&m.mount_point) {
                warn!(mountpoint = %m.mount_point.display(), error = %crate::error::chain(&e), "failed to unmount stale mount");
            }
        }
        let Some(remote) = &self.remote else {
            return self.restore_idmaps();
        };
        for (name, rec) in self.store.list()? {
            if !rec.labels.contains_key(label::REMOTE) {
                continue;
            }
            let fs = self.fs_dir(rec.id);
            let _ = std::fs::create_dir_all(&fs);
            if let Err(e) = remote.mount(&fs, &rec.labels) {
                if self.opts.allow_invalid_mounts_on_restart {
                    warn!(error = %e, "failed to restore remote snapshot {name}; remove this snapshot manually");
                } else {
                    return Err(Error::Remote(e));
                }
            } else {
                info!(key = %name, "mount-point" = %fs.display(), "restored remote snapshot");
            }
        }
        self.restore_idmaps()
    }

    /// `Close`: unmount every lazy layer.
    pub fn close(&self) {
        if let Some(remote) = &self.remote {
            for mp in remote.mounted() {
                if let Err(e) = remote.unmount(&mp) {
                    warn!(mountpoint = %mp.display(), error = %e, "failed to unmount");
                }
            }
        }
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        t,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn clear_dir(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let _ = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Disk usage of a tree: (bytes in allocated blocks, inodes), hard links counted once.
pub fn disk_usage(dir: &Path) -> (i64, i64) {
    let mut seen = std::collections::HashSet::new();
    let mut size = 0i64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        size += (md.blocks() * 512) as i64;
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    (size, seen.len() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> (tempfile::TempDir, Snapshotter) {
        let d = tempfile::tempdir().unwrap();
        let s = Snapshotter::open(&d.path().join("snapshotter"), None, Options::default()).unwrap();
        (d, s)
    }

    #[test]
    fn overlay_mount_shapes() {
        let (_d, s) = snap();
        let m = s.prepare(None, "a", "", BTreeMap::new()).unwrap();
        assert_eq!(m[0].r#type, "bind");
        assert_eq!(m[0].options, ["rw", "rbind"]);
        std::fs::write(s.fs_dir(1).join("f"), b"x").unwrap();
        s.commit("l1", "a", BTreeMap::new()).unwrap();
        let (size, inodes) = s.usage("l1").unwrap();
        assert!(size > 0 && inodes == 2, "{size} {inodes}");
        let v = s.view("v", "l1", BTreeMap::new()).unwrap();
        assert_eq!(v[0].r#type, "bind");
        assert_eq!(v[0].options, ["ro", "rbind"]);
        assert!(v[0].source.ends_with("snapshots/1/fs"));
        s.prepare(None, "b", "l1", BTreeMap::new()).unwrap();
        s.commit("l2", "b", BTreeMap::new()).unwrap();
        let m = s.prepare(None, "c", "l2", BTreeMap::new()).unwrap();
        assert_eq!(m[0].r#type, "overlay");
        let o = &m[0].options;
        assert!(
            o[0].starts_with("workdir=") && o[0].ends_with("/4/work"),
            "{o:?}"
        );
        assert!(o[1].starts_with("upperdir=") && o[1].ends_with("/4/fs"));
        assert!(o[2].contains("/3/fs:") && o[2].ends_with("/1/fs"), "{o:?}");
        let v = s.view("v2", "l2", BTreeMap::new()).unwrap();
        assert_eq!(v[0].r#type, "overlay");
        assert_eq!(v[0].options.len(), 1);
    }

    #[test]
    fn remove_and_cleanup() {
        let (_d, s) = snap();
        s.prepare(None, "a", "", BTreeMap::new()).unwrap();
        s.commit("l1", "a", BTreeMap::new()).unwrap();
        s.prepare(None, "b", "l1", BTreeMap::new()).unwrap();
        assert!(matches!(s.remove("l1"), Err(Error::FailedPrecondition(_))));
        s.remove("b").unwrap();
        assert!(!s.fs_dir(2).exists());
        std::fs::create_dir_all(s.root.join("snapshots/99/fs")).unwrap();
        s.cleanup().unwrap();
        assert!(!s.root.join("snapshots/99").exists());
        assert!(s.fs_dir(1).exists());
    }

    #[test]
    fn list_filters_and_update() {
        let (_d, s) = snap();
        let mut l = BTreeMap::new();
        l.insert(
            label::TARGET_SNAPSHOT_REF.to_string(),
            "sha256:c".to_string(),
        );
        // No namespace and no remote: a layer prepare with snapshot.ref must still fail without namespace.
        assert!(matches!(
            s.prepare(None, "x", "", l.clone()),
            Err(Error::FailedPrecondition(_))
        ));
        s.prepare(Some("default"), "y", "", l.clone()).unwrap();
        s.commit("sha256:c", "y", l).unwrap();
        let r = s
            .list(&[r#"labels."containerd.io/snapshot.ref"==sha256:c,parent=="""#.into()])
            .unwrap();
        assert_eq!(
            r.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            ["sha256:c"]
        );
        assert!(s
            .list(&["kind==active".into()])
            .unwrap()
            .iter()
            .all(|i| i.record.kind == Kind::Active));
        let i = s
            .update(
                "sha256:c",
                [("a".to_string(), "b".to_string())].into(),
                &["labels.a".into()],
            )
            .unwrap();
        assert_eq!(i.record.labels.get("a").map(String::as_str), Some("b"));
        assert!(matches!(
            s.update("sha256:c", BTreeMap::new(), &["name".into()]),
            Err(Error::InvalidArgument(_))
        ));
    }

    /// A remote backend recording which path each layer took: `sha256:lazy` mounts, any other
    /// layer has no index; `sha256:bad` fails its parallel unpack after writing part of it.
    #[derive(Debug, Default)]
    struct Paths {
        calls: std::sync::Mutex<Vec<String>>,
    }

    impl Paths {
        fn log(&self, what: &str) {
            self.calls.lock().unwrap().push(what.to_string());
        }
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
    }

    impl RemoteLayers for Paths {
        fn mount(
            &self,
            _: &Path,
            labels: &BTreeMap<String, String>,
        ) -> std::result::Result<BTreeMap<String, String>, RemoteError> {
            self.log("mount");
            match labels.get(label::CRI_LAYER_DIGEST).map(String::as_str) {
                Some("sha256:lazy") => Ok(BTreeMap::new()),
                _ => Err(RemoteError::NoIndex {
                    image: "img".into(),
                    cause: "no soci index found".into(),
                }),
            }
        }
        fn check(
            &self,
            _: &Path,
            _: &BTreeMap<String, String>,
        ) -> std::result::Result<(), RemoteError> {
            Ok(())
        }
        fn unmount(&self, _: &Path) -> std::result::Result<(), RemoteError> {
            Ok(())
        }
        fn unpack_local(
            &self,
            dir: &Path,
            _: &BTreeMap<String, String>,
        ) -> std::result::Result<(), RemoteError> {
            self.log("local");
            std::fs::write(dir.join("local.txt"), b"l").unwrap();
            Ok(())
        }
        fn mounted(&self) -> Vec<PathBuf> {
            Vec::new()
        }
        fn mount_idmapped(
            &self,
            _: &Path,
            _: &Path,
            _: &soci_fs::IdMap,
        ) -> std::result::Result<(), RemoteError> {
            Err(RemoteError::Unavailable("not in this test".into()))
        }
        fn unpack_parallel(
            &self,
            dir: &Path,
            labels: &BTreeMap<String, String>,
        ) -> std::result::Result<(), RemoteError> {
            self.log("parallel");
            std::fs::write(dir.join("parallel.txt"), b"p").unwrap();
            if labels.get(label::CRI_LAYER_DIGEST).map(String::as_str) == Some("sha256:bad") {
                return Err(RemoteError::other(
                    "verifying layer",
                    "uncompressed digests did not match",
                ));
            }
            Ok(())
        }
        fn cancel_parallel(&self, manifest: &str) {
            self.log(&format!("cancel {manifest}"));
        }
    }

    fn layer(chain: &str, digest: &str) -> BTreeMap<String, String> {
        [
            (label::TARGET_SNAPSHOT_REF, chain),
            (label::CRI_IMAGE_REF, "127.0.0.1:5000/x:y"),
            (label::CRI_MANIFEST_DIGEST, "sha256:m"),
            (label::CRI_LAYER_DIGEST, digest),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn with_mode(mode: ParallelMode) -> (tempfile::TempDir, Snapshotter, Arc<Paths>) {
        let d = tempfile::tempdir().unwrap();
        let paths = Arc::new(Paths::default());
        let opts = Options {
            parallel: mode,
            ..Options::default()
        };
        let s =
            Snapshotter::open(&d.path().join("snapshotter"), Some(paths.clone()), opts).unwrap();
        (d, s, paths)
    }

    #[test]
    fn parallel_modes_choose_the_prepare_path() {
        let ns = Some("default");
        // Primary: no remote attempt, even for an indexed layer; committed like a local snapshot.
        let (_d, s, p) = with_mode(ParallelMode::Primary);
        let e = s
            .prepare(ns, "k1", "", layer("sha256:c1", "sha256:lazy"))
            .unwrap_err();
        assert!(e.is_already_exists(), "{e}");
        assert_eq!(p.take(), ["parallel"]);
        let rec = s.store().get("sha256:c1").unwrap();
        assert_eq!(
            rec.labels
                .get(label::HAS_SOCI_INDEX_DIGEST)
                .map(String::as_str),
            Some("true")
        );
        assert!(!rec.labels.contains_key(label::REMOTE));
        assert!(s.fs_dir(rec.id).join("parallel.txt").exists());
        // A failed parallel layer: the error goes back, no snapshot (active or committed) is left.
        let e = s
            .prepare(ns, "k2", "sha256:c1", layer("sha256:c2", "sha256:bad"))
            .unwrap_err();
        assert!(
            e.to_string().contains("uncompressed digests did not match"),
            "{e}"
        );
        assert!(s.store().get("k2").is_err() && s.store().get("sha256:c2").is_err());
        assert_eq!(s.store().ids().unwrap().len(), 1);
        assert_eq!(
            std::fs::read_dir(s.root.join("snapshots")).unwrap().count(),
            1,
            "the failed layer's directory is gone"
        );
        assert_eq!(p.take(), ["parallel"]);
        // Removing a snapshot of the image cancels its parallel job.
        s.remove("sha256:c1").unwrap();
        assert_eq!(p.take(), ["cancel sha256:m"]);

        // Fallback: lazy when indexed, parallel when there is no index.
        let (_d, s, p) = with_mode(ParallelMode::Fallback);
        let e = s
            .prepare(ns, "k1", "", layer("sha256:c1", "sha256:lazy"))
            .unwrap_err();
        assert!(e.is_already_exists());
        assert_eq!(p.take(), ["mount"]);
        let e = s
            .prepare(ns, "k2", "", layer("sha256:c2", "sha256:plain"))
            .unwrap_err();
        assert!(e.is_already_exists());
        assert_eq!(p.take(), ["mount", "parallel"]);

        // Off: no index ⇒ deferred to the runtime (mounts returned, nothing unpacked).
        let (_d, s, p) = with_mode(ParallelMode::Off);
        let m = s
            .prepare(ns, "k1", "", layer("sha256:c1", "sha256:plain"))
            .unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(p.take(), ["mount"]);
        s.remove("k1").unwrap();
        assert!(
            p.take().is_empty(),
            "no parallel job to cancel when the mode is off"
        );
    }
}
