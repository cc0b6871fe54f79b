//! End to end over real layers: gzip and plain tar blobs built here, zTOCs built by `soci-ztoc`
//! through [`ZtocIndexer`], index assembled by [`IndexBuilder`].

use std::io::{Cursor, Write};

use soci_index::soci_ztoc::{UncompressedOffset, Ztoc};
use soci_index::{
    annotation, media_type, Descriptor, Digest, Error, Index, IndexBuilder, IndexVersion, Indexed,
    LayerJob, Manifest, Optimization, ParsedZtoc, PrefetchArtifact, PrefetchSpan, ZtocIndexer,
    ZtocInfo,
};

const SPAN: u64 = 64 << 10;

/// Deterministic, incompressible bytes (xorshift), so spans follow the data size.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn add_file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, data.len() as u64);
    b.append_data(&mut h, name, data).unwrap();
}

/// A PAX extended header with one `key=value` record for the next entry.
fn add_pax(b: &mut tar::Builder<Vec<u8>>, key: &str, value: &str) {
    let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body_len + 1;
    while len != body_len + len.to_string().len() {
        len = body_len + len.to_string().len();
    }
    let record = format!("{len} {key}={value}\n");
    let mut h = header(tar::EntryType::XHeader, record.len() as u64);
    b.append_data(&mut h, "PaxHeaders/x", record.as_bytes())
        .unwrap();
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

struct Image {
    blobs: Vec<Vec<u8>>,
    manifest: Manifest,
    descriptor: Descriptor,
}

fn image() -> Image {
    // Layer 0: gzip, clean (no xattrs, no opaque whiteouts), one big file over many spans.
    let mut b = tar::Builder::new(Vec::new());
    add_file(&mut b, "etc/hosts", b"127.0.0.1 localhost\n");
    add_file(&mut b, "usr/bin/big", &noise(600 << 10, 1));
    add_file(&mut b, "usr/bin/tail", b"tail");
    let l0 = gzip(&b.into_inner().unwrap());

    // Layer 1: gzip with an xattr PAX record; overrides etc/hosts.
    let mut b = tar::Builder::new(Vec::new());
    add_pax(&mut b, "SCHILY.xattr.user.k", "v");
    add_file(&mut b, "etc/hosts", b"10.0.0.1 other\n");
    let l1 = gzip(&b.into_inner().unwrap());

    // Layer 2: plain tar with an opaque whiteout.
    let mut b = tar::Builder::new(Vec::new());
    add_file(&mut b, "var/.wh..wh..opq", b"");
    add_file(&mut b, "var/data", &noise(200 << 10, 2));
    let l2 = b.into_inner().unwrap();

    let layers = vec![
        Descriptor::for_content(media_type::OCI_LAYER_GZIP, &l0),
        Descriptor::for_content(media_type::DOCKER_LAYER_GZIP, &l1),
        Descriptor::for_content(media_type::OCI_LAYER, &l2),
    ];
    let config = Descriptor::for_content(
        media_type::OCI_CONFIG,
        b"{\"architecture\":\"amd64\",\"os\":\"linux\"}",
    );
    let manifest = Manifest::new(media_type::OCI_MANIFEST, config, layers);
    let descriptor = Descriptor::for_content(media_type::OCI_MANIFEST, &manifest.to_json());
    Image {
        blobs: vec![l0, l1, l2],
        manifest,
        descriptor,
    }
}

fn builder() -> IndexBuilder {
    let mut b = IndexBuilder::new(IndexVersion::V1);
    b.span_size(SPAN)
        .min_layer_size(0)
        .optimization(Optimization::Xattr)
        .prefetch_paths(["/usr/bin/big", "/etc/hosts", "var/data", "/missing"]);
    b
}

fn build(img: &Image) -> soci_index::BuiltIndex<ParsedZtoc> {
    let indexer = ZtocIndexer::new("AWS SOCI CLI v0.2", |job: &LayerJob<'_>| {
        Ok(Cursor::new(img.blobs[job.position].clone()))
    });
    builder()
        .build(&img.descriptor, &img.manifest, indexer)
        .unwrap()
}

