//! In-process fault injection: a loopback HTTP server that misbehaves on purpose (5xx bursts, resets
//! mid-body, slow bodies, auth challenges, expiring tokens, cross-host redirects, Range handling).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{pattern, serve_range, Reply, Request, Response, Server};
use serde_json::json;
use soci_registry::{
    Auth, BlobFile, BlobPushOutcome, BlobSource, Client, Digest, DockerConfig, Error, HttpEvent,
    PlainHttp, PushBlobOptions, Reference, ReferrersSource,
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn client() -> Client {
    Client::builder()
        .plain_http(PlainHttp::Loopback)
        .retry_wait(Duration::from_millis(1), Duration::from_millis(10))
        .max_retries(4)
        .request_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn manifest_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": Digest::sha256_of(b"{}").to_string(), "size": 2},
        "layers": []
    }))
    .unwrap()
}

fn image(server: &Server) -> Reference {
    format!("{}/demo/app:v1", server.host()).parse().unwrap()
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let n = Arc::new(AtomicUsize::new(0));
    let body = manifest_body();
    let (n2, b2) = (n.clone(), body.clone());
    let server = Server::start(move |_req| {
        let i = n2.fetch_add(1, Ordering::SeqCst);
        match i {
            0 => Response::new(500).into(),
            1 => Response::new(502).into(),
            2 => Response::new(503).header("Retry-After", "0").into(),
            3 => Response::new(429).into(),
            _ => Response::new(200)
                .header("Content-Type", OCI_MANIFEST)
                .body(b2.clone())
                .into(),
        }
    })
    .await;
    let m = client().get_manifest(&image(&server)).await.unwrap();
    assert_eq!(m.bytes.as_ref(), body.as_slice());
    assert_eq!(m.media_type, OCI_MANIFEST);
    assert_eq!(m.digest, Digest::sha256_of(&body));
    assert_eq!(server.count("GET", "/v2/demo/app/manifests/v1"), 5);
}

#[tokio::test]
async fn retries_are_bounded_and_4xx_is_not_retried() {
    let server = Server::start(|req: &Request| {
        if req.path().ends_with("/always500") {
            Response::new(500)
                .json(&json!({"errors":[{"code":"UNKNOWN","message":"boom"}]}))
                .into()
        } else if req.path().ends_with("/notimpl") {
            Response::new(501).into()
        } else {
            Response::new(404)
                .json(&json!({"errors":[{"code":"MANIFEST_UNKNOWN","message":"nope"}]}))
                .into()
        }
    })
    .await;
    let c = Client::builder()
        .plain_http(PlainHttp::Always)
        .retry_wait(Duration::from_millis(1), Duration::from_millis(2))
        .max_retries(2)
        .build()
        .unwrap();
    let r: Reference = format!("{}/demo/app:always500", server.host())
        .parse()
        .unwrap();
    match c.get_manifest(&r).await {
        Err(Error::Status {
            status: 500,
            attempts: 3,
            registry_error: Some(e),
            ..
        }) => assert_eq!(e.code, "UNKNOWN"),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.count("GET", "/v2/demo/app/manifests/always500"), 3);

    let r: Reference = format!("{}/demo/app:notimpl", server.host())
        .parse()
        .unwrap();
    assert!(matches!(
        c.get_manifest(&r).await,
        Err(Error::Status {
            status: 501,
            attempts: 1,
            ..
        })
    ));

    let r: Reference = format!("{}/demo/app:missing", server.host())
        .parse()
        .unwrap();
    let e = c.get_manifest(&r).await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert_eq!(server.count("GET", "/v2/demo/app/manifests/missing"), 1);
    assert_eq!(c.head_manifest(&r).await.unwrap(), None);
}

#[tokio::test]
async fn connect_errors_are_retried_then_reported() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = Client::builder()
        .plain_http(PlainHttp::Loopback)
        .retry_wait(Duration::from_millis(1), Duration::from_millis(2))
        .max_retries(2)
        .dial_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let r: Reference = format!("127.0.0.1:{port}/a/b:c").parse().unwrap();
    match c.get_manifest(&r).await {
        Err(e @ Error::Transport { attempts: 3, .. }) => {
            // The message names method and URL, and the cause is in the source chain.
            let msg = e.to_string();
            assert!(msg.contains("GET http://127.0.0.1:"), "{msg}");
            assert!(std::error::Error::source(&e).is_some());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn reset_mid_body_is_retried_for_whole_reads() {
    let blob = pattern(200_000);
    let digest = Digest::sha256_of(&blob);
    let n = Arc::new(AtomicUsize::new(0));
    let (n2, b2) = (n.clone(), blob.clone());
    let server = Server::start(move |_req| {
        if n2.fetch_add(1, Ordering::SeqCst) < 2 {
            Reply::Truncate(Response::new(200).body(b2.clone()), 70_000)
        } else {
            Response::new(200).body(b2.clone()).into()
        }
    })
    .await;
    let got = client()
        .get_blob(&image(&server), &digest, Some(blob.len() as u64))
        .await
        .unwrap();
    assert_eq!(got.as_ref(), blob.as_slice());
    assert_eq!(server.count("GET", "/v2/demo/app/blobs/"), 3);
}

#[tokio::test]
async fn copy_blob_resumes_with_range_after_reset() {
    let blob = pattern(300_000);
    let digest = Digest::sha256_of(&blob);
    let b2 = blob.clone();
    let first = Arc::new(AtomicUsize::new(0));
    let f2 = first.clone();
    let server = Server::start(move |req| {
        if f2.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::Truncate(Response::new(200).body(b2.clone()), 123_457)
        } else {
            serve_range(req, &b2).into()
        }
    })
    .await;
    let mut out = Vec::new();
    let n = client()
        .copy_blob(&image(&server), &digest, Some(blob.len() as u64), &mut out)
        .await
        .unwrap();
    assert_eq!(n, blob.len() as u64);
    assert_eq!(out, blob);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("range"), None);
    assert_eq!(reqs[1].header("range"), Some("bytes=123457-"));

    // Same, but the server ignores Range on the resume: the client skips what it already wrote.
    let b3 = blob.clone();
    let first = Arc::new(AtomicUsize::new(0));
    let server = Server::start(move |_req| {
        if first.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::Truncate(Response::new(200).body(b3.clone()), 99_999)
        } else {
            Response::new(200).body(b3.clone()).into()
        }
    })
    .await;
    let mut out = Vec::new();
    client()
        .copy_blob(&image(&server), &digest, None, &mut out)
        .await
        .unwrap();
    assert_eq!(out, blob);
}

