//! Referrers selection and fallback maintenance (spec §4.7, §4.9) and v2 conversion (spec §4.6).

use soci_index::{
    annotation, convert_image_index, convert_manifest, filter_referrers, media_type,
    referrer_descriptor, select_referrer, soci_index_descriptor, update_fallback_index,
    upsert_soci_index_descriptor, Descriptor, Digest, Error, ImageIndex, Index, Manifest,
    Placement, Platform,
};

fn digest(c: char) -> Digest {
    Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
}

fn referrer(c: char, artifact_type: &str) -> Descriptor {
    Descriptor::new(media_type::OCI_MANIFEST, digest(c), 100).with_artifact_type(artifact_type)
}

#[test]
fn selection_takes_the_first_matching_referrer() {
    let list = vec![
        referrer('1', "application/vnd.example.sbom"),
        referrer('2', media_type::SOCI_INDEX_V1),
        referrer('3', media_type::SOCI_INDEX_V1),
        referrer('4', media_type::SOCI_INDEX_V2),
    ];
    assert_eq!(
        select_referrer(&list, media_type::SOCI_INDEX_V1)
            .unwrap()
            .digest,
        digest('2')
    );
    assert_eq!(
        filter_referrers(&list, media_type::SOCI_INDEX_V1).count(),
        2
    );
    assert!(select_referrer(&list[..1], media_type::SOCI_INDEX_V1).is_none());
    assert!(select_referrer(&[], media_type::SOCI_INDEX_V1).is_none());
}

#[test]
fn referrers_response_parses_as_image_index() {
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":7,"annotations":{{"com.amazon.soci.build-tool-identifier":"AWS SOCI CLI v0.2"}},"artifactType":"application/vnd.amazon.soci.index.v1+json"}}]}}"#,
        digest('9')
    );
    let index = ImageIndex::from_json(body.as_bytes()).unwrap();
    let chosen = select_referrer(&index.manifests, media_type::SOCI_INDEX_V1).unwrap();
    assert_eq!(chosen.digest, digest('9'));
    // Canonical bytes round-trip.
    assert_eq!(String::from_utf8(index.to_json()).unwrap(), body);
}

#[test]
fn fallback_tag_name() {
    let d = digest('a');
    assert_eq!(d.referrers_tag(), format!("sha256-{}", "a".repeat(64)));
}

#[test]
fn referrer_descriptor_of_a_soci_index() {
    let subject = Descriptor::new(media_type::OCI_MANIFEST, digest('5'), 42);
    let index = Index::new_v1(
        vec![Descriptor::for_content(media_type::ZTOC, b"z")],
        &subject,
        "AWS SOCI CLI v0.2",
    );
    let bytes = index.to_json();
    let d = referrer_descriptor(&bytes).unwrap();
    assert_eq!(d.media_type, media_type::OCI_MANIFEST);
    assert_eq!(d.digest, Digest::sha256_of(&bytes));
    assert_eq!(d.size, bytes.len() as u64);
    // No top-level artifactType in a SOCI index: config.mediaType is used.
    assert_eq!(d.artifact_type, media_type::SOCI_INDEX_V1);
    assert_eq!(
        d.annotation(annotation::BUILD_TOOL_IDENTIFIER),
        Some("AWS SOCI CLI v0.2")
    );
}

#[test]
fn fallback_index_is_created_then_merged_without_clobbering() {
    let first = referrer('1', "application/vnd.example.sbom");
    let created = update_fallback_index(None, first.clone()).unwrap();
    assert!(created.changed);
    assert!(created.superseded.is_none());
    assert_eq!(
        String::from_utf8(created.bytes.clone()).unwrap(),
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":100,"artifactType":"application/vnd.example.sbom"}}]}}"#,
            digest('1')
        )
    );
    assert_eq!(created.descriptor.media_type, media_type::OCI_INDEX);
    assert_eq!(created.descriptor.digest, Digest::sha256_of(&created.bytes));

    // An existing index with extra fields keeps them and its entries; the new one is appended.
    let mut existing = created.index.clone();
    existing
        .annotations
        .insert("keep".to_owned(), "me".to_owned());
    let existing_bytes = existing.to_json();
    let second = referrer('2', media_type::SOCI_INDEX_V1);
    let merged = update_fallback_index(Some(&existing_bytes), second.clone()).unwrap();
    assert!(merged.changed);
    assert_eq!(merged.index.manifests, vec![first, second.clone()]);
    assert_eq!(merged.index.annotations["keep"], "me");
    assert_eq!(
        merged.superseded.as_ref().unwrap().digest,
        Digest::sha256_of(&existing_bytes)
    );

    // Adding the same digest again changes nothing.
    let again = update_fallback_index(Some(&merged.bytes), second).unwrap();
    assert!(!again.changed);
    assert!(again.superseded.is_none());
    assert_eq!(again.bytes, merged.bytes);

    assert!(update_fallback_index(Some(b"not json"), referrer('3', "x")).is_err());
}

fn docker_manifest() -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","size":1469,"digest":"{}"}},"layers":[{{"mediaType":"{}","size":3000000,"digest":"{}"}}],"unknown":true}}"#,
        media_type::DOCKER_MANIFEST,
        media_type::DOCKER_CONFIG,
        digest('c'),
        media_type::DOCKER_LAYER_GZIP,
        digest('d')
    )
}

