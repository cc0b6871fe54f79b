//! The directory tree of a layer, built from its zTOC (SPEC §3.7).

use std::collections::BTreeMap;

use soci_ztoc::{clean, EntryType, FileMetadata, Ztoc};

use crate::error::{Error, Result};

/// Node id of the root directory.
pub(crate) const ROOT: u32 = 1;
/// Whiteout prefix (overlayfs/OCI convention).
pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Opaque directory marker.
pub(crate) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Highest node count: inode numbers are `3 + id` and must fit in 32 bits.
const MAX_NODES: usize = (u32::MAX - 4) as usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
    Char,
    Block,
    Fifo,
    /// A `.wh.<name>` entry, shown as a 0:0 character device named `<name>`.
    Whiteout,
}

/// Where a regular file's bytes and tar header are in the uncompressed stream.
#[derive(Debug, Clone)]
pub(crate) struct FileRecord {
    pub(crate) offset: u64,
    pub(crate) header_offset: u64,
    pub(crate) header_size: u64,
    /// Entry name exactly as in the tar, for header verification.
    pub(crate) raw_name: Box<[u8]>,
}

#[derive(Debug, Default)]
pub(crate) struct DirData {
    pub(crate) children: BTreeMap<Box<[u8]>, u32>,
    pub(crate) opaque: bool,
}

/// One extended attribute: name (without `SCHILY.xattr.`) and value.
pub(crate) type Xattr = (Box<[u8]>, Box<[u8]>);

#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    /// Permission bits plus setuid/setgid/sticky.
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) size: u64,
    pub(crate) mtime: (i64, u32),
    pub(crate) dev: (u32, u32),
    pub(crate) nlink: u32,
    pub(crate) link: Box<[u8]>,
    pub(crate) xattrs: Box<[Xattr]>,
    pub(crate) file: Option<Box<FileRecord>>,
    pub(crate) dir: Option<Box<DirData>>,
}

impl Node {
    fn implicit_dir() -> Self {
        Node {
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: (0, 0),
            dev: (0, 0),
            nlink: 2,
            link: Box::default(),
            xattrs: Box::default(),
            file: None,
            dir: Some(Box::default()),
        }
    }

    fn from_meta(m: &FileMetadata, kind: Kind) -> Self {
        let whiteout = kind == Kind::Whiteout;
        let link: Box<[u8]> = if kind == Kind::Symlink {
            m.linkname.clone().into()
        } else {
            Box::default()
        };
        Node {
            kind,
            mode: if whiteout {
                0
            } else {
                (m.mode as u32) & 0o7777
            },
            uid: if whiteout { 0 } else { m.uid },
            gid: if whiteout { 0 } else { m.gid },
            size: match kind {
                Kind::File => m.uncompressed_size,
                Kind::Symlink => link.len() as u64,
                _ => 0,
            },
            mtime: m.mod_time_unix().unwrap_or((0, 0)),
            dev: if matches!(kind, Kind::Char | Kind::Block) {
                (m.devmajor as u32, m.devminor as u32)
            } else {
                (0, 0)
            },
            nlink: 1,
            link,
            xattrs: if whiteout {
                Box::default()
            } else {
                m.extended_attributes()
                    .map(|(k, v)| (Box::from(k), Box::from(v)))
                    .collect()
            },
            file: None,
            dir: (kind == Kind::Dir).then(Box::default),
        }
    }

    pub(crate) fn children(&self) -> Option<&BTreeMap<Box<[u8]>, u32>> {
        self.dir.as_ref().map(|d| &d.children)
    }

    pub(crate) fn is_opaque(&self) -> bool {
        self.dir.as_ref().is_some_and(|d| d.opaque)
    }
}

/// The directory tree of one layer: nodes with attributes, names, hardlinks, whiteouts.
///
/// Built once from a zTOC; the zTOC can be dropped afterwards.
#[derive(Debug)]
pub struct Tree {
    nodes: Vec<Node>,
    has_xattrs: bool,
}

fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|c| *c == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

