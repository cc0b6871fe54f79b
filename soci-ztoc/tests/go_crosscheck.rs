//! Cross-check against independent implementations of the reference producer's two halves
//! (see `testdata/gocheck/`):
//!
//! * tar semantics: `gocheck` walks each layer with Go's own `archive/tar` (the reader the
//!   reference producer uses) and prints the TOC fields of SPEC §1.3/§3 as JSON; our decoded
//!   zTOC must agree field by field, including `uncompressed_archive_size`;
//! * FlatBuffers layout: `rebuild.py` rebuilds the zTOC with Debian's Python FlatBuffers
//!   builder (a port of the Go builder) in the call order of SPEC §1.5, from gocheck's TOC and
//!   our zInfo half; the result must equal our `to_bytes()` byte for byte.
//!
//! Needs `go` and `python3` with the `flatbuffers` module (Debian: golang-go,
//! python3-flatbuffers). Without them the test prints SKIPPED and returns.

mod common;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{gzip, gzip_members, noise, pax_record, set_checksum, Hdr, BLOCK};
use soci_ztoc::{FileMetadata, Ztoc, ZtocBuilder};

const SPAN: u64 = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Tools

struct Tools {
    dir: tempfile::TempDir,
    gocheck: PathBuf,
    python: PathBuf,
    rebuild: PathBuf,
}

fn gocheck_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/gocheck")
}

fn runs(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

/// The tools, or what is missing.
fn tools() -> Result<Tools, String> {
    let mut missing = Vec::new();
    if !runs(Command::new("go").arg("version")) {
        missing.push("go");
    }
    // Debian's module lives under /usr/lib/python3; a pyenv/venv python3 on PATH may not see
    // it, so prefer the system interpreter.
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| runs(Command::new(p).args(["-c", "import flatbuffers"])));
    if python.is_none() {
        missing.push("python3 with the flatbuffers module");
    }
    if !missing.is_empty() {
        return Err(missing.join(", "));
    }
    let dir = tempfile::tempdir().unwrap();
    let gocheck = dir.path().join("gocheck");
    let cache = std::env::temp_dir().join("gocache");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&gocheck)
        .arg(".")
        .current_dir(gocheck_src())
        // Module mode, stdlib only: nothing may be fetched.
        .env("GO111MODULE", "on")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOWORK", "off")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", &cache)
        .env("GOPATH", dir.path().join("gopath"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "go build of testdata/gocheck failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Tools {
        gocheck,
        python: python.unwrap(),
        rebuild: gocheck_src().join("rebuild.py"),
        dir,
    })
}

// ---------------------------------------------------------------------------------------------
// gocheck's JSON

