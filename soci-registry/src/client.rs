//! The registry client: manifests, blobs, ranged reads, pushes and referrers.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, ACCEPT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    LOCATION, RANGE,
};
use reqwest::{Method, Response, StatusCode, Url};
use serde::Deserialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};

use crate::config::{ClientBuilder, Config};
use crate::digest::Digest;
use crate::error::{Error, ReferenceParseError, Result};
use crate::reference::Reference;
use crate::source::{BlobSource, Payload};
use crate::transport::{
    read_limited, redact_url, retryable_error, transport_error, Attempts, Origin, ReadError, Req,
    Scope, Transport,
};
use crate::types::{
    BlobPushOutcome, Descriptor, Manifest, PushBlobOptions, PushedBlob, PushedManifest, Referrers,
    ReferrersSource,
};

/// Manifests larger than this are refused (the distribution spec lets registries cap them at 4 MiB).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Merge rounds when maintaining the referrers tag index under concurrent writers.
const REFERRERS_TAG_ROUNDS: u32 = 3;
/// Upper bound on referrers pages followed through `Link`.
const MAX_REFERRERS_PAGES: usize = 1000;

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
const OCI_SUBJECT: &str = "oci-subject";
const OCI_FILTERS_APPLIED: &str = "oci-filters-applied";

/// `Accept` for manifest requests: OCI and Docker schema 2 manifests and indexes.
fn manifest_accept() -> HeaderValue {
    HeaderValue::from_static(concat!(
        "application/vnd.oci.image.manifest.v1+json, ",
        "application/vnd.oci.image.index.v1+json, ",
        "application/vnd.docker.distribution.manifest.v2+json, ",
        "application/vnd.docker.distribution.manifest.list.v2+json"
    ))
}

/// An async OCI distribution client. Cheap to clone (shared connection pool, credential and token
/// caches). Every method is cancellation-safe: dropping its future aborts the request and leaves no
/// shared state half-updated.
#[derive(Clone, Debug)]
pub struct Client {
    t: Arc<Transport>,
}

impl Client {
    /// A client with default settings (anonymous, HTTPS). See [`ClientBuilder`].
    pub fn new() -> Result<Client> {
        ClientBuilder::new().build()
    }

