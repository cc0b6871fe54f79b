//! `soci convert --standalone` (spec §4.6, §8 convert_standalone_test.go, create_test.go).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::{blob, fails_with, have, json, ok, soci, test_image, text};

const V2: &str = "application/vnd.amazon.soci.index.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The one descriptor of an output layout's index.json.
fn root_digest(layout: &Path) -> String {
    let idx = json(&layout.join("index.json"));
    let m = idx["manifests"].as_array().expect("manifests");
    assert_eq!(
        m.len(),
        1,
        "index.json must hold exactly one descriptor: {idx}"
    );
    assert_eq!(m[0]["mediaType"], "application/vnd.oci.image.index.v1+json");
    m[0]["digest"].as_str().expect("digest").to_owned()
}

/// The §4.6 properties of a converted image; returns the number of SOCI indexes.
fn check_converted(layout: &Path) -> usize {
    let index = blob(layout, &root_digest(layout));
    let manifests = index["manifests"].as_array().expect("manifests");
    let socis: Vec<&Value> = manifests
        .iter()
        .filter(|d| d["artifactType"] == V2)
        .collect();
    let images = manifests.len() - socis.len();
    assert!(!socis.is_empty());
    assert!(images >= socis.len());
    for s in &socis {
        assert!(
            s["platform"].is_object(),
            "soci descriptor without platform: {s}"
        );
        let md = s["annotations"]["com.amazon.soci.image-manifest-digest"]
            .as_str()
            .expect("image-manifest-digest");
        let d = manifests
            .iter()
            .find(|d| d["digest"] == md && d["artifactType"].is_null())
            .expect("annotated manifest is in the index");
        assert_eq!(d["mediaType"], OCI_MANIFEST);
        assert_eq!(
            d["annotations"]["com.amazon.soci.index-digest"],
            s["digest"]
        );
        assert_eq!(d["platform"]["os"], s["platform"]["os"]);
        assert_eq!(d["platform"]["architecture"], s["platform"]["architecture"]);
        let m = blob(layout, md);
        assert_eq!(m["mediaType"], OCI_MANIFEST);
        assert_eq!(
            m["config"]["mediaType"],
            "application/vnd.oci.image.config.v1+json"
        );
        assert_eq!(
            m["annotations"]["com.amazon.soci.index-digest"],
            s["digest"]
        );
        let soci_index = blob(layout, s["digest"].as_str().expect("digest"));
        assert_eq!(soci_index["config"]["mediaType"], V2);
        assert!(soci_index.get("subject").is_none());
        assert!(soci_index.get("artifactType").is_none());
        for z in soci_index["layers"].as_array().expect("layers") {
            let (alg, hex) = z["digest"].as_str().expect("d").split_once(':').expect(":");
            let p = layout.join("blobs").join(alg).join(hex);
            assert_eq!(
                std::fs::metadata(&p).expect("ztoc blob present").len(),
                z["size"].as_u64().expect("size")
            );
        }
    }
    socis.len()
}

fn extract(tar: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut a = tar::Archive::new(std::fs::File::open(tar).expect("open tar"));
    a.unpack(dir).expect("unpack");
}

#[test]
fn parameter_validation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let o = out.to_str().expect("utf8");
    let cases: &[(&[&str], &str)] = &[
        (&["--span-size", "-1"], "span size must be >= 0"),
        (&["--min-layer-size", "-1"], "min layer size must be >= 0"),
        (
            &["--span-size", "9223372036854775808"],
            "invalid value \"9223372036854775808\" for flag -span-size",
        ),
        (
            &["--min-layer-size", "9223372036854775808"],
            "invalid value \"9223372036854775808\" for flag -min-layer-size",
        ),
        (
            &["--optimizations", "foo"],
            "optimization foo is not a valid optimization [xattr]",
        ),
        (
            &["--format", "zip"],
            "unsupported output format \"zip\": must be \"oci-archive\" or \"oci-dir\"",
        ),
    ];
    for (flags, msg) in cases {
        let mut args = vec!["convert", "--standalone", "/nonexistent/input", o];
        args.extend_from_slice(flags);
        fails_with(&args, msg);
    }
    fails_with(
        &["convert", "--standalone", "/nonexistent/input", o],
        "failed to access input /nonexistent/input",
    );
    fails_with(
        &["convert", "--standalone", "/nonexistent/input"],
        "destination needs to be specified",
    );
    fails_with(
        &["convert", "--standalone"],
        "source image needs to be specified",
    );
}

