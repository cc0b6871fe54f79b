//! Small mount helpers: mount table queries, forced unmounts and the overlayfs probe.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::error::{Error, Result};

/// Decodes the octal escapes (`\040`) of /proc/self/mountinfo fields.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One mount table entry.
#[derive(Debug, Clone)]
pub struct MountEntry {
    /// Mount point.
    pub mount_point: PathBuf,
    /// Filesystem type (e.g. `fuse.rawBridge`, `overlay`).
    pub fs_type: String,
}

/// Mount points at or below `prefix`, deepest first (the order to unmount them in).
pub fn mounts_under(prefix: &Path) -> Vec<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<MountEntry> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            let mp = PathBuf::from(unescape(f.get(4)?));
            let fs_type = f.get(sep + 1)?.to_string();
            mp.starts_with(prefix).then_some(MountEntry {
                mount_point: mp,
                fs_type,
            })
        })
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.mount_point.components().count()));
    out
}

/// True when `path` is a mount point.
pub fn is_mount_point(path: &Path) -> bool {
    mounts_under(path).iter().any(|m| m.mount_point == path)
}

/// Unmounts with `MNT_FORCE`, falling back to a lazy detach (a dead FUSE server may refuse).
pub fn force_unmount(path: &Path) -> Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_FORCE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()), // not mounted
        Err(_) => nix::mount::umount2(path, MntFlags::MNT_DETACH)
            .map_err(|e| Error::io("failed to unmount", path)(std::io::Error::from(e))),
    }
}

/// Checks that overlayfs can be mounted on the filesystem holding `dir` (spec §5.1 startup probe).
pub fn check_overlay_supported(dir: &Path) -> Result<()> {
    let base = dir.join(format!("overlay-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let res = (|| -> Result<()> {
        for d in ["lower", "upper", "work", "merged"] {
            std::fs::create_dir_all(base.join(d))
                .map_err(Error::io("failed to create", base.join(d)))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            base.join("lower").display(),
            base.join("upper").display(),
            base.join("work").display()
        );
        let merged = base.join("merged");
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(|e| Error::io("failed to mount overlay at", &merged)(std::io::Error::from(e)))?;
        let _ = nix::mount::umount2(&merged, MntFlags::MNT_DETACH);
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&base);
    res.map_err(|e| {
        Error::Config(format!(
            "snapshotter is not supported: {}",
            crate::error::chain(&e)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
