//! gRPC adapter: containerd's `containerd.services.snapshots.v1.Snapshots` over [`Snapshotter`].
//! Requests are converted here and the domain methods run on blocking threads; errors become
//! statuses through the one `From<Error> for tonic::Status`.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use containerd_client::services::v1::snapshots as api;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::metastore::Kind;
use crate::snapshotter::{Info, Snapshotter};

/// Generated server code (see build.rs).
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    missing_debug_implementations
)]
pub mod generated {
    tonic::include_proto!("containerd.services.snapshots.v1");
}

pub use generated::snapshots_server::SnapshotsServer;

/// Metadata key carrying the containerd namespace.
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct Service {
    snap: Arc<Snapshotter>,
}

impl Service {
    /// Wraps a snapshotter.
    pub fn new(snap: Arc<Snapshotter>) -> Service {
        Service { snap }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Snapshotter) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Status> {
        let snap = self.snap.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| f(&snap)))
            .await
            .map_err(|e| Status::internal(format!("task failed: {e}")))?
            .map_err(Status::from)
    }
}

fn namespace<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get(NAMESPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// containerd's metadata layer names backend snapshots `<namespace>/<n>/<key>`; containerd 1.6's
/// proxy does not forward the namespace header, so the key is the reliable source.
fn namespace_from_key(key: &str) -> Option<String> {
    let mut it = key.splitn(3, '/');
    let (ns, n, rest) = (it.next()?, it.next()?, it.next()?);
    (!ns.is_empty() && !rest.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty())
        .then(|| ns.to_string())
}

fn ts(ns: i128) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ns.div_euclid(1_000_000_000)) as i64,
        nanos: (ns.rem_euclid(1_000_000_000)) as i32,
    }
}

fn to_api(i: Info) -> api::Info {
    api::Info {
        name: i.name,
        parent: i.record.parent,
        kind: match i.record.kind {
            Kind::View => api::Kind::View,
            Kind::Active => api::Kind::Active,
            Kind::Committed => api::Kind::Committed,
        } as i32,
        created_at: Some(ts(i.record.created_ns)),
        updated_at: Some(ts(i.record.updated_ns)),
        labels: i.record.labels.into_iter().collect(),
    }
}

fn labels(m: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

type ListStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<api::ListSnapshotsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl generated::snapshots_server::Snapshots for Service {
    #[tracing::instrument(skip_all, fields(key = ?req.get_ref().key))]
    async fn prepare(
        &self,
        req: Request<api::PrepareSnapshotRequest>,
    ) -> Result<Response<api::PrepareSnapshotResponse>, Status> {
        let header_ns = namespace(&req);
        let r = req.into_inner();
        let ns = header_ns.or_else(|| namespace_from_key(&r.key));
        let mounts = self
            .run(move |s| s.prepare(ns.as_deref(), &r.key, &r.parent, labels(r.labels)))
            .await?;
        Ok(Response::new(api::PrepareSnapshotResponse { mounts }))
    }

    #[tracing::instrument(skip_all, fields(key = ?req.get_ref().key))]
    async fn view(
        &self,
        req: Request<api::ViewSnapshotRequest>,
    ) -> Result<Response<api::ViewSnapshotResponse>, Status> {
        let r = req.into_inner();
        let mounts = self
            .run(move |s| s.view(&r.key, &r.parent, labels(r.labels)))
            .await?;
        Ok(Response::new(api::ViewSnapshotResponse { mounts }))
    }

    #[tracing::instrument(skip_all, fields(key = ?req.get_ref().key))]
    async fn mounts(
        &self,
        req: Request<api::MountsRequest>,
    ) -> Result<Response<api::MountsResponse>, Status> {
        let r = req.into_inner();
        let mounts = self.run(move |s| s.mounts(&r.key)).await?;
        Ok(Response::new(api::MountsResponse { mounts }))
    }

    #[tracing::instrument(skip_all, fields(key = ?req.get_ref().key, name = ?req.get_ref().name))]
    async fn commit(
        &self,
        req: Request<api::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        self.run(move |s| s.commit(&r.name, &r.key, labels(r.labels)))
            .await?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all, fields(key = ?req.get_ref().key))]
    async fn remove(
        &self,
        req: Request<api::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        self.run(move |s| s.remove(&r.key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<api::StatSnapshotRequest>,
    ) -> Result<Response<api::StatSnapshotResponse>, Status> {
        let r = req.into_inner();
        let info = self.run(move |s| s.stat(&r.key)).await?;
        Ok(Response::new(api::StatSnapshotResponse {
            info: Some(to_api(info)),
        }))
    }

    async fn update(
        &self,
        req: Request<api::UpdateSnapshotRequest>,
    ) -> Result<Response<api::UpdateSnapshotResponse>, Status> {
        let r = req.into_inner();
        let info = r
            .info
            .ok_or_else(|| Status::invalid_argument("info is required"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let out = self
            .run(move |s| s.update(&info.name, labels(info.labels), &paths))
            .await?;
        Ok(Response::new(api::UpdateSnapshotResponse {
            info: Some(to_api(out)),
        }))
    }

    type ListStream = ListStream;

    async fn list(
        &self,
        req: Request<api::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let r = req.into_inner();
        let infos = self.run(move |s| s.list(&r.filters)).await?;
        let batches: Vec<Result<api::ListSnapshotsResponse, Status>> = infos
            .chunks(100)
            .map(|c| {
                Ok(api::ListSnapshotsResponse {
                    info: c.iter().cloned().map(to_api).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(
        &self,
        req: Request<api::UsageRequest>,
    ) -> Result<Response<api::UsageResponse>, Status> {
        let r = req.into_inner();
        let (size, inodes) = self.run(move |s| s.usage(&r.key)).await?;
        Ok(Response::new(api::UsageResponse { size, inodes }))
    }

    async fn cleanup(&self, _req: Request<api::CleanupRequest>) -> Result<Response<()>, Status> {
        self.run(|s| s.cleanup()).await?;
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn namespace_from_containerd_key() {
        assert_eq!(
            super::namespace_from_key("default/12/extract-1 sha256:x").as_deref(),
            Some("default")
        );
        assert_eq!(super::namespace_from_key("plainkey"), None);
        assert_eq!(super::namespace_from_key("a/b/c"), None);
    }
}
