//! Index building (spec §4.3–§4.5, §2.7) over fake zTOCs.

use std::collections::BTreeMap;

use soci_index::{
    annotation, classify_layer, media_type, BuildEvent, Compression, Descriptor, Digest, Error,
    Index, IndexBuilder, IndexVersion, Indexed, LayerAction, LayerClass, LayerJob, Manifest,
    Optimization, PrefetchArtifact, PrefetchSpan, ZtocInfo,
};

/// A zTOC stand-in: files by raw name, spans of 10 bytes.
#[derive(Debug, Clone, Default)]
struct FakeZtoc {
    bytes: Vec<u8>,
    xattrs: bool,
    opaque: bool,
    files: BTreeMap<Vec<u8>, (u64, u64)>,
}

impl FakeZtoc {
    fn new(tag: &str) -> Self {
        Self {
            bytes: format!("ztoc:{tag}").into_bytes(),
            ..Self::default()
        }
    }

    fn file(mut self, name: &str, offset: u64, size: u64) -> Self {
        self.files.insert(name.as_bytes().to_vec(), (offset, size));
        self
    }
}

impl ZtocInfo for FakeZtoc {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    fn has_xattr_records(&self) -> bool {
        self.xattrs
    }
    fn has_opaque_whiteout(&self) -> bool {
        self.opaque
    }
    fn find_file(&self, name: &[u8]) -> Option<(u64, u64)> {
        self.files.get(name).copied()
    }
    fn span_of(&self, offset: u64) -> u32 {
        (offset / 10) as u32
    }
}

const MIB: u64 = 1 << 20;

fn layer(tag: &str, media: &str, size: u64) -> Descriptor {
    Descriptor::new(media, Digest::sha256_of(tag.as_bytes()), size)
}

fn manifest(layers: Vec<Descriptor>) -> (Descriptor, Manifest) {
    let config = Descriptor::for_content(media_type::OCI_CONFIG, b"{}");
    let m = Manifest::new(media_type::OCI_MANIFEST, config, layers);
    let d = Descriptor::for_content(media_type::OCI_MANIFEST, &m.to_json())
        .with_platform(soci_index::Platform::new("linux", "amd64", ""));
    (d, m)
}

fn indexer(
    ztocs: BTreeMap<usize, FakeZtoc>,
) -> impl FnMut(&LayerJob<'_>) -> Result<Indexed<FakeZtoc>, std::io::Error> {
    move |job| {
        ztocs
            .get(&job.position)
            .cloned()
            .map(Indexed::built)
            .ok_or_else(|| std::io::Error::other("no such layer"))
    }
}

#[test]
fn classification_table_of_spec_2_7() {
    use Compression::{Gzip, Uncompressed};
    let ok = |c| Ok(LayerClass::Indexable(c));
    let unsupported = |a: &str| {
        Ok(LayerClass::Unsupported {
            algorithm: a.to_owned(),
        })
    };
    let table = [
        (media_type::OCI_LAYER_GZIP, ok(Gzip)),
        (media_type::OCI_LAYER_NON_DISTRIBUTABLE_GZIP, ok(Gzip)),
        (media_type::DOCKER_LAYER_GZIP, ok(Gzip)),
        (media_type::DOCKER_LAYER_FOREIGN_GZIP, ok(Gzip)),
        (media_type::OCI_LAYER, ok(Uncompressed)),
        (media_type::DOCKER_LAYER, ok(Uncompressed)),
        (media_type::DOCKER_LAYER_FOREIGN, ok(Uncompressed)),
        (media_type::OCI_LAYER_ZSTD, unsupported("zstd")),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
            unsupported("zstd"),
        ),
        (media_type::DOCKER_LAYER_ZSTD, unsupported("zstd")),
        (
            "application/vnd.oci.image.layer.v1.tar+encrypted",
            unsupported(""),
        ),
        (
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            unsupported(""),
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip+encrypted",
            unsupported(""),
        ),
        (media_type::OCI_LAYER_NON_DISTRIBUTABLE, unsupported("")),
    ];
    for (media, want) in table {
        assert_eq!(
            classify_layer(media).map_err(|e| e.to_string()),
            want,
            "{media}"
        );
    }
    for media in [
        media_type::DOCKER_CONFIG,
        media_type::OCI_MANIFEST,
        media_type::ZTOC,
        "",
    ] {
        let err = classify_layer(media).unwrap_err();
        assert!(matches!(err, Error::NotALayer { .. }), "{media}");
        assert_eq!(err.to_string(), format!("not a layer mediaType: {media}"));
    }
    assert!(matches!(
        classify_layer("application/vnd.oci.image.layer.v2.squashfs"),
        Err(Error::UnrecognisedLayerMediaType { .. })
    ));
}

