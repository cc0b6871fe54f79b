//! Building one SOCI index (spec §4.5) with zTOCs built in parallel across layers, storing the
//! blobs in a [`ContentStore`] and recording them in the [`ArtifactsDb`].

use std::io::{BufReader, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use soci_index::soci_ztoc::ZtocBuilder;
use soci_index::store::{ArtifactEntry, ArtifactsDb, ContentStore};
use soci_index::{
    BuiltIndex, Descriptor, Error as IndexError, IndexBuilder, IndexVersion, Indexed, LayerJob,
    Manifest, ParsedZtoc, DEFAULT_BUILD_TOOL_IDENTIFIER, EMPTY_CONFIG,
};

use crate::global::BuildOptions;

/// Where layer blobs are read from.
pub(crate) trait LayerSource: Sync {
    /// A reader over the (compressed) layer blob.
    fn open_layer(&self, layer: &Descriptor) -> Result<Box<dyn Read + Send>>;
}

/// Builds (or reuses) the zTOCs of `manifest`, writes them, the prefetch artifacts, the empty
/// config and the index into `store`, records zTOC/prefetch entries in `db`, and prints the
/// per-layer lines. The index entry itself is recorded by the caller (it knows the image).
pub(crate) fn build_index(
    version: IndexVersion,
    manifest_desc: &Descriptor,
    manifest: &Manifest,
    source: &dyn LayerSource,
    store: &ContentStore,
    db: &ArtifactsDb,
    opts: &BuildOptions,
) -> Result<BuiltIndex<ParsedZtoc>, IndexError> {
    let mut builder = IndexBuilder::new(version);
    builder
        .span_size(opts.span_size)
        .min_layer_size(opts.min_layer_size)
        .prefetch_paths(opts.prefetch_paths.iter().cloned());
    for o in &opts.optimizations {
        builder.optimization(*o);
    }
    let plan = builder.plan(manifest_desc, manifest)?;
    let mut jobs: Vec<LayerJob<'_>> = plan.jobs().collect();
    // Largest layer first (longest-processing-time scheduling): a big layer that came last in
    // manifest order would otherwise run alone on one core at the end.
    jobs.sort_by_key(|j| std::cmp::Reverse(j.layer.size));

    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Indexed<ParsedZtoc>)>> = Mutex::new(Vec::new());
    let first_error: Mutex<Option<IndexError>> = Mutex::new(None);
    let workers = opts.jobs.clamp(1, jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if first_error.lock().map_or(true, |e| e.is_some()) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { return };
                match index_layer(job, source, store, db, opts) {
                    Ok(indexed) => {
                        if let Ok(mut r) = results.lock() {
                            r.push((job.position, indexed));
                        }
                    }
                    Err(e) => {
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(IndexError::BuildLayer {
                                layer: job.layer.digest.clone(),
                                source: e.into(),
                            });
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let results = results.into_inner().unwrap_or_default();
    let built = plan.finish(results)?;

    for p in &built.prefetch_artifacts {
        store
            .write(&p.descriptor.digest, &p.bytes)
            .map_err(|e| store_error(&p.layer, e))?;
        db.put(&ArtifactEntry::prefetch(
            p.descriptor.digest.clone(),
            p.descriptor.size,
            &p.layer,
        ))
        .map_err(|e| store_error(&p.layer, e))?;
    }
    for event in &built.events {
        if event.is_warning() {
            eprintln!("[WARN] {event}");
        } else {
            println!("{event}");
        }
    }
    store
        .put(EMPTY_CONFIG)
        .map_err(|e| store_error(&manifest_desc.digest, e))?;
    store
        .write(&built.descriptor.digest, &built.bytes)
        .map_err(|e| store_error(&manifest_desc.digest, e))?;
    Ok(built)
}

fn store_error(layer: &soci_index::Digest, e: soci_index::store::Error) -> IndexError {
    IndexError::BuildLayer {
        layer: layer.clone(),
        source: Box::new(e),
    }
}

/// One layer: reuse a recorded zTOC with the same span size unless `--force`, else build it.
fn index_layer(
    job: &LayerJob<'_>,
    source: &dyn LayerSource,
    store: &ContentStore,
    db: &ArtifactsDb,
    opts: &BuildOptions,
) -> Result<Indexed<ParsedZtoc>> {
    let layer = &job.layer.digest;
    if !opts.force {
        if let Some(entry) = db.find_ztoc(layer, job.span_size)? {
            if let Ok(bytes) = store.read(&entry.digest) {
                if let Ok(z) = ParsedZtoc::from_bytes(bytes) {
                    return Ok(Indexed::reused(z));
                }
            }
        }
    }
    let start = Instant::now();
    let reader = source.open_layer(job.layer)?;
    let ztoc = ZtocBuilder::new()
        .span_size(job.span_size)
        .build_tool_identifier(DEFAULT_BUILD_TOOL_IDENTIFIER)
        .build(BufReader::with_capacity(1 << 20, reader))
        .with_context(|| format!("failed to build ztoc for layer {layer}"))?;
    let parsed = ParsedZtoc::from_ztoc(ztoc)?;
    let bytes = soci_index::ZtocInfo::bytes(&parsed);
    let digest = store.put(bytes)?;
    db.put(&ArtifactEntry::ztoc(
        digest,
        bytes.len() as u64,
        layer,
        job.span_size,
    ))?;
    if !opts.quiet {
        let secs = start.elapsed().as_secs_f64();
        let mib = job.layer.size as f64 / (1024.0 * 1024.0);
        eprintln!(
            "layer {layer}: {mib:.1} MiB indexed in {secs:.2}s ({:.1} MiB/s)",
            if secs > 0.0 { mib / secs } else { 0.0 }
        );
    }
    Ok(Indexed::built(parsed))
}
