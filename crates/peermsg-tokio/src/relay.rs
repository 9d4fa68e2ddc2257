//! A relay server over TCP.
//!
//! One task owns the relay state machine. Each accepted connection gets a reader task,
//! which forwards the buffers it reads (without copying them) over one shared channel, and
//! a writer task fed by a channel of its own with vectored batches ([`Transmit`]: payloads
//! go out as slices of the buffers they came in). The owner writes to a connection only
//! while fewer than [`WRITE_BACKLOG`] bytes wait in its writer, so a reader that does not
//! read makes the relay hold frames (bounded by credit) rather than grow a channel; the
//! writer says when it has drained below that. Shutdown stops accepting and closes every
//! connection.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use peermsg::relay::{ConnId, Relay, RelayConfig, RelayEvent};
use peermsg::wire::Transmit;
use peermsg::{ErrorCode, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Bytes handed to a connection's writer and not yet written, above which the relay waits.
/// Small, because everything queued here is ahead of the next command (the relay core
/// lets commands overtake transfer data it holds, but not bytes already handed over).
pub const WRITE_BACKLOG: usize = 256 * 1024;

/// What a connection's tasks tell the relay's task.
enum Input {
    /// Bytes read.
    Read(BytesMut),
    /// The writer's backlog fell below [`WRITE_BACKLOG`].
    Drained,
    /// The transport closed.
    Closed,
}

/// Who may log in: `None` lets any user in; otherwise a user's token must match.
pub type Tokens = Option<HashMap<String, Vec<u8>>>;

struct Writer {
    batches: mpsc::UnboundedSender<Transmit>,
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
    let (input_tx, mut input) = mpsc::unbounded_channel::<(ConnId, Input)>();
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
                    relay.poll_transmit(conn, &mut Transmit::new());
                    continue;
                };
                if w.backlog.load(Ordering::Acquire) >= WRITE_BACKLOG {
                    continue;
                }
                waiting.remove(&conn);
                let mut batch = Transmit::new();
                if relay.poll_transmit(conn, &mut batch) > 0 {
                    any = true;
                    w.backlog.fetch_add(batch.remaining(), Ordering::AcqRel);
                    let _ = w.batches.send(batch);
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
                        let mut batch = Transmit::new();
                        while relay.poll_transmit(conn, &mut batch) > 0 {}
                        waiting.remove(&conn);
                        if let Some(w) = writers.remove(&conn) {
                            if batch.has_remaining() {
                                let _ = w.batches.send(batch);
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
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("relay shutting down");
                // Every client is told (CLOSE with SHUTDOWN); the writers flush and end.
                let conns: Vec<ConnId> = relay.connection_ids().collect();
                for conn in conns {
                    relay.close(conn, ErrorCode::SHUTDOWN);
                    let mut batch = Transmit::new();
                    while relay.poll_transmit(conn, &mut batch) > 0 {}
                    if let Some(w) = writers.remove(&conn) {
                        let _ = w.batches.send(batch);
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
                crate::socket::tune(&stream);
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
                let (batches, mut to_write) = mpsc::unbounded_channel::<Transmit>();
                let backlog = Arc::new(AtomicUsize::new(0));
                let left = backlog.clone();
                let drained = input_tx.clone();
                tokio::spawn(async move {
                    while let Some(mut batch) = to_write.recv().await {
                        let len = batch.remaining();
                        if wr.write_all_buf(&mut batch).await.is_err() {
                            break;
                        }
                        let before = left.fetch_sub(len, Ordering::AcqRel);
                        if before >= WRITE_BACKLOG && before - len < WRITE_BACKLOG {
                            let _ = drained.send((conn, Input::Drained));
                        }
                    }
                    let _ = wr.shutdown().await;
                });
                writers.insert(conn, Writer { batches, backlog, reader });
                let _ = relay.open(clock(), conn);
            }
            Some((conn, what)) = input.recv() => match what {
                Input::Read(bytes) => relay.handle_input_buf(clock(), conn, bytes),
                // The drain loop above offers it its next batch.
                Input::Drained => {}
                Input::Closed => relay.handle_disconnect(conn),
            },
            _ = async { match wake { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                relay.handle_timeout(clock());
            }
        }
    }
}
