//! Sealed messages over real sockets: every byte that reaches the relay and leaves it is
//! recorded by a proxy in front of it, and none of the plaintext is there.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{result, start};
use peermsg::client::Event;
use peermsg::seal::{KeyStatus, Sealing};
use peermsg::ErrorCode;
use peermsg_tokio::{ClientEvent, ClientHandle, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy to `relay` that keeps a copy of every byte either way.
async fn recording_proxy(relay: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let tap = log.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(relay).await.unwrap();
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw, tap.clone()));
            tokio::spawn(pipe(sr, cw, tap.clone()));
        }
    });
    (addr, log)
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    log: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        log.lock().unwrap().extend_from_slice(&buf[..n]);
    }
}

fn sealing(n: u8) -> Sealing {
    Sealing {
        secret: [n; 32],
        entropy: [0; 32],
        pinned: Vec::new(),
        trust_first_use: true,
    }
}

async fn user(
    addr: SocketAddr,
    name: &str,
    sealing: Option<Sealing>,
) -> (ClientHandle, peermsg_tokio::ClientEvents) {
    user_in(addr, name, sealing, None).await
}

async fn user_in(
    addr: SocketAddr,
    name: &str,
    sealing: Option<Sealing>,
    files_to: Option<&std::path::Path>,
) -> (ClientHandle, peermsg_tokio::ClientEvents) {
    let builder = ClientHandle::builder(name).server(Server::Tcp(addr.to_string()));
    let builder = match files_to {
        Some(dir) => builder.files_to(dir),
        None => builder,
    };
    let builder = match sealing {
        Some(s) => builder.sealing(s),
        None => builder,
    };
    builder.connect().await.unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_carries_sealed_commands_and_buffers_it_cannot_read() {
    let (relay, _stop) = start(ServerConfig::default(), None).await;
    let (addr, log) = recording_proxy(relay).await;
    let (alice, _a) = user(addr, "alice", Some(sealing(1))).await;
    let (_bob, mut b) = user(addr, "bob", Some(sealing(2))).await;
    let command = Bytes::from_static(b"the vault code is 7-1-9-3, tell no one");
    let mut buffer = vec![0u8; 3 << 20];
    for (i, b) in buffer.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    buffer[2_000_000..2_000_025].copy_from_slice(b"A PLAINTEXT MARK IN THERE");
    let buffer = Bytes::from(buffer);
    let cmd = alice.send_cmd("bob", command.clone(), 1).await.unwrap();
    let buf = alice.send_buffer("bob", buffer.clone(), 2).await.unwrap();
    assert_eq!(result(cmd).await, ErrorCode::NOERR);
    assert_eq!(result(buf).await, ErrorCode::NOERR);
    let (mut got_cmd, mut got_buf, mut learned) = (None, None, false);
    while got_cmd.is_none() || got_buf.is_none() {
        match b.recv().await.unwrap() {
            ClientEvent::Core(Event::CmdReceived { data, .. }) => got_cmd = Some(data),
            ClientEvent::Core(Event::BufferReceived { data, .. }) => got_buf = Some(data),
            ClientEvent::Core(Event::PeerKey {
                status: Some(KeyStatus::Learned),
                ..
            }) => learned = true,
            _ => {}
        }
    }
    assert_eq!(got_cmd, Some(command.clone()));
    assert!(got_buf == Some(buffer.clone()), "the buffer whole");
    assert!(learned, "bob pinned alice's key on first use");
    let log = log.lock().unwrap();
    assert!(log.len() > buffer.len(), "the proxy saw the traffic");
    assert!(!contains(&log, &command[..12]), "no command plaintext");
    assert!(!contains(&log, b"A PLAINTEXT MARK"), "no buffer plaintext");
    assert!(
        !contains(&log, &buffer[100_000..100_032]),
        "no buffer plaintext"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealing_user_refuses_the_clear_and_is_not_sent_in_it() {
    let (relay, _stop) = start(ServerConfig::default(), None).await;
    let (alice, _a) = user(relay, "alice", Some(sealing(1))).await;
    let (carol, _c) = user(relay, "carol", None).await;
    // carol does not seal: alice's send finds no key; carol's plain command is refused.
    let to_carol = alice.send_cmd("carol", "hi".into(), 0).await.unwrap();
    assert_eq!(result(to_carol).await, ErrorCode::NO_PEER_KEY);
    let to_alice = carol.send_cmd("alice", "hi".into(), 0).await.unwrap();
    assert_eq!(result(to_alice).await, ErrorCode::SEAL_REQUIRED);
    // Files alike.
    let src = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(src.path(), b"secret file").unwrap();
    let to_carol = alice.send_file("carol", src.path(), 0).await.unwrap();
    assert_eq!(result(to_carol).await, ErrorCode::NO_PEER_KEY);
    let to_alice = carol.send_file("alice", src.path(), 0).await.unwrap();
    assert_eq!(result(to_alice).await, ErrorCode::SEAL_REQUIRED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_carries_a_sealed_file_and_never_its_bytes_or_name() {
    let (relay, _stop) = start(ServerConfig::default(), None).await;
    let (addr, log) = recording_proxy(relay).await;
    let inbox = tempfile::tempdir().unwrap();
    let (alice, _a) = user(addr, "alice", Some(sealing(1))).await;
    let (_bob, mut b) = user_in(addr, "bob", Some(sealing(2)), Some(inbox.path())).await;
    let dir = tempfile::tempdir().unwrap();
    let name = "merger-terms-confidential.txt";
    let path = dir.path().join(name);
    let mut file = vec![0u8; 5 << 20];
    for (i, b) in file.iter_mut().enumerate() {
        *b = (i * 7 % 253) as u8;
    }
    file[4_000_000..4_000_021].copy_from_slice(b"A FILE PLAINTEXT MARK");
    std::fs::write(&path, &file).unwrap();
    let send = alice.send_file("bob", &path, 3).await.unwrap();
    // bob's events are taken as they come (they are bounded: an application that does not
    // take them holds its file back).
    let (kept, kept_name) = loop {
        if let ClientEvent::FileReceived {
            tmp_file,
            org_file_name,
            size,
            ..
        } = b.recv().await.unwrap()
        {
            assert_eq!(size, file.len() as u64, "the plain size");
            break (tmp_file, org_file_name);
        }
    };
    assert_eq!(result(send).await, ErrorCode::NOERR);
    assert_eq!(kept_name, name);
    assert!(std::fs::read(&kept).unwrap() == file, "the file whole");
    let log = log.lock().unwrap();
    assert!(log.len() > file.len(), "the proxy saw the traffic");
    assert!(
        !contains(&log, b"A FILE PLAINTEXT MARK"),
        "no file plaintext"
    );
    assert!(
        !contains(&log, &file[1_000_000..1_000_032]),
        "no file plaintext"
    );
    assert!(!contains(&log, name.as_bytes()), "no file name");
    assert!(!contains(&log, b"merger-terms"), "no part of the name");
}
