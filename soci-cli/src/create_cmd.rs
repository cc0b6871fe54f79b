//! `soci create IMAGE_REF`: a v1 SOCI index per platform for an image in containerd (spec §4.5).

use std::collections::HashMap;
use std::io::Read;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use soci_index::store::{ArtifactEntry, ContentStore};
use soci_index::{
    label, media_type, Descriptor, Digest, ImageIndex, IndexVersion, Manifest, Platform,
    EMPTY_CONFIG,
};

use crate::containerd_io::Containerd;
use crate::convert_core::is_index_media_type;
use crate::global::{BuildFlags, ContentStoreKind, GlobalOpts};
use crate::indexing::{build_index, LayerSource};

/// Arguments of `soci create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The image (as named in containerd).
    pub(crate) image_ref: Option<String>,
    #[command(flatten)]
    pub(crate) build: BuildFlags,
}

/// Layers read from containerd's content store into temp files.
pub(crate) struct ContainerdLayers<'a> {
    pub(crate) ctd: &'a Containerd,
}

impl LayerSource for ContainerdLayers<'_> {
    fn open_layer(&self, layer: &Descriptor) -> Result<Box<dyn Read + Send>> {
        let mut f = tempfile::tempfile().context("failed to create a temp file")?;
        self.ctd.read_to(&layer.digest, &mut f)?;
        std::io::Seek::rewind(&mut f)?;
        Ok(Box::new(f))
    }
}

/// The platform manifests to index (spec §4.5 step 1), with their platform strings.
pub(crate) fn platform_manifests(
    ctd: &Containerd,
    target: &Descriptor,
    flags: &[String],
    all: bool,
) -> Result<Vec<(Descriptor, Platform)>> {
    let wanted: Vec<Platform> = flags
        .iter()
        .map(|p| p.parse::<Platform>().map_err(anyhow::Error::from))
        .collect::<Result<_>>()?;
    if !is_index_media_type(&target.media_type) {
        let manifest = Manifest::from_json(&ctd.read(&target.digest)?)?;
        let platform = match &target.platform {
            Some(p) => p.clone(),
            None => config_platform(ctd, &manifest)?,
        };
        let wanted = if wanted.is_empty() && !all {
            vec![Platform::host()]
        } else {
            wanted
        };
        if !all && !wanted.iter().any(|w| w.matches_strict(&platform)) {
            bail!("image manifest for {}: not found", wanted[0]);
        }
        return Ok(vec![(target.clone(), platform)]);
    }
    let index = ImageIndex::from_json(&ctd.read(&target.digest)?)?;
    let children: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| d.artifact_type != media_type::SOCI_INDEX_V2)
        .collect();
    let wanted = if all {
        children.iter().filter_map(|d| d.platform.clone()).collect()
    } else if wanted.is_empty() {
        vec![Platform::host()]
    } else {
        wanted
    };
    let mut out: Vec<(Descriptor, Platform)> = Vec::new();
    for w in wanted {
        let mut found = None;
        for d in &children {
            let Some(p) = &d.platform else {
                bail!("image index entry {} has no platform", d.digest);
            };
            if p.matches_strict(&w) {
                found = Some(((*d).clone(), p.clone()));
                break;
            }
        }
        let Some(found) = found else {
            bail!("image manifest for {w}: not found");
        };
        if !out.iter().any(|(d, _)| d.digest == found.0.digest) {
            out.push(found);
        }
    }
    Ok(out)
}

fn config_platform(ctd: &Containerd, manifest: &Manifest) -> Result<Platform> {
    #[derive(serde::Deserialize)]
    struct C {
        #[serde(default)]
        os: String,
        #[serde(default)]
        architecture: String,
        #[serde(default)]
        variant: String,
    }
    let c: C = serde_json::from_slice(&ctd.read(&manifest.config.digest)?)
        .context("failed to decode image config")?;
    Ok(Platform::new(c.os, c.architecture, c.variant))
}

pub(crate) fn run(args: CreateArgs, global: &GlobalOpts) -> Result<()> {
    let Some(image_ref) = args.image_ref.filter(|s| !s.is_empty()) else {
        bail!("source image needs to be specified");
    };
    let opts = args.build.options()?;
    let db = global.artifacts_db()?;
    let mut ctd = Containerd::connect(global)?;
    let (target, _) = ctd.image(&image_ref)?;
    let manifests = platform_manifests(
        &ctd,
        &target,
        &args.build.platforms,
        args.build.all_platforms,
    )?;

    // zTOCs and indexes are built into a local layout: the `soci` store itself, or a staging
    // layout that is then copied into containerd (with GC labels, inside a lease).
    let staging;
    let store = match global.content_store {
        ContentStoreKind::Soci => global.soci_store()?,
        ContentStoreKind::Containerd => {
            staging = tempfile::Builder::new()
                .prefix("soci-create-")
                .tempdir()
                .context("failed to create a temporary directory")?;
            ctd.start_lease()?;
            ContentStore::open(staging.path())?
        }
    };
    let to_containerd = global.content_store == ContentStoreKind::Containerd;
    let mut last_index = None;
    for (desc, platform) in manifests {
        let manifest = Manifest::from_json(&ctd.read(&desc.digest)?)?;
        if to_containerd && !opts.force {
            // Make recorded zTOCs readable for reuse (spec §4.5: "already exists").
            for layer in &manifest.layers {
                if let Some(e) = db.find_ztoc(&layer.digest, opts.span_size)? {
                    if let Ok(bytes) = ctd.read(&e.digest) {
                        store.write(&e.digest, &bytes)?;
                    }
                }
            }
        }
        let source = ContainerdLayers { ctd: &ctd };
        let built = build_index(
            IndexVersion::V1,
            &desc,
            &manifest,
            &source,
            &store,
            &db,
            &opts,
        )?;
        if to_containerd {
            for blob in built.index.blobs() {
                let bytes = store.read(&blob.digest)?;
                ctd.write(&blob.digest, &bytes, HashMap::new())?;
            }
            let config = Digest::sha256_of(EMPTY_CONFIG);
            ctd.write(&config, EMPTY_CONFIG, HashMap::new())?;
            let labels: HashMap<String, String> = built.index.gc_labels().into_iter().collect();
            ctd.write(&built.descriptor.digest, &built.bytes, labels)?;
        }
        db.put(&ArtifactEntry::index(
            built.descriptor.digest.clone(),
            built.descriptor.size,
            &desc.digest,
            target.digest.as_str(),
            &platform.to_string(),
            media_type::SOCI_INDEX_V1,
        ))?;
        last_index = Some(built.descriptor.digest.clone());
    }
    let last = last_index.ok_or_else(|| anyhow!("no platforms to index"))?;
    let mut labels = HashMap::new();
    labels.insert(label::GC_REF_SOCI_INDEX.to_owned(), last.to_string());
    ctd.label_image(&image_ref, labels)?;
    ctd.end_lease();
    Ok(())
}