#[test]
fn builds_v1_index_in_layer_order_with_skip_messages() {
    let small = layer("small", media_type::OCI_LAYER_GZIP, 5 * MIB);
    let zstd = layer("zstd", media_type::OCI_LAYER_ZSTD, 20 * MIB);
    let big = layer("big", media_type::OCI_LAYER_GZIP, 20 * MIB);
    let prefetch = layer("prefetch", media_type::PREFETCH, 1);
    let plain = layer("plain", media_type::DOCKER_LAYER, 10 * MIB);
    let (mdesc, m) = manifest(vec![
        small.clone(),
        zstd.clone(),
        big.clone(),
        prefetch,
        plain.clone(),
    ]);

    let builder = IndexBuilder::new(IndexVersion::V1);
    let plan = builder.plan(&mdesc, &m).unwrap();
    let actions: Vec<_> = plan.layers().iter().map(|l| l.action.clone()).collect();
    assert!(matches!(actions[0], LayerAction::Skip(_)));
    assert!(matches!(actions[1], LayerAction::Skip(_)));
    assert_eq!(actions[2], LayerAction::Build(Compression::Gzip));
    assert_eq!(actions[3], LayerAction::Ignore);
    assert_eq!(actions[4], LayerAction::Build(Compression::Uncompressed));
    let jobs: Vec<_> = plan
        .jobs()
        .map(|j| (j.position, j.compression, j.span_size))
        .collect();
    assert_eq!(
        jobs,
        vec![
            (2, Compression::Gzip, 4 << 20),
            (4, Compression::Uncompressed, 4 << 20)
        ]
    );

    // Results may arrive in any order (e.g. from parallel builds); the index is in layer order.
    let built = plan
        .finish(vec![
            (4, Indexed::reused(FakeZtoc::new("plain"))),
            (2, Indexed::built(FakeZtoc::new("big"))),
        ])
        .unwrap();
    let ztoc_big = Digest::sha256_of(b"ztoc:big");
    let ztoc_plain = Digest::sha256_of(b"ztoc:plain");
    let lines: Vec<String> = built.events.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        vec![
            format!(
                "ztoc skipped - layer {} (application/vnd.oci.image.layer.v1.tar+gzip) size 5242880 is less than min-layer-size 10485760",
                small.digest
            ),
            format!(
                "ztoc skipped - layer {} (application/vnd.oci.image.layer.v1.tar+zstd) is compressed in an unsupported format. expect: [tar, gzip, unknown] but got \"zstd\"",
                zstd.digest
            ),
            format!("layer {} -> ztoc {ztoc_big}", big.digest),
            format!("layer {} -> ztoc {ztoc_plain} (already exists)", plain.digest),
        ]
    );

    let index = &built.index;
    assert_eq!(index.version(), IndexVersion::V1);
    assert_eq!(index.subject(), Some(&mdesc.to_plain()));
    let digests: Vec<_> = index.blobs().iter().map(|d| d.digest.clone()).collect();
    assert_eq!(digests, vec![ztoc_big, ztoc_plain]);
    let first = &index.blobs()[0];
    assert_eq!(first.media_type, media_type::ZTOC);
    assert_eq!(first.size, 8);
    assert_eq!(
        first.annotations,
        BTreeMap::from([
            (
                annotation::IMAGE_LAYER_DIGEST.to_owned(),
                big.digest.to_string()
            ),
            (
                annotation::IMAGE_LAYER_MEDIA_TYPE.to_owned(),
                media_type::OCI_LAYER_GZIP.to_owned()
            ),
            (annotation::SPAN_SIZE.to_owned(), "4194304".to_owned()),
        ])
    );
    assert_eq!(
        index.blobs()[1].annotation(annotation::IMAGE_LAYER_MEDIA_TYPE),
        Some(media_type::DOCKER_LAYER)
    );
    assert_eq!(built.bytes, index.to_json());
    assert_eq!(built.descriptor.digest, Digest::sha256_of(&built.bytes));
    assert_eq!(Index::from_json(&built.bytes).unwrap(), *index);
    assert_eq!(built.ztocs.len(), 2);
    assert!(built.ztocs[1].reused);
}

