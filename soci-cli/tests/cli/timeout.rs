//! `--timeout` (spec §6.1): Go duration syntax; bounds the whole command.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{fails_with, have, ok, soci, text};

#[test]
fn timeout_bounds_the_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let root = root.to_str().expect("utf8");
    // A generous timeout does not change a quick command.
    for t in ["1h30m", "2m", "30s", "0", "-5s"] {
        let flag = format!("--timeout={t}");
        ok(&[
            &flag,
            "--root",
            root,
            "--content-store",
            "soci",
            "ztoc",
            "list",
            "-q",
        ]);
    }
    fails_with(
        &["--timeout", "abc", "ztoc", "list"],
        "invalid value \"abc\" for flag -timeout: parse error",
    );
    // A command blocked on a FIFO with no writer: the deadline ends it.
    if !have("mkfifo") {
        println!("SKIPPED: mkfifo not installed");
        return;
    }
    let fifo = dir.path().join("layer");
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success());
    let out_path = dir.path().join("ztoc");
    let start = Instant::now();
    let out = soci(&[
        "--timeout",
        "300ms",
        "ztoc",
        "create",
        fifo.to_str().expect("utf8"),
        "-o",
        out_path.to_str().expect("utf8"),
    ]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "soci: context deadline exceeded\n");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}
