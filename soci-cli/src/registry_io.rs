//! Registry sources and destinations for `soci convert --standalone` (beyond the Go CLI: lets CI
//! convert registry → registry without containerd). All soci-registry calls live here.

use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use anyhow::{anyhow, Context, Result};
use soci_index::store::ContentStore;
use soci_index::{media_type, Descriptor, Digest, ImageIndex, Manifest};
use soci_registry::{Auth, BlobFile, Client, HttpEvent, PlainHttp, PushBlobOptions, Reference};
use tokio::io::AsyncWrite;

use crate::convert_cmd::ConvertArgs;
use crate::convert_core::{collect_graph, is_index_media_type, Workspace};
use crate::global::BuildOptions;

/// Whether `s` names a registry image rather than a local path: it does not start with `/` or
/// `.`, does not exist locally, and its first component is a host (`localhost`, or contains `.`
/// or `:`) followed by a repository.
pub(crate) fn is_registry_ref(s: &str) -> bool {
    if s.starts_with('/') || s.starts_with('.') || Path::new(s).exists() {
        return false;
    }
    let Some((host, rest)) = s.split_once('/') else {
        return false;
    };
    !rest.is_empty() && (host == "localhost" || host.contains('.') || host.contains(':'))
}

/// A registry client: `--user` credentials or the Docker config file; `--plain-http`; with
/// `--debug`, every HTTP request and response goes to stderr (credentials redacted by
/// soci-registry before they reach the hook).
pub(crate) fn client_for(user: Option<&str>, plain_http: bool, debug: bool) -> Result<Client> {
    let auth = match user {
        Some(u) => Auth::from_user_arg(u),
        None => Auth::docker_config(),
    };
    let mut b = Client::builder();
    b.auth(auth).plain_http(if plain_http {
        PlainHttp::Always
    } else {
        PlainHttp::Never
    });
    if debug {
        b.http_hook(Arc::new(|event: &HttpEvent| eprintln!("{event}")));
    }
    Ok(b.build()?)
}

/// A blocking writer driven from async code ([`Client::copy_blob`] into a content store blob):
/// local file writes are short and the current-thread runtime has nothing else to run meanwhile.
struct BlockingWrite<'a, W>(&'a mut W);

impl<W: Write> AsyncWrite for BlockingWrite<'_, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.get_mut().0.write(buf))
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.get_mut().0.flush())
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Downloads blob `d` of `r` into `store`, streaming (never the whole blob in memory); digest and
/// size are verified while copying and again when the blob is committed.
pub(crate) async fn download(
    client: &Client,
    r: &Reference,
    d: &Descriptor,
    store: &ContentStore,
) -> Result<()> {
    if store.contains(&d.digest) {
        return Ok(());
    }
    let mut w = store.writer(&d.digest)?;
    client
        .copy_blob(
            r,
            &reg_digest(&d.digest)?,
            Some(d.size),
            &mut BlockingWrite(&mut w),
        )
        .await
        .with_context(|| format!("failed to fetch blob {}", d.digest))?;
    w.commit(Some(d.size))?;
    Ok(())
}

/// Uploads the file at `path` as blob `d` to `dst`, streaming from the file (re-opened by every
/// retry); `opts` as for [`Client::push_blob`].
pub(crate) async fn upload_file(
    client: &Client,
    dst: &Reference,
    d: &Descriptor,
    path: &Path,
    opts: &PushBlobOptions,
) -> Result<()> {
    client
        .push_blob_from(
            dst,
            &reg_digest(&d.digest)?,
            d.size,
            Arc::new(BlobFile::new(path)),
            opts,
        )
        .await
        .with_context(|| format!("failed to push blob {}", d.digest))?;
    Ok(())
}

fn is_manifest_type(m: &str) -> bool {
    m == media_type::OCI_MANIFEST || m == media_type::DOCKER_MANIFEST
}

fn idx_digest(d: &soci_registry::Digest) -> Result<Digest> {
    Ok(Digest::parse(&d.to_string())?)
}

pub(crate) fn reg_digest(d: &Digest) -> Result<soci_registry::Digest> {
    d.as_str()
        .parse()
        .map_err(|e| anyhow!("invalid digest {d}: {e}"))
}

