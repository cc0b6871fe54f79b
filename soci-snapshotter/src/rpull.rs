//! `soci image rpull`: pull an image through containerd with remote-snapshot labels (spec §5.3.1).
//!
//! containerd 1.6 has no server-side pull, and `ctr images pull` sends `Prepare` without labels, so
//! the client does what containerd's unpacker would, but with the labels the snapshotter needs:
//!
//! 1. resolve the reference in the registry (platform manifest of an index), store index, manifest
//!    and config in containerd's content store (inside a lease, with GC labels);
//! 2. for each layer (chain ids from the config's `diff_ids`): `Stat` the chain id (already there ⇒
//!    skip), else `Prepare("extract-… <chainid>", parent, labels)`. `AlreadyExists` means the
//!    snapshotter prepared the layer itself (lazily or locally); mounts back mean "deferred to the
//!    runtime": fetch the blob into the content store, apply it with containerd's diff service and
//!    `Commit` under the chain id;
//! 3. create (or update) the image record.
//!
//! Works for images with and without a SOCI index.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use containerd_client::services::v1::snapshots as snapapi;
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, CreateRequest as LeaseCreateRequest,
    DeleteRequest as LeaseDeleteRequest, Image, InfoRequest, UpdateImageRequest, WriteAction,
    WriteContentRequest,
};
use containerd_client::types::Descriptor as CDescriptor;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use soci_registry::{Client, Digest, Reference};
use tonic::transport::Channel;
use tonic::{Code, Request};
use tracing::{debug, info};

use crate::snapshotter::label;

/// Options of [`rpull`].
#[derive(Debug, Clone)]
pub struct RpullOptions {
    /// Image reference (`host/repo:tag` or `@digest`).
    pub reference: String,
    /// containerd socket.
    pub containerd_address: String,
    /// containerd namespace.
    pub namespace: String,
    /// Snapshotter name in containerd (`soci`).
    pub snapshotter: String,
    /// Use plain HTTP for every registry (otherwise only for loopback hosts).
    pub plain_http: bool,
    /// `user[:password]`, else the Docker config file.
    pub user: Option<String>,
    /// `os/arch[/variant]`; default: the host platform.
    pub platform: Option<String>,
    /// Explicit SOCI index digest (sets `containerd.io/snapshot/remote/soci.index.digest`).
    pub soci_index_digest: Option<String>,
}

/// What happened to each layer.
#[derive(Debug, Clone, Default)]
pub struct RpullReport {
    /// Platform manifest digest.
    pub manifest_digest: String,
    /// Layers the snapshotter prepared itself (`AlreadyExists`).
    pub prepared_by_snapshotter: usize,
    /// Layers fetched and applied by this client (deferred to the runtime).
    pub unpacked: usize,
    /// Layers already present.
    pub already_present: usize,
    /// Wall time.
    pub elapsed: Duration,
}

/// Errors of [`rpull`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpullError {
    /// Registry access failed.
    #[error("registry: {context}")]
    Registry {
        /// What was being fetched.
        context: String,
        /// Cause.
        #[source]
        source: Box<soci_registry::Error>,
    },
    /// A containerd call failed.
    #[error("containerd {call}: {message}")]
    Containerd {
        /// The call.
        call: &'static str,
        /// gRPC message.
        message: String,
    },
    /// Connecting to containerd failed.
    #[error("failed to connect to containerd at {address}: {message}")]
    Connect {
        /// Socket.
        address: String,
        /// Cause.
        message: String,
    },
    /// The image is malformed or unsupported.
    #[error("{0}")]
    Image(String),
}

type R<T> = Result<T, RpullError>;

fn cerr(call: &'static str) -> impl Fn(tonic::Status) -> RpullError {
    move |s| RpullError::Containerd {
        call,
        message: format!("{}: {}", s.code(), s.message()),
    }
}