#[tokio::test]
async fn corrupted_content_is_rejected() {
    let blob = pattern(1000);
    let digest = Digest::sha256_of(&blob);
    let mut bad = blob.clone();
    bad[10] ^= 1;
    let server = Server::start(move |req| {
        if req.path().contains("/manifests/") {
            Response::new(200)
                .header("Content-Type", OCI_MANIFEST)
                .body(b"{\"tampered\":true}".to_vec())
                .into()
        } else {
            Response::new(200).body(bad.clone()).into()
        }
    })
    .await;
    let c = client();
    let r = image(&server);
    assert!(matches!(
        c.get_blob(&r, &digest, None).await,
        Err(Error::DigestMismatch { .. })
    ));
    assert!(matches!(
        c.get_blob(&r, &digest, Some(999)).await,
        Err(Error::TooLarge { limit: 999, .. })
    ));
    assert!(matches!(
        c.get_blob(&r, &digest, Some(1001)).await,
        Err(Error::SizeMismatch {
            expected: 1001,
            actual: 1000,
            ..
        })
    ));
    let mut sink = Vec::new();
    assert!(matches!(
        c.copy_blob(&r, &digest, None, &mut sink).await,
        Err(Error::DigestMismatch { .. })
    ));
    let by_digest = r.to_digest(&Digest::sha256_of(&manifest_body()));
    assert!(matches!(
        c.get_manifest(&by_digest).await,
        Err(Error::DigestMismatch { .. })
    ));
}

