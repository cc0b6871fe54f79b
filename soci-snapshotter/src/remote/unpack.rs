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
    // PAX `SCHILY.xattr.<name>` records become extended attributes of the unpacked entries.
    ar.set_unpack_xattrs(true);
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

/// Compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd (one or more frames).
    Zstd,
}

impl Compression {
    /// From the media type; an unknown or empty media type is decided by the magic bytes.
    pub fn detect(media_type: &str, head: &[u8]) -> Compression {
        if media_type.ends_with("gzip") {
            Compression::Gzip
        } else if media_type.ends_with("zstd") {
            Compression::Zstd
        } else if media_type.ends_with(".tar") {
            Compression::None
        } else if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// `gzip`, `zstd` or `tar`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// An external decompressor (`decompress_streams`): reads the compressed stream on stdin and
/// writes the tar to stdout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decompressor {
    /// Absolute path of the executable.
    pub path: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

/// External decompressors keyed by compression name (`gzip`, `zstd`).
pub type Decompressors = std::collections::HashMap<String, Decompressor>;

/// The `decompress_streams` of the config (only `gzip` and `zstd`; others are warned about at
/// startup).
pub fn decompressors(c: &crate::config::Config) -> Decompressors {
    c.pull_modes
        .parallel_pull_unpack
        .decompress_streams
        .iter()
        .filter(|(k, _)| *k == "gzip" || *k == "zstd")
        .map(|(k, d)| {
            (
                k.clone(),
                Decompressor {
                    path: PathBuf::from(&d.path),
                    args: d.args.clone(),
                },
            )
        })
        .collect()
}

/// What a blob must hash to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expected<'a> {
    /// The blob (compressed) digest, `sha256:<hex>`.
    pub compressed: Option<&'a str>,
    /// The diffID (digest of the uncompressed tar) from the image config.
    pub diff_id: Option<&'a str>,
}

/// A reader that hashes (sha256) everything read through it.
struct Hashing<R> {
    inner: R,
    hash: sha2::Sha256,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Hashing<R> {
        use sha2::Digest as _;
        Hashing {
            inner,
            hash: sha2::Sha256::new(),
        }
    }

