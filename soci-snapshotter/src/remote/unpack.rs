//! Local snapshots (spec §5.14): apply a layer tar into a snapshot directory, converting OCI
//! whiteouts to overlayfs ones, without ever writing outside the directory.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use super::RemoteError;

/// Cleans a tar path: drops `.` and leading `/`, rejects `..` that would leave the root.
fn clean(p: &Path) -> Result<PathBuf, RemoteError> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(RemoteError::other("unsafe path in layer", p.display()));
                }
            }
        }
    }
    Ok(out)
}

/// Applies an uncompressed tar stream to `dir` (which already holds nothing of this layer).
/// `.wh..wh..opq` marks its directory opaque (`trusted.overlay.opaque=y`); `.wh.<x>` becomes a
/// 0:0 character device `<x>`. Everything else goes through `tar::Entry::unpack_in`, which refuses
/// paths that escape `dir` (including through symlinks created earlier in the layer).
pub fn apply_tar(reader: impl Read, dir: &Path) -> Result<u64, RemoteError> {
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    ar.set_preserve_ownerships(true);
    ar.set_overwrite(true);
    let mut n = 0u64;
    for entry in ar
        .entries()
        .map_err(|e| RemoteError::other("reading layer tar", e))?
    {
        let mut entry = entry.map_err(|e| RemoteError::other("reading layer tar", e))?;
        let raw = entry
            .path()
            .map_err(|e| RemoteError::other("reading layer tar", e))?
            .into_owned();
        let rel = clean(&raw)?;
        let name = rel
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(target) = name.strip_prefix(".wh.") {
            let parent = dir.join(rel.parent().unwrap_or(Path::new("")));
            ensure_inside(dir, &parent)?;
            std::fs::create_dir_all(&parent)
                .map_err(|e| RemoteError::other("creating whiteout parent", e))?;
            if target == ".wh..opq" {
                xattr::set(&parent, "trusted.overlay.opaque", b"y")
                    .map_err(|e| RemoteError::other("setting opaque xattr", e))?;
            } else {
                let p = parent.join(target);
                let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir_all(&p));
                nix::sys::stat::mknod(
                    &p,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    0,
                )
                .map_err(|e| RemoteError::other("creating whiteout", e))?;
            }
            n += 1;
            continue;
        }
        if rel.as_os_str().is_empty() {
            continue; // the root itself
        }
        entry.unpack_in(dir).map_err(|e| {
            RemoteError::other(
                "unpacking layer entry",
                format!("{}: {}", raw.display(), crate::error::chain(&e)),
            )
        })?;
        n += 1;
    }
    Ok(n)
}

fn ensure_inside(root: &Path, p: &Path) -> Result<(), RemoteError> {
    // Walk existing ancestors: none may be a symlink (a layer could plant one pointing outside).
    let mut cur = root.to_path_buf();
    if let Ok(rel) = p.strip_prefix(root) {
        for c in rel.components() {
            cur.push(c);
            if let Ok(md) = std::fs::symlink_metadata(&cur) {
                if md.file_type().is_symlink() {
                    return Err(RemoteError::other(
                        "unsafe whiteout path through symlink",
                        cur.display(),
                    ));
                }
            }
        }
        Ok(())
    } else {
        Err(RemoteError::other("unsafe path in layer", p.display()))
    }
}

/// Decompresses by media type (gzip or plain tar) and applies.
pub fn apply_blob(path: &Path, media_type: &str, dir: &Path) -> Result<u64, RemoteError> {
    let f = std::fs::File::open(path).map_err(|e| RemoteError::other("opening layer blob", e))?;
    let mut r = std::io::BufReader::new(f);
    let magic = {
        use std::io::BufRead;
        r.fill_buf()
            .map(|b| b.starts_with(&[0x1f, 0x8b]))
            .unwrap_or(false)
    };
    let gzip = media_type.ends_with("gzip") || (!media_type.ends_with(".tar") && magic);
    if media_type.contains("zstd") {
        return Err(RemoteError::other(
            "unpacking layer",
            format!("unsupported media type {media_type}"),
        ));
    }
    if gzip {
        apply_tar(flate2::read::MultiGzDecoder::new(r), dir)
    } else {
        apply_tar(r, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn refuses_escapes_and_applies_files() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("fs");
        std::fs::create_dir(&root).unwrap();
        apply_tar(&tar_with(&[("a/b.txt", b"hi"), ("./c", b"x")])[..], &root).unwrap();
        assert_eq!(std::fs::read(root.join("a/b.txt")).unwrap(), b"hi");
        assert!(apply_tar(&tar_with(&[("../evil", b"x")])[..], &root).is_err());
        assert!(!d.path().join("evil").exists());
    }

    #[test]
    fn whiteouts_become_char_devices() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: whiteout test needs root (mknod)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        apply_tar(
            &tar_with(&[("dir/.wh.gone", b""), ("dir/.wh..wh..opq", b"")])[..],
            d.path(),
        )
        .unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(d.path().join("dir/gone"))
            .unwrap()
            .file_type()
            .is_char_device());
        assert!(!d.path().join("dir/.wh..wh..opq").exists());
    }
}