#[tokio::test]
async fn slow_body_past_timeout_is_a_clear_error() {
    let server = Server::start(|_req| {
        Reply::Slow(
            Response::new(200).body(vec![b'x'; 64]),
            4,
            Duration::from_millis(100),
        )
    })
    .await;
    let c = Client::builder()
        .plain_http(PlainHttp::Loopback)
        .retry_wait(Duration::from_millis(1), Duration::from_millis(2))
        .max_retries(1)
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = c
        .get_blob(&image(&server), &Digest::sha256_of(b"x"), None)
        .await
        .unwrap_err();
    match &err {
        Error::Timeout {
            attempts: 2,
            timeout,
            ..
        } => assert_eq!(*timeout, Duration::from_millis(300)),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A registry that wants `Bearer <current token>`; the token endpoint requires Basic alice:secret.
struct TokenRegistry {
    issued: AtomicUsize,
    /// Requests the current token may still serve before the registry "expires" it.
    budget: AtomicUsize,
    per_token: usize,
}

fn token_registry(per_token: usize) -> (Arc<TokenRegistry>, impl Fn(&Request) -> Reply) {
    let st = Arc::new(TokenRegistry {
        issued: AtomicUsize::new(0),
        budget: AtomicUsize::new(0),
        per_token,
    });
    let s2 = st.clone();
    let body = manifest_body();
    let handler = move |req: &Request| -> Reply {
        let host = req.header("host").unwrap_or_default().to_owned();
        if req.path() == "/token" {
            // base64("alice:secret")
            if req.header("authorization") != Some("Basic YWxpY2U6c2VjcmV0") {
                return Response::new(401).into();
            }
            assert!(
                req.query().contains("service=test-registry"),
                "{}",
                req.query()
            );
            assert!(
                req.query().contains("scope=repository%3Ademo%2Fapp%3Apull"),
                "{}",
                req.query()
            );
            let n = s2.issued.fetch_add(1, Ordering::SeqCst) + 1;
            s2.budget.store(s2.per_token, Ordering::SeqCst);
            return Response::new(200)
                .json(&json!({"token": format!("tok-{n}"), "expires_in": 300}))
                .into();
        }
        let current = format!("Bearer tok-{}", s2.issued.load(Ordering::SeqCst));
        let ok = req.header("authorization") == Some(current.as_str())
            && s2
                .budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
                .is_ok();
        if !ok {
            return Response::new(401)
                .header(
                    "WWW-Authenticate",
                    &format!(
                        "Bearer realm=\"http://{host}/token\",service=\"test-registry\",scope=\"repository:demo/app:pull\""
                    ),
                )
                .into();
        }
        Response::new(200)
            .header("Content-Type", OCI_MANIFEST)
            .body(body.clone())
            .into()
    };
    (st, handler)
}

#[tokio::test]
async fn bearer_challenge_then_token_then_success_and_token_is_cached() {
    let (st, handler) = token_registry(100);
    let server = Server::start(handler).await;
    let c = Client::builder()
        .plain_http(PlainHttp::Loopback)
        .auth(Auth::basic("alice", "secret"))
        .build()
        .unwrap();
    let r = image(&server);
    c.get_manifest(&r).await.unwrap();
    c.get_manifest(&r).await.unwrap();
    c.get_manifest(&r).await.unwrap();
    assert_eq!(
        st.issued.load(Ordering::SeqCst),
        1,
        "token fetched once and cached"
    );
    let reqs = server.requests();
    // unauthenticated try, token, retry, then two requests straight with the cached token
    assert_eq!(reqs.len(), 5, "{reqs:#?}");
    assert_eq!(reqs[0].header("authorization"), None);
    assert_eq!(reqs[2].header("authorization"), Some("Bearer tok-1"));
}

#[tokio::test]
async fn expired_token_is_refreshed_once_and_request_retried() {
    let (st, handler) = token_registry(2);
    let server = Server::start(handler).await;
    let c = Client::builder()
        .plain_http(PlainHttp::Loopback)
        .auth(Auth::basic("alice", "secret"))
        .build()
        .unwrap();
    let r = image(&server);
    for _ in 0..5 {
        c.get_manifest(&r).await.unwrap();
    }
    assert_eq!(st.issued.load(Ordering::SeqCst), 3);
    let tokens: Vec<Option<String>> = server
        .requests()
        .iter()
        .filter(|q| q.path() != "/token")
        .map(|q| q.header("authorization").map(str::to_owned))
        .collect();
    assert!(
        tokens.contains(&Some("Bearer tok-3".to_owned())),
        "{tokens:?}"
    );
}

#[tokio::test]
async fn wrong_credentials_give_unauthorized_without_looping() {
    let (_st, handler) = token_registry(100);
    let server = Server::start(handler).await;
    let c = Client::builder()
        .plain_http(PlainHttp::Loopback)
        .auth(Auth::basic("alice", "wrong"))
        .build()
        .unwrap();
    let err = c.get_manifest(&image(&server)).await.unwrap_err();
    assert!(err.is_unauthorized(), "{err:?}");
    // Never log or print the password, not even in the client's Debug output.
    assert!(!format!("{err:?} {err}").contains("wrong"));
    let dbg = format!("{c:?}");
    assert!(dbg.contains("alice") && !dbg.contains("wrong"), "{dbg}");
    assert!(server.requests().len() <= 3);
}

#[tokio::test]
async fn docker_config_credentials_reach_the_token_realm() {
    let (st, handler) = token_registry(100);
    let server = Server::start(handler).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    // base64("alice:secret")
    std::fs::write(
        &path,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6c2VjcmV0"}}}}}}"#,
            server.host()
        ),
    )
    .unwrap();
    let c = Client::builder()
        .plain_http(PlainHttp::Loopback)
        .auth(Auth::DockerConfig(DockerConfig::at(&path)))
        .build()
        .unwrap();
    c.get_manifest(&image(&server)).await.unwrap();
    assert_eq!(st.issued.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn redirect_to_another_host_never_carries_authorization() {
    let blob = pattern(5000);
    let digest = Digest::sha256_of(&blob);
    let b2 = blob.clone();
    // "Storage" on another loopback address (127.0.0.2) or, if that cannot be bound, on `localhost`.
    let (storage, storage_host) = match tokio::net::TcpListener::bind("127.0.0.2:0").await {
        Ok(l) => {
            drop(l);
            let s = Server::start_on("127.0.0.2", move |req| serve_range(req, &b2).into()).await;
            let h = s.host();
            (s, h)
        }
        Err(_) => {
            let s = Server::start(move |req| serve_range(req, &b2).into()).await;
            let h = format!("localhost:{}", s.addr.port());
            (s, h)
        }
    };
    let registry = Server::start(move |req| {
        if req.header("authorization") != Some("Basic YWxpY2U6c2VjcmV0") {
            return Response::new(401)
                .header("WWW-Authenticate", "Basic realm=\"registry\"")
                .into();
        }
        Response::new(307)
            .header(
                "Location",
                &format!("http://{storage_host}/bucket/blob?X-Amz-Signature=s3cr3t"),
            )
            .into()
    })
    .await;
    let c = Client::builder()
        .plain_http(PlainHttp::Loopback)
        .auth(Auth::basic("alice", "secret"))
        .build()
        .unwrap();
    let r = image(&registry);
    let got = c.get_blob(&r, &digest, None).await.unwrap();
    assert_eq!(got.as_ref(), blob.as_slice());
    let part = c.read_range(&r, &digest, 100, 50).await.unwrap();
    assert_eq!(part.as_ref(), &blob[100..150]);

    let reg_reqs = registry.requests();
    assert!(reg_reqs.iter().any(|q| q.header("authorization").is_some()));
    let st_reqs = storage.requests();
    assert_eq!(st_reqs.len(), 2);
    for q in &st_reqs {
        assert_eq!(q.header("authorization"), None, "credentials leaked: {q:?}");
        assert!(q.target.contains("X-Amz-Signature=s3cr3t"));
    }
    // The Range header survives the redirect.
    assert_eq!(st_reqs[1].header("range"), Some("bytes=100-149"));
}

#[tokio::test]
async fn too_many_redirects_is_an_error() {
    let server = Server::start(|req: &Request| {
        Response::new(302)
            .header("Location", &format!("{}?again", req.path()))
            .into()
    })
    .await;
    let c = Client::builder()
        .plain_http(PlainHttp::Loopback)
        .max_redirects(3)
        .build()
        .unwrap();
    assert!(matches!(
        c.get_blob(&image(&server), &Digest::sha256_of(b""), None)
            .await,
        Err(Error::TooManyRedirects { limit: 3, .. })
    ));
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn range_reads_use_206() {
    let blob = pattern(10_000);
    let digest = Digest::sha256_of(&blob);
    let b2 = blob.clone();
    let server = Server::start(move |req| serve_range(req, &b2).into()).await;
    let c = client();
    let r = image(&server);
    for (off, len) in [
        (0u64, 1u64),
        (0, 10_000),
        (1234, 4321),
        (9_999, 1),
        (9_000, 5_000),
    ] {
        let got = c.read_range(&r, &digest, off, len).await.unwrap();
        let end = ((off + len) as usize).min(blob.len());
        assert_eq!(got.as_ref(), &blob[off as usize..end], "{off}+{len}");
    }
    assert!(c.read_range(&r, &digest, 5, 0).await.unwrap().is_empty());
    let reqs = server.requests();
    assert_eq!(reqs[2].header("range"), Some("bytes=1234-5554"));
    assert_eq!(reqs[2].header("accept-encoding"), Some("identity"));
    assert!(matches!(
        c.read_range(&r, &digest, 10_000, 10).await,
        Err(Error::RangeNotSatisfiable { offset: 10_000, .. })
    ));
}

#[tokio::test]
async fn probe_ranges_reads_206_and_accept_ranges() {
    let blob = pattern(10_000);
    let digest = Digest::sha256_of(&blob);
    let b2 = blob.clone();
    let server = Server::start(move |req| serve_range(req, &b2).into()).await;
    let p = client()
        .probe_ranges(&image(&server), &digest)
        .await
        .unwrap();
    assert!(p.ranges);
    assert_eq!(p.size, Some(10_000));
    assert_eq!(server.requests()[0].header("range"), Some("bytes=0-1"));
    // A 200 without Accept-Ranges: no range support, size from Content-Length.
    let b3 = blob.clone();
    let plain = Server::start(move |_req| Response::new(200).body(b3.clone()).into()).await;
    let p = client()
        .probe_ranges(&image(&plain), &digest)
        .await
        .unwrap();
    assert!(!p.ranges);
    assert_eq!(p.size, Some(10_000));
    let b4 = blob.clone();
    let adv = Server::start(move |_req| {
        Response::new(200)
            .header("Accept-Ranges", "bytes")
            .body(b4.clone())
            .into()
    })
    .await;
    assert!(
        client()
            .probe_ranges(&image(&adv), &digest)
            .await
            .unwrap()
            .ranges
    );
}

#[tokio::test]
async fn range_ignored_by_server_is_handled() {
    let blob = pattern(50_000);
    let digest = Digest::sha256_of(&blob);
    let b2 = blob.clone();
    let server = Server::start(move |_req| Response::new(200).body(b2.clone()).into()).await;
    let c = client();
    let r = image(&server);
    let got = c.read_range(&r, &digest, 40_000, 1000).await.unwrap();
    assert_eq!(got.as_ref(), &blob[40_000..41_000]);
    let got = c.read_range(&r, &digest, 49_990, 100).await.unwrap();
    assert_eq!(got.as_ref(), &blob[49_990..]);
    assert!(matches!(
        c.read_range(&r, &digest, 60_000, 10).await,
        Err(Error::RangeNotSatisfiable { .. })
    ));
}

#[tokio::test]
async fn short_and_interrupted_206_parts_are_completed() {
    let blob = pattern(20_000);
    let digest = Digest::sha256_of(&blob);
    let b2 = blob.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    // Serves at most 3000 bytes per response, and cuts the second response short mid-body.
    let server = Server::start(move |req| {
        let (a, b) = req.range().unwrap();
        let b = b.unwrap().min(a + 2999);
        let resp = Response::new(206)
            .header("Content-Range", &format!("bytes {a}-{b}/{}", b2.len()))
            .body(b2[a as usize..=b as usize].to_vec());
        if c2.fetch_add(1, Ordering::SeqCst) == 1 {
            Reply::Truncate(resp, 1000)
        } else {
            resp.into()
        }
    })
    .await;
    let got = client()
        .read_range(&image(&server), &digest, 500, 10_000)
        .await
        .unwrap();
    assert_eq!(got.as_ref(), &blob[500..10_500]);
    let ranges: Vec<String> = server
        .requests()
        .iter()
        .map(|q| q.header("range").unwrap().to_owned())
        .collect();
    assert_eq!(ranges[0], "bytes=500-10499");
    assert_eq!(ranges[1], "bytes=3500-10499");
    assert_eq!(ranges[2], "bytes=4500-10499", "resumed after the reset");
}

#[tokio::test]
async fn mismatched_content_range_is_rejected() {
    let server = Server::start(|_req| {
        Response::new(206)
            .header("Content-Range", "bytes 0-9/100")
            .body(vec![0u8; 10])
            .into()
    })
    .await;
    assert!(matches!(
        client()
            .read_range(&image(&server), &Digest::sha256_of(b""), 50, 10)
            .await,
        Err(Error::BadContentRange { offset: 50, .. })
    ));
}

#[tokio::test]
async fn referrers_api_follows_links_and_filters_client_side() {
    let subject = Digest::sha256_of(b"subject");
    let d = |s: &str, t: &str| {
        json!({"mediaType": OCI_MANIFEST, "digest": Digest::sha256_of(s.as_bytes()).to_string(),
               "size": 10, "artifactType": t, "annotations": {"k": s}})
    };
    let page1 = json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[d("a","soci/v1"), d("b","other")]});
    let page2 = json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[d("c","soci/v1")]});
    let server = Server::start(move |req| {
        assert!(req.path().starts_with("/v2/demo/app/referrers/sha256:"));
        if req.query().contains("page=2") {
            Response::new(200)
                .header("Content-Type", OCI_INDEX)
                .json(&page2)
                .into()
        } else {
            assert!(
                req.query().contains("artifactType=soci%2Fv1"),
                "{}",
                req.query()
            );
            Response::new(200)
                .header("Content-Type", OCI_INDEX)
                .header("Link", &format!("<{}?page=2>; rel=\"next\"", req.path()))
                .json(&page1)
                .into()
        }
    })
    .await;
    let refs = client()
        .referrers(&image(&server), &subject, Some("soci/v1"))
        .await
        .unwrap();
    assert_eq!(refs.source, ReferrersSource::Api);
    let keys: Vec<&str> = refs
        .descriptors
        .iter()
        .map(|d| d.annotations["k"].as_str())
        .collect();
    assert_eq!(keys, ["a", "c"], "filtered client-side, in registry order");
}

