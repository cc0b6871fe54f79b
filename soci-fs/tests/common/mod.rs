//! Shared helpers of the soci-fs integration tests: fixture layers, a FUSE availability check,
//! mount guards that always unmount, and tree snapshots for comparisons.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::Digest;
use soci_fs::{
    BlobSource, FaultInjector, FileSource, FsOptions, LayerFs, Metrics, MountHandle, MountOptions,
    SpanManager, SpanOptions, Tree,
};
use soci_ztoc::{Ztoc, ZtocBuilder};

/// Returns the reason FUSE tests cannot run here, if any.
pub fn fuse_unavailable() -> Option<String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => None,
        Err(e) => Some(format!(
            "cannot open /dev/fuse read-write (need root and FUSE): {e}"
        )),
    }
}

/// `if skip!() { return; }` prints the reason and skips.
#[macro_export]
macro_rules! skip_without_fuse {
    () => {
        if let Some(reason) = common::fuse_unavailable() {
            println!("SKIPPED: {reason}");
            return;
        }
    };
}

/// Deterministic pseudo-random bytes (xorshift), poorly compressible.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A tar layer, its gzip blob and zTOC, written to a temp dir.
pub struct Layer {
    pub dir: tempfile::TempDir,
    pub tar: Vec<u8>,
    pub blob_path: PathBuf,
    pub tar_path: PathBuf,
    pub ztoc: Ztoc,
    pub digest: String,
}

pub const BIG_LEN: usize = 700 * 1024;
pub const SPAN: u64 = 64 * 1024;

fn header(ty: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(ty);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h
}

/// Builds the fixture tar: every entry kind the tree must handle.
pub fn fixture_tar() -> Vec<u8> {
    use tar::EntryType as T;
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>, h: &mut tar::Header, path: &str, data: &[u8]| {
        h.set_size(data.len() as u64);
        b.append_data(h, path, data).expect("append");
    };
    let mut dir = header(T::Directory, 0o755, 0);
    add(&mut b, &mut dir, "etc/", b"");
    let mut f = header(T::Regular, 0o644, 0);
    f.set_uid(1234);
    f.set_gid(5678);
    f.set_mtime(1_234_567_890);
    add(&mut b, &mut f, "etc/hosts", b"127.0.0.1 localhost\n");
    // PAX xattrs and a fractional mtime.
    b.append_pax_extensions([
        ("SCHILY.xattr.user.comment", &b"hello xattr"[..]),
        ("SCHILY.xattr.user.empty", &b""[..]),
        ("mtime", &b"1700000000.5"[..]),
    ])
    .expect("pax");
    let mut f = header(T::Regular, 0o640, 0);
    add(&mut b, &mut f, "etc/with-xattrs", b"xattr file\n");
    // Long names (GNU long name records).
    let long = format!("deep/{}/{}.txt", "d".repeat(120), "f".repeat(150));
    let mut f = header(T::Regular, 0o644, 0);
    add(&mut b, &mut f, &long, b"long name content\n");
    // Hardlinks and symlinks.
    let mut f = header(T::Regular, 0o755, 0);
    add(&mut b, &mut f, "bin/tool", b"#!/bin/sh\necho tool\n");
    for (name, target) in [
        ("bin/tool-link", "bin/tool"),
        ("bin/tool-link2", "./bin/tool"),
    ] {
        let mut h = header(T::Link, 0o755, 0);
        b.append_link(&mut h, name, target).expect("link");
    }
    for (name, target) in [
        ("lib/rel", "../bin/tool"),
        ("lib/abs", "/etc/hosts"),
        ("lib/dangling", "nowhere"),
    ] {
        let mut h = header(T::Symlink, 0o777, 0);
        b.append_link(&mut h, name, target).expect("symlink");
    }
    // Devices and a fifo.
    for (name, ty, maj, min) in [
        ("dev/null", T::Char, 1, 3),
        ("dev/sda", T::Block, 8, 0),
        ("dev/big", T::Char, 300, 70000),
    ] {
        let mut h = header(ty, 0o660, 0);
        h.set_device_major(maj).expect("major");
        h.set_device_minor(min).expect("minor");
        add(&mut b, &mut h, name, b"");
    }
    let mut h = header(T::Fifo, 0o600, 0);
    add(&mut b, &mut h, "run/fifo", b"");
    // Special mode bits.
    let mut f = header(T::Regular, 0o4755, 0);
    add(&mut b, &mut f, "bin/su", b"setuid\n");
    let mut d = header(T::Directory, 0o2775, 0);
    add(&mut b, &mut d, "srv/", b"");
    let mut d = header(T::Directory, 0o1777, 0);
    add(&mut b, &mut d, "tmp/", b"");
    let mut z = header(T::Regular, 0o000, 0);
    add(&mut b, &mut z, "zero-perms", b"");
    // Empty and many-span files.
    let mut f = header(T::Regular, 0o644, 0);
    add(&mut b, &mut f, "empty", b"");
    let big = big_content();
    let mut f = header(T::Regular, 0o644, 0);
    add(&mut b, &mut f, "big.bin", &big);
    // Duplicates: the later entry wins.
    let mut f = header(T::Regular, 0o644, 0);
    add(&mut b, &mut f, "dup.txt", b"first version\n");
    let mut f = header(T::Regular, 0o600, 0);
    add(&mut b, &mut f, "dup.txt", b"second, longer version\n");
    // A directory entry after its (implicitly created) children.
    let mut f = header(T::Regular, 0o644, 0);
    add(&mut b, &mut f, "later/child", b"child\n");
    let mut d = header(T::Directory, 0o700, 0);
    d.set_uid(42);
    d.set_mtime(1_500_000_000);
    add(&mut b, &mut d, "later/", b"");
    // Whiteouts and an opaque directory.
    let mut f = header(T::Regular, 0o644, 0);
    add(&mut b, &mut f, "old/keep", b"keep\n");
    let mut w = header(T::Regular, 0o644, 0);
    add(&mut b, &mut w, "old/.wh.gone", b"");
    let mut w = header(T::Regular, 0o644, 0);
    add(&mut b, &mut w, ".wh.removed", b"");
    let mut d = header(T::Directory, 0o755, 0);
    add(&mut b, &mut d, "opq/", b"");
    let mut w = header(T::Regular, 0o644, 0);
    add(&mut b, &mut w, "opq/.wh..wh..opq", b"");
    let mut f = header(T::Regular, 0o644, 0);
    add(&mut b, &mut f, "opq/kept", b"kept\n");
    // A whiteout next to a real entry of the same name: the real one wins.
    let mut f = header(T::Regular, 0o644, 0);
    add(&mut b, &mut f, "old/both", b"real\n");
    let mut w = header(T::Regular, 0o644, 0);
    add(&mut b, &mut w, "old/.wh.both", b"");
    b.into_inner().expect("tar")
}

