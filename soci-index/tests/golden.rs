//! Golden bytes written by hand from spec §4.2/§4.4 (not produced by this crate), plus decoding
//! rules and escaping.

use std::collections::BTreeMap;

use soci_index::{
    annotation, json, media_type, Descriptor, Digest, Error, ImageIndex, Index, IndexVersion,
    Manifest, Platform, PrefetchArtifact, PrefetchSpan, EMPTY_CONFIG, EMPTY_CONFIG_DIGEST,
};

fn digest(c: char) -> Digest {
    Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
}

fn hex(c: char) -> String {
    c.to_string().repeat(64)
}

/// The illustrative v1 index of spec §4.2, compact, with concrete digests.
fn golden_v1() -> String {
    let (a, b, c, m) = (hex('a'), hex('b'), hex('c'), hex('d'));
    [
        r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
        r#""config":{"mediaType":"application/vnd.amazon.soci.index.v1+json","#,
        r#""digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"#,
        r#""layers":["#,
        &format!(r#"{{"mediaType":"application/octet-stream","digest":"sha256:{a}","size":123456,"#),
        &format!(r#""annotations":{{"com.amazon.soci.image-layer-digest":"sha256:{b}","#),
        r#""com.amazon.soci.image-layer-mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","#,
        r#""com.amazon.soci.span-size":"4194304"}},"#,
        &format!(r#"{{"mediaType":"application/vnd.amazon.soci.prefetch.v1+json","digest":"sha256:{c}","size":66,"#),
        &format!(r#""annotations":{{"com.amazon.soci.image-layer-digest":"sha256:{b}"}}}}],"#),
        &format!(
            r#""subject":{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:{m}","size":1234}},"#
        ),
        r#""annotations":{"com.amazon.soci.build-tool-identifier":"AWS SOCI CLI v0.2"}}"#,
    ]
    .concat()
}

fn v1_blobs() -> Vec<Descriptor> {
    let ztoc = Descriptor::new(media_type::ZTOC, digest('a'), 123_456)
        .with_annotation(annotation::SPAN_SIZE, "4194304")
        .with_annotation(
            annotation::IMAGE_LAYER_MEDIA_TYPE,
            media_type::OCI_LAYER_GZIP,
        )
        .with_annotation(annotation::IMAGE_LAYER_DIGEST, digest('b').as_str());
    let prefetch = Descriptor::new(media_type::PREFETCH, digest('c'), 66)
        .with_annotation(annotation::IMAGE_LAYER_DIGEST, digest('b').as_str());
    vec![ztoc, prefetch]
}

#[test]
fn v1_index_matches_golden_bytes() {
    // The subject keeps only mediaType, digest and size even if the platform descriptor has more.
    let subject = Descriptor::new(media_type::DOCKER_MANIFEST, digest('d'), 1234)
        .with_platform(Platform::new("linux", "amd64", ""))
        .with_annotation("x", "y");
    let index = Index::new_v1(v1_blobs(), &subject, "AWS SOCI CLI v0.2");
    assert_eq!(String::from_utf8(index.to_json()).unwrap(), golden_v1());
}

#[test]
fn v2_index_matches_golden_bytes() {
    let golden = golden_v1()
        .replace("soci.index.v1+json", "soci.index.v2+json")
        .replace(
            &format!(
                r#""subject":{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:{}","size":1234}},"#,
                hex('d')
            ),
            "",
        );
    assert!(!golden.contains("subject"));
    let index = Index::new_v2(v1_blobs(), "AWS SOCI CLI v0.2");
    assert_eq!(String::from_utf8(index.to_json()).unwrap(), golden);
    assert_eq!(index.version(), IndexVersion::V2);
}

#[test]
fn decode_encode_is_identity_for_canonical_bytes() {
    for golden in [
        golden_v1(),
        golden_v1().replace("soci.index.v1+json", "soci.index.v2+json"),
    ] {
        let index = Index::from_json(golden.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(index.to_json()).unwrap(), golden);
        assert_eq!(
            index.descriptor().digest,
            Digest::sha256_of(golden.as_bytes())
        );
        assert_eq!(index.build_tool_identifier(), Some("AWS SOCI CLI v0.2"));
        assert_eq!(index.ztocs().count(), 1);
        assert_eq!(index.prefetch_artifacts().count(), 1);
        assert_eq!(index.ztocs_by_layer()[&digest('b')].digest, digest('a'));
        assert_eq!(index.prefetch_by_layer()[&digest('b')].digest, digest('c'));
    }
}

#[test]
fn decode_takes_version_from_config_only_and_ignores_artifact_type() {
    // Top-level artifactType and a Docker top-level mediaType are ignored; re-encoding drops the
    // former and writes the OCI manifest type.
    let input = golden_v1().replacen(
        r#""mediaType":"application/vnd.oci.image.manifest.v1+json","#,
        r#""mediaType":"application/vnd.docker.distribution.manifest.v2+json","artifactType":"application/vnd.amazon.soci.index.v2+json","#,
        1,
    );
    let index = Index::from_json(input.as_bytes()).unwrap();
    assert_eq!(index.version(), IndexVersion::V1);
    assert_eq!(String::from_utf8(index.to_json()).unwrap(), golden_v1());
}

#[test]
fn unknown_index_version_is_an_error() {
    let input = golden_v1().replace(
        "application/vnd.amazon.soci.index.v1+json",
        "application/vnd.oci.empty.v1+json",
    );
    let err = Index::from_json(input.as_bytes()).unwrap_err();
    assert!(matches!(err, Error::UnknownIndexVersion { .. }));
    assert_eq!(
        err.to_string(),
        "unknown index version: application/vnd.oci.empty.v1+json"
    );
}

#[test]
fn malformed_index_is_an_error_not_a_panic() {
    for input in [
        &b""[..],
        b"{",
        b"[]",
        b"null",
        br#"{"config":{"mediaType":"application/vnd.amazon.soci.index.v1+json","digest":"sha256:xyz","size":2}}"#,
        br#"{"config":{"mediaType":"application/vnd.amazon.soci.index.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":-2}}"#,
        br#"{"config":{"mediaType":"application/vnd.amazon.soci.index.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":1.5}}"#,
    ] {
        assert!(Index::from_json(input).is_err(), "{}", String::from_utf8_lossy(input));
    }
}

#[test]
fn nulls_and_absent_optional_fields_decode_like_go() {
    let input = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.amazon.soci.index.v2+json","digest":"{EMPTY_CONFIG_DIGEST}","size":2,"urls":null,"annotations":{{}},"platform":null,"artifactType":null}},"layers":null,"subject":null,"annotations":null}}"#
    );
    let index = Index::from_json(input.as_bytes()).unwrap();
    assert!(index.blobs().is_empty());
    assert_eq!(
        String::from_utf8(index.to_json()).unwrap(),
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.amazon.soci.index.v2+json","digest":"{EMPTY_CONFIG_DIGEST}","size":2}},"layers":[]}}"#
        )
    );
}

#[test]
fn empty_config_constants_are_consistent() {
    assert_eq!(
        Digest::sha256_of(EMPTY_CONFIG).as_str(),
        EMPTY_CONFIG_DIGEST
    );
    let config = Index::config_descriptor(IndexVersion::V1);
    assert_eq!(
        config.to_json(),
        format!(r#"{{"mediaType":"application/vnd.amazon.soci.index.v1+json","digest":"{EMPTY_CONFIG_DIGEST}","size":2}}"#)
            .into_bytes()
    );
}

#[test]
fn descriptor_key_order_with_every_field() {
    let mut d = Descriptor::new("application/x<y>", digest('e'), 7)
        .with_annotation("z", "last")
        .with_annotation("a&b", "first")
        .with_artifact_type("application/vnd.example+type");
    d.urls = vec!["https://example.com/a?b=1&c=2".to_owned()];
    d.data = b"foob".to_vec();
    let mut platform = Platform::new("windows", "amd64", "v2");
    platform.os_version = "10.0.17763".to_owned();
    platform.os_features = vec!["win32k".to_owned()];
    d.platform = Some(platform);
    let want = format!(
        concat!(
            r#"{{"mediaType":"application/x\u003cy\u003e","digest":"sha256:{}","size":7,"#,
            r#""urls":["https://example.com/a?b=1\u0026c=2"],"annotations":{{"a\u0026b":"first","z":"last"}},"#,
            r#""data":"Zm9vYg==","#,
            r#""platform":{{"architecture":"amd64","os":"windows","os.version":"10.0.17763","os.features":["win32k"],"variant":"v2"}},"#,
            r#""artifactType":"application/vnd.example+type"}}"#
        ),
        hex('e')
    );
    assert_eq!(String::from_utf8(d.to_json()).unwrap(), want);
    assert_eq!(Descriptor::from_json(want.as_bytes()).unwrap(), d);
}

#[test]
fn annotation_values_are_escaped_like_go() {
    let d = Descriptor::new(media_type::ZTOC, digest('1'), 0).with_annotation(
        "k",
        "<>&\u{2028}\u{2029}\"\\/\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}é",
    );
    let json = String::from_utf8(d.to_json()).unwrap();
    assert!(
        json.contains(
            r#""k":"\u003c\u003e\u0026\u2028\u2029\"\\/\n\r\t\b\f\u0001\u001f"#
                .to_owned()
                .as_str()
        ),
        "{json}"
    );
    assert!(json.ends_with("\u{7f}é\"}}"), "{json}");
    // serde_json reads our output back to the same value.
    assert_eq!(Descriptor::from_json(json.as_bytes()).unwrap(), d);
}

#[test]
fn map_keys_sort_bytewise() {
    let mut annotations = BTreeMap::new();
    for k in ["b", "B", "a", "é", "_", "aa", "A"] {
        annotations.insert(k.to_owned(), String::new());
    }
    let json = String::from_utf8(json::to_vec(&annotations).unwrap()).unwrap();
    assert_eq!(
        json,
        r#"{"A":"","B":"","_":"","a":"","aa":"","b":"","é":""}"#
    );
}

#[test]
fn invalid_utf8_in_input_becomes_replacement_characters() {
    let mut input = br#"{"mediaType":"a"#.to_vec();
    input.extend_from_slice(b"\xff\xe2\x82");
    input.extend_from_slice(format!(r#"b","digest":"sha256:{}","size":1}}"#, hex('2')).as_bytes());
    let d = Descriptor::from_json(&input).unwrap();
    assert_eq!(d.media_type, "a\u{fffd}\u{fffd}\u{fffd}b");
}

#[test]
fn prefetch_artifact_golden_and_validation() {
    let golden = r#"{"version":"1.0","prefetch_spans":[{"start_span":3,"end_span":5},{"start_span":9,"end_span":9,"priority":2}]}"#;
    let mut second = PrefetchSpan::new(9, 9);
    second.priority = 2;
    let artifact = PrefetchArtifact::new(vec![PrefetchSpan::new(3, 5), second]);
    assert_eq!(String::from_utf8(artifact.to_json()).unwrap(), golden);
    assert_eq!(
        PrefetchArtifact::from_json(golden.as_bytes()).unwrap(),
        artifact
    );
    assert_eq!(artifact.total_spans(), 4);

    let err = PrefetchArtifact::from_json(
        br#"{"version":"2.0","prefetch_spans":[{"start_span":0,"end_span":0}]}"#,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported prefetch artifact version: 2.0"
    );
    let err = PrefetchArtifact::from_json(br#"{"version":"1.0","prefetch_spans":[]}"#).unwrap_err();
    assert_eq!(err.to_string(), "prefetch artifact is empty");
    let err = PrefetchArtifact::from_json(br#"{"version":"1.0"}"#).unwrap_err();
    assert!(matches!(err, Error::EmptyPrefetchArtifact));

    // A zero span is written in full: only priority is omitted when zero.
    assert_eq!(
        PrefetchArtifact::new(vec![PrefetchSpan::new(0, 0)]).to_json(),
        br#"{"version":"1.0","prefetch_spans":[{"start_span":0,"end_span":0}]}"#.to_vec()
    );
    let d = artifact.descriptor(&digest('b'));
    assert_eq!(d.media_type, media_type::PREFETCH);
    assert_eq!(d.size, golden.len() as u64);
    assert_eq!(
        d.annotation(annotation::IMAGE_LAYER_DIGEST),
        Some(digest('b').as_str())
    );
}

#[test]
fn image_index_and_manifest_shapes() {
    let manifest_desc = Descriptor::new(media_type::OCI_MANIFEST, digest('3'), 10)
        .with_platform(Platform::new("linux", "arm64", "v8"));
    let index = ImageIndex::new(vec![manifest_desc]);
    assert_eq!(
        String::from_utf8(index.to_json()).unwrap(),
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":10,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#,
            hex('3')
        )
    );
    assert_eq!(
        index.gc_labels()["containerd.io/gc.ref.content.m.0"],
        digest('3').as_str()
    );

    // Unknown fields are dropped, known ones keep Go's order.
    let docker = format!(
        r#"{{"mediaType":"{}","schemaVersion":2,"extra":[1,2],"config":{{"size":5,"mediaType":"{}","digest":"sha256:{}"}},"layers":[{{"digest":"sha256:{}","mediaType":"{}","size":9}}]}}"#,
        media_type::DOCKER_MANIFEST,
        media_type::DOCKER_CONFIG,
        hex('4'),
        hex('5'),
        media_type::DOCKER_LAYER_GZIP
    );
    let m = Manifest::from_json(docker.as_bytes()).unwrap();
    assert_eq!(
        String::from_utf8(m.to_json()).unwrap(),
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"sha256:{}","size":5}},"layers":[{{"mediaType":"{}","digest":"sha256:{}","size":9}}]}}"#,
            media_type::DOCKER_MANIFEST,
            media_type::DOCKER_CONFIG,
            hex('4'),
            media_type::DOCKER_LAYER_GZIP,
            hex('5')
        )
    );
    let labels = m.gc_labels();
    assert_eq!(
        labels["containerd.io/gc.ref.content.config"],
        digest('4').as_str()
    );
    assert_eq!(
        labels["containerd.io/gc.ref.content.l.0"],
        digest('5').as_str()
    );
}

#[test]
fn index_gc_labels() {
    let index = Index::new_v2(v1_blobs(), "t");
    let labels = index.gc_labels();
    assert_eq!(
        labels["containerd.io/gc.ref.content.config"],
        EMPTY_CONFIG_DIGEST
    );
    assert_eq!(
        labels["containerd.io/gc.ref.content.ztoc.0"],
        digest('a').as_str()
    );
    assert_eq!(
        labels["containerd.io/gc.ref.content.ztoc.1"],
        digest('c').as_str()
    );
}

#[test]
fn disable_xattrs_annotation_uses_go_parse_bool() {
    for (value, want) in [
        ("true", true),
        ("1", true),
        ("T", true),
        ("True", true),
        ("yes", false),
        ("false", false),
    ] {
        let d = Descriptor::new(media_type::ZTOC, digest('6'), 1)
            .with_annotation(annotation::DISABLE_XATTRS, value);
        assert_eq!(soci_index::disables_xattrs(&d), want, "{value}");
    }
    assert!(!soci_index::disables_xattrs(&Descriptor::new(
        media_type::ZTOC,
        digest('6'),
        1
    )));
}

#[test]
fn indent_like_soci_index_info() {
    let pretty = json::indent(golden_v1().as_bytes(), "", "  ").unwrap();
    let text = String::from_utf8(pretty).unwrap();
    assert!(
        text.starts_with("{\n  \"schemaVersion\": 2,\n  \"mediaType\": "),
        "{text}"
    );
    assert!(text.ends_with("\n  }\n}"), "{text}");
    // Indenting never changes the value.
    let a: serde_json::Value = serde_json::from_str(&text).unwrap();
    let b: serde_json::Value = serde_json::from_str(&golden_v1()).unwrap();
    assert_eq!(a, b);
}
