//! What the relay server's tests share: a relay on a loopback port, raw frames, results.
#![allow(dead_code)] // each test file uses its own part

pub mod small_disk;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use peermsg::wire::{Decoder, Frame, Hello, Limits, Login, Role, UserId};
use peermsg::ErrorCode;
use peermsg_tokio::{serve, Authenticator, OpenAccess, SendHandle, ServerConfig, TokenTable};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A relay on a loopback port, served until the returned sender is dropped or used.
pub async fn start(
    config: ServerConfig,
    tokens: Option<&[(&str, &str)]>,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let auth: Box<dyn Authenticator> = match tokens {
        None => Box::new(OpenAccess),
        Some(t) => Box::new(TokenTable::new(
            t.iter()
                .map(|(u, k)| (u.to_string(), k.as_bytes().to_vec()))
                .collect::<HashMap<_, _>>(),
        )),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, config, auth, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// A connection to `addr` whose kernel buffers little of what comes to it (4 KiB): if it
/// does not read, the relay's socket toward it soon fills.
pub async fn deaf_socket(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).await.unwrap();
    socket2::SockRef::from(&s)
        .set_recv_buffer_size(4096)
        .unwrap();
    s
}

pub fn encode(frames: &[Frame]) -> BytesMut {
    let mut b = BytesMut::new();
    for f in frames {
        f.encode(&mut b).unwrap();
    }
    b
}

pub fn client_hello() -> Frame {
    Frame::Hello(Hello::new(
        Role::Client,
        &Limits::default(),
        64,
        16,
        256 * 1024,
        4 << 20,
    ))
}

pub fn login(user: &str) -> Frame {
    Frame::Login(Login {
        user: UserId::new(user).unwrap(),
        token: Bytes::new(),
    })
}

/// Everything the relay writes to `stream` until it closes it (within `limit`).
pub async fn frames_until_closed(stream: &mut TcpStream, limit: Duration) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    tokio::time::timeout(limit, async {
        loop {
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the relay closes the connection in time");
    let mut decoder = Decoder::new(Limits::default()).unwrap();
    let mut frames = Vec::new();
    while let Ok(Some(f)) = decoder.decode(&mut buf) {
        frames.push(f);
    }
    frames
}

pub fn close_code(frames: &[Frame]) -> Option<ErrorCode> {
    match frames.last() {
        Some(Frame::Close(c)) => Some(c.code),
        _ => None,
    }
}

/// A send's result, within a minute.
pub async fn result(send: SendHandle) -> ErrorCode {
    tokio::time::timeout(Duration::from_secs(60), send)
        .await
        .expect("a result in time")
}

/// The results of `sends`, in their order, whatever order they come in.
pub async fn results(sends: Vec<SendHandle>) -> Vec<ErrorCode> {
    let mut codes = Vec::new();
    for send in sends {
        codes.push(result(send).await);
    }
    codes
}

/// Resident memory of this process, from /proc/self/status.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[cfg(feature = "tls")]
/// A self-signed certificate for "relay.test", as a server configuration and a client
/// configuration that trusts it.
pub fn certificates() -> (
    std::sync::Arc<peermsg_tokio::rustls::ServerConfig>,
    std::sync::Arc<peermsg_tokio::rustls::ClientConfig>,
) {
    let made = rcgen::generate_simple_self_signed(vec!["relay.test".to_string()]).unwrap();
    let cert = made.cert.der().clone();
    let key = peermsg_tokio::rustls::pki_types::PrivateKeyDer::Pkcs8(
        made.key_pair.serialize_der().into(),
    );
    let provider = std::sync::Arc::new(peermsg_tokio::rustls::crypto::ring::default_provider());
    let server = peermsg_tokio::rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = peermsg_tokio::rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = peermsg_tokio::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (std::sync::Arc::new(server), std::sync::Arc::new(client))
}
