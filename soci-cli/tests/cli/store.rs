//! Commands over the local `soci` store: rebuild-db, index list/info/rm, ztoc list/info/get-file,
//! prefetch list/info (spec §6.2, §8 index_test.go, ztoc_test.go, rebuild-db_test.go).

use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::Digest as _;

use crate::common::{fails_with, ok, soci, test_image, text};

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

fn put(content: &Path, bytes: &[u8]) -> String {
    let d = sha(bytes);
    let dir = content.join("blobs/sha256");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(&d[7..]), bytes).expect("write blob");
    d
}

fn blob_path(layout: &Path, d: &str) -> PathBuf {
    layout.join("blobs/sha256").join(&d[7..])
}

/// Places a v1 SOCI index for the arm64 manifest of the `multi` image into `<root>/content`, as
/// a pull by the snapshotter or another tool would; returns (index, ztoc, layer) digests.
fn seed_store(img: &Path, root: &Path, tmp: &Path) -> (String, String, String) {
    let content = root.join("content");
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(img.join("index.json")).expect("index.json"))
            .expect("json");
    let list_digest = idx["manifests"][0]["digest"]
        .as_str()
        .expect("d")
        .to_owned();
    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob_path(img, &list_digest)).expect("list"))
            .expect("json");
    let mdesc = list["manifests"]
        .as_array()
        .expect("m")
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .expect("arm64")
        .clone();
    let mdigest = mdesc["digest"].as_str().expect("d").to_owned();
    let mbytes = std::fs::read(blob_path(img, &mdigest)).expect("manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&mbytes).expect("json");
    put(&content, &mbytes);
    put(
        &content,
        &std::fs::read(blob_path(
            img,
            manifest["config"]["digest"].as_str().expect("c"),
        ))
        .expect("config"),
    );
    let layer = manifest["layers"][0].clone();
    let ldigest = layer["digest"].as_str().expect("d").to_owned();
    let lbytes = std::fs::read(blob_path(img, &ldigest)).expect("layer");
    put(&content, &lbytes);
    let ztoc_file = tmp.join("ztoc");
    let lpath = blob_path(img, &ldigest);
    ok(&[
        "ztoc",
        "create",
        lpath.to_str().expect("utf8"),
        "-o",
        ztoc_file.to_str().expect("utf8"),
    ]);
    let zbytes = std::fs::read(&ztoc_file).expect("ztoc");
    let zdigest = put(&content, &zbytes);
    put(&content, b"{}");
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.amazon.soci.index.v1+json", "digest": sha(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": zdigest, "size": zbytes.len(),
            "annotations": {"com.amazon.soci.image-layer-digest": ldigest,
                "com.amazon.soci.image-layer-mediaType": layer["mediaType"], "com.amazon.soci.span-size": "4194304"}}],
        "subject": {"mediaType": mdesc["mediaType"], "digest": mdigest, "size": mdesc["size"]},
        "annotations": {"com.amazon.soci.build-tool-identifier": "AWS SOCI CLI v0.2"}
    });
    let ibytes = serde_json::to_vec(&index).expect("json");
    let idigest = put(&content, &ibytes);
    (idigest, zdigest, ldigest)
}

#[test]
fn rebuild_list_info_get_file_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(img) = test_image(dir.path(), "multi") else {
        return;
    };
    let root = dir.path().join("root");
    let (index, ztoc, layer) = seed_store(&img, &root, dir.path());
    let r = root.to_str().expect("utf8");
    let g = |args: &[&str]| -> Vec<String> {
        let mut v = vec![
            "--root".to_owned(),
            r.to_owned(),
            "--content-store".to_owned(),
            "soci".to_owned(),
        ];
        v.extend(args.iter().map(|s| (*s).to_owned()));
        v
    };
    let run = |args: &[&str]| {
        let a = g(args);
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let fail = |args: &[&str], msg: &str| {
        let a = g(args);
        fails_with(&a.iter().map(String::as_str).collect::<Vec<_>>(), msg);
    };

    // Empty DB.
    assert_eq!(run(&["index", "list", "-q"]), "");
    // rebuild-db discovers the v1 index and its zTOC.
    run(&["rebuild-db"]);
    assert_eq!(run(&["index", "ls", "-q"]), format!("{index}\n"));
    assert_eq!(run(&["ztoc", "ls", "-q"]), format!("{ztoc}\n"));
    let table = run(&["index", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with(
            "DIGEST                                                                     SIZE"
        ),
        "{table}"
    );
    assert!(lines[0].ends_with("MANIFEST VERSION    CREATED"), "{table}");
    assert!(
        lines[1].contains("linux/arm64/v8")
            && lines[1].contains(" v1 ")
            && lines[1].ends_with(" ago"),
        "{table}"
    );
    // Platform filter.
    assert_eq!(
        run(&["index", "list", "-q", "--platform", "linux/arm64/v8"]),
        format!("{index}\n")
    );
    assert_eq!(run(&["index", "list", "-q", "-p", "linux/amd64"]), "");
    let zt = run(&["ztoc", "list"]);
    assert!(zt.starts_with("DIGEST") && zt.contains(&layer), "{zt}");
    assert_eq!(
        run(&["ztoc", "list", "-q", "--ztoc-digest", &ztoc]),
        format!("{ztoc}\n")
    );

    // index info / ztoc info and their cross-type errors.
    let info: serde_json::Value =
        serde_json::from_str(&run(&["index", "info", &index])).expect("json");
    assert_eq!(
        info["config"]["mediaType"],
        "application/vnd.amazon.soci.index.v1+json"
    );
    assert!(run(&["index", "info", &index]).contains("\n  \"schemaVersion\": 2,"));
    fail(&["index", "info", &ztoc], "the provided digest is of ztoc not SOCI index. Use \"soci ztoc info\" command to get detailed info of ztoc");
    fail(&["ztoc", "info", &index], "the provided digest belongs to a SOCI index. Use `soci index info` to get the detailed information about it");
    fail(&["ztoc", "info", "sha256:abc"], "invalid digest");
    let zi: serde_json::Value = serde_json::from_str(&run(&["ztoc", "info", &ztoc])).expect("json");
    assert_eq!(zi["build_tool"], "AWS SOCI CLI v0.2");
    assert!(zi["num_files"].as_u64().expect("n") > 0);

    // get-file from the store (layer blob found through the DB entry).
    let out = run(&["ztoc", "get-file", &ztoc, "data/big1/ready.bin"]);
    assert!(!out.is_empty());
    fail(
        &["ztoc", "get-file", &ztoc],
        "please provide both a ztoc digest and a filename to extract",
    );

    // rm: errors, then removal; rebuild-db drops records whose blob is gone.
    fail(
        &["index", "rm", &ztoc],
        &format!("the digest {ztoc} does not correspond to an index"),
    );
    let unknown = sha(b"nope");
    fail(
        &["index", "rm", &unknown],
        &format!("the index of the digest {unknown} doesn't exist"),
    );
    fail(
        &["index", "rm", &index, "--ref", "x:y"],
        "please provide either index digests or image ref, but not both",
    );
    run(&["index", "rm", &index]);
    assert_eq!(run(&["index", "list", "-q"]), "");
    std::fs::remove_file(root.join("content/blobs/sha256").join(&ztoc[7..])).expect("rm ztoc");
    std::fs::remove_file(root.join("content/blobs/sha256").join(&index[7..])).expect("rm index");
    run(&["rebuild-db"]);
    assert_eq!(run(&["ztoc", "list", "-q"]), "");
    assert_eq!(run(&["index", "list", "-q"]), "");
    let _ = text(&soci(&["--version"]).stdout);
}
