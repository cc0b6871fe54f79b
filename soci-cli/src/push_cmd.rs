//! `soci push REF`: push the newest v1 SOCI index of each platform with its blobs (spec §4.9).

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use soci_index::store::ArtifactKind;
use soci_index::{media_type, Descriptor, Digest, Index};
use soci_registry::Reference;

use crate::containerd_io::Containerd;
use crate::global::{ContentStoreKind, GlobalOpts};
use crate::registry_io::{client_for, reg_digest, runtime, upload_file};

/// Arguments of `soci push`.
#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// The image (as named in containerd and in the registry).
    pub(crate) image_ref: Option<String>,
    /// Push for this platform (repeatable; default: the host platform).
    #[arg(long = "platform", short = 'p')]
    pub(crate) platforms: Vec<String>,
    /// Push for every platform of the image.
    #[arg(long)]
    pub(crate) all_platforms: bool,
    /// What to do when the registry already has a SOCI index: warn, skip or allow.
    #[arg(long, default_value = "warn")]
    pub(crate) existing_index: String,
    /// Blob uploads in flight (0 means 3).
    #[arg(long, default_value_t = 3)]
    pub(crate) max_concurrent_uploads: usize,
    /// Print only the index digest.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
    /// Registry credentials, `user[:password]`.
    #[arg(long, short = 'u')]
    pub(crate) user: Option<String>,
    /// Talk plain HTTP to the registry.
    #[arg(long)]
    pub(crate) plain_http: bool,
    /// Accepted for compatibility; ignored.
    #[arg(long, short = 'k', hide = true)]
    pub(crate) skip_verify: bool,
    /// Accepted for compatibility; ignored.
    #[arg(long, hide = true)]
    pub(crate) refresh: Option<String>,
    /// Accepted for compatibility; ignored.
    #[arg(long, hide = true)]
    pub(crate) hosts_dir: Vec<String>,
    /// Accepted for compatibility; ignored.
    #[arg(long, hide = true)]
    pub(crate) tlscacert: Vec<String>,
    /// Accepted for compatibility; ignored.
    #[arg(long, hide = true)]
    pub(crate) tlscert: Option<String>,
    /// Accepted for compatibility; ignored.
    #[arg(long, hide = true)]
    pub(crate) tlskey: Option<String>,
    /// Accepted for compatibility; ignored.
    #[arg(long, hide = true)]
    pub(crate) http_dump: bool,
    /// Accepted for compatibility; ignored.
    #[arg(long, hide = true)]
    pub(crate) http_trace: bool,
    /// Accepted for compatibility; ignored.
    #[arg(long, hide = true, env = "CONTAINERD_SNAPSHOTTER")]
    pub(crate) snapshotter: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    Warn,
    Skip,
    Allow,
}

