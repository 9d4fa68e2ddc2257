//! A flood of frames before login, against the relay server, while an honest pair works:
//! the process's memory is read from /proc, so this test has a process of its own.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use peermsg::client::ClientConfig;
use peermsg::wire::{Frame, Ping};
use peermsg::ErrorCode;
use peermsg_tokio::{connect, ServerConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_before_login_stays_bounded_while_an_honest_pair_works() {
    let (addr, _stop) = start(ServerConfig::default(), None).await;
    let (alice, _a_events) = connect(addr, "alice", b"", ClientConfig::default(), None)
        .await
        .unwrap();
    let (_bob, mut b_events) = connect(addr, "bob", b"", ClientConfig::default(), None)
        .await
        .unwrap();
    tokio::spawn(async move { while b_events.recv().await.is_some() {} });
    let before = rss_bytes();
    // Two connections that never log in write PONGs (allowed before login) as fast as
    // they can, never read, and reconnect whenever they are closed.
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut flooders = Vec::new();
    for _ in 0..2 {
        let written = written.clone();
        flooders.push(tokio::spawn(async move {
            let pongs: Vec<Frame> = (0..4096).map(|n| Frame::Pong(Ping { nonce: n })).collect();
            let chunk = encode(&pongs).freeze();
            // Closed for it, it comes back at once.
            loop {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    continue;
                };
                let _ = s.write_all(&encode(&[client_hello()])).await;
                while s.write_all(&chunk).await.is_ok() {
                    written.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    // Meanwhile alice keeps commanding bob, one at a time; every one gets through.
    let mut peak = before;
    let mut rtts = Vec::new();
    for k in 0..200u32 {
        let sent = std::time::Instant::now();
        let id = alice
            .send_cmd("bob", Bytes::from(k.to_string()), 0)
            .await
            .unwrap();
        assert_eq!(result(id).await, ErrorCode::NOERR);
        rtts.push(sent.elapsed());
        peak = peak.max(rss_bytes());
        if k % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let flooded = written.load(std::sync::atomic::Ordering::Relaxed);
    for f in flooders {
        f.abort();
    }
    rtts.sort();
    eprintln!(
        "command round trips under the flood: median {:?}, max {:?}",
        rtts[rtts.len() / 2],
        rtts[rtts.len() - 1]
    );
    let grown = peak.saturating_sub(before);
    eprintln!("the flooders' sockets took {flooded} bytes; memory grew by {grown} bytes");
    assert!(flooded > 8 << 20, "the flood was too weak to mean anything");
    assert!(grown < 48 << 20, "memory grew by {grown} bytes");
}