impl Tree {
    /// Builds the tree (SPEC §3.7).
    ///
    /// Names are cleaned as `clean("/" + name)`: `./`, `//` and trailing `/` go, `..` never
    /// climbs above the layer root, absolute names become relative, and symlinks are never
    /// followed while placing entries. Missing parents are created (`dir|0755`, uid 0). A later
    /// entry with the same path replaces the earlier one, as `tar -x` would. Hardlinks share the
    /// target's node. Link counts are counted from the final tree (names per node; `2 +
    /// subdirectories` for directories), so replaced names do not leave stale counts.
    pub fn from_ztoc(ztoc: &Ztoc) -> Result<Self> {
        let layout = ztoc.layout()?;
        let mut t = Tree {
            nodes: Vec::with_capacity(layout.len() + 2),
            has_xattrs: false,
        };
        // Index 0 is unused so node ids start at 1 (the root).
        t.nodes.push(Node::implicit_dir());
        t.nodes.push(Node::implicit_dir());
        for l in &layout {
            let m = &ztoc.toc[l.index];
            let path = clean(&m.name);
            if path.is_empty() {
                if m.kind == EntryType::Dir {
                    t.set_attrs(ROOT, m, Kind::Dir);
                }
                continue;
            }
            let (parent_path, base) = split_last(&path);
            let parent = t.ensure_dir(parent_path)?;
            if base == OPAQUE_MARKER {
                if let Some(d) = t.nodes[parent as usize].dir.as_mut() {
                    d.opaque = true;
                    t.has_xattrs = true;
                }
                continue;
            }
            let whiteout = base.starts_with(WHITEOUT_PREFIX);
            let kind = match m.kind {
                _ if whiteout => Kind::Whiteout,
                EntryType::Regular => Kind::File,
                EntryType::Dir => Kind::Dir,
                EntryType::Symlink => Kind::Symlink,
                EntryType::Char => Kind::Char,
                EntryType::Block => Kind::Block,
                EntryType::Fifo => Kind::Fifo,
                EntryType::Hardlink => {
                    let target = clean(&m.linkname);
                    let id = t
                        .lookup_path(&target)
                        .filter(|id| t.nodes[*id as usize].kind != Kind::Dir)
                        .ok_or_else(|| Error::HardlinkTarget {
                            name: m.name_lossy().into_owned(),
                            target: String::from_utf8_lossy(&target).into_owned(),
                        })?;
                    t.attach(parent, base, id);
                    continue;
                }
            };
            if kind == Kind::Dir {
                let existing = t.child(parent, base);
                if let Some(id) = existing.filter(|id| t.nodes[*id as usize].kind == Kind::Dir) {
                    t.set_attrs(id, m, Kind::Dir);
                    continue;
                }
            }
            let mut node = Node::from_meta(m, kind);
            if kind == Kind::File {
                node.file = Some(Box::new(FileRecord {
                    offset: m.uncompressed_offset.0,
                    header_offset: l.header_offset,
                    header_size: l.header_size,
                    raw_name: m.name.clone().into(),
                }));
            }
            t.has_xattrs |= !node.xattrs.is_empty();
            let id = t.push(node)?;
            t.attach(parent, base, id);
        }
        t.count_links();
        Ok(t)
    }

    fn push(&mut self, node: Node) -> Result<u32> {
        if self.nodes.len() >= MAX_NODES {
            return Err(Error::TooManyInodes);
        }
        self.nodes.push(node);
        Ok((self.nodes.len() - 1) as u32)
    }

    fn set_attrs(&mut self, id: u32, m: &FileMetadata, kind: Kind) {
        let fresh = Node::from_meta(m, kind);
        self.has_xattrs |= !fresh.xattrs.is_empty();
        let n = &mut self.nodes[id as usize];
        let dir = n.dir.take();
        *n = Node { dir, ..fresh };
    }

    fn child(&self, parent: u32, name: &[u8]) -> Option<u32> {
        self.nodes[parent as usize].children()?.get(name).copied()
    }

    fn attach(&mut self, parent: u32, name: &[u8], id: u32) {
        if let Some(d) = self.nodes[parent as usize].dir.as_mut() {
            d.children.insert(name.into(), id);
        }
    }

    /// Walks (and creates) the directories of a cleaned path; a non-directory in the way is
    /// replaced by an implicit directory, never followed.
    fn ensure_dir(&mut self, path: &[u8]) -> Result<u32> {
        let mut cur = ROOT;
        if path.is_empty() {
            return Ok(cur);
        }
        for comp in path.split(|c| *c == b'/') {
            cur = match self.child(cur, comp) {
                Some(id) if self.nodes[id as usize].kind == Kind::Dir => id,
                _ => {
                    let id = self.push(Node::implicit_dir())?;
                    self.attach(cur, comp, id);
                    id
                }
            };
        }
        Ok(cur)
    }

    /// The node at a cleaned path, without following symlinks.
    pub(crate) fn lookup_path(&self, path: &[u8]) -> Option<u32> {
        let mut cur = ROOT;
        if path.is_empty() {
            return Some(cur);
        }
        for comp in path.split(|c| *c == b'/') {
            cur = self.child(cur, comp)?;
        }
        Some(cur)
    }

    fn count_links(&mut self) {
        let mut counts = vec![0u32; self.nodes.len()];
        for n in &self.nodes {
            if let Some(ch) = n.children() {
                for &id in ch.values() {
                    counts[id as usize] = counts[id as usize].saturating_add(1);
                }
            }
        }
        let mut subdirs = vec![0u32; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(ch) = n.children() {
                subdirs[i] = ch
                    .values()
                    .filter(|id| self.nodes[**id as usize].kind == Kind::Dir)
                    .count() as u32;
            }
        }
        for (i, n) in self.nodes.iter_mut().enumerate() {
            n.nlink = match n.kind {
                Kind::Dir => 2u32.saturating_add(subdirs[i]),
                Kind::Whiteout => 1,
                _ => counts[i].max(1),
            };
        }
    }

