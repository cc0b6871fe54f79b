//! `ztoc-create LAYER OUT [SPAN_SIZE]`: what `soci ztoc create` does (one streaming pass over
//! the layer file, zTOC bytes written to OUT), without the CLI, for the benchmark script.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (layer, out) = match &args[..] {
        [_, l, o] | [_, l, o, _] => (l, o),
        _ => return Err("usage: ztoc-create LAYER OUT [SPAN_SIZE]".into()),
    };
    let span = match args.get(3) {
        Some(s) => s.parse()?,
        None => soci_ztoc::DEFAULT_SPAN_SIZE,
    };
    let ztoc = soci_ztoc::ZtocBuilder::new()
        .span_size(span)
        .build(std::fs::File::open(layer)?)?;
    let bytes = ztoc.to_bytes();
    std::fs::write(out, &bytes)?;
    println!("{}", soci_ztoc::sha256_digest(&bytes));
    Ok(())
}
