//! `[cri_keychain]` end to end (spec §5.13 item 3): a containerd 1.6 with its CRI plugin enabled
//! (snapshotter `soci`, snapshot annotations on), the daemon serving the CRI ImageService on its
//! socket and forwarding to containerd, and a password-protected docker-registry holding two images
//! converted with v2 SOCI indexes. Kubelet's part is played by a tonic CRI client on the daemon's
//! socket.
//!
//! containerd is configured with the registry's credentials itself (so it can pull without an
//! `AuthConfig`); the daemon has none but what the keychain captures. So:
//! - `PullImage` with an `AuthConfig` through the daemon: the daemon fetches the manifest, SOCI
//!   index and zTOCs with that credential (authenticated 200s with its User-Agent in the registry
//!   log) and mounts the layers lazily (FUSE mounts under its root);
//! - `PullImage` of the other image without an `AuthConfig`: containerd pulls, the daemon cannot
//!   fetch the SOCI artifacts (`unable to fetch SOCI artifacts`, 401s) and the layers take the
//!   normal path (no new FUSE mount);
//! - `ListImages`/`ImageStatus` are forwarded; `RemoveImage` forgets the credential.
//!
//! Needs root, /dev/fuse, containerd, docker-registry, htpasswd (apache2-utils), skopeo, python3;
//! prints `SKIPPED: …` otherwise.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use soci_snapshotter::cri::generated::image_service_client::ImageServiceClient;
use soci_snapshotter::cri::generated::{
    AuthConfig, ImageSpec, ImageStatusRequest, ListImagesRequest, PullImageRequest,
    RemoveImageRequest,
};
use tonic::transport::Channel;

const USER: &str = "cri-user";
const PASSWORD: &str = "cri-pa55";

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .and_then(|p| p.to_str().map(String::from))
        .is_some_and(|p| p.split(':').any(|d| Path::new(d).join(tool).is_file()))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().expect("spawn");
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn free_port() -> u16 {
    // Ports of scripts/services.sh instances (default and helpers' bases) are avoided.
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        if !(5000..=5299).contains(&port) {
            return port;
        }
    }
}

/// A child process stopped by signal on drop (SIGINT lets the daemon unmount).
struct Proc {
    child: Child,
    signal: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args([&format!("-{}", self.signal), &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(cmd: &mut Command, log: &Path, signal: &'static str) -> Proc {
    let out = std::fs::File::create(log).expect("log");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    Proc { child, signal }
}

/// Lazily unmounts whatever is still mounted under the work dir (after the processes are gone).
struct Unmounter(PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        for mp in mounts_under(&self.0, "").into_iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(&mp).status();
        }
    }
}

/// Mount points under `dir` whose file system type starts with `fstype`.
fn mounts_under(dir: &Path, fstype: &str) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 2 && f[1].starts_with(&prefix) && f[2].starts_with(fstype))
                .then(|| f[1].to_string())
        })
        .collect()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// The `soci` CLI next to this test's binary (cargo builds it with the workspace), built when
/// missing (e.g. `cargo test -p soci-snapshotter`).
fn soci_cli() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    let bin = dir.join("soci");
    if !bin.is_file() {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        run(Command::new(cargo).args(["build", "-q", "-p", "soci-cli", "--bin", "soci"]));
    }
    assert!(bin.is_file(), "no soci CLI at {}", bin.display());
    bin
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// Starts docker-registry with htpasswd auth and an info-level access log.
fn auth_registry(dir: &Path) -> (Proc, String, PathBuf) {
    let out = run(Command::new("htpasswd").args(["-nbB", USER, PASSWORD]));
    std::fs::write(dir.join("htpasswd"), out.trim()).expect("htpasswd");
    let port = free_port();
    let cfg = dir.join("registry.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {d}/data}}\nhttp: {{addr: 127.0.0.1:{port}}}\nauth:\n  htpasswd: {{realm: soci-cri, path: {d}/htpasswd}}\n",
            d = dir.display()
        ),
    )
    .expect("registry config");
    let log = dir.join("registry.log");
    let p = spawn(
        Command::new("docker-registry").arg("serve").arg(&cfg),
        &log,
        "TERM",
    );
    let host = format!("127.0.0.1:{port}");
    wait_for("docker-registry", || {
        let Ok(mut s) = std::net::TcpStream::connect(&host) else {
            return false;
        };
        let _ = s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out.starts_with(b"HTTP/1.1 401")
    });
    (p, host, log)
}

