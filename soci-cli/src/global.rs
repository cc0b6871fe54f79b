//! Global flags (spec §6.1) and the flags shared by `create` and `convert`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use soci_index::store::{ArtifactsDb, ContentStore, DEFAULT_ROOT};
use soci_index::{Optimization, DEFAULT_MIN_LAYER_SIZE, DEFAULT_SPAN_SIZE};

/// Where SOCI artifacts are written and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ContentStoreKind {
    /// The OCI layout at `<root>/content`.
    Soci,
    /// containerd's content store (gRPC).
    Containerd,
}

/// Flags accepted before (and after) every command.
#[derive(Debug, Clone, Args)]
pub(crate) struct GlobalOpts {
    /// containerd socket (a `unix://` prefix is stripped).
    #[arg(
        long,
        short = 'a',
        global = true,
        env = "CONTAINERD_ADDRESS",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub(crate) address: String,
    /// containerd namespace.
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "CONTAINERD_NAMESPACE",
        default_value = "default"
    )]
    pub(crate) namespace: String,
    /// Command timeout (Go duration syntax, e.g. `30s`, `5m`).
    #[arg(long, global = true)]
    pub(crate) timeout: Option<String>,
    /// Debug output.
    #[arg(long, global = true)]
    pub(crate) debug: bool,
    /// Where artifacts are written and read.
    #[arg(long, global = true, value_enum, default_value = "containerd")]
    pub(crate) content_store: ContentStoreKind,
    /// Location of the artifacts database and the `soci` content store.
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    pub(crate) root: PathBuf,
}

impl GlobalOpts {
    /// Creates `--root` (mode 0700) if missing.
    pub(crate) fn ensure_root(&self) -> Result<()> {
        ensure_dir_0700(&self.root)
    }

    /// The artifacts DB under `--root`.
    pub(crate) fn artifacts_db(&self) -> Result<ArtifactsDb> {
        self.ensure_root()?;
        ArtifactsDb::open_in(&self.root).with_context(|| {
            format!(
                "failed to open artifacts database in {}",
                self.root.display()
            )
        })
    }

    /// The `soci` content store under `--root`.
    pub(crate) fn soci_store(&self) -> Result<ContentStore> {
        self.ensure_root()?;
        let dir = soci_index::store::content_dir(&self.root);
        ContentStore::open(&dir)
            .with_context(|| format!("failed to open content store {}", dir.display()))
    }
}

fn ensure_dir_0700(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
        .with_context(|| format!("failed to create root directory {}", dir.display()))
}

/// Flags of `create` and `convert` (spec §6.2).
#[derive(Debug, Clone, Args)]
pub(crate) struct BuildFlags {
    /// Build for every platform of the image.
    #[arg(long)]
    pub(crate) all_platforms: bool,
    /// Platform to build for (repeatable; default: the host platform).
    #[arg(long = "platform", short = 'p')]
    pub(crate) platforms: Vec<String>,
    /// Span size in bytes.
    #[arg(long, default_value_t = DEFAULT_SPAN_SIZE.to_string(), allow_hyphen_values = true)]
    pub(crate) span_size: String,
    /// Layers smaller than this (bytes) get no zTOC.
    #[arg(long, default_value_t = DEFAULT_MIN_LAYER_SIZE.to_string(), allow_hyphen_values = true)]
    pub(crate) min_layer_size: String,
    /// Optimizations to enable (repeatable; only `xattr`).
    #[arg(long = "optimizations")]
    pub(crate) optimizations: Vec<String>,
    /// Rebuild zTOCs even if the artifacts DB has them.
    #[arg(long, short = 'f')]
    pub(crate) force: bool,
    /// File to build a prefetch artifact for (repeatable).
    #[arg(long = "prefetch-file")]
    pub(crate) prefetch_files: Vec<String>,
    /// JSON file holding an array of paths to prefetch.
    #[arg(long)]
    pub(crate) prefetch_files_json: Option<PathBuf>,
    /// Print only the essential lines (no per-layer progress).
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
    /// Number of zTOCs built in parallel (default: available cores).
    #[arg(long, hide = true, env = "SOCI_BUILD_JOBS")]
    pub(crate) jobs: Option<usize>,
}

/// [`BuildFlags`] checked and parsed.
#[derive(Debug, Clone)]
pub(crate) struct BuildOptions {
    pub(crate) span_size: u64,
    pub(crate) min_layer_size: u64,
    pub(crate) optimizations: Vec<Optimization>,
    pub(crate) force: bool,
    pub(crate) prefetch_paths: Vec<String>,
    pub(crate) quiet: bool,
    pub(crate) jobs: usize,
}