#[tokio::test]
async fn referrers_api_filter_applied_by_server_is_trusted() {
    let subject = Digest::sha256_of(b"subject");
    let server = Server::start(move |_req| {
        Response::new(200)
            .header("OCI-Filters-Applied", "artifactType")
            .json(&json!({"manifests":[{"mediaType": OCI_MANIFEST,
                "digest": Digest::sha256_of(b"x").to_string(), "size": 1}]}))
            .into()
    })
    .await;
    let refs = client()
        .referrers(&image(&server), &subject, Some("soci/v1"))
        .await
        .unwrap();
    assert_eq!(refs.descriptors.len(), 1);
}

/// In-memory registry subset: manifests by tag/digest, blob HEAD, uploads; no referrers API (404),
/// optional `OCI-Subject` on manifest PUT.
#[derive(Default)]
struct MiniRegistry {
    manifests: Mutex<std::collections::HashMap<String, (String, Vec<u8>)>>,
    blobs: Mutex<std::collections::HashMap<String, Vec<u8>>>,
    oci_subject: bool,
}

fn mini_registry(oci_subject: bool) -> (Arc<MiniRegistry>, impl Fn(&Request) -> Reply) {
    let st = Arc::new(MiniRegistry {
        oci_subject,
        ..Default::default()
    });
    let s = st.clone();
    let handler = move |req: &Request| -> Reply {
        let path = req.path().to_owned();
        if let Some(reference) = path.strip_prefix("/v2/demo/app/manifests/") {
            match req.method.as_str() {
                "PUT" => {
                    let digest = Digest::sha256_of(&req.body).to_string();
                    let mt = req.header("content-type").unwrap_or_default().to_owned();
                    let mut m = s.manifests.lock().unwrap();
                    m.insert(reference.to_owned(), (mt.clone(), req.body.clone()));
                    m.insert(digest.clone(), (mt, req.body.clone()));
                    let mut resp = Response::new(201).header("Docker-Content-Digest", &digest);
                    if s.oci_subject {
                        resp = resp.header("OCI-Subject", "sha256:whatever");
                    }
                    return resp.into();
                }
                "GET" | "HEAD" => {
                    return match s.manifests.lock().unwrap().get(reference) {
                        Some((mt, b)) => Response::new(200)
                            .header("Content-Type", mt)
                            .header("Docker-Content-Digest", &Digest::sha256_of(b).to_string())
                            .body(b.clone())
                            .into(),
                        None => Response::new(404).into(),
                    }
                }
                "DELETE" => {
                    s.manifests.lock().unwrap().remove(reference);
                    return Response::new(202).into();
                }
                _ => {}
            }
        }
        if let Some(d) = path.strip_prefix("/v2/demo/app/blobs/") {
            if d.starts_with("sha256:") {
                return match s.blobs.lock().unwrap().get(d) {
                    Some(b) => Response::new(200).body(b.clone()).into(),
                    None => Response::new(404).into(),
                };
            }
        }
        if path == "/v2/demo/app/blobs/uploads/" && req.method == "POST" {
            return Response::new(202)
                .header("Location", "/upload/1?_state=abc")
                .into();
        }
        if path == "/upload/1" && req.method == "PUT" {
            let digest = req
                .query()
                .split('&')
                .find_map(|kv| kv.strip_prefix("digest="))
                .unwrap()
                .replace("%3A", ":");
            assert!(req.query().contains("_state=abc"));
            s.blobs.lock().unwrap().insert(digest, req.body.clone());
            return Response::new(201).into();
        }
        Response::new(404).into()
    };
    (st, handler)
}

