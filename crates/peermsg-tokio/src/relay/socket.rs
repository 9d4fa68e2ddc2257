//! Each connection's socket: its reader task, its write half (written at once, or by a
//! flush task when the socket is full), and its end.

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use peermsg::relay::{ConnId, Relay};
use peermsg::wire::Transmit;
use peermsg::{ErrorCode, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

use super::ServerConfig;
use crate::relay_tls::{self, Session, Tls};
use crate::relay_ws::{self, End, Frames};

/// What a connection's tasks tell the relay's task.
pub(super) enum Input {
    /// Bytes read, with the room they take in the input budgets (given back when the
    /// relay has processed them).
    Read(BytesMut, InputRoom),
    /// The transport closed.
    Closed,
    /// A flush task wrote its batch (or failed to) and gives the write half back.
    Flushed(OwnedWriteHalf, bool),
    /// A TLS or WebSocket handshake finished: the connection, ready to serve.
    Handshaken(Box<Ready>),
    /// A handshake failed or timed out (the address's count goes down).
    HandshakeFailed(IpAddr),
    /// The TLS layer has records to send (after reading: an alert, a key update).
    TlsOutput,
    /// A WebSocket frame to answer with (a pong), formatted.
    Reply(Bytes),
}

/// A connection whose handshakes are done, on its way to be served.
pub(super) struct Ready {
    pub(super) stream: TcpStream,
    /// Its TLS session, on a TLS relay.
    pub(super) session: Option<Session>,
    pub(super) peer: std::net::SocketAddr,
    /// Its frames' decoder, over WebSocket.
    pub(super) ws: Option<Frames>,
    /// Bytes that came with the handshake (after the WebSocket request), as read.
    pub(super) early: BytesMut,
}

/// A connection's socket, as the relay's task sees it: its write half, its reader, its
/// address and its TLS session.
pub(super) struct Socket {
    /// The write half, or `None` while a flush task has it.
    pub(super) half: Option<OwnedWriteHalf>,
    /// The last frames of a closed connection, waiting for the flush task to finish.
    pub(super) last: Option<Transmit>,
    /// Tells the flush task, if any, that the connection is closed: it then has at most
    /// the close timeout left.
    pub(super) closing: Arc<Notify>,
    pub(super) reader: tokio::task::JoinHandle<()>,
    pub(super) ip: IpAddr,
    /// Its TLS session, on a TLS relay.
    pub(super) tls: Option<Tls>,
    /// It speaks WebSocket: what it is sent goes in binary frames.
    pub(super) ws: bool,
}

impl Socket {
    /// What goes on the wire for `batch`: in a WebSocket frame, then in TLS records, as
    /// the connection speaks; with `last`, the close of each of these layers after it.
    pub(super) fn wrap(&self, batch: Transmit, last: bool) -> Transmit {
        let mut batch = match self.ws {
            true => relay_ws::frame(batch),
            false => batch,
        };
        if self.ws && last {
            batch.push_bytes(relay_ws::close_frame(relay_ws::CLOSE_NORMAL));
        }
        match &self.tls {
            Some(tls) => relay_tls::encrypt(tls, batch, last),
            None => batch,
        }
    }
}

pub(super) type Inputs = mpsc::Sender<(ConnId, Input)>;

/// Room in the connection's and the server's input budgets, for bytes read and not yet
/// processed.
pub(super) struct InputRoom {
    _conn: OwnedSemaphorePermit,
    _server: OwnedSemaphorePermit,
}

impl InputRoom {
    /// Room for `n` bytes in both budgets, once there is; `None` once they are closed.
    async fn take(conn: &Arc<Semaphore>, server: &Arc<Semaphore>, n: usize) -> Option<InputRoom> {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let (Ok(conn), Ok(server)) = (
            conn.clone().acquire_many_owned(n).await,
            server.clone().acquire_many_owned(n).await,
        ) else {
            return None;
        };
        Some(InputRoom {
            _conn: conn,
            _server: server,
        })
    }

    /// The room for the first `n` bytes, the rest given back.
    fn split(mut self, n: usize) -> Option<InputRoom> {
        Some(InputRoom {
            _conn: self._conn.split(n)?,
            _server: self._server.split(n)?,
        })
    }
}

/// The sockets served, and how many come from each address.
#[derive(Default)]
pub(super) struct Sockets {
    map: HashMap<ConnId, Socket>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Sockets {
    /// Sockets served.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Sockets served from `ip`.
    pub(super) fn count_from(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip).copied().unwrap_or(0)
    }

    /// One more socket from `ip` (counted from its accept, before it is served).
    pub(super) fn count(&mut self, ip: IpAddr) {
        *self.per_ip.entry(ip).or_default() += 1;
    }

    /// One socket from `ip` fewer.
    pub(super) fn uncount(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    pub(super) fn get(&self, conn: ConnId) -> Option<&Socket> {
        self.map.get(&conn)
    }

    pub(super) fn get_mut(&mut self, conn: ConnId) -> Option<&mut Socket> {
        self.map.get_mut(&conn)
    }

    /// Starts serving an accepted connection as `conn`: its reader (which decrypts, with
    /// `tls`, and takes WebSocket frames apart, with `transport.ws`), its write side, and
    /// the relay's state for it. `transport.early` is read first.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open(
        &mut self,
        relay: &mut Relay,
        conn: ConnId,
        transport: Transport,
        tls: Option<Tls>,
        inputs: &Inputs,
        input_room: &Arc<Semaphore>,
        max_read: usize,
        now: Instant,
    ) {
        let Transport {
            stream,
            ip,
            ws,
            early,
        } = transport;
        let is_ws = ws.is_some();
        let (rd, half) = stream.into_split();
        let reader = tokio::spawn(read_loop(
            conn,
            Reading {
                rd,
                tls: tls.clone(),
                ws,
                early,
            },
            inputs.clone(),
            input_room.clone(),
            max_read,
        ));
        let socket = Socket {
            half: Some(half),
            last: None,
            closing: Arc::new(Notify::new()),
            reader,
            ip,
            tls,
            ws: is_ws,
        };
        self.map.insert(conn, socket);
        let _ = relay.open(now, conn);
    }

    /// A connection is over: its last frames (its `CLOSE`) go out, then the socket closes.
    pub(super) fn finish(&mut self, relay: &mut Relay, conn: ConnId, close_timeout: Duration) {
        let mut last = Transmit::new();
        while relay.poll_transmit(conn, &mut last) > 0 {}
        let Some(c) = self.map.get_mut(&conn) else {
            return;
        };
        last = c.wrap(last, true);
        c.reader.abort();
        match c.half.take() {
            Some(half) => {
                tokio::spawn(write_and_shut(half, last, close_timeout));
                self.forget(conn);
            }
            // A flush task has the write half: it comes back with `Flushed`, within the
            // close timeout from now.
            None => {
                c.last = Some(last);
                c.closing.notify_one();
            }
        }
    }

    /// A flush task gave `conn`'s write half back (`ok`: it wrote all): served again, or,
    /// closed meanwhile, its last frames go and the socket closes.
    pub(super) fn flushed(
        &mut self,
        conn: ConnId,
        half: OwnedWriteHalf,
        ok: bool,
        close_timeout: Duration,
    ) {
        let Some(c) = self.map.get_mut(&conn) else {
            return;
        };
        match c.last.take() {
            // Closed meanwhile: its last frames, then the end; or, if the socket took
            // nothing, just the end.
            Some(last) => {
                if ok {
                    tokio::spawn(write_and_shut(half, last, close_timeout));
                }
                self.forget(conn);
            }
            None => c.half = Some(half),
        }
    }

    /// Drops the server's record of a connection whose socket is on its way out.
    fn forget(&mut self, conn: ConnId) {
        if let Some(c) = self.map.remove(&conn) {
            self.uncount(c.ip);
        }
    }

    /// Every reader stops (the relay is shutting down).
    pub(super) fn abort_readers(&mut self) {
        for (_, c) in self.map.drain() {
            c.reader.abort();
        }
    }
}

/// An accepted connection's stream, ready to serve: where it comes from, its WebSocket
/// decoder if it speaks WebSocket, and the bytes its handshake read past.
pub(super) struct Transport {
    pub(super) stream: TcpStream,
    pub(super) ip: IpAddr,
    pub(super) ws: Option<Frames>,
    pub(super) early: BytesMut,
}

/// What a reader reads, and the layers its bytes go through before the relay sees them.
struct Reading {
    rd: tokio::net::tcp::OwnedReadHalf,
    tls: Option<Tls>,
    ws: Option<Frames>,
    /// Bytes read by the handshake: the first input (already decrypted).
    early: BytesMut,
}

/// Reads `conn`'s socket and hands each buffer to the relay. A read needs room first: in
/// the connection's budget (two reads: one being processed, one on its way) and in the
/// server's, so bytes read and not processed are bounded per connection and in all, and a
/// connection whose input the relay has not processed is not read further. Room is taken
/// only once the socket has bytes, so idle connections hold none.
async fn read_loop(
    conn: ConnId,
    mut reading: Reading,
    tx: Inputs,
    server_room: Arc<Semaphore>,
    max_read: usize,
) {
    let conn_room = Arc::new(Semaphore::new(2 * max_read));
    let early = std::mem::take(&mut reading.early);
    if !early.is_empty() {
        // No more than a connection may have waiting, whatever the handshake read.
        let Some(room) =
            InputRoom::take(&conn_room, &server_room, early.len().min(2 * max_read)).await
        else {
            return;
        };
        if !hand_on(conn, &mut reading.ws, early, room, &tx).await {
            return;
        }
    }
    // Small while the peer is quiet (an idle connection costs one page), larger once it
    // streams; each read is handed over without a copy.
    let mut want = 1024.min(max_read);
    let mut buf = BytesMut::new();
    let rd = &reading.rd;
    loop {
        if rd.readable().await.is_err() {
            let _ = tx.send((conn, Input::Closed)).await;
            return;
        }
        let Some(room) = InputRoom::take(&conn_room, &server_room, want).await else {
            return;
        };
        buf.reserve(want);
        match rd.try_read_buf(&mut (&mut buf).limit(want)) {
            Ok(0) => {
                let _ = tx.send((conn, Input::Closed)).await;
                return;
            }
            Ok(read) => {
                if read >= want {
                    want = (want * 2).min(max_read);
                }
                // Room for what was read goes with it; the rest is given back now.
                let Some(room) = room.split(read) else {
                    return;
                };
                let mut bytes = buf.split();
                if let Some(tls) = &reading.tls {
                    // What was read is records: their plaintext goes on (no more than was
                    // read, so within the room taken), and anything the TLS layer must
                    // answer is written by the relay's task.
                    let Some((plain, answer)) = relay_tls::decrypt(tls, &bytes) else {
                        let _ = tx.send((conn, Input::Closed)).await;
                        return;
                    };
                    if answer && tx.send((conn, Input::TlsOutput)).await.is_err() {
                        return;
                    }
                    bytes = plain;
                }
                if !hand_on(conn, &mut reading.ws, bytes, room, &tx).await {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                let _ = tx.send((conn, Input::Closed)).await;
                return;
            }
        }
    }
}

/// Hands plaintext read from `conn` to the relay, out of its WebSocket frames first if it
/// speaks WebSocket (their pongs go to be written). `false` once the connection is over.
async fn hand_on(
    conn: ConnId,
    ws: &mut Option<Frames>,
    mut bytes: BytesMut,
    room: InputRoom,
    tx: &Inputs,
) -> bool {
    if let Some(frames) = ws {
        match frames.decode(bytes) {
            Ok(decoded) => {
                for reply in decoded.replies {
                    if tx.send((conn, Input::Reply(reply))).await.is_err() {
                        return false;
                    }
                }
                bytes = decoded.data;
            }
            Err(end) => {
                if let End::Broken(why) = end {
                    tracing::debug!(conn = conn.0, why, "WebSocket protocol broken");
                }
                let _ = tx.send((conn, Input::Closed)).await;
                return false;
            }
        }
    }
    bytes.is_empty() || tx.send((conn, Input::Read(bytes, room))).await.is_ok()
}

/// Tells a connection the relay will not serve it why (its `HELLO` and a `CLOSE`), within
/// the close timeout, then drops it.
pub(super) fn refuse(relay: &Relay, stream: TcpStream, reason: &str, config: &ServerConfig) {
    tracing::debug!(reason, "connection refused");
    let bytes = relay.refusal(ErrorCode::LIMIT_EXCEEDED, reason);
    let limit = config.close_timeout;
    tokio::spawn(async move {
        let mut stream = stream;
        let mut bytes = bytes;
        let _ = tokio::time::timeout(limit, async {
            if stream.write_all_buf(&mut bytes).await.is_ok() {
                let _ = stream.shutdown().await;
            }
        })
        .await;
    });
}

/// Writes `batch` to `c`'s socket as far as it takes it at once; the rest goes to a flush
/// task, and the connection is paused in the relay until the task gives the socket back.
pub(super) fn write_or_flush(
    relay: &mut Relay,
    conn: ConnId,
    c: &mut Socket,
    half: OwnedWriteHalf,
    batch: Transmit,
    done: &Inputs,
    config: ServerConfig,
) {
    match write_now(half, batch) {
        Written::All(half) => c.half = Some(half),
        Written::Part(half, rest) => {
            relay.pause_writes(conn);
            let closing = c.closing.clone();
            tokio::spawn(flush(conn, half, rest, closing, done.clone(), config));
        }
        Written::Failed => {
            tracing::debug!(conn = conn.0, "write failed");
            relay.handle_disconnect(conn);
        }
    }
}

/// How a write at once went.
enum Written {
    All(OwnedWriteHalf),
    /// The socket is full: the rest waits for it.
    Part(OwnedWriteHalf, Transmit),
    Failed,
}

/// Writes what the socket takes at once.
fn write_now(half: OwnedWriteHalf, mut batch: Transmit) -> Written {
    while batch.has_remaining() {
        let mut slices = [IoSlice::new(&[]); 64];
        let n = batch.chunks_vectored(&mut slices);
        match half.try_write_vectored(&slices[..n]) {
            Ok(written) => batch.advance(written),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Written::Part(half, batch);
            }
            Err(_) => return Written::Failed,
        }
    }
    Written::All(half)
}

/// Writes the rest of a batch the socket could not take at once, and gives the write half
/// back. Gives up when the socket takes no byte for the write timeout, or when the
/// connection was closed meanwhile and the close timeout has passed.
async fn flush(
    conn: ConnId,
    mut half: OwnedWriteHalf,
    mut rest: Transmit,
    closing: Arc<Notify>,
    done: Inputs,
    config: ServerConfig,
) {
    let ok = tokio::select! {
        ok = write_within(&mut half, &mut rest, config.write_timeout) => ok,
        _ = async {
            closing.notified().await;
            tokio::time::sleep(config.close_timeout).await;
        } => false,
    };
    let _ = done.send((conn, Input::Flushed(half, ok))).await;
}

/// Writes all of `batch`, giving up when the socket takes no byte for `limit`.
async fn write_within(half: &mut OwnedWriteHalf, batch: &mut Transmit, limit: Duration) -> bool {
    while batch.has_remaining() {
        match tokio::time::timeout(limit, half.write_buf(batch)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
    true
}

/// Writes a closed connection's last frames and shuts the socket, all within `limit`
/// whatever the peer does; then the socket is dropped.
async fn write_and_shut(mut half: OwnedWriteHalf, mut last: Transmit, limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        if half.write_all_buf(&mut last).await.is_ok() {
            let _ = half.shutdown().await;
        }
    })
    .await;
}
