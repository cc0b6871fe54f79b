//! Prometheus metrics (spec §5.15), served as text at `GET /metrics`.
//!
//! Counters of the reference implementation are exposed without the OpenMetrics `_total` suffix
//! (tests parse e.g. `soci_fs_operation_count{layer="",operation_type="fuse_mount_failure_count"} 0`),
//! so they are registered as prometheus-client gauges that only ever increase.

use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels `{layer, operation_type}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// Layer digest (empty for global counters).
    pub layer: String,
    /// Operation name.
    pub operation_type: String,
}

/// Labels `{digest, mountpoint}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LayerLabels {
    /// Layer digest.
    pub digest: String,
    /// Mount point.
    pub mountpoint: String,
}

/// All metrics of the daemon.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// `soci_fs_operation_count`.
    pub operation_count: Family<OpLabels, Gauge>,
    /// `soci_fs_operation_duration_milliseconds` (sum only; histogram buckets not yet exported).
    pub bytes_served: Family<OpLabels, Gauge>,
    /// `soci_fs_layer_fetched_size_bytes`.
    pub layer_fetched: Family<LayerLabels, Gauge>,
    /// `soci_fs_layer_size_bytes`.
    pub layer_size: Family<LayerLabels, Gauge>,
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let operation_count = Family::<OpLabels, Gauge>::default();
    let bytes_served = Family::<OpLabels, Gauge>::default();
    let layer_fetched = Family::<LayerLabels, Gauge>::default();
    let layer_size = Family::<LayerLabels, Gauge>::default();
    registry.register(
        "soci_fs_operation_count",
        "count of file system operations",
        operation_count.clone(),
    );
    registry.register(
        "soci_fs_bytes_served",
        "bytes served by file system operations",
        bytes_served.clone(),
    );
    registry.register(
        "soci_fs_layer_fetched_size_bytes",
        "bytes fetched per mounted lazy layer",
        layer_fetched.clone(),
    );
    registry.register(
        "soci_fs_layer_size_bytes",
        "size of each mounted lazy layer",
        layer_size.clone(),
    );
    // Pre-create the global counters at 0, as upstream does.
    for op in [
        "fuse_mount_failure_count",
        "local_mount_failure_count",
        "background_fetch_work_queue_evicted",
        "preresolve_queue_drop",
    ] {
        let _ = operation_count.get_or_create(&OpLabels {
            layer: String::new(),
            operation_type: op.into(),
        });
    }
    Metrics {
        registry: Mutex::new(registry),
        operation_count,
        bytes_served,
        layer_fetched,
        layer_size,
    }
});

/// Increments a global (`layer=""`) operation counter.
pub fn inc_global(op: &str) {
    inc(op, "");
}

/// Increments an operation counter for a layer.
pub fn inc(op: &str, layer: &str) {
    METRICS
        .operation_count
        .get_or_create(&OpLabels {
            layer: layer.into(),
            operation_type: op.into(),
        })
        .inc();
}

/// Current value of an operation counter (tests).
pub fn get(op: &str, layer: &str) -> i64 {
    METRICS
        .operation_count
        .get_or_create(&OpLabels {
            layer: layer.into(),
            operation_type: op.into(),
        })
        .get()
}

type Refresher = Box<dyn Fn() + Send + Sync>;
static REFRESHERS: Mutex<Vec<Refresher>> = Mutex::new(Vec::new());

/// Registers a function run before every scrape (to update collector-style gauges).
pub fn add_refresher(f: impl Fn() + Send + Sync + 'static) {
    REFRESHERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Box::new(f));
}

/// Sets `soci_fs_layer_size_bytes` and `soci_fs_layer_fetched_size_bytes` of a mounted layer.
pub fn set_layer(digest: &str, mountpoint: &str, size: u64, fetched: u64) {
    let l = LayerLabels {
        digest: digest.into(),
        mountpoint: mountpoint.into(),
    };
    METRICS.layer_size.get_or_create(&l).set(size as i64);
    METRICS.layer_fetched.get_or_create(&l).set(fetched as i64);
}

/// Drops the per-layer series of an unmounted layer.
pub fn remove_layer(digest: &str, mountpoint: &str) {
    let l = LayerLabels {
        digest: digest.into(),
        mountpoint: mountpoint.into(),
    };
    METRICS.layer_size.remove(&l);
    METRICS.layer_fetched.remove(&l);
}

/// Prometheus text exposition.
pub fn encode() -> String {
    for f in REFRESHERS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        f();
    }
    let mut out = String::new();
    let reg = METRICS.registry.lock().unwrap_or_else(|e| e.into_inner());
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

/// Serves `GET /metrics` on `network` (`tcp` or `unix`) at `address` until the process exits.
pub async fn serve(network: &str, address: &str) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn handle<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) {
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap_or(0);
        let req = String::from_utf8_lossy(&buf[..n]);
        let path = req.split_whitespace().nth(1).unwrap_or("");
        let resp = if path == "/metrics" {
            let body = encode();
            format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
        } else {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
        };
        let _ = s.write_all(resp.as_bytes()).await;
        let _ = s.shutdown().await;
    }
    if network == "unix" {
        let path = std::path::Path::new(address);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let l = tokio::net::UnixListener::bind(path)?;
        tracing::info!(address, "metrics listening on unix socket");
        loop {
            let (s, _) = l.accept().await?;
            tokio::spawn(handle(s));
        }
    } else {
        let l = tokio::net::TcpListener::bind(address).await?;
        tracing::info!(address, "metrics listening on tcp");
        loop {
            let (s, _) = l.accept().await?;
            tokio::spawn(handle(s));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn global_counter_line_format() {
        super::inc_global("fuse_mount_failure_count");
        let text = super::encode();
        assert!(
            text.lines().any(|l| l.starts_with(
                "soci_fs_operation_count{layer=\"\",operation_type=\"fuse_mount_failure_count\"} "
            )),
            "{text}"
        );
    }
}
