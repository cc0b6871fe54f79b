//! Against a real registry: Debian's `docker-registry` (distribution 2.8.2, no Referrers API), started
//! on a free loopback port with a throwaway config. Prints `SKIPPED: <reason>` if it cannot run here.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use soci_registry::{
    BlobFile, BlobPushOutcome, Client, Digest, PlainHttp, PushBlobOptions, Reference,
    ReferrersSource,
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const SOCI_V1: &str = "application/vnd.amazon.soci.index.v1+json";

fn client() -> Client {
    Client::builder()
        .plain_http(PlainHttp::Loopback)
        .retry_wait(Duration::from_millis(5), Duration::from_millis(50))
        .request_timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Pushes config + layer + image manifest; returns (manifest digest, manifest size, layer bytes, layer digest).
async fn push_image(c: &Client, r: &Reference) -> (Digest, usize, Vec<u8>, Digest) {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = common::pattern(3 << 20);
    let pc = c
        .push_blob(r, Bytes::from_static(config), &PushBlobOptions::new())
        .await
        .unwrap();
    let pl = c
        .push_blob(r, Bytes::from(layer.clone()), &PushBlobOptions::new())
        .await
        .unwrap();
    assert_eq!(pl.outcome, BlobPushOutcome::Uploaded);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": pc.digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": pl.digest.to_string(), "size": layer.len()}]
    }))
    .unwrap();
    let pm = c
        .push_manifest(r, OCI_MANIFEST, Bytes::from(manifest.clone()))
        .await
        .unwrap();
    assert_eq!(pm.digest, Digest::sha256_of(&manifest));
    assert!(!pm.oci_subject);
    assert_eq!(pm.referrers_index, None);
    (pm.digest, manifest.len(), layer, pl.digest)
}

fn soci_index(subject: &Digest, subject_size: usize, ztoc: &Digest, name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SOCI_V1,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": Digest::sha256_of(b"{}").to_string(), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": ztoc.to_string(), "size": 5}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": subject_size},
        "annotations": {"com.amazon.soci.build-tool-identifier": name}
    }))
    .unwrap()
}

