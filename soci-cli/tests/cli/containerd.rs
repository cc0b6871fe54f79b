//! `soci create`, `soci push`, `index list --ref` against real containerd and registries started by
//! `scripts/services.sh start` (spec §8 create_test.go, push_test.go, index_test.go). Prints
//! `SKIPPED: …` when a service or tool is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{
    have, json, make_image, ok, referrers_host, registry_host, soci, test_image, text,
};

struct Env {
    sock: String,
    ns: String,
    root: PathBuf,
    /// `--content-store`: `soci` or `containerd`.
    store: &'static str,
}

impl Env {
    fn args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            "-a",
            &self.sock,
            "-n",
            &self.ns,
            "--root",
            self.root.to_str().expect("utf8"),
            "--content-store",
            self.store,
        ];
        v.extend_from_slice(rest);
        v
    }
    fn ok(&self, rest: &[&str]) -> String {
        ok(&self.args(rest))
    }
    fn fails(&self, rest: &[&str], msg: &str) {
        crate::common::fails_with(&self.args(rest), msg);
    }
}

fn services() -> Option<String> {
    let base = std::env::var("SOCI_E2E_BASE").unwrap_or_else(|_| "/tmp/soci-e2e".to_owned());
    let sock = format!("{base}/ctrd/containerd.sock");
    if !Path::new(&sock).exists() {
        println!("SKIPPED: no containerd socket at {sock} (run scripts/services.sh start)");
        return None;
    }
    for host in [registry_host(), referrers_host()] {
        if std::net::TcpStream::connect(&host).is_err() {
            println!("SKIPPED: no registry on {host} (run scripts/services.sh start)");
            return None;
        }
    }
    for tool in ["skopeo", "ctr", "curl"] {
        if !have(tool) {
            println!("SKIPPED: {tool} not installed");
            return None;
        }
    }
    Some(sock)
}

fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().expect("spawn");
    assert!(o.status.success(), "{cmd} {args:?}: {}", text(&o.stderr));
    text(&o.stdout)
}

/// `ctr -a SOCK -n NS ARGS...`, asserting success; returns stdout.
fn ctr(sock: &str, ns: &str, args: &[&str]) -> String {
    let mut a = vec!["-a", sock, "-n", ns];
    a.extend_from_slice(args);
    run("ctr", &a)
}

/// Number of v1 SOCI referrers of `manifest` in `repo`: via the tag schema on the distribution
/// registry, via the Referrers API on the other one.
fn referrers(host: &str, repo: &str, manifest: &str) -> usize {
    let url = if host == registry_host() {
        format!(
            "http://{host}/v2/{repo}/manifests/{}",
            manifest.replace(':', "-")
        )
    } else {
        format!("http://{host}/v2/{repo}/referrers/{manifest}")
    };
    let o = Command::new("curl")
        .args([
            "-s",
            "-H",
            "Accept: application/vnd.oci.image.index.v1+json",
            &url,
        ])
        .output()
        .expect("curl");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["manifests"].as_array().map_or(0, |m| {
        m.iter()
            .filter(|d| d["artifactType"] == "application/vnd.amazon.soci.index.v1+json")
            .count()
    })
}

