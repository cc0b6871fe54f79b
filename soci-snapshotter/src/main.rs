//! `soci-snapshotter-grpc`: parse flags, init logging, run the daemon.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use soci_snapshotter::config::{Config, DEFAULT_ADDRESS, DEFAULT_CONFIG_PATH, DEFAULT_ROOT};
use soci_snapshotter::daemon::{self, DaemonOptions};

#[derive(Parser, Debug)]
#[command(
    name = "soci-snapshotter-grpc",
    about = "SOCI snapshotter: containerd proxy snapshotter with lazily loaded layers"
)]
#[command(version = concat!(env!("CARGO_PKG_VERSION"), " ", "unknown"))]
struct Cli {
    /// Address for the snapshotter's gRPC server (path, unix://path or fd://).
    #[arg(long, env = "SOCI_SNAPSHOTTER_ADDRESS", default_value = DEFAULT_ADDRESS)]
    address: String,
    /// Path to the configuration file.
    #[arg(long, env = "SOCI_SNAPSHOTTER_CONFIG")]
    config: Option<PathBuf>,
    /// Log level: trace, debug, info, warn, error, fatal, panic.
    #[arg(long, env = "SOCI_SNAPSHOTTER_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Root directory of the snapshotter.
    #[arg(long, env = "SOCI_SNAPSHOTTER_ROOT", default_value = DEFAULT_ROOT)]
    root: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the effective configuration.
    Dump,
    /// Print the default configuration.
    Default,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (path, explicit) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    if let Some(Command::Config { what }) = &cli.command {
        return match what {
            ConfigCommand::Default => {
                print!("{}", Config::default().to_toml());
                ExitCode::SUCCESS
            }
            ConfigCommand::Dump => match Config::load(&path, explicit) {
                Ok((c, _)) => {
                    print!("{}", c.to_toml());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            },
        };
    }
    if let Err(e) = soci_snapshotter::logging::init(&cli.log_level) {
        eprintln!("soci-snapshotter-grpc: {e}");
        return ExitCode::FAILURE;
    }
    let (config, unknown_keys) = match Config::load(&path, explicit) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %soci_snapshotter::error::chain(&e), "{e}");
            return fail(&e);
        }
    };
    let opts = DaemonOptions {
        address: cli.address,
        root: cli.root,
        config,
        unknown_keys,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    match rt.block_on(daemon::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %soci_snapshotter::error::chain(&e), "fatal");
            fail(&e)
        }
    }
}

fn fail(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!(
        "soci-snapshotter-grpc: {}",
        soci_snapshotter::error::chain(e)
    );
    ExitCode::FAILURE
}
