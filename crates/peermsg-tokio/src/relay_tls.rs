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
    // All chunks in one call, so records are full (a call per chunk made a record of each
    // frame's header alone). No buffer limit is set: everything goes in, and is drained
    // just below.
    while plain.has_remaining() {
        let written = {
            // A batch is at most `transmit_batch` (256 KiB) of frames: two chunks each at
            // most, a header and a payload of its own.
            let mut slices = [std::io::IoSlice::new(&[]); 256];
            let n = plain.chunks_vectored(&mut slices);
            tls.writer().write_vectored(&slices[..n]).unwrap_or(0)
        };
        if written == 0 {
            break;
        }
        plain.advance(written);
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
    // The plaintext is shorter than its records.
    let mut plain = BytesMut::with_capacity(records.len());
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

/// Appends to `plain` what a TLS session has decrypted and not yet handed on, copied once:
/// straight out of the session's buffer.
fn take_plaintext(session: &mut rustls::ServerConnection, plain: &mut BytesMut) {
    use std::io::BufRead;
    let mut reader = session.reader();
    while let Ok(chunk) = reader.fill_buf() {
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        plain.extend_from_slice(chunk);
        reader.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A server session and a client session, handshaken in memory.
    fn handshaken() -> (Tls, rustls::ClientConnection) {
        let (server, pin) = crate::tls::self_signed("localhost").unwrap();
        let trust = crate::tls::Trust::pin(&pin).unwrap();
        let client = crate::tls::client_config(&trust).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(client, name).unwrap();
        let mut server = rustls::ServerConnection::new(server).unwrap();
        while client.is_handshaking() || server.is_handshaking() {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            server.read_tls(&mut &wire[..]).unwrap();
            server.process_new_packets().unwrap();
            wire.clear();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            client.read_tls(&mut &wire[..]).unwrap();
            client.process_new_packets().unwrap();
        }
        // What the server sends after its handshake (session tickets) goes now, so what a
        // test encrypts next is its own records only.
        let mut wire = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        client.read_tls(&mut &wire[..]).unwrap();
        client.process_new_packets().unwrap();
        client.set_buffer_limit(None);
        (session(Box::new(server)).0, client)
    }

    /// The TLS records in `wire`: (content type, length) of each.
    fn records(mut wire: &[u8]) -> Vec<(u8, usize)> {
        let mut found = Vec::new();
        while wire.len() >= 5 {
            let len = u16::from_be_bytes([wire[3], wire[4]]) as usize;
            found.push((wire[0], len));
            wire = &wire[5 + len..];
        }
        assert!(wire.is_empty(), "whole records");
        found
    }

    #[test]
    fn a_client_and_a_relay_agree_on_aes_128_gcm() {
        let (tls, client) = handshaken();
        let agreed = rustls::CipherSuite::TLS13_AES_128_GCM_SHA256;
        let suite = |s: Option<rustls::SupportedCipherSuite>| s.map(|s| s.suite());
        assert_eq!(suite(client.negotiated_cipher_suite()), Some(agreed));
        let server = tls.lock().unwrap();
        assert_eq!(suite(server.negotiated_cipher_suite()), Some(agreed));
    }

    #[test]
    fn a_batch_of_many_chunks_goes_in_full_records() {
        let (tls, mut client) = handshaken();
        // 64 frames as a batch holds them: a short header chunk, then the payload's own.
        let mut batch = Transmit::new();
        let mut sent = Vec::new();
        for i in 0..64u8 {
            let header = vec![i; 10];
            let payload = vec![i.wrapping_mul(7); 4096];
            sent.extend_from_slice(&header);
            sent.extend_from_slice(&payload);
            batch.push_bytes(bytes::Bytes::from(header));
            batch.push_bytes(bytes::Bytes::from(payload));
        }
        let mut wire = encrypt(&tls, batch, false);
        let wire = wire.copy_to_bytes(wire.remaining());
        let records = records(&wire);
        // 262,784 bytes fill 17 records of at most 16 KiB (a record per chunk before: 128).
        assert_eq!(records.len(), sent.len().div_ceil(16 * 1024));
        let (mut wire, mut got) = (&wire[..], Vec::new());
        while !wire.is_empty() {
            client.read_tls(&mut wire).unwrap();
            client.process_new_packets().unwrap();
            let _ = client.reader().read_to_end(&mut got);
        }
        assert!(
            got == sent,
            "{} bytes came out of {}",
            got.len(),
            sent.len()
        );
    }

    #[test]
    fn records_from_the_client_come_out_as_their_plaintext() {
        let (tls, mut client) = handshaken();
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        client.writer().write_all(&sent).unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        // Cut anywhere, records and all: each piece gives what it completes.
        let mut got = Vec::new();
        for piece in wire.chunks(7_000) {
            let (plain, _) = decrypt(&tls, piece).unwrap();
            got.extend_from_slice(&plain);
        }
        assert!(
            got == sent,
            "{} bytes came out of {}",
            got.len(),
            sent.len()
        );
    }
}