#[test]
fn create_push_and_list() {
    let Some(sock) = services() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(img) = test_image(dir.path(), "multi") else {
        return;
    };
    let id = std::process::id();
    let repo = format!("soci-cli-test/ctd-{id}");
    let ns = format!("soci-cli-test-{id}");
    let layout = format!("oci:{}:t", img.display());
    let mut refs = Vec::new();
    let (reg, refs_reg) = (registry_host(), referrers_host());
    for host in [reg.as_str(), refs_reg.as_str()] {
        let r = format!("{host}/{repo}:v1");
        run(
            "skopeo",
            &[
                "copy",
                "-q",
                "--all",
                "--dest-tls-verify=false",
                &layout,
                &format!("docker://{r}"),
            ],
        );
        ctr(
            &sock,
            &ns,
            &["images", "pull", "--plain-http", "--all-platforms", &r],
        );
        refs.push(r);
    }
    let env = Env {
        sock: sock.clone(),
        ns: ns.clone(),
        root: dir.path().join("root"),
        store: "soci",
    };
    let image = refs[0].as_str();
    // The host platform's manifest digest (the multi image has one for amd64 or arm64 each).
    let idx = json(&img.join("index.json"));
    let list_digest = idx["manifests"][0]["digest"]
        .as_str()
        .expect("d")
        .to_owned();
    let list = crate::common::blob(&img, &list_digest);
    let host_arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let manifest = list["manifests"]
        .as_array()
        .expect("m")
        .iter()
        .find(|m| m["platform"]["architecture"] == host_arch)
        .expect("host manifest")["digest"]
        .as_str()
        .expect("d")
        .to_owned();

    // Parameter validation and the empty index.
    env.fails(
        &["create", image, "--span-size", "-1"],
        "span size must be >= 0",
    );
    env.fails(
        &["create", image, "--min-layer-size", "-1"],
        "min layer size must be >= 0",
    );
    env.fails(&["create"], "source image needs to be specified");
    env.fails(
        &["create", image, "--min-layer-size", "1000000000"],
        "no ztocs created, all layers either skipped or produced errors",
    );
    assert_eq!(env.ok(&["index", "list", "-q"]), "");

    // Sparse index (default 10 MiB minimum): one zTOC, one skip line.
    let out = env.ok(&["create", image, "-q"]);
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("ztoc skipped - layer "))
            .count(),
        1,
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.contains(" -> ztoc ")).count(),
        1,
        "{out}"
    );
    // Re-create: reused; --force: rebuilt.
    let again = env.ok(&["create", image, "-q"]);
    assert_eq!(again.matches("(already exists)").count(), 1, "{again}");
    let forced = env.ok(&["create", image, "-q", "--force"]);
    assert_eq!(forced.matches("(already exists)").count(), 0, "{forced}");
    // ztoc list --image-ref: the zTOCs of the image's indexes, through the DB.
    let all_ztocs = env.ok(&["ztoc", "list", "-q"]);
    let image_ztocs = env.ok(&["ztoc", "list", "--image-ref", image, "-q"]);
    assert_eq!(image_ztocs.lines().count(), 1, "{image_ztocs}");
    let ztoc = image_ztocs.trim().to_owned();
    assert!(all_ztocs.lines().any(|l| l == ztoc), "{all_ztocs}");
    let table = env.ok(&["ztoc", "list", "--image-ref", image, "--ztoc-digest", &ztoc]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .expect("header")
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(header, ["DIGEST", "SIZE", "LAYER DIGEST"], "{table}");
    assert!(lines.next().expect("row").starts_with(&ztoc), "{table}");
    env.fails(
        &[
            "ztoc",
            "list",
            "--image-ref",
            image,
            "--ztoc-digest",
            "sha256:0000",
        ],
        "the specified ztoc doesn't exist or is not associated with the specified image",
    );
    // All platforms.
    env.ok(&[
        "create",
        image,
        "-q",
        "--all-platforms",
        "--min-layer-size",
        "0",
    ]);
    let all = env.ok(&["index", "list", "-q"]);
    assert_eq!(all.lines().count(), 3, "{all}");
    let table = env.ok(&["index", "list", "--ref", image]);
    // One row per containerd image with the same target: both names of the image appear.
    assert!(
        table
            .lines()
            .skip(1)
            .all(|l| l.contains(image) || l.contains(refs[1].as_str())),
        "{table}"
    );
    assert!(
        table.lines().skip(1).any(|l| l.contains(refs[1].as_str())),
        "{table}"
    );
    assert_eq!(
        env.ok(&[
            "index",
            "list",
            "-q",
            "--ref",
            image,
            "-p",
            "linux/arm64/v8"
        ])
        .lines()
        .count(),
        1
    );

    // Push policies with the tag-schema fallback (distribution registry) — counts as in TestPushWithExistingIndices.
    let repo_ref = image;
    let n = |host: &str| referrers(host, &repo, &manifest);
    let push = |args: &[&str]| {
        let mut a = vec!["push", "--plain-http"];
        a.extend_from_slice(args);
        a.push(repo_ref);
        env.ok(&a)
    };
    // --max-concurrent-uploads 0 means 3; every started upload reports its completion.
    let out = push(&["--max-concurrent-uploads", "0"]);
    for l in out.lines() {
        if let Some(d) = l.strip_prefix("pushing artifact with digest: ") {
            assert!(
                out.contains(&format!("successfully pushed artifact with digest: {d}")),
                "{out}"
            );
        }
    }
    assert!(
        out.contains("checking if a soci index already exists in remote repository..."),
        "{out}"
    );
    assert!(
        out.contains("pushing soci index with digest: sha256:"),
        "{out}"
    );
    assert!(
        out.contains("successfully pushed artifact with digest: sha256:"),
        "{out}"
    );
    assert_eq!(n(&reg), 1);
    env.ok(&["create", image, "-q", "--span-size", "1048576"]);
    let out = push(&["--existing-index", "skip"]);
    assert!(
        out.contains(": skipping pushing artifacts for image manifest: "),
        "{out}"
    );
    assert!(
        out.contains("soci index found in remote repository with digest: sha256:"),
        "{out}"
    );
    assert_eq!(n(&reg), 1);
    let out = push(&["--existing-index", "warn", "--max-concurrent-uploads", "1"]);
    assert!(
        out.contains("[WARN] soci index found in remote repository with digest: sha256:"),
        "{out}"
    );
    assert!(out.contains(": pushing index anyway"), "{out}");
    assert_eq!(n(&reg), 2);
    env.ok(&["create", image, "-q", "--span-size", "2097152"]);
    let out = push(&["--existing-index", "allow", "-q"]);
    assert!(!out.contains("checking if"), "{out}");
    assert_eq!(out.lines().count(), 1, "-q prints only the digest: {out}");
    assert_eq!(n(&reg), 3);
    let out = push(&[]);
    assert!(
        out.contains(
            "[WARN] multiple soci indices found in remote repository: pushing index anyway"
        ),
        "{out}"
    );
    // Pushing the newest index again: the referrers list stays at 3.
    assert_eq!(n(&reg), 3);
    env.fails(
        &["push", "--existing-index", "maybe", repo_ref],
        "unexpected value for flag existing-index: maybe, expected types [warn skip allow]",
    );

    // The Referrers API registry: same image under another name.
    let r2 = refs[1].as_str();
    let out = env.ok(&["push", "--plain-http", r2]);
    assert!(
        out.contains("pushing soci index with digest: sha256:"),
        "{out}"
    );
    assert_eq!(n(&refs_reg), 1);

    // convert (containerd): v2 image, idempotent, in place; --force rebuilds every zTOC.
    let conv = format!("{}-soci", refs[0]);
    env.fails(
        &["convert", image, &format!("{reg}/x@sha256:0000")],
        "the destination image must be a tagged ref",
    );
    let out = env.ok(&[
        "convert",
        "--all-platforms",
        "--min-layer-size",
        "0",
        image,
        &conv,
    ]);
    let d1 = out.lines().last().expect("digest").to_owned();
    let out = env.ok(&[
        "convert",
        "--all-platforms",
        "--min-layer-size",
        "0",
        &conv,
        &conv,
    ]);
    assert_eq!(
        out.lines().last().expect("digest"),
        d1,
        "converting the converted image is idempotent"
    );
    assert!(out.matches("(already exists)").count() >= 2, "{out}");
    let out = env.ok(&[
        "convert",
        "--all-platforms",
        "--min-layer-size",
        "0",
        "--force",
        &conv,
        &conv,
    ]);
    assert_eq!(out.matches("(already exists)").count(), 0, "{out}");
    let ls = ctr(&sock, &ns, &["images", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with(conv.as_str()) && l.contains(&d1)),
        "{ls}"
    );

    // rm --ref removes every index of the image.
    env.ok(&["index", "rm", "--ref", image]);
    let left = env.ok(&["index", "list", "-q"]);
    assert_eq!(
        left.lines().count(),
        1,
        "only the v2 index of the converted image is left: {left}"
    );
    env.ok(&["index", "rm", "--ref", &conv]);
    assert_eq!(env.ok(&["index", "list", "-q"]), "");
    let _ = Command::new("ctr")
        .args(["-a", &sock, "-n", &ns, "images", "rm", &refs[0], &refs[1]])
        .output();
    let _ = soci(&["--version"]);
}

