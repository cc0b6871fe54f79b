//! Helpers shared by the integration test modules.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) fn soci(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_soci"))
        .args(args)
        .output()
        .expect("run soci")
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs soci and asserts success; returns stdout.
pub(crate) fn ok(args: &[&str]) -> String {
    let out = soci(args);
    assert!(
        out.status.success(),
        "soci {args:?} failed\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs soci and asserts failure with exit code 1 and `soci: <msg>` on stderr.
pub(crate) fn fails_with(args: &[&str], msg: &str) {
    let out = soci(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "soci {args:?} should fail: {}",
        text(&out.stderr)
    );
    let err = text(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("soci: "), "stderr: {err}");
    assert!(err.contains(msg), "expected {msg:?} in stderr: {err}");
}

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Builds a test image layout with scripts/make-test-image.py, or returns None (after printing
/// `SKIPPED: ...`) if python3 is missing.
pub(crate) fn test_image(dir: &Path, kind: &str) -> Option<PathBuf> {
    let out_dir = dir.join(kind);
    make_image(&out_dir, "t", &["--kind", kind, "--synthetic"]).then_some(out_dir)
}

/// Adds image `tag` to the layout `out` with scripts/make-test-image.py `args`; false (after
/// printing `SKIPPED: ...`) if python3 is missing.
pub(crate) fn make_image(out: &Path, tag: &str, args: &[&str]) -> bool {
    let script = repo_root().join("scripts/make-test-image.py");
    let status = Command::new("python3")
        .arg(&script)
        .arg(out)
        .arg(tag)
        .args(args)
        .output();
    match status {
        Ok(o) if o.status.success() => true,
        Ok(o) => panic!("make-test-image.py failed: {}", text(&o.stderr)),
        Err(e) => {
            println!("SKIPPED: python3 is needed to build test images: {e}");
            false
        }
    }
}

/// `127.0.0.1:$REGISTRY_PORT` (default 5000): the distribution registry of `scripts/services.sh`.
pub(crate) fn registry_host() -> String {
    host_port("REGISTRY_PORT", 5000)
}

/// `127.0.0.1:$REFERRERS_PORT` (default 5001): the Referrers API registry of `scripts/services.sh`.
pub(crate) fn referrers_host() -> String {
    host_port("REFERRERS_PORT", 5001)
}

fn host_port(var: &str, default: u16) -> String {
    let port = std::env::var(var)
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(default);
    format!("127.0.0.1:{port}")
}

pub(crate) fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("parse json")
}

pub(crate) fn blob(layout: &Path, digest: &str) -> serde_json::Value {
    let (alg, hex) = digest.split_once(':').expect("digest");
    json(&layout.join("blobs").join(alg).join(hex))
}

pub(crate) fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
