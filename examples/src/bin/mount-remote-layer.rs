//! Mounts one layer lazily straight from a registry, given its zTOC, serves it until Ctrl-C (or
//! SIGTERM), then unmounts and prints how much of the layer was fetched.
//!
//! `mount-remote-layer REGISTRY/REPO@LAYER_DIGEST ZTOC MOUNTPOINT [--plain-http]
//! [--background-fetch] [--cache DIR]`; needs root and /dev/fuse. Credentials come from the
//! Docker config (`~/.docker/config.json`). Log level from `RUST_LOG` (default `info`).
//!
//! Every span a read touches is one HTTP range request (`Client::read_range`) made through the
//! snapshotter's own registry `BlobSource` ([`soci_snapshotter::remote::soci::RegistryBlob`]).
//! Without `--background-fetch` nothing else is fetched, so the summary shows exactly what the
//! reads needed.

use std::process::ExitCode;
use std::sync::Arc;

use nix::sys::signal::{SigSet, Signal};
use soci_fs::{
    BackgroundFetchOptions, BackgroundFetcher, BlobSource, FsOptions, LayerFs, Metrics,
    MountOptions, SpanManager, SpanOptions, SpanState, Tree,
};
use soci_registry::{Auth, Client, PlainHttp, Reference};
use soci_snapshotter::remote::soci::RegistryBlob;

const USAGE: &str = "usage: mount-remote-layer REGISTRY/REPO@LAYER_DIGEST ZTOC MOUNTPOINT [--plain-http] [--background-fetch] [--cache DIR]";

struct Args {
    layer: Reference,
    ztoc: String,
    mountpoint: String,
    plain_http: bool,
    background: bool,
    cache: String,
}

fn parse(args: &[String]) -> Result<Args, Box<dyn std::error::Error>> {
    let mut pos = Vec::new();
    let (mut plain_http, mut background) = (false, false);
    let mut cache = "/tmp/soci-mount-remote-layer-cache".to_owned();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--plain-http" => plain_http = true,
            "--background-fetch" => background = true,
            "--cache" => cache = it.next().ok_or(USAGE)?.clone(),
            s if s.starts_with("--") => return Err(format!("unknown flag {s}\n{USAGE}").into()),
            _ => pos.push(a.clone()),
        }
    }
    let [layer, ztoc, mountpoint] = <[String; 3]>::try_from(pos).map_err(|_| USAGE)?;
    let layer: Reference = layer.parse()?;
    if layer.digest().is_none() {
        return Err(format!("{layer} names no layer digest (REGISTRY/REPO@sha256:…)").into());
    }
    Ok(Args {
        layer,
        ztoc,
        mountpoint,
        plain_http,
        background,
        cache,
    })
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let args = parse(args)?;
    // Block the signals before any thread starts so every thread inherits the mask and
    // only `wait` below receives them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block()?;

    // The runtime runs the registry client; soci-fs's FUSE and fetcher threads block on it
    // through `RegistryBlob`, and this thread only waits for a signal.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = Client::builder()
        .auth(Auth::docker_config())
        .plain_http(if args.plain_http {
            PlainHttp::Always
        } else {
            PlainHttp::Loopback
        })
        .build()?;
    let digest = args.layer.digest().cloned().ok_or(USAGE)?;

    let ztoc = soci_ztoc::Ztoc::from_bytes(&std::fs::read(&args.ztoc)?)?;
    let source: Arc<dyn BlobSource> = Arc::new(RegistryBlob::new(
        rt.handle().clone(),
        client,
        args.layer.clone(),
        digest.clone(),
    ));
    let metrics = Arc::new(Metrics::default());
    // Reads the gzip header (bytes before span 0): the first range request.
    let spans = SpanManager::new(
        &ztoc,
        source,
        args.cache.as_ref(),
        SpanOptions::default(),
        metrics.clone(),
    )?;
    let tree = Tree::from_ztoc(&ztoc)?;
    drop(ztoc);
    let fs = LayerFs::new(
        tree,
        spans.clone(),
        digest.to_string(),
        FsOptions::default(),
    );
    let mounted = soci_fs::mount(fs, &args.mountpoint, &MountOptions::default())?;
    let fetcher = args.background.then(|| {
        let f = BackgroundFetcher::new(BackgroundFetchOptions::default());
        f.add_layer(&spans);
        f
    });
    eprintln!(
        "mounted {} ({} bytes, {} spans) at {}; background fetch {}; Ctrl-C to unmount",
        args.layer,
        spans.blob_size(),
        spans.span_count(),
        args.mountpoint,
        if args.background { "on" } else { "off" },
    );

    let sig = signals.wait()?;
    eprintln!("{sig:?}: unmounting");
    let local = (0..spans.span_count())
        .filter(|&id| {
            matches!(
                spans.state(id),
                SpanState::Fetched | SpanState::Uncompressed
            )
        })
        .count();
    let (fetched, size) = (spans.fetched_size(), spans.blob_size());
    if let Some(f) = fetcher {
        f.stop();
    }
    mounted.unmount()?;
    drop(rt);
    let m = metrics.snapshot();
    eprintln!(
        "fetched {fetched} of {size} bytes ({:.1}%): {local} of {} spans local ({} on demand, {} read-ahead/prefetch, {} in background)",
        if size == 0 { 100.0 } else { fetched as f64 * 100.0 / size as f64 },
        spans.span_count(),
        m.on_demand_span_fetches,
        m.prefetch_span_fetches,
        m.background_span_fetch_count,
    );
    eprintln!(
        "served {} reads ({} bytes); {} source errors, {} digest mismatches, {} timeouts",
        m.synchronous_read_count,
        m.synchronous_bytes_served,
        m.source_errors,
        m.digest_mismatches,
        m.timeouts
    );
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                msg.push_str(&format!(": {c}"));
                cause = c.source();
            }
            eprintln!("mount-remote-layer: {msg}");
            ExitCode::FAILURE
        }
    }
}
