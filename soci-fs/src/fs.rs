//! The FUSE filesystem of one lazily loaded layer (SPEC §5.8, §5.11). Protocol glue only:
//! the tree answers names and attributes, the span manager answers bytes.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::idmap::IdMap;
use crate::metrics::{Metrics, Operation};
use crate::spans::SpanManager;
use crate::tree::{Kind, Node, Tree, ROOT};

/// Name of the state directory in the layer root.
pub const STATE_DIR: &str = ".soci-snapshotter";
const INO_STATE_DIR: u64 = 2;
const INO_STATE_FILE: u64 = 3;
const BLOCK: u64 = 4096;

/// Which extended attribute names mark an opaque directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpaqueXattrs {
    /// `trusted.overlay.opaque` (overlayfs mounted by root without `userxattr`).
    Trusted,
    /// `user.overlay.opaque` (overlayfs with `userxattr`).
    User,
    /// Both names.
    Both,
}

impl OpaqueXattrs {
    fn names(self) -> &'static [&'static [u8]] {
        match self {
            OpaqueXattrs::Trusted => &[b"trusted.overlay.opaque"],
            OpaqueXattrs::User => &[b"user.overlay.opaque"],
            OpaqueXattrs::Both => &[b"trusted.overlay.opaque", b"user.overlay.opaque"],
        }
    }
}

/// Tunables of a [`LayerFs`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FsOptions {
    /// Kernel attribute cache timeout (`[fuse].attr_timeout`). By default 1 s.
    pub attr_timeout: Duration,
    /// Kernel entry cache timeout (`[fuse].entry_timeout`). By default 1 s.
    pub entry_timeout: Duration,
    /// Kernel negative-entry cache timeout (`[fuse].negative_timeout`). By default 1 s.
    pub negative_timeout: Duration,
    /// Skip the tar-header check before a file's first read (`disable_verification`).
    /// By default false.
    pub disable_verification: bool,
    /// Answer xattr requests with ENOSYS (the zTOC descriptor's `disable-xattrs`) when the layer
    /// has no xattrs and no opaque directories. By default false.
    pub disable_xattrs: bool,
    /// Opaque xattr names served. By default both.
    pub opaque_xattrs: OpaqueXattrs,
    /// Use FUSE passthrough for files whose spans are all local, when the kernel supports it.
    /// By default true.
    pub passthrough: bool,
    /// Filesystem whose usage `statfs` reports. By default the span cache directory.
    pub statfs_path: Option<PathBuf>,
    /// Report owners as the host ids of this user-namespace mapping (an id-mapped view of the
    /// layer for one container, SPEC §5.3.7). By default none: the zTOC's ids.
    pub id_map: Option<IdMap>,
}

impl Default for FsOptions {
    fn default() -> Self {
        Self {
            attr_timeout: Duration::from_secs(1),
            entry_timeout: Duration::from_secs(1),
            negative_timeout: Duration::from_secs(1),
            disable_verification: false,
            disable_xattrs: false,
            opaque_xattrs: OpaqueXattrs::Both,
            passthrough: true,
            statfs_path: None,
            id_map: None,
        }
    }
}

#[derive(Debug)]
struct Handle {
    node: u32,
    last_end: AtomicU64,
}

#[derive(Debug, Default)]
struct OpenModes {
    /// Open handles per node that read through us (kernel page cache mode).
    cached: HashMap<u32, u32>,
    /// Shared backing file per node and its open handle count.
    passthrough: HashMap<u32, (Arc<BackingId>, u32)>,
    /// Which handles are passthrough.
    pt_handles: HashMap<u64, u32>,
}

/// A directory listing snapshot taken at `opendir`: name, inode, type.
type Listing = Vec<(Box<[u8]>, u64, FileType)>;

enum Target<'a> {
    Node(u32, &'a Node),
    StateDir,
    StateFile,
}

