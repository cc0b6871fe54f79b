//! `soci image rpull`: thin wrapper over [`soci_snapshotter::rpull`].

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::global::GlobalOpts;

/// `soci image …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Pull an image through containerd with the SOCI snapshotter (lazily loaded layers).
    Rpull(RpullArgs),
}

/// `soci image rpull` flags.
#[derive(Debug, Args)]
pub(crate) struct RpullArgs {
    /// SOCI index to use (sets the `soci.index.digest` snapshot label).
    #[arg(long)]
    soci_index_digest: Option<String>,
    /// Talk plain HTTP to the registry.
    #[arg(long)]
    plain_http: bool,
    /// Registry credentials `user[:password]`.
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Platform `os/arch[/variant]` (default: the host's).
    #[arg(long)]
    platform: Option<String>,
    /// containerd snapshotter name of the SOCI snapshotter.
    #[arg(long, default_value = "soci")]
    snapshotter: String,
    /// Image reference.
    reference: String,
}

pub(crate) fn run(cmd: ImageCommand, global: &GlobalOpts) -> Result<()> {
    let ImageCommand::Rpull(a) = cmd;
    let opts = soci_snapshotter::rpull::RpullOptions {
        reference: a.reference.clone(),
        containerd_address: global.address.trim_start_matches("unix://").to_string(),
        namespace: global.namespace.clone(),
        snapshotter: a.snapshotter,
        plain_http: a.plain_http,
        user: a.user,
        platform: a.platform,
        soci_index_digest: a.soci_index_digest,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting runtime")?;
    println!("fetching {}...", a.reference);
    let r = rt
        .block_on(soci_snapshotter::rpull::rpull(&opts))
        .with_context(|| format!("rpull {}", a.reference))?;
    println!(
        "pulled {} ({}): {} layer(s) prepared by the snapshotter, {} unpacked, {} already present, {:.2}s",
        a.reference,
        r.manifest_digest,
        r.prepared_by_snapshotter,
        r.unpacked,
        r.already_present,
        r.elapsed.as_secs_f64()
    );
    Ok(())
}
