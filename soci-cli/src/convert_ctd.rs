//! `soci convert IMAGE DEST` for images in containerd (spec §4.6): v2 indexes, rewritten
//! manifests and the new OCI index are written to containerd's content store with GC labels, and
//! the image `DEST` is created or updated.

use std::collections::HashMap;

use anyhow::{Context, Result};
use soci_index::store::ContentStore;
use soci_index::{Descriptor, ImageIndex, Index, Manifest};

use crate::containerd_io::Containerd;
use crate::convert_core::{collect_graph, convert, is_index_media_type, Workspace};
use crate::create_cmd::ContainerdLayers;
use crate::global::{BuildOptions, ContentStoreKind, GlobalOpts};

pub(crate) fn run(
    source: &str,
    dest: &str,
    platforms: &[String],
    all_platforms: bool,
    global: &GlobalOpts,
    opts: &BuildOptions,
) -> Result<()> {
    let db = global.artifacts_db()?;
    let mut ctd = Containerd::connect(global)?;
    let (target, _) = ctd.image(source)?;
    ctd.start_lease()?;
    let staging = tempfile::Builder::new()
        .prefix("soci-convert-")
        .tempdir()
        .context("failed to create a temporary directory")?;
    let src = ContentStore::open(staging.path().join("src"))?;
    let work = ContentStore::open(staging.path().join("work"))?;
    // Manifests, indexes and configs of the image (small) are copied locally; layers are read
    // from containerd when a zTOC is built.
    let mut queue = vec![target.clone()];
    while let Some(d) = queue.pop() {
        if src.contains(&d.digest) {
            continue;
        }
        let Ok(bytes) = ctd.read(&d.digest) else {
            continue; // partial multi-platform pulls: absent manifests are left alone
        };
        src.write(&d.digest, &bytes)?;
        if is_index_media_type(&d.media_type) {
            queue.extend(ImageIndex::from_json(&bytes)?.manifests);
        } else if let Ok(m) = Manifest::from_json(&bytes) {
            queue.push(m.config);
        }
    }
    // Recorded zTOCs are made readable for reuse ("already exists").
    if !opts.force {
        for e in db.entries_of(soci_index::store::ArtifactKind::Ztoc)? {
            if e.span_size == opts.span_size && !work.contains(&e.digest) {
                if let Ok(bytes) = ctd.read(&e.digest) {
                    work.write(&e.digest, &bytes)?;
                }
            }
        }
    }
    let layers = ContainerdLayers { ctd: &ctd };
    let ws = Workspace {
        src: Some(&src),
        work: &work,
        layers: Some(&layers),
    };
    let converted = convert(&ws, &db, &target, platforms, all_platforms, opts)?;
    let root = converted.descriptor;

    let soci_store = match global.content_store {
        ContentStoreKind::Soci => Some(global.soci_store()?),
        ContentStoreKind::Containerd => None,
    };
    // Every present blob of the new image, leaves first, with its GC labels.
    let graph = collect_graph(&ws, &root)?;
    for d in graph.iter().rev() {
        let Some(bytes) = ws.read(&d.digest)? else {
            continue;
        };
        let labels: HashMap<String, String> = if is_index_media_type(&d.media_type) {
            ImageIndex::from_json(&bytes)?
                .gc_labels()
                .into_iter()
                .collect()
        } else if let Ok(index) = Index::from_json(&bytes) {
            if let Some(s) = &soci_store {
                s.write(&d.digest, &bytes)?;
                for b in index.blobs() {
                    if let Some(blob) = ws.read(&b.digest)? {
                        s.write(&b.digest, &blob)?;
                    }
                }
                s.put(soci_index::EMPTY_CONFIG)?;
            }
            index.gc_labels().into_iter().collect()
        } else if let Ok(m) = Manifest::from_json(&bytes) {
            m.gc_labels().into_iter().collect()
        } else {
            HashMap::new()
        };
        ctd.write(&d.digest, &bytes, labels)?;
    }
    ctd.put_image(
        dest,
        &Descriptor::new(root.media_type.clone(), root.digest.clone(), root.size),
    )?;
    // Dropping the connection ends the lease.
    println!("{}", root.digest);
    Ok(())
}