#[test]
fn all_platforms_dir_and_tar_round_trips_and_idempotence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(multi) = test_image(dir.path(), "multi") else {
        return;
    };
    let d = |n: &str| dir.path().join(n).to_str().expect("utf8").to_owned();
    let src = multi.to_str().expect("utf8");

    // dir -> dir, all platforms, every layer indexed.
    let out = ok(&[
        "convert",
        "--standalone",
        "--format",
        "oci-dir",
        "--all-platforms",
        "--min-layer-size",
        "0",
        "-q",
        src,
        &d("d1"),
    ]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("layer sha256:") && l.contains(" -> ztoc sha256:")),
        "{out}"
    );
    // The platforms share layers: the second platform reuses the zTOCs of the first.
    assert!(out.contains("(already exists)"), "{out}");
    assert_eq!(check_converted(&dir.path().join("d1")), 2);
    let first = root_digest(&dir.path().join("d1"));

    // dir -> tar, tar -> tar, tar -> dir: the same image every time (idempotent).
    ok(&[
        "convert",
        "--standalone",
        "--all-platforms",
        "--min-layer-size",
        "0",
        "-q",
        &d("d1"),
        &d("t1.tar"),
    ]);
    ok(&[
        "convert",
        "--standalone",
        "--all-platforms",
        "--min-layer-size",
        "0",
        "-q",
        &d("t1.tar"),
        &d("t2.tar"),
    ]);
    ok(&[
        "convert",
        "--standalone",
        "--format",
        "oci-dir",
        "--all-platforms",
        "--min-layer-size",
        "0",
        "-q",
        &d("t2.tar"),
        &d("d2"),
    ]);
    for t in ["t1.tar", "t2.tar"] {
        let x = dir.path().join(format!("{t}.x"));
        extract(&dir.path().join(t), &x);
        assert_eq!(root_digest(&x), first, "{t}");
        assert!(
            !x.join("manifest.json").exists(),
            "no Docker manifest.json in OCI archives"
        );
    }
    assert_eq!(root_digest(&dir.path().join("d2")), first);

    // skopeo reads both output forms.
    if have("skopeo") {
        for r in [
            format!("oci:{}", d("d1")),
            format!("oci-archive:{}", d("t1.tar")),
        ] {
            let o = Command::new("skopeo")
                .args(["inspect", "--raw", &r])
                .output()
                .expect("skopeo");
            assert!(
                o.status.success(),
                "skopeo inspect {r}: {}",
                text(&o.stderr)
            );
            let raw: Value = serde_json::from_slice(&o.stdout).expect("json");
            assert_eq!(raw, blob(&dir.path().join("d1"), &first));
        }
    } else {
        println!("SKIPPED: skopeo not installed, output not checked with skopeo");
    }
}

#[test]
fn single_platform_sparse_and_empty_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(multi) = test_image(dir.path(), "multi") else {
        return;
    };
    let src = multi.to_str().expect("utf8");
    let out = dir.path().join("o");
    let o = out.to_str().expect("utf8");

    // Default min layer size (10 MiB): the ~20 MiB layer is indexed, the small one skipped.
    let stdout = ok(&[
        "convert",
        "--standalone",
        "--format",
        "oci-dir",
        "--platform",
        "linux/arm64/v8",
        "-q",
        src,
        o,
    ]);
    let skipped: Vec<_> = stdout
        .lines()
        .filter(|l| l.starts_with("ztoc skipped - layer "))
        .collect();
    assert_eq!(skipped.len(), 1, "{stdout}");
    assert!(
        skipped[0].contains("is less than min-layer-size 10485760"),
        "{stdout}"
    );
    assert_eq!(check_converted(&out), 1);
    let index = blob(&out, &root_digest(&out));
    let soci_desc = index["manifests"]
        .as_array()
        .expect("m")
        .iter()
        .find(|d| d["artifactType"] == V2)
        .expect("soci")
        .clone();
    assert_eq!(soci_desc["platform"]["architecture"], "arm64");
    let soci_index = blob(&out, soci_desc["digest"].as_str().expect("d"));
    assert_eq!(soci_index["layers"].as_array().expect("layers").len(), 1);

    // Larger than every layer: no index at all.
    let empty = dir.path().join("e");
    fails_with(
        &[
            "convert",
            "--standalone",
            "--format",
            "oci-dir",
            "--min-layer-size",
            "1000000000",
            src,
            empty.to_str().expect("utf8"),
        ],
        "no ztocs created, all layers either skipped or produced errors",
    );
    // A platform the image does not have.
    fails_with(
        &[
            "convert",
            "--standalone",
            "--platform",
            "linux/s390x",
            src,
            o,
        ],
        "image manifest for linux/s390x: not found",
    );
}

