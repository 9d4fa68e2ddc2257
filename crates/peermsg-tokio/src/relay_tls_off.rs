//! Built without the `tls` feature: no TLS session can exist, so a relay speaks plain TCP
//! only (the code that would speak TLS is there and never runs), and rustls is not built.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use peermsg::wire::Transmit;
use tokio::net::TcpStream;

/// Stands for TLS where there is none: no value exists.
#[derive(Clone, Debug)]
pub(crate) enum NoTls {}

pub(crate) type Tls = Arc<Mutex<NoTls>>;
pub(crate) type Session = Box<NoTls>;
pub(crate) type Acceptor = NoTls;

pub(crate) async fn handshake(
    acceptor: Acceptor,
    _stream: TcpStream,
    _limit: Duration,
) -> Option<(TcpStream, Session)> {
    match acceptor {}
}

// The same signature as with TLS, where the session comes boxed through a channel.
#[allow(clippy::boxed_local)]
pub(crate) fn session(session: Session) -> (Tls, BytesMut) {
    match *session {}
}

pub(crate) fn encrypt(tls: &Tls, _plain: Transmit, _close: bool) -> Transmit {
    let tls = tls.lock().unwrap_or_else(PoisonError::into_inner);
    match *tls {}
}

pub(crate) fn decrypt(tls: &Tls, _records: &[u8]) -> Option<(BytesMut, bool)> {
    let tls = tls.lock().unwrap_or_else(PoisonError::into_inner);
    match *tls {}
}
