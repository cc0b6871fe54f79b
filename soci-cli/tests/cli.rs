//! Integration tests of the `soci` binary: one module per topic.

#[path = "cli/common.rs"]
mod common;
#[path = "cli/containerd.rs"]
mod containerd;
#[path = "cli/convert.rs"]
mod convert;
#[path = "cli/store.rs"]
mod store;
#[path = "cli/timeout.rs"]
mod timeout;

mod ztoc {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    fn soci(args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_soci"))
            .args(args)
            .output()
            .expect("run soci")
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    /// A gzip layer with a small file, a file spanning several 64 KiB spans, a symlink and a
    /// hardlink to it.
    fn layer(dir: &Path) -> (PathBuf, Vec<u8>) {
        let mut big = Vec::new();
        let mut x: u32 = 7;
        while big.len() < 600_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            big.extend_from_slice(format!("line {} {}\n", x >> 8, x % 97).as_bytes());
        }
        let mut tar = tar::Builder::new(Vec::new());
        let add = |tar: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            tar.append_data(&mut h, name, data).expect("append");
        };
        add(&mut tar, "etc/hello.txt", b"hello world\n");
        add(&mut tar, "usr/share/big.txt", &big);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        tar.append_link(&mut h, "etc/link", "hello.txt")
            .expect("symlink");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        tar.append_link(&mut h, "usr/share/big-hard.txt", "usr/share/big.txt")
            .expect("hardlink");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar.into_inner().expect("tar")).expect("gz");
        let path = dir.join("layer.tar.gz");
        std::fs::write(&path, gz.finish().expect("gz")).expect("write layer");
        (path, big)
    }

    #[test]
    fn create_info_get_file_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (layer, big) = layer(dir.path());
        let ztoc = dir.path().join("layer.ztoc");
        let out = soci(&[
            "ztoc",
            "create",
            layer.to_str().expect("utf8"),
            "--output",
            ztoc.to_str().expect("utf8"),
            "--span-size",
            "65536",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let digest = text(&out.stdout).trim().to_owned();
        let bytes = std::fs::read(&ztoc).expect("ztoc written");
        assert_eq!(digest, soci_ztoc::sha256_digest(&bytes));

        let out = soci(&["ztoc", "info", "--file", ztoc.to_str().expect("utf8")]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let keys: Vec<&str> = info
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        // serde_json without preserve_order sorts keys; check the set and the raw order.
        assert_eq!(keys.len(), 8);
        let raw = text(&out.stdout);
        let order = [
            "\"version\"",
            "\"build_tool\"",
            "\"size\"",
            "\"span_size\"",
            "\"num_spans\"",
            "\"num_files\"",
            "\"num_multi_span_files\"",
            "\"files\"",
        ];
        let pos: Vec<usize> = order
            .iter()
            .map(|k| raw.find(k).expect("key present"))
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "key order: {raw}");
        assert_eq!(info["version"], "0.9");
        assert_eq!(info["size"], bytes.len() as u64);
        assert_eq!(info["span_size"], 65536);
        assert_eq!(info["num_files"], 4);
        let parsed = soci_ztoc::Ztoc::from_bytes(&bytes).expect("decode");
        let spans = parsed.zinfo().expect("zinfo").span_count();
        assert!(spans > 1, "a 600 KB file with 64 KiB spans crosses spans");
        assert_eq!(info["num_spans"], spans);
        assert_eq!(info["num_multi_span_files"], 1);
        let files = info["files"].as_array().expect("files");
        assert_eq!(files[0]["filename"], "etc/hello.txt");
        assert_eq!(files[0]["offset"], 512);
        assert_eq!(files[0]["size"], 12);
        assert_eq!(files[0]["type"], "reg");

        // stdout: content plus a newline.
        let args = |path: &str| {
            vec![
                "ztoc".to_owned(),
                "get-file".to_owned(),
                "--file".to_owned(),
                ztoc.to_str().expect("utf8").to_owned(),
                "--layer".to_owned(),
                layer.to_str().expect("utf8").to_owned(),
                path.to_owned(),
            ]
        };
        let run = |a: Vec<String>| {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            soci(&a)
        };
        let out = run(args("etc/hello.txt"));
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(out.stdout, b"hello world\n\n");
        // links are followed
        let out = run(args("etc/link"));
        assert_eq!(out.stdout, b"hello world\n\n");
        // --output, a file crossing many spans, through a hardlink
        let dest = dir.path().join("big.out");
        let mut a = args("usr/share/big-hard.txt");
        a.push("--output".into());
        a.push(dest.to_str().expect("utf8").into());
        let out = run(a);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(std::fs::read(&dest).expect("output"), big);

        let out = run(args("no/such/file"));
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            text(&out.stderr).trim(),
            "soci: file no/such/file does not exist in metadata"
        );
    }

    #[test]
    fn errors_are_prefixed_and_exit_1() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"definitely not a ztoc").expect("write");
        let out = soci(&["ztoc", "info", "--file", junk.to_str().expect("utf8")]);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(err.starts_with("soci: failed to parse ztoc"), "{err}");
        assert!(err.contains("invalid ztoc"), "{err}");

        let zstd = dir.path().join("layer.zst");
        std::fs::write(&zstd, [0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]).expect("write");
        let out = soci(&[
            "ztoc",
            "create",
            zstd.to_str().expect("utf8"),
            "--output",
            dir.path().join("z").to_str().expect("utf8"),
        ]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("unsupported compression: zstd"),
            "{}",
            text(&out.stderr)
        );
        assert!(!dir.path().join("z").exists(), "no output on failure");

        let out = soci(&["ztoc", "info", "--file", "/nonexistent/ztoc"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).starts_with("soci: failed to read /nonexistent/ztoc"));
    }

    #[test]
    fn help_and_version() {
        let out = soci(&["--help"]);
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("ztoc"));
        let out = soci(&["--version"]);
        assert!(out.status.success());
        assert!(text(&out.stdout).starts_with("soci "));
    }
}
