//! Property tests: Go-compatible encoding, round trips, prefetch rules, no panics on garbage.

use std::collections::BTreeMap;

use proptest::prelude::*;
use soci_index::{
    json, merge_span_ranges, normalize_prefetch_path, Descriptor, Digest, ImageIndex, Index,
    Manifest, Platform, PrefetchArtifact, PrefetchSpan,
};

/// Go's string encoding (HTML escaping on, Go ≥ 1.22), written independently of the crate's
/// formatter, character by character.
fn go_reference_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z<>&\"\\\\/\u{2028}\u{2029}\u{0}-\u{1f}\u{7f}é☃ .:+-]{0,12}",
    ]
}

fn digest() -> impl Strategy<Value = Digest> {
    "[0-9a-f]{64}".prop_map(|h| Digest::parse(&format!("sha256:{h}")).unwrap())
}

fn annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(text(), text(), 0..4)
}

fn platform() -> impl Strategy<Value = Platform> {
    (
        text(),
        text(),
        text(),
        prop::collection::vec(text(), 0..2),
        text(),
    )
        .prop_map(|(os, arch, osv, feats, var)| {
            let mut p = Platform::new(os, arch, var);
            p.os_version = osv;
            p.os_features = feats;
            p
        })
}

prop_compose! {
    fn descriptor()(
        media in text(),
        d in digest(),
        size in any::<u64>(),
        urls in prop::collection::vec(text(), 0..2),
        ann in annotations(),
        data in prop::collection::vec(any::<u8>(), 0..8),
        plat in prop::option::of(platform()),
        at in text(),
    ) -> Descriptor {
        let mut desc = Descriptor::new(media, d, size);
        desc.urls = urls;
        desc.annotations = ann;
        desc.data = data;
        desc.platform = plat;
        desc.artifact_type = at;
        desc
    }
}

proptest! {
    #[test]
    fn strings_encode_exactly_like_go(s in text()) {
        let ours = String::from_utf8(json::to_vec(&s).unwrap()).unwrap();
        prop_assert_eq!(&ours, &go_reference_string(&s));
        let back: String = serde_json::from_str(&ours).unwrap();
        prop_assert_eq!(back, s);
    }

    #[test]
    fn raw_bytes_encode_like_go(bytes in prop::collection::vec(any::<u8>(), 0..24)) {
        let ours = json::encode_go_string(&bytes);
        // Every invalid byte became \ufffd; the result is valid JSON for a valid string.
        let text = String::from_utf8(ours).unwrap();
        let back: String = serde_json::from_str(&text).unwrap();
        if let Ok(valid) = std::str::from_utf8(&bytes) {
            prop_assert_eq!(back, valid);
        } else {
            prop_assert!(back.contains(char::REPLACEMENT_CHARACTER));
        }
    }

    #[test]
    fn descriptors_round_trip(d in descriptor()) {
        let bytes = d.to_json();
        // Our output is ordinary JSON with the same value serde_json would produce.
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(parsed, serde_json::to_value(&d).unwrap());
        let back = Descriptor::from_json(&bytes).unwrap();
        prop_assert_eq!(&back, &d);
        prop_assert_eq!(back.to_json(), bytes);
    }

    #[test]
    fn indexes_round_trip(
        blobs in prop::collection::vec(descriptor(), 0..4),
        subject in descriptor(),
        v1 in any::<bool>(),
        tool in text(),
    ) {
        let index = if v1 { Index::new_v1(blobs, &subject, &tool) } else { Index::new_v2(blobs, &tool) };
        let bytes = index.to_json();
        let back = Index::from_json(&bytes).unwrap();
        prop_assert_eq!(&back, &index);
        prop_assert_eq!(back.to_json(), bytes.clone());
        let as_manifest = Manifest::from_json(&bytes).unwrap();
        prop_assert!(as_manifest.artifact_type.is_empty());
        prop_assert_eq!(as_manifest.to_json(), bytes);
    }

    #[test]
    fn image_indexes_round_trip(
        manifests in prop::collection::vec(descriptor(), 0..4),
        ann in annotations(),
        subject in prop::option::of(descriptor()),
        at in text(),
    ) {
        let mut index = ImageIndex::new(manifests);
        index.annotations = ann;
        index.subject = subject;
        index.artifact_type = at;
        let bytes = index.to_json();
        let back = ImageIndex::from_json(&bytes).unwrap();
        prop_assert_eq!(&back, &index);
        prop_assert_eq!(back.to_json(), bytes.clone());
        let pretty = json::indent(&bytes, "", "  ").unwrap();
        let a: serde_json::Value = serde_json::from_slice(&pretty).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn merged_ranges_are_sorted_disjoint_and_cover_the_same_spans(
        input in prop::collection::vec((0i32..60, 0i32..8), 0..12)
    ) {
        let ranges: Vec<PrefetchSpan> = input.iter().map(|&(s, l)| PrefetchSpan::new(s, s + l)).collect();
        let merged = merge_span_ranges(ranges.clone());
        for pair in merged.windows(2) {
            // Not overlapping and not adjacent.
            prop_assert!(pair[1].start_span > pair[0].end_span + 1);
        }
        let covered = |rs: &[PrefetchSpan]| {
            let mut v: Vec<i32> = rs.iter().flat_map(|r| r.start_span..=r.end_span).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        prop_assert_eq!(covered(&merged), covered(&ranges));
        prop_assert_eq!(merge_span_ranges(merged.clone()), merged);
    }

    #[test]
    fn normalized_paths_are_clean(path in "[a-z./]{0,16}") {
        let n = normalize_prefetch_path(&path);
        prop_assert!(!n.starts_with('/') && !n.ends_with('/') && !n.contains("//"));
        prop_assert!(n.split('/').all(|c| c != "." && c != ".."));
        prop_assert_eq!(normalize_prefetch_path(&n), n.clone());
        prop_assert_eq!(normalize_prefetch_path(&format!("/{path}")), n);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = Index::from_json(&bytes);
        let _ = Manifest::from_json(&bytes);
        let _ = ImageIndex::from_json(&bytes);
        let _ = PrefetchArtifact::from_json(&bytes);
        let _ = Descriptor::from_json(&bytes);
        let _ = json::indent(&bytes, "", " ");
    }

    #[test]
    fn mutated_indexes_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let subject = Descriptor::for_content(soci_index::media_type::OCI_MANIFEST, b"m");
        let mut bytes = Index::new_v1(vec![subject.clone()], &subject, "t").to_json();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let _ = Index::from_json(&bytes);
    }
}
