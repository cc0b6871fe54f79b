//! Prefetch artifacts (spec §4.4, experimental).

use serde::{Deserialize, Serialize};

use crate::consts::{annotation, media_type, PREFETCH_ARTIFACT_VERSION};
use crate::descriptor::{null_default, Descriptor};
use crate::digest::Digest;
use crate::error::{Error, Result};

/// An inclusive range of span ids to fetch eagerly.
///
/// Serializes as `{"start_span":…,"end_span":…}` plus `"priority"` when non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PrefetchSpan {
    /// First span id (Go `int32`).
    #[serde(default, deserialize_with = "null_default")]
    pub start_span: i32,
    /// Last span id, inclusive (Go `int32`).
    #[serde(default, deserialize_with = "null_default")]
    pub end_span: i32,
    /// Reserved; lower is more important. Omitted when 0.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero"
    )]
    pub priority: i64,
}

impl PrefetchSpan {
    /// A range with priority 0.
    #[must_use]
    pub fn new(start_span: i32, end_span: i32) -> Self {
        Self {
            start_span,
            end_span,
            priority: 0,
        }
    }

    /// Number of spans covered (0 for an inverted range).
    #[must_use]
    pub fn len(&self) -> u64 {
        if self.end_span < self.start_span {
            0
        } else {
            (i64::from(self.end_span) - i64::from(self.start_span) + 1) as u64
        }
    }

    /// Whether the range covers no span.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The content of a prefetch artifact blob: `{"version":"1.0","prefetch_spans":[…]}`.
///
/// ```
/// use soci_index::{PrefetchArtifact, PrefetchSpan};
///
/// let a = PrefetchArtifact::new(vec![PrefetchSpan::new(3, 5)]);
/// assert_eq!(a.to_json(), br#"{"version":"1.0","prefetch_spans":[{"start_span":3,"end_span":5}]}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchArtifact {
    /// Always `1.0`.
    #[serde(default, deserialize_with = "null_default")]
    pub version: String,
    /// The span ranges.
    #[serde(default, deserialize_with = "null_default")]
    pub prefetch_spans: Vec<PrefetchSpan>,
}

impl PrefetchArtifact {
    /// A version `1.0` artifact.
    #[must_use]
    pub fn new(prefetch_spans: Vec<PrefetchSpan>) -> Self {
        Self {
            version: PREFETCH_ARTIFACT_VERSION.to_owned(),
            prefetch_spans,
        }
    }

    /// Decodes and validates an artifact.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] for malformed JSON, then the errors of [`PrefetchArtifact::validate`].
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let artifact: Self = crate::json::from_slice_named(bytes, "prefetch artifact")?;
        artifact.validate()?;
        Ok(artifact)
    }

    /// Checks what readers check.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedPrefetchVersion`] if the version is not `1.0`,
    /// [`Error::EmptyPrefetchArtifact`] if there are no spans.
    pub fn validate(&self) -> Result<()> {
        if self.version != PREFETCH_ARTIFACT_VERSION {
            return Err(Error::UnsupportedPrefetchVersion {
                version: self.version.clone(),
            });
        }
        if self.prefetch_spans.is_empty() {
            return Err(Error::EmptyPrefetchArtifact);
        }
        Ok(())
    }

    /// Go `encoding/json` bytes.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        crate::json::to_vec(self).expect("invariant: prefetch artifacts always serialize")
    }

    /// Total number of spans covered (what `soci prefetch list` shows).
    #[must_use]
    pub fn total_spans(&self) -> u64 {
        self.prefetch_spans.iter().map(PrefetchSpan::len).sum()
    }

    /// The descriptor of this artifact's bytes in a SOCI index: prefetch media type and the
    /// `com.amazon.soci.image-layer-digest` annotation.
    #[must_use]
    pub fn descriptor(&self, layer: &Digest) -> Descriptor {
        Descriptor::for_content(media_type::PREFETCH, &self.to_json())
            .with_annotation(annotation::IMAGE_LAYER_DIGEST, layer.as_str())
    }
}

impl TryFrom<&[u8]> for PrefetchArtifact {
    type Error = Error;

    fn try_from(bytes: &[u8]) -> Result<Self> {
        Self::from_json(bytes)
    }
}

/// Normalizes a requested prefetch path: `clean("/" + path)` without the leading `/`
/// (spec §4.4 step 1), so `/etc/x`, `etc/x`, `etc//x/` and `./etc/../etc/x` are all `etc/x`.
#[must_use]
pub fn normalize_prefetch_path(path: &str) -> String {
    // Go's path.Clean on a rooted path: drop empty and `.` elements, let `..` remove the previous
    // element (and vanish at the root).
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The span range of a file: `start = span_of(offset)`, `end = span_of(offset + size)`, and
/// `end = start` if that came out smaller (spec §4.4 step 3). Note the end is computed from the
/// first byte *after* the file, as in Go.
///
/// Span ids beyond `i32::MAX` (impossible for real layers) saturate.
#[must_use]
pub fn file_span_range(offset: u64, size: u64, span_of: impl Fn(u64) -> u32) -> PrefetchSpan {
    let id = |o: u64| i32::try_from(span_of(o)).unwrap_or(i32::MAX);
    let start = id(offset);
    let end = id(offset.saturating_add(size)).max(start);
    PrefetchSpan::new(start, end)
}

/// Sorts ranges by (start, end) and merges those that overlap **or are adjacent**
/// (`next.start <= cur.end + 1`, spec §4.4 step 5). Priorities of merged ranges are dropped to 0
/// (the builder never sets them).
#[must_use]
pub fn merge_span_ranges(mut ranges: Vec<PrefetchSpan>) -> Vec<PrefetchSpan> {
    ranges.sort_by_key(|r| (r.start_span, r.end_span));
    let mut merged: Vec<PrefetchSpan> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(cur) if i64::from(r.start_span) <= i64::from(cur.end_span) + 1 => {
                cur.end_span = cur.end_span.max(r.end_span);
                cur.priority = 0;
            }
            _ => merged.push(PrefetchSpan::new(r.start_span, r.end_span)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize() {
        for (input, want) in [
            ("/etc/x", "etc/x"),
            ("etc/x", "etc/x"),
            ("etc//x/", "etc/x"),
            ("./etc/../etc/x", "etc/x"),
            ("../../a", "a"),
            ("/", ""),
            ("", ""),
        ] {
            assert_eq!(normalize_prefetch_path(input), want, "{input}");
        }
    }

    #[test]
    fn merge() {
        let r = |a, b| PrefetchSpan::new(a, b);
        assert_eq!(
            merge_span_ranges(vec![r(9, 9), r(3, 4), r(5, 5), r(4, 4)]),
            vec![r(3, 5), r(9, 9)]
        );
        assert_eq!(merge_span_ranges(vec![r(0, 10), r(2, 3)]), vec![r(0, 10)]);
        assert_eq!(
            merge_span_ranges(vec![r(0, 1), r(3, 4)]),
            vec![r(0, 1), r(3, 4)]
        );
        assert_eq!(merge_span_ranges(vec![]), vec![]);
    }

    #[test]
    fn file_range() {
        let span_of = |off: u64| (off / 10) as u32;
        assert_eq!(file_span_range(5, 3, span_of), PrefetchSpan::new(0, 0));
        assert_eq!(file_span_range(5, 5, span_of), PrefetchSpan::new(0, 1));
        assert_eq!(file_span_range(25, 0, span_of), PrefetchSpan::new(2, 2));
        assert_eq!(
            file_span_range(25, 5, |o| if o == 25 { 3 } else { 1 }),
            PrefetchSpan::new(3, 3)
        );
    }
}
