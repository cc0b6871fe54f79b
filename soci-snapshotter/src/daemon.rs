//! The daemon: startup sequence, listener, signals (spec §5.1).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{debug, info, warn};

use crate::config::{Config, DEFAULT_ADDRESS};
use crate::cri::{ImageProxy, ImageServiceServer};
use crate::error::{Error, Result};
use crate::service::{Service, SnapshotsServer};
use crate::snapshotter::{Options, Snapshotter};

/// What the binary passes in after parsing flags and loading the config.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// `--address`.
    pub address: String,
    /// `--root`.
    pub root: PathBuf,
    /// The loaded, validated config.
    pub config: Config,
    /// Unknown config keys (warned at startup).
    pub unknown_keys: Vec<String>,
}

/// Version string printed by `--version` and logged at startup.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Revision (set `SOCI_REVISION` at build time; `unknown` otherwise).
pub const REVISION: &str = match option_env!("SOCI_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// Where the gRPC server listens: a unix socket path, or the socket inherited from systemd.
enum Endpoint {
    Path(PathBuf),
    Inherited(std::os::unix::net::UnixListener),
}

fn endpoint(address: &str) -> Result<Endpoint> {
    if let Some(p) = address.strip_prefix("unix://") {
        return Ok(Endpoint::Path(PathBuf::from(p)));
    }
    if address.starts_with("fd://") {
        if let Some(l) = crate::activation::take_listener()? {
            return Ok(Endpoint::Inherited(l));
        }
        info!("socket activation (fd://): no listener inherited from systemd");
        info!(
            address = DEFAULT_ADDRESS,
            "falling back to the default socket"
        );
        return Ok(Endpoint::Path(PathBuf::from(DEFAULT_ADDRESS)));
    }
    if address.contains("://") {
        return Err(Error::Config(format!(
            "unsupported address scheme in {address:?}"
        )));
    }
    Ok(Endpoint::Path(PathBuf::from(address)))
}

fn bind(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(Error::io("failed to create socket directory", dir))?;
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => debug!(path = %path.display(), "removed stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("failed to remove stale socket", path)(e)),
    }
    UnixListener::bind(path).map_err(Error::io("failed to listen on", path))
}

fn notify(state: &str) {
    if let Ok(sock) = std::env::var("NOTIFY_SOCKET") {
        if let Ok(s) = std::os::unix::net::UnixDatagram::unbound() {
            let _ = s.send_to(state.as_bytes(), sock);
        }
    }
}

/// Runs the daemon until SIGINT (graceful: unmount everything, return `Ok`) or SIGTERM (return
/// without unmounting). Must be called inside a multi-thread tokio runtime.
pub async fn run(opts: DaemonOptions) -> Result<()> {
    info!(
        version = VERSION,
        revision = REVISION,
        "starting soci-snapshotter-grpc"
    );
    for k in &opts.unknown_keys {
        warn!(key = %k, "unknown config key ignored");
    }
    for w in opts.config.warnings() {
        warn!("{w}");
    }
    debug!(config = %serde_json::to_string(&opts.config).unwrap_or_default(), "effective config");
    let cfg = opts.config;
    {
        use std::os::unix::fs::DirBuilderExt;
        if !opts.root.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&opts.root)
                .map_err(Error::io("failed to create root", &opts.root))?;
        }
    }
    let snap_root = opts.root.join("snapshotter");
    std::fs::create_dir_all(&snap_root).map_err(Error::io("failed to create", &snap_root))?;
    if !cfg.skip_check_snapshotter_supported {
        crate::mount::check_overlay_supported(&snap_root)?;
    }
    let keychain = cfg
        .cri_keychain
        .enable_keychain
        .then(|| Arc::new(crate::cri::Keychain::new()));
    let remote = crate::remote::build(&cfg, &opts.root, keychain.clone())?;
    let snap = Snapshotter::open(
        &snap_root,
        remote,
        Options {
            min_layer_size: cfg.snapshotter.min_layer_size,
            allow_invalid_mounts_on_restart: cfg.snapshotter.allow_invalid_mounts_on_restart,
            userxattr: false,
            parallel: crate::snapshotter::ParallelMode::from_config(&cfg),
        },
    )?;
    let snap = Arc::new(snap);
    {
        let s = snap.clone();
        tokio::task::spawn_blocking(move || s.restore())
            .await
            .map_err(|e| Error::Config(format!("restore task failed: {e}")))??;
    }
    if !cfg.metrics_address.is_empty() && !cfg.no_prometheus {
        let (net, addr) = (cfg.metrics_network.clone(), cfg.metrics_address.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(&net, &addr).await {
                warn!(error = %e, address = %addr, "metrics listener failed");
            }
        });
    }
    // The socket file is removed at exit only when we created it (systemd owns an inherited one).
    let (listener, path, owned) = match endpoint(&opts.address)? {
        Endpoint::Path(p) => (bind(&p)?, p, true),
        Endpoint::Inherited(l) => {
            let path = l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from(&opts.address));
            let l = UnixListener::from_std(l)
                .map_err(|e| Error::Config(format!("inherited socket: {e}")))?;
            (l, path, false)
        }
    };

    let (tx, rx) = tokio::sync::oneshot::channel::<bool>();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        let graceful = tokio::select! {
            _ = int.recv() => { info!("Got interrupt"); true }
            _ = term.recv() => { info!("Got terminated"); false }
        };
        let _ = tx.send(graceful);
    });
    let graceful = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let g2 = graceful.clone();
    let shutdown = async move {
        let g = rx.await.unwrap_or(false);
        g2.store(g, std::sync::atomic::Ordering::SeqCst);
    };
    notify("READY=1");
    info!(address = %path.display(), "soci-snapshotter-grpc successfully started");
    let cri = keychain.map(|k| {
        let backend = &cfg.cri_keychain.image_service_path;
        info!(image_service_path = %backend, "serving the CRI image service (cri_keychain)");
        ImageServiceServer::new(ImageProxy::new(k, backend))
    });
    let server = tonic::transport::Server::builder()
        .add_service(SnapshotsServer::new(Service::new(snap.clone())))
        .add_optional_service(cri)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown);
    let res = server.await;
    notify("STOPPING=1");
    if graceful.load(std::sync::atomic::Ordering::SeqCst) {
        let s = snap.clone();
        let _ = tokio::task::spawn_blocking(move || s.close()).await;
    }
    if owned {
        let _ = std::fs::remove_file(&path);
    }
    info!("Exiting");
    res.map_err(|e| Error::Config(format!("grpc server: {e}")))
}