#[tokio::test]
async fn distribution_2_8_end_to_end() {
    let reg = match common::start_distribution().await {
        Ok(r) => r,
        Err(reason) => {
            println!("SKIPPED: {reason}");
            return;
        }
    };
    let c = client();
    let r: Reference = format!("{}/demo/app:v1", reg.host).parse().unwrap();

    // -- push blob + manifest, then read them back
    let (mdigest, msize, layer, ldigest) = push_image(&c, &r).await;
    let m = c.get_manifest(&r).await.unwrap();
    assert_eq!(m.digest, mdigest);
    assert_eq!(m.media_type, OCI_MANIFEST);
    let by_digest = c.get_manifest(&r.to_digest(&mdigest)).await.unwrap();
    assert_eq!(by_digest.bytes, m.bytes);
    let head = c.head_manifest(&r).await.unwrap().unwrap();
    assert_eq!(head.digest, mdigest);
    assert_eq!(head.size, msize as u64);
    assert_eq!(head.media_type, OCI_MANIFEST);
    assert_eq!(
        c.head_manifest(&r.to_tag("nope").unwrap()).await.unwrap(),
        None
    );
    let full = c
        .get_blob(&r, &ldigest, Some(layer.len() as u64))
        .await
        .unwrap();
    assert_eq!(full.as_ref(), layer.as_slice());
    let mut streamed = Vec::new();
    c.copy_blob(&r, &ldigest, Some(layer.len() as u64), &mut streamed)
        .await
        .unwrap();
    assert_eq!(streamed, layer);

    // -- HEAD existence skip
    assert_eq!(
        c.blob_exists(&r, &ldigest).await.unwrap(),
        Some(layer.len() as u64)
    );
    let again = c
        .push_blob(&r, Bytes::from(layer.clone()), &PushBlobOptions::new())
        .await
        .unwrap();
    assert_eq!(again.outcome, BlobPushOutcome::AlreadyExists);

    // -- range reads match the blob
    let total = layer.len() as u64;
    for (off, len) in [
        (0u64, 1u64),
        (100, 1024),
        (1 << 20, 4 << 10),
        (total - 10, 10),
        (total - 10, 100), // runs past the end: short read
        (12_345, 2 << 20),
    ] {
        let got = c.read_range(&r, &ldigest, off, len).await.unwrap();
        let end = (off + len).min(total) as usize;
        assert_eq!(got.as_ref(), &layer[off as usize..end], "range {off}+{len}");
    }
    assert!(c.read_range(&r, &ldigest, total, 1).await.is_err());

    // -- cross-repository mount and chunked upload
    let other: Reference = format!("{}/demo/other:v1", reg.host).parse().unwrap();
    let mounted = c
        .push_blob(
            &other,
            Bytes::from(layer.clone()),
            &PushBlobOptions::new().mount_from(r.clone()),
        )
        .await
        .unwrap();
    assert_eq!(mounted.outcome, BlobPushOutcome::Mounted);
    let chunked_data = common::pattern(700_000);
    let chunked = c
        .push_blob(
            &other,
            Bytes::from(chunked_data.clone()),
            &PushBlobOptions::new().chunk_size(256 << 10),
        )
        .await
        .unwrap();
    assert_eq!(chunked.outcome, BlobPushOutcome::Uploaded);
    assert_eq!(
        c.get_blob(&other, &chunked.digest, Some(chunked_data.len() as u64))
            .await
            .unwrap()
            .as_ref(),
        chunked_data.as_slice()
    );

    // -- streamed uploads from a file (monolithic and chunked), read back streamed
    let dir = tempfile::tempdir().unwrap();
    for (i, opts) in [
        PushBlobOptions::new(),
        PushBlobOptions::new().chunk_size(300_000),
    ]
    .iter()
    .enumerate()
    {
        let data = common::pattern(1_000_000 + i);
        let path = dir.path().join(format!("blob-{i}"));
        std::fs::write(&path, &data).unwrap();
        let digest = Digest::sha256_of(&data);
        let pushed = c
            .push_blob_from(
                &other,
                &digest,
                data.len() as u64,
                Arc::new(BlobFile::new(&path)),
                opts,
            )
            .await
            .unwrap();
        assert_eq!(pushed.outcome, BlobPushOutcome::Uploaded);
        let mut out = Vec::new();
        let n = c
            .copy_blob(&other, &digest, Some(data.len() as u64), &mut out)
            .await
            .unwrap();
        assert_eq!((n, out), (data.len() as u64, data));
    }
    // A file whose content does not match the announced digest is refused by the registry.
    let wrong = Digest::sha256_of(b"something else");
    let path = dir.path().join("blob-0");
    let size = std::fs::metadata(&path).unwrap().len();
    let err = c
        .push_blob_from(
            &other,
            &wrong,
            size,
            Arc::new(BlobFile::new(&path)),
            &PushBlobOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err:?}");

    // -- referrers: no API on 2.8, so the tag schema is used
    let none = c.referrers(&r, &mdigest, Some(SOCI_V1)).await.unwrap();
    assert_eq!(none.source, ReferrersSource::TagSchema);
    assert!(none.descriptors.is_empty());

    // A foreign entry already in the tag index must survive our merges.
    let foreign_manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": Digest::sha256_of(b"{}").to_string(), "size": 2},
        "layers": []
    }))
    .unwrap();
    let empty = c
        .push_blob(&r, Bytes::from_static(b"{}"), &PushBlobOptions::new())
        .await
        .unwrap();
    let ztoc = c
        .push_blob(&r, Bytes::from_static(b"ztoc!"), &PushBlobOptions::new())
        .await
        .unwrap();
    let foreign_digest = c
        .push_manifest(
            &r.to_digest(&Digest::sha256_of(&foreign_manifest)),
            OCI_MANIFEST,
            Bytes::from(foreign_manifest.clone()),
        )
        .await
        .unwrap()
        .digest;
    let tag_ref = r.to_tag(&mdigest.referrers_tag()).unwrap();
    let seeded = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": foreign_digest.to_string(),
                       "size": foreign_manifest.len(), "artifactType": "application/vnd.example.sig",
                       "x-unknown-field": 42}]
    }))
    .unwrap();
    c.push_manifest(&tag_ref, OCI_INDEX, Bytes::from(seeded.clone()))
        .await
        .unwrap();
    assert_eq!(empty.digest, Digest::sha256_of(b"{}"));

    // Two SOCI indexes referring to the image: both end up in the tag index.
    let a = soci_index(&mdigest, msize, &ztoc.digest, "A");
    let b = soci_index(&mdigest, msize, &ztoc.digest, "B");
    let pa = c
        .push_manifest(
            &r.to_digest(&Digest::sha256_of(&a)),
            OCI_MANIFEST,
            Bytes::from(a.clone()),
        )
        .await
        .unwrap();
    assert!(!pa.oci_subject, "distribution 2.8 sends no OCI-Subject");
    let idx_a = pa.referrers_index.expect("tag index maintained");
    let pb = c
        .push_manifest(
            &r.to_digest(&Digest::sha256_of(&b)),
            OCI_MANIFEST,
            Bytes::from(b.clone()),
        )
        .await
        .unwrap();
    let idx_b = pb.referrers_index.expect("tag index maintained");
    assert_ne!(idx_a, idx_b);
    // Pushing A again does not duplicate it.
    let pa2 = c
        .push_manifest(
            &r.to_digest(&pa.digest),
            OCI_MANIFEST,
            Bytes::from(a.clone()),
        )
        .await
        .unwrap();
    assert_eq!(pa2.referrers_index, Some(idx_b.clone()));

    let index = c.get_manifest(&tag_ref).await.unwrap();
    assert_eq!(index.digest, idx_b);
    assert_eq!(index.media_type, OCI_INDEX);
    let doc: serde_json::Value = serde_json::from_slice(&index.bytes).unwrap();
    let entries = doc["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{doc}");
    assert_eq!(entries[0]["digest"], foreign_digest.to_string());
    assert_eq!(
        entries[0]["x-unknown-field"], 42,
        "foreign entry kept verbatim"
    );
    assert_eq!(entries[1]["digest"], pa.digest.to_string());
    assert_eq!(entries[1]["artifactType"], SOCI_V1);
    assert_eq!(entries[1]["size"], a.len());
    assert_eq!(
        entries[1]["annotations"]["com.amazon.soci.build-tool-identifier"],
        "A"
    );
    assert_eq!(entries[2]["digest"], pb.digest.to_string());

    // Discovery as the snapshotter does it (spec §4.7): filtered, first in order.
    let found = c.referrers(&r, &mdigest, Some(SOCI_V1)).await.unwrap();
    assert_eq!(found.source, ReferrersSource::TagSchema);
    let digests: Vec<&Digest> = found.descriptors.iter().map(|d| &d.digest).collect();
    assert_eq!(digests, [&pa.digest, &pb.digest]);
    let all = c.referrers(&r, &mdigest, None).await.unwrap();
    assert_eq!(all.descriptors.len(), 3);

    // The superseded indexes were deleted (GC on by default); the current one is intact.
    for old in [Digest::sha256_of(&seeded), idx_a] {
        let e = c.get_manifest(&r.to_digest(&old)).await.unwrap_err();
        assert!(e.is_not_found(), "{old}: {e:?}");
    }
    let fetched = c.get_manifest(&r.to_digest(&pb.digest)).await.unwrap();
    assert_eq!(fetched.bytes.as_ref(), b.as_slice());
}
