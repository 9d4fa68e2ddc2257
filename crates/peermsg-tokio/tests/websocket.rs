//! The relay's WebSocket transport, as browsers use it: users over WebSocket (plain and
//! TLS) exchange commands, buffers and files with users over TCP; clients that break the
//! WebSocket protocol or never read are let go without touching anyone else; the web
//! folder is served, and nothing outside it.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{client_hello, encode, login, result};
use futures::{SinkExt, StreamExt};
use peermsg::wire::{Frame, Hello, Limits, Ping, Role};
use peermsg_tokio::{
    connect, rustls, serve_with, ClientConfig, ClientEvent, ErrorCode, Event, Extras, OpenAccess,
    ServerConfig, WebSocket,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// A relay with a TCP and a WebSocket listener (and `web` served on the latter, `tls` on
/// both): their addresses.
async fn relay(
    config: ServerConfig,
    web: Option<&std::path::Path>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (SocketAddr, SocketAddr) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = (tcp.local_addr().unwrap(), ws.local_addr().unwrap());
    let mut websocket = WebSocket::new(ws);
    websocket.web = web.map(|w| w.to_path_buf());
    websocket.max_frame = 256 * 1024;
    let extras = Extras {
        websocket: Some(websocket),
        tls,
        ..Extras::default()
    };
    tokio::spawn(serve_with(
        tcp,
        config,
        OpenAccess,
        extras,
        std::future::pending(),
    ));
    addrs
}

/// A TCP port whose connections are carried to the relay's WebSocket listener at `ws`
/// (over TLS with `tls`), each read in one binary message, as a browser's client sends:
/// so the tokio client can speak to the relay over WebSocket.
async fn websocket_bridge(ws: SocketAddr, tls: Option<Arc<rustls::ClientConfig>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((local, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let tcp = TcpStream::connect(ws).await.unwrap();
                match tls {
                    None => bridge(local, tcp, "ws").await,
                    Some(tls) => {
                        let name = rustls::pki_types::ServerName::try_from("relay.test").unwrap();
                        let tcp = tokio_rustls::TlsConnector::from(tls)
                            .connect(name, tcp)
                            .await
                            .unwrap();
                        bridge(local, tcp, "wss").await
                    }
                }
            });
        }
    });
    addr
}

async fn bridge<S: AsyncRead + AsyncWrite + Unpin>(local: TcpStream, remote: S, scheme: &str) {
    let url = format!("{scheme}://relay.test/");
    let (ws, _) = tokio_tungstenite::client_async(url, remote).await.unwrap();
    let (mut to_relay, mut from_relay) = ws.split();
    let (mut rd, mut wr) = local.into_split();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let message = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
            if to_relay.send(message).await.is_err() {
                break;
            }
        }
        let _ = to_relay.close().await;
    };
    let down = async move {
        while let Some(message) = from_relay.next().await {
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("bridge: {e}");
                    break;
                }
            };
            if let Message::Binary(data) = message {
                if wr.write_all(&data).await.is_err() {
                    break;
                }
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::join!(up, down);
}

/// A raw WebSocket connection to `ws`, upgraded.
async fn raw_websocket(ws: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(ws).await.unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: relay.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    s
}

/// A client frame: `opcode` (FIN set), masked, with `payload`; the length field as given.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads `s` until the relay closes it, within `limit`: whether it did.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(limit, async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    })
    .await
    .is_ok()
}

/// The first event of the core among `events` that `wanted` picks (within 30 s each).
async fn core_event<T>(
    events: &mut peermsg_tokio::ClientEvents,
    wanted: impl Fn(Event) -> Option<T>,
) -> T {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("an event in time")
            .expect("the client runs");
        if let Some(found) = match event {
            ClientEvent::Core(e) => wanted(e),
            _ => None,
        } {
            return found;
        }
    }
}

fn buffer_received(event: Event) -> Option<Bytes> {
    match event {
        Event::BufferReceived { data, .. } => Some(data),
        _ => None,
    }
}

/// Runs `work` while the events of `events` (a sender's progress, say) are taken and
/// dropped, as an application takes them: a client whose events are not taken waits.
async fn draining<T>(
    events: &mut peermsg_tokio::ClientEvents,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = events.recv() => {}
        }
    }
}

