//! `soci`: the command line of soci-rs. Parses arguments, runs one command, maps the result to
//! an exit code; the work happens in the library crates.
#![forbid(unsafe_code)]

mod containerd_io;
mod convert_cmd;
mod convert_core;
mod convert_ctd;
mod create_cmd;
mod global;
mod image_cmd;
mod indexing;
mod push_cmd;
mod registry_io;
mod standalone;
mod store_cmd;
mod ztoc_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Build, inspect and push SOCI indexes and zTOCs (seekable OCI images).
#[derive(Debug, Parser)]
#[command(name = "soci", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: global::GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with zTOCs (table of contents + gzip checkpoints of one layer).
    #[command(subcommand)]
    Ztoc(ztoc_cmd::ZtocCommand),
    /// Build SOCI index manifests v2 and a new SOCI-enabled image (OCI index).
    Convert(convert_cmd::ConvertArgs),
    /// Work with SOCI indexes in the local store.
    #[command(subcommand)]
    Index(store_cmd::IndexCommand),
    /// Work with prefetch artifacts in the local store.
    #[command(subcommand)]
    Prefetch(store_cmd::PrefetchCommand),
    /// Sync the artifacts database with the content store.
    RebuildDb,
    /// Build a SOCI index (v1) for an image in containerd.
    Create(create_cmd::CreateArgs),
    /// Push SOCI indexes (v1) and their artifacts to the image's registry.
    Push(push_cmd::PushArgs),
    /// Pull images through containerd with the SOCI snapshotter.
    #[command(subcommand)]
    Image(image_cmd::ImageCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // --timeout bounds the whole command (Go: context.WithTimeout when > 0).
    let timeout = match cli.global.timeout.as_deref().map(global::parse_go_duration) {
        None => None,
        Some(Ok(ns)) if ns > 0 => Some(std::time::Duration::from_nanos(
            u64::try_from(ns).unwrap_or(u64::MAX),
        )),
        Some(Ok(_)) => None,
        Some(Err(e)) => return report(Err(e)),
    };
    let Some(timeout) = timeout else {
        return report(run(cli));
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run(cli));
    });
    match rx.recv_timeout(timeout) {
        Ok(result) => report(result),
        Err(_) => {
            eprintln!("soci: context deadline exceeded");
            // The command thread may be blocked in I/O: leave without waiting for it.
            std::process::exit(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Ztoc(cmd) => ztoc_cmd::run(cmd, &cli.global),
        Command::Index(cmd) => store_cmd::run_index(cmd, &cli.global),
        Command::Prefetch(cmd) => store_cmd::run_prefetch(cmd, &cli.global),
        Command::RebuildDb => store_cmd::rebuild_db(&cli.global),
        Command::Create(args) => create_cmd::run(args, &cli.global),
        Command::Push(args) => push_cmd::run(args, &cli.global),
        Command::Convert(args) => convert_cmd::run(args, &cli.global),
        Command::Image(cmd) => image_cmd::run(cmd, &cli.global),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soci: {e:#}");
            ExitCode::FAILURE
        }
    }
}
