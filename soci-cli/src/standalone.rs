//! `soci convert --standalone`: OCI layout (directory or tar) in, OCI layout out, no containerd.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use soci_index::store::{ArtifactsDb, ContentStore};
use soci_index::{media_type, Descriptor, ImageIndex};

use crate::convert_cmd::ConvertArgs;
use crate::convert_core::{collect_graph, convert, is_index_media_type, Workspace};
use crate::global::BuildOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Archive,
    Dir,
}

pub(crate) fn run(
    src: &str,
    dst: &str,
    args: &ConvertArgs,
    opts: &BuildOptions,
    debug: bool,
) -> Result<()> {
    let format = match args.format.as_str() {
        "oci-archive" => Format::Archive,
        "oci-dir" => Format::Dir,
        f => bail!("unsupported output format \"{f}\": must be \"oci-archive\" or \"oci-dir\""),
    };
    if crate::registry_io::is_registry_ref(src) || crate::registry_io::is_registry_ref(dst) {
        return crate::registry_io::run(src, dst, format == Format::Dir, args, opts, debug);
    }
    let tmp = temp_dir(Path::new(dst))?;
    let src_store = open_input(src, tmp.path())?;
    finish_local(
        &src_store,
        dst,
        format == Format::Dir,
        tmp.path(),
        args,
        opts,
    )
}

/// The source layout: a directory used in place, or a tar extracted under `tmp`.
pub(crate) fn open_input(src: &str, tmp: &Path) -> Result<ContentStore> {
    let src_path = Path::new(src);
    let meta = fs::metadata(src_path).map_err(|_| anyhow!("failed to access input {src}"))?;
    let src_dir = if meta.is_dir() {
        src_path.to_path_buf()
    } else {
        let dir = tmp.join("input");
        extract_tar(src_path, &dir)?;
        dir
    };
    ContentStore::open_existing(&src_dir)
        .with_context(|| format!("{src} is not an OCI image layout"))
}

/// Converts `src_store` and writes the result to the local path `dst`.
pub(crate) fn finish_local(
    src_store: &ContentStore,
    dst: &str,
    dir_output: bool,
    tmp: &Path,
    args: &ConvertArgs,
    opts: &BuildOptions,
) -> Result<()> {
    let work_dir = if dir_output {
        PathBuf::from(dst)
    } else {
        tmp.join("work")
    };
    let work = ContentStore::open(&work_dir)
        .with_context(|| format!("failed to create OCI layout {}", work_dir.display()))?;
    let out = convert_layout(src_store, &work, &tmp.join("artifacts.redb"), args, opts)?;
    let ws = Workspace {
        src: Some(src_store),
        work: &work,
        layers: None,
    };
    if dir_output {
        finish_dir(&ws, &out)?;
    } else {
        write_archive(&ws, &out, Path::new(dst))?;
    }
    println!("{}", out.digest);
    Ok(())
}

/// Converts the image in `src` (root chosen from its `index.json`) writing into `work`; returns
/// the descriptor of the converted OCI index.
pub(crate) fn convert_layout(
    src: &ContentStore,
    work: &ContentStore,
    db_path: &Path,
    args: &ConvertArgs,
    opts: &BuildOptions,
) -> Result<Descriptor> {
    let ws = Workspace {
        src: Some(src),
        work,
        layers: None,
    };
    let root = choose_root(&ws, src)?;
    // A throw-away artifacts DB: standalone conversion leaves no state behind.
    let db = ArtifactsDb::open(db_path)?;
    let converted = convert(
        &ws,
        &db,
        &root,
        &args.build.platforms,
        args.build.all_platforms,
        opts,
    )?;
    Ok(converted.descriptor)
}