/// Content of `big.bin`: noise and text, spanning many 64 KiB spans.
pub fn big_content() -> Vec<u8> {
    let mut v = noise(BIG_LEN / 2, 7);
    v.extend((0..BIG_LEN / 2).map(|i| b"abcdefghij\n"[i % 11]));
    v
}

/// gzip + zTOC of a tar, written into a temp dir.
pub fn layer_from_tar(tar: Vec<u8>, span: u64) -> Layer {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("gzip");
    let blob = gz.finish().expect("gzip");
    let ztoc = ZtocBuilder::new()
        .span_size(span)
        .build(&blob[..])
        .expect("ztoc");
    let blob_path = dir.path().join("layer.tar.gz");
    let tar_path = dir.path().join("layer.tar");
    std::fs::write(&blob_path, &blob).expect("write blob");
    std::fs::write(&tar_path, &tar).expect("write tar");
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&blob)));
    Layer {
        dir,
        tar,
        blob_path,
        tar_path,
        ztoc,
        digest,
    }
}

pub fn fixture_layer() -> Layer {
    layer_from_tar(fixture_tar(), SPAN)
}

/// A mounted layer; unmounts on drop (also while unwinding from a failed assertion).
pub struct Mounted {
    pub handle: Option<MountHandle>,
    pub mnt: tempfile::TempDir,
    pub cache: tempfile::TempDir,
    pub spans: Arc<SpanManager>,
    pub metrics: Arc<Metrics>,
    pub source: Arc<FaultInjector<FileSource>>,
}

impl Mounted {
    pub fn path(&self) -> &Path {
        self.mnt.path()
    }

    pub fn unmount(&mut self) {
        if let Some(h) = self.handle.take() {
            h.unmount().expect("unmount");
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            if h.unmount().is_err() {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(self.mnt.path())
                    .status();
            }
        }
    }
}

pub fn mount_layer(
    layer: &Layer,
    span_opts: SpanOptions,
    fs_opts: FsOptions,
    mount_opts: MountOptions,
) -> Mounted {
    mount_layer_with(layer, Metrics::default(), span_opts, fs_opts, mount_opts)
}