/// One layer served over FUSE. Create with [`LayerFs::new`], mount with [`crate::mount`].
#[derive(Debug)]
pub struct LayerFs {
    tree: Arc<Tree>,
    spans: Arc<SpanManager>,
    digest: String,
    state_name: Vec<u8>,
    opts: FsOptions,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    dirs: Mutex<HashMap<u64, Arc<Listing>>>,
    modes: Mutex<OpenModes>,
    /// Serialises the open-mode decision (passthrough or cached) with its registration: the
    /// kernel fails an open with EIO when two opens of one inode use different modes or
    /// different backing files, which concurrent opens could otherwise produce.
    open_lock: Mutex<()>,
    next_fh: AtomicU64,
    verified: Mutex<HashSet<u32>>,
    last_error: Mutex<Option<String>>,
    passthrough_on: AtomicBool,
    /// Close the span manager when the session ends (set from
    /// [`crate::MountOptions::close_spans_on_unmount`]).
    pub(crate) close_spans: bool,
}

fn ino_of(id: u32) -> u64 {
    if id == ROOT {
        1
    } else {
        u64::from(id) + 3
    }
}

fn time_of((secs, nanos): (i64, u32)) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            + Duration::from_nanos(u64::from(nanos))
    }
}

/// Linux `new_encode_dev`, the form FUSE carries `rdev` in.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::Char | Kind::Whiteout => FileType::CharDevice,
        Kind::Block => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
    }
}

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

impl LayerFs {
    /// A filesystem serving `tree` with bytes from `spans`. `digest` is the layer digest
    /// (`sha256:…`), used for the state file name. A tree and span manager may be shared by
    /// several filesystems (e.g. an id-mapped view next to the plain one, see
    /// [`LayerFs::shared_tree`] and [`crate::MountOptions::close_spans_on_unmount`]).
    pub fn new(
        tree: impl Into<Arc<Tree>>,
        spans: Arc<SpanManager>,
        digest: impl Into<String>,
        opts: FsOptions,
    ) -> Self {
        let tree = tree.into();
        let digest = digest.into();
        let state_name = format!("{digest}.json").into_bytes();
        Self {
            tree,
            spans,
            digest,
            state_name,
            opts,
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            modes: Mutex::new(OpenModes::default()),
            open_lock: Mutex::new(()),
            next_fh: AtomicU64::new(1),
            verified: Mutex::new(HashSet::new()),
            last_error: Mutex::new(None),
            passthrough_on: AtomicBool::new(false),
            close_spans: true,
        }
    }

    /// The span manager (shared with the background fetcher).
    pub fn spans(&self) -> &Arc<SpanManager> {
        &self.spans
    }

