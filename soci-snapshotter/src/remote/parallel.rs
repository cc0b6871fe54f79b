//! Parallel pull/unpack (spec §5.4, §5.14 `MountParallel`): no lazy loading; every layer of an
//! image is downloaded (parallel ranged GETs into a temp file) and unpacked by the snapshotter.
//!
//! One image job per manifest digest, created by the first `Prepare` of one of its layers,
//! schedules that layer and every following layer of the manifest at once. Each layer task
//! downloads under the per-image and global download semaphores, unpacks under the unpack
//! semaphores into `<root>/unpack/<10 alphanumerics>/fs` (verifying the blob digest and the diffID),
//! then stores the blob in the content store unless `discard_unpacked_layers`. The `Prepare` of a
//! layer claims its task, waits for it and renames the unpacked directory into the snapshot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use soci_registry::{Client, Digest, Reference};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use super::unpack::{Decompressors, Expected};
use super::RemoteError;
use crate::config::Config;

/// How often stale jobs are looked for.
const GC_TICK: Duration = Duration::from_secs(10);
/// Age after which a job is cancelled and dropped.
const JOB_EXPIRY: Duration = Duration::from_secs(2 * 60 * 60);

/// Where the blobs of unpacked layers go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobStore {
    /// Dropped after unpacking (`discard_unpacked_layers`).
    Discard,
    /// The snapshotter's own OCI-layout store: `<root>/content/blobs/sha256/<hex>`.
    Soci(PathBuf),
    /// containerd's content store, through its socket (in the namespace of the request).
    Containerd(String),
}

/// `[pull_modes.parallel_pull_unpack]` as the puller uses it.
#[derive(Debug, Clone)]
pub struct ParallelOptions {
    /// Global concurrent downloads (`None` = unlimited).
    pub max_downloads: Option<usize>,
    /// Concurrent downloads of one image.
    pub max_downloads_per_image: Option<usize>,
    /// Bytes per ranged GET (`None` = the whole layer in one request).
    pub chunk_size: Option<u64>,
    /// Global concurrent unpacks.
    pub max_unpacks: Option<usize>,
    /// Concurrent unpacks of one image.
    pub max_unpacks_per_image: Option<usize>,
    /// Where blobs go after unpacking.
    pub store: BlobStore,
    /// External decompressors by compression.
    pub decompressors: Decompressors,
}

fn limit(v: i64) -> Option<usize> {
    usize::try_from(v).ok().filter(|&n| n > 0)
}

impl ParallelOptions {
    /// From the daemon config (already validated); `root` is the daemon root.
    pub fn from_config(c: &Config, root: &Path) -> ParallelOptions {
        let p = &c.pull_modes.parallel_pull_unpack;
        let store = if p.discard_unpacked_layers {
            BlobStore::Discard
        } else if c.content_store.kind == "containerd" {
            BlobStore::Containerd(c.content_store.containerd_address.clone())
        } else {
            BlobStore::Soci(root.join("content/blobs/sha256"))
        };
        ParallelOptions {
            max_downloads: limit(p.max_concurrent_downloads),
            max_downloads_per_image: limit(p.max_concurrent_downloads_per_image),
            chunk_size: crate::config::parse_size(&p.concurrent_download_chunk_size)
                .ok()
                .flatten(),
            max_unpacks: limit(p.max_concurrent_unpacks),
            max_unpacks_per_image: limit(p.max_concurrent_unpacks_per_image),
            store,
            decompressors: super::unpack::decompressors(c),
        }
    }
}

/// Splits `size` bytes into `(offset, len)` ranged GETs of at most `chunk` bytes (`None`, 0 or a
/// chunk not smaller than the blob ⇒ one request for everything).
pub fn plan_chunks(size: u64, chunk: Option<u64>) -> Vec<(u64, u64)> {
    match chunk.filter(|&c| c > 0 && c < size) {
        None => vec![(0, size)],
        Some(c) => (0..size.div_ceil(c))
            .map(|i| {
                let off = i * c;
                (off, c.min(size - off))
            })
            .collect(),
    }
}