fn artifact_with_subject(subject: &Digest, size: usize, name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.amazon.soci.index.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": Digest::sha256_of(b"{}").to_string(), "size": 2},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": size},
        "annotations": {"name": name}
    }))
    .unwrap()
}

#[tokio::test]
async fn push_with_subject_maintains_tag_index_unless_registry_says_oci_subject() {
    // Registry without OCI-Subject: the client maintains sha256-<hex>.
    let (st, handler) = mini_registry(false);
    let server = Server::start(handler).await;
    let c = client();
    let r = image(&server);
    let img = manifest_body();
    let pushed = c
        .push_manifest(&r, OCI_MANIFEST, Bytes::from(img.clone()))
        .await
        .unwrap();
    assert!(!pushed.oci_subject);
    assert_eq!(pushed.referrers_index, None);
    let a = artifact_with_subject(&pushed.digest, img.len(), "a");
    let pa = c
        .push_manifest(
            &r.to_digest(&Digest::sha256_of(&a)),
            OCI_MANIFEST,
            Bytes::from(a),
        )
        .await
        .unwrap();
    let idx = pa.referrers_index.expect("index maintained");
    let tag = pushed.digest.referrers_tag();
    let stored = st.manifests.lock().unwrap().get(&tag).cloned().unwrap();
    assert_eq!(stored.0, OCI_INDEX);
    assert_eq!(Digest::sha256_of(&stored.1), idx);
    let refs = c.referrers(&r, &pushed.digest, None).await.unwrap();
    assert_eq!(refs.source, ReferrersSource::TagSchema);
    assert_eq!(refs.descriptors.len(), 1);
    assert_eq!(
        refs.descriptors[0].artifact_type.as_deref(),
        Some("application/vnd.amazon.soci.index.v1+json")
    );
    assert_eq!(refs.descriptors[0].annotations["name"], "a");

    // Registry with OCI-Subject: nothing else is written.
    let (st, handler) = mini_registry(true);
    let server = Server::start(handler).await;
    let r = image(&server);
    let a = artifact_with_subject(&pushed.digest, img.len(), "a");
    let pa = c
        .push_manifest(&r, OCI_MANIFEST, Bytes::from(a))
        .await
        .unwrap();
    assert!(pa.oci_subject);
    assert_eq!(pa.referrers_index, None);
    assert!(st.manifests.lock().unwrap().get(&tag).is_none());
}