impl BuildFlags {
    /// Validates the flags with the messages of spec §6.2 / §8 (`TestCreateConvertParameterValidation`).
    pub(crate) fn options(&self) -> Result<BuildOptions> {
        let span_size = parse_size(&self.span_size, "span-size", "span size")?;
        let min_layer_size = parse_size(&self.min_layer_size, "min-layer-size", "min layer size")?;
        let optimizations = self
            .optimizations
            .iter()
            .map(|o| o.parse::<Optimization>().map_err(anyhow::Error::from))
            .collect::<Result<Vec<_>>>()?;
        let mut prefetch_paths = self.prefetch_files.clone();
        if let Some(f) = &self.prefetch_files_json {
            let bytes = std::fs::read(f)
                .with_context(|| format!("failed to read prefetch files json {}", f.display()))?;
            let paths: Vec<String> = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "failed to parse prefetch files json {}: expected an array of strings",
                    f.display()
                )
            })?;
            prefetch_paths.extend(paths);
        }
        let jobs = match self.jobs {
            Some(0) | None => std::thread::available_parallelism().map_or(1, usize::from),
            Some(n) => n,
        };
        Ok(BuildOptions {
            span_size,
            min_layer_size,
            optimizations,
            force: self.force,
            prefetch_paths,
            quiet: self.quiet,
            jobs,
        })
    }
}

/// Parses a Go `int64` flag value that must not be negative.
/// Parses a Go `time.ParseDuration` string (`300ms`, `1.5h`, `2h45m`, `-1s`, `0`) into signed
/// nanoseconds.
pub(crate) fn parse_go_duration(value: &str) -> Result<i128> {
    let err = || anyhow::anyhow!("invalid value \"{value}\" for flag -timeout: parse error");
    let (neg, mut s) = match value.as_bytes().first() {
        Some(b'-') => (true, &value[1..]),
        Some(b'+') => (false, &value[1..]),
        _ => (false, value),
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut total: f64 = 0.0;
    while !s.is_empty() {
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let num = &s[..num_end];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(err());
        }
        let n: f64 = num.parse().map_err(|_| err())?;
        s = &s[num_end..];
        let unit_end = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let scale: f64 = match &s[..unit_end] {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        s = &s[unit_end..];
        total += n * scale;
    }
    if total > i64::MAX as f64 {
        return Err(err());
    }
    let ns = total.round() as i128;
    Ok(if neg { -ns } else { ns })
}

fn parse_size(value: &str, flag: &str, what: &str) -> Result<u64> {
    let v: i64 = match value.trim().parse() {
        Ok(v) => v,
        Err(e) => {
            let reason = if matches!(
                e.kind(),
                std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow
            ) {
                "value out of range"
            } else {
                "parse error"
            };
            bail!("invalid value \"{value}\" for flag -{flag}: {reason}")
        }
    };
    if v < 0 {
        bail!("{what} must be >= 0");
    }
    Ok(v.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn go_durations() {
        use super::parse_go_duration as d;
        assert_eq!(d("0").unwrap(), 0);
        assert_eq!(d("30s").unwrap(), 30_000_000_000);
        assert_eq!(d("2m").unwrap(), 120_000_000_000);
        assert_eq!(d("1h30m").unwrap(), 5_400_000_000_000);
        assert_eq!(d("1.5h").unwrap(), 5_400_000_000_000);
        assert_eq!(d("300ms").unwrap(), 300_000_000);
        assert_eq!(d("10us").unwrap(), 10_000);
        assert_eq!(d("-1s").unwrap(), -1_000_000_000);
        for bad in ["", "1", "s", "1x", "1..5s", "-", "abc"] {
            let e = d(bad).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("invalid value \"{bad}\" for flag -timeout: parse error")
            );
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10", "span-size", "span size").unwrap(), 10);
        assert_eq!(
            parse_size("-1", "span-size", "span size")
                .unwrap_err()
                .to_string(),
            "span size must be >= 0"
        );
        assert_eq!(
            parse_size("9223372036854775808", "min-layer-size", "min layer size")
                .unwrap_err()
                .to_string(),
            "invalid value \"9223372036854775808\" for flag -min-layer-size: value out of range"
        );
    }
}