#[test]
fn v2_has_no_subject_and_custom_settings_apply() {
    let l = layer("l", media_type::OCI_LAYER, 100);
    let (mdesc, m) = manifest(vec![l]);
    let mut builder = IndexBuilder::new(IndexVersion::V2);
    builder
        .span_size(1 << 20)
        .min_layer_size(0)
        .build_tool_identifier("soci-rs test");
    let built = builder
        .build(
            &mdesc,
            &m,
            indexer(BTreeMap::from([(0, FakeZtoc::new("l"))])),
        )
        .unwrap();
    assert_eq!(built.index.version(), IndexVersion::V2);
    assert!(built.index.subject().is_none());
    assert_eq!(built.index.build_tool_identifier(), Some("soci-rs test"));
    assert_eq!(
        built.index.blobs()[0].annotation(annotation::SPAN_SIZE),
        Some("1048576")
    );
}

#[test]
fn disable_xattrs_only_when_requested_and_allowed() {
    let layers: Vec<_> = (0..3)
        .map(|i| layer(&format!("l{i}"), media_type::OCI_LAYER_GZIP, 100))
        .collect();
    let (mdesc, m) = manifest(layers);
    let mut with_xattrs = FakeZtoc::new("x");
    with_xattrs.xattrs = true;
    let mut with_opaque = FakeZtoc::new("o");
    with_opaque.opaque = true;
    let ztocs = BTreeMap::from([
        (0, FakeZtoc::new("clean")),
        (1, with_xattrs),
        (2, with_opaque),
    ]);

    let mut builder = IndexBuilder::new(IndexVersion::V1);
    builder.min_layer_size(0);
    let plain = builder.build(&mdesc, &m, indexer(ztocs.clone())).unwrap();
    assert!(plain
        .index
        .blobs()
        .iter()
        .all(|d| d.annotation(annotation::DISABLE_XATTRS).is_none()));

    builder.optimization("xattr".parse::<Optimization>().unwrap());
    let optimized = builder.build(&mdesc, &m, indexer(ztocs)).unwrap();
    let flags: Vec<_> = optimized
        .index
        .blobs()
        .iter()
        .map(|d| d.annotation(annotation::DISABLE_XATTRS))
        .collect();
    assert_eq!(flags, vec![Some("true"), None, None]);
    assert!(soci_index::disables_xattrs(&optimized.index.blobs()[0]));

    assert_eq!(
        "bogus".parse::<Optimization>().unwrap_err().to_string(),
        "optimization bogus is not a valid optimization [xattr]"
    );
}

#[test]
fn prefetch_artifacts_follow_spec_4_4() {
    let layers: Vec<_> = (0..3)
        .map(|i| layer(&format!("l{i}"), media_type::OCI_LAYER_GZIP, 100))
        .collect();
    let (mdesc, m) = manifest(layers.clone());
    let ztocs = BTreeMap::from([
        (
            0,
            FakeZtoc::new("0")
                .file("etc/hosts", 0, 5)
                .file("usr/bin/a", 30, 15) // spans 3..4
                .file("usr/bin/b", 50, 0) // span 5: adjacent, merged
                .file("usr/bin/c", 90, 1), // span 9
        ),
        (1, FakeZtoc::new("1").file("./etc/raw", 0, 1)),
        (
            2,
            FakeZtoc::new("2")
                .file("etc/hosts", 100, 30)
                .file("etc/dir/", 0, 0),
        ),
    ]);
    let mut builder = IndexBuilder::new(IndexVersion::V1);
    builder.min_layer_size(0).prefetch_paths([
        "/etc/hosts",  // in layers 0 and 2: top-most (2) wins
        "usr/bin/c",   //
        "usr//bin/a/", // normalized
        "/usr/bin/b",
        "etc/raw",  // raw name is ./etc/raw: no match
        "/etc/dir", // raw name has a trailing slash: no match
        "/nope",
    ]);
    let built = builder.build(&mdesc, &m, indexer(ztocs)).unwrap();

    assert_eq!(built.prefetch_artifacts.len(), 2);
    let p0 = &built.prefetch_artifacts[0];
    assert_eq!(p0.layer, layers[0].digest);
    assert_eq!(
        p0.artifact,
        PrefetchArtifact::new(vec![PrefetchSpan::new(3, 5), PrefetchSpan::new(9, 9)])
    );
    let p2 = &built.prefetch_artifacts[1];
    assert_eq!(p2.layer, layers[2].digest);
    assert_eq!(
        p2.artifact,
        PrefetchArtifact::new(vec![PrefetchSpan::new(10, 13)])
    );
    assert_eq!(p2.bytes, p2.artifact.to_json());
    assert_eq!(p2.descriptor.digest, Digest::sha256_of(&p2.bytes));

    // zTOCs first, then prefetch artifacts in layer order.
    let kinds: Vec<_> = built
        .index
        .blobs()
        .iter()
        .map(|d| d.media_type.as_str())
        .collect();
    assert_eq!(
        kinds,
        vec![
            media_type::ZTOC,
            media_type::ZTOC,
            media_type::ZTOC,
            media_type::PREFETCH,
            media_type::PREFETCH
        ]
    );
    assert_eq!(
        built.index.prefetch_by_layer()[&layers[2].digest],
        &p2.descriptor
    );

    let warnings: Vec<String> = built
        .events
        .iter()
        .filter(|e| e.is_warning())
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        warnings,
        vec![
            "prefetch file etc/raw not found in any layer",
            "prefetch file /etc/dir not found in any layer",
            "prefetch file /nope not found in any layer",
        ]
    );
    let created: Vec<_> = built
        .events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::PrefetchArtifactCreated { .. } => Some(e.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        created[0],
        format!(
            "Created prefetch artifact for layer {}: {}",
            layers[0].digest, p0.descriptor.digest
        )
    );
}

