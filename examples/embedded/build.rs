//! Puts `memory.x` where cortex-m-rt's linker script finds it (microcontroller builds only).

use std::path::PathBuf;

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
        std::fs::copy("memory.x", out.join("memory.x")).expect("memory.x");
        println!("cargo:rustc-link-search={}", out.display());
        println!("cargo:rustc-link-arg=-Tlink.x");
    }
    println!("cargo:rerun-if-changed=memory.x");
}