/// One entry as Go's archive/tar sees it; byte strings already base64-decoded.
#[derive(Debug)]
struct GoEntry {
    name: Vec<u8>,
    kind: String,
    uncompressed_offset: u64,
    size: u64,
    linkname: Vec<u8>,
    mode: i64,
    uid: u32,
    gid: u32,
    uname: Vec<u8>,
    gname: Vec<u8>,
    mod_time: String,
    devmajor: i64,
    devminor: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn b64(s: &serde_json::Value) -> Vec<u8> {
    let s = s.as_str().expect("base64 string");
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 {s:?}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn parse_go(json: &[u8]) -> (u64, Vec<GoEntry>) {
    let v: serde_json::Value = serde_json::from_slice(json).expect("gocheck JSON");
    let int = |e: &serde_json::Value, k: &str| e[k].as_i64().unwrap_or_else(|| panic!("{k}"));
    let entries = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| GoEntry {
            name: b64(&e["name"]),
            kind: e["type"].as_str().unwrap().to_owned(),
            uncompressed_offset: int(e, "uncompressed_offset") as u64,
            size: int(e, "size") as u64,
            linkname: b64(&e["linkname"]),
            mode: int(e, "mode"),
            uid: int(e, "uid") as u32,
            gid: int(e, "gid") as u32,
            uname: b64(&e["uname"]),
            gname: b64(&e["gname"]),
            mod_time: e["mod_time"].as_str().unwrap().to_owned(),
            devmajor: int(e, "devmajor"),
            devminor: int(e, "devminor"),
            xattrs: e["xattrs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|kv| (b64(&kv[0]), b64(&kv[1])))
                .collect(),
        })
        .collect();
    (v["uncompressed_archive_size"].as_u64().unwrap(), entries)
}

// ---------------------------------------------------------------------------------------------
// Comparison

fn show(b: &[u8]) -> String {
    format!("\"{}\"", b.escape_ascii())
}

/// Field-by-field differences between our TOC and Go's, one line each.
fn diff_toc(ours: &Ztoc, go_size: u64, go: &[GoEntry]) -> Vec<String> {
    let mut d = Vec::new();
    if ours.uncompressed_archive_size != go_size {
        d.push(format!(
            "uncompressed_archive_size: ours {} go {go_size}",
            ours.uncompressed_archive_size
        ));
    }
    if ours.toc.len() != go.len() {
        d.push(format!(
            "entry count: ours {} go {}",
            ours.toc.len(),
            go.len()
        ));
    }
    for (i, (o, g)) in ours.toc.iter().zip(go).enumerate() {
        let mut field = |what: &str, ours: String, go: String| {
            if ours != go {
                d.push(format!(
                    "entry #{i} {}: {what}: ours {ours} go {go}",
                    show(&g.name)
                ));
            }
        };
        let FileMetadata {
            name,
            kind,
            uncompressed_offset,
            uncompressed_size,
            linkname,
            mode,
            uid,
            gid,
            uname,
            gname,
            mod_time,
            devmajor,
            devminor,
            xattrs,
        } = o;
        field("name", show(name), show(&g.name));
        field("type", kind.as_str().into(), g.kind.clone());
        field(
            "uncompressed_offset",
            uncompressed_offset.0.to_string(),
            g.uncompressed_offset.to_string(),
        );
        field("size", uncompressed_size.to_string(), g.size.to_string());
        field("linkname", show(linkname), show(&g.linkname));
        field("mode", format!("{mode:o}"), format!("{:o}", g.mode));
        field("uid", uid.to_string(), g.uid.to_string());
        field("gid", gid.to_string(), g.gid.to_string());
        field("uname", show(uname), show(&g.uname));
        field("gname", show(gname), show(&g.gname));
        field("mod_time", mod_time.clone(), g.mod_time.clone());
        field("devmajor", devmajor.to_string(), g.devmajor.to_string());
        field("devminor", devminor.to_string(), g.devminor.to_string());
        let pairs = |it: &mut dyn Iterator<Item = (&Vec<u8>, &Vec<u8>)>| {
            it.map(|(k, v)| format!("{}={}", show(k), show(v)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        field(
            "xattrs",
            pairs(&mut xattrs.iter()),
            pairs(&mut g.xattrs.iter().map(|(k, v)| (k, v))),
        );
    }
    d
}

fn hex_around(b: &[u8], at: usize) -> String {
    let start = at.saturating_sub(16);
    let end = (at + 16).min(b.len());
    let mut s = format!("@{start:#x}:");
    for (i, x) in b[start..end].iter().enumerate() {
        let mark = if start + i == at { '>' } else { ' ' };
        write!(s, "{mark}{x:02x}").unwrap();
    }
    s
}

fn diff_bytes(ours: &[u8], python: &[u8]) -> Option<String> {
    if ours == python {
        return None;
    }
    let first = ours
        .iter()
        .zip(python)
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(python.len()));
    Some(format!(
        "bytes differ: ours {} bytes, rebuilt {} bytes, first difference at {first:#x}\n    \
         ours    {}\n    rebuilt {}",
        ours.len(),
        python.len(),
        hex_around(ours, first.min(ours.len().saturating_sub(1))),
        hex_around(python, first.min(python.len().saturating_sub(1))),
    ))
}

// ---------------------------------------------------------------------------------------------
// Running one fixture

struct Fixture {
    name: String,
    layer: Vec<u8>,
    /// Go's reader rejects the layer; so must we.
    rejected: bool,
}

fn fixture(name: &str, layer: Vec<u8>) -> Fixture {
    Fixture {
        name: name.to_owned(),
        layer,
        rejected: false,
    }
}

fn rejected(name: &str, layer: Vec<u8>) -> Fixture {
    Fixture {
        rejected: true,
        ..fixture(name, layer)
    }
}

struct Outcome {
    line: String,
    failures: Vec<String>,
}

fn run(t: &Tools, f: &Fixture) -> Outcome {
    let mut failures = Vec::new();
    let path = t.dir.path().join(format!("{}.layer", f.name));
    std::fs::write(&path, &f.layer).unwrap();

    let built = ZtocBuilder::new().span_size(SPAN).build(&f.layer[..]);
    let go = Command::new(&t.gocheck).arg(&path).output().unwrap();
    let describe = |built: &soci_ztoc::Result<Ztoc>| {
        let ours = match built {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("error: {e}"),
        };
        let go = if go.status.success() {
            "ok".to_owned()
        } else {
            format!("error: {}", String::from_utf8_lossy(&go.stderr).trim())
        };
        format!("ours {ours}; go {go}")
    };
    if f.rejected {
        let both = built.is_err() && !go.status.success();
        let what = describe(&built);
        return Outcome {
            line: format!(
                "{:<24} rejected by both: {}",
                f.name,
                if both { "yes" } else { "NO" }
            ),
            failures: if both {
                vec![]
            } else {
                vec![format!("{}: should be rejected: {what}", f.name)]
            },
        };
    }
    let (ztoc, json) = match (built, go.status.success()) {
        (Ok(z), true) => (z, go.stdout),
        (built, _) => {
            let what = describe(&built);
            return Outcome {
                line: format!("{:<24} {what}", f.name),
                failures: vec![format!("{}: {what}", f.name)],
            };
        }
    };
    let bytes = ztoc.to_bytes();
    let decoded = Ztoc::from_bytes(&bytes).expect("our own zTOC decodes");
    let (go_size, go_entries) = parse_go(&json);
    let toc_diff = diff_toc(&decoded, go_size, &go_entries);
    let toc_ok = toc_diff.is_empty();
    for l in toc_diff.iter().take(20) {
        failures.push(format!("{}: {l}", f.name));
    }
    if toc_diff.len() > 20 {
        failures.push(format!("{}: ... {} more", f.name, toc_diff.len() - 20));
    }

    let json_path = t.dir.path().join(format!("{}.json", f.name));
    let ztoc_path = t.dir.path().join(format!("{}.ztoc", f.name));
    std::fs::write(&json_path, &json).unwrap();
    std::fs::write(&ztoc_path, &bytes).unwrap();
    let py = Command::new(&t.python)
        .arg(&t.rebuild)
        .arg(&json_path)
        .arg(&ztoc_path)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "rebuild.py failed on {}:\n{}",
        f.name,
        String::from_utf8_lossy(&py.stderr)
    );
    let bytes_diff = diff_bytes(&bytes, &py.stdout);
    let bytes_ok = bytes_diff.is_none();
    if let Some(d) = bytes_diff {
        failures.push(format!("{}: {d}", f.name));
    }
    let verdict = |ok| if ok { "match" } else { "DIFFER" };
    Outcome {
        line: format!(
            "{:<24} {:>5} entries {:>4} spans {:>9} zTOC bytes: toc {}, bytes {}",
            f.name,
            decoded.toc.len(),
            decoded.compression.span_digests.len(),
            bytes.len(),
            verdict(toc_ok),
            verdict(bytes_ok)
        ),
        failures,
    }
}

// ---------------------------------------------------------------------------------------------
// Layer builders

/// A hand-made tar: header blocks, PAX/GNU pseudo-entries and content, byte for byte.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn block(&mut self, b: &[u8; BLOCK]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    fn hdr(&mut self, h: &Hdr) -> &mut Self {
        self.block(&h.block())
    }

    fn data(&mut self, d: &[u8]) -> &mut Self {
        self.0.extend_from_slice(d);
        self.0.resize(self.0.len().div_ceil(BLOCK) * BLOCK, 0);
        self
    }

    /// A regular file with content.
    fn file(&mut self, mut h: Hdr, content: &[u8]) -> &mut Self {
        h.size = content.len() as u64;
        self.hdr(&h).data(content)
    }

    /// A PAX `x` header carrying `records` (written in the given order, duplicates kept).
    fn pax(&mut self, records: &[(&[u8], &[u8])]) -> &mut Self {
        let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let mut h = Hdr::new("./PaxHeaders/x", b'x');
        h.size = data.len() as u64;
        self.hdr(&h).data(&data)
    }

    /// A GNU `L`/`K` pseudo-entry whose data is exactly `data` (terminator included).
    fn gnu_long(&mut self, flag: u8, data: &[u8]) -> &mut Self {
        let mut h = Hdr::new("././@LongLink", flag);
        h.gnu_magic = true;
        h.mode = 0;
        h.uid = 0;
        h.gid = 0;
        h.mtime = 0;
        h.uname = b"root".to_vec();
        h.gname = b"root".to_vec();
        h.size = data.len() as u64;
        self.hdr(&h).data(data)
    }

    /// The end-of-archive marker plus `padding` more zero bytes.
    fn finish(&mut self, padding: usize) -> Vec<u8> {
        self.0.resize(self.0.len() + 2 * BLOCK + padding, 0);
        std::mem::take(&mut self.0)
    }
}

fn kv<'a>(k: &'a [u8], v: &'a [u8]) -> (&'a [u8], &'a [u8]) {
    (k, v)
}

