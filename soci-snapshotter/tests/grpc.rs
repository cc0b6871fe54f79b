//! The snapshots gRPC service end to end over a unix socket, with a fake remote-layer backend
//! (no root, no FUSE): status codes (ALREADY_EXISTS is part of the protocol), the `Prepare`
//! decision tree, list filters as containerd uses them, availability checks, removal.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, ListSnapshotsRequest, MountsRequest, PrepareSnapshotRequest,
    RemoveSnapshotRequest, UsageRequest,
};
use soci_snapshotter::remote::{RemoteError, RemoteLayers};
use soci_snapshotter::service::{Service, SnapshotsServer};
use soci_snapshotter::snapshotter::{label, Options, Snapshotter};
use tonic::transport::Channel;
use tonic::Code;

#[derive(Debug, Default)]
struct Fake {
    mounted: Mutex<HashSet<PathBuf>>,
    unmounted: Mutex<Vec<PathBuf>>,
    broken: Mutex<bool>,
}

impl RemoteLayers for Fake {
    fn mount(
        &self,
        mp: &Path,
        labels: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, RemoteError> {
        match labels.get(label::CRI_LAYER_DIGEST).map(String::as_str) {
            Some("sha256:lazy") => {
                self.mounted.lock().unwrap().insert(mp.to_path_buf());
                Ok([(
                    label::SOCI_INDEX_DIGEST.to_string(),
                    "sha256:idx".to_string(),
                )]
                .into())
            }
            Some("sha256:noztoc") => Err(RemoteError::NoZtoc {
                layer: "sha256:noztoc".into(),
            }),
            _ => Err(RemoteError::NoIndex {
                image: "img".into(),
                cause: "no soci index found".into(),
            }),
        }
    }
    fn check(&self, mp: &Path, _: &BTreeMap<String, String>) -> Result<(), RemoteError> {
        if *self.broken.lock().unwrap() || !self.mounted.lock().unwrap().contains(mp) {
            return Err(RemoteError::Unavailable("gone".into()));
        }
        Ok(())
    }
    fn unmount(&self, mp: &Path) -> Result<(), RemoteError> {
        self.mounted.lock().unwrap().remove(mp);
        self.unmounted.lock().unwrap().push(mp.to_path_buf());
        Ok(())
    }
    fn unpack_local(&self, dir: &Path, _: &BTreeMap<String, String>) -> Result<(), RemoteError> {
        std::fs::write(dir.join("unpacked.txt"), vec![7u8; 10_000]).unwrap();
        Ok(())
    }
    fn mounted(&self) -> Vec<PathBuf> {
        self.mounted.lock().unwrap().iter().cloned().collect()
    }
}

struct Server {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn start_server(dir: &Path, fake: Arc<Fake>) -> (SnapshotsClient<Channel>, Server) {
    let snap = Snapshotter::open(&dir.join("snapshotter"), Some(fake), Options::default()).unwrap();
    let sock = dir.join("s.sock");
    let _ = std::fs::remove_file(&sock);
    let l = tokio::net::UnixListener::bind(&sock).unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SnapshotsServer::new(Service::new(Arc::new(snap))))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(l),
                async {
                    let _ = rx.await;
                },
            ),
    );
    (
        SnapshotsClient::new(containerd_client::connect(&sock).await.unwrap()),
        Server { stop, task },
    )
}

async fn start(dir: &Path, fake: Arc<Fake>) -> SnapshotsClient<Channel> {
    let (c, s) = start_server(dir, fake).await;
    std::mem::forget(s.stop);
    c
}