    /// The layer's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.spans.metrics()
    }

    /// The tree served.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The tree served, to build another filesystem over the same layer.
    pub fn shared_tree(&self) -> Arc<Tree> {
        self.tree.clone()
    }

    /// Host (uid, gid) reported for an entry owned by (`uid`, `gid`) in the layer.
    fn owner(&self, uid: u32, gid: u32) -> (u32, u32) {
        match &self.opts.id_map {
            Some(m) => (m.uid(uid), m.gid(gid)),
            None => (uid, gid),
        }
    }

    /// Whether the kernel accepted FUSE passthrough at mount time.
    pub fn passthrough_active(&self) -> bool {
        self.passthrough_on.load(Ordering::Relaxed)
    }

    /// The state file JSON (SPEC §5.11), with its trailing newline.
    pub fn state_json(&self) -> Vec<u8> {
        let size = self.spans.blob_size();
        let fetched = self.spans.fetched_size();
        let pct = if size == 0 {
            0.0
        } else {
            fetched as f64 / size as f64 * 100.0
        };
        let mut s = String::from("{");
        if let Some(e) = self.last_error.lock().as_deref() {
            s.push_str("\"error\":");
            s.push_str(&serde_json::Value::from(e).to_string());
            s.push(',');
        }
        s.push_str("\"digest\":");
        s.push_str(&serde_json::Value::from(self.digest.as_str()).to_string());
        // Go formats float64 with the shortest representation and no ".0"; Rust's Display
        // does the same for the magnitudes a percentage can have.
        s.push_str(&format!(
            ",\"size\":{size},\"fetchedSize\":{fetched},\"fetchedPercent\":{pct}}}\n"
        ));
        s.into_bytes()
    }

    fn record_error(&self, e: &Error) {
        let msg = match std::error::Error::source(e) {
            Some(src) => format!("{e}: {src}"),
            None => e.to_string(),
        };
        tracing::warn!(layer = %self.digest, error = %msg, "statFile error");
        *self.last_error.lock() = Some(msg);
    }

    fn target(&self, ino: INodeNo) -> Option<Target<'_>> {
        match ino.0 {
            1 => self.tree.node(ROOT).map(|n| Target::Node(ROOT, n)),
            INO_STATE_DIR => Some(Target::StateDir),
            INO_STATE_FILE => Some(Target::StateFile),
            i if i >= 5 => {
                let id = u32::try_from(i - 3).ok()?;
                self.tree.node(id).map(|n| Target::Node(id, n))
            }
            _ => None,
        }
    }

    fn node_attr(&self, id: u32, n: &Node) -> FileAttr {
        let whiteout = n.kind == Kind::Whiteout;
        let size = n.size;
        let (uid, gid) = self.owner(n.uid, n.gid);
        FileAttr {
            ino: INodeNo(ino_of(id)),
            size,
            blocks: size.div_ceil(BLOCK) * 8,
            atime: UNIX_EPOCH,
            mtime: time_of(n.mtime),
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: file_type(n.kind),
            perm: if whiteout {
                0
            } else {
                (n.mode & 0o7777) as u16
            },
            nlink: n.nlink.max(1),
            uid,
            gid,
            rdev: if whiteout {
                0
            } else {
                encode_dev(n.dev.0, n.dev.1)
            },
            blksize: BLOCK as u32,
            flags: 0,
        }
    }

    fn state_attr(&self, file: bool) -> FileAttr {
        let size = if file {
            self.state_json().len() as u64
        } else {
            0
        };
        let (uid, gid) = self.owner(0, 0);
        FileAttr {
            ino: INodeNo(if file { INO_STATE_FILE } else { INO_STATE_DIR }),
            size,
            blocks: size.div_ceil(BLOCK) * 8,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: if file {
                FileType::RegularFile
            } else {
                FileType::Directory
            },
            perm: if file { 0o400 } else { 0o500 },
            nlink: 1,
            uid,
            gid,
            rdev: 0,
            blksize: BLOCK as u32,
            flags: 0,
        }
    }

    fn attr(&self, t: &Target<'_>) -> FileAttr {
        match t {
            Target::Node(id, n) => self.node_attr(*id, n),
            Target::StateDir => self.state_attr(false),
            Target::StateFile => self.state_attr(true),
        }
    }

    fn xattrs_enabled(&self) -> bool {
        !self.opts.disable_xattrs || self.tree.has_xattrs()
    }

    /// Verifies a file's tar header once (SPEC §5.8).
    fn verify(&self, id: u32, n: &Node) -> Result<()> {
        if self.opts.disable_verification || self.verified.lock().contains(&id) {
            return Ok(());
        }
        let Some(rec) = n.file.as_deref() else {
            return Ok(());
        };
        let header = self
            .spans
            .read(rec.header_offset, rec.header_size as usize)?;
        crate::verify::verify_header(&header, n, rec)?;
        self.verified.lock().insert(id);
        Ok(())
    }

    /// Tries to open `id` in passthrough mode; `None` means use a normal handle.
    fn try_passthrough(&self, id: u32, n: &Node, reply: &ReplyOpen) -> Option<Arc<BackingId>> {
        if !self.passthrough_active() || n.size == 0 {
            return None;
        }
        let rec = n.file.as_deref()?;
        {
            let modes = self.modes.lock();
            if modes.cached.get(&id).copied().unwrap_or(0) > 0 {
                return None;
            }
            if let Some((b, _)) = modes.passthrough.get(&id) {
                return Some(b.clone());
            }
        }
        let range = rec.offset..rec.offset + n.size;
        if !self.spans.is_local(range.clone()) {
            return None;
        }
        if self.verify(id, n).is_err() {
            return None;
        }
        let file = match self.spans.materialize_file(id, range) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(node = id, error = %e, "materializing file for passthrough failed");
                return None;
            }
        };
        match reply.open_backing(&file) {
            Ok(b) => Some(Arc::new(b)),
            Err(e) => {
                tracing::debug!(node = id, error = %e, "passthrough backing open failed; disabling passthrough");
                self.passthrough_on.store(false, Ordering::Relaxed);
                None
            }
        }
    }

    fn statfs_path(&self) -> PathBuf {
        self.opts
            .statfs_path
            .clone()
            .unwrap_or_else(|| self.spans.cache_dir().to_path_buf())
    }

    fn xattr_reply(data: &[u8], size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(data.len() as u32);
        } else if data.len() > size as usize {
            reply.error(Errno::from_i32(libc::ERANGE));
        } else {
            reply.data(data);
        }
    }
}

