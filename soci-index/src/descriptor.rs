//! OCI content descriptors and platforms.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// An OCI content descriptor.
///
/// Serializes like Go's `ocispec.Descriptor`: keys `mediaType`, `digest`, `size`, then `urls`,
/// `annotations`, `data`, `platform`, `artifactType`, each of the last five omitted when empty.
/// Decoding treats `null` like an absent field, as Go does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Descriptor {
    /// Media type of the referenced content. Always written, even when empty.
    #[serde(default, deserialize_with = "null_default")]
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes of the referenced content.
    #[serde(default, deserialize_with = "null_default")]
    pub size: u64,
    /// Alternative download locations.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub urls: Vec<String>,
    /// Arbitrary metadata; keys are written sorted.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// Embedded content, written as standard base64 with padding.
    #[serde(default, with = "base64_bytes", skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<u8>,
    /// Platform of the referenced manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Artifact type of the referenced manifest.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub artifact_type: String,
}

impl Descriptor {
    /// A descriptor with only `mediaType`, `digest` and `size` set.
    #[must_use]
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.into(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            data: Vec::new(),
            platform: None,
            artifact_type: String::new(),
        }
    }

    /// A descriptor for `content`: its sha256 digest and length.
    #[must_use]
    pub fn for_content(media_type: impl Into<String>, content: &[u8]) -> Self {
        Self::new(media_type, Digest::sha256_of(content), content.len() as u64)
    }

    /// Adds (or replaces) one annotation.
    #[must_use]
    pub fn with_annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Sets the platform.
    #[must_use]
    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = Some(platform);
        self
    }

    /// Sets the artifact type.
    #[must_use]
    pub fn with_artifact_type(mut self, artifact_type: impl Into<String>) -> Self {
        self.artifact_type = artifact_type.into();
        self
    }

    /// A copy with only `mediaType`, `digest` and `size`, as used for a v1 `subject`.
    #[must_use]
    pub fn to_plain(&self) -> Self {
        Self::new(self.media_type.clone(), self.digest.clone(), self.size)
    }

    /// The value of annotation `key`, if present.
    #[must_use]
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    /// Go `encoding/json` bytes of this descriptor.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        crate::json::to_vec(self)
            .expect("invariant: descriptors always serialize (string keys, no floats)")
    }

    /// Decodes a descriptor from JSON.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] if the bytes are not a descriptor.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        crate::json::from_slice_named(bytes, "descriptor")
    }
}

/// The platform a manifest runs on.
///
/// Serializes like Go's `ocispec.Platform`: `architecture`, `os`, then `os.version`,
/// `os.features`, `variant` when non-empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Platform {
    /// CPU architecture, e.g. `amd64`.
    #[serde(default, deserialize_with = "null_default")]
    pub architecture: String,
    /// Operating system, e.g. `linux`.
    #[serde(default, deserialize_with = "null_default")]
    pub os: String,
    /// Operating system version (Windows).
    #[serde(
        rename = "os.version",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    /// Required OS features.
    #[serde(
        rename = "os.features",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub os_features: Vec<String>,
    /// CPU variant, e.g. `v8`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub variant: String,
}

impl Platform {
    /// A platform with os, architecture and variant (empty for none).
    #[must_use]
    pub fn new(
        os: impl Into<String>,
        architecture: impl Into<String>,
        variant: impl Into<String>,
    ) -> Self {
        Self {
            architecture: architecture.into(),
            os: os.into(),
            os_version: String::new(),
            os_features: Vec::new(),
            variant: variant.into(),
        }
    }

    /// The platform of the running process, normalized (os `linux`, architecture from the
    /// compiler target).
    #[must_use]
    pub fn host() -> Self {
        Self::new(std::env::consts::OS, std::env::consts::ARCH, "").normalized()
    }

    /// Normalizes names the way containerd's `platforms.Normalize` does: lowercase os
    /// (`macos` ⇒ `darwin`), `x86_64`/`x86-64` ⇒ `amd64`, `aarch64` ⇒ `arm64` (variant `8`, `v8`,
    /// `v8.0` dropped), `i386` ⇒ `386`, `armhf` ⇒ `arm/v7`, `armel` ⇒ `arm/v6`, `arm` variant
    /// `7`/none ⇒ `v7`, `5`/`6`/`8` ⇒ `v5`/`v6`/`v8`, amd64 variant `v1` dropped.
    #[must_use]
    pub fn normalized(&self) -> Self {
        let mut p = self.clone();
        p.os = p.os.to_lowercase();
        if p.os == "macos" {
            p.os = "darwin".to_owned();
        }
        let arch = p.architecture.to_lowercase();
        let (arch, variant) = match arch.as_str() {
            "i386" => ("386".to_owned(), String::new()),
            "x86_64" | "x86-64" | "amd64" => {
                let v = if p.variant == "v1" {
                    String::new()
                } else {
                    p.variant.clone()
                };
                ("amd64".to_owned(), v)
            }
            "aarch64" | "arm64" => {
                let v = match p.variant.as_str() {
                    "8" | "v8" | "v8.0" => String::new(),
                    other => other.to_owned(),
                };
                ("arm64".to_owned(), v)
            }
            "armhf" => ("arm".to_owned(), "v7".to_owned()),
            "armel" => ("arm".to_owned(), "v6".to_owned()),
            "arm" => {
                let v = match p.variant.as_str() {
                    "" | "7" => "v7".to_owned(),
                    "5" | "6" | "8" => format!("v{}", p.variant),
                    other => other.to_owned(),
                };
                ("arm".to_owned(), v)
            }
            _ => (arch, p.variant.clone()),
        };
        p.architecture = arch;
        p.variant = variant;
        p
    }

