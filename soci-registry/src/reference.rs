//! Image references (`[registry/]repository[:tag][@digest]`), parsed by `oci-client`.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{Error, ReferenceParseError};

/// Host that serves the registry API for Docker Hub names (`docker.io`, `index.docker.io`), as in
/// SOCI spec §5.12 ("`docker.io` is mapped to `registry-1.docker.io`").
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// A parsed image reference.
///
/// Parsing and Docker Hub normalisation are done by `oci-client` (its `Reference`, which is
/// `oci_spec::distribution::Reference`): `ubuntu` becomes `docker.io/library/ubuntu:latest`, a first
/// component without `.` or `:` that is not `localhost` is a Docker Hub namespace, and a reference with
/// neither tag nor digest gets the tag `latest`. The API host for Docker Hub names is
/// `registry-1.docker.io` (see [`Reference::api_host`]).
///
/// Operations that address a repository rather than one manifest (blobs, referrers) use only the
/// registry and repository parts and ignore the tag and digest.
///
/// ```
/// use soci_registry::Reference;
/// let r: Reference = "ubuntu".parse().unwrap();
/// assert_eq!(r.registry(), "docker.io");
/// assert_eq!(r.api_host(), "registry-1.docker.io");
/// assert_eq!(r.repository(), "library/ubuntu");
/// assert_eq!(r.tag(), Some("latest"));
/// assert_eq!(r.to_string(), "docker.io/library/ubuntu:latest");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    inner: oci_client::Reference,
    digest: Option<Digest>,
}

impl Reference {
    /// Reference to `repository` on `registry` with `tag`.
    pub fn with_tag(registry: &str, repository: &str, tag: &str) -> Result<Reference, Error> {
        validate_tag(tag)?;
        format!("{registry}/{repository}:{tag}").parse()
    }

    /// Reference to `repository` on `registry` at `digest`.
    pub fn with_digest(
        registry: &str,
        repository: &str,
        digest: &Digest,
    ) -> Result<Reference, Error> {
        format!("{registry}/{repository}@{digest}").parse()
    }

    /// The registry as written after normalisation (`docker.io` for Docker Hub names).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The `host[:port]` that serves the distribution API for this reference.
    pub fn api_host(&self) -> &str {
        match self.inner.registry() {
            "docker.io" | "index.docker.io" => DOCKER_HUB_API_HOST,
            other => other,
        }
    }

    /// The repository path (`library/ubuntu`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Same repository, addressed by `digest` (the tag is dropped).
    pub fn to_digest(&self, digest: &Digest) -> Reference {
        Reference {
            inner: oci_client::Reference::with_digest(
                self.inner.registry().to_owned(),
                self.inner.repository().to_owned(),
                digest.to_string(),
            ),
            digest: Some(digest.clone()),
        }
    }

    /// Same repository, addressed by `tag` (the digest is dropped).
    pub fn to_tag(&self, tag: &str) -> Result<Reference, Error> {
        validate_tag(tag)?;
        Ok(Reference {
            inner: oci_client::Reference::with_tag(
                self.inner.registry().to_owned(),
                self.inner.repository().to_owned(),
                tag.to_owned(),
            ),
            digest: None,
        })
    }

    /// The path component after `/v2/<name>/manifests/`: the digest if present, else the tag.
    pub(crate) fn manifest_ref(&self) -> String {
        match (&self.digest, self.inner.tag()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_owned(),
            // The parser always sets a tag or a digest ("latest" by default).
            (None, None) => "latest".to_owned(),
        }
    }
}

/// Tag grammar from the OCI distribution spec: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
fn validate_tag(tag: &str) -> Result<(), Error> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidTag {
            tag: tag.to_owned(),
        })
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let inner = oci_client::Reference::try_from(s).map_err(|e| Error::InvalidReference {
            reference: s.to_owned(),
            source: ReferenceParseError(Box::new(e)),
        })?;
        // Our Digest type is stricter (sha256/sha512 only); reject here rather than on first use.
        let digest = inner.digest().map(str::parse::<Digest>).transpose()?;
        Ok(Reference { inner, digest })
    }
}

impl TryFrom<&str> for Reference {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.whole())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({})", self.inner.whole())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn docker_hub_names_are_normalised() {
        let r: Reference = "ubuntu".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/ubuntu:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r: Reference = "index.docker.io/foo/bar:1".parse().unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "foo/bar");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r: Reference = "bitnami/redis:7".parse().unwrap();
        assert_eq!(r.repository(), "bitnami/redis");
        assert_eq!(r.manifest_ref(), "7");
    }

    #[test]
    fn hosts_ports_and_digests() {
        let r: Reference = format!("127.0.0.1:5000/demo/busybox@{D}").parse().unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.api_host(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "demo/busybox");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().map(Digest::as_str), Some(D));
        assert_eq!(r.manifest_ref(), D);
        let r: Reference = "localhost/x:v1".parse().unwrap();
        assert_eq!(r.registry(), "localhost");
        let t = r.to_tag("sha256-abc").unwrap();
        assert_eq!(t.to_string(), "localhost/x:sha256-abc");
        let d = t.to_digest(&D.parse().unwrap());
        assert_eq!(d.manifest_ref(), D);
        assert_eq!(d.tag(), None);
    }

    #[test]
    fn rejects_bad_input() {
        assert!("".parse::<Reference>().is_err());
        assert!("a//b".parse::<Reference>().is_err());
        assert!("x:".parse::<Reference>().is_err());
        assert!("x@sha256:abc".parse::<Reference>().is_err());
        assert!("x@sha384:".to_string().parse::<Reference>().is_err());
        let r: Reference = "x".parse().unwrap();
        assert!(r.to_tag("-bad").is_err());
        assert!(r.to_tag("").is_err());
        assert!(r.to_tag(&"a".repeat(129)).is_err());
    }
}
