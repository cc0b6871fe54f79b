//! `soci convert` (SOCI index manifest v2, spec §4.6) over local OCI layouts: the source blobs
//! are read from an optional source layout, everything new is written to a work layout.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use soci_index::store::{ArtifactsDb, ContentStore};
use soci_index::{
    convert_image_index, convert_manifest, media_type, soci_index_descriptor,
    upsert_soci_index_descriptor, Descriptor, Digest, Error as IndexError, ImageIndex,
    IndexVersion, Manifest, Platform,
};

use crate::global::BuildOptions;
use crate::indexing::{build_index, LayerSource};

/// Blobs visible to a conversion: the work layout first, then the source layout.
pub(crate) struct Workspace<'a> {
    pub(crate) src: Option<&'a ContentStore>,
    pub(crate) work: &'a ContentStore,
    /// Where layers not present locally are read from (containerd).
    pub(crate) layers: Option<&'a dyn LayerSource>,
}

impl std::fmt::Debug for Workspace<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("src", &self.src)
            .field("work", &self.work)
            .finish_non_exhaustive()
    }
}

impl Workspace<'_> {
    pub(crate) fn path(&self, d: &Digest) -> Option<PathBuf> {
        if self.work.contains(d) {
            return Some(self.work.blob_path(d));
        }
        self.src.filter(|s| s.contains(d)).map(|s| s.blob_path(d))
    }

    pub(crate) fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_some()
    }

    pub(crate) fn read(&self, d: &Digest) -> Result<Option<Vec<u8>>> {
        match self.path(d) {
            Some(p) => {
                Ok(Some(std::fs::read(&p).with_context(|| {
                    format!("failed to read {}", p.display())
                })?))
            }
            None => Ok(None),
        }
    }

    fn must_read(&self, d: &Digest) -> Result<Vec<u8>> {
        self.read(d)?.ok_or_else(|| anyhow!("{d}: not found"))
    }
}

impl LayerSource for Workspace<'_> {
    fn open_layer(&self, layer: &Descriptor) -> Result<Box<dyn Read + Send>> {
        if let (None, Some(remote)) = (self.path(&layer.digest), self.layers) {
            return remote.open_layer(layer);
        }
        let p = self
            .path(&layer.digest)
            .ok_or_else(|| anyhow!("layer {}: not found", layer.digest))?;
        let f = File::open(&p).with_context(|| format!("failed to open {}", p.display()))?;
        Ok(Box::new(f))
    }
}

pub(crate) fn is_index_media_type(m: &str) -> bool {
    m == media_type::OCI_INDEX || m == media_type::DOCKER_MANIFEST_LIST
}

/// Platform of a single-manifest image, read from its config.
fn image_platform(ws: &Workspace<'_>, manifest: &Manifest) -> Result<Platform> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        os: String,
        #[serde(default)]
        architecture: String,
        #[serde(default)]
        variant: String,
    }
    let bytes = ws.must_read(&manifest.config.digest)?;
    let c: Config = serde_json::from_slice(&bytes)
        .with_context(|| format!("failed to decode image config {}", manifest.config.digest))?;
    Ok(Platform::new(c.os, c.architecture, c.variant))
}

/// The outcome of a conversion.
#[derive(Debug)]
pub(crate) struct Converted {
    /// `{mediaType: OCI index, digest, size}` of the new image index.
    pub(crate) descriptor: Descriptor,
}