impl Filesystem for LayerFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if self.opts.passthrough {
            match config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
                Ok(()) => {
                    // Depth 1: our backing files sit on a plain filesystem, and overlayfs can still
                    // stack on top of this mount.
                    if config.set_max_stack_depth(1).is_ok() {
                        self.passthrough_on.store(true, Ordering::Relaxed);
                    }
                }
                Err(_) => tracing::info!("kernel does not support FUSE passthrough"),
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        if self.close_spans {
            self.spans.close();
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.spans.metrics().add(|m| &m.node_lookup_count, 1);
        let name = name.as_bytes();
        let found = match self.target(parent) {
            Some(Target::Node(ROOT, _)) if name == STATE_DIR.as_bytes() => Some(Target::StateDir),
            Some(Target::Node(pid, _)) => self
                .tree
                .lookup(pid, name)
                .and_then(|id| self.tree.node(id).map(|n| Target::Node(id, n))),
            Some(Target::StateDir) if name == self.state_name.as_slice() => Some(Target::StateFile),
            Some(_) => None,
            None => {
                self.spans
                    .metrics()
                    .fuse_failed(|m| &m.fuse_lookup_failures);
                reply.error(Errno::ENOENT);
                return;
            }
        };
        match found {
            Some(t) => {
                let attr = self.attr(&t);
                reply.entry_with_ttls(
                    &self.opts.attr_timeout,
                    &self.opts.entry_timeout,
                    &attr,
                    Generation(0),
                );
            }
            // A zero-ino entry reply caches the negative lookup for `negative_timeout`.
            None if !self.opts.negative_timeout.is_zero() => {
                let mut attr = self.state_attr(false);
                attr.ino = INodeNo(0);
                reply.entry_with_ttls(
                    &Duration::ZERO,
                    &self.opts.negative_timeout,
                    &attr,
                    Generation(0),
                );
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let target = self.target(ino);
        let count: fn(&Metrics) -> &AtomicU64 = match &target {
            Some(Target::Node(_, n)) if n.kind == Kind::File => |m| &m.file_getattr_count,
            Some(Target::Node(_, n)) if n.kind == Kind::Whiteout => |m| &m.whiteout_getattr_count,
            _ => |m| &m.node_getattr_count,
        };
        self.spans.metrics().add(count, 1);
        match target {
            Some(t) => reply.attr(&self.opts.attr_timeout, &self.attr(&t)),
            None => {
                self.spans
                    .metrics()
                    .fuse_failed(|m| &m.fuse_getattr_failures);
                reply.error(Errno::ENOENT);
            }
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spans.metrics().add(|m| &m.node_readlink_count, 1);
        match self.target(ino) {
            Some(Target::Node(_, n)) if n.kind == Kind::Symlink => reply.data(&n.link),
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.spans.metrics().add(|m| &m.node_open_count, 1);
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            reply.error(Errno::from_i32(libc::EROFS));
            return;
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        match self.target(ino) {
            Some(Target::StateFile) => {
                self.handles.lock().insert(
                    fh,
                    Arc::new(Handle {
                        node: 0,
                        last_end: AtomicU64::new(0),
                    }),
                );
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
            }
            Some(Target::Node(id, n)) if n.kind == Kind::File => {
                let decision = self.open_lock.lock();
                if let Some(backing) = self.try_passthrough(id, n, &reply) {
                    let backing = {
                        let mut modes = self.modes.lock();
                        let e = modes.passthrough.entry(id).or_insert((backing, 0));
                        e.1 += 1;
                        let shared = e.0.clone();
                        modes.pt_handles.insert(fh, id);
                        shared
                    };
                    drop(decision);
                    self.spans.metrics().add(|m| &m.passthrough_opens, 1);
                    reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &backing);
                    return;
                }
                *self.modes.lock().cached.entry(id).or_insert(0) += 1;
                drop(decision);
                self.handles.lock().insert(
                    fh,
                    Arc::new(Handle {
                        node: id,
                        last_end: AtomicU64::new(0),
                    }),
                );
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
            _ => {
                self.spans.metrics().fuse_failed(|m| &m.fuse_open_failures);
                reply.error(Errno::EIO);
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spans.metrics().add(|m| &m.file_read_count, 1);
        let (id, n) = match self.target(ino) {
            Some(Target::StateFile) => {
                let json = self.state_json();
                let start = (offset as usize).min(json.len());
                let end = start.saturating_add(size as usize).min(json.len());
                reply.data(&json[start..end]);
                return;
            }
            Some(Target::Node(id, n)) if n.file.is_some() => (id, n),
            _ => {
                self.spans.metrics().fuse_failed(|m| &m.fuse_read_failures);
                reply.error(Errno::EIO);
                return;
            }
        };
        let Some(rec) = n.file.as_deref() else {
            reply.error(Errno::EIO);
            return;
        };
        if offset >= n.size {
            reply.data(&[]);
            return;
        }
        let len = (n.size - offset).min(u64::from(size)) as usize;
        let started = Instant::now();
        let res = self
            .verify(id, n)
            .and_then(|()| self.spans.read(rec.offset + offset, len));
        let m = self.spans.metrics();
        match res {
            Ok(data) => {
                m.add(|m| &m.synchronous_read_count, 1);
                m.add(|m| &m.synchronous_bytes_served, data.len() as u64);
                let elapsed = started.elapsed();
                m.add(|m| &m.synchronous_read_micros, elapsed.as_micros() as u64);
                m.observe(Operation::SynchronousRead, elapsed);
                let handle = self.handles.lock().get(&fh.0).cloned();
                if let Some(h) = handle {
                    let end = offset + data.len() as u64;
                    if h.last_end.swap(end, Ordering::Relaxed) == offset {
                        self.spans
                            .read_ahead(rec.offset + end.saturating_sub(1), rec.offset + n.size);
                    }
                }
                reply.data(&data);
            }
            Err(e) => {
                m.fuse_failed(|m| &m.fuse_read_failures);
                self.record_error(&e);
                reply.error(errno(&e));
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let h = self.handles.lock().remove(&fh.0);
        let mut modes = self.modes.lock();
        if let Some(h) = h {
            if let Some(c) = modes.cached.get_mut(&h.node) {
                *c -= 1;
                if *c == 0 {
                    modes.cached.remove(&h.node);
                }
            }
        } else if let Some(id) = modes.pt_handles.remove(&fh.0) {
            if let Some(e) = modes.passthrough.get_mut(&id) {
                e.1 -= 1;
                if e.1 == 0 {
                    modes.passthrough.remove(&id);
                }
            }
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let list = match self.target(ino) {
            Some(Target::Node(id, n)) if n.kind == Kind::Dir => {
                let mut v = vec![
                    (Box::from(&b"."[..]), ino.0, FileType::Directory),
                    (Box::from(&b".."[..]), ino.0, FileType::Directory),
                ];
                for (name, cid) in self.tree.list(id) {
                    if let Some(c) = self.tree.node(cid) {
                        v.push((name, ino_of(cid), file_type(c.kind)));
                    }
                }
                v
            }
            Some(Target::StateDir) => vec![
                (Box::from(&b"."[..]), INO_STATE_DIR, FileType::Directory),
                (Box::from(&b".."[..]), 1, FileType::Directory),
                (
                    self.state_name.clone().into(),
                    INO_STATE_FILE,
                    FileType::RegularFile,
                ),
            ],
            _ => {
                self.spans
                    .metrics()
                    .fuse_failed(|m| &m.fuse_readdir_failures);
                reply.error(Errno::ENOTDIR);
                return;
            }
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs.lock().insert(fh, Arc::new(list));
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let started = Instant::now();
        self.spans.metrics().add(|m| &m.node_readdir_count, 1);
        let Some(list) = self.dirs.lock().get(&fh.0).cloned() else {
            self.spans
                .metrics()
                .fuse_failed(|m| &m.fuse_readdir_failures);
            reply.error(Errno::EBADF);
            return;
        };
        for (i, (name, ino, kind)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(*ino),
                (i + 1) as u64,
                *kind,
                OsStr::from_bytes(name),
            ) {
                break;
            }
        }
        reply.ok();
        self.spans
            .metrics()
            .observe(Operation::NodeReaddir, started.elapsed());
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.lock().remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match nix::sys::statvfs::statvfs(&self.statfs_path()) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                255,
                s.fragment_size() as u32,
            ),
            Err(_) => reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.spans.metrics().add(|m| &m.node_getxattr_count, 1);
        if !self.xattrs_enabled() {
            reply.error(Errno::ENOSYS);
            return;
        }
        let name = name.as_bytes();
        let Some(Target::Node(_, n)) = self.target(ino) else {
            reply.error(Errno::ENODATA);
            return;
        };
        if n.is_opaque() && self.opts.opaque_xattrs.names().contains(&name) {
            Self::xattr_reply(b"y", size, reply);
            return;
        }
        match n.xattrs.iter().find(|(k, _)| &**k == name) {
            Some((_, v)) => Self::xattr_reply(v, size, reply),
            None => reply.error(Errno::ENODATA),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.spans.metrics().add(|m| &m.node_listxattr_count, 1);
        if !self.xattrs_enabled() {
            reply.error(Errno::ENOSYS);
            return;
        }
        let mut out = Vec::new();
        match self.target(ino) {
            Some(Target::Node(_, n)) => {
                if n.is_opaque() {
                    for name in self.opts.opaque_xattrs.names() {
                        out.extend_from_slice(name);
                        out.push(0);
                    }
                }
                for (k, _) in n.xattrs.iter() {
                    out.extend_from_slice(k);
                    out.push(0);
                }
            }
            Some(_) => {}
            None => {
                self.spans
                    .metrics()
                    .fuse_failed(|m| &m.fuse_listxattr_failures);
                reply.error(Errno::ENOENT);
                return;
            }
        }
        Self::xattr_reply(&out, size, reply);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_encoding_matches_linux() {
        assert_eq!(encode_dev(1, 3), 0x103);
        assert_eq!(
            encode_dev(8, 300),
            (300 & 0xff) | (8 << 8) | ((300 & !0xff) << 12)
        );
        assert_eq!(encode_dev(0, 0), 0);
    }

    #[test]
    fn negative_mtime() {
        assert_eq!(
            time_of((-1, 500_000_000)),
            UNIX_EPOCH - Duration::from_millis(500)
        );
    }
}
