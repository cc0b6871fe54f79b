//! Against a registry with the native Referrers API: the project's stdlib test registry
//! (`scripts/referrers-registry.py`, one referrer per page). Prints `SKIPPED: <reason>` if it cannot run.

mod common;

use bytes::Bytes;
use serde_json::json;
use soci_registry::{Client, Digest, PlainHttp, PushBlobOptions, Reference, ReferrersSource};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const SOCI_V1: &str = "application/vnd.amazon.soci.index.v1+json";

#[tokio::test]
async fn native_referrers_api_with_pagination() {
    let reg = match common::start_referrers_registry().await {
        Ok(r) => r,
        Err(reason) => {
            println!("SKIPPED: {reason}");
            return;
        }
    };
    let c = Client::builder()
        .plain_http(PlainHttp::Loopback)
        .build()
        .unwrap();
    let r: Reference = format!("{}/demo/app:v1", reg.host).parse().unwrap();

    let empty = c
        .push_blob(&r, Bytes::from_static(b"{}"), &PushBlobOptions::new())
        .await
        .unwrap();
    let image = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": empty.digest.to_string(), "size": 2},
        "layers": []
    }))
    .unwrap();
    let subject = c
        .push_manifest(&r, OCI_MANIFEST, Bytes::from(image.clone()))
        .await
        .unwrap()
        .digest;

    let artifact = |t: &str, name: &str| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": t,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                       "digest": empty.digest.to_string(), "size": 2},
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": image.len()},
            "annotations": {"name": name}
        }))
        .unwrap()
    };
    let mut pushed = Vec::new();
    for (t, name) in [
        (SOCI_V1, "a"),
        ("application/vnd.example.sig", "b"),
        (SOCI_V1, "c"),
    ] {
        let bytes = artifact(t, name);
        let p = c
            .push_manifest(
                &r.to_digest(&Digest::sha256_of(&bytes)),
                OCI_MANIFEST,
                Bytes::from(bytes),
            )
            .await
            .unwrap();
        assert!(p.oci_subject, "the registry indexes referrers itself");
        assert_eq!(p.referrers_index, None, "no tag index written");
        pushed.push(p.digest);
    }
    let tag = r.to_tag(&subject.referrers_tag()).unwrap();
    assert!(c.head_manifest(&tag).await.unwrap().is_none());

    let soci = c.referrers(&r, &subject, Some(SOCI_V1)).await.unwrap();
    assert_eq!(soci.source, ReferrersSource::Api);
    let names: Vec<&str> = soci
        .descriptors
        .iter()
        .map(|d| d.annotations["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "c"], "both pages, in push order");
    assert_eq!(soci.descriptors[0].digest, pushed[0]);
    assert_eq!(soci.descriptors[0].artifact_type.as_deref(), Some(SOCI_V1));

    let all = c.referrers(&r, &subject, None).await.unwrap();
    assert_eq!(all.descriptors.len(), 3);
    let none = c
        .referrers(&r, &Digest::sha256_of(b"unknown"), Some(SOCI_V1))
        .await
        .unwrap();
    assert_eq!(none.source, ReferrersSource::Api);
    assert!(none.descriptors.is_empty());
}