#[test]
fn build_errors() {
    let (mdesc, m) = manifest(vec![layer("small", media_type::OCI_LAYER_GZIP, 1)]);
    let builder = IndexBuilder::new(IndexVersion::V1);
    let err = builder
        .build(&mdesc, &m, indexer(BTreeMap::new()))
        .unwrap_err();
    assert!(matches!(err, Error::NoZtocs));
    assert_eq!(
        err.to_string(),
        "no ztocs created, all layers either skipped or produced errors"
    );

    let (mdesc, m) = manifest(vec![
        layer("l", media_type::OCI_LAYER_GZIP, 1),
        layer("c", media_type::DOCKER_CONFIG, 1),
    ]);
    let err = builder.plan(&mdesc, &m).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("not a layer mediaType: {}", media_type::DOCKER_CONFIG)
    );

    let (mdesc, m) = manifest(vec![layer("a", media_type::OCI_LAYER_GZIP, 20 * MIB)]);
    let err = builder
        .build(&mdesc, &m, indexer(BTreeMap::new()))
        .unwrap_err();
    match &err {
        Error::BuildLayer { layer, .. } => assert_eq!(*layer, Digest::sha256_of(b"a")),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "no such layer"
    );

    let plan = builder.plan(&mdesc, &m).unwrap();
    assert!(matches!(
        plan.clone()
            .finish(Vec::<(usize, Indexed<FakeZtoc>)>::new()),
        Err(Error::MissingZtoc { position: 0, .. })
    ));
    assert!(matches!(
        plan.clone()
            .finish(vec![(1, Indexed::built(FakeZtoc::new("x")))]),
        Err(Error::UnexpectedZtoc { position: 1 })
    ));
    assert!(matches!(
        plan.finish(vec![
            (0, Indexed::built(FakeZtoc::new("x"))),
            (0, Indexed::built(FakeZtoc::new("y")))
        ]),
        Err(Error::UnexpectedZtoc { position: 0 })
    ));
}

#[test]
fn builds_are_deterministic() {
    let layers: Vec<_> = (0..4)
        .map(|i| layer(&format!("l{i}"), media_type::OCI_LAYER_GZIP, 100))
        .collect();
    let (mdesc, m) = manifest(layers);
    let ztocs: BTreeMap<_, _> = (0..4)
        .map(|i| (i, FakeZtoc::new(&i.to_string()).file("f", 0, 1)))
        .collect();
    let mut builder = IndexBuilder::new(IndexVersion::V1);
    builder.min_layer_size(0).prefetch_paths(["f"]);
    let a = builder.build(&mdesc, &m, indexer(ztocs.clone())).unwrap();
    let b = builder.build(&mdesc, &m, indexer(ztocs)).unwrap();
    assert_eq!(a.bytes, b.bytes);
    assert_eq!(a.descriptor, b.descriptor);
}

#[test]
fn duplicate_layers_each_get_a_ztoc_descriptor() {
    let l = layer("same", media_type::OCI_LAYER_GZIP, 100);
    let (mdesc, m) = manifest(vec![l.clone(), l]);
    let mut builder = IndexBuilder::new(IndexVersion::V1);
    builder.min_layer_size(0);
    let ztocs = BTreeMap::from([(0, FakeZtoc::new("s")), (1, FakeZtoc::new("s"))]);
    let built = builder.build(&mdesc, &m, indexer(ztocs)).unwrap();
    assert_eq!(built.index.blobs().len(), 2);
    assert_eq!(built.index.blobs()[0], built.index.blobs()[1]);
}
