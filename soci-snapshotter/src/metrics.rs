//! Prometheus metrics (spec §5.15), served as text at `GET /metrics`.
//!
//! Counters of the reference implementation are exposed without the OpenMetrics `_total` suffix
//! (tests parse e.g. `soci_fs_operation_count{layer="",operation_type="fuse_mount_failure_count"} 0`),
//! so they are registered as prometheus-client gauges that only ever increase.

use std::sync::{LazyLock, Mutex};

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Operations timed in milliseconds (`soci_fs_operation_duration_milliseconds`, buckets 1, 2, 4,
/// …, 16384).
pub const MILLISECOND_OPS: &[&str] = &[
    "mount",
    "remote_registry_get",
    "init_metadata_store",
    "background_fetch",
    "ztoc_unmarshal",
    "fuse_mount",
    "blob_redirect",
    "get_layer_size",
    "soci_index_fetch",
    "ztoc_fetch",
];

/// Operations timed in microseconds (`soci_fs_operation_duration_microseconds`, buckets 1, 2,
/// 4, …, 1024).
pub const MICROSECOND_OPS: &[&str] = &["node_readdir", "synchronous_read"];

type Histograms = Family<OpLabels, Histogram, fn() -> Histogram>;

fn millisecond_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

fn microsecond_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

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

/// Labels `{image, operation_type}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImageLabels {
    /// Image manifest digest (empty for `background_fetch_work_queue_size`).
    pub image: String,
    /// Operation name.
    pub operation_type: String,
}

/// All metrics of the daemon.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// `soci_fs_operation_count`.
    pub operation_count: Family<OpLabels, Gauge>,
    /// `soci_fs_bytes_served`.
    pub bytes_served: Family<OpLabels, Gauge>,
    /// `soci_fs_operation_duration_milliseconds`.
    pub duration_ms: Histograms,
    /// `soci_fs_operation_duration_microseconds`.
    pub duration_us: Histograms,
    /// `soci_fs_image_operation_count_key`.
    pub image_operation_count: Family<ImageLabels, Gauge>,
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
    let image_operation_count = Family::<ImageLabels, Gauge>::default();
    registry.register(
        "soci_fs_image_operation_count_key",
        "FUSE operations per image, emitted once after fuse_metrics_emit_wait_duration_sec",
        image_operation_count.clone(),
    );
    let duration_ms: Histograms = Family::new_with_constructor(millisecond_histogram);
    let duration_us: Histograms = Family::new_with_constructor(microsecond_histogram);
    registry.register(
        "soci_fs_operation_duration_milliseconds",
        "latency of file system operations in milliseconds",
        duration_ms.clone(),
    );
    registry.register(
        "soci_fs_operation_duration_microseconds",
        "latency of file system operations in microseconds",
        duration_us.clone(),
    );
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
        "fuse_failure_state",
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
        duration_ms,
        duration_us,
        image_operation_count,
        layer_fetched,
        layer_size,
    }
});

/// Records that `op` took `elapsed` for `layer` (for `soci_index_fetch`, the index digest) in
/// the histogram of its unit; operations of neither list are ignored.
pub fn observe(op: &str, layer: &str, elapsed: Duration) {
    let labels = OpLabels {
        layer: layer.into(),
        operation_type: op.into(),
    };
    if MICROSECOND_OPS.contains(&op) {
        METRICS
            .duration_us
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64() * 1e6);
    } else if MILLISECOND_OPS.contains(&op) {
        METRICS
            .duration_ms
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64() * 1e3);
    }
}