fn hdr(name: impl AsRef<[u8]>, flag: u8) -> Hdr {
    Hdr::new(name, flag)
}

fn tar_header(gnu: bool, kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = if gnu {
        tar::Header::new_gnu()
    } else {
        tar::Header::new_ustar()
    };
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(1000);
    h.set_gid(100);
    h.set_mtime(1_700_000_000);
    h.set_username("builder").unwrap();
    h.set_groupname("users").unwrap();
    h.set_size(0);
    h
}

/// Filler that makes a layer span several 64 KiB spans.
fn filler(seed: u64) -> Vec<u8> {
    let mut v = noise(150 * 1024, seed, true);
    v.extend(noise(100 * 1024, seed + 1, false));
    v
}

fn gnu_long_names() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let dir150 = format!("top/{}/", "d".repeat(146));
    let file300 = format!("{dir150}{}/{}.txt", "e".repeat(100), "f".repeat(45));
    let sym = format!("{dir150}link-to-long");
    let hard = format!("{dir150}{}", "h".repeat(120));
    b.append_data(
        &mut tar_header(true, tar::EntryType::Directory, 0o755),
        "top/",
        &[][..],
    )
    .unwrap();
    b.append_data(
        &mut tar_header(true, tar::EntryType::Directory, 0o755),
        &dir150,
        &[][..],
    )
    .unwrap();
    let content = filler(1);
    let mut h = tar_header(true, tar::EntryType::Regular, 0o644);
    h.set_size(content.len() as u64);
    b.append_data(&mut h, &file300, &content[..]).unwrap();
    b.append_link(
        &mut tar_header(true, tar::EntryType::Symlink, 0o777),
        &sym,
        &file300,
    )
    .unwrap();
    b.append_link(
        &mut tar_header(true, tar::EntryType::Link, 0o644),
        &hard,
        &file300,
    )
    .unwrap();
    let mut h = tar_header(true, tar::EntryType::Regular, 0o600);
    h.set_size(5);
    b.append_data(&mut h, "top/short", &b"short"[..]).unwrap();
    gzip(&b.into_inner().unwrap(), 6)
}