    /// A builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    pub(crate) fn from_config(cfg: Config) -> Result<Client> {
        Ok(Client {
            t: Transport::new(cfg)?,
        })
    }

    /// `host[:port]` the API requests of `r` go to: the configured endpoint's, else `r`'s registry.
    fn api_authority<'a>(&'a self, r: &'a Reference) -> &'a str {
        match &self.t.cfg.endpoint {
            Some(e) => e.host(),
            None => r.api_host(),
        }
    }

    fn origin_url(&self, r: &Reference) -> Result<Url> {
        let s = match &self.t.cfg.endpoint {
            Some(e) => format!("{}/", e.base_url()),
            None => {
                let host = r.api_host();
                format!("{}://{host}/v2/", self.t.scheme_for(host))
            }
        };
        Url::parse(&s).map_err(|e| Error::InvalidReference {
            reference: r.to_string(),
            source: ReferenceParseError(Box::new(e)),
        })
    }

    /// A request for `/v2/<repo>/<suffix>`.
    fn req(&self, method: Method, r: &Reference, suffix: &str, scope: Scope) -> Result<Req> {
        let base = self.origin_url(r)?;
        let url = base
            .join(&format!("{}/{suffix}", r.repository()))
            .map_err(|e| Error::InvalidReference {
                reference: r.to_string(),
                source: ReferenceParseError(Box::new(e)),
            })?;
        Ok(self.req_at(method, r, url, scope))
    }

    /// A request to an absolute URL (upload location, next page) authorised for `r`'s registry.
    fn req_at(&self, method: Method, r: &Reference, url: Url, scope: Scope) -> Req {
        let origin = self
            .origin_url(r)
            .map(|u| Origin::of(&u))
            .unwrap_or_else(|_| Origin::of(&url));
        Req {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            registry: self.api_authority(r).to_ascii_lowercase(),
            auth_origin: origin,
            scope,
        }
    }

    /// Sends `req` and reads the whole body (≤ `limit`), retrying resets mid-body within the same budget.
    async fn fetch(&self, req: &Req, limit: u64) -> Result<(HeaderMap, Url, Bytes)> {
        let mut attempts = Attempts::new(&self.t.cfg);
        loop {
            let resp = self.t.send(req, &mut attempts).await?;
            if !resp.status().is_success() {
                return Err(Transport::status_error(req, resp, &attempts).await);
            }
            let headers = resp.headers().clone();
            let url = resp.url().clone();
            match read_limited(resp, limit).await {
                Ok(b) => return Ok((headers, url, b)),
                Err(ReadError::TooLarge) => {
                    return Err(Error::TooLarge {
                        url: req.redacted_url(),
                        limit,
                    })
                }
                Err(ReadError::Http(e)) => {
                    if retryable_error(&e) && attempts.wait_retry(None).await {
                        tracing::debug!(url = %req.redacted_url(), attempt = attempts.made, "body read failed; retrying");
                        continue;
                    }
                    return Err(self.transport_err(req, &attempts, e));
                }
            }
        }
    }

    fn transport_err(&self, req: &Req, attempts: &Attempts, e: reqwest::Error) -> Error {
        transport_error(
            &req.method,
            &req.redacted_url(),
            attempts,
            self.t.cfg.reported_timeout(),
            e,
        )
    }

    /// Sends a request whose body is not needed; non-2xx statuses become errors.
    async fn send_expect(&self, req: &Req, ok: &[u16]) -> Result<Response> {
        let mut attempts = Attempts::new(&self.t.cfg);
        let resp = self.t.send(req, &mut attempts).await?;
        if ok.contains(&resp.status().as_u16()) {
            Ok(resp)
        } else {
            Err(Transport::status_error(req, resp, &attempts).await)
        }
    }

    // ----------------------------------------------------------------------------------------------
    // Manifests

    /// `GET` a manifest or image index (OCI or Docker media types) by tag or digest.
    ///
    /// When `r` has a digest, the bytes are verified against it ([`Error::DigestMismatch`]).
    pub async fn get_manifest(&self, r: &Reference) -> Result<Manifest> {
        self.get_manifest_scoped(r, Scope::pull(r.repository()))
            .await
    }

    async fn get_manifest_scoped(&self, r: &Reference, scope: Scope) -> Result<Manifest> {
        let mut req = self.req(
            Method::GET,
            r,
            &format!("manifests/{}", r.manifest_ref()),
            scope,
        )?;
        req.headers.insert(ACCEPT, manifest_accept());
        let (headers, _, bytes) = self.fetch(&req, MAX_MANIFEST_SIZE).await?;
        let digest = match r.digest() {
            Some(want) => {
                let got = want.same_algorithm_of(&bytes);
                if &got != want {
                    return Err(Error::DigestMismatch {
                        expected: want.clone(),
                        actual: got,
                    });
                }
                got
            }
            None => Digest::sha256_of(&bytes),
        };
        let media_type = media_type_of(&headers, &bytes);
        tracing::debug!(reference = %r, digest = %digest, media_type = %media_type, "fetched manifest");
        Ok(Manifest {
            media_type,
            digest,
            bytes,
        })
    }

    /// `HEAD` a manifest: its descriptor, or `None` if the registry says 404.
    ///
    /// If the registry omits `Docker-Content-Digest` for a tag, the manifest is fetched to compute it.
    pub async fn head_manifest(&self, r: &Reference) -> Result<Option<Descriptor>> {
        let mut req = self.req(
            Method::HEAD,
            r,
            &format!("manifests/{}", r.manifest_ref()),
            Scope::pull(r.repository()),
        )?;
        req.headers.insert(ACCEPT, manifest_accept());
        let mut attempts = Attempts::new(&self.t.cfg);
        let resp = self.t.send(&req, &mut attempts).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(Transport::status_error(&req, resp, &attempts).await);
        }
        let headers = resp.headers();
        let digest = header_str(headers, DOCKER_CONTENT_DIGEST)
            .and_then(|d| d.parse::<Digest>().ok())
            .or_else(|| r.digest().cloned());
        let size = header_str(headers, CONTENT_LENGTH.as_str()).and_then(|s| s.parse::<u64>().ok());
        let media_type = header_str(headers, CONTENT_TYPE.as_str()).map(strip_params);
        match (digest, size, media_type) {
            (Some(digest), Some(size), Some(mt)) if !is_generic_type(&mt) => {
                Ok(Some(Descriptor::new(mt, digest, size)))
            }
            _ => {
                let m = self.get_manifest(r).await?;
                Ok(Some(Descriptor::new(
                    m.media_type,
                    m.digest,
                    m.bytes.len() as u64,
                )))
            }
        }
    }

    /// `PUT` a manifest under `r`'s tag (or digest; a reference with neither is pushed by digest) with
    /// `media_type` as `Content-Type`.
    ///
    /// If the manifest has a `subject` and the registry does not answer with `OCI-Subject`, the
    /// referrers tag index of the subject is maintained here (SOCI spec §4.9): the existing index is
    /// read, the new descriptor appended unless present (other entries are kept as they are), and the
    /// result put back; the write is re-checked and merged again if a concurrent writer replaced it.
    pub async fn push_manifest(
        &self,
        r: &Reference,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PushedManifest> {
        let digest = match r.digest() {
            Some(want) => {
                let got = want.same_algorithm_of(&bytes);
                if &got != want {
                    return Err(Error::DigestMismatch {
                        expected: want.clone(),
                        actual: got,
                    });
                }
                got
            }
            None => Digest::sha256_of(&bytes),
        };
        // By tag when there is one (the digest, if also given, was verified above), else by digest.
        let target = match r.tag() {
            Some(t) => t.to_owned(),
            None => digest.to_string(),
        };
        let mut req = self.req(
            Method::PUT,
            r,
            &format!("manifests/{target}"),
            Scope::push(r.repository()),
        )?;
        req.headers
            .insert(CONTENT_TYPE, header_value(media_type, r)?);
        req.body = Some(bytes.clone().into());
        let resp = self.send_expect(&req, &[200, 201, 202, 204]).await?;
        let oci_subject = resp.headers().contains_key(OCI_SUBJECT);
        drop(resp);
        tracing::debug!(reference = %r, digest = %digest, oci_subject, "pushed manifest");

        let head: Option<ManifestHead> = serde_json::from_slice(&bytes).ok();
        let mut referrers_index = None;
        if let Some(head) = head {
            if let (Some(subject), false) = (&head.subject, oci_subject) {
                let mut desc = Descriptor::new(media_type, digest.clone(), bytes.len() as u64);
                desc.artifact_type = head
                    .artifact_type
                    .clone()
                    .or_else(|| head.config.as_ref().map(|c| c.media_type.clone()));
                desc.annotations = head.annotations.clone();
                referrers_index = Some(self.add_to_referrers_tag(r, &subject.digest, desc).await?);
            }
        }
        Ok(PushedManifest {
            digest,
            oci_subject,
            referrers_index,
        })
    }

    async fn delete_manifest(&self, r: &Reference, digest: &Digest) -> Result<()> {
        let req = self.req(
            Method::DELETE,
            r,
            &format!("manifests/{digest}"),
            Scope::push(r.repository()),
        )?;
        self.send_expect(&req, &[200, 202, 204]).await.map(drop)
    }

    // ----------------------------------------------------------------------------------------------
    // Blobs

    /// `HEAD` a blob: `Some(size)` if it exists (size 0 if the registry sends no `Content-Length`),
    /// `None` on 404.
    pub async fn blob_exists(&self, r: &Reference, digest: &Digest) -> Result<Option<u64>> {
        self.blob_exists_scoped(r, digest, Scope::pull(r.repository()))
            .await
    }

    async fn blob_exists_scoped(
        &self,
        r: &Reference,
        digest: &Digest,
        scope: Scope,
    ) -> Result<Option<u64>> {
        let req = self.req(Method::HEAD, r, &format!("blobs/{digest}"), scope)?;
        let mut attempts = Attempts::new(&self.t.cfg);
        let resp = self.t.send(&req, &mut attempts).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(
                // Not resp.content_length(): for HEAD that is the (empty) body's length.
                header_str(resp.headers(), CONTENT_LENGTH.as_str())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            _ => Err(Transport::status_error(&req, resp, &attempts).await),
        }
    }

    /// `GET` a whole blob into memory, verifying its digest and, if given, its size: a shorter body is
    /// [`Error::SizeMismatch`], a longer one stops the download at `size` with [`Error::TooLarge`].
    /// Use [`Client::copy_blob`] for large blobs.
    pub async fn get_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<Bytes> {
        let req = self.req(
            Method::GET,
            r,
            &format!("blobs/{digest}"),
            Scope::pull(r.repository()),
        )?;
        // A body longer than `size` stops the read early with `Error::TooLarge`.
        let (_, _, bytes) = self.fetch(&req, size.unwrap_or(u64::MAX)).await?;
        if let Some(want) = size {
            if bytes.len() as u64 != want {
                return Err(Error::SizeMismatch {
                    digest: digest.clone(),
                    expected: want,
                    actual: bytes.len() as u64,
                });
            }
        }
        let got = digest.same_algorithm_of(&bytes);
        if &got != digest {
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual: got,
            });
        }
        Ok(bytes)
    }

    /// Streams a blob into `out`, verifying size (if given) and digest; returns the bytes written.
    ///
    /// A connection lost mid-body is resumed with `Range: bytes=<written>-` (or, if the server ignores
    /// `Range`, by skipping what was already written), so `out` receives each byte once. On a digest or
    /// size error the bytes already written are wrong: the caller should discard them.
    pub async fn copy_blob<W>(
        &self,
        r: &Reference,
        digest: &Digest,
        size: Option<u64>,
        out: &mut W,
    ) -> Result<u64>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let base = self.req(
            Method::GET,
            r,
            &format!("blobs/{digest}"),
            Scope::pull(r.repository()),
        )?;
        let mut hasher = digest.hasher();
        let mut written: u64 = 0;
        let mut attempts = Attempts::new(&self.t.cfg);
        let write_err = |source| Error::Write {
            digest: digest.clone(),
            source,
        };
        'request: loop {
            let mut req = base.clone();
            if written > 0 {
                req.headers
                    .insert(RANGE, range_value(&format!("bytes={written}-")));
                req.headers
                    .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            }
            let mut resp = self.t.send(&req, &mut attempts).await?;
            let mut skip = match resp.status() {
                StatusCode::OK => written,
                StatusCode::PARTIAL_CONTENT if written > 0 => {
                    let cr = parse_content_range(resp.headers());
                    match cr {
                        Some((start, _, _)) if start == written => 0,
                        _ => {
                            return Err(Error::BadContentRange {
                                url: req.redacted_url(),
                                content_range: header_str(resp.headers(), CONTENT_RANGE.as_str())
                                    .unwrap_or_default()
                                    .to_owned(),
                                offset: written,
                                len: 0,
                            })
                        }
                    }
                }
                _ => return Err(Transport::status_error(&req, resp, &attempts).await),
            };
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        let mut data = &chunk[..];
                        if skip > 0 {
                            let n = skip.min(data.len() as u64) as usize;
                            data = &data[n..];
                            skip -= n as u64;
                        }
                        if data.is_empty() {
                            continue;
                        }
                        if let Some(want) = size {
                            if written + data.len() as u64 > want {
                                return Err(Error::SizeMismatch {
                                    digest: digest.clone(),
                                    expected: want,
                                    actual: written + data.len() as u64,
                                });
                            }
                        }
                        hasher.update(data);
                        out.write_all(data).await.map_err(write_err)?;
                        written += data.len() as u64;
                    }
                    Ok(None) => break 'request,
                    Err(e) => {
                        if retryable_error(&e) && attempts.wait_retry(None).await {
                            tracing::debug!(digest = %digest, written, "blob body interrupted; resuming");
                            continue 'request;
                        }
                        return Err(self.transport_err(&req, &attempts, e));
                    }
                }
            }
        }
        out.flush().await.map_err(write_err)?;
        if let Some(want) = size {
            if written != want {
                return Err(Error::SizeMismatch {
                    digest: digest.clone(),
                    expected: want,
                    actual: written,
                });
            }
        }
        let got = hasher.finish();
        if &got != digest {
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual: got,
            });
        }
        Ok(written)
    }

    /// Probes whether the registry serves byte ranges of a blob: a `GET` of its first two bytes.
    /// Ranges are supported when the answer is `206` or carries `Accept-Ranges: bytes`; the blob
    /// size comes from `Content-Range` (or `Content-Length` of a `200`). The body is not read.
    pub async fn probe_ranges(&self, r: &Reference, digest: &Digest) -> Result<RangeProbe> {
        let mut req = self.req(
            Method::GET,
            r,
            &format!("blobs/{digest}"),
            Scope::pull(r.repository()),
        )?;
        req.headers
            .insert(RANGE, HeaderValue::from_static("bytes=0-1"));
        req.headers
            .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        let mut attempts = Attempts::new(&self.t.cfg);
        let resp = self.t.send(&req, &mut attempts).await?;
        let h = resp.headers();
        let advertised = header_str(h, reqwest::header::ACCEPT_RANGES.as_str())
            .is_some_and(|v| v.split(',').any(|x| x.trim().eq_ignore_ascii_case("bytes")));
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => Ok(RangeProbe {
                ranges: true,
                size: parse_content_range(h).and_then(|(_, _, t)| t),
            }),
            StatusCode::OK => Ok(RangeProbe {
                ranges: advertised,
                size: header_str(h, CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok()),
            }),
            _ => Err(Transport::status_error(&req, resp, &attempts).await),
        }
    }

    /// Reads `len` bytes of a blob starting at `offset` with an HTTP range request.
    ///
    /// * `206` is checked against `Content-Range` (start must equal the requested offset, end must not
    ///   exceed the requested end); a shorter part is completed with further requests.
    /// * `200` (a server or storage backend that ignores `Range`) is handled by skipping `offset` bytes
    ///   and stopping once `len` bytes are in; the rest of the body is not downloaded.
    /// * `416` or an offset past the end gives [`Error::RangeNotSatisfiable`].
    ///
    /// The result is shorter than `len` only when the range runs past the end of the blob. The digest is
    /// not (cannot be) verified; callers verify span digests (SOCI spec §5.8). A connection lost
    /// mid-body is resumed from the first missing byte.
    pub async fn read_range(
        &self,
        r: &Reference,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let not_satisfiable = || Error::RangeNotSatisfiable {
            digest: digest.clone(),
            offset,
            len,
        };
        let end = offset.checked_add(len - 1).ok_or_else(not_satisfiable)?;
        let base = self.req(
            Method::GET,
            r,
            &format!("blobs/{digest}"),
            Scope::pull(r.repository()),
        )?;
        // Capacity hint only; a hostile len must not reserve memory up front.
        let mut out = BytesMut::with_capacity(len.min(8 << 20) as usize);
        let mut attempts = Attempts::new(&self.t.cfg);
        let key = (
            self.api_authority(r).to_ascii_lowercase(),
            r.repository().to_owned(),
            digest.to_string(),
        );
        let mut use_cached = true;
        'request: loop {
            let cur = offset + out.len() as u64;
            if cur > end {
                break;
            }
            // A storage URL the registry redirected an earlier read to is used directly; if it fails
            // (expired pre-signed URL: 401/403/400, or anything unexpected) the blob is resolved
            // through the registry again, once per call.
            let cached = if use_cached {
                self.t.cached_blob_url(&key)
            } else {
                None
            };
            let mut req = match &cached {
                Some(u) => self.req_at(Method::GET, r, u.clone(), base.scope.clone()),
                None => base.clone(),
            };
            req.headers
                .insert(RANGE, range_value(&format!("bytes={cur}-{end}")));
            req.headers
                .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            let sent = self.t.send(&req, &mut attempts).await;
            let usable =
                matches!(&sent, Ok(resp) if matches!(resp.status().as_u16(), 200 | 206 | 416));
            if cached.is_some() && !usable {
                tracing::debug!(url = %req.redacted_url(), "cached blob URL failed; resolving through the registry");
                self.t.set_blob_url(key.clone(), None);
                use_cached = false;
                continue 'request;
            }
            let mut resp = sent?;
            if cached.is_none() && usable && Origin::of(resp.url()) != req.auth_origin {
                self.t.set_blob_url(key.clone(), Some(resp.url().clone()));
            }
            let bad_range = |resp: &Response| Error::BadContentRange {
                url: req.redacted_url(),
                content_range: header_str(resp.headers(), CONTENT_RANGE.as_str())
                    .unwrap_or_default()
                    .to_owned(),
                offset: cur,
                len: end - cur + 1,
            };
            // (bytes to skip, bytes to take from this body, whether the blob ends at this part's end)
            let (mut skip, mut take, ends_blob) = match resp.status() {
                StatusCode::PARTIAL_CONTENT => {
                    if header_str(resp.headers(), CONTENT_TYPE.as_str())
                        .is_some_and(|t| t.starts_with("multipart/"))
                    {
                        return Err(bad_range(&resp));
                    }
                    match parse_content_range(resp.headers()) {
                        Some((a, b, total)) if a == cur && b >= a && b <= end => {
                            let ends = total.is_some_and(|t| b + 1 >= t);
                            (0u64, b - a + 1, ends)
                        }
                        _ => return Err(bad_range(&resp)),
                    }
                }
                StatusCode::OK => {
                    tracing::debug!(url = %req.redacted_url(), "server ignored Range; skipping to offset");
                    if let Some(total) = header_str(resp.headers(), CONTENT_LENGTH.as_str())
                        .and_then(|v| v.parse::<u64>().ok())
                    {
                        if cur >= total {
                            return Err(not_satisfiable());
                        }
                    }
                    (cur, end - cur + 1, false)
                }
                StatusCode::RANGE_NOT_SATISFIABLE => return Err(not_satisfiable()),
                _ => return Err(Transport::status_error(&req, resp, &attempts).await),
            };
            let is_full = resp.status() == StatusCode::OK;
            let before = out.len();
            loop {
                if take == 0 {
                    // Got everything this response promised; drop the rest of a full body unread.
                    if ends_blob {
                        break 'request;
                    }
                    continue 'request;
                }
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        let mut data = &chunk[..];
                        if skip > 0 {
                            let n = skip.min(data.len() as u64) as usize;
                            data = &data[n..];
                            skip -= n as u64;
                        }
                        let n = (data.len() as u64).min(take) as usize;
                        out.extend_from_slice(&data[..n]);
                        take -= n as u64;
                    }
                    Ok(None) => {
                        if is_full {
                            if skip > 0 {
                                // The whole blob is shorter than the offset.
                                return Err(not_satisfiable());
                            }
                            // Blob ended before the requested end: short read at EOF.
                            break 'request;
                        }
                        // A 206 body shorter than its Content-Range: fetch the rest, but a response
                        // that made no progress at all counts against the retry budget.
                        if out.len() == before && !attempts.wait_retry(None).await {
                            return Err(bad_range(&resp));
                        }
                        continue 'request;
                    }
                    Err(e) => {
                        if retryable_error(&e) && attempts.wait_retry(None).await {
                            tracing::debug!(digest = %digest, have = out.len(), "range body interrupted; resuming");
                            continue 'request;
                        }
                        return Err(self.transport_err(&req, &attempts, e));
                    }
                }
            }
        }
        Ok(out.freeze())
    }

    /// Pushes a blob (sha256): skipped if `HEAD` finds it, mounted from
    /// [`PushBlobOptions::mount_from`] when possible, else uploaded monolithically (`POST` + `PUT`) or in
    /// chunks (`POST` + `PATCH`… + `PUT`). For large blobs use [`Client::push_blob_from`], which
    /// does not hold them in memory.
    pub async fn push_blob(
        &self,
        r: &Reference,
        data: Bytes,
        opts: &PushBlobOptions,
    ) -> Result<PushedBlob> {
        let digest = Digest::sha256_of(&data);
        let size = data.len() as u64;
        self.push_payload(r, &digest, size, Payload::Bytes(data), opts)
            .await
    }

    /// Pushes blob `digest` of `size` bytes read from `source` (a file: [`crate::BlobFile`]), as
    /// [`Client::push_blob`] does, streaming: every request body is read from a freshly opened
    /// `source` (at the chunk's offset), so a retried or redirected upload re-reads its bytes and
    /// the blob is never held in memory. The registry verifies the digest; a source that does not
    /// match it fails the upload.
    pub async fn push_blob_from(
        &self,
        r: &Reference,
        digest: &Digest,
        size: u64,
        source: Arc<dyn BlobSource>,
        opts: &PushBlobOptions,
    ) -> Result<PushedBlob> {
        self.push_payload(r, digest, size, Payload::Source(source), opts)
            .await
    }

    async fn push_payload(
        &self,
        r: &Reference,
        digest: &Digest,
        size: u64,
        data: Payload,
        opts: &PushBlobOptions,
    ) -> Result<PushedBlob> {
        let mut scope = Scope::push(r.repository());
        let mount = opts
            .mount_from
            .as_ref()
            .filter(|s| s.api_host() == r.api_host() && s.repository() != r.repository());
        if let Some(src) = mount {
            scope = scope.and_pull(src.repository());
        }
        let done = |outcome| PushedBlob {
            digest: digest.clone(),
            size,
            outcome,
        };
        if self
            .blob_exists_scoped(r, digest, scope.clone())
            .await?
            .is_some()
        {
            tracing::debug!(reference = %r, digest = %digest, "blob exists; skipped");
            return Ok(done(BlobPushOutcome::AlreadyExists));
        }

        let mut start = self.req(Method::POST, r, "blobs/uploads/", scope.clone())?;
        if let Some(src) = mount {
            start
                .url
                .query_pairs_mut()
                .append_pair("mount", digest.as_str())
                .append_pair("from", src.repository());
        }
        let resp = self.send_expect(&start, &[201, 202]).await?;
        if resp.status() == StatusCode::CREATED && mount.is_some() {
            tracing::debug!(reference = %r, digest = %digest, "blob mounted");
            return Ok(done(BlobPushOutcome::Mounted));
        }
        let mut location = upload_location(&start, &resp)?;
        drop(resp);

        if let Some(chunk) = opts.chunk_size.map(|c| c as u64).filter(|&c| c < size) {
            let mut pos = 0u64;
            while pos < size {
                let end = (pos + chunk.max(1)).min(size);
                let mut req = self.req_at(Method::PATCH, r, location.clone(), scope.clone());
                req.headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                // Distribution spec chunked upload: `Content-Range: <start>-<end>` (inclusive, no unit).
                req.headers
                    .insert(CONTENT_RANGE, range_value(&format!("{pos}-{}", end - 1)));
                req.body = Some(data.part(pos, end));
                let resp = self.send_expect(&req, &[202]).await?;
                location = upload_location(&req, &resp)?;
                pos = end;
            }
            location
                .query_pairs_mut()
                .append_pair("digest", digest.as_str());
            let mut req = self.req_at(Method::PUT, r, location, scope);
            req.headers
                .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
            req.body = Some(Bytes::new().into());
            self.send_expect(&req, &[201, 204]).await?;
        } else {
            location
                .query_pairs_mut()
                .append_pair("digest", digest.as_str());
            let mut req = self.req_at(Method::PUT, r, location, scope);
            req.headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            req.body = Some(data.part(0, size));
            self.send_expect(&req, &[201, 204]).await?;
        }
        tracing::debug!(reference = %r, digest = %digest, size, "blob uploaded");
        Ok(done(BlobPushOutcome::Uploaded))
    }

    // ----------------------------------------------------------------------------------------------
    // Referrers

    /// Lists the referrers of `subject` in `r`'s repository, optionally only those with `artifact_type`.
    ///
    /// Uses the Referrers API and follows `Link: <…>; rel="next"` pages; when a page lacks
    /// `OCI-Filters-Applied: artifactType` the filter is applied here. If the API answers 404 (registry
    /// without it, e.g. distribution 2.8), the image index tagged `<alg>-<hex>` is read instead and
    /// filtered here; a missing tag means no referrers (SOCI spec §4.7).
    pub async fn referrers(
        &self,
        r: &Reference,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers> {
        let mut req = self.req(
            Method::GET,
            r,
            &format!("referrers/{subject}"),
            Scope::pull(r.repository()),
        )?;
        if let Some(t) = artifact_type {
            req.url.query_pairs_mut().append_pair("artifactType", t);
        }
        req.headers
            .insert(ACCEPT, HeaderValue::from_static(OCI_IMAGE_INDEX_MEDIA_TYPE));
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut first = true;
        loop {
            if !seen.insert(req.url.to_string()) || seen.len() > MAX_REFERRERS_PAGES {
                tracing::debug!(url = %req.redacted_url(), "referrers pagination loop; stopping");
                break;
            }
            let (headers, url, body) = match self.fetch(&req, MAX_MANIFEST_SIZE).await {
                Err(e) if first && e.is_not_found() => {
                    tracing::debug!(reference = %r, subject = %subject, "no referrers API; using tag schema");
                    return self.referrers_from_tag(r, subject, artifact_type).await;
                }
                other => other?,
            };
            first = false;
            let filtered = header_str(&headers, OCI_FILTERS_APPLIED)
                .is_some_and(|v| v.split(',').any(|f| f.trim() == "artifactType"));
            let page = parse_index_entries(&body, "referrers response")?;
            out.extend(
                page.into_iter()
                    .filter(|d| filtered || matches_type(d, artifact_type)),
            );
            let Some(next) = next_link(&headers, &url) else {
                break;
            };
            req = self.req_at(Method::GET, r, next, Scope::pull(r.repository()));
            req.headers
                .insert(ACCEPT, HeaderValue::from_static(OCI_IMAGE_INDEX_MEDIA_TYPE));
        }
        Ok(Referrers {
            descriptors: out,
            source: ReferrersSource::Api,
        })
    }

    async fn referrers_from_tag(
        &self,
        r: &Reference,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers> {
        let tag = subject.referrers_tag();
        let tag_ref = r.to_tag(&tag)?;
        let descriptors = match self.get_manifest(&tag_ref).await {
            Ok(m) => {
                if !is_index_type(&m.media_type) {
                    return Err(Error::ReferrersTagNotIndex {
                        tag,
                        media_type: m.media_type,
                    });
                }
                parse_index_entries(&m.bytes, "referrers tag index")?
                    .into_iter()
                    .filter(|d| matches_type(d, artifact_type))
                    .collect()
            }
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Referrers {
            descriptors,
            source: ReferrersSource::TagSchema,
        })
    }

    /// Adds `desc` to the referrers tag index of `subject`; returns the digest of the index that lists it.
    async fn add_to_referrers_tag(
        &self,
        r: &Reference,
        subject: &Digest,
        desc: Descriptor,
    ) -> Result<Digest> {
        let tag = subject.referrers_tag();
        let tag_ref = r.to_tag(&tag)?;
        let scope = Scope::push(r.repository());
        let entry = serde_json::to_value(&desc).map_err(|source| Error::Json {
            what: "referrer descriptor",
            source,
        })?;
        let mut superseded: Vec<Digest> = Vec::new();
        for round in 1..=REFERRERS_TAG_ROUNDS {
            let existing = match self.get_manifest_scoped(&tag_ref, scope.clone()).await {
                Ok(m) => Some(m),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e),
            };
            let mut doc = match &existing {
                Some(m) => {
                    if !is_index_type(&m.media_type) {
                        return Err(Error::ReferrersTagNotIndex {
                            tag,
                            media_type: m.media_type.clone(),
                        });
                    }
                    let v: serde_json::Value =
                        serde_json::from_slice(&m.bytes).map_err(|source| Error::Json {
                            what: "referrers tag index",
                            source,
                        })?;
                    match v {
                        serde_json::Value::Object(o) => o,
                        _ => {
                            return Err(Error::ReferrersTagNotIndex {
                                tag,
                                media_type: m.media_type.clone(),
                            })
                        }
                    }
                }
                None => {
                    let mut o = serde_json::Map::new();
                    o.insert("schemaVersion".into(), 2.into());
                    o.insert("mediaType".into(), OCI_IMAGE_INDEX_MEDIA_TYPE.into());
                    o.insert("manifests".into(), serde_json::Value::Array(Vec::new()));
                    o
                }
            };
            let manifests = doc
                .entry("manifests")
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            let Some(list) = manifests.as_array_mut() else {
                return Err(Error::ReferrersTagNotIndex {
                    tag,
                    media_type: OCI_IMAGE_INDEX_MEDIA_TYPE.to_owned(),
                });
            };
            let present = list
                .iter()
                .any(|e| e.get("digest").and_then(|d| d.as_str()) == Some(desc.digest.as_str()));
            if present {
                if let Some(m) = existing {
                    self.gc_indexes(r, &superseded, &m.digest).await;
                    return Ok(m.digest);
                }
            }
            list.push(entry.clone());
            let bytes = Bytes::from(serde_json::to_vec(&doc).map_err(|source| Error::Json {
                what: "referrers tag index",
                source,
            })?);
            let mut req = self.req(Method::PUT, r, &format!("manifests/{tag}"), scope.clone())?;
            req.headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static(OCI_IMAGE_INDEX_MEDIA_TYPE),
            );
            req.body = Some(bytes.clone().into());
            self.send_expect(&req, &[200, 201, 202, 204]).await?;
            let new_digest = Digest::sha256_of(&bytes);
            if let Some(m) = &existing {
                superseded.push(m.digest.clone());
            }
            tracing::debug!(tag = %tag, index = %new_digest, referrer = %desc.digest, round, "updated referrers tag index");
            // Re-read: a concurrent writer may have replaced the tag between our GET and PUT.
            let now = self.get_manifest_scoped(&tag_ref, scope.clone()).await?;
            if now.digest == new_digest {
                self.gc_indexes(r, &superseded, &new_digest).await;
                return Ok(new_digest);
            }
            superseded.push(new_digest);
            tracing::debug!(tag = %tag, round, "referrers tag index changed concurrently; merging again");
        }
        Err(Error::ReferrersTagContention {
            tag,
            rounds: REFERRERS_TAG_ROUNDS,
        })
    }

    /// Best-effort deletion of superseded referrers tag indexes (never the current one).
    async fn gc_indexes(&self, r: &Reference, old: &[Digest], current: &Digest) {
        if !self.t.cfg.referrers_gc {
            return;
        }
        for d in old.iter().filter(|d| *d != current) {
            if let Err(e) = self.delete_manifest(r, d).await {
                tracing::debug!(index = %d, error = %e, "could not delete superseded referrers index");
            }
        }
    }
}