/// One layer of the manifest, with what it must hash to.
#[derive(Debug, Clone)]
pub struct LayerDesc {
    /// Blob digest.
    pub digest: String,
    /// Blob size.
    pub size: u64,
    /// Media type.
    pub media_type: String,
    /// diffID from the image config (same position).
    pub diff_id: String,
}

type Outcome = Option<Result<PathBuf, String>>;

/// A scheduled layer: its task and the channel its result arrives on.
#[derive(Debug)]
struct LayerTask {
    done: watch::Receiver<Outcome>,
    task: tokio::task::AbortHandle,
    scratch: PathBuf,
}

#[derive(Debug, Default)]
struct JobState {
    /// Position → task, for scheduled layers not claimed yet.
    pending: HashMap<usize, LayerTask>,
    /// Positions scheduled so far (claimed or not).
    scheduled: std::collections::HashSet<usize>,
}

/// The per-image job.
#[derive(Debug)]
struct ImageJob {
    created: Instant,
    layers: Arc<Vec<LayerDesc>>,
    reference: Reference,
    client: Client,
    namespace: Option<String>,
    downloads: Option<Arc<Semaphore>>,
    unpacks: Option<Arc<Semaphore>>,
    state: Mutex<JobState>,
}

impl ImageJob {
    /// Aborts every unclaimed task and removes its scratch directory.
    fn cancel(&self) {
        let pending: Vec<LayerTask> = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.pending.drain().map(|(_, t)| t).collect()
        };
        for t in pending {
            t.task.abort();
            remove_scratch(&t.scratch);
        }
    }
}

fn remove_scratch(p: &Path) {
    if let Err(e) = std::fs::remove_dir_all(p) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(path = %p.display(), error = %e, "failed to remove parallel pull scratch directory");
        }
    }
}

/// Shared by the layer tasks.
#[derive(Debug)]
struct Shared {
    opts: ParallelOptions,
    unpack_root: PathBuf,
    downloads: Option<Arc<Semaphore>>,
    unpacks: Option<Arc<Semaphore>>,
}

/// The parallel puller.
#[derive(Debug)]
pub struct Parallel {
    rt: tokio::runtime::Handle,
    shared: Arc<Shared>,
    jobs: Arc<Mutex<HashMap<String, Arc<ImageJob>>>>,
}

fn semaphore(n: Option<usize>) -> Option<Arc<Semaphore>> {
    n.map(|n| Arc::new(Semaphore::new(n)))
}

async fn permits(
    image: &Option<Arc<Semaphore>>,
    global: &Option<Arc<Semaphore>>,
) -> Result<(Option<OwnedSemaphorePermit>, Option<OwnedSemaphorePermit>), String> {
    let closed = |_| "semaphore closed".to_string();
    let a = match image {
        Some(s) => Some(s.clone().acquire_owned().await.map_err(closed)?),
        None => None,
    };
    let b = match global {
        Some(s) => Some(s.clone().acquire_owned().await.map_err(closed)?),
        None => None,
    };
    Ok((a, b))
}