fn rerr(context: impl Into<String>) -> impl FnOnce(soci_registry::Error) -> RpullError {
    let context = context.into();
    move |source| RpullError::Registry {
        context,
        source: Box::new(source),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Desc {
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    artifact_type: Option<String>,
}

#[derive(Deserialize)]
struct Platform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
struct IndexDoc {
    manifests: Vec<Desc>,
}

#[derive(Deserialize)]
struct ManifestDoc {
    config: Desc,
    layers: Vec<Desc>,
}

#[derive(Deserialize)]
struct ConfigDoc {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

fn is_index(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.index.v1+json"
            | "application/vnd.docker.distribution.manifest.list.v2+json"
    )
}

fn host_platform() -> (String, String, Option<String>) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    (
        "linux".into(),
        arch.into(),
        if arch == "arm64" {
            Some("v8".into())
        } else {
            None
        },
    )
}

fn parse_platform(p: &str) -> R<(String, String, Option<String>)> {
    let parts: Vec<&str> = p.split('/').collect();
    match parts.as_slice() {
        [os, arch] => Ok((os.to_string(), arch.to_string(), None)),
        [os, arch, v] => Ok((os.to_string(), arch.to_string(), Some(v.to_string()))),
        _ => Err(RpullError::Image(format!(
            "invalid platform {p:?}: want os/arch[/variant]"
        ))),
    }
}

/// Chain ids of a list of diff ids (OCI image spec: `chain(n) = sha256(chain(n-1) + " " + diff(n))`).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

struct Ctd {
    ch: Channel,
    ns: String,
    lease: Option<String>,
}

impl Ctd {
    fn req<T>(&self, m: T) -> Request<T> {
        let mut r = Request::new(m);
        if let Ok(v) = self.ns.parse() {
            r.metadata_mut().insert("containerd-namespace", v);
        }
        if let Some(l) = self.lease.as_ref().and_then(|l| l.parse().ok()) {
            r.metadata_mut().insert("containerd-lease", l);
        }
        r
    }

    async fn has_content(&self, digest: &str) -> R<bool> {
        let mut c =
            containerd_client::services::v1::content_client::ContentClient::new(self.ch.clone());
        match c
            .info(self.req(InfoRequest {
                digest: digest.into(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(cerr("content.Info")(s)),
        }
    }

    async fn write_content(
        &self,
        digest: &str,
        data: &[u8],
        labels: HashMap<String, String>,
    ) -> R<()> {
        const CHUNK: usize = 1 << 20;
        let mut c =
            containerd_client::services::v1::content_client::ContentClient::new(self.ch.clone());
        let wref = format!("soci-rpull-{digest}");
        let total = data.len() as i64;
        let mut msgs = Vec::new();
        let mut off = 0usize;
        while off < data.len() {
            let end = (off + CHUNK).min(data.len());
            msgs.push(WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: wref.clone(),
                total,
                expected: digest.into(),
                offset: off as i64,
                data: data[off..end].to_vec(),
                labels: HashMap::new(),
            });
            off = end;
        }
        msgs.push(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: wref,
            total,
            expected: digest.into(),
            offset: total,
            data: Vec::new(),
            labels,
        });
        let n = msgs.len();
        match c.write(self.req(tokio_stream::iter(msgs))).await {
            Ok(resp) => {
                let mut s = resp.into_inner();
                let mut got = 0;
                while let Some(m) = s.message().await.map_err(cerr("content.Write"))? {
                    let _ = m;
                    got += 1;
                    if got == n {
                        break;
                    }
                }
                Ok(())
            }
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(cerr("content.Write")(s)),
        }
    }

    async fn put(&self, digest: &str, data: &[u8], labels: HashMap<String, String>) -> R<()> {
        if self.has_content(digest).await? {
            if !labels.is_empty() {
                let mut c = containerd_client::services::v1::content_client::ContentClient::new(
                    self.ch.clone(),
                );
                let info = containerd_client::services::v1::Info {
                    digest: digest.into(),
                    labels: labels.clone(),
                    ..Default::default()
                };
                let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
                c.update(self.req(containerd_client::services::v1::UpdateRequest {
                    info: Some(info),
                    update_mask: Some(prost_types::FieldMask { paths }),
                }))
                .await
                .map_err(cerr("content.Update"))?;
            }
            return Ok(());
        }
        self.write_content(digest, data, labels).await
    }
}

/// Pulls `opts.reference` through containerd using the snapshotter `opts.snapshotter`.
pub async fn rpull(opts: &RpullOptions) -> R<RpullReport> {
    let t0 = Instant::now();
    let mut report = RpullReport::default();
    let reference = Reference::from_str(&opts.reference)
        .map_err(|e| RpullError::Image(format!("invalid reference {:?}: {e}", opts.reference)))?;
    let mut b = Client::builder();
    b.plain_http(if opts.plain_http {
        soci_registry::PlainHttp::Always
    } else {
        soci_registry::PlainHttp::Loopback
    });
    b.auth(match &opts.user {
        Some(u) => soci_registry::Auth::from_user_arg(u),
        None => soci_registry::Auth::docker_config(),
    });
    let client = b.build().map_err(rerr("building client"))?;

    // 1. Resolve.
    let top = client
        .get_manifest(&reference)
        .await
        .map_err(rerr(format!("fetching manifest of {}", opts.reference)))?;
    let mut blobs: Vec<(String, Vec<u8>, HashMap<String, String>)> = Vec::new();
    let (manifest_digest, manifest_bytes) = if is_index(&top.media_type) {
        let idx: IndexDoc = serde_json::from_slice(&top.bytes)
            .map_err(|e| RpullError::Image(format!("decoding image index: {e}")))?;
        let (os, arch, variant) = match &opts.platform {
            Some(p) => parse_platform(p)?,
            None => host_platform(),
        };
        let pos = idx
            .manifests
            .iter()
            .position(|d| {
                d.artifact_type.is_none()
                    && d.platform.as_ref().is_some_and(|p| {
                        p.os == os
                            && p.architecture == arch
                            && (variant.is_none() || p.variant.is_none() || p.variant == variant)
                    })
            })
            .ok_or_else(|| {
                RpullError::Image(format!(
                    "no manifest for platform {os}/{arch} in {}",
                    opts.reference
                ))
            })?;
        let d = &idx.manifests[pos];
        let dg = Digest::from_str(&d.digest)
            .map_err(|e| RpullError::Image(format!("bad digest {}: {e}", d.digest)))?;
        let m = client
            .get_manifest(&reference.to_digest(&dg))
            .await
            .map_err(rerr("fetching platform manifest"))?;
        let mut l = HashMap::new();
        l.insert(
            format!("containerd.io/gc.ref.content.m.{pos}"),
            d.digest.clone(),
        );
        blobs.push((top.digest.to_string(), top.bytes.to_vec(), l));
        (d.digest.clone(), m.bytes.to_vec())
    } else {
        (top.digest.to_string(), top.bytes.to_vec())
    };
    report.manifest_digest = manifest_digest.clone();
    let manifest: ManifestDoc = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| RpullError::Image(format!("decoding manifest: {e}")))?;
    let cfg_digest = Digest::from_str(&manifest.config.digest)
        .map_err(|e| RpullError::Image(format!("bad config digest: {e}")))?;
    let cfg_bytes = client
        .get_blob(&reference, &cfg_digest, Some(manifest.config.size as u64))
        .await
        .map_err(rerr("fetching image config"))?;
    let config: ConfigDoc = serde_json::from_slice(&cfg_bytes)
        .map_err(|e| RpullError::Image(format!("decoding image config: {e}")))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(RpullError::Image(format!(
            "image config has {} diff ids for {} layers",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    let chains = chain_ids(&config.rootfs.diff_ids);

    // containerd connection + lease.
    let ch = containerd_client::connect(&opts.containerd_address)
        .await
        .map_err(|e| RpullError::Connect {
            address: opts.containerd_address.clone(),
            message: e.to_string(),
        })?;
    let mut ctd = Ctd {
        ch: ch.clone(),
        ns: opts.namespace.clone(),
        lease: None,
    };
    let lease_id = format!("soci-rpull-{}", std::process::id());
    {
        let mut lc = containerd_client::services::v1::leases_client::LeasesClient::new(ch.clone());
        let mut labels = HashMap::new();
        labels.insert(
            "containerd.io/gc.expire".to_string(),
            rfc3339_in(Duration::from_secs(3600)),
        );
        match lc
            .create(ctd.req(LeaseCreateRequest {
                id: lease_id.clone(),
                labels,
            }))
            .await
        {
            Ok(_) => ctd.lease = Some(lease_id.clone()),
            Err(s) if s.code() == Code::AlreadyExists => ctd.lease = Some(lease_id.clone()),
            Err(s) => return Err(cerr("leases.Create")(s)),
        }
    }
    let result = pull_with(
        &ctd,
        &client,
        &reference,
        opts,
        &manifest,
        &manifest_digest,
        &manifest_bytes,
        &cfg_bytes,
        &chains,
        &config.rootfs.diff_ids,
        blobs,
        &mut report,
    )
    .await;
    // The image record must exist before the lease goes: deleting the lease lets containerd's
    // GC run, and until the record references the manifest, that GC may collect the content
    // just stored (seen in scripts/e2e-more.sh as `content digest …: not found` at `ctr run`).
    let result = match result {
        Ok(()) => {
            let target = CDescriptor {
                media_type: top.media_type.clone(),
                digest: top.digest.to_string(),
                size: top.bytes.len() as i64,
                annotations: HashMap::new(),
            };
            put_image(&ch, &opts.namespace, &opts.reference, target).await
        }
        Err(e) => Err(e),
    };
    {
        let mut lc = containerd_client::services::v1::leases_client::LeasesClient::new(ch.clone());
        let _ = lc
            .delete(ctd.req(LeaseDeleteRequest {
                id: lease_id,
                sync: false,
            }))
            .await;
    }
    result?;
    report.elapsed = t0.elapsed();
    info!(
        image = %opts.reference,
        manifest = %report.manifest_digest,
        remote = report.prepared_by_snapshotter,
        unpacked = report.unpacked,
        present = report.already_present,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "rpull done"
    );
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn pull_with(
    ctd: &Ctd,
    client: &Client,
    reference: &Reference,
    opts: &RpullOptions,
    manifest: &ManifestDoc,
    manifest_digest: &str,
    manifest_bytes: &[u8],
    cfg_bytes: &[u8],
    chains: &[String],
    diff_ids: &[String],
    mut blobs: Vec<(String, Vec<u8>, HashMap<String, String>)>,
    report: &mut RpullReport,
) -> R<()> {
    // Content: config (with the snapshot GC ref), manifest (refs to config and layers), index.
    let mut cfg_labels = HashMap::new();
    if let Some(top) = chains.last() {
        cfg_labels.insert(
            format!("containerd.io/gc.ref.snapshot.{}", opts.snapshotter),
            top.clone(),
        );
    }
    let mut man_labels = HashMap::new();
    man_labels.insert(
        "containerd.io/gc.ref.content.config".to_string(),
        manifest.config.digest.clone(),
    );
    for (i, l) in manifest.layers.iter().enumerate() {
        man_labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            l.digest.clone(),
        );
    }
    ctd.put(&manifest.config.digest, cfg_bytes, cfg_labels)
        .await?;
    ctd.put(manifest_digest, manifest_bytes, man_labels).await?;
    for (d, data, labels) in blobs.drain(..) {
        ctd.put(&d, &data, labels).await?;
    }

    // Layers.
    let mut snaps =
        containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient::new(
            ctd.ch.clone(),
        );
    let mut diff = containerd_client::services::v1::diff_client::DiffClient::new(ctd.ch.clone());
    let all_layers: Vec<&str> = manifest.layers.iter().map(|l| l.digest.as_str()).collect();
    let mut parent = String::new();
    for (i, layer) in manifest.layers.iter().enumerate() {
        let chain = &chains[i];
        let st = snaps
            .stat(ctd.req(snapapi::StatSnapshotRequest {
                snapshotter: opts.snapshotter.clone(),
                key: chain.clone(),
            }))
            .await;
        match st {
            Ok(_) => {
                debug!(layer = %layer.digest, chain = %chain, "layer already present");
                report.already_present += 1;
                parent = chain.clone();
                continue;
            }
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(cerr("snapshots.Stat")(s)),
        }
        let mut labels = HashMap::new();
        labels.insert(label::TARGET_SNAPSHOT_REF.to_string(), chain.clone());
        labels.insert(label::CRI_IMAGE_REF.to_string(), opts.reference.clone());
        labels.insert(label::CRI_LAYER_DIGEST.to_string(), layer.digest.clone());
        labels.insert(
            label::CRI_MANIFEST_DIGEST.to_string(),
            manifest_digest.to_string(),
        );
        labels.insert(
            label::CRI_IMAGE_LAYERS.to_string(),
            truncate_list(&all_layers[i..]),
        );
        labels.insert(label::SOCI_SIZE.to_string(), layer.size.to_string());
        let sizes: Vec<String> = manifest.layers[i..]
            .iter()
            .map(|l| l.size.to_string())
            .collect();
        labels.insert(
            label::IMAGE_LAYERS_SIZE.to_string(),
            truncate_list(&sizes.iter().map(String::as_str).collect::<Vec<_>>()),
        );
        labels.insert(
            label::SOCI_INDEX_DIGEST.to_string(),
            opts.soci_index_digest.clone().unwrap_or_default(),
        );
        // Keep the image-layers/sizes labels consistent in count.
        let n_layers = labels[label::CRI_IMAGE_LAYERS].split(',').count();
        let sz: Vec<&str> = sizes.iter().map(String::as_str).take(n_layers).collect();
        labels.insert(label::IMAGE_LAYERS_SIZE.to_string(), sz.join(","));

        let key = format!("extract-{}-{} {}", std::process::id(), i, chain);
        let prep = snaps
            .prepare(ctd.req(snapapi::PrepareSnapshotRequest {
                snapshotter: opts.snapshotter.clone(),
                key: key.clone(),
                parent: parent.clone(),
                labels,
            }))
            .await;
        match prep {
            Err(s) if s.code() == Code::AlreadyExists => {
                debug!(layer = %layer.digest, chain = %chain, "layer prepared by the snapshotter");
                report.prepared_by_snapshotter += 1;
            }
            Err(s) => return Err(cerr("snapshots.Prepare")(s)),
            Ok(resp) => {
                let mounts = resp.into_inner().mounts;
                let res = async {
                    let dg = Digest::from_str(&layer.digest).map_err(|e| {
                        RpullError::Image(format!("bad layer digest {}: {e}", layer.digest))
                    })?;
                    if !ctd.has_content(&layer.digest).await? {
                        let data = client
                            .get_blob(reference, &dg, Some(layer.size as u64))
                            .await
                            .map_err(rerr(format!("fetching layer {}", layer.digest)))?;
                        ctd.write_content(&layer.digest, &data, HashMap::new())
                            .await?;
                    }
                    let applied = diff
                        .apply(ctd.req(ApplyRequest {
                            diff: Some(CDescriptor {
                                media_type: layer.media_type.clone(),
                                digest: layer.digest.clone(),
                                size: layer.size,
                                annotations: HashMap::new(),
                            }),
                            mounts,
                            payloads: HashMap::new(),
                            sync_fs: false,
                        }))
                        .await
                        .map_err(cerr("diff.Apply"))?
                        .into_inner();
                    let got = applied.applied.map(|d| d.digest).unwrap_or_default();
                    if got != diff_ids[i] {
                        return Err(RpullError::Image(format!(
                            "layer {}: applied content has digest {got}, image config says {}",
                            layer.digest, diff_ids[i]
                        )));
                    }
                    debug!(layer = %layer.digest, applied = %got, "applied layer");
                    snaps
                        .commit(ctd.req(snapapi::CommitSnapshotRequest {
                            snapshotter: opts.snapshotter.clone(),
                            name: chain.clone(),
                            key: key.clone(),
                            labels: HashMap::new(),
                        }))
                        .await
                        .map_err(cerr("snapshots.Commit"))?;
                    Ok::<(), RpullError>(())
                }
                .await;
                if let Err(e) = res {
                    let _ = snaps
                        .remove(ctd.req(snapapi::RemoveSnapshotRequest {
                            snapshotter: opts.snapshotter.clone(),
                            key,
                        }))
                        .await;
                    return Err(e);
                }
                report.unpacked += 1;
            }
        }
        parent = chain.clone();
    }

    Ok(())
}

/// Comma list capped so a label stays below containerd's 4096-byte limit.
fn truncate_list(items: &[&str]) -> String {
    let mut out = String::new();
    for it in items {
        let extra = if out.is_empty() {
            it.len()
        } else {
            it.len() + 1
        };
        if out.len() + extra > 4000 {
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(it);
    }
    out
}

pub(crate) fn rfc3339_in(d: Duration) -> String {
    let at = std::time::SystemTime::now() + d;
    crate::logging::rfc3339(at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default())
}

/// Creates or updates the image record `name` → `target`.
pub(crate) async fn put_image(ch: &Channel, ns: &str, name: &str, target: CDescriptor) -> R<()> {
    let ctd = Ctd {
        ch: ch.clone(),
        ns: ns.to_string(),
        lease: None,
    };
    let mut ic = containerd_client::services::v1::images_client::ImagesClient::new(ch.clone());
    let image = Image {
        name: name.to_string(),
        labels: HashMap::new(),
        target: Some(target),
        created_at: None,
        updated_at: None,
    };
    match ic
        .create(ctd.req(CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        }))
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::AlreadyExists => {
            ic.update(ctd.req(UpdateImageRequest {
                image: Some(image),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["target".into()],
                }),
                source_date_epoch: None,
            }))
            .await
            .map_err(cerr("images.Update"))?;
            Ok(())
        }
        Err(s) => Err(cerr("images.Create")(s)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chain_ids_follow_the_image_spec() {
        let d = vec!["sha256:a".to_string(), "sha256:b".to_string()];
        let c = super::chain_ids(&d);
        assert_eq!(c[0], "sha256:a");
        use sha2::Digest;
        assert_eq!(
            c[1],
            format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(b"sha256:a sha256:b"))
            )
        );
    }

    #[test]
    fn truncates_long_lists() {
        let long = "x".repeat(3000);
        assert_eq!(super::truncate_list(&[&long, &long]), long);
        assert_eq!(super::truncate_list(&["a", "b"]), "a,b");
    }
}