/// Spec §4.6 standalone root selection.
fn choose_root(ws: &Workspace<'_>, src: &ContentStore) -> Result<Descriptor> {
    let index_json = src.read_index_json()?;
    let top = ImageIndex::from_json(&index_json).context("invalid index.json")?;
    let (list, list_desc) = match top.manifests.as_slice() {
        [] => bail!("index.json lists no images"),
        [only] if !is_index_media_type(&only.media_type) => return Ok(only.clone()),
        [only] => {
            let bytes = ws
                .read(&only.digest)?
                .ok_or_else(|| anyhow!("{}: not found", only.digest))?;
            (ImageIndex::from_json(&bytes)?, Some(only.clone()))
        }
        _ => (top, None),
    };
    let mut filtered = list.clone();
    filtered.manifests.retain(|d| ws.contains(&d.digest));
    if filtered.manifests.is_empty() {
        bail!("none of the images listed in the input are present");
    }
    if let [only] = filtered.manifests.as_slice() {
        if !is_index_media_type(&only.media_type) && list_desc.is_none() {
            return Ok(only.clone());
        }
    }
    match list_desc {
        Some(d) if filtered.manifests.len() == list.manifests.len() => Ok(d),
        _ => {
            if filtered.media_type.is_empty() {
                media_type::OCI_INDEX.clone_into(&mut filtered.media_type);
            }
            let bytes = filtered.to_json();
            let digest = ws.work.put(&bytes)?;
            Ok(Descriptor::new(
                filtered.media_type.clone(),
                digest,
                bytes.len() as u64,
            ))
        }
    }
}

fn index_json_for(root: &Descriptor) -> Vec<u8> {
    ImageIndex::new(vec![root.clone()]).to_json()
}

/// Output directory: link (or copy) the source blobs the new image needs, then `index.json`.
fn finish_dir(ws: &Workspace<'_>, root: &Descriptor) -> Result<()> {
    for d in collect_graph(ws, root)? {
        if ws.work.contains(&d.digest) {
            continue;
        }
        let Some(from) = ws.path(&d.digest) else {
            continue;
        };
        let to = ws.work.blob_path(&d.digest);
        if fs::hard_link(&from, &to).is_err() {
            let f =
                File::open(&from).with_context(|| format!("failed to open {}", from.display()))?;
            ws.work.write_from(&d.digest, Some(d.size), f)?;
        }
    }
    ws.work.write_index_json(&index_json_for(root))?;
    Ok(())
}

/// Output tar: `oci-layout`, `index.json`, then every blob of the graph (no Docker
/// `manifest.json`). Deterministic headers; written to a temp file and renamed.
fn write_archive(ws: &Workspace<'_>, root: &Descriptor, dst: &Path) -> Result<()> {
    let graph = collect_graph(ws, root)?;
    let parent = dst
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(parent)
        .with_context(|| format!("failed to create output in {}", parent.display()))?;
    {
        let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, tmp.as_file()));
        let header = |size: u64, dir: bool| {
            let mut h = tar::Header::new_ustar();
            h.set_size(size);
            h.set_mode(if dir { 0o755 } else { 0o644 });
            h.set_mtime(0);
            h.set_entry_type(if dir {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h
        };
        let layout = format!(
            "{{\"imageLayoutVersion\":\"{}\"}}",
            soci_index::store::OCI_LAYOUT_VERSION
        );
        let index = index_json_for(root);
        for dir in ["blobs/", "blobs/sha256/"] {
            let mut h = header(0, true);
            tar.append_data(&mut h, dir, std::io::empty())?;
        }
        let mut h = header(layout.len() as u64, false);
        tar.append_data(&mut h, "oci-layout", layout.as_bytes())?;
        let mut h = header(index.len() as u64, false);
        tar.append_data(&mut h, "index.json", index.as_slice())?;
        for d in &graph {
            let Some(p) = ws.path(&d.digest) else {
                continue;
            };
            let f = File::open(&p).with_context(|| format!("failed to open {}", p.display()))?;
            let size = f.metadata()?.len();
            let name = format!("blobs/{}/{}", d.digest.algorithm(), d.digest.encoded());
            let mut h = header(size, false);
            tar.append_data(&mut h, name, f)
                .with_context(|| format!("failed to write {}", dst.display()))?;
        }
        tar.into_inner()?.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(dst)
        .with_context(|| format!("failed to write {}", dst.display()))?;
    Ok(())
}

fn extract_tar(tar_path: &Path, dir: &Path) -> Result<()> {
    let f = File::open(tar_path)
        .map_err(|_| anyhow!("failed to access input {}", tar_path.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(f));
    archive.set_preserve_ownerships(false);
    archive.set_preserve_permissions(false);
    fs::create_dir_all(dir)?;
    archive
        .unpack(dir)
        .with_context(|| format!("failed to extract {}", tar_path.display()))
}

/// A temp dir under the OS temp dir, else next to the output.
pub(crate) fn temp_dir(dst: &Path) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("soci-convert-")
        .tempdir()
        .or_else(|_| {
            let parent = dst
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| Path::new("."));
            tempfile::Builder::new()
                .prefix(".soci-convert-")
                .tempdir_in(parent)
        })
        .context("failed to create a temporary directory")
}
