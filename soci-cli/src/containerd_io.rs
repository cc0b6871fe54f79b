//! containerd's gRPC API as the `soci` CLI uses it (images, content, leases). All containerd calls
//! live here; callers get sync methods that block on a private runtime.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{anyhow, Context, Result};
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{
    CreateRequest as LeaseCreateRequest, DeleteRequest as LeaseDeleteRequest, GetImageRequest,
    Image, Info, InfoRequest, ListContentRequest, ListImagesRequest, ReadContentRequest,
    UpdateImageRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use soci_index::{Descriptor, Digest};
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::global::GlobalOpts;

/// A containerd connection in one namespace (and optionally one lease).
#[derive(Debug)]
pub(crate) struct Containerd {
    rt: tokio::runtime::Runtime,
    ch: Channel,
    ns: String,
    lease: Option<String>,
}

impl Containerd {
    pub(crate) fn connect(global: &GlobalOpts) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("failed to start the async runtime")?;
        let address = global
            .address
            .strip_prefix("unix://")
            .unwrap_or(&global.address)
            .to_owned();
        let ch = rt
            .block_on(containerd_client::connect(&address))
            .with_context(|| format!("failed to connect to containerd at {address}"))?;
        Ok(Self {
            rt,
            ch,
            ns: global.namespace.clone(),
            lease: None,
        })
    }

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

    /// Runs writes inside a lease that expires in an hour (GC cannot collect half-written work).
    pub(crate) fn start_lease(&mut self) -> Result<()> {
        let id = format!("soci-cli-{}", std::process::id());
        let mut labels = HashMap::new();
        let expire = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        labels.insert("containerd.io/gc.expire".to_owned(), rfc3339(expire));
        let mut c = LeasesClient::new(self.ch.clone());
        let req = self.req(LeaseCreateRequest {
            id: id.clone(),
            labels,
        });
        match self.rt.block_on(c.create(req)) {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(anyhow!("failed to create lease: {}", s.message())),
        }
        self.lease = Some(id);
        Ok(())
    }

    pub(crate) fn end_lease(&mut self) {
        if let Some(id) = self.lease.take() {
            let mut c = LeasesClient::new(self.ch.clone());
            let req = self.req(LeaseDeleteRequest { id, sync: false });
            let _ = self.rt.block_on(c.delete(req));
        }
    }

    /// The image record `name`.
    pub(crate) fn image(&self, name: &str) -> Result<(Descriptor, HashMap<String, String>)> {
        let mut c = ImagesClient::new(self.ch.clone());
        let req = self.req(GetImageRequest {
            name: name.to_owned(),
        });
        let resp = self.rt.block_on(c.get(req)).map_err(|s| {
            if s.code() == Code::NotFound {
                anyhow!("image \"{name}\": not found")
            } else {
                anyhow!("failed to get image {name}: {}", s.message())
            }
        })?;
        let image = resp
            .into_inner()
            .image
            .ok_or_else(|| anyhow!("image \"{name}\": not found"))?;
        let t = image
            .target
            .ok_or_else(|| anyhow!("image {name} has no target"))?;
        let digest = Digest::parse(&t.digest)?;
        let mut d = Descriptor::new(t.media_type, digest, u64::try_from(t.size).unwrap_or(0));
        d.annotations = t.annotations.into_iter().collect();
        Ok((d, image.labels))
    }

    /// Names of images whose target digest is `digest`.
    pub(crate) fn images_with_target(&self, digest: &str) -> Result<Vec<String>> {
        let mut c = ImagesClient::new(self.ch.clone());
        let req = self.req(ListImagesRequest { filters: vec![] });
        let resp = self
            .rt
            .block_on(c.list(req))
            .map_err(|s| anyhow!("failed to list images: {}", s.message()))?;
        Ok(resp
            .into_inner()
            .images
            .into_iter()
            .filter(|i| i.target.as_ref().is_some_and(|t| t.digest == digest))
            .map(|i| i.name)
            .collect())
    }

    /// Sets labels on the image record `name`.
    pub(crate) fn label_image(&self, name: &str, labels: HashMap<String, String>) -> Result<()> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let mut c = ImagesClient::new(self.ch.clone());
        let req = self.req(UpdateImageRequest {
            image: Some(Image {
                name: name.to_owned(),
                labels,
                target: None,
                created_at: None,
                updated_at: None,
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
            source_date_epoch: None,
        });
        self.rt
            .block_on(c.update(req))
            .map_err(|s| anyhow!("failed to label image {name}: {}", s.message()))?;
        Ok(())
    }

    /// Creates or updates the image record `name` with `target`.
    pub(crate) fn put_image(&self, name: &str, target: &Descriptor) -> Result<()> {
        let t = containerd_client::types::Descriptor {
            media_type: target.media_type.clone(),
            digest: target.digest.to_string(),
            size: i64::try_from(target.size).unwrap_or(i64::MAX),
            annotations: HashMap::new(),
        };
        let image = Image {
            name: name.to_owned(),
            labels: HashMap::new(),
            target: Some(t),
            created_at: None,
            updated_at: None,
        };
        let mut c = ImagesClient::new(self.ch.clone());
        let req = self.req(containerd_client::services::v1::CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        });
        match self.rt.block_on(c.create(req)) {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                let req = self.req(UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["target".to_owned()],
                    }),
                    source_date_epoch: None,
                });
                self.rt
                    .block_on(c.update(req))
                    .map_err(|s| anyhow!("failed to update image {name}: {}", s.message()))?;
                Ok(())
            }
            Err(s) => Err(anyhow!("failed to create image {name}: {}", s.message())),
        }
    }

    pub(crate) fn contains(&self, digest: &Digest) -> Result<bool> {
        let mut c = ContentClient::new(self.ch.clone());
        let req = self.req(InfoRequest {
            digest: digest.to_string(),
        });
        match self.rt.block_on(c.info(req)) {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(anyhow!("failed to stat {digest}: {}", s.message())),
        }
    }

    /// Every blob of the namespace as `(digest, size)`.
    pub(crate) fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let mut c = ContentClient::new(self.ch.clone());
        let req = self.req(ListContentRequest { filters: vec![] });
        self.rt.block_on(async {
            let mut stream = c
                .list(req)
                .await
                .map_err(|s| anyhow!("failed to list content: {}", s.message()))?
                .into_inner();
            let mut out = Vec::new();
            while let Some(m) = stream
                .message()
                .await
                .map_err(|s| anyhow!("failed to list content: {}", s.message()))?
            {
                for info in m.info {
                    // Digests of algorithms we do not know cannot be SOCI artifacts of ours.
                    if let Ok(d) = Digest::parse(&info.digest) {
                        out.push((d, u64::try_from(info.size).unwrap_or(0)));
                    }
                }
            }
            Ok(out)
        })
    }

    /// Streams blob `digest` into `out`; returns the number of bytes.
    pub(crate) fn read_to(&self, digest: &Digest, out: &mut dyn Write) -> Result<u64> {
        let mut c = ContentClient::new(self.ch.clone());
        let req = self.req(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        });
        self.rt.block_on(async {
            let mut stream = c
                .read(req)
                .await
                .map_err(|s| {
                    if s.code() == Code::NotFound {
                        anyhow!("content digest {digest}: not found")
                    } else {
                        anyhow!("failed to read {digest}: {}", s.message())
                    }
                })?
                .into_inner();
            let mut n = 0u64;
            while let Some(m) = stream
                .message()
                .await
                .map_err(|s| anyhow!("failed to read {digest}: {}", s.message()))?
            {
                out.write_all(&m.data)?;
                n += m.data.len() as u64;
            }
            Ok(n)
        })
    }

    pub(crate) fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_to(digest, &mut buf)?;
        if !digest.verifies(&buf) {
            return Err(anyhow!("content {digest} does not match its digest"));
        }
        Ok(buf)
    }

    /// Writes blob `digest` (already-exists is fine) and sets `labels` on it.
    pub(crate) fn write(
        &self,
        digest: &Digest,
        data: &[u8],
        labels: HashMap<String, String>,
    ) -> Result<()> {
        if self.contains(digest)? {
            return self.set_labels(digest, labels);
        }
        const CHUNK: usize = 1 << 20;
        let total = i64::try_from(data.len()).unwrap_or(i64::MAX);
        let wref = format!("soci-cli-{}", digest.encoded());
        let mut msgs = Vec::new();
        for (i, chunk) in data.chunks(CHUNK).enumerate() {
            msgs.push(WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: wref.clone(),
                total,
                expected: digest.to_string(),
                offset: i64::try_from(i * CHUNK).unwrap_or(i64::MAX),
                data: chunk.to_vec(),
                labels: HashMap::new(),
            });
        }
        msgs.push(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: wref,
            total,
            expected: digest.to_string(),
            offset: total,
            data: Vec::new(),
            labels,
        });
        let n = msgs.len();
        let mut c = ContentClient::new(self.ch.clone());
        let req = self.req(tokio_stream::iter(msgs));
        self.rt.block_on(async {
            match c.write(req).await {
                Ok(resp) => {
                    let mut s = resp.into_inner();
                    let mut got = 0;
                    while let Some(_m) = s
                        .message()
                        .await
                        .map_err(|s| anyhow!("failed to write {digest}: {}", s.message()))?
                    {
                        got += 1;
                        if got == n {
                            break;
                        }
                    }
                    Ok(())
                }
                Err(s) if s.code() == Code::AlreadyExists => Ok(()),
                Err(s) => Err(anyhow!("failed to write {digest}: {}", s.message())),
            }
        })
    }

    fn set_labels(&self, digest: &Digest, labels: HashMap<String, String>) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let mut c = ContentClient::new(self.ch.clone());
        let req = self.req(UpdateRequest {
            info: Some(Info {
                digest: digest.to_string(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        });
        self.rt
            .block_on(c.update(req))
            .map_err(|s| anyhow!("failed to label {digest}: {}", s.message()))?;
        Ok(())
    }

    pub(crate) fn delete(&self, digest: &Digest) -> Result<()> {
        let mut c = ContentClient::new(self.ch.clone());
        let req = self.req(containerd_client::services::v1::DeleteContentRequest {
            digest: digest.to_string(),
        });
        match self.rt.block_on(c.delete(req)) {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(anyhow!("failed to delete {digest}: {}", s.message())),
        }
    }
}

/// containerd's content store as `soci rebuild-db` scans it.
impl soci_index::store::BlobStore for Containerd {
    fn list_blobs(&self) -> soci_index::store::Result<Vec<(Digest, u64)>> {
        self.list()
            .map_err(|e| soci_index::store::Error::Backend(e.into()))
    }

    fn read_blob(&self, digest: &Digest) -> soci_index::store::Result<Vec<u8>> {
        self.read(digest)
            .map_err(|e| soci_index::store::Error::Backend(e.into()))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.end_lease();
    }
}

fn rfc3339(t: std::time::SystemTime) -> String {
    crate::store_cmd::rfc3339(t)
}
