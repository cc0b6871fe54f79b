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
    /// Id-mapped views: (source, mount point, mapping).
    views: Mutex<Vec<(PathBuf, PathBuf, soci_fs::IdMap)>>,
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
    fn mount_idmapped(
        &self,
        source: &Path,
        mp: &Path,
        map: &soci_fs::IdMap,
    ) -> Result<(), RemoteError> {
        if !self.mounted.lock().unwrap().contains(source) {
            return Err(RemoteError::Unavailable("source not mounted".into()));
        }
        assert!(mp.is_dir(), "the view's mount point exists");
        self.mounted.lock().unwrap().insert(mp.to_path_buf());
        self.views
            .lock()
            .unwrap()
            .push((source.to_path_buf(), mp.to_path_buf(), map.clone()));
        Ok(())
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

fn option<'a>(m: &'a containerd_client::types::Mount, key: &str) -> &'a str {
    m.options
        .iter()
        .find_map(|o| o.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {:?}", m.options))
}

/// Layer `sha256:c3` on `sha256:c2` without index: `Prepare` returns mounts, `fill` plays
/// containerd applying the layer into the upper dir, then it is committed. Returns the mounts.
async fn deferred_layer_c3(
    c: &mut SnapshotsClient<Channel>,
    fill: impl FnOnce(&Path),
) -> Vec<containerd_client::types::Mount> {
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
    fill(Path::new(option(&m[0], "upperdir=")));
    c.commit(CommitSnapshotRequest {
        snapshotter: "soci".into(),
        name: "sha256:c3".into(),
        key: "default/3/extract-3 sha256:c3".into(),
        labels: HashMap::new(),
    })
    .await
    .unwrap();
    m
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
    let m = deferred_layer_c3(&mut c, |_| {}).await;
    assert_eq!(m[0].r#type, "overlay");

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

fn owner(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(p).unwrap();
    (md.uid(), md.gid())
}

/// Id-mapped rootfs (spec §5.3.7) over a lazy, a local and a containerd-applied layer: every
/// lowerdir is a `<parentId>_<activeId>` view (a second mount of the lazy layer, mapped copies
/// of the others), owners are mapped, and removing the rootfs removes the views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_mapped_rootfs() {
    if !nix::unistd::Uid::effective().is_root() {
        println!("SKIPPED: id-mapped copies need root (chown)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default());
    let mut c = start(dir.path(), fake.clone()).await;
    let snaps = dir.path().join("snapshotter/snapshots");
    for (key, parent, chain, layer) in [
        (
            "default/1/extract-1 sha256:c1",
            "",
            "sha256:c1",
            "sha256:lazy",
        ),
        (
            "default/2/extract-2 sha256:c2",
            "sha256:c1",
            "sha256:c2",
            "sha256:noztoc",
        ),
    ] {
        let e = c
            .prepare(prep(key, parent, layer_labels(chain, layer)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    }
    // A layer applied by containerd, with a file owned by 1000:1000.
    deferred_layer_c3(&mut c, |upper| {
        std::fs::write(upper.join("owned"), b"1000").unwrap();
        std::os::unix::fs::chown(upper.join("owned"), Some(1000), Some(1000)).unwrap();
    })
    .await;

    let idmap_labels = |u: &str, g: &str| -> HashMap<String, String> {
        [
            (
                "containerd.io/snapshot/uidmapping".to_string(),
                u.to_string(),
            ),
            (
                "containerd.io/snapshot/gidmapping".to_string(),
                g.to_string(),
            ),
        ]
        .into()
    };
    // Malformed labels: INVALID_ARGUMENT, nothing left behind.
    let before: Vec<_> = std::fs::read_dir(&snaps)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let e = c
        .prepare(prep(
            "default/4/bad",
            "sha256:c3",
            idmap_labels("0:12345", "0:1:2"),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(list(&mut c, "kind==active").await.is_empty());
    let after: Vec<_> = std::fs::read_dir(&snaps)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before, after);

    let m = c
        .prepare(prep(
            "default/5/rootfs",
            "sha256:c3",
            idmap_labels(
                "0:12345:1000,1000:22222:1000",
                r#"[{"containerID":0,"hostID":30000,"size":65536}]"#,
            ),
        ))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(list(&mut c, "").await.len(), 4);
    let lower: Vec<PathBuf> = option(&m[0], "lowerdir=")
        .split(':')
        .map(PathBuf::from)
        .collect();
    assert_eq!(lower.len(), 3);
    let upper = PathBuf::from(option(&m[0], "upperdir="));
    let active = upper
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut parents = Vec::new();
    for l in &lower {
        assert_eq!(l.file_name().unwrap(), "fs");
        let name = l
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let (pid, id) = name
            .split_once('_')
            .unwrap_or_else(|| panic!("{name} is not <pid>_<id>"));
        assert_eq!(id, active);
        assert!(l.is_dir(), "{l:?}");
        parents.push(snaps.join(pid).join("fs"));
    }
    // Nearest first: c3 (copied), c2 (copied), c1 (lazy: a second mount).
    assert_eq!(owner(&lower[0].join("owned")), (22222, 31000));
    assert_eq!(owner(&parents[0].join("owned")), (1000, 1000));
    assert_eq!(owner(&lower[1].join("unpacked.txt")), (12345, 30000));
    assert_eq!(
        std::fs::read(lower[1].join("unpacked.txt")).unwrap(),
        vec![7u8; 10_000]
    );
    assert_eq!(owner(&lower[0]), (12345, 30000));
    assert_eq!(owner(&upper), (12345, 30000));
    {
        let views = fake.views.lock().unwrap();
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].0, parents[2]);
        assert_eq!(views[0].1, lower[2]);
        assert_eq!((views[0].2.uid(1000), views[0].2.gid(1000)), (22222, 31000));
    }
    // Mounts recomputes the same lowerdirs.
    let again = c
        .mounts(MountsRequest {
            snapshotter: "soci".into(),
            key: "default/5/rootfs".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(option(&again[0], "lowerdir="), option(&m[0], "lowerdir="));

    // Removing the rootfs unmounts and deletes its views; the lazy layer stays mounted.
    c.remove(RemoveSnapshotRequest {
        snapshotter: "soci".into(),
        key: "default/5/rootfs".into(),
    })
    .await
    .unwrap();
    for l in &lower {
        assert!(!l.parent().unwrap().exists(), "{l:?} removed");
    }
    assert!(fake.unmounted.lock().unwrap().contains(&lower[2]));
    assert!(fake.mounted().contains(&parents[2]));
    assert!(!fake.mounted().contains(&lower[2]));
}
