//! Commands over the local store: `index list|info|rm`, `ztoc list|info|get-file <digest>`,
//! `rebuild-db`, `prefetch list|info` (spec §6.2).

use std::io::Write;
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use soci_index::store::{ArtifactEntry, ArtifactKind, BlobStore, ContentStore};
use soci_index::{media_type, Digest, Manifest, Platform, PrefetchArtifact};

use crate::global::{ContentStoreKind, GlobalOpts};

/// `soci index ...`
#[derive(Debug, Subcommand)]
pub(crate) enum IndexCommand {
    /// List SOCI indexes, newest first.
    #[command(alias = "ls")]
    List {
        /// Only indexes of this image (needs containerd).
        #[arg(long = "ref")]
        image_ref: Option<String>,
        /// Print digests only.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Only indexes for these platforms (repeatable).
        #[arg(long = "platform", short = 'p')]
        platforms: Vec<String>,
    },
    /// Print a SOCI index.
    Info {
        /// The index digest.
        digest: String,
    },
    /// Remove SOCI indexes.
    #[command(alias = "rm")]
    Remove {
        /// Index digests.
        digests: Vec<String>,
        /// Remove every index of this image (needs containerd).
        #[arg(long = "ref")]
        image_ref: Option<String>,
    },
}

/// `soci prefetch ...`
#[derive(Debug, Subcommand)]
pub(crate) enum PrefetchCommand {
    /// List prefetch artifacts.
    #[command(alias = "ls")]
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show one prefetch artifact.
    Info {
        /// The artifact digest.
        digest: String,
        /// Append the raw artifact JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The store the command reads and writes.
pub(crate) fn content_store(global: &GlobalOpts) -> Result<ContentStore> {
    match global.content_store {
        ContentStoreKind::Soci => global.soci_store(),
        ContentStoreKind::Containerd => bail!(
            "this command does not support content store \"containerd\" yet: use --content-store soci"
        ),
    }
}

/// Reads a blob from the selected content store.
pub(crate) fn read_blob(global: &GlobalOpts, d: &Digest) -> Result<Vec<u8>> {
    match global.content_store {
        ContentStoreKind::Soci => Ok(global.soci_store()?.read(d)?),
        ContentStoreKind::Containerd => crate::containerd_io::Containerd::connect(global)?.read(d),
    }
}

pub(crate) fn run_index(cmd: IndexCommand, global: &GlobalOpts) -> Result<()> {
    let db = global.artifacts_db()?;
    match cmd {
        IndexCommand::List {
            image_ref,
            quiet,
            platforms,
        } => {
            let manifests: Option<Vec<String>> = match &image_ref {
                Some(r) => {
                    let ctd = crate::containerd_io::Containerd::connect(global)?;
                    let (target, _) = ctd.image(r)?;
                    let all = platforms.is_empty();
                    let ms = crate::create_cmd::platform_manifests(&ctd, &target, &platforms, all)?;
                    Some(ms.into_iter().map(|(d, _)| d.digest.to_string()).collect())
                }
                None => None,
            };
            let platforms = if manifests.is_some() {
                Vec::new()
            } else {
                platforms
            };
            let wanted: Vec<Platform> = platforms
                .iter()
                .map(|p| p.parse::<Platform>().map_err(anyhow::Error::from))
                .collect::<Result<_>>()?;
            let mut entries = db.entries_of(ArtifactKind::Index)?;
            if let Some(ms) = &manifests {
                entries.retain(|e| ms.contains(&e.original_digest));
            }
            entries.retain(|e| {
                wanted.is_empty()
                    || e.platform
                        .parse::<Platform>()
                        .is_ok_and(|p| wanted.iter().any(|w| w.matches_strict(&p)))
            });
            entries.sort_by_key(|e| std::cmp::Reverse(e.created_at));
            if quiet {
                let mut out = std::io::stdout().lock();
                for e in &entries {
                    writeln!(out, "{}", e.digest)?;
                }
                return Ok(());
            }
            let mut rows = vec![[
                "DIGEST",
                "SIZE",
                "IMAGE REF",
                "PLATFORM",
                "MEDIA TYPE",
                "MANIFEST VERSION",
                "CREATED",
            ]
            .map(str::to_owned)
            .to_vec()];
            let ctd = crate::containerd_io::Containerd::connect(global).ok();
            for e in &entries {
                let refs = match (&ctd, e.image_digest.is_empty()) {
                    (Some(c), false) => c.images_with_target(&e.image_digest).unwrap_or_default(),
                    _ => Vec::new(),
                };
                let refs = if refs.is_empty() {
                    vec![String::new()]
                } else {
                    refs
                };
                for image_ref in refs {
                    let version = if e.artifact_type == media_type::SOCI_INDEX_V2 {
                        "v2"
                    } else {
                        "v1"
                    };
                    rows.push(vec![
                        e.digest.to_string(),
                        e.size.to_string(),
                        image_ref,
                        e.platform.clone(),
                        e.media_type.clone(),
                        version.to_owned(),
                        created(e.created_at),
                    ]);
                }
            }
            print_table(&rows)
        }
        IndexCommand::Info { digest } => {
            let d = parse_digest(&digest)?;
            if let Some(e) = db.get(d.as_str())? {
                if e.kind == ArtifactKind::Ztoc {
                    bail!("the provided digest is of ztoc not SOCI index. Use \"soci ztoc info\" command to get detailed info of ztoc");
                }
            }
            let bytes = read_blob(global, &d)?;
            let pretty = soci_index::json::indent(&bytes, "", "  ")?;
            let mut out = std::io::stdout().lock();
            out.write_all(&pretty)?;
            writeln!(out)?;
            Ok(())
        }
        IndexCommand::Remove { digests, image_ref } => {
            if image_ref.is_some() && !digests.is_empty() {
                bail!("please provide either index digests or image ref, but not both");
            }
            let mut digests = digests;
            if let Some(r) = &image_ref {
                let ctd = crate::containerd_io::Containerd::connect(global)?;
                let (target, _) = ctd.image(r)?;
                for e in db.entries_of(ArtifactKind::Index)? {
                    if e.image_digest == target.digest.as_str() {
                        digests.push(e.digest.to_string());
                    }
                }
            }
            for digest in &digests {
                let d = parse_digest(digest)?;
                let Some(e) = db.get(d.as_str())? else {
                    bail!("the index of the digest {d} doesn't exist");
                };
                if e.kind != ArtifactKind::Index {
                    bail!("the digest {d} does not correspond to an index");
                }
                db.remove(d.as_str())?;
                // Deleting from the `soci` content store is a no-op (spec §4.10); with
                // containerd, GC then collects zTOCs no longer referenced.
                if global.content_store == ContentStoreKind::Containerd {
                    crate::containerd_io::Containerd::connect(global)?.delete(&d)?;
                }
            }
            Ok(())
        }
    }
}

pub(crate) fn ztoc_list(
    global: &GlobalOpts,
    ztoc_digest: Option<&str>,
    image_ref: Option<&str>,
    quiet: bool,
) -> Result<()> {
    let db = global.artifacts_db()?;
    let entries = match image_ref {
        Some(r) => image_ztocs(global, &db, r, ztoc_digest)?,
        None => {
            let mut entries = db.entries_of(ArtifactKind::Ztoc)?;
            if let Some(z) = ztoc_digest {
                entries.retain(|e| e.digest.as_str() == z);
            }
            entries
        }
    };
    if quiet {
        let mut out = std::io::stdout().lock();
        for e in &entries {
            writeln!(out, "{}", e.digest)?;
        }
        return Ok(());
    }
    let mut rows = vec![vec![
        "DIGEST".to_owned(),
        "SIZE".to_owned(),
        "LAYER DIGEST".to_owned(),
    ]];
    for e in &entries {
        rows.push(vec![
            e.digest.to_string(),
            e.size.to_string(),
            e.original_digest.clone(),
        ]);
    }
    print_table(&rows)
}

/// The zTOC entries of every SOCI index of image `r` (spec §6.2 `ztoc list --image-ref`): each
/// index recorded for the image is read from the content store and its zTOC descriptors are
/// looked up in the artifacts DB.
fn image_ztocs(
    global: &GlobalOpts,
    db: &soci_index::store::ArtifactsDb,
    r: &str,
    ztoc_digest: Option<&str>,
) -> Result<Vec<ArtifactEntry>> {
    let ctd = crate::containerd_io::Containerd::connect(global)?;
    let (target, _) = ctd.image(r)?;
    let target = target.digest.as_str();
    let mut out: Vec<ArtifactEntry> = Vec::new();
    for e in db.entries_of(ArtifactKind::Index)? {
        if e.image_digest != target && e.original_digest != target {
            continue;
        }
        let bytes = match global.content_store {
            ContentStoreKind::Soci => global.soci_store()?.read(&e.digest)?,
            ContentStoreKind::Containerd => ctd.read(&e.digest)?,
        };
        let index = soci_index::Index::from_json(&bytes)
            .with_context(|| format!("failed to parse soci index {}", e.digest))?;
        for blob in index.blobs() {
            if blob.media_type != media_type::ZTOC {
                continue;
            }
            let z = db
                .get(blob.digest.as_str())
                .ok()
                .flatten()
                .filter(|z| z.kind == ArtifactKind::Ztoc)
                .ok_or_else(|| {
                    anyhow!("failed to get ztoc from artifacts store (try running \"soci rebuild-db\" first)")
                })?;
            if ztoc_digest.is_some_and(|d| d != z.digest.as_str()) {
                continue;
            }
            if !out.iter().any(|o| o.digest == z.digest) {
                out.push(z);
            }
        }
    }
    if ztoc_digest.is_some() && out.is_empty() {
        bail!("the specified ztoc doesn't exist or is not associated with the specified image");
    }
    Ok(out)
}

/// The zTOC bytes and its DB entry for `ztoc info <digest>` / `get-file`.
pub(crate) fn load_ztoc(global: &GlobalOpts, digest: &str) -> Result<(Vec<u8>, ArtifactEntry)> {
    let d = parse_digest(digest)?;
    let db = global.artifacts_db()?;
    let Some(entry) = db.get(d.as_str())? else {
        bail!("ztoc {d} does not exist in the artifacts database");
    };
    if entry.kind == ArtifactKind::Index {
        bail!("the provided digest belongs to a SOCI index. Use `soci index info` to get the detailed information about it");
    }
    if entry.kind != ArtifactKind::Ztoc {
        bail!("the provided digest is not a ztoc (type: {})", entry.kind);
    }
    let bytes = read_blob(global, &d)?;
    Ok((bytes, entry))
}

/// The layer blob of a zTOC entry, opened from the content store.
pub(crate) fn open_layer(global: &GlobalOpts, entry: &ArtifactEntry) -> Result<std::fs::File> {
    let layer = parse_digest(&entry.original_digest)?;
    if global.content_store == ContentStoreKind::Containerd {
        let ctd = crate::containerd_io::Containerd::connect(global)?;
        let mut f = tempfile::tempfile()?;
        ctd.read_to(&layer, &mut f)?;
        return Ok(f);
    }
    let store = content_store(global)?;
    store
        .open_blob(&layer)
        .with_context(|| format!("failed to open layer {layer}"))
}

/// `soci rebuild-db` over the selected content store (the `soci` layout or containerd's).
pub(crate) fn rebuild_db(global: &GlobalOpts) -> Result<()> {
    let db = global.artifacts_db()?;
    match global.content_store {
        ContentStoreKind::Soci => rebuild_from(&db, &global.soci_store()?),
        ContentStoreKind::Containerd => {
            rebuild_from(&db, &crate::containerd_io::Containerd::connect(global)?)
        }
    }
}

fn rebuild_from(db: &soci_index::store::ArtifactsDb, store: &dyn BlobStore) -> Result<()> {
    // The platform of a subject manifest, from its config.
    let platform_of = |subject: &soci_index::Descriptor| -> Option<String> {
        let m = Manifest::from_json(&store.read_blob(&subject.digest).ok()?).ok()?;
        #[derive(serde::Deserialize)]
        struct C {
            #[serde(default)]
            os: String,
            #[serde(default)]
            architecture: String,
            #[serde(default)]
            variant: String,
        }
        let c: C = serde_json::from_slice(&store.read_blob(&m.config.digest).ok()?).ok()?;
        Some(Platform::new(c.os, c.architecture, c.variant).to_string())
    };
    soci_index::store::rebuild(db, store, &platform_of)?;
    Ok(())
}

pub(crate) fn run_prefetch(cmd: PrefetchCommand, global: &GlobalOpts) -> Result<()> {
    let db = global.artifacts_db()?;
    let store = content_store(global)?;
    let load = |d: &Digest| -> Option<PrefetchArtifact> {
        PrefetchArtifact::from_json(&store.read(d).ok()?).ok()
    };
    match cmd {
        PrefetchCommand::List { json } => {
            let entries = db.entries_of(ArtifactKind::Prefetch)?;
            if json {
                #[derive(serde::Serialize)]
                #[serde(rename_all = "PascalCase")]
                struct Item {
                    digest: String,
                    layer_digest: String,
                    total_spans: i64,
                    created_at: String,
                }
                let items: Vec<Item> = entries
                    .iter()
                    .map(|e| Item {
                        digest: e.digest.to_string(),
                        layer_digest: e.original_digest.clone(),
                        total_spans: load(&e.digest)
                            .map_or(-1, |a| i64::try_from(a.total_spans()).unwrap_or(i64::MAX)),
                        created_at: rfc3339(e.created_at),
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
                return Ok(());
            }
            let mut rows = vec![["DIGEST", "LAYER DIGEST", "SPANS", "CREATED"]
                .map(str::to_owned)
                .to_vec()];
            for e in &entries {
                rows.push(vec![
                    e.digest.to_string(),
                    e.original_digest.clone(),
                    load(&e.digest)
                        .map_or_else(|| "N/A".to_owned(), |a| a.total_spans().to_string()),
                    created(e.created_at),
                ]);
            }
            print_table(&rows)
        }
        PrefetchCommand::Info { digest, json } => {
            let d = parse_digest(&digest)?;
            let entry = db.get(d.as_str())?;
            if let Some(e) = &entry {
                if e.kind != ArtifactKind::Prefetch {
                    bail!(
                        "the provided digest is not a prefetch artifact (type: {})",
                        e.kind
                    );
                }
            }
            let bytes = store.read(&d)?;
            let artifact = PrefetchArtifact::from_json(&bytes)?;
            let mut out = String::new();
            use std::fmt::Write as _;
            writeln!(out, "Digest: {d}")?;
            writeln!(out, "Version: {}", artifact.version)?;
            writeln!(out, "Span Ranges: {}", artifact.prefetch_spans.len())?;
            match &entry {
                Some(e) => {
                    writeln!(out, "Layer Digest: {}", e.original_digest)?;
                    writeln!(out, "Size: {} bytes", e.size)?;
                    writeln!(out, "Created: {}", datetime(e.created_at))?;
                }
                None => {
                    writeln!(out, "Warning: this prefetch artifact is not recorded in the artifacts database.")?;
                    writeln!(out, "Layer digest, size and creation time are unknown.")?;
                    writeln!(
                        out,
                        "Run \"soci rebuild-db\" to rebuild the artifacts database."
                    )?;
                }
            }
            writeln!(out)?;
            writeln!(out, "Prefetch Spans:")?;
            for (i, s) in artifact.prefetch_spans.iter().enumerate() {
                writeln!(
                    out,
                    "  [{i}] StartSpan: {}, EndSpan: {} (covers {} spans)",
                    s.start_span,
                    s.end_span,
                    s.len()
                )?;
                if s.priority != 0 {
                    writeln!(out, "      Priority: {}", s.priority)?;
                }
            }
            writeln!(out, "Total spans to prefetch: {}", artifact.total_spans())?;
            if json {
                writeln!(out)?;
                writeln!(out, "Raw JSON:")?;
                let pretty = soci_index::json::indent(&bytes, "", "  ")?;
                out.push_str(&String::from_utf8_lossy(&pretty));
                out.push('\n');
            }
            print!("{out}");
            Ok(())
        }
    }
}

pub(crate) fn parse_digest(s: &str) -> Result<Digest> {
    Digest::parse(s).map_err(|e| anyhow!("invalid digest {s:?}: {e}"))
}

/// Go's text/tabwriter with minwidth 8, tabwidth 8, padding 4, pad char ' ' and no flags: every
/// column but the last is padded to the widest cell + 4 (at least 8).
pub(crate) fn print_table(rows: &[Vec<String>]) -> Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols.saturating_sub(1)) {
            widths[i] = widths[i].max((c.chars().count() + 4).max(8));
        }
    }
    let mut out = std::io::stdout().lock();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                let pad = widths[i] - c.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `<duration rounded to s> ago` in Go's duration format, or `n/a`.
fn created(t: SystemTime) -> String {
    match SystemTime::now().duration_since(t) {
        Ok(d) if t > SystemTime::UNIX_EPOCH => format!("{} ago", go_duration(d.as_secs())),
        Ok(_) => "n/a".to_owned(),
        Err(_) => "0s ago".to_owned(),
    }
}

fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

fn civil(t: SystemTime) -> (i64, u32, u32, u64, u64, u64) {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, (rem / 60) % 60, rem % 60)
}

fn datetime(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_dates() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(65), "1m5s");
        assert_eq!(go_duration(7205), "2h0m5s");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800);
        assert_eq!(datetime(t), "2020-01-01 00:00:00");
    }
}