#[tokio::test]
async fn push_blob_skips_existing_and_uploads_monolithically() {
    let (st, handler) = mini_registry(false);
    let server = Server::start(handler).await;
    let c = client();
    let r = image(&server);
    let data = Bytes::from(pattern(4096));
    let p = c
        .push_blob(&r, data.clone(), &PushBlobOptions::new())
        .await
        .unwrap();
    assert_eq!(p.outcome, BlobPushOutcome::Uploaded);
    assert_eq!(st.blobs.lock().unwrap()[p.digest.as_str()], data.to_vec());
    let p2 = c
        .push_blob(&r, data, &PushBlobOptions::new())
        .await
        .unwrap();
    assert_eq!(p2.outcome, BlobPushOutcome::AlreadyExists);
    assert_eq!(server.count("PUT", "/upload/1"), 1);
}

#[tokio::test]
async fn concurrent_challenges_fetch_one_token_and_futures_are_send() {
    let (st, handler) = token_registry(1000);
    let server = Server::start(handler).await;
    let c = Client::builder()
        .plain_http(PlainHttp::Loopback)
        .auth(Auth::basic("alice", "secret"))
        .build()
        .unwrap();
    let r = image(&server);
    // tokio::spawn requires the futures to be Send.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (c, r) = (c.clone(), r.clone());
            tokio::spawn(async move { c.get_manifest(&r).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        st.issued.load(Ordering::SeqCst),
        1,
        "one token for 8 concurrent 401s"
    );
}

#[tokio::test]
async fn empty_206_bodies_do_not_loop_forever() {
    let server = Server::start(|req: &Request| {
        let (a, _) = req.range().unwrap();
        Response::new(206)
            .header("Content-Range", &format!("bytes {a}-{}/1000", a + 9))
            .header("Content-Length", "0")
            .into()
    })
    .await;
    let err = client()
        .read_range(&image(&server), &Digest::sha256_of(b""), 0, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BadContentRange { .. }), "{err:?}");
    assert_eq!(server.requests().len(), 5, "1 + max_retries(4)");
}