pub(crate) fn run(args: PushArgs, global: &GlobalOpts) -> Result<()> {
    let existing = match args.existing_index.as_str() {
        "warn" => Existing::Warn,
        "skip" => Existing::Skip,
        "allow" => Existing::Allow,
        v => {
            bail!("unexpected value for flag existing-index: {v}, expected types [warn skip allow]")
        }
    };
    let Some(image_ref) = args.image_ref.clone().filter(|s| !s.is_empty()) else {
        bail!("image reference needs to be specified");
    };
    let db = global.artifacts_db()?;
    let ctd = Containerd::connect(global)?;
    let (target, _) = ctd.image(&image_ref)?;
    let manifests =
        crate::create_cmd::platform_manifests(&ctd, &target, &args.platforms, args.all_platforms)?;
    let reference: Reference = image_ref
        .parse()
        .with_context(|| format!("invalid reference {image_ref}"))?;
    let client = client_for(args.user.as_deref(), args.plain_http, global.debug)?;
    let rt = runtime()?;
    let soci_store = match global.content_store {
        ContentStoreKind::Soci => Some(global.soci_store()?),
        ContentStoreKind::Containerd => None,
    };
    let read = |d: &Digest| -> Result<Vec<u8>> {
        match &soci_store {
            Some(s) => Ok(s.read(d)?),
            None => ctd.read(d),
        }
    };
    // The file a blob is uploaded from: the `soci` store's blob file, or containerd's content
    // copied into a staging directory.
    let staging = tempfile::tempdir().context("failed to create a temporary directory")?;
    let blob_file = |d: &Descriptor| -> Result<PathBuf> {
        match &soci_store {
            Some(s) if s.contains(&d.digest) => Ok(s.blob_path(&d.digest)),
            Some(_) => bail!("content digest {}: not found", d.digest),
            None => {
                let p = staging.path().join(d.digest.encoded());
                let mut f = std::fs::File::create(&p)
                    .with_context(|| format!("failed to create {}", p.display()))?;
                ctd.read_to(&d.digest, &mut f)?;
                Ok(p)
            }
        }
    };
    let entries = db.entries_of(ArtifactKind::Index)?;
    for (manifest, platform) in manifests {
        let mut candidates: Vec<_> = entries
            .iter()
            .filter(|e| e.original_digest == manifest.digest.as_str())
            .collect();
        if candidates
            .iter()
            .any(|e| e.artifact_type == media_type::SOCI_INDEX_V2)
        {
            println!("[WARN] Skippping SOCI index manifest v2. You should push the whole image with higher level tools like finch or nerdctl.");
        }
        candidates.retain(|e| e.artifact_type != media_type::SOCI_INDEX_V2);
        let Some(entry) = candidates.iter().max_by_key(|e| e.created_at) else {
            bail!("could not find any soci index manifest v1 to push for platform {platform}");
        };
        let index_digest = entry.digest.clone();

        if existing != Existing::Allow {
            if !args.quiet {
                println!("checking if a soci index already exists in remote repository...");
            }
            let refs = rt
                .block_on(client.referrers(
                    &reference,
                    &reg_digest(&manifest.digest)?,
                    Some(media_type::SOCI_INDEX_V1),
                ))
                .context("failed to list referrers")?;
            if !refs.descriptors.is_empty() {
                let msg = match refs.descriptors.as_slice() {
                    [one] => format!(
                        "soci index found in remote repository with digest: {}",
                        one.digest
                    ),
                    _ => "multiple soci indices found in remote repository".to_owned(),
                };
                if existing == Existing::Skip {
                    println!(
                        "{msg}: skipping pushing artifacts for image manifest: {}",
                        manifest.digest
                    );
                    continue;
                }
                println!("[WARN] {msg}: pushing index anyway");
            }
        }
        if args.quiet {
            println!("{index_digest}");
        } else {
            println!("pushing soci index with digest: {index_digest}");
        }
        let index_bytes = read(&index_digest)?;
        let index = Index::from_json(&index_bytes)?;
        // Successors: subject, config, then every blob in layers.
        let mut blobs: Vec<Descriptor> = Vec::new();
        blobs.push(index.config().clone());
        blobs.extend(index.blobs().iter().cloned());
        if let Some(subject) = index.subject() {
            let exists = rt.block_on(
                client.head_manifest(&reference.to_digest(&reg_digest(&subject.digest)?)),
            );
            if !matches!(exists, Ok(Some(_))) {
                let bytes = ctd.read(&subject.digest)?;
                rt.block_on(client.push_manifest(
                    &reference.to_digest(&reg_digest(&subject.digest)?),
                    &subject.media_type,
                    bytes.into(),
                ))
                .with_context(|| format!("failed to push {}", subject.digest))?;
            }
        }
        // Existence checks and staging happen here (containerd reads block on their own
        // runtime); the uploads then stream from files with at most --max-concurrent-uploads
        // in flight, so no blob is held in memory.
        let mut uploads = Vec::new();
        for blob in &blobs {
            let rd = reg_digest(&blob.digest)?;
            if rt.block_on(client.blob_exists(&reference, &rd))?.is_some() {
                if !args.quiet {
                    println!("skipped artifact with digest: {}", blob.digest);
                }
                continue;
            }
            uploads.push((blob.clone(), blob_file(blob)?));
        }
        let quiet = args.quiet;
        let jobs = uploads.into_iter().map(|(desc, path)| {
            let client = client.clone();
            let reference = reference.clone();
            async move {
                if !quiet {
                    println!("pushing artifact with digest: {}", desc.digest);
                }
                upload_file(
                    &client,
                    &reference,
                    &desc,
                    &path,
                    &soci_registry::PushBlobOptions::new(),
                )
                .await?;
                if !quiet {
                    println!("successfully pushed artifact with digest: {}", desc.digest);
                }
                Ok(())
            }
        });
        rt.block_on(bounded(upload_limit(args.max_concurrent_uploads), jobs))?;
        if !args.quiet {
            println!("pushing artifact with digest: {index_digest}");
        }
        rt.block_on(client.push_manifest(
            &reference.to_digest(&reg_digest(&index_digest)?),
            media_type::OCI_MANIFEST,
            index_bytes.into(),
        ))
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("failed to push soci index {index_digest}"))?;
        if !args.quiet {
            println!("successfully pushed artifact with digest: {index_digest}");
        }
    }
    Ok(())
}

/// `--max-concurrent-uploads`: 0 means the default, 3.
fn upload_limit(n: usize) -> usize {
    if n == 0 {
        3
    } else {
        n
    }
}

/// Runs `jobs` with at most `limit` in flight; the first error is returned (the rest are
/// cancelled).
async fn bounded<F>(limit: usize, jobs: impl IntoIterator<Item = F>) -> Result<()>
where
    F: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for job in jobs {
        while set.len() >= limit.max(1) {
            if let Some(r) = set.join_next().await {
                r??;
            }
        }
        set.spawn(job);
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn uploads_are_bounded() {
        assert_eq!(upload_limit(0), 3);
        assert_eq!(upload_limit(5), 5);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        for limit in [1, 3] {
            let now = Arc::new(AtomicUsize::new(0));
            let max = Arc::new(AtomicUsize::new(0));
            let jobs = (0..10).map(|_| {
                let (now, max) = (now.clone(), max.clone());
                async move {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }
            });
            rt.block_on(bounded(limit, jobs)).unwrap();
            assert_eq!(max.load(Ordering::SeqCst), limit);
        }
        let jobs = (0..4).map(|i| async move {
            if i == 2 {
                bail!("boom")
            }
            Ok(())
        });
        assert!(rt.block_on(bounded(2, jobs)).is_err());
    }
}
