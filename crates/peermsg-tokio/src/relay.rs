//! A relay server over TCP.
//!
//! One task owns the relay state machine. Each accepted connection gets a reader task,
//! which forwards the bytes it reads over one shared channel, and a writer task fed by a
//! channel of its own. The owner writes to a connection only while fewer than
//! [`WRITE_BACKLOG`] bytes wait in its writer, so a reader that does not read makes the
//! relay hold frames (bounded by credit) rather than grow a channel. Shutdown stops
//! accepting and closes every connection.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use peermsg::relay::{ConnId, Relay, RelayConfig, RelayEvent};
use peermsg::{ErrorCode, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Bytes handed to a connection's writer and not yet written, above which the relay waits.
pub const WRITE_BACKLOG: usize = 1 << 20;

/// Who may log in: `None` lets any user in; otherwise a user's token must match.
pub type Tokens = Option<HashMap<String, Vec<u8>>>;

struct Writer {
    bytes: mpsc::UnboundedSender<Bytes>,
    backlog: Arc<AtomicUsize>,
    reader: tokio::task::JoinHandle<()>,
}

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
    let (input_tx, mut input) = mpsc::unbounded_channel::<(ConnId, Option<Bytes>)>();
    let mut writers: HashMap<ConnId, Writer> = HashMap::new();
    let mut waiting: BTreeSet<ConnId> = BTreeSet::new();
    let mut next_conn = 0u64;
    tokio::pin!(shutdown);
    loop {
        // Drain: frames to writers, events to the application's rules.
        loop {
            let mut any = false;
            while let Some(conn) = relay.poll_writable() {
                waiting.insert(conn);
            }
            let ready: Vec<ConnId> = waiting.iter().copied().collect();
            for conn in ready {
                let Some(w) = writers.get(&conn) else {
                    waiting.remove(&conn);
                    relay.poll_transmit(conn, &mut BytesMut::new());
                    continue;
                };
                if w.backlog.load(Ordering::Acquire) >= WRITE_BACKLOG {
                    continue;
                }
                waiting.remove(&conn);
                let mut buf = BytesMut::new();
                if relay.poll_transmit(conn, &mut buf) > 0 {
                    any = true;
                    w.backlog.fetch_add(buf.len(), Ordering::AcqRel);
                    let _ = w.bytes.send(buf.freeze());
                }
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
                        // Its last frames (the CLOSE) go out, then the writer ends.
                        let mut buf = BytesMut::new();
                        while relay.poll_transmit(conn, &mut buf) > 0 {}
                        waiting.remove(&conn);
                        if let Some(w) = writers.remove(&conn) {
                            if !buf.is_empty() {
                                let _ = w.bytes.send(buf.freeze());
                            }
                            w.reader.abort();
                        }
                    }
                }
            }
            if !any {
                break;
            }
        }
        let wake = relay.poll_timeout().map(|t| epoch + (t - Instant::ZERO));
        let retry = !waiting.is_empty();
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("relay shutting down");
                // Every client is told (CLOSE with SHUTDOWN); the writers flush and end.
                let conns: Vec<ConnId> = relay.connection_ids().collect();
                for conn in conns {
                    relay.close(conn, ErrorCode::SHUTDOWN);
                    let mut buf = BytesMut::new();
                    while relay.poll_transmit(conn, &mut buf) > 0 {}
                    if let Some(w) = writers.remove(&conn) {
                        let _ = w.bytes.send(buf.freeze());
                        w.reader.abort();
                    }
                }
                for (_, w) in writers.drain() {
                    w.reader.abort();
                }
                // Give the writer tasks a moment to put the last bytes on the wire.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                return Ok(());
            }
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                let _ = stream.set_nodelay(true);
                let conn = ConnId(next_conn);
                next_conn += 1;
                tracing::debug!(conn = conn.0, %peer, "connection accepted");
                let (mut rd, mut wr) = stream.into_split();
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
                                let _ = tx.send((conn, None));
                                return;
                            }
                            Ok(n) => {
                                if n >= want {
                                    want = (want * 2).min(256 * 1024);
                                }
                                if tx.send((conn, Some(buf.split().freeze()))).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
                let (bytes, mut to_write) = mpsc::unbounded_channel::<Bytes>();
                let backlog = Arc::new(AtomicUsize::new(0));
                let left = backlog.clone();
                tokio::spawn(async move {
                    while let Some(chunk) = to_write.recv().await {
                        if wr.write_all(&chunk).await.is_err() {
                            break;
                        }
                        left.fetch_sub(chunk.len(), Ordering::AcqRel);
                    }
                    let _ = wr.shutdown().await;
                });
                writers.insert(conn, Writer { bytes, backlog, reader });
                let _ = relay.open(clock(), conn);
            }
            Some((conn, bytes)) = input.recv() => match bytes {
                Some(bytes) => relay.handle_input(clock(), conn, &bytes),
                None => relay.handle_disconnect(conn),
            },
            _ = async { match wake { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                relay.handle_timeout(clock());
            }
            _ = tokio::time::sleep(std::time::Duration::from_millis(2)), if retry => {}
        }
    }
}