    /// Reads the rest of the stream (tar padding, trailing gzip members) and returns the digest.
    fn finish(mut self) -> std::io::Result<String> {
        use sha2::Digest as _;
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(format!("sha256:{}", hex::encode(self.hash.finalize())))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn check(what: &str, want: Option<&str>, got: &str) -> Result<(), RemoteError> {
    match want {
        Some(w) if !w.starts_with("sha256:") => Err(RemoteError::other(
            "verifying layer",
            format!("unsupported digest algorithm in {w}"),
        )),
        Some(w) if w != got => Err(RemoteError::other(
            "verifying layer",
            format!("{what} did not match: expected {w}, got {got}"),
        )),
        _ => Ok(()),
    }
}

/// Decompresses by media type (plain tar, gzip, zstd; gzip or zstd through `external` when it is
/// given for that compression), applies the tar to `dir` and verifies the blob digest and the
/// diffID of the uncompressed stream (`uncompressed digests did not match` on a mismatch). On an
/// error `dir` may hold part of the layer: the caller discards it.
pub fn apply_blob(
    path: &Path,
    media_type: &str,
    dir: &Path,
    expected: Expected<'_>,
    external: &Decompressors,
) -> Result<u64, RemoteError> {
    let f = std::fs::File::open(path).map_err(|e| RemoteError::other("opening layer blob", e))?;
    let mut r = std::io::BufReader::new(f);
    let head = {
        use std::io::BufRead;
        r.fill_buf()
            .map_err(|e| RemoteError::other("reading layer blob", e))?
            .to_vec()
    };
    let compression = Compression::detect(media_type, &head);
    let io = |e: std::io::Error| RemoteError::other("reading layer blob", e);
    // ((entries applied, diffID) or the error, blob digest): the blob digest is computed over the
    // whole blob even when applying failed, so a corrupt blob is reported as a digest mismatch.
    let (applied, compressed) = match (compression, external.get(compression.name())) {
        (Compression::None, _) => {
            let mut u = Hashing::new(r);
            let applied = apply_tar(&mut u, dir);
            let d = u.finish().map_err(io)?;
            (applied.map(|n| (n, d.clone())), d)
        }
        (c, Some(ext)) => apply_external(r, c, ext, dir)?,
        (c, None) => {
            let mut comp = Hashing::new(r);
            let applied = {
                let mut u: Hashing<Box<dyn Read + '_>> = Hashing::new(if c == Compression::Gzip {
                    Box::new(flate2::read::MultiGzDecoder::new(&mut comp))
                } else {
                    Box::new(
                        zstd::stream::read::Decoder::new(&mut comp)
                            .map_err(|e| RemoteError::other("starting zstd decoder", e))?,
                    )
                });
                apply_tar(&mut u, dir).and_then(|n| Ok((n, u.finish().map_err(io)?)))
            };
            (applied, comp.finish().map_err(io)?)
        }
    };
    check("compressed digest", expected.compressed, &compressed)?;
    let (n, uncompressed) = applied?;
    check("uncompressed digests", expected.diff_id, &uncompressed)?;
    Ok(n)
}

/// What applying a blob gave: (entries applied, diffID) or the error, and the blob digest.
type Applied = (Result<(u64, String), RemoteError>, String);

/// Runs `ext` with the blob on stdin (fed and hashed by a thread) and applies its stdout.
fn apply_external(
    blob: impl Read + Send + 'static,
    c: Compression,
    ext: &Decompressor,
    dir: &Path,
) -> Result<Applied, RemoteError> {
    let ctx = format!("{} decompressor {}", c.name(), ext.path.display());
    let err = |e: &dyn std::fmt::Display| {
        RemoteError::other("decompressing layer", format!("{ctx}: {e}"))
    };
    let mut child = std::process::Command::new(&ext.path)
        .args(&ext.args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| err(&e))?;
    let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(err(&"no pipes to the child process"));
    };
    let feeder = std::thread::spawn(move || {
        let mut comp = Hashing::new(blob);
        // A decompressor that exits early closes the pipe: the error shows in its exit status.
        let _ = std::io::copy(&mut comp, &mut stdin);
        drop(stdin);
        comp.finish()
    });
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut u = Hashing::new(stdout);
    let applied = apply_tar(&mut u, dir).and_then(|n| {
        u.finish()
            .map(|d| (n, d))
            .map_err(|e| RemoteError::other("reading decompressed layer", e))
    });
    if applied.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| err(&e))?;
    let compressed = feeder
        .join()
        .map_err(|_| err(&"stdin feeder panicked"))?
        .map_err(|e| err(&e))?;
    let stderr = errs.join().unwrap_or_default();
    let applied = match (applied, status.success()) {
        (Err(e), _) => Err(e),
        (Ok(_), false) => Err(err(&format!("{status}: {}", stderr.trim()))),
        (ok, true) => ok,
    };
    Ok((applied, compressed))
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

    fn sha(b: &[u8]) -> String {
        use sha2::Digest as _;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
    }

    #[test]
    fn apply_blob_verifies_blob_and_diff_id_for_each_compression() {
        let tar = tar_with(&[("etc/hostname", b"box\n"), ("bin/sh", b"#!")]);
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::stream::encode_all(&tar[..], 3).unwrap();
        let d = tempfile::tempdir().unwrap();
        let gzip_bin = Path::new("/bin/gzip");
        let external: Decompressors = if gzip_bin.exists() {
            [(
                "gzip".to_string(),
                Decompressor {
                    path: gzip_bin.into(),
                    args: vec!["-d".into(), "-c".into()],
                },
            )]
            .into()
        } else {
            Decompressors::new()
        };
        let cases: [(&str, &[u8], &str, &Decompressors); 4] = [
            (
                "plain",
                &tar,
                "application/vnd.oci.image.layer.v1.tar",
                &Decompressors::new(),
            ),
            (
                "gzip",
                &gz,
                "application/vnd.oci.image.layer.v1.tar+gzip",
                &Decompressors::new(),
            ),
            ("gzip-external", &gz, "", &external),
            (
                "zstd",
                &zst,
                "application/vnd.oci.image.layer.v1.tar+zstd",
                &Decompressors::new(),
            ),
        ];
        let diff_id = sha(&tar);
        for (name, blob, media, ext) in cases {
            let path = d.path().join(format!("{name}.blob"));
            std::fs::write(&path, blob).unwrap();
            let out = d.path().join(name);
            std::fs::create_dir(&out).unwrap();
            let digest = sha(blob);
            let ok = Expected {
                compressed: Some(&digest),
                diff_id: Some(&diff_id),
            };
            assert_eq!(
                apply_blob(&path, media, &out, ok, ext).unwrap(),
                2,
                "{name}"
            );
            assert_eq!(std::fs::read(out.join("etc/hostname")).unwrap(), b"box\n");
            let wrong = sha(b"other");
            let e = apply_blob(
                &path,
                media,
                &out,
                Expected {
                    compressed: Some(&digest),
                    diff_id: Some(&wrong),
                },
                ext,
            )
            .unwrap_err();
            assert!(
                e.to_string().contains("uncompressed digests did not match"),
                "{name}: {e}"
            );
            let e = apply_blob(
                &path,
                media,
                &out,
                Expected {
                    compressed: Some(&wrong),
                    diff_id: None,
                },
                ext,
            )
            .unwrap_err();
            assert!(
                e.to_string().contains("compressed digest did not match"),
                "{name}: {e}"
            );
        }
        // A corrupt gzip stream is an error, not a partial success.
        let mut bad = gz.clone();
        let n = bad.len();
        bad.truncate(n / 2);
        let path = d.path().join("bad.blob");
        std::fs::write(&path, &bad).unwrap();
        let out = d.path().join("bad");
        std::fs::create_dir(&out).unwrap();
        assert!(apply_blob(&path, "", &out, Expected::default(), &Decompressors::new()).is_err());
        // A corrupt blob with its expected digest: reported as a digest mismatch, whichever
        // decompressor notices first.
        let mut flipped = gz.clone();
        flipped[n / 2] ^= 0xff;
        std::fs::write(&path, &flipped).unwrap();
        let digest = sha(&gz);
        for ext in [&Decompressors::new(), &external] {
            let e = apply_blob(
                &path,
                "",
                &out,
                Expected {
                    compressed: Some(&digest),
                    diff_id: Some(&diff_id),
                },
                ext,
            )
            .unwrap_err();
            assert!(
                e.to_string().contains("compressed digest did not match"),
                "{e}"
            );
        }
    }

    #[test]
    fn pax_xattrs_are_applied() {
        let d = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let pax = [("SCHILY.xattr.user.soci", b"yes".as_slice())];
        b.append_pax_extensions(pax).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("f").unwrap();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        apply_tar(&tar[..], d.path()).unwrap();
        assert_eq!(
            xattr::get(d.path().join("f"), "user.soci")
                .unwrap()
                .as_deref(),
            Some(&b"yes"[..])
        );
    }
}