    /// Strict match (containerd `platforms.OnlyStrict`): equal os, architecture and variant after
    /// normalization of both sides.
    #[must_use]
    pub fn matches_strict(&self, other: &Platform) -> bool {
        let a = self.normalized();
        let b = other.normalized();
        a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
    }
}

/// `os/architecture[/variant]`, the form recorded in the artifacts DB (spec §4.10).
impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// Parses `os/architecture[/variant]` and normalizes it. Single-component forms (containerd also
/// accepts `linux` or `arm64` alone) are rejected; callers resolve those against the host.
impl FromStr for Platform {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::InvalidPlatform {
            value: s.to_owned(),
        };
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(invalid());
        }
        match parts.as_slice() {
            [os, arch] => Ok(Self::new(*os, *arch, "").normalized()),
            [os, arch, variant] => Ok(Self::new(*os, *arch, *variant).normalized()),
            _ => Err(invalid()),
        }
    }
}

/// Deserializes `null` (or an absent field, with `#[serde(default)]`) as the default value, like
/// Go leaves the zero value in place.
pub(crate) fn null_default<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Go's `[]byte` JSON encoding: standard base64 with padding.
pub(crate) mod base64_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub(crate) fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// Decodes like Go's `base64.StdEncoding.Decode`: `\r` and `\n` are ignored, padding is
    /// required, unused trailing bits are not checked.
    pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
        let symbols: Vec<u8> = text.bytes().filter(|&b| b != b'\r' && b != b'\n').collect();
        if symbols.len() % 4 != 0 {
            return None;
        }
        let value = |c: u8| ALPHABET.iter().position(|&a| a == c).map(|p| p as u32);
        let mut out = Vec::with_capacity(symbols.len() / 4 * 3);
        let quanta = symbols.len() / 4;
        for (q, quad) in symbols.chunks(4).enumerate() {
            let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 || (pad > 0 && q + 1 != quanta) {
                return None;
            }
            let mut n = 0u32;
            for &c in &quad[..4 - pad] {
                n = (n << 6) | value(c)?;
            }
            n <<= 6 * pad as u32;
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&bytes[..3 - pad]);
        }
        Some(out)
    }

    pub(crate) fn serialize<S: Serializer>(data: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&encode(data))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        match Option::<std::borrow::Cow<'de, str>>::deserialize(deserializer)? {
            None => Ok(Vec::new()),
            Some(text) => {
                decode(&text).ok_or_else(|| serde::de::Error::custom("illegal base64 data"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_go_std_encoding() {
        for (raw, text) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"\xff\xfe\x00", "//4A"),
        ] {
            assert_eq!(base64_bytes::encode(raw), text);
            assert_eq!(base64_bytes::decode(text).unwrap(), raw);
        }
        assert_eq!(base64_bytes::decode("Zm9v\r\nYg==").unwrap(), b"foob");
        for bad in ["Zg", "Zg=", "Z===", "Zg==Zg==", "Zm9*", "=Zm9"] {
            assert!(base64_bytes::decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn platform_normalization() {
        let p: Platform = "linux/aarch64/v8".parse().unwrap();
        assert_eq!(p, Platform::new("linux", "arm64", ""));
        assert_eq!(p.to_string(), "linux/arm64");
        assert!(Platform::new("Linux", "x86_64", "")
            .matches_strict(&Platform::new("linux", "amd64", "")));
        assert!(
            Platform::new("linux", "arm", "").matches_strict(&Platform::new("linux", "armhf", ""))
        );
        assert!(!Platform::new("linux", "arm", "v6")
            .matches_strict(&Platform::new("linux", "arm", "v7")));
        assert!(!Platform::new("linux", "amd64", "")
            .matches_strict(&Platform::new("windows", "amd64", "")));
        for bad in ["linux", "linux//v7", "a/b/c/d", ""] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }
}