/// Builds a synthetic image, pushes it with credentials, converts it with a v2 SOCI index.
fn push_converted(work: &Path, soci: &Path, reg: &str, repo: &str, seed: &str) -> String {
    let layout = work.join(format!("layout-{repo}"));
    run(Command::new("python3")
        .arg(repo_root().join("scripts/make-test-image.py"))
        .arg(&layout)
        .arg("v1")
        .args(["--kind", "large", "--synthetic", "--size-mb", "4"])
        .args(["--big-layers", "1", "--seed", seed]));
    let creds = format!("{USER}:{PASSWORD}");
    let plain = format!("{reg}/cri/{repo}:v1");
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{plain}"),
    ]));
    let converted = format!("{reg}/cri/{repo}:soci");
    run(Command::new(soci).args([
        "convert",
        "--standalone",
        "--plain-http",
        "--user",
        &creds,
        "--min-layer-size",
        "0",
        "--span-size",
        "65536",
        &plain,
        &converted,
    ]));
    converted
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

async fn call<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(Duration::from_secs(600), f).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => panic!("{what}: no answer in 600 s"),
    }
}

/// Registry access-log lines (combined format) of the daemon's requests.
fn daemon_requests(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"soci-snapshotter/") && l.contains("\"GET /v2/"))
        .map(String::from)
        .collect()
}

