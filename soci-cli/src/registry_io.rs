//! Registry sources and destinations for `soci convert --standalone`.

use anyhow::{bail, Result};

use crate::convert_cmd::ConvertArgs;
use crate::global::BuildOptions;

/// Whether `s` names a registry image rather than a local path: it does not start with `/` or
/// `.`, does not exist locally, and its first component is a host (`localhost`, or contains `.`
/// or `:`) followed by a repository.
pub(crate) fn is_registry_ref(s: &str) -> bool {
    if s.starts_with('/') || s.starts_with('.') || std::path::Path::new(s).exists() {
        return false;
    }
    let Some((host, rest)) = s.split_once('/') else {
        return false;
    };
    !rest.is_empty() && (host == "localhost" || host.contains('.') || host.contains(':'))
}

pub(crate) fn run(
    _src: &str,
    _dst: &str,
    _dir_output: bool,
    _args: &ConvertArgs,
    _opts: &BuildOptions,
) -> Result<()> {
    bail!("registry references are not supported yet")
}
