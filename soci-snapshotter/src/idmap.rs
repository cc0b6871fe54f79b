//! Id-mapped container rootfs (spec §5.3.7): the uid/gid mapping labels of a rootfs `Prepare`,
//! and ownership-remapped copies of local layers.
//!
//! containerd (user namespaces) asks for an id-mapped rootfs with two labels on the rootfs
//! `Prepare`. Two value formats exist and both are accepted:
//!
//! * `ctrID:hostID:length`, several separated by commas — what containerd 1.6's
//!   `WithRemapperLabels` (`ctr run --uidmap … --remap-labels`) and containerd 2.x write;
//! * a JSON list of OCI `LinuxIDMapping` objects `[{"containerID":0,"hostID":12345,"size":65536}]`
//!   (a single object is accepted too) — what containerd 1.7's multi-range labels write.
//!
//! The mapping math itself (ranges, overflow id 65534) is [`soci_fs::IdMap`], which lazy layers
//! use to report owners.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use soci_fs::{IdMap, IdRange};
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::metastore::{Kind, Record};
use crate::snapshotter::{label, Snapshotter};

/// Label with the uid mapping of an id-mapped rootfs.
pub const UID_MAPPING: &str = "containerd.io/snapshot/uidmapping";
/// Label with the gid mapping of an id-mapped rootfs.
pub const GID_MAPPING: &str = "containerd.io/snapshot/gidmapping";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LinuxIdMapping {
    #[serde(rename = "containerID")]
    container_id: u32,
    #[serde(rename = "hostID")]
    host_id: u32,
    size: u32,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum JsonMappings {
    List(Vec<LinuxIdMapping>),
    One(LinuxIdMapping),
}

/// Parses one label value (either format, see the module docs).
fn parse_ranges(label: &str, value: &str) -> Result<Vec<IdRange>> {
    let bad = |why: String| Error::InvalidArgument(format!("invalid {label} {value:?}: {why}"));
    let v = value.trim();
    if v.starts_with('[') || v.starts_with('{') {
        let list = match serde_json::from_str::<JsonMappings>(v).map_err(|e| bad(e.to_string()))? {
            JsonMappings::List(l) => l,
            JsonMappings::One(m) => vec![m],
        };
        return Ok(list
            .into_iter()
            .map(|m| IdRange::new(m.container_id, m.host_id, m.size))
            .collect());
    }
    v.split(',')
        .map(|part| {
            let f: Vec<&str> = part.trim().split(':').collect();
            let [c, h, s] = f.as_slice() else {
                return Err(bad(format!("{part:?} is not containerID:hostID:length")));
            };
            let num = |x: &str| {
                x.trim()
                    .parse::<u32>()
                    .map_err(|e| bad(format!("{x:?}: {e}")))
            };
            Ok(IdRange::new(num(c)?, num(h)?, num(s)?))
        })
        .collect()
}

/// The id mapping requested by a rootfs `Prepare`'s labels: `None` without mapping labels, an
/// `InvalidArgument` error when only one is present or a value is malformed.
pub fn from_labels(labels: &BTreeMap<String, String>) -> Result<Option<IdMap>> {
    match (labels.get(UID_MAPPING), labels.get(GID_MAPPING)) {
        (None, None) => Ok(None),
        (Some(u), Some(g)) => {
            let uids = parse_ranges(UID_MAPPING, u)?;
            let gids = parse_ranges(GID_MAPPING, g)?;
            IdMap::new(uids, gids)
                .map(Some)
                .map_err(|e| Error::InvalidArgument(format!("invalid id mapping: {e}")))
        }
        _ => Err(Error::InvalidArgument(format!(
            "id-mapped rootfs needs both {UID_MAPPING} and {GID_MAPPING}"
        ))),
    }
}

/// Sets owner (mapped), mode, extended attributes and times of `dst` from `md`/`src`, in the
/// order that keeps them: `chown` drops setuid/setgid bits and `security.capability`, and
/// writing attributes or children changes the times.
fn apply_metadata(src: &Path, dst: &Path, md: &std::fs::Metadata, map: &IdMap) -> Result<()> {
    let symlink = md.file_type().is_symlink();
    std::os::unix::fs::lchown(dst, Some(map.uid(md.uid())), Some(map.gid(md.gid())))
        .map_err(Error::io("failed to chown", dst))?;
    if !symlink {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(Error::io("failed to chmod", dst))?;
    }
    let names = xattr::list(src).map_err(Error::io("failed to list xattrs of", src))?;
    for name in names {
        let Some(value) =
            xattr::get(src, &name).map_err(Error::io("failed to read xattr of", src))?
        else {
            continue;
        };
        if let Err(e) = xattr::set(dst, &name, &value) {
            // Linux refuses user.* attributes on symlinks; nothing else is expected to fail.
            if !symlink {
                return Err(Error::io(
                    "failed to set xattr",
                    dst.join(name.to_string_lossy().as_ref()),
                )(e));
            }
        }
    }
    let atime = TimeSpec::new(md.atime(), md.atime_nsec());
    let mtime = TimeSpec::new(md.mtime(), md.mtime_nsec());
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        dst,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| Error::io("failed to set times of", dst)(std::io::Error::from(e)))?;
    Ok(())
}

