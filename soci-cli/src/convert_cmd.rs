//! `soci convert`: build SOCI index manifests v2 and a new, SOCI-enabled image (spec §4.6).

use anyhow::{bail, Result};
use clap::Args;

use crate::global::{BuildFlags, GlobalOpts};

/// Arguments of `soci convert`.
#[derive(Debug, Args)]
pub(crate) struct ConvertArgs {
    /// Source image (with --standalone: an OCI layout directory or tar, or a registry reference).
    pub(crate) source: Option<String>,
    /// Destination image (with --standalone: output path, or a registry reference).
    pub(crate) destination: Option<String>,
    #[command(flatten)]
    pub(crate) build: BuildFlags,
    /// Convert OCI layouts (or registry images) without containerd.
    #[arg(long)]
    pub(crate) standalone: bool,
    /// Standalone output format: `oci-archive` or `oci-dir`.
    #[arg(long, default_value = "oci-archive")]
    pub(crate) format: String,
    /// Registry credentials for registry references, `user[:password]`.
    #[arg(long, short = 'u')]
    pub(crate) user: Option<String>,
    /// Use plain HTTP for registry references.
    #[arg(long)]
    pub(crate) plain_http: bool,
}

pub(crate) fn run(args: ConvertArgs, global: &GlobalOpts) -> Result<()> {
    let Some(source) = args.source.clone().filter(|s| !s.is_empty()) else {
        bail!("source image needs to be specified");
    };
    let Some(dest) = args.destination.clone().filter(|s| !s.is_empty()) else {
        bail!("destination needs to be specified");
    };
    let opts = args.build.options()?;
    if args.standalone {
        return crate::standalone::run(&source, &dest, &args, &opts, global.debug);
    }
    global.ensure_root()?;
    validate_dest_ref(&dest)?;
    crate::convert_ctd::run(
        &source,
        &dest,
        &args.build.platforms,
        args.build.all_platforms,
        global,
        &opts,
    )
}

/// Spec §4.6: the destination must be a tagged reference without digest.
fn validate_dest_ref(dest: &str) -> Result<()> {
    let prefix =
        "the destination image must be a tagged ref of the form \"registry/repository:tag\"";
    if dest.contains('@') {
        bail!("{prefix}: digest is not allowed");
    }
    let last = dest.rsplit('/').next().unwrap_or(dest);
    if !last.contains(':') {
        bail!("{prefix}: tag is required");
    }
    Ok(())
}