impl Parallel {
    /// Creates the puller (scratch space `<root>/unpack`, wiped by the caller at startup) and its
    /// stale-job collector. Must be called inside the runtime.
    pub fn new(root: &Path, opts: ParallelOptions) -> Parallel {
        info!(
            max_concurrent_downloads = ?opts.max_downloads,
            max_concurrent_downloads_per_image = ?opts.max_downloads_per_image,
            concurrent_download_chunk_size = ?opts.chunk_size,
            max_concurrent_unpacks = ?opts.max_unpacks,
            max_concurrent_unpacks_per_image = ?opts.max_unpacks_per_image,
            discard_unpacked_layers = opts.store == BlobStore::Discard,
            decompress_streams = ?opts.decompressors.keys().collect::<Vec<_>>(),
            "Parallel image pull enabled"
        );
        let jobs: Arc<Mutex<HashMap<String, Arc<ImageJob>>>> = Arc::default();
        let weak: Weak<Mutex<HashMap<String, Arc<ImageJob>>>> = Arc::downgrade(&jobs);
        let rt = tokio::runtime::Handle::current();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(GC_TICK);
            loop {
                tick.tick().await;
                let Some(jobs) = weak.upgrade() else { return };
                let stale: Vec<(String, Arc<ImageJob>)> = {
                    let mut m = jobs.lock().unwrap_or_else(|e| e.into_inner());
                    let keys: Vec<String> = m
                        .iter()
                        .filter(|(_, j)| j.created.elapsed() > JOB_EXPIRY)
                        .map(|(k, _)| k.clone())
                        .collect();
                    keys.into_iter()
                        .filter_map(|k| m.remove(&k).map(|j| (k, j)))
                        .collect()
                };
                for (manifest, job) in stale {
                    debug!(manifest, "dropping stale parallel pull job");
                    job.cancel();
                }
            }
        });
        Parallel {
            rt,
            shared: Arc::new(Shared {
                unpack_root: root.join("unpack"),
                downloads: semaphore(opts.max_downloads),
                unpacks: semaphore(opts.max_unpacks),
                opts,
            }),
            jobs,
        }
    }

    /// Cancels the job of `manifest` (snapshot removal).
    pub fn cancel(&self, manifest: &str) {
        let job = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(manifest);
        if let Some(job) = job {
            info!(manifest, "cancelling parallel pull job");
            job.cancel();
        }
    }

    /// Cancels `job` if it is still the job of `manifest`.
    fn cancel_job(&self, manifest: &str, job: &Arc<ImageJob>) {
        let removed = {
            let mut m = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            let same = m.get(manifest).is_some_and(|j| Arc::ptr_eq(j, job));
            if same {
                m.remove(manifest);
            }
            same
        };
        if removed {
            job.cancel();
        }
    }

    /// Prepares `dst` (an empty snapshot `fs` directory) with layer `layer` of `manifest`: the
    /// image job is created if needed (`layers` comes from the manifest and config), the layer's
    /// task claimed and waited for, and its unpacked tree renamed into `dst`. Called from a blocking
    /// thread.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        &self,
        client: Client,
        reference: Reference,
        manifest: &str,
        layers: Arc<Vec<LayerDesc>>,
        layer: &str,
        namespace: Option<&str>,
        dst: &Path,
    ) -> Result<(), RemoteError> {
        let job = {
            let mut m = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            m.entry(manifest.to_string())
                .or_insert_with(|| {
                    Arc::new(ImageJob {
                        created: Instant::now(),
                        layers: layers.clone(),
                        reference,
                        client,
                        namespace: namespace.map(str::to_string),
                        downloads: semaphore(self.shared.opts.max_downloads_per_image),
                        unpacks: semaphore(self.shared.opts.max_unpacks_per_image),
                        state: Mutex::new(JobState::default()),
                    })
                })
                .clone()
        };
        let task = self.claim(&job, layer)?;
        let last = {
            let st = job.state.lock().unwrap_or_else(|e| e.into_inner());
            st.scheduled.contains(&(job.layers.len() - 1)) && st.pending.is_empty()
        };
        let mut done = task.done.clone();
        let res = self
            .rt
            .block_on(async { done.wait_for(Option::is_some).await.map(|v| v.clone()) });
        if last {
            // Every layer from the first prepared one to the top is claimed: the image is done.
            let mut m = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            if m.get(manifest).is_some_and(|j| Arc::ptr_eq(j, &job)) {
                m.remove(manifest);
            }
        }
        let unpacked = match res {
            Ok(Some(Ok(p))) => p,
            failed => {
                remove_scratch(&task.scratch);
                // The client gives up on the image: drop the rest of its job too.
                self.cancel_job(manifest, &job);
                return Err(RemoteError::other(
                    "parallel pull/unpack",
                    match failed {
                        Ok(Some(Err(e))) => e,
                        _ => format!("layer {layer}: job cancelled"),
                    },
                ));
            }
        };
        let result = move_into(&unpacked, dst);
        remove_scratch(&task.scratch);
        result
    }

    /// Takes the first unclaimed task of `layer` (scheduling it and every later layer if needed).
    fn claim(&self, job: &Arc<ImageJob>, layer: &str) -> Result<LayerTask, RemoteError> {
        let positions: Vec<usize> = job
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.digest == layer)
            .map(|(i, _)| i)
            .collect();
        if positions.is_empty() {
            return Err(RemoteError::other(
                "parallel pull/unpack",
                format!("layer {layer} is not in the image manifest"),
            ));
        }
        let mut st = job.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = positions.iter().find(|p| st.pending.contains_key(p)) {
            if let Some(t) = st.pending.remove(p) {
                return Ok(t);
            }
        }
        // Not scheduled yet (first Prepare of the image, or a repeated digest): schedule from the
        // first unscheduled position of this layer to the end of the manifest.
        let start = positions
            .iter()
            .copied()
            .find(|p| !st.scheduled.contains(p))
            .unwrap_or(positions[0]);
        for i in start..job.layers.len() {
            if i == start || !st.scheduled.contains(&i) {
                let t = self.spawn_layer(job, i)?;
                st.scheduled.insert(i);
                st.pending.insert(i, t);
            }
        }
        st.pending.remove(&start).ok_or_else(|| {
            RemoteError::other("parallel pull/unpack", "scheduled layer task vanished")
        })
    }

    fn spawn_layer(&self, job: &Arc<ImageJob>, pos: usize) -> Result<LayerTask, RemoteError> {
        let scratch = self.scratch_dir()?;
        let (tx, rx) = watch::channel(None);
        let shared = self.shared.clone();
        let job2 = job.clone();
        let dir = scratch.clone();
        let handle = self.rt.spawn(async move {
            let desc = job2.layers[pos].clone();
            let res = run_layer(&shared, &job2, &desc, &dir).await;
            if let Err(e) = &res {
                warn!(layerDigest = %desc.digest, error = %e, "parallel pull of layer failed");
            }
            let _ = tx.send(Some(res));
        });
        Ok(LayerTask {
            done: rx,
            task: handle.abort_handle(),
            scratch,
        })
    }

    fn scratch_dir(&self) -> Result<PathBuf, RemoteError> {
        for _ in 0..16 {
            let name: String = std::iter::repeat_with(fastrand::alphanumeric)
                .take(10)
                .collect();
            let p = self.shared.unpack_root.join(name);
            match std::fs::create_dir(&p) {
                Ok(()) => return Ok(p),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(RemoteError::other("creating unpack directory", e)),
            }
        }
        Err(RemoteError::other(
            "creating unpack directory",
            "no free name",
        ))
    }
}

