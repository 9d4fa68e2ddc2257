//! A relay server over TCP.
//!
//! One task owns the relay state machine and every connection's write half. Each accepted
//! connection gets a reader task, which forwards the buffers it reads (without copying
//! them) over one shared channel. The owner writes each connection's batches itself, with
//! non-blocking vectored writes ([`Transmit`]: payloads go out as slices of the buffers
//! they came in). Only when a socket is full does the rest of a batch go to a short-lived
//! flush task, which hands the write half back when done; until then the relay holds that
//! connection's frames (bounded by credit), so a reader that does not read costs at most
//! one batch outside the relay. Shutdown stops accepting and closes every connection.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io::IoSlice;

use bytes::{Buf, BytesMut};
use peermsg::relay::{ConnId, Relay, RelayConfig, RelayEvent};
use peermsg::wire::Transmit;
use peermsg::{ErrorCode, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Who may log in: `None` lets any user in; otherwise a user's token must match.
pub type Tokens = Option<HashMap<String, Vec<u8>>>;

/// What a connection's tasks tell the relay's task.
enum Input {
    /// Bytes read.
    Read(BytesMut),
    /// The transport closed.
    Closed,
    /// A flush task wrote its batch (or failed to) and gives the write half back.
    Flushed(OwnedWriteHalf, bool),
}

/// A connection's write side, as the relay's task sees it.
struct Conn {
    /// The write half, or `None` while a flush task has it.
    half: Option<OwnedWriteHalf>,
    /// The last frames of a closed connection, waiting for the flush task to finish.
    last: Option<Transmit>,
    reader: tokio::task::JoinHandle<()>,
}

type Inputs = mpsc::UnboundedSender<(ConnId, Input)>;

/// Runs a relay on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: RelayConfig,
    tokens: Tokens,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut relay = Relay::new(config).map_err(|e| std::io::Error::other(e.to_string()))?;
    let epoch = tokio::time::Instant::now();
    let clock = move || Instant::ZERO + epoch.elapsed();
    let (input_tx, mut input) = mpsc::unbounded_channel::<(ConnId, Input)>();
    let mut conns: HashMap<ConnId, Conn> = HashMap::new();
    // Connections with frames to write, some of whose write halves are with a flush task.
    let mut waiting: BTreeSet<ConnId> = BTreeSet::new();
    let mut next_conn = 0u64;
    tokio::pin!(shutdown);
    loop {
        // Drain: frames to sockets, events to the application's rules.
        loop {
            let mut any = false;
            while let Some(conn) = relay.poll_writable() {
                waiting.insert(conn);
            }
            let ready: Vec<ConnId> = waiting.iter().copied().collect();
            for conn in ready {
                let Some(c) = conns.get_mut(&conn) else {
                    // Gone already: its frames go nowhere.
                    waiting.remove(&conn);
                    relay.poll_transmit(conn, &mut Transmit::new());
                    continue;
                };
                let Some(half) = c.half.take() else {
                    continue; // a flush task has it; `Flushed` brings it back
                };
                waiting.remove(&conn);
                let mut batch = Transmit::new();
                if relay.poll_transmit(conn, &mut batch) == 0 {
                    c.half = Some(half);
                    continue;
                }
                any = true;
                c.half = write_now(conn, half, batch, &input_tx);
            }
            while let Some(event) = relay.poll_event() {
                any = true;
                match event {
                    RelayEvent::Login { conn, user, token } => {
                        let allowed = match &tokens {
                            None => true,
                            Some(t) => t
                                .get(user.as_str())
                                .is_some_and(|want| want[..] == token[..]),
                        };
                        let answer = if allowed {
                            tracing::info!(%user, conn = conn.0, "login accepted");
                            relay.accept_login(conn)
                        } else {
                            tracing::info!(%user, conn = conn.0, "login refused");
                            relay.reject_login(conn, ErrorCode::LOGIN_REJECTED)
                        };
                        let _ = answer;
                    }
                    RelayEvent::Closed { conn, user, code } => {
                        tracing::info!(conn = conn.0, ?user, %code, "connection closed");
                        waiting.remove(&conn);
                        finish(&mut relay, conn, &mut conns);
                    }
                }
            }
            if !any {
                break;
            }
        }
        let wake = relay.poll_timeout().map(|t| epoch + (t - Instant::ZERO));
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("relay shutting down");
                // Every client is told (CLOSE with SHUTDOWN); the flush tasks end it.
                let ids: Vec<ConnId> = relay.connection_ids().collect();
                for conn in ids {
                    relay.close(conn, ErrorCode::SHUTDOWN);
                    finish(&mut relay, conn, &mut conns);
                }
                for (_, c) in conns.drain() {
                    c.reader.abort();
                }
                // Give the flush tasks a moment to put the last bytes on the wire.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                return Ok(());
            }
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                crate::socket::tune(&stream);
                let conn = ConnId(next_conn);
                next_conn += 1;
                tracing::debug!(conn = conn.0, %peer, "connection accepted");
                let (mut rd, half) = stream.into_split();
                let tx = input_tx.clone();
                let reader = tokio::spawn(async move {
                    // Small while the peer is quiet (an idle connection costs one page),
                    // larger once it streams; each read is handed over without a copy.
                    let mut want = 1024;
                    let mut buf = BytesMut::new();
                    loop {
                        buf.reserve(want);
                        match rd.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => {
                                let _ = tx.send((conn, Input::Closed));
                                return;
                            }
                            Ok(n) => {
                                if n >= want {
                                    want = (want * 2).min(256 * 1024);
                                }
                                if tx.send((conn, Input::Read(buf.split()))).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
                conns.insert(conn, Conn { half: Some(half), last: None, reader });
                let _ = relay.open(clock(), conn);
            }
            Some((conn, what)) = input.recv() => match what {
                Input::Read(bytes) => relay.handle_input_buf(clock(), conn, bytes),
                Input::Closed => relay.handle_disconnect(conn),
                Input::Flushed(half, ok) => {
                    if let Some(c) = conns.get_mut(&conn) {
                        match c.last.take() {
                            // Closed meanwhile: its last frames, then the end.
                            Some(last) => {
                                tokio::spawn(write_and_shut(half, last));
                                conns.remove(&conn);
                            }
                            None => c.half = Some(half),
                        }
                    }
                    if !ok {
                        relay.handle_disconnect(conn);
                    }
                    // The drain loop above writes whatever was queued meanwhile.
                    waiting.insert(conn);
                }
            },
            _ = async { match wake { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                relay.handle_timeout(clock());
            }
        }
    }
}

/// Writes what the socket takes at once; the rest goes to a flush task, which keeps the
/// write half until done. Returns the write half if it stays with the relay's task.
fn write_now(
    conn: ConnId,
    half: OwnedWriteHalf,
    mut batch: Transmit,
    inputs: &Inputs,
) -> Option<OwnedWriteHalf> {
    while batch.has_remaining() {
        let mut slices = [IoSlice::new(&[]); 64];
        let n = batch.chunks_vectored(&mut slices);
        match half.try_write_vectored(&slices[..n]) {
            Ok(written) => batch.advance(written),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => {
                // Reported as a failed flush: the relay's task ends the connection.
                let _ = inputs.send((conn, Input::Flushed(half, false)));
                return None;
            }
        }
    }
    if !batch.has_remaining() {
        return Some(half);
    }
    let done = inputs.clone();
    tokio::spawn(async move {
        let mut half = half;
        let ok = half.write_all_buf(&mut batch).await.is_ok();
        let _ = done.send((conn, Input::Flushed(half, ok)));
    });
    None
}

/// A connection is over: its last frames (its `CLOSE`) go out, then the socket closes.
fn finish(relay: &mut Relay, conn: ConnId, conns: &mut HashMap<ConnId, Conn>) {
    let mut last = Transmit::new();
    while relay.poll_transmit(conn, &mut last) > 0 {}
    let Some(c) = conns.get_mut(&conn) else {
        return;
    };
    c.reader.abort();
    match c.half.take() {
        Some(half) => {
            tokio::spawn(write_and_shut(half, last));
            conns.remove(&conn);
        }
        // A flush task has the write half: it comes back with `Flushed`.
        None => c.last = Some(last),
    }
}

async fn write_and_shut(mut half: OwnedWriteHalf, mut last: Transmit) {
    if half.write_all_buf(&mut last).await.is_ok() {
        let _ = half.shutdown().await;
    }
}