#[tokio::test]
async fn range_reads_reuse_the_storage_url_and_re_resolve_when_it_expires() {
    let blob = pattern(8000);
    let digest = Digest::sha256_of(&blob);
    // The registry hands out pre-signed URLs `?sig=<n>`; storage accepts only the current n.
    let current = Arc::new(AtomicUsize::new(1));
    let cur2 = current.clone();
    let b2 = blob.clone();
    let storage = Server::start(move |req: &Request| {
        let want = format!("sig={}", cur2.load(Ordering::SeqCst));
        if req.query() != want {
            return Response::new(403)
                .body("<Error><Code>AccessDenied</Code></Error>")
                .into();
        }
        serve_range(req, &b2).into()
    })
    .await;
    let storage_port = storage.addr.port();
    let cur3 = current.clone();
    let registry = Server::start(move |_req: &Request| {
        Response::new(307)
            .header(
                "Location",
                &format!(
                    "http://localhost:{storage_port}/blob?sig={}",
                    cur3.load(Ordering::SeqCst)
                ),
            )
            .into()
    })
    .await;
    let c = client();
    let r = image(&registry);
    for i in 0..4u64 {
        let got = c.read_range(&r, &digest, i * 100, 100).await.unwrap();
        assert_eq!(
            got.as_ref(),
            &blob[(i * 100) as usize..(i * 100 + 100) as usize]
        );
    }
    assert_eq!(
        registry.requests().len(),
        1,
        "resolved once, then storage directly"
    );
    assert_eq!(storage.requests().len(), 4);

    // The pre-signed URL expires: storage says 403, the client asks the registry for a new one.
    current.store(2, Ordering::SeqCst);
    let got = c.read_range(&r, &digest, 7000, 1000).await.unwrap();
    assert_eq!(got.as_ref(), &blob[7000..]);
    assert_eq!(registry.requests().len(), 2);
    let last = storage.requests().pop().unwrap();
    assert_eq!(last.query(), "sig=2");
    assert_eq!(last.header("range"), Some("bytes=7000-7999"));
}

#[tokio::test]
async fn rotated_helper_credentials_are_picked_up_after_ecr_style_403() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("password");
    std::fs::write(&pw_file, "pw1").unwrap();
    let helper = dir.path().join("docker-credential-rotating");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"AWS\",\"Secret\":\"%s\"}}' \"$server\" \"$(cat {})\"\n",
            pw_file.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let valid = Arc::new(Mutex::new("pw1".to_owned()));
    let v2 = valid.clone();
    let body = manifest_body();
    let server = Server::start(move |req: &Request| {
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("AWS:{}", v2.lock().unwrap()))
        );
        match req.header("authorization") {
            None => Response::new(401)
                .header("WWW-Authenticate", "Basic realm=\"ecr\"")
                .into(),
            Some(a) if a == want => Response::new(200)
                .header("Content-Type", OCI_MANIFEST)
                .body(body.clone())
                .into(),
            Some(_) => Response::new(403)
                .json(&json!({"errors":[{"code":"DENIED",
                    "message":"Your authorization token has expired. Reauthenticate and try again."}]}))
                .into(),
        }
    })
    .await;
    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        format!(r#"{{"credHelpers":{{"{}":"rotating"}}}}"#, server.host()),
    )
    .unwrap();
    let c = Client::builder()
        .plain_http(PlainHttp::Loopback)
        .auth(Auth::DockerConfig(
            DockerConfig::at(&cfg).with_helper_dir(dir.path()),
        ))
        .build()
        .unwrap();
    let r = image(&server);
    c.get_manifest(&r).await.unwrap();
    c.get_manifest(&r).await.unwrap();

    // The token expires; the helper now hands out a new one.
    *valid.lock().unwrap() = "pw2".to_owned();
    std::fs::write(&pw_file, "pw2").unwrap();
    c.get_manifest(&r).await.unwrap();

    // Expired and the helper has nothing new: a clear error, no loop.
    *valid.lock().unwrap() = "pw3".to_owned();
    let before = server.requests().len();
    let err = c.get_manifest(&r).await.unwrap_err();
    assert!(
        matches!(err, Error::Unauthorized { status: 403, .. }),
        "{err:?}"
    );
    assert!(server.requests().len() - before <= 2);
}

