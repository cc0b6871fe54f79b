//! Endpoint overrides (mirrors, spec §5.12): requests for a reference go to another host and API
//! path, and authentication is answered for that host.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{pattern, serve_range, Request, Response, Server};
use serde_json::json;
use soci_registry::{Auth, Client, Digest, DockerConfig, Endpoint, PlainHttp};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

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

fn builder(endpoint: Endpoint) -> soci_registry::ClientBuilder {
    let mut b = Client::builder();
    b.plain_http(PlainHttp::Never)
        .retry_wait(Duration::from_millis(1), Duration::from_millis(5))
        .max_retries(1)
        .endpoint(endpoint);
    b
}

#[tokio::test]
async fn requests_go_to_the_endpoint_host_and_path() {
    let blob = pattern(10_000);
    let digest = Digest::sha256_of(&blob);
    let manifest = manifest_body();
    let (b2, m2, d2) = (blob.clone(), manifest.clone(), digest.clone());
    let server = Server::start(move |req: &Request| {
        match req.path() {
            "/mirror/v2/demo/app/manifests/v1" => Response::new(200)
                .header("Content-Type", OCI_MANIFEST)
                .body(m2.clone()),
            p if p == format!("/mirror/v2/demo/app/blobs/{d2}") => serve_range(req, &b2),
            _ => Response::new(404),
        }
        .into()
    })
    .await;
    // The reference names a registry that does not exist (and would be https): only the endpoint
    // is contacted, over plain HTTP as the endpoint says.
    let r = "registry.invalid:5000/demo/app:v1".parse().unwrap();
    let e = Endpoint::new(&server.host(), true)
        .unwrap()
        .with_path("mirror/v2/")
        .unwrap();
    let c = builder(e).build().unwrap();
    let m = c.get_manifest(&r).await.unwrap();
    assert_eq!(m.bytes.as_ref(), manifest.as_slice());
    let part = c.read_range(&r, &digest, 100, 50).await.unwrap();
    assert_eq!(part.as_ref(), &blob[100..150]);
    let whole = c
        .get_blob(&r, &digest, Some(blob.len() as u64))
        .await
        .unwrap();
    assert_eq!(whole.len(), blob.len());
    let paths: Vec<String> = server
        .requests()
        .iter()
        .map(|q| q.path().to_owned())
        .collect();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(
        paths.iter().all(|p| p.starts_with("/mirror/v2/demo/app/")),
        "{paths:?}"
    );
    assert_eq!(server.requests()[1].header("range"), Some("bytes=100-149"));

    // Without the endpoint the same client settings would go to the reference's host.
    let other = "127.0.0.1:1/demo/app:v1".parse().unwrap();
    let e = Endpoint::new(&server.host(), true).unwrap();
    let c = builder(e).build().unwrap();
    // Default API path /v2: the server only serves /mirror/v2, so this is a 404 from the endpoint
    // (not a connection error from 127.0.0.1:1).
    let err = c.get_manifest(&other).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(
        server.requests().last().map(|q| q.path().to_owned()),
        Some("/v2/demo/app/manifests/v1".to_owned())
    );
}

#[tokio::test]
async fn bearer_challenge_is_answered_for_the_endpoint_host() {
    let issued = Arc::new(AtomicUsize::new(0));
    let manifest = manifest_body();
    let (i2, m2) = (issued.clone(), manifest.clone());
    let server = Server::start(move |req: &Request| {
        let host = req.header("host").unwrap_or_default().to_owned();
        if req.path() == "/token" {
            // base64("alice:secret"): the credentials stored for the mirror's host.
            if req.header("authorization") != Some("Basic YWxpY2U6c2VjcmV0") {
                return Response::new(401).into();
            }
            assert!(
                req.query().contains("scope=repository%3Ademo%2Fapp%3Apull"),
                "{}",
                req.query()
            );
            i2.fetch_add(1, Ordering::SeqCst);
            return Response::new(200)
                .json(&json!({"token": "mirror-token", "expires_in": 300}))
                .into();
        }
        if req.header("authorization") != Some("Bearer mirror-token") {
            return Response::new(401)
                .header(
                    "WWW-Authenticate",
                    &format!("Bearer realm=\"http://{host}/token\",service=\"mirror\""),
                )
                .into();
        }
        Response::new(200)
            .header("Content-Type", OCI_MANIFEST)
            .body(m2.clone())
            .into()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    // Credentials for the mirror only; the reference's registry has other ones.
    std::fs::write(
        &cfg,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6c2VjcmV0"}},"primary.invalid":{{"auth":"Ym9iOm5v"}}}}}}"#,
            server.host()
        ),
    )
    .unwrap();
    let e = Endpoint::new(&server.host(), true).unwrap();
    let c = builder(e)
        .auth(Auth::DockerConfig(DockerConfig::at(&cfg)))
        .build()
        .unwrap();
    let r = "primary.invalid/demo/app:v1".parse().unwrap();
    for _ in 0..3 {
        let m = c.get_manifest(&r).await.unwrap();
        assert_eq!(m.bytes.as_ref(), manifest.as_slice());
    }
    assert_eq!(
        issued.load(Ordering::SeqCst),
        1,
        "token cached per mirror host"
    );
    let reqs = server.requests();
    // challenge, token, retry, then two straight requests with the cached token.
    assert_eq!(reqs.len(), 5, "{reqs:#?}");
}

#[tokio::test]
async fn endpoint_scheme_replaces_the_plain_http_policy() {
    let server = Server::start(|_req: &Request| Response::new(200).into()).await;
    // https to a plain-HTTP server fails at the TLS layer: the request never reaches the handler
    // as HTTP. With plain_http the same policy reaches it.
    let r = "registry.invalid/demo/app:v1".parse().unwrap();
    let tls = builder(Endpoint::new(&server.host(), false).unwrap())
        .build()
        .unwrap();
    assert!(tls.blob_exists(&r, &Digest::sha256_of(b"x")).await.is_err());
    assert!(server.requests().is_empty());
    let plain = builder(Endpoint::new(&server.host(), true).unwrap())
        .no_request_timeout()
        .build()
        .unwrap();
    assert_eq!(
        plain
            .blob_exists(&r, &Digest::sha256_of(b"x"))
            .await
            .unwrap(),
        Some(0)
    );
    assert_eq!(server.requests().len(), 1);
}