/// Copies the tree `src` to `dst` (which must not exist) with every owner mapped through
/// `map`: file contents, modes (with setuid/setgid/sticky), extended attributes (overlay
/// opaque markers included), times, symlinks, devices and fifos (overlay whiteouts are 0:0
/// character devices), and hard links within the tree. Symlinks are copied, never followed.
pub fn copy_remapped(src: &Path, dst: &Path, map: &IdMap) -> Result<()> {
    let mut links: HashMap<(u64, u64), std::path::PathBuf> = HashMap::new();
    // Directories get their metadata after their children (which change their mtime).
    let mut dirs = Vec::new();
    let mut stack = vec![(src.to_path_buf(), dst.to_path_buf())];
    while let Some((s, d)) = stack.pop() {
        let md = std::fs::symlink_metadata(&s).map_err(Error::io("failed to stat", &s))?;
        let ft = md.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&d).map_err(Error::io("failed to create", &d))?;
            let rd = std::fs::read_dir(&s).map_err(Error::io("failed to read", &s))?;
            for e in rd {
                let e = e.map_err(Error::io("failed to read", &s))?;
                stack.push((e.path(), d.join(e.file_name())));
            }
            dirs.push((s, d, md));
            continue;
        }
        if md.nlink() > 1 {
            if let Some(first) = links.get(&(md.dev(), md.ino())) {
                std::fs::hard_link(first, &d).map_err(Error::io("failed to link", &d))?;
                continue;
            }
            links.insert((md.dev(), md.ino()), d.clone());
        }
        if ft.is_file() {
            std::fs::copy(&s, &d).map_err(Error::io("failed to copy", &s))?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&s).map_err(Error::io("failed to read link", &s))?;
            std::os::unix::fs::symlink(&target, &d).map_err(Error::io("failed to create", &d))?;
        } else {
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else if ft.is_fifo() {
                SFlag::S_IFIFO
            } else {
                SFlag::S_IFSOCK
            };
            nix::sys::stat::mknod(
                &d,
                kind,
                Mode::from_bits_truncate(md.mode() & 0o777),
                md.rdev(),
            )
            .map_err(|e| Error::io("failed to create", &d)(std::io::Error::from(e)))?;
        }
        apply_metadata(&s, &d, &md, map)?;
    }
    for (s, d, md) in dirs.iter().rev() {
        apply_metadata(s, d, md, map)?;
    }
    Ok(())
}

