//! `extract-count ZTOC LAYER NAME`: extracts one file through the zTOC, counting the
//! compressed bytes read from the layer. NAME `-` picks a regular file of 1000..=20000 bytes
//! about two thirds into the layer. Prints
//! `extract name=<n> size=<file bytes> read_bytes=<compressed bytes read> read_calls=<n> secs=<t>`.

use std::time::Instant;

use soci_benches::CountingReadAt;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, ztoc, layer, name] = &args[..] else {
        return Err("usage: extract-count ZTOC LAYER NAME".into());
    };
    let t = Instant::now();
    let ztoc = soci_ztoc::Ztoc::from_bytes(&std::fs::read(ztoc)?)?;
    let zinfo = ztoc.zinfo()?;
    let name = if name == "-" {
        let mut small: Vec<_> = ztoc
            .toc
            .iter()
            .filter(|m| {
                m.kind == soci_ztoc::EntryType::Regular
                    && (1000..=20_000).contains(&m.uncompressed_size)
            })
            .collect();
        small.sort_by_key(|m| m.uncompressed_offset);
        let m = small
            .get(small.len() * 2 / 3)
            .ok_or("no small regular file in the layer")?;
        m.name_lossy().into_owned()
    } else {
        name.clone()
    };
    let layer = CountingReadAt::new(std::fs::File::open(layer)?);
    let data = ztoc.extract_file(&zinfo, &layer, name.as_bytes())?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "extract name={name} size={} read_bytes={} read_calls={} secs={secs:.4} layer_bytes={}",
        data.len(),
        layer.bytes(),
        layer.calls(),
        ztoc.compressed_archive_size
    );
    Ok(())
}