fn lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_owned).collect();
    v.sort();
    v
}

/// `rebuild-db` over containerd's content store (spec §8 TestSociIndexRemove,
/// TestSociIndexRemoveAndRebuildWithSharedLayers, TestRebuildArtifactsDB): two images sharing
/// their three big layers, indexes in containerd; removing one image's index and running
/// containerd's GC then `rebuild-db` drops the orphaned zTOC and keeps the shared ones; a deleted
/// DB is rediscovered from containerd.
#[test]
fn rebuild_db_over_containerd_with_shared_layers() {
    let Some(sock) = services() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = dir.path().join("shared");
    for tag in ["a", "b"] {
        // Same seed and size: identical big layers; the note changes only the top layer.
        let args = [
            "--kind",
            "large",
            "--synthetic",
            "--size-mb",
            "24",
            "--note",
            tag,
        ];
        if !make_image(&layout, tag, &args) {
            return;
        }
    }
    let id = std::process::id();
    let ns = format!("soci-cli-rebuild-{id}");
    let reg = registry_host();
    let images: Vec<String> = ["a", "b"]
        .iter()
        .map(|tag| {
            let r = format!("{reg}/soci-cli-test/rebuild-{id}:{tag}");
            let src = format!("oci:{}:{tag}", layout.display());
            run(
                "skopeo",
                &[
                    "copy",
                    "-q",
                    "--dest-tls-verify=false",
                    &src,
                    &format!("docker://{r}"),
                ],
            );
            ctr(&sock, &ns, &["images", "pull", "--plain-http", &r]);
            r
        })
        .collect();
    let (a, b) = (images[0].as_str(), images[1].as_str());
    let root = dir.path().join("root");
    let env = Env {
        sock: sock.clone(),
        ns: ns.clone(),
        root: root.clone(),
        store: "containerd",
    };
    // Four zTOCs each (every layer indexed), three of them shared.
    let out = env.ok(&["create", a, "--min-layer-size", "0", "-q"]);
    assert_eq!(out.matches(" -> ztoc ").count(), 4, "{out}");
    let out = env.ok(&["create", b, "--min-layer-size", "0", "-q"]);
    assert_eq!(out.matches("(already exists)").count(), 3, "{out}");
    let all = lines(&env.ok(&["ztoc", "list", "-q"]));
    assert_eq!(all.len(), 5, "{all:?}");
    let b_ztocs = lines(&env.ok(&["ztoc", "list", "--image-ref", b, "-q"]));
    let a_ztocs = lines(&env.ok(&["ztoc", "list", "--image-ref", a, "-q"]));
    assert_eq!((a_ztocs.len(), b_ztocs.len()), (4, 4));
    let orphan: Vec<&String> = a_ztocs.iter().filter(|z| !b_ztocs.contains(z)).collect();
    assert_eq!(orphan.len(), 1, "{a_ztocs:?} {b_ztocs:?}");
    let orphan = orphan[0].clone();
    let b_index = env.ok(&["index", "list", "-q", "--ref", b]);
    assert_eq!(b_index.lines().count(), 1, "{b_index}");
    let b_table = env.ok(&["index", "list", "--ref", b]);
    // push from the containerd store: every zTOC arrives in the registry, byte-exact (the
    // registry verifies each digest).
    let out = env.ok(&["push", "--plain-http", b]);
    assert!(
        out.contains(&format!(
            "pushing soci index with digest: {}",
            b_index.trim()
        )),
        "{out}"
    );
    for z in &b_ztocs {
        let url = format!("http://{reg}/v2/soci-cli-test/rebuild-{id}/blobs/{z}");
        let code = run(
            "curl",
            &["-s", "-o", "/dev/null", "-w", "%{http_code}", "-I", &url],
        );
        assert_eq!(code, "200", "{z} pushed");
    }

    // rm the first image's index (deleted from containerd), then a synchronous GC.
    env.ok(&["index", "rm", "--ref", a]);
    let lease = format!("soci-cli-test-gc-{id}");
    ctr(&sock, &ns, &["leases", "create", "--id", &lease]);
    ctr(&sock, &ns, &["leases", "delete", "--sync", &lease]);
    let content = ctr(&sock, &ns, &["content", "ls", "-q"]);
    assert!(
        !content.lines().any(|l| l == orphan),
        "GC collected the orphaned zTOC"
    );
    assert!(
        b_ztocs.iter().all(|z| content.lines().any(|l| l == z)),
        "the shared zTOCs survive GC"
    );
    // Before rebuild-db the DB still lists the collected zTOC.
    assert!(env.ok(&["ztoc", "list", "-q"]).lines().any(|l| l == orphan));
    env.ok(&["rebuild-db"]);
    assert_eq!(lines(&env.ok(&["ztoc", "list", "-q"])), b_ztocs);
    assert_eq!(
        lines(&env.ok(&["ztoc", "list", "--image-ref", b, "-q"])),
        b_ztocs,
        "the other image's zTOC list is unchanged"
    );
    assert_eq!(env.ok(&["index", "list", "-q"]), b_index);

    // A lost DB is rediscovered from containerd: the v1 index with its platform, its zTOCs.
    std::fs::remove_file(root.join("artifacts.redb")).expect("remove the DB");
    assert_eq!(env.ok(&["index", "list", "-q"]), "");
    env.ok(&["rebuild-db"]);
    assert_eq!(env.ok(&["index", "list", "-q"]), b_index);
    assert_eq!(lines(&env.ok(&["ztoc", "list", "-q"])), b_ztocs);
    let platform = |table: &str| -> String {
        table
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().find(|c| c.starts_with("linux/")))
            .unwrap_or_default()
            .to_owned()
    };
    let rebuilt = env.ok(&["index", "list", "--ref", b]);
    assert!(platform(&b_table).starts_with("linux/"), "{b_table}");
    assert_eq!(platform(&rebuilt), platform(&b_table), "{rebuilt}");
    // The rediscovered records serve `ztoc info` by digest.
    let info: serde_json::Value =
        serde_json::from_str(&env.ok(&["ztoc", "info", &b_ztocs[0]])).expect("json");
    assert!(info["num_files"].as_u64().expect("n") > 0);

    let _ = Command::new("ctr")
        .args(["-a", &sock, "-n", &ns, "images", "rm", a, b])
        .output();
}