#[test]
fn prefetch_and_xattr_optimization() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(multi) = test_image(dir.path(), "multi") else {
        return;
    };
    let out = dir.path().join("o");
    let stdout = ok(&[
        "convert",
        "--standalone",
        "--format",
        "oci-dir",
        "--min-layer-size",
        "0",
        "-q",
        "--optimizations",
        "xattr",
        "--prefetch-file",
        "/etc/soci-test-release",
        "--prefetch-file",
        "no/such/file",
        multi.to_str().expect("utf8"),
        out.to_str().expect("utf8"),
    ]);
    assert!(
        stdout.contains("Created prefetch artifact for layer sha256:"),
        "{stdout}"
    );
    let index = blob(&out, &root_digest(&out));
    let soci_desc = index["manifests"]
        .as_array()
        .expect("m")
        .iter()
        .find(|d| d["artifactType"] == V2)
        .expect("soci")
        .clone();
    let soci_index = blob(&out, soci_desc["digest"].as_str().expect("d"));
    let layers = soci_index["layers"].as_array().expect("layers");
    let prefetch: Vec<_> = layers
        .iter()
        .filter(|l| l["mediaType"] == "application/vnd.amazon.soci.prefetch.v1+json")
        .collect();
    assert_eq!(prefetch.len(), 1);
    let artifact = blob(&out, prefetch[0]["digest"].as_str().expect("d"));
    assert_eq!(artifact["version"], "1.0");
    let _ = soci(&["--version"]);
}

/// The registry started by `scripts/services.sh start` (distribution 2.8, no Referrers API).
fn registry() -> Option<String> {
    let addr = crate::common::registry_host();
    match std::net::TcpStream::connect_timeout(
        &addr.parse().expect("addr"),
        std::time::Duration::from_secs(1),
    ) {
        Ok(_) => Some(addr),
        Err(e) => {
            println!("SKIPPED: no registry on {addr} (run scripts/services.sh start): {e}");
            None
        }
    }
}

#[test]
fn registry_source_and_destination() {
    let Some(reg) = registry() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(multi) = test_image(dir.path(), "multi") else {
        return;
    };
    let tag = format!("{reg}/soci-cli-test/conv-{}", std::process::id());
    let flags = [
        "--all-platforms",
        "--min-layer-size",
        "0",
        "-q",
        "--plain-http",
    ];
    let conv = |src: &str, dst: &str, extra: &[&str]| -> String {
        let mut a = vec!["convert", "--standalone"];
        a.extend_from_slice(&flags);
        a.extend_from_slice(extra);
        a.extend_from_slice(&[src, dst]);
        ok(&a).lines().last().expect("digest line").to_owned()
    };
    // layout -> registry, then registry -> registry (idempotent) and registry -> layout.
    let d1 = conv(multi.to_str().expect("utf8"), &format!("{tag}:a"), &[]);
    let d2 = conv(&format!("{tag}:a"), &format!("{tag}:b"), &[]);
    assert_eq!(
        d1, d2,
        "converting the converted image gives the same digest"
    );
    let out = dir.path().join("back");
    let d3 = conv(
        &format!("{tag}:a"),
        out.to_str().expect("utf8"),
        &["--format", "oci-dir"],
    );
    assert_eq!(d1, d3);
    assert_eq!(root_digest(&out), d1);
    assert_eq!(check_converted(&out), 2);

    // The pushed index is byte-exact (digest-addressable), and skopeo can copy our output.
    if have("skopeo") {
        let o = Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{tag}:a"),
            ])
            .output()
            .expect("skopeo");
        assert!(o.status.success(), "{}", text(&o.stderr));
        let digest = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&o.stdout))
        );
        assert_eq!(digest, d1);
        let o = Command::new("skopeo")
            .args([
                "copy",
                "--all",
                "--dest-tls-verify=false",
                &format!("oci:{}", out.display()),
                &format!("docker://{tag}:skopeo"),
            ])
            .output()
            .expect("skopeo");
        assert!(
            o.status.success(),
            "skopeo copy of convert output: {}",
            text(&o.stderr)
        );
    } else {
        println!("SKIPPED: skopeo not installed, registry copy not checked");
    }
}