/// The per-layer FUSE counters of a layer's soci-fs metrics, by their spec names (§5.15).
fn layer_counters(s: &soci_fs::MetricsSnapshot) -> [(&'static str, u64); 10] {
    [
        ("synchronous_read_count", s.synchronous_read_count),
        (
            "synchronous_read_remote_registry_fetch_count",
            s.on_demand_span_fetches,
        ),
        ("background_span_fetch_count", s.background_span_fetch_count),
        (
            "background_span_fetch_failure_count",
            s.background_span_fetch_failure_count,
        ),
        ("fuse_node_getattr_failure_count", s.fuse_getattr_failures),
        (
            "fuse_node_listxattr_failure_count",
            s.fuse_listxattr_failures,
        ),
        ("fuse_node_lookup_failure_count", s.fuse_lookup_failures),
        ("fuse_node_open_failure_count", s.fuse_open_failures),
        ("fuse_node_readdir_failure_count", s.fuse_readdir_failures),
        ("fuse_file_read_failure_count", s.fuse_read_failures),
    ]
}

/// Publishes the counters of one layer (`layer` = its digest): the per-layer
/// `soci_fs_operation_count` series and `soci_fs_bytes_served{synchronous_bytes_served}`.
pub fn set_layer_counters(layer: &str, s: &soci_fs::MetricsSnapshot) {
    for (op, v) in layer_counters(s) {
        METRICS
            .operation_count
            .get_or_create(&OpLabels {
                layer: layer.into(),
                operation_type: op.into(),
            })
            .set(i64::try_from(v).unwrap_or(i64::MAX));
    }
    METRICS
        .bytes_served
        .get_or_create(&OpLabels {
            layer: layer.into(),
            operation_type: "synchronous_bytes_served".into(),
        })
        .set(i64::try_from(s.synchronous_bytes_served).unwrap_or(i64::MAX));
}

/// The FUSE operations counted per image (spec §5.11), summed over the image's layers.
pub fn image_operation_counts(layers: &[soci_fs::MetricsSnapshot]) -> [(&'static str, u64); 10] {
    let sum = |f: fn(&soci_fs::MetricsSnapshot) -> u64| layers.iter().map(f).sum::<u64>();
    [
        ("node.Getattr", sum(|s| s.node_getattr_count)),
        ("node.Getxattr", sum(|s| s.node_getxattr_count)),
        ("node.Listxattr", sum(|s| s.node_listxattr_count)),
        ("node.Lookup", sum(|s| s.node_lookup_count)),
        ("node.Open", sum(|s| s.node_open_count)),
        ("node.Readdir", sum(|s| s.node_readdir_count)),
        ("node.Readlink", sum(|s| s.node_readlink_count)),
        ("file.Read", sum(|s| s.file_read_count)),
        ("file.Getattr", sum(|s| s.file_getattr_count)),
        ("whiteout.Getattr", sum(|s| s.whiteout_getattr_count)),
    ]
}

/// Sets `soci_fs_image_operation_count_key{image, operation_type}` (for `image=""`, the
/// `background_fetch_work_queue_size`).
pub fn set_image_count(image: &str, op: &str, value: u64) {
    METRICS
        .image_operation_count
        .get_or_create(&ImageLabels {
            image: image.into(),
            operation_type: op.into(),
        })
        .set(i64::try_from(value).unwrap_or(i64::MAX));
}

/// How often a FUSE failure may raise `fuse_failure_state` (spec §5.11).
pub const FUSE_FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// Rate limit of `fuse_failure_state`: at most one increment per [`FUSE_FAILURE_WINDOW`].
#[derive(Debug, Default)]
pub struct FailureWindow {
    last: Option<std::time::Instant>,
}

impl FailureWindow {
    /// Whether a failure at `now` increments the counter (and starts a new window if so).
    pub fn nudge(&mut self, now: std::time::Instant) -> bool {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < FUSE_FAILURE_WINDOW)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

static FAILURE_WINDOW: Mutex<FailureWindow> = Mutex::new(FailureWindow { last: None });

/// A FUSE operation of some lazy layer failed: increments the global `fuse_failure_state`,
/// at most once per five minutes.
pub fn fuse_failure() {
    let nudge = FAILURE_WINDOW
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .nudge(std::time::Instant::now());
    if nudge {
        inc_global("fuse_failure_state");
    }
}

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
    use std::time::Duration;

    /// `(le, count)` of the bucket lines of histogram `name` for `layer` and `op`, in order
    /// (prometheus-client writes `le` first:
    /// `<name>_bucket{le="4.0",layer="…",operation_type="…"} 1`).
    fn buckets(text: &str, name: &str, layer: &str, op: &str) -> Vec<(String, String)> {
        let prefix = format!("{name}_bucket{{le=\"");
        let labels = format!("\",layer=\"{layer}\",operation_type=\"{op}\"}} ");
        text.lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|rest| rest.split_once(&labels))
            .map(|(le, count)| (le.to_string(), count.to_string()))
            .collect()
    }

    #[test]
    fn millisecond_histogram_buckets_and_lines() {
        let layer = "sha256:1111";
        super::observe("mount", layer, Duration::from_micros(2500));
        super::observe("mount", layer, Duration::from_millis(20_000));
        let text = super::encode();
        assert!(
            text.contains("# TYPE soci_fs_operation_duration_milliseconds histogram"),
            "{text}"
        );
        let b = buckets(
            &text,
            "soci_fs_operation_duration_milliseconds",
            layer,
            "mount",
        );
        let les: Vec<&str> = b.iter().map(|(le, _)| le.as_str()).collect();
        assert_eq!(
            les,
            [
                "1.0", "2.0", "4.0", "8.0", "16.0", "32.0", "64.0", "128.0", "256.0", "512.0",
                "1024.0", "2048.0", "4096.0", "8192.0", "16384.0", "+Inf"
            ],
            "{text}"
        );
        // Cumulative counts: 2.5 ms falls in le=4 and above; 20 s only in +Inf.
        let counts: Vec<&str> = b.iter().map(|(_, c)| c.as_str()).collect();
        assert_eq!(
            counts,
            ["0", "0", "1", "1", "1", "1", "1", "1", "1", "1", "1", "1", "1", "1", "1", "2"]
        );
        let count = format!(
            "soci_fs_operation_duration_milliseconds_count{{layer=\"{layer}\",operation_type=\"mount\"}} 2"
        );
        assert!(text.lines().any(|l| l == count), "{text}");
        let sum = format!(
            "soci_fs_operation_duration_milliseconds_sum{{layer=\"{layer}\",operation_type=\"mount\"}} 20002.5"
        );
        assert!(text.lines().any(|l| l == sum), "{text}");
    }

    #[test]
    fn microsecond_histogram_buckets_and_unknown_ops() {
        let layer = "sha256:2222";
        super::observe("synchronous_read", layer, Duration::from_micros(3));
        super::observe("no_such_operation", layer, Duration::from_micros(3));
        let text = super::encode();
        let b = buckets(
            &text,
            "soci_fs_operation_duration_microseconds",
            layer,
            "synchronous_read",
        );
        let les: Vec<&str> = b.iter().map(|(le, _)| le.as_str()).collect();
        assert_eq!(
            les,
            [
                "1.0", "2.0", "4.0", "8.0", "16.0", "32.0", "64.0", "128.0", "256.0", "512.0",
                "1024.0", "+Inf"
            ],
            "{text}"
        );
        let counts: Vec<&str> = b.iter().map(|(_, c)| c.as_str()).collect();
        assert_eq!(
            counts,
            ["0", "0", "1", "1", "1", "1", "1", "1", "1", "1", "1", "1"]
        );
        assert!(!text.contains("no_such_operation"), "{text}");
        // Microsecond operations never land in the millisecond histogram.
        assert!(
            !text.contains("soci_fs_operation_duration_milliseconds_count{layer=\"sha256:2222\"")
        );
    }

    #[test]
    fn layer_counters_and_failure_state() {
        let layer = "sha256:3333";
        let mut s = soci_fs::MetricsSnapshot::default();
        s.synchronous_read_count = 7;
        s.on_demand_span_fetches = 2;
        s.synchronous_bytes_served = 4096;
        super::set_layer_counters(layer, &s);
        let text = super::encode();
        for (op, v) in [
            ("synchronous_read_count", 7),
            ("synchronous_read_remote_registry_fetch_count", 2),
            ("background_span_fetch_count", 0),
            ("fuse_file_read_failure_count", 0),
            ("fuse_node_lookup_failure_count", 0),
        ] {
            let line =
                format!("soci_fs_operation_count{{layer=\"{layer}\",operation_type=\"{op}\"}} {v}");
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        let served = format!(
            "soci_fs_bytes_served{{layer=\"{layer}\",operation_type=\"synchronous_bytes_served\"}} 4096"
        );
        assert!(text.lines().any(|l| l == served), "{text}");
        // fuse_failure_state is pre-created at 0 (raised by FUSE failures, not by counters).
        assert!(text.lines().any(|l| l.starts_with(
            "soci_fs_operation_count{layer=\"\",operation_type=\"fuse_failure_state\"} "
        )));
        s.fuse_read_failures = 1;
        super::set_layer_counters(layer, &s);
        let text = super::encode();
        assert!(text.lines().any(|l| l == format!(
            "soci_fs_operation_count{{layer=\"{layer}\",operation_type=\"fuse_file_read_failure_count\"}} 1"
        )));
    }

    #[test]
    fn image_operation_counts_sum_layers_and_are_exposed() {
        let mut a = soci_fs::MetricsSnapshot::default();
        a.node_lookup_count = 3;
        a.file_read_count = 10;
        a.whiteout_getattr_count = 1;
        let mut b = soci_fs::MetricsSnapshot::default();
        b.node_lookup_count = 4;
        b.node_readlink_count = 2;
        let counts = super::image_operation_counts(&[a, b]);
        let get = |op: &str| counts.iter().find(|(o, _)| *o == op).map(|(_, v)| *v);
        assert_eq!(get("node.Lookup"), Some(7));
        assert_eq!(get("file.Read"), Some(10));
        assert_eq!(get("node.Readlink"), Some(2));
        assert_eq!(get("whiteout.Getattr"), Some(1));
        assert_eq!(get("node.Getattr"), Some(0));
        let image = "sha256:4444";
        for (op, v) in counts {
            super::set_image_count(image, op, v);
        }
        let text = super::encode();
        let line = format!(
            "soci_fs_image_operation_count_key{{image=\"{image}\",operation_type=\"node.Lookup\"}} 7"
        );
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with(&format!(
                    "soci_fs_image_operation_count_key{{image=\"{image}\""
                )))
                .count(),
            10
        );
    }

    #[test]
    fn fuse_failure_state_at_most_once_per_window() {
        let t0 = std::time::Instant::now();
        let mut w = super::FailureWindow::default();
        assert!(w.nudge(t0));
        assert!(!w.nudge(t0 + Duration::from_secs(1)));
        assert!(!w.nudge(t0 + Duration::from_secs(299)));
        assert!(w.nudge(t0 + Duration::from_secs(300)));
        assert!(!w.nudge(t0 + Duration::from_secs(301)));
        // The global one: the first failure of the process raises it; a second right after
        // does not (no other test of this process reports FUSE failures).
        let before = super::get("fuse_failure_state", "");
        super::fuse_failure();
        super::fuse_failure();
        assert_eq!(super::get("fuse_failure_state", ""), before + 1);
    }

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