/// Renames the unpacked tree onto the (empty) snapshot directory.
fn move_into(unpacked: &Path, dst: &Path) -> Result<(), RemoteError> {
    let mut rd =
        std::fs::read_dir(dst).map_err(|e| RemoteError::other("reading snapshot directory", e))?;
    if rd.next().is_some() {
        return Err(RemoteError::other(
            "parallel pull/unpack",
            format!("snapshot directory {} is not empty", dst.display()),
        ));
    }
    let mode = std::fs::metadata(dst)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
        .unwrap_or(0o755);
    std::fs::set_permissions(
        unpacked,
        std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
    )
    .map_err(|e| RemoteError::other("chmod unpacked layer", e))?;
    std::fs::rename(unpacked, dst).map_err(|e| RemoteError::other("moving unpacked layer", e))
}

/// Download, unpack, store: one layer's task.
async fn run_layer(
    shared: &Shared,
    job: &ImageJob,
    desc: &LayerDesc,
    dir: &Path,
) -> Result<PathBuf, String> {
    let digest = <Digest as std::str::FromStr>::from_str(&desc.digest)
        .map_err(|e| format!("invalid layer digest {:?}: {e}", desc.digest))?;
    let blob = dir.join("blob");
    download(shared, job, &digest, desc.size, &blob).await?;
    let fs = dir.join("fs");
    {
        let _p = permits(&job.unpacks, &shared.unpacks).await?;
        let (blob2, fs2, d) = (blob.clone(), fs.clone(), desc.clone());
        let decompressors = shared.opts.decompressors.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir(&fs2).map_err(|e| format!("creating {}: {e}", fs2.display()))?;
            super::unpack::apply_blob(
                &blob2,
                &d.media_type,
                &fs2,
                Expected {
                    compressed: Some(&d.digest),
                    diff_id: Some(&d.diff_id),
                },
                &decompressors,
            )
            .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("unpack task: {e}"))??;
    }
    debug!(layerDigest = %desc.digest, "layer unpacked by parallel pull");
    if let Err(e) = store_blob(&shared.opts.store, job, desc, &blob).await {
        warn!(layerDigest = %desc.digest, error = %e, "failed to store layer blob in the content store");
    }
    let _ = std::fs::remove_file(&blob);
    Ok(fs)
}

