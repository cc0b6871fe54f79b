//! Index a layer and pull one file out of it, using only soci-ztoc's public API.
//!
//! ```text
//! cargo run -p soci-examples --bin ztoc-extract -- LAYER.tar.gz PATH/IN/LAYER
//! ```
//!
//! It builds the zTOC in one pass over the layer, then extracts `PATH/IN/LAYER` through the
//! checkpoints and reports how many compressed bytes that read, compared with the layer size.

use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::process::ExitCode;

use soci_ztoc::{ReadAt, ZtocBuilder};

/// A layer file that counts the bytes read through it.
struct CountingFile {
    file: File,
    read: Cell<u64>,
}

impl ReadAt for CountingFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.read.set(self.read.get() + buf.len() as u64);
        self.file.read_exact_at(buf, offset)
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, layer, path] = args.as_slice() else {
        return Err("usage: ztoc-extract LAYER PATH".into());
    };

    let ztoc = ZtocBuilder::new().build(File::open(layer)?)?;
    let zinfo = ztoc.zinfo()?;
    eprintln!(
        "ztoc {}: {} entries, {} spans, {} bytes",
        ztoc.digest(),
        ztoc.toc.len(),
        zinfo.span_count(),
        ztoc.to_bytes().len()
    );

    let src = CountingFile {
        file: File::open(layer)?,
        read: Cell::new(0),
    };
    let data = ztoc.extract_file(&zinfo, &src, path.as_bytes())?;
    std::io::stdout().write_all(&data)?;
    eprintln!(
        "extracted {} bytes of {path} reading {} of {} compressed bytes",
        data.len(),
        src.read.get(),
        ztoc.compressed_archive_size
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ztoc-extract: {e}");
            ExitCode::FAILURE
        }
    }
}