fn layer_labels(chain: &str, layer: &str) -> HashMap<String, String> {
    [
        (label::TARGET_SNAPSHOT_REF, chain),
        (label::CRI_IMAGE_REF, "127.0.0.1:5000/x:y"),
        (label::CRI_MANIFEST_DIGEST, "sha256:m"),
        (label::CRI_LAYER_DIGEST, layer),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn prep(key: &str, parent: &str, labels: HashMap<String, String>) -> PrepareSnapshotRequest {
    PrepareSnapshotRequest {
        snapshotter: "soci".into(),
        key: key.into(),
        parent: parent.into(),
        labels,
    }
}

async fn list(
    c: &mut SnapshotsClient<Channel>,
    filter: &str,
) -> Vec<containerd_client::services::v1::snapshots::Info> {
    let mut s = c
        .list(ListSnapshotsRequest {
            snapshotter: "soci".into(),
            filters: vec![filter.into()],
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        out.extend(m.info);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_prepare_decision_tree() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default());
    let mut c = start(dir.path(), fake.clone()).await;

    // Lazy layer: ALREADY_EXISTS, committed under the chain id with the remote labels, and found the
    // way containerd looks for it.
    let e = c
        .prepare(prep(
            "default/1/extract-1 sha256:c1",
            "",
            layer_labels("sha256:c1", "sha256:lazy"),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert_eq!(e.message(), "target snapshot \"sha256:c1\": already exists");
    let found = list(
        &mut c,
        r#"labels."containerd.io/snapshot.ref"==sha256:c1,parent=="""#,
    )
    .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].name, "sha256:c1");
    assert_eq!(
        found[0].labels.get(label::REMOTE).map(String::as_str),
        Some(label::REMOTE_VALUE)
    );
    assert_eq!(
        found[0]
            .labels
            .get(label::HAS_SOCI_INDEX_DIGEST)
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        found[0]
            .labels
            .get(label::REMOTE_NAMESPACE)
            .map(String::as_str),
        Some("default")
    );

    // The same chain prepared again (e.g. from another namespace): ALREADY_EXISTS, and the extra
    // active snapshot and its mount are discarded.
    let e = c
        .prepare(prep(
            "other/9/extract-9 sha256:c1",
            "",
            layer_labels("sha256:c1", "sha256:lazy"),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(list(&mut c, "kind==active").await.is_empty());
    assert_eq!(fake.mounted().len(), 1);
    fake.unmounted.lock().unwrap().clear();

    // Layer without zTOC: unpacked locally by the snapshotter, committed with its disk usage.
    let e = c
        .prepare(prep(
            "default/2/extract-2 sha256:c2",
            "sha256:c1",
            layer_labels("sha256:c2", "sha256:noztoc"),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let u = c
        .usage(UsageRequest {
            snapshotter: "soci".into(),
            key: "sha256:c2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(u.size >= 10_000, "{u:?}");

    // No index: mounts come back (containerd applies the layer) and commit works as usual.
    let m = c
        .prepare(prep(
            "default/3/extract-3 sha256:c3",
            "sha256:c2",
            layer_labels("sha256:c3", "sha256:other"),
        ))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(m[0].r#type, "overlay");
    c.commit(CommitSnapshotRequest {
        snapshotter: "soci".into(),
        name: "sha256:c3".into(),
        key: "default/3/extract-3 sha256:c3".into(),
        labels: HashMap::new(),
    })
    .await
    .unwrap();

    // Container rootfs on top: overlay with three lowerdirs, nearest first.
    let m = c
        .prepare(prep("default/4/rootfs", "sha256:c3", HashMap::new()))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let lower = m[0]
        .options
        .iter()
        .find(|o| o.starts_with("lowerdir="))
        .unwrap();
    assert_eq!(lower.matches(':').count(), 2, "{lower}");

    // A broken remote layer makes Mounts fail with UNAVAILABLE.
    *fake.broken.lock().unwrap() = true;
    let e = c
        .mounts(MountsRequest {
            snapshotter: "soci".into(),
            key: "default/4/rootfs".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    *fake.broken.lock().unwrap() = false;

    // Removing a parent with children is refused; removing the chain unmounts the lazy layer.
    let e = c
        .remove(RemoveSnapshotRequest {
            snapshotter: "soci".into(),
            key: "sha256:c1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    for k in ["default/4/rootfs", "sha256:c3", "sha256:c2", "sha256:c1"] {
        c.remove(RemoveSnapshotRequest {
            snapshotter: "soci".into(),
            key: k.into(),
        })
        .await
        .unwrap();
    }
    assert_eq!(fake.unmounted.lock().unwrap().len(), 1);
    assert!(fake.mounted().is_empty());
    let e = c
        .mounts(MountsRequest {
            snapshotter: "soci".into(),
            key: "sha256:c1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut c, server) = start_server(dir.path(), Arc::new(Fake::default())).await;
        c.prepare(prep("default/1/a", "", HashMap::new()))
            .await
            .unwrap();
        c.commit(CommitSnapshotRequest {
            snapshotter: "soci".into(),
            name: "layer".into(),
            key: "default/1/a".into(),
            labels: [("x".to_string(), "y".to_string())].into(),
        })
        .await
        .unwrap();
        drop(c);
        let _ = server.stop.send(());
        server.task.await.unwrap().unwrap();
    }
    let mut c = start(dir.path(), Arc::new(Fake::default())).await;
    let all = list(&mut c, "").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].name, "layer");
    assert_eq!(all[0].labels.get("x").map(String::as_str), Some("y"));
    let e = c
        .prepare(prep("default/1/a", "layer", HashMap::new()))
        .await;
    assert!(e.is_ok(), "{e:?}");
    let e = c
        .prepare(prep("default/1/a", "layer", HashMap::new()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
}