#[test]
fn convert_manifest_rewrites_media_types_and_annotates() {
    let soci = digest('e');
    let converted = convert_manifest(docker_manifest().as_bytes(), Some(&soci)).unwrap();
    let want = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":1469}},"layers":[{{"mediaType":"{}","digest":"{}","size":3000000}}],"annotations":{{"com.amazon.soci.index-digest":"{}"}}}}"#,
        digest('c'),
        media_type::DOCKER_LAYER_GZIP,
        digest('d'),
        soci
    );
    assert_eq!(String::from_utf8(converted.bytes.clone()).unwrap(), want);
    assert_eq!(
        converted.descriptor.digest,
        Digest::sha256_of(want.as_bytes())
    );
    assert_eq!(converted.descriptor.media_type, media_type::OCI_MANIFEST);

    // Idempotent: converting the converted manifest with the same index gives the same bytes.
    let again = convert_manifest(&converted.bytes, Some(&soci)).unwrap();
    assert_eq!(again.bytes, converted.bytes);

    // Without an index only media types change.
    let plain = convert_manifest(docker_manifest().as_bytes(), None).unwrap();
    assert!(plain.manifest.annotations.is_empty());
    assert_eq!(plain.manifest.config.media_type, media_type::OCI_CONFIG);

    // The image index entry is updated in place: annotations replaced wholesale, platform kept.
    let mut entry = Descriptor::new(media_type::DOCKER_MANIFEST, digest('f'), 1)
        .with_platform(Platform::new("linux", "amd64", ""))
        .with_annotation("old", "dropped");
    converted.update_descriptor(&mut entry);
    assert_eq!(entry.media_type, media_type::OCI_MANIFEST);
    assert_eq!(entry.digest, converted.descriptor.digest);
    assert_eq!(entry.size, converted.descriptor.size);
    assert_eq!(entry.annotations, converted.manifest.annotations);
    assert_eq!(entry.platform, Some(Platform::new("linux", "amd64", "")));

    assert!(convert_manifest(b"{}", None).is_err());
}

#[test]
fn soci_index_descriptor_shape() {
    let index = Descriptor::new(media_type::OCI_MANIFEST, digest('1'), 500);
    let d = soci_index_descriptor(&index, Platform::new("linux", "arm64", "v8"), &digest('2'));
    assert_eq!(
        String::from_utf8(d.to_json()).unwrap(),
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":500,"annotations":{{"com.amazon.soci.image-manifest-digest":"{}"}},"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}},"artifactType":"application/vnd.amazon.soci.index.v2+json"}}"#,
            digest('1'),
            digest('2')
        )
    );
}

#[test]
fn upsert_is_idempotent_per_platform() {
    let amd = Platform::new("linux", "amd64", "");
    let arm = Platform::new("linux", "arm64", "v8");
    let image =
        Descriptor::new(media_type::OCI_MANIFEST, digest('a'), 1).with_platform(amd.clone());
    let mut index = ImageIndex::new(vec![image]);

    let d1 = soci_index_descriptor(
        &Descriptor::new(media_type::OCI_MANIFEST, digest('b'), 2),
        amd.clone(),
        &digest('a'),
    );
    assert_eq!(
        upsert_soci_index_descriptor(&mut index, d1.clone()),
        Placement::Appended(1)
    );
    let once = index.to_json();
    assert_eq!(
        upsert_soci_index_descriptor(&mut index, d1),
        Placement::Replaced(1)
    );
    assert_eq!(index.to_json(), once);

    // A strictly matching platform after normalization is replaced (x86_64 == amd64).
    let d2 = soci_index_descriptor(
        &Descriptor::new(media_type::OCI_MANIFEST, digest('c'), 3),
        Platform::new("linux", "x86_64", ""),
        &digest('a'),
    );
    assert_eq!(
        upsert_soci_index_descriptor(&mut index, d2),
        Placement::Replaced(1)
    );
    assert_eq!(index.manifests[1].digest, digest('c'));

    // Another platform is appended; a non-SOCI descriptor with the same platform is never replaced.
    let d3 = soci_index_descriptor(
        &Descriptor::new(media_type::OCI_MANIFEST, digest('d'), 4),
        arm,
        &digest('a'),
    );
    assert_eq!(
        upsert_soci_index_descriptor(&mut index, d3),
        Placement::Appended(2)
    );
    assert_eq!(index.manifests[0].digest, digest('a'));
    assert_eq!(index.manifests.len(), 3);
}

#[test]
fn convert_image_index_forces_oci_media_type() {
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        media_type::DOCKER_MANIFEST_LIST,
        media_type::DOCKER_MANIFEST,
        digest('1')
    );
    let index = convert_image_index(list.as_bytes()).unwrap();
    assert_eq!(index.media_type, media_type::OCI_INDEX);
    assert_eq!(index.manifests.len(), 1);

    let bad = list.replace(media_type::DOCKER_MANIFEST_LIST, media_type::OCI_MANIFEST);
    let err = convert_image_index(bad.as_bytes()).unwrap_err();
    assert!(matches!(err, Error::UnexpectedImageIndexMediaType { .. }));

    // Single-manifest targets start from a fresh index around the target descriptor.
    let target = Descriptor::new(media_type::DOCKER_MANIFEST, digest('2'), 5)
        .with_platform(Platform::host());
    let fresh = ImageIndex::new(vec![target.clone()]);
    assert_eq!(fresh.schema_version, 2);
    assert_eq!(fresh.manifests, vec![target]);
    let _ = Manifest::from_json(docker_manifest().as_bytes()).unwrap();
}
