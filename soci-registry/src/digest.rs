//! Validated content digests (`<algorithm>:<lowercase hex>`).

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use crate::error::Error;

/// Supported digest algorithms (OCI image spec, "Digests": sha256 is required, sha512 optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated OCI content digest such as `sha256:44136fa3…`.
///
/// Only `sha256` and `sha512` with lowercase hex of the right length are accepted, so a `Digest` can be
/// put into a URL path or a tag without further escaping.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    /// The full `<algorithm>:<hex>` string.
    value: String,
}

impl Digest {
    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        let hex = hex::encode(sha2::Sha256::digest(data));
        Digest {
            algorithm: Algorithm::Sha256,
            value: format!("sha256:{hex}"),
        }
    }

    /// The algorithm part (`sha256` or `sha512`).
    pub fn algorithm(&self) -> &str {
        self.algorithm.name()
    }

    /// The hex part after the colon.
    pub fn encoded(&self) -> &str {
        &self.value[self.algorithm.name().len() + 1..]
    }

    /// The full `<algorithm>:<hex>` string.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The tag under which the OCI referrers tag schema stores the referrers of this digest:
    /// `<algorithm>-<hex>` (distribution spec, "Referrers Tag Schema"; SOCI spec §4.7).
    pub fn referrers_tag(&self) -> String {
        format!("{}-{}", self.algorithm(), self.encoded())
    }

    /// A hasher of the same algorithm, to verify content against this digest.
    pub(crate) fn hasher(&self) -> Hasher {
        match self.algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Digest of `data` with the same algorithm as `self`.
    pub(crate) fn same_algorithm_of(&self, data: &[u8]) -> Digest {
        let mut h = self.hasher();
        h.update(data);
        h.finish()
    }
}

/// Incremental hasher producing a [`Digest`].
#[derive(Clone)]
pub(crate) enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hasher::Sha256(_) => f.write_str("Hasher(sha256)"),
            Hasher::Sha512(_) => f.write_str("Hasher(sha512)"),
        }
    }
}

impl Hasher {
    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub(crate) fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest {
            algorithm,
            value: format!("{}:{hex}", algorithm.name()),
        }
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || Error::InvalidDigest {
            digest: s.to_owned(),
        };
        let (alg, hex) = s.split_once(':').ok_or_else(invalid)?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(invalid()),
        };
        if hex.len() != algorithm.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid());
        }
        Ok(Digest {
            algorithm,
            value: s.to_owned(),
        })
    }
}

impl TryFrom<&str> for Digest {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
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

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.value)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_CONFIG: &str =
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn sha256_of_empty_config_matches_spec_constant() {
        // SOCI spec §4.1: the empty config `{}` has this digest.
        assert_eq!(Digest::sha256_of(b"{}").as_str(), EMPTY_CONFIG);
    }

    #[test]
    fn parse_accepts_valid_and_rejects_invalid() {
        let d: Digest = EMPTY_CONFIG.parse().unwrap();
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.encoded().len(), 64);
        assert_eq!(
            d.referrers_tag(),
            "sha256-44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            "md5:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "sha256:44136FA355B3678A1146AD16F7E8649E94FB4FC21FE77E8310C060F61CAAFF8A",
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8/",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} accepted");
        }
        let s512 = format!("sha512:{}", "a".repeat(128));
        assert_eq!(s512.parse::<Digest>().unwrap().algorithm(), "sha512");
    }

    #[test]
    fn hasher_matches_one_shot_and_serde_round_trips() {
        let d = Digest::sha256_of(b"hello");
        let mut h = d.hasher();
        h.update(b"he");
        h.update(b"llo");
        assert_eq!(h.finish(), d);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }
}