fn status_of(line: &str) -> Option<u16> {
    // `… "GET /v2/… HTTP/1.1" 200 1234 "" "soci-snapshotter/…"`
    line.split("HTTP/1.1\" ")
        .nth(1)?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

fn skipped() -> Option<String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        return Some(format!("cannot open /dev/fuse (need root and FUSE): {e}"));
    }
    for tool in [
        "containerd",
        "docker-registry",
        "htpasswd",
        "skopeo",
        "python3",
        "umount",
    ] {
        if !have(tool) {
            return Some(format!("{tool} not installed (scripts/install-deps.sh)"));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_pull_through_the_daemon_uses_the_captured_credential() {
    if let Some(why) = skipped() {
        println!("SKIPPED: {why}");
        return;
    }
    // Short path: unix socket paths must stay under 108 bytes.
    let tmp = tempfile::Builder::new()
        .prefix("soci-cri-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let work = tmp.path().to_path_buf();
    let _unmount = Unmounter(work.clone());
    let soci = soci_cli();
    let (_registry, reg, reg_log) = auth_registry(&work);
    let image_a = push_converted(&work, &soci, &reg, "a", "21");
    let image_b = push_converted(&work, &soci, &reg, "b", "22");

    // The daemon: v2 indexes, CRI keychain forwarding to our containerd; no Docker config.
    let ctrd_sock = work.join("ctrd.sock");
    let soci_sock = work.join("soci.sock");
    let root = work.join("root");
    std::fs::create_dir_all(work.join("docker")).expect("docker config dir");
    std::fs::write(
        work.join("soci.toml"),
        format!(
            "[pull_modes.soci_v2]\nenable = true\n[cri_keychain]\nenable_keychain = true\nimage_service_path = \"{}\"\n",
            ctrd_sock.display()
        ),
    )
    .expect("daemon config");
    let daemon_log = work.join("daemon.log");
    let _daemon = spawn(
        Command::new(env!("CARGO_BIN_EXE_soci-snapshotter-grpc"))
            .arg("--address")
            .arg(&soci_sock)
            .arg("--root")
            .arg(&root)
            .arg("--config")
            .arg(work.join("soci.toml"))
            .args(["--log-level", "debug"])
            .env("DOCKER_CONFIG", work.join("docker"))
            .env("HOME", &work),
        &daemon_log,
        "INT",
    );
    wait_for("the daemon's socket", || soci_sock.exists());

    // containerd 1.6 with CRI: snapshotter soci, annotations passed, the registry over plain
    // HTTP with containerd's own credential.
    let c = work.join("ctrd");
    std::fs::create_dir_all(&c).expect("containerd dir");
    std::fs::write(
        c.join("config.toml"),
        format!(
            r#"version = 2
root = "{c}/root"
state = "{c}/state"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{c}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{c}/cni-bin"
    conf_dir = "{c}/cni-conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "soci"
    disable_snapshot_annotations = false
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{reg}"]
    endpoint = ["http://{reg}"]
  [plugins."io.containerd.grpc.v1.cri".registry.configs."{reg}".auth]
    username = "{USER}"
    password = "{PASSWORD}"
[proxy_plugins]
  [proxy_plugins.soci]
    type = "snapshot"
    address = "{soci}"
"#,
            c = c.display(),
            sock = ctrd_sock.display(),
            soci = soci_sock.display(),
        ),
    )
    .expect("containerd config");
    let ctrd_log = c.join("log");
    let _containerd = spawn(
        Command::new("containerd")
            .arg("--config")
            .arg(c.join("config.toml")),
        &ctrd_log,
        "TERM",
    );

    // The CRI client talks to the daemon's socket only.
    let ch: Channel = containerd_client::connect(&soci_sock)
        .await
        .expect("connect to the daemon");
    let mut cri = ImageServiceClient::new(ch);
    let mut ready = false;
    for _ in 0..300 {
        if call("ListImages", cri.list_images(ListImagesRequest::default()))
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ctrd_text = || std::fs::read_to_string(&ctrd_log).unwrap_or_default();
    assert!(
        ready,
        "the CRI image service never answered through the daemon; containerd log:\n{}",
        ctrd_text()
    );
    let daemon_text = || std::fs::read_to_string(&daemon_log).unwrap_or_default();

    // 1. PullImage with an AuthConfig: stored, used by the daemon, layers mounted lazily.
    let auth = AuthConfig {
        username: USER.into(),
        password: PASSWORD.into(),
        server_address: format!("http://{reg}"),
        ..Default::default()
    };
    let pulled = call(
        "PullImage a",
        cri.pull_image(PullImageRequest {
            image: spec(&image_a),
            auth: Some(auth),
            sandbox_config: None,
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("PullImage {image_a}: {e}\ncontainerd log:\n{}", ctrd_text()));
    assert!(pulled.image_ref.starts_with("sha256:"), "{pulled:?}");
    let log = daemon_text();
    assert!(
        log.contains("CRI keychain: stored credential for image"),
        "{log}"
    );
    assert!(
        log.contains("using CRI keychain credential for image"),
        "{log}"
    );
    assert!(
        log.contains("\"remote-snapshot-prepared\":\"true\""),
        "{log}"
    );
    let fuse_a = mounts_under(&root, "fuse");
    assert!(
        !fuse_a.is_empty(),
        "no FUSE mount under the daemon root after a lazy pull:\n{log}"
    );
    let reqs = daemon_requests(&reg_log);
    let ok_a: Vec<&String> = reqs
        .iter()
        .filter(|l| l.contains("/v2/cri/a/") && status_of(l) == Some(200))
        .collect();
    assert!(
        ok_a.iter().any(|l| l.contains("/manifests/sha256:")),
        "no authenticated manifest GET from the daemon:\n{}",
        reqs.join("\n")
    );
    assert!(
        ok_a.iter().any(|l| l.contains("/blobs/sha256:")),
        "no authenticated blob (zTOC) GET from the daemon:\n{}",
        reqs.join("\n")
    );

    // 2. ListImages and ImageStatus are forwarded to containerd's CRI.
    let list = call("ListImages", cri.list_images(ListImagesRequest::default()))
        .await
        .expect("ListImages");
    assert!(
        list.images.iter().any(|i| i.repo_tags.contains(&image_a)),
        "{image_a} not listed: {list:?}"
    );
    let st = call(
        "ImageStatus",
        cri.image_status(ImageStatusRequest {
            image: spec(&image_a),
            verbose: false,
        }),
    )
    .await
    .expect("ImageStatus");
    assert_eq!(st.image.map(|i| i.id), Some(pulled.image_ref.clone()));

    // 3. Without an AuthConfig containerd still pulls (its own credential), but the daemon has
    // none for this image: the SOCI artifacts cannot be fetched and the layers take the normal
    // path.
    call(
        "PullImage b",
        cri.pull_image(PullImageRequest {
            image: spec(&image_b),
            auth: None,
            sandbox_config: None,
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("PullImage {image_b}: {e}\ncontainerd log:\n{}", ctrd_text()));
    let log = daemon_text();
    assert!(
        log.lines()
            .any(|l| l.contains("unable to fetch SOCI artifacts") && l.contains("cri/b")),
        "{log}"
    );
    assert_eq!(
        mounts_under(&root, "fuse").len(),
        fuse_a.len(),
        "image b was mounted lazily without a credential"
    );
    let reqs = daemon_requests(&reg_log);
    assert!(
        reqs.iter()
            .filter(|l| l.contains("/v2/cri/b/"))
            .all(|l| status_of(l) == Some(401)),
        "the daemon got image b without a credential:\n{}",
        reqs.join("\n")
    );
    assert!(reqs.iter().any(|l| l.contains("/v2/cri/b/")));

    // 4. RemoveImage forgets the credential (and removes the image in containerd).
    call(
        "RemoveImage",
        cri.remove_image(RemoveImageRequest {
            image: spec(&image_a),
        }),
    )
    .await
    .expect("RemoveImage");
    assert!(
        daemon_text().contains("CRI keychain: forgot credential for image"),
        "{}",
        daemon_text()
    );
    let list = call("ListImages", cri.list_images(ListImagesRequest::default()))
        .await
        .expect("ListImages");
    assert!(
        !list.images.iter().any(|i| i.repo_tags.contains(&image_a)),
        "{list:?}"
    );
}