/// Maps the owner of `path` itself (the upper directory of an id-mapped rootfs), keeping its
/// mode.
pub fn remap_owner(path: &Path, map: &IdMap) -> Result<()> {
    let md = std::fs::symlink_metadata(path).map_err(Error::io("failed to stat", path))?;
    std::os::unix::fs::lchown(path, Some(map.uid(md.uid())), Some(map.gid(md.gid())))
        .map_err(Error::io("failed to chown", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(Error::io("failed to chmod", path))
}

/// Id-mapped rootfs handling of the snapshotter: `snapshots/<parentId>_<activeId>/fs` holds
/// the id-mapped view of parent `parentId` for active snapshot `activeId` (spec §5.2): a second
/// FUSE mount of a lazy layer whose owners are mapped, or an ownership-remapped copy of a local
/// layer. The overlay's lowerdirs then point at these views.
impl Snapshotter {
    /// `snapshots/<parent_id>_<id>/fs`.
    pub(crate) fn idmap_dir(&self, parent_id: u64, id: u64) -> PathBuf {
        self.root
            .join("snapshots")
            .join(format!("{parent_id}_{id}"))
            .join("fs")
    }

    /// Whether `rec` is an id-mapped container rootfs (its lowerdirs are the mapped views).
    pub(crate) fn is_idmapped(&self, rec: &Record) -> bool {
        rec.kind == Kind::Active
            && !rec.labels.contains_key(label::TARGET_SNAPSHOT_REF)
            && rec.labels.contains_key(UID_MAPPING)
            && rec.labels.contains_key(GID_MAPPING)
    }

    /// Creates the mapped views of every parent of the new rootfs `key` and maps the owner of
    /// its upper directory (spec §5.3.7). Views that already exist are kept.
    pub(crate) fn setup_idmap(&self, key: &str, rec: &Record, map: &IdMap) -> Result<()> {
        self.idmap_parents(key, rec, map)?;
        remap_owner(&self.fs_dir(rec.id), map)?;
        info!(key, "id-mapped rootfs prepared");
        Ok(())
    }

    fn idmap_parents(&self, key: &str, rec: &Record, map: &IdMap) -> Result<()> {
        if rec.parent.is_empty() {
            return Ok(());
        }
        for (pkey, p) in self.store.ancestors(key)? {
            let view = self.idmap_dir(p.id, rec.id);
            let Some(dir) = view.parent() else {
                continue;
            };
            std::fs::create_dir_all(dir).map_err(Error::io("failed to create", dir))?;
            let source = self.fs_dir(p.id);
            if p.labels.contains_key(label::REMOTE) {
                if crate::mount::is_mount_point(&view) {
                    continue;
                }
                let Some(remote) = &self.remote else {
                    return Err(Error::Unavailable {
                        id: p.id.to_string(),
                    });
                };
                match std::fs::create_dir(&view) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io("failed to create", &view)(e)),
                }
                remote
                    .mount_idmapped(&source, &view, map)
                    .map_err(Error::Remote)?;
                debug!(key, parent = %pkey, "mount-point" = %view.display(), "id-mapped lazy layer mounted");
            } else if !view.exists() {
                // Copy next to the view, then rename: a view that exists is complete.
                let tmp = dir.join("new-fs");
                if tmp.exists() {
                    std::fs::remove_dir_all(&tmp).map_err(Error::io("failed to remove", &tmp))?;
                }
                copy_remapped(&source, &tmp, map)?;
                std::fs::rename(&tmp, &view).map_err(Error::io("failed to rename", &tmp))?;
                debug!(key, parent = %pkey, "mount-point" = %view.display(), "id-mapped copy of local layer created");
            }
        }
        Ok(())
    }

    /// Unmounts and deletes the mapped views of active snapshot `id` (`*_<id>` directories).
    pub(crate) fn remove_idmap_dirs(&self, id: u64) {
        let snaps = self.root.join("snapshots");
        let suffix = format!("_{id}");
        let Ok(rd) = std::fs::read_dir(&snaps) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_suffix(&suffix) else {
                continue;
            };
            if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let view = e.path().join("fs");
            // Also when the mount is gone already: the backend forgets the view.
            if let Some(remote) = &self.remote {
                if let Err(err) = remote.unmount(&view) {
                    warn!(path = %view.display(), error = %err, "failed to unmount id-mapped layer");
                }
            }
            if crate::mount::is_mount_point(&view) {
                let _ = crate::mount::force_unmount(&view);
            }
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                warn!(path = %e.path().display(), error = %err, "failed to remove id-mapped view");
            }
        }
    }

    /// Restart: re-mounts the id-mapped views of lazy layers for every id-mapped rootfs (and
    /// finishes copies a crash interrupted). Like lazy layers, a failure aborts startup unless
    /// `allow_invalid_mounts_on_restart`.
    pub(crate) fn restore_idmaps(&self) -> Result<()> {
        for (name, rec) in self.store.list()? {
            if !self.is_idmapped(&rec) {
                continue;
            }
            let res = from_labels(&rec.labels).and_then(|map| match map {
                Some(map) => self.idmap_parents(&name, &rec, &map),
                None => Ok(()),
            });
            match res {
                Ok(()) => info!(key = %name, "restored id-mapped rootfs"),
                Err(e) if self.opts.allow_invalid_mounts_on_restart => {
                    warn!(error = %crate::error::chain(&e), "failed to restore id-mapped rootfs {name}; remove this snapshot manually");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(u: &str, g: &str) -> BTreeMap<String, String> {
        [
            (UID_MAPPING.to_string(), u.to_string()),
            (GID_MAPPING.to_string(), g.to_string()),
        ]
        .into()
    }

    #[test]
    fn parses_both_label_formats() {
        assert!(from_labels(&BTreeMap::new()).expect("no labels").is_none());
        // containerd 1.6 `--remap-labels`.
        let m = from_labels(&labels("0:12345:65536", "0:12345:65536"))
            .expect("valid")
            .expect("mapping");
        assert_eq!(m.uids(), [IdRange::new(0, 12345, 65536)]);
        assert_eq!((m.uid(0), m.uid(1000), m.gid(1000)), (12345, 13345, 13345));
        // Several ranges, comma-separated (containerd 2.x), spaces tolerated.
        let two = [
            IdRange::new(0, 12345, 1000),
            IdRange::new(1000, 22222, 64536),
        ];
        let m = from_labels(&labels("0:12345:1000, 1000:22222:64536", "0:30000:65536"))
            .expect("valid")
            .expect("mapping");
        assert_eq!(m.uids(), two);
        assert_eq!((m.uid(0), m.uid(1000), m.gid(1000)), (12345, 22222, 31000));
        // JSON LinuxIDMapping lists and a single object.
        let m = from_labels(&labels(
            r#"[{"containerID":0,"hostID":12345,"size":1000},{"containerID":1000,"hostID":22222,"size":64536}]"#,
            r#"{"containerID":0,"hostID":12345,"size":65536}"#,
        ))
        .expect("valid")
        .expect("mapping");
        assert_eq!(m.uids(), two);
        assert_eq!(m.gids(), [IdRange::new(0, 12345, 65536)]);
        assert_eq!(m.uid(1000), 22222);
    }

    #[test]
    fn rejects_bad_labels() {
        let only_uid: BTreeMap<String, String> =
            [(UID_MAPPING.to_string(), "0:1:2".to_string())].into();
        for l in [
            only_uid,
            labels("0:1", "0:1:2"),
            labels("0:1:2:3", "0:1:2"),
            labels("a:1:2", "0:1:2"),
            labels("0:1:-2", "0:1:2"),
            labels("", "0:1:2"),
            labels("0:1:2,", "0:1:2"),
            labels("0:1:0", "0:1:2"),
            labels("0:100:10,5:200:10", "0:1:2"),
            labels(r#"[{"containerID":0,"hostID":1}]"#, "0:1:2"),
            labels(r#"[{"containerID":0,"hostID":1,"size":2,"x":1}]"#, "0:1:2"),
            labels("[]", "0:1:2"),
        ] {
            let e = from_labels(&l).expect_err(&format!("{l:?} must be rejected"));
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        }
    }

    #[test]
    fn copies_a_layer_with_mapped_owners() {
        if !nix::unistd::Uid::effective().is_root() {
            println!("SKIPPED: copying with other owners needs root (chown, mknod)");
            return;
        }
        let d = tempfile::tempdir().expect("tempdir");
        let src = d.path().join("src");
        let dst = d.path().join("dst");
        let map = IdMap::new(
            vec![
                IdRange::new(0, 12345, 1000),
                IdRange::new(1000, 22222, 1000),
            ],
            vec![IdRange::new(0, 30000, 65536)],
        )
        .expect("map");
        std::fs::create_dir_all(src.join("etc/opaque")).expect("mkdir");
        std::fs::write(src.join("etc/passwd"), b"root:x:0:0\n").expect("write");
        std::fs::write(src.join("owned"), b"by 1000\n").expect("write");
        std::os::unix::fs::chown(src.join("owned"), Some(1000), Some(1000)).expect("chown");
        std::fs::write(src.join("nobody"), b"").expect("write");
        std::os::unix::fs::chown(src.join("nobody"), Some(5000), Some(70000)).expect("chown");
        std::fs::write(src.join("suid"), b"#!/bin/sh\n").expect("write");
        std::fs::set_permissions(src.join("suid"), std::fs::Permissions::from_mode(0o4755))
            .expect("chmod");
        std::fs::hard_link(src.join("owned"), src.join("owned.link")).expect("link");
        std::os::unix::fs::symlink("../etc/passwd", src.join("etc/link")).expect("symlink");
        std::os::unix::fs::lchown(src.join("etc/link"), Some(1000), Some(0)).expect("lchown");
        nix::sys::stat::mknod(&src.join("wh"), SFlag::S_IFCHR, Mode::empty(), 0).expect("mknod");
        nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o600)).expect("fifo");
        xattr::set(src.join("etc/opaque"), "trusted.overlay.opaque", b"y").expect("xattr");
        xattr::set(src.join("owned"), "user.note", b"kept").expect("xattr");
        let old = TimeSpec::new(1_000_000_000, 5);
        for p in ["owned", "etc"] {
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &src.join(p),
                &old,
                &old,
                UtimensatFlags::NoFollowSymlink,
            )
            .expect("utimensat");
        }

        copy_remapped(&src, &dst, &map).expect("copy");

        let md = |p: &str| std::fs::symlink_metadata(dst.join(p)).expect("lstat");
        let owner = |p: &str| (md(p).uid(), md(p).gid());
        assert_eq!(owner(""), (12345, 30000));
        assert_eq!(owner("etc/passwd"), (12345, 30000));
        assert_eq!(owner("owned"), (22222, 31000));
        assert_eq!(
            owner("nobody"),
            (soci_fs::OVERFLOW_ID, soci_fs::OVERFLOW_ID)
        );
        assert_eq!(owner("etc/link"), (22222, 30000));
        assert_eq!(owner("wh"), (12345, 30000));
        assert_eq!(md("suid").mode() & 0o7777, 0o4755);
        assert!(md("wh").file_type().is_char_device() && md("wh").rdev() == 0);
        assert!(md("fifo").file_type().is_fifo());
        assert_eq!(md("owned").ino(), md("owned.link").ino());
        assert_eq!(
            std::fs::read_link(dst.join("etc/link")).expect("readlink"),
            Path::new("../etc/passwd")
        );
        assert_eq!(
            std::fs::read(dst.join("owned")).expect("read"),
            b"by 1000\n"
        );
        assert_eq!(
            xattr::get(dst.join("etc/opaque"), "trusted.overlay.opaque").expect("xattr"),
            Some(b"y".to_vec())
        );
        assert_eq!(
            xattr::get(dst.join("owned"), "user.note").expect("xattr"),
            Some(b"kept".to_vec())
        );
        assert_eq!(
            (md("owned").mtime(), md("owned").mtime_nsec()),
            (1_000_000_000, 5)
        );
        assert_eq!(md("etc").mtime(), 1_000_000_000, "directory times set last");
        // The source is untouched.
        let s = std::fs::symlink_metadata(src.join("owned")).expect("lstat");
        assert_eq!((s.uid(), s.gid()), (1000, 1000));

        remap_owner(&src, &map).expect("remap");
        let s = std::fs::symlink_metadata(&src).expect("lstat");
        assert_eq!((s.uid(), s.gid()), (12345, 30000));
        assert!(
            copy_remapped(&src, &dst, &map).is_err(),
            "dst must not exist"
        );
    }
}