fn pax_long_names() -> Vec<u8> {
    let mut t = Raw::default();
    let long_dir = format!("pax/{}/", "p".repeat(280));
    let long_file = format!("{long_dir}{}", "q".repeat(200));
    let long_target = format!("../{}", "t".repeat(400));
    t.pax(&[kv(b"path", long_dir.as_bytes())])
        .hdr(&{
            let mut h = hdr("pax/truncated-dir/", b'5');
            h.mode = 0o755;
            h
        })
        .pax(&[kv(b"path", long_file.as_bytes())])
        .file(hdr("pax/truncated-file", b'0'), &filler(2))
        .pax(&[kv(b"linkpath", long_target.as_bytes())])
        .hdr(&{
            let mut h = hdr("pax/symlink", b'2');
            h.mode = 0o777;
            h.linkname = b"truncated-target".to_vec();
            h
        })
        .pax(&[
            kv(b"path", format!("{long_dir}hardlink").as_bytes()),
            kv(b"linkpath", long_file.as_bytes()),
        ])
        .hdr(&{
            let mut h = hdr("pax/hl", b'1');
            h.linkname = b"pax/truncated-file".to_vec();
            h
        });
    gzip(&t.finish(0), 6)
}

fn pax_xattrs() -> Vec<u8> {
    let capability: &[u8] = &[
        1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let mut t = Raw::default();
    t.pax(&[
        kv(b"SCHILY.xattr.security.capability", capability),
        kv(
            b"SCHILY.xattr.user.comment",
            "h\u{e9}llo w\u{f6}rld".as_bytes(),
        ),
        kv(b"SCHILY.xattr.user.latin1", b"\xe9t\xe9\xff\x00\x01"),
        kv(b"SCHILY.xattr.user.\xff\xfe", b"key is not utf-8"),
        kv(b"SCHILY.xattr.user.dup", b"first"),
        kv(b"SCHILY.xattr.user.dup", b"second"),
        kv(b"SCHILY.xattr.user.empty", b""),
        kv(b"SCHILY.xattr.user.eq", b"a=b=c"),
        kv(b"comment", b"not an xattr"),
        kv(b"uname", b""),
        kv(b"atime", b"1700000000.25"),
        kv(b"ctime", b"1700000001"),
    ])
    .file(hdr("bin/ping", b'0'), b"\x7fELF not really");
    t.pax(&[kv(b"SCHILY.xattr.trusted.overlay.opaque", b"y")])
        .hdr(&{
            let mut h = hdr("opaque/", b'5');
            h.mode = 0o755;
            h
        });
    t.pax(&[
        kv(b"uname", b"pax-user"),
        kv(b"gname", b"pax-group"),
        kv(b"uid", b"4000000000"),
        kv(b"gid", b"70000"),
        kv(b"size", b"7"),
    ])
    .hdr(&{
        let mut h = hdr("owned-by-pax", b'0');
        h.size = 0; // PAX size overrides the header's
        h
    })
    .data(b"7 bytes");
    t.file(hdr("no-pax", b'0'), &filler(3));
    gzip(&t.finish(0), 6)
}

fn pax_times() -> Vec<u8> {
    let mut t = Raw::default();
    let times: [&[u8]; 12] = [
        b"1677661200.123456789",
        b"+1677661200.25",
        b"1677661200.",
        b"-0.5",
        b"1677661200.5",
        b"1677661200.1234567891",
        b"1677661200.000000000",
        b"1677661200.000001",
        b"-1.25",
        b"0",
        b"253402300799.999999999",
        b"253402300800",
    ];
    for (i, m) in times.iter().enumerate() {
        t.pax(&[kv(b"mtime", m)])
            .file(hdr(format!("t{i}"), b'0'), m);
    }
    t.file(hdr("after", b'0'), &filler(4));
    gzip(&t.finish(0), 6)
}

fn links() -> Vec<u8> {
    let mut t = Raw::default();
    t.file(hdr("data/target.bin", b'0'), &filler(5));
    for (name, flag, target) in [
        ("data/hard", b'1', "data/target.bin"),
        ("data/hard-dangling", b'1', "data/missing"),
        ("data/rel", b'2', "target.bin"),
        ("data/abs", b'2', "/etc/passwd"),
        ("data/dotdot", b'2', "../../../../x"),
    ] {
        let mut h = hdr(name, flag);
        h.mode = if flag == b'2' { 0o777 } else { 0o644 };
        h.linkname = target.as_bytes().to_vec();
        t.hdr(&h);
    }
    // Symlink targets of 99 bytes (fits the ustar field) and 100 (fills it, no NUL).
    for len in [99, 100] {
        let mut h = hdr(format!("data/sym{len}"), b'2');
        h.linkname = "L".repeat(len).into_bytes();
        t.hdr(&h);
    }
    // GNU long link (`K`) for a long symlink target.
    let long = format!("/{}", "k".repeat(300));
    t.gnu_long(b'K', &[long.as_bytes(), b"\0"].concat());
    let mut h = hdr("data/sym-long", b'2');
    h.linkname = b"truncated".to_vec();
    t.hdr(&h);
    gzip(&t.finish(0), 6)
}

fn devices_and_modes() -> Vec<u8> {
    let mut t = Raw::default();
    for (name, flag, mode, major, minor) in [
        ("dev/null", b'3', 0o666, 1, 3),
        ("dev/sda1", b'4', 0o660, 8, 1),
        ("dev/big", b'3', 0o600, 0o7777777, 0o7777777),
        ("run/fifo", b'6', 0o644, 0, 0),
    ] {
        let mut h = hdr(name, flag);
        h.mode = mode;
        h.devmajor = major;
        h.devminor = minor;
        t.hdr(&h);
    }
    for (name, flag, mode) in [
        ("usr/bin/sudo", b'0', 0o4755),
        ("usr/bin/wall", b'0', 0o2755),
        ("tmp/", b'5', 0o1777),
        ("srv/", b'5', 0o2775),
        ("legacy-ifreg", b'0', 0o100644),
        ("legacy-ifdir/", b'5', 0o40755),
        ("no-perms", b'0', 0),
        ("all-bits", b'0', 0o7777),
    ] {
        let mut h = hdr(name, flag);
        h.mode = mode;
        if flag == b'0' {
            t.file(h, name.as_bytes());
        } else {
            t.hdr(&h);
        }
    }
    t.file(hdr("filler", b'0'), &filler(6));
    gzip(&t.finish(0), 6)
}

fn empty_and_duplicates() -> Vec<u8> {
    let mut t = Raw::default();
    t.hdr(&hdr("./", b'5'))
        .file(hdr("./empty", b'0'), b"")
        .file(hdr("empty2", b'0'), b"")
        .file(hdr("dup", b'0'), b"first version")
        .file(hdr("dup", b'0'), &filler(7))
        .hdr(&hdr("dup", b'5'))
        .file(hdr("dup", b'0'), b"")
        .file(hdr("/abs/path", b'0'), b"absolute")
        .file(hdr(b"caf\xe9 \xff name", b'0'), b"non-utf-8 name")
        .file(hdr("sp ace/tab\there", b'0'), b"whitespace")
        .file(hdr(".wh..wh..opq", b'0'), b"")
        .file(hdr("dir/.wh.gone", b'0'), b"");
    let mut h = hdr("", b'0');
    h.name = b"n".repeat(100); // fills the name field: no NUL terminator
    t.file(h, b"100-byte name");
    gzip(&t.finish(0), 6)
}

fn ustar_prefix() -> Vec<u8> {
    // The tar crate splits long ustar paths into prefix + name.
    let mut b = tar::Builder::new(Vec::new());
    let dir = format!("{}/{}/", "a".repeat(90), "b".repeat(60));
    b.append_data(
        &mut tar_header(false, tar::EntryType::Directory, 0o755),
        &dir,
        &[][..],
    )
    .unwrap();
    let content = filler(8);
    let mut h = tar_header(false, tar::EntryType::Regular, 0o644);
    h.set_size(content.len() as u64);
    b.append_data(&mut h, format!("{dir}{}", "c".repeat(95)), &content[..])
        .unwrap();
    let mut tar = b.into_inner().unwrap();
    tar.truncate(tar.len() - 2 * BLOCK); // drop the end marker, append more by hand
    let mut t = Raw(tar);
    // Hand-made: a 155-byte prefix (no NUL) and a 100-byte name (no NUL).
    let mut h = hdr("n".repeat(100), b'0');
    h.prefix = "p".repeat(155).into_bytes();
    t.file(h, b"max ustar name");
    // A GNU header stores atime/ctime where ustar has the prefix: never part of the name.
    let mut h = hdr("gnu-no-prefix", b'0');
    h.gnu_magic = true;
    h.prefix = b"14566713416\x0014566713416\x00".to_vec();
    t.file(h, b"gnu");
    gzip(&t.finish(0), 6)
}

/// V7 headers, the legacy `\0` type flag and base-256 numbers.
fn odd_headers() -> Vec<u8> {
    let mut t = Raw::default();
    // V7: no magic, so no uname/gname/devices/prefix.
    let mut h = hdr("v7-file", b'0');
    h.size = 2;
    let mut blk = h.block();
    blk[257..265].fill(0);
    set_checksum(&mut blk);
    t.block(&blk).data(b"v7");
    // Legacy regular file type `\0`; with a trailing slash it is a directory.
    t.file(hdr("legacy-reg", 0), b"legacy");
    t.hdr(&hdr("legacy-dir/", 0));
    // Base-256 (GNU) numbers: a uid over 32 bits, a negative and a far-future mtime.
    for (name, uid, mtime) in [
        ("b256-uid", 0x1_0000_0005_i64, 1_677_661_200_i64),
        ("b256-neg-mtime", 5, -86_400 * 365),
        ("b256-year-10000", 5, 253_402_300_800),
    ] {
        let mut h = hdr(name, b'0');
        h.gnu_magic = true;
        h.size = 1;
        let mut blk = h.block();
        for (field, v) in [(108..116, uid), (136..148, mtime)] {
            let f = &mut blk[field];
            let n = f.len();
            let be = v.to_be_bytes();
            f.fill(if v < 0 { 0xff } else { 0 });
            f[n - 8..].copy_from_slice(&be);
            f[0] |= 0x80;
        }
        set_checksum(&mut blk);
        t.block(&blk).data(b"x");
    }
    gzip(&t.finish(0), 6)
}

// Header details on which the `tar` crate and Go's reader disagree; soci-ztoc follows Go.

/// PAX values are length-delimited: binary xattrs may contain newlines (0x0a).
fn pax_newline_values() -> Vec<u8> {
    let mut t = Raw::default();
    t.pax(&[
        kv(
            b"SCHILY.xattr.security.capability",
            b"\x01\x00\x00\x02\x0a\x00\x00\x00\n\n",
        ),
        kv(b"SCHILY.xattr.user.multi", b"line 1\nline 2=x\n"),
        kv(b"comment", b"\n"),
        kv(b"size", b"5"), // after the newline records, as Go's writer orders keys
    ])
    .hdr(&hdr("bin/cap", b'0'))
    .data(b"5 byt");
    t.file(hdr("next", b'0'), &filler(30));
    gzip(&t.finish(0), 6)
}

fn gnu_long_name_nuls() -> Vec<u8> {
    let mut t = Raw::default();
    let name = format!("gnu/{}", "x".repeat(120));
    // Some writers pad the long name with several NULs; the name ends at the first.
    t.gnu_long(b'L', &[name.as_bytes(), b"\0\0\0\0"].concat())
        .file(hdr("gnu/trunc", b'0'), b"nuls");
    t.gnu_long(b'K', b"target\0garbage")
        .hdr(&hdr("gnu/link", b'2'));
    gzip(&t.finish(0), 6)
}

/// A GNU long name beats a PAX `path`; several PAX headers: the last one counts.
fn gnu_long_name_and_pax() -> Vec<u8> {
    let mut t = Raw::default();
    t.pax(&[kv(b"path", b"from-pax-path")])
        .gnu_long(b'L', b"from-gnu-long-name\0")
        .file(hdr("from-header", b'0'), b"which name wins?");
    t.pax(&[kv(b"path", b"first-pax"), kv(b"uname", b"first")])
        .pax(&[kv(b"path", b"second-pax")])
        .file(hdr("two-pax-headers", b'0'), b"last wins");
    gzip(&t.finish(0), 6)
}

/// "ustar\0" with a version other than "00" is still USTAR; a star trailer shortens the
/// prefix to 131 bytes; a PAX header in a V7 block still applies.
fn ustar_variants() -> Vec<u8> {
    let mut t = Raw::default();
    for (i, version) in [b"\0\0", b"  "].into_iter().enumerate() {
        let mut h = hdr("name", b'0');
        h.prefix = format!("prefix{i}").into_bytes();
        h.size = 3;
        let mut blk = h.block();
        blk[263..265].copy_from_slice(version);
        set_checksum(&mut blk);
        t.block(&blk).data(b"abc");
    }
    let mut h = hdr("star-name", b'0');
    h.prefix = "s".repeat(131).into_bytes();
    h.size = 4;
    let mut blk = h.block();
    blk[508..512].copy_from_slice(b"tar\0");
    set_checksum(&mut blk);
    t.block(&blk).data(b"star");
    let data = pax_record(b"path", b"pax-in-a-v7-block");
    let mut h = hdr("PaxHeader", b'x');
    h.size = data.len() as u64;
    let mut blk = h.block();
    blk[257..265].fill(0);
    set_checksum(&mut blk);
    t.block(&blk).data(&data).file(hdr("v7-pax", b'0'), b"v7");
    gzip(&t.finish(0), 6)
}

/// The stream ends inside the last entry's padding, or right after its content: Go's
/// reader reports the end of the archive.
fn unpadded_end(pad: usize) -> Vec<u8> {
    let mut t = plain_files();
    t.hdr(&{
        let mut h = hdr("last", b'0');
        h.size = 1000;
        h
    });
    t.0.extend_from_slice(&noise(1000, 40, true));
    t.0.extend(std::iter::repeat_n(0, pad));
    t.0
}

/// Layers Go's reader refuses (so the reference builds no zTOC), one malformation each.
fn rejected_layers() -> Vec<Fixture> {
    let one = |records: &[(&[u8], &[u8])]| {
        let mut t = Raw::default();
        t.pax(records).file(hdr("f", b'0'), b"x");
        gzip(&t.finish(0), 6)
    };
    let raw_pax = |data: &[u8]| {
        let mut t = Raw::default();
        let mut h = hdr("./PaxHeaders/f", b'x');
        h.size = data.len() as u64;
        t.hdr(&h).data(data).file(hdr("f", b'0'), b"x");
        gzip(&t.finish(0), 6)
    };
    let typed = |flag: u8| {
        let mut t = Raw::default();
        t.file(hdr("f", flag), b"x");
        gzip(&t.finish(0), 6)
    };
    let mut bad_sum = Raw::default();
    bad_sum.file(hdr("f", b'0'), b"x");
    bad_sum.0[148] ^= 1;
    let mut zero_then_header = Raw::default();
    zero_then_header.0.resize(BLOCK, 0);
    zero_then_header.file(hdr("f", b'0'), b"x");
    vec![
        rejected("bad_pax_mtime", one(&[kv(b"mtime", b".5")])),
        rejected("bad_pax_atime", one(&[kv(b"atime", b"1.x")])),
        rejected("bad_pax_uid", one(&[kv(b"uid", b"12a")])),
        rejected("bad_pax_size", one(&[kv(b"size", b"-1")])),
        rejected("nul_in_pax_path", one(&[kv(b"path", b"a\0b")])),
        rejected("pax_bad_length", raw_pax(b"99 path=x\n")),
        rejected("pax_no_newline", raw_pax(b"9 path=xy")),
        rejected("pax_trailing_garbage", raw_pax(b"10 path=x\n\0\0")),
        rejected("global_pax_header", typed(b'g')),
        rejected("contiguous_file", typed(b'7')),
        rejected("bad_checksum", gzip(&bad_sum.finish(0), 6)),
        rejected("zero_then_header", gzip(&zero_then_header.finish(0), 6)),
        rejected("truncated_content", {
            let mut t = plain_files();
            let mut tar = t.finish(0);
            tar.truncate(3 * BLOCK + 100);
            tar
        }),
    ]
}

/// A layer with content spread over several members, as pigz or eStargz write them.
fn multi_member() -> Vec<u8> {
    let mut t = Raw::default();
    for i in 0..6 {
        t.file(hdr(format!("m/{i}"), b'0'), &filler(10 + i));
    }
    let tar = t.finish(0);
    let cuts: Vec<usize> = (1..5).map(|k| k * tar.len() / 5 + 17).collect();
    gzip_members(&tar, &cuts, 6)
}

fn plain_files() -> Raw {
    let mut t = Raw::default();
    t.hdr(&{
        let mut h = hdr("d/", b'5');
        h.mode = 0o755;
        h
    });
    for i in 0..4 {
        t.file(hdr(format!("d/f{i}"), b'0'), &filler(20 + i));
    }
    t.file(hdr("d/small", b'0'), b"small");
    t
}

/// GNU tar pads the archive to its 10 KiB record size.
fn record_padded() -> Vec<u8> {
    let mut t = plain_files();
    let end = t.0.len() + 2 * BLOCK;
    let padded = end.div_ceil(10240) * 10240;
    t.finish(padded - end + 10240) // one more record of zeros than needed
}

/// The end of archive without, or with only one, zero block.
fn short_end(zero_blocks: usize) -> Vec<u8> {
    let mut t = plain_files();
    t.0.resize(t.0.len() + zero_blocks * BLOCK, 0);
    t.0
}

/// `tar -C /usr/lib -cf - python3.11`, gzip'd: a real tree as GNU tar writes it.
fn python_tree() -> Result<Vec<u8>, String> {
    if !Path::new("/usr/lib/python3.11").is_dir() {
        return Err("/usr/lib/python3.11 not present".into());
    }
    let out = Command::new("tar")
        .args(["-C", "/usr/lib", "-cf", "-", "python3.11"])
        .output()
        .map_err(|e| format!("tar: {e}"))?;
    if !out.status.success() {
        return Err(format!("tar: {}", String::from_utf8_lossy(&out.stderr)));
    }
    // gzip(1) is much faster than a debug build of the Rust deflater.
    let gz = Command::new("gzip")
        .args(["-1", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    match gz {
        Ok(mut child) => {
            let mut stdin = child.stdin.take().unwrap();
            let tar = out.stdout;
            let writer = std::thread::spawn(move || stdin.write_all(&tar));
            let res = child.wait_with_output().unwrap();
            writer.join().unwrap().unwrap();
            assert!(res.status.success(), "gzip failed");
            Ok(res.stdout)
        }
        Err(_) => Ok(gzip(&out.stdout, 1)),
    }
}

fn fixtures() -> Vec<Fixture> {
    let mut v = vec![
        fixture("gnu_long_names", gnu_long_names()),
        fixture("pax_long_names", pax_long_names()),
        fixture("pax_xattrs", pax_xattrs()),
        fixture("pax_times", pax_times()),
        fixture("links", links()),
        fixture("devices_and_modes", devices_and_modes()),
        fixture("empty_and_duplicates", empty_and_duplicates()),
        fixture("ustar_prefix", ustar_prefix()),
        fixture("odd_headers", odd_headers()),
        fixture("pax_newline_values", pax_newline_values()),
        fixture("gnu_long_name_nuls", gnu_long_name_nuls()),
        fixture("gnu_long_name_and_pax", gnu_long_name_and_pax()),
        fixture("ustar_variants", ustar_variants()),
        fixture("multi_member_gzip", multi_member()),
        fixture("plain_tar", plain_files().finish(0)),
        fixture("plain_tar_no_end_marker", short_end(0)),
        fixture("plain_tar_one_zero_block", short_end(1)),
        fixture("plain_tar_unpadded_end", unpadded_end(0)),
        fixture("plain_tar_end_in_padding", unpadded_end(10)),
        fixture("gzip_unpadded_end", gzip(&unpadded_end(0), 6)),
        fixture("record_padded_tar", record_padded()),
        fixture("record_padded_gzip", gzip(&record_padded(), 6)),
    ];
    v.extend(rejected_layers());
    match python_tree() {
        Ok(layer) => v.push(fixture("python3.11_tree", layer)),
        Err(why) => println!("SKIPPED fixture python3.11_tree: {why}"),
    }
    v
}

#[test]
fn go_crosscheck() {
    let start = Instant::now();
    let t = match tools() {
        Ok(t) => t,
        Err(missing) => {
            println!(
                "SKIPPED: {missing} not available \
                 (apt-get install golang-go python3-flatbuffers)"
            );
            return;
        }
    };
    let fixtures = fixtures();
    // Two workers: the external tools and our builder overlap.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut outcomes: Vec<(usize, Outcome)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(f) = fixtures.get(i) else { break };
                        mine.push((i, run(&t, f)));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    outcomes.sort_by_key(|(i, _)| *i);
    let mut failures = Vec::new();
    for (_, o) in outcomes {
        println!("{}", o.line);
        failures.extend(o.failures);
    }
    println!("go_crosscheck: {:.1?}", start.elapsed());
    assert!(
        failures.is_empty(),
        "{} difference(s) against Go's archive/tar / the Go-style builder:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}
