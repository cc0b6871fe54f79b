//! `soci ztoc ...`: offline zTOC commands that work on files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde::Serialize;
use soci_ztoc::{UncompressedOffset, Ztoc, ZtocBuilder};

#[derive(Debug, Subcommand)]
pub(crate) enum ZtocCommand {
    /// Build a zTOC for a layer file (gzip or plain tar, detected from its bytes).
    Create {
        /// The layer blob.
        layer: PathBuf,
        /// Where to write the zTOC.
        #[arg(long, short = 'o')]
        output: PathBuf,
        /// Uncompressed bytes per span.
        #[arg(long, default_value_t = soci_ztoc::DEFAULT_SPAN_SIZE)]
        span_size: u64,
    },
    /// Print a zTOC as JSON (from the local store by digest, or from a file).
    Info {
        /// The zTOC digest (artifacts DB + content store).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        digest: Option<String>,
        /// The zTOC file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// List zTOCs in the artifacts DB.
    #[command(alias = "ls")]
    List {
        /// Only this zTOC.
        #[arg(long)]
        ztoc_digest: Option<String>,
        /// Only zTOCs of this image (needs containerd).
        #[arg(long)]
        image_ref: Option<String>,
        /// Print digests only.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Extract one file from a layer through its zTOC, reading only the spans that hold it.
    GetFile {
        /// The zTOC file (with --layer; then only the file path is given).
        #[arg(long, requires = "layer")]
        file: Option<PathBuf>,
        /// The layer blob the zTOC describes.
        #[arg(long, requires = "file")]
        layer: Option<PathBuf>,
        /// `<ztoc digest> <file>` (store form) or `<file>` (with --file/--layer).
        args: Vec<String>,
        /// Write the content here instead of stdout.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
}

pub(crate) fn run(cmd: ZtocCommand, global: &crate::global::GlobalOpts) -> Result<()> {
    match cmd {
        ZtocCommand::Create {
            layer,
            output,
            span_size,
        } => create(&layer, &output, span_size),
        ZtocCommand::Info {
            file: Some(file), ..
        } => info(&file),
        ZtocCommand::Info { digest, .. } => {
            let (bytes, entry) =
                crate::store_cmd::load_ztoc(global, digest.as_deref().unwrap_or(""))?;
            let ztoc = Ztoc::from_bytes(&bytes).context("failed to parse ztoc")?;
            print_info(&ztoc, entry.size)
        }
        ZtocCommand::List {
            ztoc_digest,
            image_ref,
            quiet,
        } => {
            crate::store_cmd::ztoc_list(global, ztoc_digest.as_deref(), image_ref.as_deref(), quiet)
        }
        ZtocCommand::GetFile {
            file: Some(file),
            layer: Some(layer),
            args,
            output,
        } => {
            let [path] = args.as_slice() else {
                bail!("please provide the file to extract");
            };
            get_file(&file, &layer, path, output.as_deref())
        }
        ZtocCommand::GetFile { args, output, .. } => {
            let [digest, path] = args.as_slice() else {
                bail!("please provide both a ztoc digest and a filename to extract");
            };
            let (bytes, entry) = crate::store_cmd::load_ztoc(global, digest)?;
            let ztoc = Ztoc::from_bytes(&bytes).context("failed to parse ztoc")?;
            let blob = crate::store_cmd::open_layer(global, &entry)?;
            extract(&ztoc, &blob, path, output.as_deref())
        }
    }
}

fn create(layer: &std::path::Path, output: &std::path::Path, span_size: u64) -> Result<()> {
    let f = File::open(layer).with_context(|| format!("failed to open {}", layer.display()))?;
    let ztoc = ZtocBuilder::new()
        .span_size(span_size)
        .build(f)
        .with_context(|| format!("failed to build ztoc for {}", layer.display()))?;
    let bytes = ztoc.to_bytes();
    write_atomic(output, &bytes)?;
    println!("{}", soci_ztoc::sha256_digest(&bytes));
    Ok(())
}

fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| std::path::Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("ztoc"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("failed to write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("failed to write {}", path.display()))
}

fn load(file: &std::path::Path) -> Result<(Ztoc, u64)> {
    let bytes =
        std::fs::read(file).with_context(|| format!("failed to read {}", file.display()))?;
    let ztoc = Ztoc::from_bytes(&bytes)
        .with_context(|| format!("failed to parse ztoc {}", file.display()))?;
    Ok((ztoc, bytes.len() as u64))
}

#[derive(Serialize)]
struct Info {
    version: String,
    build_tool: String,
    size: u64,
    span_size: u64,
    num_spans: u64,
    num_files: usize,
    num_multi_span_files: usize,
    files: Vec<FileInfo>,
}

#[derive(Serialize)]
struct FileInfo {
    filename: String,
    offset: u64,
    size: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    start_span: u32,
    end_span: u32,
}

fn info(file: &std::path::Path) -> Result<()> {
    let (ztoc, size) = load(file)?;
    print_info(&ztoc, size)
}

fn print_info(ztoc: &Ztoc, size: u64) -> Result<()> {
    let zinfo = ztoc.zinfo().context("invalid ztoc")?;
    let mut files: Vec<FileInfo> = ztoc
        .toc
        .iter()
        .map(|m| {
            let start = zinfo.span_of(m.uncompressed_offset);
            let end = zinfo.span_of(UncompressedOffset(
                m.uncompressed_offset.0 + m.uncompressed_size,
            ));
            FileInfo {
                filename: m.name_lossy().into_owned(),
                offset: m.uncompressed_offset.0,
                size: m.uncompressed_size,
                kind: m.kind.as_str(),
                start_span: start.0,
                end_span: end.0,
            }
        })
        .collect();
    files.sort_by_key(|f| f.offset);
    let info = Info {
        version: ztoc.version.clone(),
        build_tool: ztoc.build_tool_identifier.clone(),
        size,
        span_size: zinfo.span_size(),
        num_spans: zinfo.span_count(),
        num_files: files.len(),
        num_multi_span_files: files.iter().filter(|f| f.start_span != f.end_span).count(),
        files,
    };
    let out = std::io::stdout().lock();
    let mut out = BufWriter::new(out);
    serde_json::to_writer_pretty(&mut out, &info)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

fn get_file(
    file: &std::path::Path,
    layer: &std::path::Path,
    path: &str,
    output: Option<&std::path::Path>,
) -> Result<()> {
    let (ztoc, _) = load(file)?;
    let blob = File::open(layer).with_context(|| format!("failed to open {}", layer.display()))?;
    extract(&ztoc, &blob, path, output)
}

fn extract(ztoc: &Ztoc, blob: &File, path: &str, output: Option<&std::path::Path>) -> Result<()> {
    let zinfo = ztoc.zinfo().context("invalid ztoc")?;
    let len = blob.metadata()?.len();
    if len != ztoc.compressed_archive_size {
        bail!(
            "layer has {} bytes but the ztoc describes {}",
            len,
            ztoc.compressed_archive_size
        );
    }
    let data = ztoc.extract_file(&zinfo, blob, path.as_bytes())?;
    match output {
        Some(p) => {
            std::fs::write(p, &data).with_context(|| format!("failed to write {}", p.display()))?
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&data)?;
            out.write_all(b"\n")?;
            out.flush()?;
        }
    }
    Ok(())
}