/// Fields of a manifest needed to maintain the referrers tag index.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestHead {
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<ConfigHead>,
    #[serde(default)]
    subject: Option<SubjectHead>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigHead {
    media_type: String,
}

#[derive(Deserialize)]
struct SubjectHead {
    digest: Digest,
}

#[derive(Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<serde_json::Value>,
}

/// Entries of an image index; entries that are not valid descriptors are skipped (logged at debug).
fn parse_index_entries(body: &[u8], what: &'static str) -> Result<Vec<Descriptor>> {
    let doc: IndexDoc =
        serde_json::from_slice(body).map_err(|source| Error::Json { what, source })?;
    Ok(doc
        .manifests
        .into_iter()
        .filter_map(|v| match serde_json::from_value::<Descriptor>(v) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::debug!(what, error = %e, "skipping invalid descriptor");
                None
            }
        })
        .collect())
}

fn matches_type(d: &Descriptor, want: Option<&str>) -> bool {
    want.is_none_or(|t| d.artifact_type.as_deref() == Some(t))
}

fn is_index_type(mt: &str) -> bool {
    mt == OCI_IMAGE_INDEX_MEDIA_TYPE || mt == IMAGE_MANIFEST_LIST_MEDIA_TYPE
}

fn is_generic_type(mt: &str) -> bool {
    mt.is_empty()
        || mt == "application/json"
        || mt == "text/plain"
        || mt == "application/octet-stream"
}