/// Converts the image rooted at `target`; returns the new OCI image index (already written to
/// the work layout).
pub(crate) fn convert(
    ws: &Workspace<'_>,
    db: &ArtifactsDb,
    target: &Descriptor,
    platform_flags: &[String],
    all_platforms: bool,
    opts: &BuildOptions,
) -> Result<Converted> {
    // Step 1–2: starting index and candidate platforms.
    let (mut image_index, default_platform) = if is_index_media_type(&target.media_type) {
        let bytes = ws.must_read(&target.digest)?;
        (convert_image_index(&bytes)?, Platform::host())
    } else {
        let bytes = ws.must_read(&target.digest)?;
        let manifest = Manifest::from_json(&bytes)?;
        let platform = match &target.platform {
            Some(p) => p.clone(),
            None => image_platform(ws, &manifest)?,
        };
        let desc = target.clone().with_platform(platform.clone());
        (ImageIndex::new(vec![desc]), platform)
    };
    let is_image = |d: &Descriptor| d.artifact_type != media_type::SOCI_INDEX_V2;
    let mut platforms: Vec<Platform> = if all_platforms {
        image_index
            .manifests
            .iter()
            .filter(|d| is_image(d))
            .filter_map(|d| d.platform.clone())
            .collect()
    } else if !platform_flags.is_empty() {
        platform_flags
            .iter()
            .map(|p| p.parse::<Platform>().map_err(anyhow::Error::from))
            .collect::<Result<_>>()?
    } else {
        vec![default_platform]
    };
    let mut seen: Vec<Platform> = Vec::new();
    platforms.retain(|p| {
        let n = p.normalized();
        if seen.contains(&n) {
            false
        } else {
            seen.push(n);
            true
        }
    });

    // Step 3: one v2 index per platform.
    struct Built {
        index: Descriptor,
        platform: Platform,
    }
    let mut built: BTreeMap<Digest, Built> = BTreeMap::new();
    let mut last_skip = None;
    for platform in &platforms {
        let mut found = None;
        for d in image_index.manifests.iter().filter(|d| is_image(d)) {
            let Some(p) = &d.platform else {
                bail!("image index entry {} has no platform", d.digest);
            };
            if p.matches_strict(platform) {
                found = Some(d.clone());
                break;
            }
        }
        let Some(desc) = found else {
            bail!("image manifest for {platform}: not found");
        };
        let bytes = ws.must_read(&desc.digest)?;
        let manifest = Manifest::from_json(&bytes)?;
        let result = build_index(IndexVersion::V2, &desc, &manifest, ws, ws.work, db, opts);
        match result {
            Ok(b) => {
                let p = desc.platform.clone().unwrap_or_else(|| platform.clone());
                built.insert(
                    desc.digest.clone(),
                    Built {
                        index: b.descriptor,
                        platform: p,
                    },
                );
            }
            Err(IndexError::NoZtocs) => {
                eprintln!(
                    "[WARN] skipping platform {platform}: {}",
                    IndexError::NoZtocs
                );
                last_skip = Some(IndexError::NoZtocs);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if built.is_empty() {
        return Err(last_skip.map_or_else(|| anyhow!("no platforms to convert"), Into::into));
    }

    // Step 4: rewrite every image manifest.
    let mut soci_descriptors = Vec::new();
    for desc in image_index.manifests.iter_mut().filter(|d| is_image(d)) {
        let index = built.get(&desc.digest);
        let Some(bytes) = ws.read(&desc.digest)? else {
            if index.is_some() {
                bail!("{}: not found", desc.digest);
            }
            continue;
        };
        let conv = convert_manifest(&bytes, index.map(|b| &b.index.digest))?;
        ws.work.write(&conv.descriptor.digest, &conv.bytes)?;
        conv.update_descriptor(desc);
        if let Some(b) = index {
            soci_descriptors.push((b, conv.descriptor.digest.clone()));
        }
    }
    // Step 5: add (or replace) the SOCI index descriptors.
    let mut db_updates = Vec::new();
    for (b, manifest_digest) in soci_descriptors {
        let d = soci_index_descriptor(&b.index, b.platform.clone(), &manifest_digest);
        upsert_soci_index_descriptor(&mut image_index, d);
        db_updates.push((b.index.clone(), manifest_digest, b.platform.to_string()));
    }
    // Step 6: the new image index.
    let bytes = image_index.to_json();
    let digest = ws.work.put(&bytes)?;
    let descriptor = Descriptor::new(media_type::OCI_INDEX, digest.clone(), bytes.len() as u64);
    // Step 7: artifacts DB.
    let entries: Vec<_> = db_updates
        .into_iter()
        .map(|(index, manifest, platform)| {
            soci_index::store::ArtifactEntry::index(
                index.digest.clone(),
                index.size,
                &manifest,
                digest.as_str(),
                &platform,
                media_type::SOCI_INDEX_V2,
            )
        })
        .collect();
    db.put_all(&entries)?;
    Ok(Converted { descriptor })
}

/// Every blob reachable from `root` that is present (indexes → manifests → config + layers;
/// subjects are not followed), `root` first, without duplicates.
pub(crate) fn collect_graph(ws: &Workspace<'_>, root: &Descriptor) -> Result<Vec<Descriptor>> {
    let mut out: Vec<Descriptor> = Vec::new();
    let mut queue = vec![root.clone()];
    while let Some(d) = queue.pop() {
        if out.iter().any(|o| o.digest == d.digest) || !ws.contains(&d.digest) {
            continue;
        }
        let is_manifest =
            d.media_type == media_type::OCI_MANIFEST || d.media_type == media_type::DOCKER_MANIFEST;
        if is_index_media_type(&d.media_type) {
            let idx = ImageIndex::from_json(&ws.must_read(&d.digest)?)?;
            queue.extend(idx.manifests.into_iter().rev());
        } else if is_manifest {
            let m = Manifest::from_json(&ws.must_read(&d.digest)?)?;
            queue.extend(m.layers.into_iter().rev());
            queue.push(m.config);
        }
        out.push(d);
    }
    Ok(out)
}
