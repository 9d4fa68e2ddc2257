//! The relay server as an attacker meets it, over real loopback sockets: too many
//! connections, slow-loris, peers that never read, guessed tokens, and many senders to one
//! receiver. Honest users must be served throughout. (Floods and the open-file limit have
//! files of their own: they measure or change the whole process.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use peermsg::client::ClientConfig;
use peermsg::relay::RelayConfig;
use peermsg::wire::{Decoder, Frame, Hello, Limits, Ping, Role};
use peermsg::ErrorCode;
use peermsg_tokio::{connect, ConnectError, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Stop = tokio::sync::oneshot::Sender<()>;

/// Starts a relay with `config`, opens `n` idle connections, and gives what the relay
/// wrote to one more before closing it, with the idle ones.
async fn one_too_many(
    config: ServerConfig,
    n: usize,
) -> (SocketAddr, Stop, Vec<TcpStream>, Vec<Frame>) {
    let (addr, stop) = start(config, None).await;
    let mut idle = Vec::new();
    for _ in 0..n {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // Let the relay take them all in before the next one comes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let frames = frames_until_closed(&mut extra, Duration::from_secs(5)).await;
    (addr, stop, idle, frames)
}

#[tokio::test]
async fn connections_past_the_limit_are_refused_and_the_relay_serves_on() {
    let config = ServerConfig {
        max_connections: 20,
        ..ServerConfig::default()
    };
    let (addr, _stop, mut idle, frames) = one_too_many(config, 20).await;
    assert!(
        matches!(frames.first(), Some(Frame::Hello(_))),
        "{frames:?}"
    );
    assert_eq!(close_code(&frames), Some(ErrorCode::LIMIT_EXCEEDED));
    // Once some leave, an honest user logs in.
    idle.truncate(15);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (alice, _events) = connect(addr, "alice", b"", ClientConfig::default(), None)
        .await
        .expect("served once others left");
    drop(alice);
}

#[tokio::test]
async fn connections_past_the_limit_per_address_are_refused() {
    let config = ServerConfig {
        max_connections_per_ip: 3,
        ..ServerConfig::default()
    };
    let (_, _stop, _idle, frames) = one_too_many(config, 3).await;
    assert_eq!(close_code(&frames), Some(ErrorCode::LIMIT_EXCEEDED));
}

#[tokio::test]
async fn a_slow_loris_is_closed_at_the_login_deadline() {
    let config = ServerConfig {
        relay: RelayConfig {
            login_timeout: Duration::from_millis(800),
            ..RelayConfig::default()
        },
        ..ServerConfig::default()
    };
    let (addr, _stop) = start(config, None).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let hello = encode(&[client_hello(), Frame::Ping(Ping { nonce: 1 })]);
    let (mut rd, mut wr) = s.split();
    // One byte every 100 ms, from a HELLO that never completes a login.
    let trickle = async {
        for b in hello.iter() {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::future::pending::<()>().await;
    };
    let started = std::time::Instant::now();
    let mut buf = BytesMut::new();
    let read_to_end = async { while !matches!(rd.read_buf(&mut buf).await, Ok(0) | Err(_)) {} };
    tokio::select! {
        _ = trickle => {}
        _ = read_to_end => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => panic!("still open after 10 s"),
    }
    eprintln!("closed after {:?}", started.elapsed());
    let mut decoder = Decoder::new(Limits::default()).unwrap();
    let mut frames = Vec::new();
    while let Ok(Some(f)) = decoder.decode(&mut buf) {
        frames.push(f);
    }
    assert_eq!(close_code(&frames), Some(ErrorCode::SOCKETTIMEOUT));
}

#[tokio::test]
async fn a_peer_that_never_reads_is_let_go_in_bounded_time() {
    // Mallory logs in and writes PINGs without ever reading: the PONGs pile up, the relay
    // closes her, and her socket is dropped within the close timeout, whatever she does.
    let config = ServerConfig {
        close_timeout: Duration::from_millis(500),
        relay: RelayConfig {
            receiver_queue: 64 * 1024,
            max_queued_bytes: 256 * 1024,
            ..RelayConfig::default()
        },
        ..ServerConfig::default()
    };
    let (addr, _stop) = start(config, None).await;
    let s = deaf_socket(addr).await;
    let mut s = s;
    s.write_all(&encode(&[client_hello(), login("mallory")]))
        .await
        .unwrap();
    let pings: Vec<Frame> = (0..1024).map(|n| Frame::Ping(Ping { nonce: n })).collect();
    let chunk = encode(&pings).freeze();
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if s.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "the relay still holds the socket after 20 s"
    );
}

#[tokio::test]
async fn a_receiver_whose_socket_takes_nothing_is_closed_and_its_senders_told() {
    let config = ServerConfig {
        write_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let (addr, _stop) = start(config, None).await;
    // Bob logs in taking many commands at once and keeps pinging (so he is not idle), but
    // never reads: the relay's socket toward him fills and takes nothing more.
    let s = deaf_socket(addr).await;
    let (_rd, mut wr) = s.into_split();
    let many = Frame::Hello(Hello::new(
        Role::Client,
        &Limits::default(),
        4096,
        16,
        256 * 1024,
        64 << 20,
    ));
    wr.write_all(&encode(&[many, login("bob")])).await.unwrap();
    tokio::spawn(async move {
        for n in 0.. {
            let ping = encode(&[Frame::Ping(Ping { nonce: n })]);
            if wr.write_all(&ping).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Four senders, 64 commands of 60 KiB each: 15 MiB, more than the kernel buffers.
    let mut senders = Vec::new();
    for i in 0..4 {
        senders.push(tokio::spawn(async move {
            let (me, _events) = connect(addr, &format!("s{i}"), b"", ClientConfig::default(), None)
                .await
                .unwrap();
            let mut ids = Vec::new();
            for _ in 0..64 {
                let cmd = Bytes::from(vec![7u8; 60 * 1024]);
                ids.push(me.send_cmd("bob", cmd, 0).await.unwrap());
            }
            tokio::time::timeout(Duration::from_secs(20), results(ids))
                .await
                .expect("the senders hear within 20 s")
        }));
    }
    // What was forwarded ends with 207 when bob is closed; what came after, OFFLINE.
    let mut lost = 0;
    for s in senders {
        let codes = s.await.unwrap();
        assert!(
            codes
                .iter()
                .all(|c| [ErrorCode::CONNECTIONLOST, ErrorCode::OFFLINE].contains(c)),
            "{codes:?}"
        );
        lost += codes
            .iter()
            .filter(|c| **c == ErrorCode::CONNECTIONLOST)
            .count();
    }
    assert!(lost > 0);
}

#[tokio::test]
async fn failed_logins_from_one_address_are_throttled() {
    let config = ServerConfig {
        max_login_failures: 5,
        ..ServerConfig::default()
    };
    let (addr, _stop) = start(config, Some(&[("alice", "right")])).await;
    for _ in 0..5 {
        let refused = connect(addr, "alice", b"wrong", ClientConfig::default(), None).await;
        assert!(matches!(
            refused,
            Err(ConnectError::Refused(ErrorCode::LOGIN_REJECTED))
        ));
    }
    // Now even the right token is refused from this address, for the window.
    let refused = connect(addr, "alice", b"right", ClientConfig::default(), None).await;
    assert!(
        matches!(
            refused,
            Err(ConnectError::Refused(ErrorCode::LOGIN_REJECTED))
        ),
        "{:?}",
        refused.map(|_| ())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_senders_to_one_listener_all_succeed() {
    let (addr, _stop) = start(ServerConfig::default(), None).await;
    let (_bob, mut b_events) = connect(addr, "bob", b"", ClientConfig::default(), None)
        .await
        .unwrap();
    tokio::spawn(async move { while b_events.recv().await.is_some() {} });
    let mut tasks = Vec::new();
    for i in 0..30 {
        tasks.push(tokio::spawn(async move {
            let (me, _events) = connect(addr, &format!("u{i}"), b"", ClientConfig::default(), None)
                .await
                .unwrap();
            let mut ids = Vec::new();
            ids.push(
                me.send_buffer("bob", Bytes::from(vec![i as u8; 3_000_000]), 0)
                    .await
                    .unwrap(),
            );
            for k in 0..64u32 {
                ids.push(
                    me.send_cmd("bob", Bytes::from(k.to_string()), 0)
                        .await
                        .unwrap(),
                );
            }
            results(ids).await
        }));
    }
    for t in tasks {
        let codes = t.await.unwrap();
        assert!(codes.iter().all(|c| *c == ErrorCode::NOERR), "{codes:?}");
    }
}
