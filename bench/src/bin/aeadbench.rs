//! The ciphers a sealed file's records may be under, alone, on 64 KiB records in place:
//! the RustCrypto crates (what no_std, thumbv7em, wasm32 and i686 builds use; on this
//! machine they detect its AES and AVX2 instructions at run time) and ring's assembly (what
//! x86_64 and aarch64 builds use), beside a memory copy of the same bytes, in one run. What a sealed file costs per end beyond the plain program
//! (docs/PERFORMANCE.md, "Sealed files through the program").
//!
//! ```sh
//! cargo run --release -p peermsg-bench --bin aeadbench        # 1 GiB per cipher
//! ```

use std::time::Instant;

const RECORD: usize = 64 * 1024;

/// GB/s of `seal` over `total` bytes in records, and the tags' first byte (kept, so the
/// work is not optimized away).
fn rate(total: usize, record: &mut [u8], mut seal: impl FnMut(u64, &mut [u8]) -> u8) -> f64 {
    let start = Instant::now();
    let mut mix = 0u8;
    for number in 0..(total / RECORD) as u64 {
        mix ^= seal(number, record);
    }
    std::hint::black_box(mix);
    total as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn nonce(number: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[0] = 1;
    n[4..].copy_from_slice(&number.to_be_bytes());
    n
}

fn main() {
    let total = std::env::args()
        .nth(1)
        .and_then(|a| a.parse::<usize>().ok())
        .unwrap_or(1024)
        << 20;
    let mut record = vec![7u8; RECORD];
    let key = [1u8; 32];
    let mut rows = Vec::new();
    {
        use chacha20poly1305::aead::{AeadInOut, KeyInit};
        let c = chacha20poly1305::ChaCha20Poly1305::new(&key.into());
        let r = rate(total, &mut record, |n, b| {
            let tag = c.encrypt_inout_detached(&nonce(n).into(), &[], b.into());
            tag.map_or(0, |t| t[0])
        });
        rows.push(("ChaCha20-Poly1305, RustCrypto", r));
        let a = aes_gcm::Aes256Gcm::new(&key.into());
        let r = rate(total, &mut record, |n, b| {
            let tag = a.encrypt_inout_detached(&nonce(n).into(), &[], b.into());
            tag.map_or(0, |t| t[0])
        });
        rows.push(("AES-256-GCM, RustCrypto", r));
    }
    for (name, algorithm) in [
        ("ChaCha20-Poly1305, ring", &ring::aead::CHACHA20_POLY1305),
        ("AES-256-GCM, ring", &ring::aead::AES_256_GCM),
    ] {
        let key =
            ring::aead::LessSafeKey::new(ring::aead::UnboundKey::new(algorithm, &key).unwrap());
        let r = rate(total, &mut record, |n, b| {
            let nonce = ring::aead::Nonce::assume_unique_for_key(nonce(n));
            let tag = key.seal_in_place_separate_tag(nonce, ring::aead::Aad::empty(), b);
            tag.map_or(0, |t| t.as_ref()[0])
        });
        rows.push((name, r));
    }
    let source = vec![3u8; RECORD];
    let copy = rate(total, &mut record, |_, b| {
        b.copy_from_slice(&source);
        b[0]
    });
    let base = rows[0].1;
    println!("| cipher, 64 KiB records sealed in place | GB/s | CPU s/GiB | against RustCrypto's ChaCha20-Poly1305 |");
    println!("| --- | --- | --- | --- |");
    for (name, r) in rows {
        println!(
            "| {name} | {r:.2} | {:.2} | {:.2}x |",
            1.073_741_824 / r,
            r / base
        );
    }
    println!(
        "| (a memory copy of the same bytes) | {copy:.2} | {:.3} | {:.1}x |",
        1.073_741_824 / copy,
        copy / base
    );
}