/// A `docker-registry` (distribution 2.8) with htpasswd Basic auth on a free loopback port,
/// stopped (by its pid) on drop.
struct AuthRegistry {
    host: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts an [`AuthRegistry`] accepting `user:password`; None (after `SKIPPED: …`) if
/// `docker-registry` is not installed.
fn auth_registry(user: &str, password: &str) -> Option<AuthRegistry> {
    if !have("docker-registry") {
        println!("SKIPPED: docker-registry not installed");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    if !have("htpasswd") {
        println!("SKIPPED: htpasswd not installed (Debian apache2-utils; scripts/install-deps.sh)");
        return None;
    }
    // distribution's htpasswd auth wants bcrypt entries: `htpasswd -nbB` prints `user:$2y$...`.
    let out = Command::new("htpasswd")
        .args(["-nbB", user, password])
        .output()
        .expect("htpasswd");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = text(&out.stdout).trim().to_owned();
    let hash = line
        .strip_prefix(&format!("{user}:"))
        .unwrap_or_default()
        .to_owned();
    assert!(hash.starts_with("$2"), "bcrypt hash: {hash}");
    std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).expect("htpasswd");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {d}/data}}\nhttp: {{addr: 127.0.0.1:{port}}}\nauth:\n  htpasswd: {{realm: soci-test, path: {d}/htpasswd}}\n",
            d = dir.path().display()
        ),
    )
    .expect("config");
    let log = std::fs::File::create(dir.path().join("log")).expect("log");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn docker-registry");
    let reg = AuthRegistry {
        host: format!("127.0.0.1:{port}"),
        child,
        _dir: dir,
    };
    // Ready when /v2/ answers (401 without credentials).
    for _ in 0..100 {
        let o = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://{}/v2/", reg.host))
            .output()
            .expect("curl");
        if text(&o.stdout) == "401" {
            return Some(reg);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the auth registry did not start");
}

/// `--debug` prints every HTTP request and response of `soci push` to stderr (spec §4.9,
/// §6.1) and never a credential; without credentials the push is refused (TestPushWithUserFlag).
#[test]
fn push_debug_dumps_http_without_credentials() {
    let Some(sock) = services() else { return };
    let (user, password) = ("soci-user", "pa55-w0rd-not-in-logs");
    let Some(reg) = auth_registry(user, password) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(img) = test_image(dir.path(), "small") else {
        return;
    };
    let id = std::process::id();
    let ns = format!("soci-cli-debug-{id}");
    let image = format!("{}/soci-cli-test/debug-{id}:v1", reg.host);
    let creds = format!("{user}:{password}");
    run(
        "skopeo",
        &[
            "copy",
            "-q",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            &format!("oci:{}:t", img.display()),
            &format!("docker://{image}"),
        ],
    );
    ctr(
        &sock,
        &ns,
        &["images", "pull", "--plain-http", "--user", &creds, &image],
    );
    let env = Env {
        sock: sock.clone(),
        ns: ns.clone(),
        root: dir.path().join("root"),
        store: "soci",
    };
    env.ok(&["create", &image, "--min-layer-size", "0", "-q"]);

    // No credentials: refused, and nothing is dumped without --debug.
    let out = soci(&env.args(&["push", "--plain-http", &image]));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("> GET "), "{err}");

    let mut args = vec!["--debug", "push", "--plain-http", "--user", &creds, &image];
    args = env.args(&args);
    let out = soci(&args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("successfully pushed artifact with digest: sha256:"),
        "{stdout}"
    );
    let base = format!("http://{}/v2/soci-cli-test/debug-{id}/", reg.host);
    // The request lines of a push: blob existence checks, upload start and PUT, manifest PUT.
    for line in [
        format!("> HEAD {base}blobs/sha256:"),
        format!("> POST {base}blobs/uploads/"),
        format!("> PUT {base}blobs/uploads/"),
        format!("> PUT {base}manifests/sha256:"),
    ] {
        assert!(stderr.contains(&line), "missing {line:?} in:\n{stderr}");
    }
    for line in [
        "< 401 Unauthorized (",
        "< 202 Accepted (POST ",
        "< 201 Created (PUT ",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
    assert!(
        stderr.contains(">   authorization: REDACTED"),
        "the credential is shown redacted:\n{stderr}"
    );
    assert!(
        stderr.contains("www-authenticate: Basic realm=\"soci-test\""),
        "{stderr}"
    );
    // Upload locations carry state in their query: values redacted.
    assert!(stderr.contains("_state=redacted"), "{stderr}");
    let basic = {
        // base64 of "user:password", computed here without a dependency.
        let b = creds.as_bytes();
        let t = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..=c.len() {
                s.push(char::from(t[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        s
    };
    for secret in [password, basic.as_str()] {
        assert!(!stderr.contains(secret), "{secret} leaked:\n{stderr}");
        assert!(!stdout.contains(secret), "{secret} leaked:\n{stdout}");
    }
    let _ = Command::new("ctr")
        .args(["-a", &sock, "-n", &ns, "images", "rm", &image])
        .output();
}
