//! Mounts one layer lazily from a local blob and its zTOC, serves it until Ctrl-C (or
//! SIGTERM), then unmounts and prints what was fetched.
//!
//! `mount-layer LAYER ZTOC MOUNTPOINT [CACHE_DIR]`; needs root and /dev/fuse. Log level from
//! `RUST_LOG` (default `info`).

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

use nix::sys::signal::{SigSet, Signal};
use soci_fs::{
    BackgroundFetchOptions, BackgroundFetcher, BlobSource, FileSource, FsOptions, LayerFs, Metrics,
    MountOptions, SpanManager, SpanOptions, Tree,
};

fn digest_of(path: &str) -> std::io::Result<String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [layer, ztoc_path, mountpoint, rest @ ..] = args else {
        return Err("usage: mount-layer LAYER ZTOC MOUNTPOINT [CACHE_DIR]".into());
    };
    let cache = rest
        .first()
        .map_or("/tmp/soci-mount-layer-cache", String::as_str);
    // Block the signals before any thread starts so every thread inherits the mask and
    // only `wait` below receives them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block()?;

    let ztoc = soci_ztoc::Ztoc::from_bytes(&std::fs::read(ztoc_path)?)?;
    let digest = digest_of(layer)?;
    let source: Arc<dyn BlobSource> = Arc::new(FileSource::open(layer)?);
    let metrics = Arc::new(Metrics::default());
    let spans = SpanManager::new(
        &ztoc,
        source,
        cache.as_ref(),
        SpanOptions::default(),
        metrics.clone(),
    )?;
    let tree = Tree::from_ztoc(&ztoc)?;
    drop(ztoc);
    let fs = LayerFs::new(tree, spans.clone(), digest.clone(), FsOptions::default());
    let fetcher = BackgroundFetcher::new(BackgroundFetchOptions::default());
    let mounted = soci_fs::mount(fs, mountpoint, &MountOptions::default())?;
    fetcher.add_layer(&spans);
    eprintln!("mounted {digest} at {mountpoint}; Ctrl-C to unmount");

    let sig = signals.wait()?;
    eprintln!("{sig:?}: unmounting");
    fetcher.stop();
    mounted.unmount()?;
    let m = metrics.snapshot();
    eprintln!(
        "served {} reads ({} bytes); fetched {} bytes: {} spans on demand, {} prefetched, {} in background; {} source errors, {} digest mismatches, {} timeouts",
        m.synchronous_read_count,
        m.synchronous_bytes_served,
        m.bytes_fetched,
        m.on_demand_span_fetches,
        m.prefetch_span_fetches,
        m.background_span_fetch_count,
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
            eprintln!("mount-layer: {e}");
            ExitCode::FAILURE
        }
    }
}