/// Pulls the image `r` (every manifest of an index, their configs and layers) into `store` and
/// writes an `index.json` pointing at it.
pub(crate) fn pull(client: &Client, r: &Reference, store: &ContentStore) -> Result<()> {
    let rt = runtime()?;
    rt.block_on(async {
        let top = client
            .get_manifest(r)
            .await
            .with_context(|| format!("failed to fetch {r}"))?;
        let top_digest = idx_digest(&top.digest)?;
        store.write(&top_digest, &top.bytes)?;
        let root = Descriptor::new(top.media_type.clone(), top_digest, top.bytes.len() as u64);
        let mut manifests: Vec<bytes::Bytes> = Vec::new();
        if is_index_media_type(&top.media_type) {
            for child in ImageIndex::from_json(&top.bytes)?.manifests {
                let m = client
                    .get_manifest(&r.to_digest(&reg_digest(&child.digest)?))
                    .await
                    .with_context(|| format!("failed to fetch manifest {}", child.digest))?;
                store.write(&child.digest, &m.bytes)?;
                manifests.push(m.bytes);
            }
        } else {
            manifests.push(top.bytes.clone());
        }
        for bytes in manifests {
            let m = Manifest::from_json(&bytes)?;
            for d in std::iter::once(&m.config).chain(m.layers.iter()) {
                download(client, r, d, store).await?;
            }
        }
        store.write_index_json(&ImageIndex::new(vec![root]).to_json())?;
        Ok(())
    })
}

/// Pushes the graph rooted at `root` to `dst`: blobs first (skipping those present, mounting
/// from `mount_from` when given), then manifests children-first, then the root under `dst`'s tag.
pub(crate) fn push(
    client: &Client,
    ws: &Workspace<'_>,
    root: &Descriptor,
    dst: &Reference,
    mount_from: Option<&Reference>,
    quiet: bool,
) -> Result<()> {
    let graph = collect_graph(ws, root)?;
    let rt = runtime()?;
    rt.block_on(async {
        for d in graph
            .iter()
            .filter(|d| !is_manifest_type(&d.media_type) && !is_index_media_type(&d.media_type))
        {
            let rd = reg_digest(&d.digest)?;
            if client.blob_exists(dst, &rd).await?.is_some() {
                continue;
            }
            let path = ws
                .path(&d.digest)
                .ok_or_else(|| anyhow!("{}: not found", d.digest))?;
            let mut opts = PushBlobOptions::new();
            if let Some(src) = mount_from {
                opts = opts.mount_from(src.clone());
            }
            upload_file(client, dst, d, &path, &opts).await?;
            if !quiet {
                eprintln!("pushed blob {}", d.digest);
            }
        }
        for d in graph.iter().rev().filter(|d| {
            (is_manifest_type(&d.media_type) || is_index_media_type(&d.media_type))
                && d.digest != root.digest
        }) {
            let data = ws
                .read(&d.digest)?
                .ok_or_else(|| anyhow!("{}: not found", d.digest))?;
            client
                .push_manifest(
                    &dst.to_digest(&reg_digest(&d.digest)?),
                    &d.media_type,
                    data.into(),
                )
                .await
                .with_context(|| format!("failed to push manifest {}", d.digest))?;
        }
        let data = ws
            .read(&root.digest)?
            .ok_or_else(|| anyhow!("{}: not found", root.digest))?;
        client
            .push_manifest(dst, &root.media_type, data.into())
            .await
            .with_context(|| format!("failed to push {dst}"))?;
        Ok(())
    })
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

/// `convert --standalone` with a registry reference on either side.
pub(crate) fn run(
    src: &str,
    dst: &str,
    dir_output: bool,
    args: &ConvertArgs,
    opts: &BuildOptions,
    debug: bool,
) -> Result<()> {
    let client = client_for(args.user.as_deref(), args.plain_http, debug)?;
    let tmp = crate::standalone::temp_dir(Path::new("."))?;
    let src_ref: Option<Reference> = if is_registry_ref(src) {
        Some(
            src.parse()
                .with_context(|| format!("invalid reference {src}"))?,
        )
    } else {
        None
    };
    let src_store = match &src_ref {
        Some(r) => {
            let s = ContentStore::open(tmp.path().join("src"))?;
            pull(&client, r, &s)?;
            s
        }
        None => crate::standalone::open_input(src, tmp.path())?,
    };
    if !is_registry_ref(dst) {
        return crate::standalone::finish_local(
            &src_store,
            dst,
            dir_output,
            tmp.path(),
            args,
            opts,
        );
    }
    let dst_ref: Reference = dst
        .parse()
        .with_context(|| format!("invalid reference {dst}"))?;
    let work = ContentStore::open(tmp.path().join("work"))?;
    let root = crate::standalone::convert_layout(
        &src_store,
        &work,
        &tmp.path().join("artifacts.redb"),
        args,
        opts,
    )?;
    let ws = Workspace {
        src: Some(&src_store),
        work: &work,
        layers: None,
    };
    let mount = src_ref
        .as_ref()
        .filter(|s| s.registry() == dst_ref.registry());
    push(&client, &ws, &root, &dst_ref, mount, opts.quiet)?;
    println!("{}", root.digest);
    Ok(())
}
