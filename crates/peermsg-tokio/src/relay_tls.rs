//! The relay's TLS (the `tls` feature): a rustls session per connection, shared by its
//! reader (which decrypts) and the relay's task (which encrypts), under a lock held only
//! for a call. Without the feature, `relay_tls_off.rs` gives the same names with no value.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use peermsg::wire::Transmit;
use tokio::net::TcpStream;

/// A connection's TLS session.
pub(crate) type Tls = Arc<Mutex<rustls::ServerConnection>>;

/// A handshake's outcome, on its way to the relay's task.
pub(crate) type Session = Box<rustls::ServerConnection>;

/// What makes the sessions: the relay's certificate.
pub(crate) type Acceptor = tokio_rustls::TlsAcceptor;

/// The acceptor for a relay's TLS configuration.
pub(crate) fn acceptor(config: Arc<rustls::ServerConfig>) -> Acceptor {
    tokio_rustls::TlsAcceptor::from(config)
}

/// The handshake on `stream`, within `limit`: the stream and its session, or `None`.
pub(crate) async fn handshake(
    acceptor: Acceptor,
    stream: TcpStream,
    limit: Duration,
) -> Option<(TcpStream, Session)> {
    let tls = tokio::time::timeout(limit, acceptor.accept(stream))
        .await
        .ok()?
        .ok()?;
    let (stream, session) = tls.into_inner();
    Some((stream, Box::new(session)))
}

/// A handshaken session, ready to serve, and the plaintext that came with the
/// handshake's last flight (the client's first bytes).
pub(crate) fn session(session: Session) -> (Tls, BytesMut) {
    let mut session = *session;
    // Records are drained as soon as they are made: no limit is needed.
    session.set_buffer_limit(None);
    let mut early = BytesMut::new();
    take_plaintext(&mut session, &mut early);
    (Arc::new(Mutex::new(session)), early)
}

/// Encrypts `plain` for `tls` (and, with `close`, ends the TLS session): the records to
/// write.
pub(crate) fn encrypt(tls: &Tls, mut plain: Transmit, close: bool) -> Transmit {
    use std::io::Write;
    let mut tls = tls.lock().unwrap_or_else(PoisonError::into_inner);
    let mut records = Vec::with_capacity(plain.remaining() + plain.remaining() / 64 + 64);
    while let Some(chunk) = plain.pop_chunk() {
        // No buffer limit is set: everything goes in, and is drained just below.
        let _ = tls.writer().write_all(&chunk);
    }
    if close {
        tls.send_close_notify();
    }
    while tls.wants_write() {
        if tls.write_tls(&mut records).is_err() {
            break;
        }
    }
    let mut out = Transmit::new();
    out.push_bytes(bytes::Bytes::from(records));
    out
}

/// Decrypts `records` read from a TLS connection: the plaintext, and whether the TLS layer
/// has records of its own to send; `None` if the peer broke TLS or closed it.
pub(crate) fn decrypt(tls: &Tls, mut records: &[u8]) -> Option<(BytesMut, bool)> {
    let mut tls = tls.lock().unwrap_or_else(PoisonError::into_inner);
    let mut plain = BytesMut::new();
    while !records.is_empty() {
        match tls.read_tls(&mut records) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let state = tls.process_new_packets().ok()?;
        take_plaintext(&mut tls, &mut plain);
        if state.peer_has_closed() {
            return None;
        }
    }
    Some((plain, tls.wants_write()))
}

/// Appends to `plain` what a TLS session has decrypted and not yet handed on.
fn take_plaintext(session: &mut rustls::ServerConnection, plain: &mut BytesMut) {
    use std::io::Read;
    let mut chunk = [0u8; 16 * 1024];
    while let Ok(n) = session.reader().read(&mut chunk) {
        if n == 0 {
            break;
        }
        plain.extend_from_slice(&chunk[..n]);
    }
}
