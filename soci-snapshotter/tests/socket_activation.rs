//! `soci-snapshotter-grpc --address fd://` under systemd socket activation (spec §5.1):
//! `systemd-socket-activate` listens on a unix socket and starts the daemon on the first
//! connection with the socket as descriptor 3; that connection and later ones are served by the
//! snapshots gRPC service, and the daemon leaves the socket file (systemd's) in place at exit.
//! Needs `/usr/bin/systemd-socket-activate` (Debian package `systemd`, scripts/install-deps.sh);
//! prints `SKIPPED: <reason>` without it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{ListSnapshotsRequest, PrepareSnapshotRequest};

const ACTIVATE: &str = "/usr/bin/systemd-socket-activate";

/// Kills the daemon if the test fails before it stops it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn list_keys(c: &mut SnapshotsClient<tonic::transport::Channel>) -> Vec<String> {
    let mut s = c
        .list(ListSnapshotsRequest {
            snapshotter: "soci".into(),
            filters: vec![],
        })
        .await
        .expect("list")
        .into_inner();
    let mut keys = Vec::new();
    while let Some(m) = s.message().await.expect("list stream") {
        keys.extend(m.info.into_iter().map(|i| i.name));
    }
    keys
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fd_address_serves_grpc_on_the_socket_from_systemd() {
    if !Path::new(ACTIVATE).exists() {
        println!("SKIPPED: {ACTIVATE} missing (Debian package systemd; scripts/install-deps.sh)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("soci.sock");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "skip_check_snapshotter_supported = true\n[background_fetch]\ndisable = true\n",
    )
    .expect("config");
    let log = dir.path().join("daemon.log");
    let child = Command::new(ACTIVATE)
        .arg("-l")
        .arg(&sock)
        .arg(env!("CARGO_BIN_EXE_soci-snapshotter-grpc"))
        .args(["--address", "fd://", "--log-level", "debug", "--root"])
        .arg(dir.path().join("root"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn systemd-socket-activate");
    let mut daemon = Daemon(child);
    wait_for("the activation socket", Duration::from_secs(20), || {
        sock.exists()
    });
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !read_log().contains("starting soci-snapshotter-grpc"),
        "the daemon must start on the first connection, not before"
    );

    // The first connection starts the daemon; it is accepted on the inherited socket.
    let channel = tokio::time::timeout(Duration::from_secs(60), containerd_client::connect(&sock))
        .await
        .expect("connect timed out")
        .expect("connect");
    let mut c = SnapshotsClient::new(channel);
    assert!(list_keys(&mut c).await.is_empty());
    let mounts = c
        .prepare(PrepareSnapshotRequest {
            snapshotter: "soci".into(),
            key: "activated".into(),
            parent: String::new(),
            labels: Default::default(),
        })
        .await
        .expect("prepare")
        .into_inner()
        .mounts;
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(list_keys(&mut c).await, ["activated"]);

    let text = read_log();
    let started = text
        .lines()
        .find(|l| l.contains("\"msg\":\"soci-snapshotter-grpc successfully started\""))
        .unwrap_or_else(|| panic!("no start line in {text}"));
    assert!(
        started.contains(&format!("\"address\":\"{}\"", sock.display())),
        "{started}"
    );
    assert!(
        !text.contains("falling back to the default socket"),
        "{text}"
    );

    // systemd-socket-activate execs the daemon, so the child is the daemon: SIGINT is a clean
    // exit, and the socket file stays (it belongs to systemd).
    drop(c);
    let sent = Command::new("kill")
        .args(["-INT", &daemon.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let mut status = None;
    wait_for("the daemon to exit", Duration::from_secs(30), || {
        status = daemon.0.try_wait().expect("wait");
        status.is_some()
    });
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}\n{}",
        read_log()
    );
    assert!(sock.exists(), "the daemon removed systemd's socket");
}
