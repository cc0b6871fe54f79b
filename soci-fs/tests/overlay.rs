//! The mounted layer as an overlayfs lower directory: whiteouts and opaque directories hide
//! the layers below, copy-up works, and an unprivileged user reads through the overlay.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

struct OverlayGuard(PathBuf);

impl Drop for OverlayGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn write(p: &Path, data: &[u8]) {
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, data).expect("write");
}

fn as_user(args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid", "1000", "--regid", "1000", "--clear-groups"])
        .args(args)
        .output()
        .expect("run setpriv")
}

#[test]
fn overlay_on_fuse_lower() {
    skip_without_fuse!();
    if !std::fs::read_to_string("/proc/filesystems")
        .map(|s| s.contains("overlay"))
        .unwrap_or(false)
    {
        println!("SKIPPED: overlayfs not available");
        return;
    }
    let layer = common::fixture_layer();
    let m = common::mount_default(&layer);
    let base = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let lower = base.path().join("lower");
    for (p, d) in [
        ("old/gone", &b"lower gone"[..]),
        ("old/lowerkeep", b"lower keep"),
        ("removed", b"lower removed"),
        ("opq/lowerfile", b"hidden by opaque"),
        ("lower-only", b"lower only"),
    ] {
        write(&lower.join(p), d);
    }
    let (upper, work, merged) = (
        base.path().join("upper"),
        base.path().join("work"),
        base.path().join("merged"),
    );
    for d in [&upper, &work, &merged] {
        std::fs::create_dir(d).expect("mkdir");
    }
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        m.path().display(),
        lower.display(),
        upper.display(),
        work.display()
    );
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged)
        .status()
        .expect("mount overlay");
    assert!(st.success(), "overlay mount failed");
    let _guard = OverlayGuard(merged.clone());

    // Whiteouts from the FUSE layer hide lower entries; opaque dirs hide lower contents.
    assert!(!merged.join("old/gone").exists());
    assert!(!merged.join("removed").exists());
    assert!(!merged.join("opq/lowerfile").exists());
    assert_eq!(
        std::fs::read(merged.join("opq/kept")).expect("kept"),
        b"kept\n"
    );
    assert_eq!(
        std::fs::read(merged.join("old/lowerkeep")).expect("lowerkeep"),
        b"lower keep"
    );
    assert_eq!(
        std::fs::read(merged.join("lower-only")).expect("lower-only"),
        b"lower only"
    );
    assert_eq!(
        std::fs::read(merged.join("old/both")).expect("both"),
        b"real\n"
    );
    let names: Vec<_> = std::fs::read_dir(merged.join("old"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["both", "keep", "lowerkeep"]);
    assert_eq!(
        std::fs::read(merged.join("big.bin")).expect("big"),
        common::big_content()
    );

    // Copy-up on append; the FUSE layer is untouched.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(merged.join("etc/hosts"))
            .expect("open for append");
        f.write_all(b"10.0.0.1 added\n").expect("append");
    }
    assert_eq!(
        std::fs::read(merged.join("etc/hosts")).expect("merged hosts"),
        b"127.0.0.1 localhost\n10.0.0.1 added\n"
    );
    assert!(upper.join("etc/hosts").exists());
    assert_eq!(
        std::fs::read(m.path().join("etc/hosts")).expect("fuse hosts"),
        b"127.0.0.1 localhost\n"
    );
    let md = std::fs::metadata(upper.join("etc/hosts")).expect("upper md");
    assert_eq!((md.uid(), md.gid()), (1234, 5678), "copy-up keeps owners");
    // Deleting a FUSE-layer file leaves a whiteout in the upper dir.
    std::fs::remove_file(merged.join("old/keep")).expect("rm");
    let wh = std::fs::symlink_metadata(upper.join("old/keep")).expect("whiteout");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);

    // An unprivileged user reads through the overlay and directly (allow_other).
    let out = as_user(&["cat", merged.join("bin/tool").to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"#!/bin/sh\necho tool\n");
    let out = as_user(&["cat", m.path().join("big.bin").to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, common::big_content());
    // ...but not a 0600 file owned by root.
    let out = as_user(&["cat", merged.join("dup.txt").to_str().expect("utf8")]);
    assert!(
        !out.status.success(),
        "0600 root file must not be readable by uid 1000"
    );
}
