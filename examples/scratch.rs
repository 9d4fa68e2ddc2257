use bytes::{BufMut, Bytes, BytesMut};
use std::time::{Duration, Instant};
fn run(p: &Bytes, first: usize, hdr: usize, arc: bool) -> Duration {
    let mut buf = BytesMut::new();
    let mut e = Duration::ZERO;
    let mut moves = 0;
    let mut last = 0usize;
    for _ in 0..1000 {
        if !arc {
            buf.clear();
        }
        let t = Instant::now();
        for i in 0..64 {
            let h = if i == 0 { first } else { hdr };
            buf.extend_from_slice(&[0u8; 64][..h]);
            buf.put_slice(p);
        }
        e += t.elapsed();
        if arc {
            let cur = buf.as_ptr() as usize - buf.len();
            if cur != last {
                moves += 1;
                last = cur;
            }
        }
        if arc {
            for i in 0..64 {
                let h = if i == 0 { first } else { hdr };
                let f = buf.split_to(h + p.len());
                std::hint::black_box(&f);
            }
        }
    }
    if arc {
        eprintln!("moves {moves} cap {}", buf.capacity());
    }
    e
}
fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let exact = Bytes::from(vec![0x5au8; n]);
    let big = Bytes::from(vec![0x5au8; n + 4096]).slice(0..n);
    for (first, hdr) in [(4, 8), (8, 8)] {
        for arc in [false, true] {
            println!(
                "first {first} hdr {hdr} arc {arc}: exact {:?} big {:?}",
                run(&exact, first, hdr, arc),
                run(&big, first, hdr, arc)
            );
        }
    }
}
