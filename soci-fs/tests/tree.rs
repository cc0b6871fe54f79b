//! The mounted tree equals `tar -x` of the same layer, after applying the overlayfs whiteout
//! conventions to the extracted copy.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{snapshot, Entry};

/// Turns `.wh.` files of an extracted tree into what the FUSE layer shows.
fn apply_whiteouts(mut m: BTreeMap<String, Entry>) -> BTreeMap<String, Entry> {
    let names: Vec<String> = m.keys().cloned().collect();
    for path in names {
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (d.to_string(), b.to_string()),
            None => (String::new(), path.clone()),
        };
        if base == ".wh..wh..opq" {
            m.remove(&path);
            let d = m.get_mut(&dir).expect("opaque parent");
            d.xattrs
                .insert("trusted.overlay.opaque".into(), b"y".to_vec());
            d.xattrs.insert("user.overlay.opaque".into(), b"y".to_vec());
        } else if let Some(target) = base.strip_prefix(".wh.") {
            let wh = m.remove(&path).expect("whiteout entry");
            let shown = if dir.is_empty() {
                target.to_string()
            } else {
                format!("{dir}/{target}")
            };
            m.entry(shown).or_insert(Entry {
                kind: "char",
                perm: 0,
                uid: 0,
                gid: 0,
                size: None,
                mtime: wh.mtime,
                sha256: None,
                link: None,
                rdev: Some((0, 0)),
                nlink: 1,
                xattrs: BTreeMap::new(),
                ino_group: None,
            });
        }
    }
    m
}

#[test]
fn mounted_tree_matches_tar_extract() {
    skip_without_fuse!();
    let layer = common::fixture_layer();
    let reference = tempfile::tempdir().expect("tempdir");
    let st = Command::new("tar")
        .args([
            "-x",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-p",
            "-f",
        ])
        .arg(&layer.tar_path)
        .arg("-C")
        .arg(reference.path())
        .status()
        .expect("run tar");
    assert!(st.success(), "tar -x failed");
    let mut expected = apply_whiteouts(snapshot(reference.path()));
    let m = common::mount_default(&layer);
    let mut got = snapshot(m.path());

    // The root directory of an extraction is the temp dir itself; the state dir is ours.
    expected.remove("");
    got.remove("");
    // The state dir is reachable but not listed (SPEC 5.11).
    assert!(!got.contains_key(".soci-snapshotter"));
    let state = snapshot(&m.path().join(".soci-snapshotter"));
    assert_eq!(
        (state[""].kind, state[""].perm, state[""].uid),
        ("dir", 0o500, 0)
    );
    let state_file = &state[&format!("{}.json", layer.digest)];
    assert_eq!((state_file.kind, state_file.perm), ("file", 0o400));
    // Directories only implied by their children get mtime 0 from us and "now" from tar.
    let explicit: std::collections::HashSet<String> = layer
        .ztoc
        .toc
        .iter()
        .map(|e| String::from_utf8_lossy(&soci_ztoc::clean(&e.name)).into_owned())
        .collect();
    for (path, e) in expected.iter_mut() {
        if e.kind == "dir" && !explicit.contains(path) {
            e.mtime = None;
            if let Some(g) = got.get_mut(path) {
                g.mtime = None;
            }
        }
    }
    let exp_keys: Vec<_> = expected.keys().collect();
    let got_keys: Vec<_> = got.keys().collect();
    assert_eq!(got_keys, exp_keys, "same set of paths");
    for (path, e) in &expected {
        assert_eq!(&got[path], e, "entry {path}");
    }
    // Spot checks on what the fixture is about.
    assert_eq!(got["bin/tool"].nlink, 3);
    assert_eq!(got["bin/tool-link"].ino_group.as_deref(), Some("bin/tool"));
    assert_eq!(got["bin/tool-link2"].ino_group.as_deref(), Some("bin/tool"));
    assert_eq!(got["dev/big"].rdev, Some((300, 70000)));
    assert_eq!(got["bin/su"].perm, 0o4755);
    assert_eq!(got["removed"].kind, "char");
    assert_eq!(got["old/both"].kind, "file");
    assert!(!got.contains_key("old/.wh.gone"));
    assert_eq!(
        got["etc/with-xattrs"].mtime,
        Some((1_700_000_000, 500_000_000))
    );
}

#[test]
fn state_file_and_xattr_errors() {
    skip_without_fuse!();
    let layer = common::fixture_layer();
    let m = common::mount_default(&layer);
    let state = m
        .path()
        .join(".soci-snapshotter")
        .join(format!("{}.json", layer.digest));
    let before = std::fs::read_to_string(&state).expect("read state");
    assert!(before.ends_with("}\n"), "{before}");
    let v: serde_json::Value = serde_json::from_str(&before).expect("json");
    assert_eq!(v["digest"], layer.digest.as_str());
    assert_eq!(
        v["size"],
        std::fs::metadata(&layer.blob_path).expect("blob").len()
    );
    assert!(v.get("error").is_none());
    let keys: Vec<&str> = before
        .trim_start_matches('{')
        .split(',')
        .filter_map(|kv| kv.split(':').next())
        .collect();
    assert_eq!(
        keys,
        [
            "\"digest\"",
            "\"size\"",
            "\"fetchedSize\"",
            "\"fetchedPercent\""
        ]
    );
    // Reading everything fetches every span: 100 %.
    common::read(m.path().join("big.bin")).expect("big");
    for f in ["etc/hosts", "dup.txt", "opq/kept", "later/child", "bin/su"] {
        common::read(m.path().join(f)).expect("read");
    }
    let all_spans = m.spans.span_count();
    for id in 0..all_spans {
        m.spans
            .fetch_uncompressed(id, soci_fs::RequestKind::Prefetch)
            .expect("fetch");
    }
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("state")).expect("json");
    assert_eq!(after["fetchedPercent"], 100);
    // Unknown xattr ⇒ ENODATA; too small a buffer is handled by the xattr crate's retry.
    let err = xattr::get(m.path().join("etc/hosts"), "user.nope").expect("getxattr");
    assert_eq!(err, None);
    assert_eq!(
        xattr::get(m.path().join("etc/with-xattrs"), "user.comment").expect("get"),
        Some(b"hello xattr".to_vec())
    );
    // statfs works.
    nix::sys::statvfs::statvfs(m.path()).expect("statvfs");
}
