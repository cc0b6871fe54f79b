//! `soci`: the command line of soci-rs. Parses arguments, runs one command, maps the result to
//! an exit code; the work happens in the library crates.
#![forbid(unsafe_code)]

mod convert_cmd;
mod convert_core;
mod global;
mod indexing;
mod registry_io;
mod standalone;
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ztoc(cmd) => ztoc_cmd::run(cmd),
        Command::Convert(args) => convert_cmd::run(args, &cli.global),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soci: {e:#}");
            ExitCode::FAILURE
        }
    }
}