fn strip_params(v: &str) -> String {
    v.split(';').next().unwrap_or(v).trim().to_owned()
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn header_value(v: &str, r: &Reference) -> Result<HeaderValue> {
    HeaderValue::from_str(v).map_err(|e| Error::InvalidReference {
        reference: r.to_string(),
        source: ReferenceParseError(Box::new(e)),
    })
}

fn range_value(s: &str) -> HeaderValue {
    // Built from digits, '-', '=' and "bytes": always a valid header value.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("bytes=0-"))
}

/// Media type of a manifest response: `Content-Type` without parameters, or the body's `mediaType` when
/// the header is missing/generic, or OCI manifest as a last resort.
fn media_type_of(headers: &HeaderMap, body: &[u8]) -> String {
    let from_header = header_str(headers, CONTENT_TYPE.as_str()).map(strip_params);
    if let Some(mt) = from_header.filter(|m| !is_generic_type(m)) {
        return mt;
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Sniff {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Sniff>(body) {
        Ok(Sniff {
            media_type: Some(m),
            ..
        }) => m,
        Ok(Sniff {
            manifests: Some(_), ..
        }) => OCI_IMAGE_INDEX_MEDIA_TYPE.to_owned(),
        _ => OCI_IMAGE_MEDIA_TYPE.to_owned(),
    }
}

/// `Content-Range: bytes <a>-<b>/<total|*>` → (a, b, total).
/// What [`Client::probe_ranges`] learnt about a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RangeProbe {
    /// The registry serves byte ranges of the blob.
    pub ranges: bool,
    /// The blob size, when the answer told it.
    pub size: Option<u64>,
}

fn parse_content_range(h: &HeaderMap) -> Option<(u64, u64, Option<u64>)> {
    let v = header_str(h, CONTENT_RANGE.as_str())?.trim();
    let rest = v.strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.trim().split_once('-')?;
    let a = a.trim().parse().ok()?;
    let b = b.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((a, b, total))
}

/// The `rel="next"` target of a `Link` header, resolved against the page URL.
fn next_link(h: &HeaderMap, base: &Url) -> Option<Url> {
    for v in h.get_all(reqwest::header::LINK).iter() {
        let Ok(v) = v.to_str() else { continue };
        for link in v.split(',') {
            let mut parts = link.split(';');
            let target = parts.next()?.trim();
            let target = target.strip_prefix('<')?.strip_suffix('>')?;
            let is_next = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("rel=")
                    .map(|r| r.trim_matches('"').split(' ').any(|x| x == "next"))
                    .unwrap_or(false)
            });
            if is_next {
                return base.join(target).ok();
            }
        }
    }
    None
}

