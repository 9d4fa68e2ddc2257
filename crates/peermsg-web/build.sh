#!/usr/bin/env bash
# Builds the web client: the wasm module and its JavaScript glue into www/pkg, next to the
# page (www/index.html). Needs the wasm32 target and the wasm-bindgen command of the
# version Cargo.toml pins:
#   rustup target add wasm32-unknown-unknown
#   cargo install wasm-bindgen-cli --version 0.2.130
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="${CARGO_TARGET_DIR:-$here/../../target}"
cargo build --release --target wasm32-unknown-unknown -p peermsg-web \
    --manifest-path "$here/Cargo.toml" --target-dir "$target"
wasm-bindgen --target web --out-dir "$here/www/pkg" \
    "$target/wasm32-unknown-unknown/release/peermsg_web.wasm"
echo "built $here/www/pkg ($(wc -c < "$here/www/pkg/peermsg_web_bg.wasm") bytes of wasm)"