#[test]
fn builds_an_index_from_real_layers() {
    let img = image();
    let built = build(&img);
    let index = &built.index;
    assert_eq!(index.ztocs().count(), 3);

    for (z, layer) in built.ztocs.iter().zip(&img.manifest.layers) {
        // The descriptor is the digest of the serialized zTOC, which decodes back.
        assert_eq!(z.descriptor.digest, Digest::sha256_of(z.ztoc.bytes()));
        assert_eq!(z.descriptor.digest.as_str(), z.ztoc.ztoc().digest());
        assert_eq!(Ztoc::from_bytes(z.ztoc.bytes()).unwrap(), *z.ztoc.ztoc());
        assert_eq!(
            z.descriptor.annotation(annotation::IMAGE_LAYER_DIGEST),
            Some(layer.digest.as_str())
        );
        assert_eq!(
            z.descriptor.annotation(annotation::IMAGE_LAYER_MEDIA_TYPE),
            Some(layer.media_type.as_str())
        );
        assert_eq!(
            z.descriptor.annotation(annotation::SPAN_SIZE),
            Some("65536")
        );
        assert_eq!(z.ztoc.ztoc().compressed_archive_size, layer.size);
    }
    let disable: Vec<bool> = index.ztocs().map(soci_index::disables_xattrs).collect();
    assert_eq!(disable, vec![true, false, false]);

    // Prefetch: big file in layer 0 spans several spans; etc/hosts resolves to layer 1 (top-most);
    // var/data is in the plain tar layer.
    let z0 = &built.ztocs[0].ztoc;
    let zinfo = z0.ztoc().zinfo().unwrap();
    let big = z0.ztoc().find(b"usr/bin/big").unwrap();
    let start = zinfo.span_of(big.uncompressed_offset).0 as i32;
    let end = zinfo
        .span_of(UncompressedOffset(
            big.uncompressed_offset.0 + big.uncompressed_size,
        ))
        .0 as i32;
    assert!(
        end > start + 3,
        "expected a multi-span file, got {start}..{end}"
    );
    let by_layer: Vec<(Digest, PrefetchArtifact)> = built
        .prefetch_artifacts
        .iter()
        .map(|p| (p.layer.clone(), p.artifact.clone()))
        .collect();
    assert_eq!(by_layer.len(), 3);
    assert_eq!(by_layer[0].0, img.manifest.layers[0].digest);
    assert_eq!(
        by_layer[0].1,
        PrefetchArtifact::new(vec![PrefetchSpan::new(start, end)])
    );
    assert_eq!(by_layer[1].0, img.manifest.layers[1].digest);
    assert_eq!(
        by_layer[1].1,
        PrefetchArtifact::new(vec![PrefetchSpan::new(0, 0)])
    );
    assert_eq!(by_layer[2].0, img.manifest.layers[2].digest);
    let var = built.ztocs[2].ztoc.ztoc().find(b"var/data").unwrap();
    let tar_end = (var.uncompressed_offset.0 + var.uncompressed_size) / SPAN;
    assert_eq!(
        by_layer[2].1.prefetch_spans,
        vec![PrefetchSpan::new(
            (var.uncompressed_offset.0 / SPAN) as i32,
            tar_end as i32
        )]
    );
    assert_eq!(
        built
            .events
            .iter()
            .filter(|e| e.is_warning())
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["prefetch file /missing not found in any layer"]
    );

    // The index bytes decode and re-encode identically.
    assert_eq!(
        Index::from_json(&built.bytes).unwrap().to_json(),
        built.bytes
    );
}

#[test]
fn builds_are_byte_identical_and_reuse_keeps_digests() {
    let img = image();
    let a = build(&img);
    let b = build(&img);
    assert_eq!(a.bytes, b.bytes);
    for (x, y) in a.ztocs.iter().zip(&b.ztocs) {
        assert_eq!(x.ztoc.bytes(), y.ztoc.bytes());
    }

    // Reusing stored zTOC bytes (artifacts DB path) gives the same index.
    let stored: Vec<Vec<u8>> = a.ztocs.iter().map(|z| z.ztoc.bytes().to_vec()).collect();
    let reused = builder()
        .build(&img.descriptor, &img.manifest, |job: &LayerJob<'_>| {
            ParsedZtoc::from_bytes(stored[job.position].clone()).map(Indexed::reused)
        })
        .unwrap();
    assert_eq!(reused.bytes, a.bytes);
    assert!(reused.events[0].to_string().ends_with("(already exists)"));
}

#[test]
fn indexer_errors_abort_the_build() {
    let img = image();
    let failing = ZtocIndexer::new(
        "t",
        |_: &LayerJob<'_>| -> std::io::Result<Cursor<Vec<u8>>> {
            Err(std::io::Error::other("blob fetch failed"))
        },
    );
    let err = builder()
        .build(&img.descriptor, &img.manifest, failing)
        .unwrap_err();
    assert!(matches!(err, Error::BuildLayer { .. }));
    let source = std::error::Error::source(&err).unwrap();
    assert_eq!(source.to_string(), "failed to read layer blob");

    let garbage = ZtocIndexer::new("t", |_: &LayerJob<'_>| {
        Ok(Cursor::new(vec![0x1f, 0x8b, 0, 1, 2]))
    });
    let err = builder()
        .build(&img.descriptor, &img.manifest, garbage)
        .unwrap_err();
    let source = std::error::Error::source(&err).unwrap();
    assert!(
        source
            .downcast_ref::<Error>()
            .is_some_and(|e| matches!(e, Error::Ztoc(_))),
        "{source:?}"
    );

    assert!(matches!(
        ParsedZtoc::from_bytes(b"not a ztoc".to_vec()),
        Err(Error::Ztoc(_))
    ));
}