fn upload_location(req: &Req, resp: &Response) -> Result<Url> {
    let loc = resp
        .headers()
        .get(LOCATION)
        .ok_or_else(|| Error::MissingHeader {
            url: req.redacted_url(),
            header: "Location",
        })?;
    loc.to_str()
        .ok()
        .and_then(|l| resp.url().join(l).ok())
        .ok_or_else(|| Error::InvalidLocation {
            url: redact_url(resp.url()),
            location: String::from_utf8_lossy(loc.as_bytes()).into_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE;

    fn hm(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range(&hm(&[("content-range", "bytes 100-1123/1045601")])),
            Some((100, 1123, Some(1045601)))
        );
        assert_eq!(
            parse_content_range(&hm(&[("content-range", "bytes 0-0/*")])),
            Some((0, 0, None))
        );
        assert_eq!(
            parse_content_range(&hm(&[("content-range", "bytes */100")])),
            None
        );
        assert_eq!(parse_content_range(&hm(&[])), None);
    }

    #[test]
    fn link_next_is_resolved() {
        let base = Url::parse("http://r.example/v2/a/referrers/sha256:00?x=1").unwrap();
        let h = hm(&[(
            "link",
            r#"</v2/a/referrers/sha256:00?n=2>; rel="next", <http://other/>; rel="prev""#,
        )]);
        assert_eq!(
            next_link(&h, &base).unwrap().as_str(),
            "http://r.example/v2/a/referrers/sha256:00?n=2"
        );
        assert!(next_link(&hm(&[("link", "<x>; rel=\"prev\"")]), &base).is_none());
    }

    #[test]
    fn media_type_from_header_or_body() {
        assert_eq!(
            media_type_of(
                &hm(&[(
                    "content-type",
                    "application/vnd.oci.image.index.v1+json; charset=utf-8"
                )]),
                b"{}"
            ),
            OCI_IMAGE_INDEX_MEDIA_TYPE
        );
        assert_eq!(
            media_type_of(
                &hm(&[("content-type", "application/json")]),
                br#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#
            ),
            IMAGE_MANIFEST_MEDIA_TYPE
        );
        assert_eq!(
            media_type_of(&hm(&[]), br#"{"manifests":[]}"#),
            OCI_IMAGE_INDEX_MEDIA_TYPE
        );
    }

    #[test]
    fn index_entries_skip_invalid() {
        let body = br#"{"manifests":[
            {"mediaType":"m","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"artifactType":"t"},
            {"mediaType":"m","digest":"bogus","size":1}]}"#;
        let v = parse_index_entries(body, "test").unwrap();
        assert_eq!(v.len(), 1);
        assert!(matches_type(&v[0], Some("t")));
        assert!(!matches_type(&v[0], Some("u")));
        assert!(matches_type(&v[0], None));
        assert!(parse_index_entries(b"nope", "test").is_err());
    }
}