/// Commands, a buffer and a file each way between a user over WebSocket and one over
/// TCP, through the relay.
async fn exchange(ws_user_at: SocketAddr, tcp_at: SocketAddr, dir: &std::path::Path) {
    let buffer: Bytes = (0..6_000_000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let (alice, mut alice_events) =
        connect(ws_user_at, "alice", b"", ClientConfig::default(), Some(dir))
            .await
            .unwrap();
    let (bob, mut bob_events) = connect(tcp_at, "bob", b"", ClientConfig::default(), Some(dir))
        .await
        .unwrap();

    // (A receiver's application takes what arrives as its sender waits for the result,
    // and a sender's progress is taken too: a client whose events are not taken waits.)
    let cmd = alice
        .send_cmd("bob", Bytes::from_static(b"hello over websocket"), 1)
        .await
        .unwrap();
    let received = core_event(&mut bob_events, |e| match e {
        Event::CmdReceived { from, data, .. } => Some((from, data)),
        _ => None,
    });
    let (code, (from, data)) = tokio::join!(result(cmd), received);
    assert_eq!(code, ErrorCode::NOERR);
    assert_eq!(
        (from.as_str(), &data[..]),
        ("alice", &b"hello over websocket"[..])
    );

    let sent = bob.send_buffer("alice", buffer.clone(), 2).await.unwrap();
    let received = core_event(&mut alice_events, buffer_received);
    let (code, data) = draining(&mut bob_events, async {
        tokio::join!(result(sent), received)
    })
    .await;
    assert_eq!(code, ErrorCode::NOERR);
    assert_eq!(data, buffer);

    let file = dir.join("to-bob.bin");
    let content: Vec<u8> = (0..20_000_000u32)
        .map(|i| (i.wrapping_mul(31) >> 3) as u8)
        .collect();
    std::fs::write(&file, &content).unwrap();
    let sent = alice.send_file("bob", &file, 3).await.unwrap();
    let received = async {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(30), bob_events.recv());
            if let ClientEvent::FileReceived { tmp_file, .. } = event.await.unwrap().unwrap() {
                return tmp_file;
            }
        }
    };
    let (code, tmp) = draining(&mut alice_events, async {
        tokio::join!(result(sent), received)
    })
    .await;
    assert_eq!(code, ErrorCode::NOERR);
    assert_eq!(std::fs::read(tmp).unwrap(), content);
}

#[tokio::test]
async fn users_over_websocket_and_over_tcp_exchange_commands_buffers_and_files() {
    let (tcp, ws) = relay(ServerConfig::default(), None, None).await;
    let bridged = websocket_bridge(ws, None).await;
    let dir = tempfile::tempdir().unwrap();
    exchange(bridged, tcp, dir.path()).await;
}

