//! The checked-in header is the one cbindgen makes from this crate's source.

use std::path::Path;

#[test]
fn the_header_matches_the_source() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).unwrap();
    let bindings = cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen reads the crate");
    let mut made = Vec::new();
    bindings.write(&mut made);
    let path = dir.join("include/peermsg.h");
    if std::env::var_os("PEERMSG_WRITE_HEADER").is_some() {
        std::fs::write(&path, &made).unwrap();
    }
    let checked_in = std::fs::read(&path).unwrap_or_default();
    assert!(
        made == checked_in,
        "include/peermsg.h differs from what cbindgen makes of the source: \
         run `PEERMSG_WRITE_HEADER=1 cargo test -p peermsg-ffi --test header`"
    );
}