    pub(crate) fn node(&self, id: u32) -> Option<&Node> {
        if id == 0 {
            return None;
        }
        self.nodes.get(id as usize)
    }

    /// Number of nodes (including the root).
    pub fn len(&self) -> usize {
        self.nodes.len() - 1
    }

    /// Always false: a tree has at least its root.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether any node has extended attributes or any directory is opaque.
    pub fn has_xattrs(&self) -> bool {
        self.has_xattrs
    }

    /// Resolves a name in a directory as the FUSE layer shows it (SPEC §5.11 lookup):
    /// `.wh.*` names are hidden; a name without a real entry but with a `.wh.<name>` sibling is
    /// the whiteout node.
    pub(crate) fn lookup(&self, parent: u32, name: &[u8]) -> Option<u32> {
        if name.starts_with(WHITEOUT_PREFIX) {
            return None;
        }
        let ch = self.node(parent)?.children()?;
        if let Some(id) = ch.get(name) {
            return Some(*id);
        }
        let mut wh = WHITEOUT_PREFIX.to_vec();
        wh.extend_from_slice(name);
        ch.get(wh.as_slice()).copied()
    }

    /// The listing of a directory as shown (SPEC §5.11 readdir): sorted by name, `.wh.`
    /// entries hidden, each whiteout shown as its target name unless a real entry has it.
    pub(crate) fn list(&self, dir: u32) -> Vec<(Box<[u8]>, u32)> {
        let Some(ch) = self.node(dir).and_then(Node::children) else {
            return Vec::new();
        };
        let mut out: Vec<(Box<[u8]>, u32)> = Vec::with_capacity(ch.len());
        let mut synthetic = false;
        for (name, &id) in ch {
            match name.strip_prefix(WHITEOUT_PREFIX) {
                Some(x) => {
                    if !x.is_empty() && !ch.contains_key(x) {
                        out.push((x.into(), id));
                        synthetic = true;
                    }
                }
                None => out.push((name.clone(), id)),
            }
        }
        if synthetic {
            out.sort_by(|a, b| a.0.cmp(&b.0));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use soci_ztoc::ZtocBuilder;

    fn layer(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, ty, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if !link.is_empty() {
                h.set_link_name(link).expect("link");
            }
            // Raw bytes: set_path refuses `..` and absolute names, which is what we test.
            let field = &mut h.as_old_mut().name;
            field.fill(0);
            field[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    fn tree(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Result<Tree> {
        let tar = layer(entries);
        let ztoc = ZtocBuilder::new()
            .span_size(1 << 20)
            .build(&tar[..])
            .expect("ztoc");
        Tree::from_ztoc(&ztoc)
    }

    use tar::EntryType as T;

    #[test]
    fn names_parents_duplicates_links() {
        let t = tree(&[
            ("./a//b/c.txt", T::Regular, b"one", ""),
            ("../../escape", T::Regular, b"x", ""),
            ("/abs/d/", T::Directory, b"", ""),
            ("a/b/c.txt", T::Regular, b"two!", ""),
            ("a/hl", T::Link, b"", "./a/b/c.txt"),
            ("a/sl", T::Symlink, b"", "../../etc/passwd"),
            ("a/b/.wh.gone", T::Regular, b"", ""),
            ("abs/.wh..wh..opq", T::Regular, b"", ""),
        ])
        .expect("tree");
        let c = t.lookup_path(b"a/b/c.txt").expect("c");
        assert_eq!(t.node(c).expect("node").size, 4, "later duplicate wins");
        assert_eq!(t.lookup_path(b"a/hl"), Some(c));
        assert_eq!(t.node(c).expect("node").nlink, 2);
        assert!(t.lookup_path(b"escape").is_some());
        let sl = t.node(t.lookup_path(b"a/sl").expect("sl")).expect("node");
        assert_eq!(&*sl.link, b"../../etc/passwd");
        assert_eq!(sl.kind, Kind::Symlink);
        let a = t.lookup_path(b"a").expect("a");
        assert_eq!(t.node(a).expect("a").nlink, 3);
        assert_eq!(t.node(ROOT).expect("root").nlink, 4);
        let b = t.lookup_path(b"a/b").expect("b");
        let names: Vec<_> = t.list(b).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            vec![Box::from(&b"c.txt"[..]), Box::from(&b"gone"[..])]
        );
        let gone = t.lookup(b, b"gone").expect("whiteout");
        assert_eq!(t.node(gone).expect("wh").kind, Kind::Whiteout);
        assert_eq!(t.lookup(b, b".wh.gone"), None);
        assert!(t
            .node(t.lookup_path(b"abs").expect("abs"))
            .expect("abs")
            .is_opaque());
        assert!(t
            .list(t.lookup_path(b"abs").expect("abs"))
            .iter()
            .any(|(n, _)| &**n == b"d"));
    }

    #[test]
    fn missing_hardlink_target_fails() {
        let err = tree(&[("x", T::Link, b"", "nope")]).expect_err("must fail");
        assert!(matches!(err, Error::HardlinkTarget { .. }));
    }
}