/// Downloads the blob to `path`: parallel ranged GETs of `chunk_size` when the registry serves
/// ranges (2-byte probe), else one streamed GET. Every request holds a per-image and a global
/// download permit. The digest is verified at unpack time.
async fn download(
    shared: &Shared,
    job: &ImageJob,
    digest: &Digest,
    size: u64,
    path: &Path,
) -> Result<(), String> {
    let reg = |e: soci_registry::Error| crate::error::chain(&e);
    let chunked = match shared.opts.chunk_size {
        Some(c) if c < size => {
            let probe = job
                .client
                .probe_ranges(&job.reference, digest)
                .await
                .map_err(reg)?;
            if !probe.ranges {
                debug!(digest = %digest, "registry does not serve ranges; downloading in one request");
            }
            probe.ranges
        }
        _ => false,
    };
    if !chunked {
        let _p = permits(&job.downloads, &shared.downloads).await?;
        let mut f = tokio::fs::File::create(path)
            .await
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        job.client
            .copy_blob(&job.reference, digest, Some(size), &mut f)
            .await
            .map_err(reg)?;
        return Ok(());
    }
    let file =
        std::fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    file.set_len(size)
        .map_err(|e| format!("sizing {}: {e}", path.display()))?;
    let file = Arc::new(file);
    let mut set = tokio::task::JoinSet::new();
    for (off, len) in plan_chunks(size, shared.opts.chunk_size) {
        let (client, reference, digest) =
            (job.client.clone(), job.reference.clone(), digest.clone());
        let (ds, gs, file) = (
            job.downloads.clone(),
            shared.downloads.clone(),
            file.clone(),
        );
        set.spawn(async move {
            let _p = permits(&ds, &gs).await?;
            let bytes = client
                .read_range(&reference, &digest, off, len)
                .await
                .map_err(|e| crate::error::chain(&e))?;
            if bytes.len() as u64 != len {
                return Err(format!(
                    "range {off}+{len} of {digest}: got {} bytes",
                    bytes.len()
                ));
            }
            tokio::task::spawn_blocking(move || {
                std::os::unix::fs::FileExt::write_all_at(&*file, &bytes, off)
                    .map_err(|e| format!("writing layer chunk: {e}"))
            })
            .await
            .map_err(|e| format!("write task: {e}"))?
        });
    }
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(format!("chunk task: {e}")),
        }
    }
    Ok(())
}

/// Stores the downloaded (and verified) blob unless the layers are discarded.
async fn store_blob(
    store: &BlobStore,
    job: &ImageJob,
    desc: &LayerDesc,
    blob: &Path,
) -> Result<(), String> {
    match store {
        BlobStore::Discard => Ok(()),
        BlobStore::Soci(dir) => {
            let hex = desc
                .digest
                .strip_prefix("sha256:")
                .ok_or_else(|| format!("unsupported digest {}", desc.digest))?;
            tokio::fs::rename(blob, dir.join(hex))
                .await
                .map_err(|e| format!("storing blob: {e}"))
        }
        BlobStore::Containerd(address) => {
            let ns = job.namespace.as_deref().unwrap_or("default");
            containerd_put(address, ns, desc, blob).await
        }
    }
}