#[tokio::test]
async fn users_over_websocket_and_tls_reach_users_over_tcp_and_tls() {
    let (server, client) = common::certificates();
    let (tcp, ws) = relay(ServerConfig::default(), None, Some(server)).await;
    let bridged = websocket_bridge(ws, Some(client.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, _alice_events) = connect(
        bridged,
        "alice",
        b"",
        ClientConfig::default(),
        Some(dir.path()),
    )
    .await
    .unwrap();
    let (_bob, mut bob_events) = peermsg_tokio::connect_tls(
        tcp,
        "relay.test",
        client,
        "bob",
        b"",
        ClientConfig::default(),
        Some(dir.path()),
    )
    .await
    .unwrap();
    let buffer = Bytes::from(vec![9u8; 3_000_000]);
    let sent = alice.send_buffer("bob", buffer.clone(), 0).await.unwrap();
    let received = core_event(&mut bob_events, buffer_received);
    let (code, data) = tokio::join!(result(sent), received);
    assert_eq!(code, ErrorCode::NOERR);
    assert_eq!(data, buffer);
}

#[tokio::test]
async fn clients_that_break_the_websocket_protocol_are_closed_and_others_go_on() {
    let (tcp, ws) = relay(ServerConfig::default(), None, None).await;
    let hello_login = encode(&[client_hello(), login("mallory")]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a text message", client_frame(0x1, b"hello")),
        ("an unmasked frame", {
            let mut f = client_frame(0x2, &hello_login);
            f[1] &= 0x7f;
            f.drain(2..6);
            f
        }),
        ("a frame over the cap (claims 1 TiB)", {
            let mut f = vec![0x82, 0x80 | 127];
            f.extend_from_slice(&(1u64 << 40).to_be_bytes());
            f.extend_from_slice(&[1, 2, 3, 4]);
            f
        }),
        ("a reserved opcode", client_frame(0x3, b"")),
        ("a close frame", client_frame(0x8, &1000u16.to_be_bytes())),
    ];
    let mut cut = Vec::new();
    for (what, frame) in &cases {
        let mut s = raw_websocket(ws).await;
        // Logged in first, so the relay holds a session that must end.
        s.write_all(&client_frame(0x2, &hello_login)).await.unwrap();
        s.write_all(frame).await.unwrap();
        cut.push((*what, closed_within(&mut s, Duration::from_secs(5)).await));
    }
    assert!(cut.iter().all(|(_, closed)| *closed), "{cut:?}");

    // A request that is not a WebSocket, with no web folder: 404, and closed.
    let mut s = TcpStream::connect(ws).await.unwrap();
    s.write_all(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    // Meanwhile the relay serves others as before.
    let bridged = websocket_bridge(ws, None).await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, _a) = connect(
        bridged,
        "alice",
        b"",
        ClientConfig::default(),
        Some(dir.path()),
    )
    .await
    .unwrap();
    let (_bob, _b) = connect(tcp, "bob", b"", ClientConfig::default(), Some(dir.path()))
        .await
        .unwrap();
    let cmd = alice
        .send_cmd("bob", Bytes::from_static(b"still here"), 0)
        .await
        .unwrap();
    assert_eq!(result(cmd).await, ErrorCode::NOERR);
}

#[tokio::test]
async fn a_websocket_client_answered_with_pongs_and_frames_split_anywhere() {
    let (_tcp, ws) = relay(ServerConfig::default(), None, None).await;
    let mut s = raw_websocket(ws).await;
    // HELLO and LOGIN split over three frames of one message, a ping between, written a
    // byte at a time.
    let hello_login = encode(&[client_hello(), login("carol")]);
    let (a, rest) = hello_login.split_at(3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut wire = client_frame(0x2, a);
    wire[0] &= 0x7f; // not final
    wire.extend(client_frame(0x9, b"are you there"));
    let mut middle = client_frame(0x0, b);
    middle[0] &= 0x7f;
    wire.extend(middle);
    wire.extend(client_frame(0x0, c));
    for byte in wire {
        s.write_all(&[byte]).await.unwrap();
    }
    // The relay's HELLO, the pong, and the login's answer, each in a binary frame or the
    // pong frame.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    let pong = [&[0x8a, 13][..], b"are you there"].concat();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !got.windows(pong.len()).any(|w| w == &pong[..]) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("a pong in time")
            .unwrap();
        assert!(n > 0, "closed");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got[0], 0x82, "the relay's bytes come in binary frames");
}

#[tokio::test]
async fn a_websocket_receiver_that_never_reads_is_closed_and_its_senders_told() {
    let config = ServerConfig {
        write_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let (tcp, ws) = relay(config, None, None).await;
    let s = raw_websocket(ws).await;
    socket2::SockRef::from(&s)
        .set_recv_buffer_size(4096)
        .unwrap();
    let (_rd, mut wr) = s.into_split();
    let many = Frame::Hello(Hello::new(
        Role::Client,
        &Limits::default(),
        4096,
        16,
        256 * 1024,
        64 << 20,
    ));
    wr.write_all(&client_frame(0x2, &encode(&[many, login("bob")])))
        .await
        .unwrap();
    tokio::spawn(async move {
        for n in 0.. {
            let ping = client_frame(0x2, &encode(&[Frame::Ping(Ping { nonce: n })]));
            if wr.write_all(&ping).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (me, _events) = connect(tcp, "alice", b"", ClientConfig::default(), None)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..256 {
        ids.push(
            me.send_cmd("bob", Bytes::from(vec![7u8; 60 * 1024]), 0)
                .await
                .unwrap(),
        );
    }
    let codes = tokio::time::timeout(Duration::from_secs(20), common::results(ids))
        .await
        .expect("the sender hears within 20 s");
    assert!(
        codes
            .iter()
            .all(|c| [ErrorCode::CONNECTIONLOST, ErrorCode::OFFLINE].contains(c)),
        "{codes:?}"
    );
    assert!(codes.contains(&ErrorCode::CONNECTIONLOST));
}

#[tokio::test]
async fn the_web_folder_is_served_and_nothing_outside_it() {
    let root = tempfile::tempdir().unwrap();
    let web = root.path().join("www");
    std::fs::create_dir_all(web.join("pkg")).unwrap();
    std::fs::write(web.join("index.html"), "<h1>peermsg</h1>").unwrap();
    std::fs::write(web.join("pkg/peermsg_web_bg.wasm"), b"\0asm").unwrap();
    std::fs::write(root.path().join("secret"), "not for the web").unwrap();
    let (_tcp, ws) = relay(ServerConfig::default(), Some(&web), None).await;
    let get = |path: &'static str| async move {
        let mut s = TcpStream::connect(ws).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    };
    let index = get("/").await;
    assert!(
        index.starts_with("HTTP/1.1 200") && index.ends_with("<h1>peermsg</h1>"),
        "{index}"
    );
    let wasm = get("/pkg/peermsg_web_bg.wasm").await;
    assert!(wasm.contains("Content-Type: application/wasm"), "{wasm}");
    for outside in [
        "/../secret",
        "/%2e%2e/secret",
        "/.hidden",
        "/pkg/../../secret",
    ] {
        let answer = get(outside).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{outside}: {answer}");
        assert!(!answer.contains("not for the web"));
    }
}
