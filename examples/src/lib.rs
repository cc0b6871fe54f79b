//! Example programs for soci-rs; see the `src/bin/` directory and this crate's README.
#![forbid(unsafe_code)]