/// [`mount_layer`] with the given counters (e.g. with an observer).
pub fn mount_layer_with(
    layer: &Layer,
    metrics: Metrics,
    span_opts: SpanOptions,
    fs_opts: FsOptions,
    mount_opts: MountOptions,
) -> Mounted {
    let source = Arc::new(FaultInjector::new(
        FileSource::open(&layer.blob_path).expect("open blob"),
    ));
    let metrics = Arc::new(metrics);
    let cache = tempfile::tempdir().expect("cache dir");
    let spans = SpanManager::new(
        &layer.ztoc,
        source.clone() as Arc<dyn BlobSource>,
        cache.path(),
        span_opts,
        metrics.clone(),
    )
    .expect("span manager");
    let tree = Tree::from_ztoc(&layer.ztoc).expect("tree");
    let fs = LayerFs::new(tree, spans.clone(), layer.digest.clone(), fs_opts);
    let mnt = tempfile::tempdir().expect("mountpoint");
    let handle = soci_fs::mount(fs, mnt.path(), &mount_opts).expect("mount");
    Mounted {
        handle: Some(handle),
        mnt,
        cache,
        spans,
        metrics,
        source,
    }
}

pub fn mount_default(layer: &Layer) -> Mounted {
    mount_layer(
        layer,
        SpanOptions::default(),
        FsOptions::default(),
        MountOptions::default(),
    )
}

/// One file as seen through `lstat`, content and xattrs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: Option<u64>,
    pub mtime: Option<(i64, i64)>,
    pub sha256: Option<String>,
    pub link: Option<PathBuf>,
    pub rdev: Option<(u64, u64)>,
    pub nlink: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Index of the hardlink group (paths sharing an inode), by first path.
    pub ino_group: Option<String>,
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "file"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "other"
    }
}

/// Walks a tree into path → entry. Xattrs are limited to `user.*` and `trusted.overlay.*`.
pub fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let md = std::fs::symlink_metadata(&full).expect("lstat");
        let kind = kind_of(md.file_type());
        let key = rel.to_string_lossy().into_owned();
        let mut xattrs = BTreeMap::new();
        if kind != "symlink" && kind != "fifo" && kind != "char" && kind != "block" {
            for name in xattr::list(&full).expect("listxattr") {
                let n = name.to_string_lossy().into_owned();
                if n.starts_with("user.") || n.starts_with("trusted.overlay.") {
                    let v = xattr::get(&full, &name)
                        .expect("getxattr")
                        .unwrap_or_default();
                    xattrs.insert(n, v);
                }
            }
        }
        let ino_group = (kind == "file").then(|| {
            let first = inodes.entry(md.ino()).or_insert_with(|| key.clone());
            if key < *first {
                *first = key.clone();
            }
            md.ino().to_string()
        });
        let e = Entry {
            kind,
            perm: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: matches!(kind, "file" | "symlink").then(|| md.size()),
            mtime: Some((md.mtime(), md.mtime_nsec())),
            sha256: (kind == "file").then(|| {
                hex::encode(sha2::Sha256::digest(
                    std::fs::read(&full).expect("read file"),
                ))
            }),
            link: (kind == "symlink").then(|| std::fs::read_link(&full).expect("readlink")),
            rdev: matches!(kind, "char" | "block").then(|| {
                (
                    nix::sys::stat::major(md.rdev()),
                    nix::sys::stat::minor(md.rdev()),
                )
            }),
            nlink: md.nlink(),
            xattrs,
            ino_group,
        };
        if kind == "dir" {
            for child in std::fs::read_dir(&full).expect("readdir") {
                let child = child.expect("dirent");
                stack.push(rel.join(child.file_name()));
            }
        }
        out.insert(key, e);
    }
    // Name each hardlink group by its smallest path so both trees label groups alike.
    for e in out.values_mut() {
        if let Some(g) = e.ino_group.as_mut() {
            if let Ok(ino) = g.parse::<u64>() {
                *g = inodes[&ino].clone();
            }
        }
    }
    out
}

/// Reads a whole file through the mount.
pub fn read(path: impl AsRef<Path>) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
}

/// Bytes of a file in the fixture tar.
pub fn expected_content(layer: &Layer, name: &str) -> Vec<u8> {
    layer
        .ztoc
        .extract_file(
            &layer.ztoc.zinfo().expect("zinfo"),
            &std::fs::read(&layer.blob_path).expect("blob"),
            name.as_bytes(),
        )
        .expect("extract")
}
