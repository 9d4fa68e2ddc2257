//! TLS between clients and the relay, over loopback with a certificate made in the test:
//! commands, buffers and files go through and nothing of them is readable on the wire; a
//! client that does not trust the relay's certificate, and a plain client, are refused
//! cleanly and fast.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use peermsg_tokio::rustls;
use peermsg_tokio::{
    connect, connect_tls, serve_with, ClientConfig, ClientEvent, ConnectError, ErrorCode, Event,
    Extras, OpenAccess, ServerConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::certificates;

/// A TLS relay on loopback, behind a proxy that records every byte either way; the
/// proxy's address and the record.
async fn relay_behind_a_recorder(
    tls: Arc<rustls::ServerConfig>,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = listener.local_addr().unwrap();
    let extras = Extras {
        tls: Some(tls),
        ..Extras::default()
    };
    tokio::spawn(serve_with(
        listener,
        ServerConfig::default(),
        OpenAccess,
        extras,
        std::future::pending(),
    ));
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = proxy.accept().await {
            let server = tokio::net::TcpStream::connect(relay_addr).await.unwrap();
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            for (mut from, mut to) in [
                (
                    Box::new(cr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                ),
                (Box::new(sr) as _, Box::new(cw) as _),
            ] {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = from.read(&mut buf).await {
                        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = to.shutdown().await;
                });
            }
        }
    });
    (proxy_addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_buffers_and_files_go_through_tls_and_nothing_is_readable_on_the_wire() {
    let (server, client) = certificates();
    let (addr, wire) = relay_behind_a_recorder(server).await;
    let dir = tempfile::tempdir().unwrap();
    let (_bob, mut bob_events) = connect_tls(
        addr,
        "relay.test",
        client.clone(),
        "bob",
        b"",
        ClientConfig::default(),
        Some(dir.path()),
    )
    .await
    .unwrap();
    let (alice, _alice_events) = connect_tls(
        addr,
        "relay.test",
        client,
        "alice",
        b"",
        ClientConfig::default(),
        None,
    )
    .await
    .unwrap();
    let secret = b"the launch code is 0000";
    let cmd = alice
        .send_cmd("bob", Bytes::from_static(secret), 0)
        .await
        .unwrap();
    let buffer: Bytes = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let buf = alice.send_buffer("bob", buffer.clone(), 0).await.unwrap();
    let src = tempfile::NamedTempFile::new().unwrap();
    let file_bytes: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(src.path(), &file_bytes).unwrap();
    let file = alice.send_file("bob", src.path(), 0).await.unwrap();
    let reading = tokio::spawn(async move {
        let (mut got_cmd, mut got_buf, mut got_file) = (None, None, None);
        while got_cmd.is_none() || got_buf.is_none() || got_file.is_none() {
            match bob_events.recv().await.unwrap() {
                ClientEvent::Core(Event::CmdReceived { data, .. }) => got_cmd = Some(data),
                ClientEvent::Core(Event::BufferReceived { data, .. }) => got_buf = Some(data),
                ClientEvent::FileReceived { tmp_file, .. } => got_file = Some(tmp_file),
                _ => {}
            }
        }
        (got_cmd.unwrap(), got_buf.unwrap(), got_file.unwrap())
    });
    for send in [cmd, buf, file] {
        let code = tokio::time::timeout(Duration::from_secs(60), send)
            .await
            .unwrap();
        assert_eq!(code, ErrorCode::NOERR);
    }
    let (got_cmd, got_buf, got_file) = reading.await.unwrap();
    assert_eq!(&got_cmd[..], secret);
    assert!(got_buf == buffer);
    assert!(std::fs::read(got_file).unwrap() == file_bytes);
    // What crossed the wire: none of the command, nor of the user ids, nor a run of the
    // file's bytes.
    let wire = wire.lock().unwrap().clone();
    assert!(wire.len() > 5_000_000, "both ways, {} bytes", wire.len());
    let contains = |needle: &[u8]| wire.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(secret), "the command in clear");
    assert!(!contains(b"alice"), "a user id in clear");
    assert!(!contains(&file_bytes[1000..1064]), "file bytes in clear");
}

#[tokio::test]
async fn an_untrusted_relay_and_a_plain_client_are_refused_fast() {
    let (server, _) = certificates();
    let (_, other_client) = certificates(); // trusts another certificate
    let (addr, _wire) = relay_behind_a_recorder(server).await;
    let started = Instant::now();
    let refused = connect_tls(
        addr,
        "relay.test",
        other_client,
        "alice",
        b"",
        ClientConfig::default(),
        None,
    )
    .await;
    let message = match refused {
        Err(ConnectError::Tls(e)) => e.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(message.contains("certificate"), "one clear line: {message}");
    // A client speaking plain peermsg to the TLS relay: closed at once, not left waiting.
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        connect(addr, "alice", b"", ClientConfig::default(), None),
    )
    .await
    .expect("refused in time");
    assert!(plain.is_err());
    assert!(started.elapsed() < Duration::from_secs(5));
}