#[tokio::test]
async fn streamed_upload_reopens_the_file_on_every_retry() {
    let data = pattern(300_000);
    let digest = Digest::sha256_of(&data);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    std::fs::write(&path, &data).unwrap();
    let (st, mini) = mini_registry(false);
    let puts = Arc::new(AtomicUsize::new(0));
    let p2 = puts.clone();
    // The first PUT is dropped without an answer (a reset after the body), the second gets a 503;
    // the third reaches the registry.
    let server = Server::start(move |req: &Request| {
        if req.method == "PUT" && req.path() == "/upload/1" {
            match p2.fetch_add(1, Ordering::SeqCst) {
                0 => return Reply::Drop,
                1 => return Response::new(503).into(),
                _ => {}
            }
        }
        mini(req)
    })
    .await;
    let r = image(&server);
    let src: Arc<dyn BlobSource> = Arc::new(BlobFile::new(&path));
    let p = client()
        .push_blob_from(
            &r,
            &digest,
            data.len() as u64,
            src.clone(),
            &PushBlobOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(p.outcome, BlobPushOutcome::Uploaded);
    assert_eq!(st.blobs.lock().unwrap()[digest.as_str()], data);
    // Every attempt sent the whole file with its length announced (no chunked encoding).
    let put_reqs: Vec<Request> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(put_reqs.len(), 3);
    for req in &put_reqs {
        assert_eq!(req.body, data);
        assert_eq!(req.header("content-length"), Some("300000"));
    }
    // Present now: skipped without reading the file.
    let p = client()
        .push_blob_from(&r, &digest, data.len() as u64, src, &PushBlobOptions::new())
        .await
        .unwrap();
    assert_eq!(p.outcome, BlobPushOutcome::AlreadyExists);

    // A missing file is a clear error, not a panic or a hang.
    let missing: Arc<dyn BlobSource> = Arc::new(BlobFile::new(dir.path().join("gone")));
    let other = Digest::sha256_of(b"other");
    match client()
        .push_blob_from(&r, &other, 5, missing, &PushBlobOptions::new())
        .await
    {
        Err(Error::ReadSource { url, .. }) => assert!(url.contains("/upload/1"), "{url}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn streamed_chunked_upload_resends_a_failed_chunk_from_its_offset() {
    let data = pattern(250_000);
    let digest = Digest::sha256_of(&data);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    std::fs::write(&path, &data).unwrap();
    let received = Arc::new(Mutex::new(Vec::<u8>::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let (rcv, fail) = (received.clone(), failed.clone());
    let server = Server::start(
        move |req: &Request| match (req.method.as_str(), req.path()) {
            ("HEAD", _) => Response::new(404).into(),
            ("POST", "/v2/demo/app/blobs/uploads/") => {
                Response::new(202).header("Location", "/upload/c").into()
            }
            ("PATCH", "/upload/c") => {
                let mut got = rcv.lock().unwrap();
                let range = req.header("content-range").unwrap_or_default().to_owned();
                let start: usize = range.split('-').next().unwrap().parse().unwrap();
                // The second chunk fails once with a 500 and must come again from its offset.
                if start > 0 && fail.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Response::new(500).into();
                }
                assert_eq!(start, got.len(), "chunks arrive in order, once");
                got.extend_from_slice(&req.body);
                Response::new(202).header("Location", "/upload/c").into()
            }
            ("PUT", "/upload/c") => {
                assert!(req.body.is_empty());
                Response::new(201).into()
            }
            _ => Response::new(404).into(),
        },
    )
    .await;
    let p = client()
        .push_blob_from(
            &image(&server),
            &digest,
            data.len() as u64,
            Arc::new(BlobFile::new(&path)),
            &PushBlobOptions::new().chunk_size(100_000),
        )
        .await
        .unwrap();
    assert_eq!(p.outcome, BlobPushOutcome::Uploaded);
    assert_eq!(*received.lock().unwrap(), data);
    // Three chunks plus the one retry.
    assert_eq!(server.count("PATCH", "/upload/c"), 4);
}

#[tokio::test]
async fn http_hook_sees_every_exchange_with_credentials_redacted() {
    let (_st, handler) = token_registry(1000);
    let server = Server::start(handler).await;
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let ev = events.clone();
    let c = Client::builder()
        .plain_http(PlainHttp::Loopback)
        .auth(Auth::basic("alice", "secret"))
        .http_hook(Arc::new(move |e: &HttpEvent| {
            ev.lock().unwrap().push(e.to_string());
        }))
        .build()
        .unwrap();
    c.get_manifest(&image(&server)).await.unwrap();
    let events = events.lock().unwrap().clone();
    let all = events.join("\n");
    // GET (401), token GET (200), GET again with the token (200): three requests, three responses.
    assert_eq!(events.len(), 6, "{all}");
    assert!(events[0].starts_with("> GET http://127.0.0.1:"), "{all}");
    assert!(events[1].starts_with("< 401 Unauthorized (GET "), "{all}");
    assert!(
        events[1].contains("www-authenticate: Bearer realm="),
        "{all}"
    );
    assert!(events[2].starts_with("> GET http://127.0.0.1:") && events[2].contains("/token?"));
    assert!(events[2].contains("\n>   authorization: REDACTED"), "{all}");
    assert!(events[4].contains("\n>   authorization: REDACTED"), "{all}");
    assert!(events[5].starts_with("< 200 OK (GET "), "{all}");
    // Neither the password, the Basic header, nor the issued token appear anywhere.
    for secret in ["secret", "YWxpY2U6c2VjcmV0", "tok-1"] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
}

#[tokio::test]
async fn tls_handshake_failure_is_not_retried() {
    // A plain-HTTP server answering a TLS ClientHello the way Go's net/http does: a TLS protocol
    // error that retrying cannot fix (spec §5.12), so exactly one connection is made.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c2 = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            c2.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
                .await;
        }
    });
    let https = Client::builder()
        .plain_http(PlainHttp::Never)
        .retry_wait(Duration::from_millis(1), Duration::from_millis(10))
        .max_retries(4)
        .request_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r: Reference = format!("{addr}/demo/app:v1").parse().unwrap();
    let err = https.get_manifest(&r).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("https://"), "{msg}");
    assert_eq!(conns.load(Ordering::SeqCst), 1, "{msg}: {err:?}");
}