fn with_ns<T>(ns: &str, lease: Option<&str>, m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    if let Ok(v) = ns.parse() {
        r.metadata_mut().insert("containerd-namespace", v);
    }
    if let Some(Ok(v)) = lease.map(str::parse) {
        r.metadata_mut().insert("containerd-lease", v);
    }
    r
}

/// Writes a blob file into containerd's content store (containerd answers `AlreadyExists` for a
/// blob it has, after recording it in the namespace and the lease).
async fn containerd_put(
    address: &str,
    ns: &str,
    desc: &LayerDesc,
    blob: &Path,
) -> Result<(), String> {
    use containerd_client::services::v1::content_client::ContentClient;
    use containerd_client::services::v1::{WriteAction, WriteContentRequest};
    use tokio::io::AsyncReadExt;
    let ch = containerd_client::connect(address)
        .await
        .map_err(|e| format!("connecting to containerd at {address}: {e}"))?;
    let mut c = ContentClient::new(ch.clone());
    // Written inside a lease that expires in an hour, so containerd's GC keeps the blob until the
    // client (rpull) has created the image record whose manifest references it.
    let lease = format!(
        "soci-parallel-{}-{}",
        desc.digest
            .trim_start_matches("sha256:")
            .get(..12)
            .unwrap_or("layer"),
        std::iter::repeat_with(fastrand::alphanumeric)
            .take(8)
            .collect::<String>()
    );
    {
        use containerd_client::services::v1::leases_client::LeasesClient;
        use containerd_client::services::v1::CreateRequest;
        let labels = [(
            "containerd.io/gc.expire".to_string(),
            crate::rpull::rfc3339_in(Duration::from_secs(3600)),
        )]
        .into();
        LeasesClient::new(ch.clone())
            .create(with_ns(
                ns,
                None,
                CreateRequest {
                    id: lease.clone(),
                    labels,
                },
            ))
            .await
            .map_err(|s| format!("leases.Create: {}", s.message()))?;
    }
    let mut f = tokio::fs::File::open(blob)
        .await
        .map_err(|e| format!("opening {}: {e}", blob.display()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
    let (wref, total, expected) = (
        format!("soci-parallel-{}", desc.digest),
        desc.size as i64,
        desc.digest.clone(),
    );
    let feed = async move {
        let mut off = 0i64;
        loop {
            let mut buf = vec![0u8; 1 << 20];
            let n = f
                .read(&mut buf)
                .await
                .map_err(|e| format!("reading blob: {e}"))?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            let msg = WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: wref.clone(),
                total,
                expected: expected.clone(),
                offset: off,
                data: buf,
                labels: HashMap::new(),
            };
            if tx.send(msg).await.is_err() {
                return Ok(());
            }
            off += n as i64;
        }
        let _ = tx
            .send(WriteContentRequest {
                action: WriteAction::Commit as i32,
                r#ref: wref,
                total,
                expected,
                offset: off,
                data: Vec::new(),
                labels: HashMap::new(),
            })
            .await;
        Ok::<(), String>(())
    };
    let write = async {
        match c
            .write(with_ns(
                ns,
                Some(&lease),
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .await
        {
            Ok(resp) => {
                let mut s = resp.into_inner();
                loop {
                    match s.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => return Ok(()),
                        // Present already (this or another namespace): containerd added it to
                        // this namespace and to the lease.
                        Err(e) if e.code() == tonic::Code::AlreadyExists => return Ok(()),
                        Err(e) => return Err(format!("content.Write: {}", e.message())),
                    }
                }
            }
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(s) => Err(format!("content.Write: {}", s.message())),
        }
    };
    let (a, b) = tokio::join!(feed, write);
    a.and(b)?;
    debug!(digest = %desc.digest, namespace = ns, lease, "stored layer blob in containerd's content store");
    Ok(())
}

/// The layers of an image from its manifest and config JSON, diffIDs by position.
pub fn layers_of(manifest: &[u8], config: &[u8]) -> Result<Vec<LayerDesc>, String> {
    let m: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| format!("decoding image manifest: {e}"))?;
    let c: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| format!("decoding image config: {e}"))?;
    let layers = m
        .get("layers")
        .and_then(|l| l.as_array())
        .ok_or("image manifest has no layers")?;
    let diff_ids = c
        .pointer("/rootfs/diff_ids")
        .and_then(|d| d.as_array())
        .ok_or("image config has no rootfs.diff_ids")?;
    if diff_ids.len() != layers.len() {
        return Err(format!(
            "image config has {} diff_ids for {} layers",
            diff_ids.len(),
            layers.len()
        ));
    }
    layers
        .iter()
        .zip(diff_ids)
        .map(|(l, d)| {
            let s = |k: &str| l.get(k).and_then(|v| v.as_str()).map(str::to_string);
            Ok(LayerDesc {
                digest: s("digest").ok_or("manifest layer without digest")?,
                size: l
                    .get("size")
                    .and_then(|v| v.as_u64())
                    .ok_or("manifest layer without size")?,
                media_type: s("mediaType").unwrap_or_default(),
                diff_id: d
                    .as_str()
                    .ok_or("image config diff_id is not a string")?
                    .to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_plans_cover_the_blob_exactly() {
        assert_eq!(plan_chunks(10, None), vec![(0, 10)]);
        assert_eq!(plan_chunks(10, Some(0)), vec![(0, 10)]);
        assert_eq!(plan_chunks(10, Some(10)), vec![(0, 10)]);
        assert_eq!(plan_chunks(10, Some(64)), vec![(0, 10)]);
        assert_eq!(plan_chunks(10, Some(4)), vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(plan_chunks(12, Some(4)), vec![(0, 4), (4, 4), (8, 4)]);
        for (size, chunk) in [
            (1u64, 1u64),
            (5 << 20, 1 << 20),
            ((5 << 20) + 1, 1 << 20),
            (999, 7),
        ] {
            let p = plan_chunks(size, Some(chunk));
            let mut next = 0;
            for &(off, len) in &p {
                assert_eq!(off, next);
                assert!(len > 0 && len <= chunk);
                next = off + len;
            }
            assert_eq!(next, size);
            assert_eq!(p.len() as u64, size.div_ceil(chunk));
        }
    }

    #[test]
    fn chunk_size_from_config() {
        let mut c = Config::default();
        c.pull_modes
            .parallel_pull_unpack
            .concurrent_download_chunk_size = "1mb".into();
        c.pull_modes.parallel_pull_unpack.discard_unpacked_layers = true;
        let o = ParallelOptions::from_config(&c, Path::new("/r"));
        assert_eq!(o.chunk_size, Some(1 << 20));
        assert_eq!(o.store, BlobStore::Discard);
        assert_eq!(o.max_downloads, None);
        assert_eq!(o.max_downloads_per_image, Some(3));
        assert_eq!(o.max_unpacks_per_image, Some(1));
        c.pull_modes
            .parallel_pull_unpack
            .concurrent_download_chunk_size = String::new();
        c.pull_modes.parallel_pull_unpack.discard_unpacked_layers = false;
        c.content_store.kind = "containerd".into();
        let o = ParallelOptions::from_config(&c, Path::new("/r"));
        assert_eq!(o.chunk_size, None);
        assert_eq!(
            o.store,
            BlobStore::Containerd("/run/containerd/containerd.sock".into())
        );
    }

    #[test]
    fn layers_pair_with_diff_ids_by_position() {
        let m = br#"{"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:aa","size":3},{"digest":"sha256:bb","size":4}]}"#;
        let c = br#"{"rootfs":{"type":"layers","diff_ids":["sha256:11","sha256:22"]}}"#;
        let l = layers_of(m, c).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[1].digest.as_str(), l[1].diff_id.as_str(), l[1].size),
            ("sha256:bb", "sha256:22", 4)
        );
        assert!(l[0].media_type.ends_with("gzip"));
        let short = br#"{"rootfs":{"diff_ids":["sha256:11"]}}"#;
        assert!(layers_of(m, short)
            .unwrap_err()
            .contains("1 diff_ids for 2 layers"));
    }
}
