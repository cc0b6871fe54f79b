//! Validated OCI content digests.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

use crate::error::{DigestError, Error, Result};

/// A digest algorithm accepted in descriptors (the ones registered by `go-digest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// `sha256`, 64 hex characters. The only one SOCI produces.
    Sha256,
    /// `sha384`, 96 hex characters.
    Sha384,
    /// `sha512`, 128 hex characters.
    Sha512,
}

impl Algorithm {
    /// The name used in digest strings, e.g. `sha256`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// Length of the hex-encoded part.
    #[must_use]
    pub fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha384 => 96,
            Self::Sha512 => 128,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Self::Sha256),
            "sha384" => Some(Self::Sha384),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated OCI digest: `<algorithm>:<lowercase hex>`, e.g. `sha256:44136f…`.
///
/// Parsing rejects unknown algorithms, uppercase hex and wrong lengths, like `go-digest`'s
/// `Validate`. Serializes as the plain string.
///
/// ```
/// use soci_index::Digest;
///
/// let d = Digest::sha256_of(b"{}");
/// assert_eq!(d.as_str(), "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
/// assert_eq!(d.referrers_tag(), "sha256-44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
/// assert!("sha256:ABC".parse::<Digest>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    value: Box<str>,
    algorithm: Algorithm,
}

impl Digest {
    /// Parses and validates a digest string.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidDigest`] if the string is not a valid digest.
    pub fn parse(value: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidDigest {
            value: value.to_owned(),
            reason,
        };
        let (alg, encoded) = value
            .split_once(':')
            .ok_or_else(|| invalid(DigestError::MissingSeparator))?;
        let algorithm = Algorithm::from_name(alg)
            .ok_or_else(|| invalid(DigestError::UnsupportedAlgorithm(alg.to_owned())))?;
        let hex_ok = encoded.len() == algorithm.hex_len()
            && encoded
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex_ok {
            return Err(invalid(DigestError::InvalidEncoded));
        }
        Ok(Self {
            value: value.into(),
            algorithm,
        })
    }

    /// The sha256 digest of `data`.
    #[must_use]
    pub fn sha256_of(data: &[u8]) -> Self {
        let hash = sha2::Sha256::digest(data);
        Self {
            value: format!("sha256:{}", hex::encode(hash)).into(),
            algorithm: Algorithm::Sha256,
        }
    }

    /// Whether `data` hashes to this digest.
    #[must_use]
    pub fn verifies(&self, data: &[u8]) -> bool {
        let computed = match self.algorithm {
            Algorithm::Sha256 => hex::encode(sha2::Sha256::digest(data)),
            Algorithm::Sha384 => hex::encode(sha2::Sha384::digest(data)),
            Algorithm::Sha512 => hex::encode(sha2::Sha512::digest(data)),
        };
        computed == self.encoded()
    }

    /// The full string, e.g. `sha256:…`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The algorithm.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part after the `:`.
    #[must_use]
    pub fn encoded(&self) -> &str {
        &self.value[self.algorithm.as_str().len() + 1..]
    }

    /// The tag of the referrers tag schema (OCI distribution spec, used as the fallback when a
    /// registry has no referrers API; spec §4.7, §4.9): `<alg>-<ref>` where `<ref>` is the encoded
    /// part limited to 64 characters.
    #[must_use]
    pub fn referrers_tag(&self) -> String {
        let encoded = self.encoded();
        format!("{}-{}", self.algorithm, &encoded[..encoded.len().min(64)])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.value)
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for Digest {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.value
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.value)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_reject() {
        let hex64 = "a".repeat(64);
        let d = Digest::parse(&format!("sha256:{hex64}")).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.encoded(), hex64);
        assert!(Digest::parse(&format!("sha512:{}", "0".repeat(128))).is_ok());
        assert!(Digest::parse(&format!("sha384:{}", "0".repeat(96))).is_ok());
        for bad in [
            String::new(),
            "sha256".to_owned(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("md5:{}", "a".repeat(32)),
            format!("SHA256:{hex64}"),
            format!("sha256:{hex64} "),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn referrers_tag_truncates_long_digests() {
        let d = Digest::parse(&format!("sha512:{}{}", "1".repeat(64), "2".repeat(64))).unwrap();
        assert_eq!(d.referrers_tag(), format!("sha512-{}", "1".repeat(64)));
    }

    #[test]
    fn verifies() {
        let d = Digest::sha256_of(b"abc");
        assert!(d.verifies(b"abc"));
        assert!(!d.verifies(b"abd"));
    }
}
