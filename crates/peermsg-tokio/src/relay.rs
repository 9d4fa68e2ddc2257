//! A relay server over TCP, made to face the public internet.
//!
//! One task owns the relay state machine and every connection's write half. Each accepted
//! connection gets a reader task, which hands the buffers it reads (without copying them)
//! to the relay's task over one bounded channel. A read needs room in two budgets of
//! bytes read and not yet processed: the connection's (two reads) and the server's
//! ([`ServerConfig::max_unprocessed_input`]); so a connection whose input the relay has
//! not processed is not read further, and the channel, served in arrival order, lets no
//! busy connection starve the others. The owner writes each connection's batches itself, with non-blocking
//! vectored writes ([`Transmit`]: payloads go out as slices of the buffers they came in).
//! Only when a socket is full does the rest of a batch go to a short-lived flush task,
//! which hands the write half back when done, or closes the connection when the socket
//! took no byte for [`ServerConfig::write_timeout`].
//!
//! Around the core's rules ([`RelayConfig`]: credit, budgets, login deadline, progress
//! timeout) the server adds what only it can see: a cap on connections and on connections
//! per source address (those over it get the relay's `HELLO` and a `CLOSE` saying why),
//! throttling of failed logins per address, accept errors survived (at the open-file
//! limit the relay backs off and keeps serving), and a bounded time for a closed
//! connection's last bytes. Shutdown stops accepting and closes every connection.

use std::collections::HashMap;
use std::future::Future;
use std::io::IoSlice;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use peermsg::relay::{ConnId, Relay, RelayConfig, RelayEvent, RelayOutput};
use peermsg::wire::Transmit;
use peermsg::{ErrorCode, Instant};

use crate::auth::Authenticator;
use crate::cluster::{Cluster, Glue};
use crate::metrics::Metrics;
use crate::relay_tls::{self, Session, Tls};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

/// Open files the relay keeps for itself (its listener, logs, the runtime's own) when it
/// sizes [`ServerConfig::max_connections`] from the open-file limit.
pub const RESERVED_FILES: u64 = 64;

/// How the relay server treats connections. [`ServerConfig::default`] is safe on a stock
/// Linux box; call [`raise_open_file_limit`] first to let it use what the system allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// The relay's own rules: limits, windows, budgets, timeouts.
    pub relay: RelayConfig,
    /// Connections served at once, logged in or not. Default: the open-file limit less
    /// [`RESERVED_FILES`], at most 100,000 (at least 16).
    pub max_connections: usize,
    /// Connections served at once from one IP address. Default 256.
    pub max_connections_per_ip: usize,
    /// Close a connection whose socket takes no byte for this long while the relay has
    /// bytes for it. Default 30 s.
    pub write_timeout: Duration,
    /// The most a closed connection's last frames (its `CLOSE`) may take to be written
    /// before the socket is dropped anyway. Default 5 s.
    pub close_timeout: Duration,
    /// Failed logins from one IP address within [`ServerConfig::login_failure_window`]
    /// after which its logins are refused until the window has passed. Default 10.
    pub max_login_failures: u32,
    /// See [`ServerConfig::max_login_failures`]. Default 60 s.
    pub login_failure_window: Duration,
    /// Largest read from one socket, so the work one connection brings per turn is
    /// bounded; a connection has at most two reads waiting for the relay. Default 256 KiB.
    pub max_read: usize,
    /// Bytes read from all sockets and not yet processed by the relay, at most: readers
    /// wait for room before they read. Default 32 MiB.
    pub max_unprocessed_input: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let files = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
        let max_connections = files.saturating_sub(RESERVED_FILES).clamp(16, 100_000) as usize;
        ServerConfig {
            relay: RelayConfig::default(),
            max_connections,
            max_connections_per_ip: 256,
            write_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(5),
            max_login_failures: 10,
            login_failure_window: Duration::from_secs(60),
            max_read: 256 * 1024,
            max_unprocessed_input: 32 << 20,
        }
    }
}

/// Raises the soft open-file limit of this process to its hard limit (what a relay with
/// many connections needs); returns the new soft limit.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// What a connection's tasks tell the relay's task.
enum Input {
    /// Bytes read, with the room they take in the input budgets (given back when the
    /// relay has processed them).
    Read(BytesMut, InputRoom),
    /// The transport closed.
    Closed,
    /// A flush task wrote its batch (or failed to) and gives the write half back.
    Flushed(OwnedWriteHalf, bool),
    /// A TLS handshake finished: the connection, ready to serve.
    Handshaken(TcpStream, Session, std::net::SocketAddr),
    /// A TLS handshake failed or timed out (the address's count goes down).
    HandshakeFailed(IpAddr),
    /// The TLS layer has records to send (after reading: an alert, a key update).
    TlsOutput,
}

/// A connection's write side, as the relay's task sees it.
struct Conn {
    /// The write half, or `None` while a flush task has it.
    half: Option<OwnedWriteHalf>,
    /// The last frames of a closed connection, waiting for the flush task to finish.
    last: Option<Transmit>,
    /// Tells the flush task, if any, that the connection is closed: it then has at most
    /// the close timeout left.
    closing: Arc<Notify>,
    reader: tokio::task::JoinHandle<()>,
    ip: IpAddr,
    /// Its TLS session, on a TLS relay.
    tls: Option<Tls>,
}

type Inputs = mpsc::Sender<(ConnId, Input)>;

/// Room in the connection's and the server's input budgets, for bytes read and not yet
/// processed.
struct InputRoom {
    _conn: OwnedSemaphorePermit,
    _server: OwnedSemaphorePermit,
}

/// Failed logins per address, for throttling.
struct LoginFailures {
    by_ip: HashMap<IpAddr, (tokio::time::Instant, u32)>,
    max: u32,
    window: Duration,
}

impl LoginFailures {
    /// Entries kept at most; past it, expired ones go, and then all (throttling fails
    /// open rather than growing without bound).
    const MAX_ADDRESSES: usize = 65_536;

    fn throttled(&self, ip: IpAddr) -> bool {
        self.by_ip.get(&ip).is_some_and(|(since, n)| {
            *n >= self.max && crate::clock::tokio_now() - *since < self.window
        })
    }

    fn failed(&mut self, ip: IpAddr) {
        let now = crate::clock::tokio_now();
        if self.by_ip.len() >= Self::MAX_ADDRESSES {
            let window = self.window;
            self.by_ip.retain(|_, (since, _)| now - *since < window);
            if self.by_ip.len() >= Self::MAX_ADDRESSES {
                self.by_ip.clear();
            }
        }
        let entry = self.by_ip.entry(ip).or_insert((now, 0));
        if now - entry.0 >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

/// Runs a relay on `listener` until `shutdown` completes. `auth` decides logins (see
/// [`Authenticator`]: a table of tokens, signed tokens, or anyone); `config` bounds what
/// clients may make it hold and do.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use peermsg_tokio::{raise_open_file_limit, serve, HmacSecret, ServerConfig, SignedTokens};
///
/// raise_open_file_limit()?; // before the default sizes its connection cap from it
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:7000").await?;
/// // Tokens the application's backend mints with the same secret (32 bytes or more).
/// let secret = HmacSecret::new(&std::fs::read("token-secret")?).expect("a long secret");
/// let auth = SignedTokens::hmac(&secret);
/// serve(listener, ServerConfig::default(), auth, async {
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await
/// # }
/// ```
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    auth: impl Authenticator,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(listener, config, auth, Extras::default(), shutdown).await
}

/// What a relay may do beside relaying, for [`serve_with`].
#[derive(Clone, Debug, Default)]
pub struct Extras {
    /// Keep these metrics up to date: connections, sessions, logins accepted and refused
    /// by code, bytes in and out, frames forwarded, messages under way and ended by code,
    /// held bytes against their budget. Serve them with [`Metrics::encode`].
    pub metrics: Option<Metrics>,
    /// Speak TLS with this configuration (its certificate, and how it resolves it) on
    /// every connection; clients use [`connect_tls`](crate::connect_tls). (The `tls`
    /// feature.)
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Be one relay of a cluster over NATS ([`Cluster`]): users logged in on any relay of
    /// it reach each other (docs/CLUSTER.md).
    pub cluster: Option<Cluster>,
}

/// [`serve`], with metrics, TLS and a cluster as `extras` say.
// Without TLS the handshake's arm cannot be reached (its acceptor has no value), so what
// it counts is never read there.
#[cfg_attr(not(feature = "tls"), allow(unused_assignments))]
pub async fn serve_with(
    listener: TcpListener,
    config: ServerConfig,
    auth: impl Authenticator,
    extras: Extras,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let Extras {
        metrics,
        #[cfg(feature = "tls")]
        tls,
        cluster,
    } = extras;
    #[cfg(feature = "tls")]
    let acceptor = tls.map(relay_tls::acceptor);
    #[cfg(not(feature = "tls"))]
    let acceptor: Option<relay_tls::Acceptor> = None;
    // TLS handshakes under way, counted with the connections.
    let mut handshaking = 0usize;
    let mut relay_config = config.relay;
    relay_config.cluster |= cluster.is_some();
    let mut relay = Relay::new(relay_config).map_err(|e| std::io::Error::other(e.to_string()))?;
    // The cluster's glue, its NATS input, and its heartbeat.
    let (mut glue, mut from_nats) = match cluster {
        Some(cluster) => {
            let (glue, rx) = Glue::connect(cluster, metrics.clone())
                .await
                .map_err(std::io::Error::other)?;
            (Some(glue), Some(rx))
        }
        None => (None, None),
    };
    let mut heartbeat = tokio::time::interval(
        glue.as_ref()
            .map_or(Duration::from_secs(3600), Glue::heartbeat),
    );
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if config.max_read == 0 || config.max_unprocessed_input < config.max_read {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "max_read must be at least 1 and at most max_unprocessed_input",
        ));
    }
    let epoch = crate::clock::Clock::start();
    let clock = move || epoch.now();
    // Reads waiting in it are bounded by the input budget; flush and close notices wait
    // for room.
    let (input_tx, mut input) = mpsc::channel::<(ConnId, Input)>(1024);
    let input_room = Arc::new(Semaphore::new(config.max_unprocessed_input));
    let mut conns: HashMap<ConnId, Conn> = HashMap::new();
    let mut per_ip: HashMap<IpAddr, usize> = HashMap::new();
    let mut failures = LoginFailures {
        by_ip: HashMap::new(),
        max: config.max_login_failures,
        window: config.login_failure_window,
    };
    let mut next_conn = 0u64;
    // Accepting pauses briefly after an accept error (out of files, say).
    let mut accept_again = crate::clock::tokio_now();
    let mut accept_failing = false;
    tokio::pin!(shutdown);
    loop {
        // The drive loop: frames to sockets, events to the application's rules, until the
        // relay says to wait. A connection whose socket is full is paused in the relay
        // (its frames stay there) until its flush task brings the socket back.
        let wake = loop {
            let mut batch = Transmit::new();
            match relay.poll_output(&mut batch) {
                RelayOutput::Transmit(conn, written) => {
                    if let Some(m) = &metrics {
                        m.sent(written);
                    }
                    if let (Some(glue), true) = (&mut glue, conn.is_link()) {
                        glue.transmit(&mut relay, conn, batch);
                        continue;
                    }
                    let Some(c) = conns.get_mut(&conn) else {
                        continue; // gone already: its frames go nowhere
                    };
                    let Some(half) = c.half.take() else {
                        // Only a paused connection's half is with a flush task.
                        debug_assert!(false, "frames for a paused connection");
                        continue;
                    };
                    let batch = match &c.tls {
                        Some(tls) => relay_tls::encrypt(tls, batch, false),
                        None => batch,
                    };
                    write_or_flush(&mut relay, conn, c, half, batch, &input_tx, config);
                }
                RelayOutput::Event(event) => match event {
                    RelayEvent::Login { conn, user, token } => {
                        let ip = conns.get(&conn).map(|c| c.ip);
                        let throttled = ip.is_some_and(|ip| failures.throttled(ip));
                        let decided = match throttled {
                            true => Err(ErrorCode::LOGIN_REJECTED),
                            false => auth.authenticate(user.as_str(), &token),
                        };
                        if let Some(m) = &metrics {
                            m.login(decided.err());
                        }
                        let answer = match (decided, &glue) {
                            // In a cluster, once the user's relay can be found here.
                            (Ok(()), Some(glue)) => {
                                tracing::info!(%user, conn = conn.0, "login accepted");
                                glue.login(conn, user);
                                Ok(())
                            }
                            (Ok(()), None) => {
                                tracing::info!(%user, conn = conn.0, "login accepted");
                                relay.accept_login(conn)
                            }
                            (Err(code), _) => {
                                tracing::info!(%user, conn = conn.0, %code, throttled, "login refused");
                                if let (Some(ip), false) = (ip, throttled) {
                                    failures.failed(ip);
                                }
                                relay.reject_login(conn, code)
                            }
                        };
                        let _ = answer;
                    }
                    RelayEvent::MessageEnded {
                        from,
                        to,
                        cmd,
                        size,
                        code,
                    } => {
                        if let Some(m) = &metrics {
                            m.message_ended(cmd, code);
                        }
                        let what = if cmd { "command" } else { "transfer" };
                        tracing::info!(%from, %to, what, size, %code, "message ended");
                    }
                    RelayEvent::Closed {
                        conn,
                        user,
                        code,
                        reason,
                    } => {
                        tracing::info!(conn = conn.0, ?user, %code, %reason, "connection closed");
                        if let Some(glue) = &mut glue {
                            glue.closed(&mut relay, conn);
                        }
                        finish(&mut relay, conn, &mut conns, &mut per_ip, &config);
                    }
                    RelayEvent::UserOffline { user } => {
                        if let Some(glue) = &mut glue {
                            glue.user_offline(&user);
                        }
                    }
                    // Events of a later core version; this server answers none yet.
                    _ => {}
                },
                RelayOutput::Timeout(at) => {
                    if let Some(m) = &metrics {
                        m.observe(relay.stats());
                    }
                    break Some(epoch.at(at));
                }
                _ => {
                    if let Some(m) = &metrics {
                        m.observe(relay.stats());
                    }
                    break None;
                }
            }
        };
        let accepting = !accept_failing || crate::clock::tokio_now() >= accept_again;
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("relay shutting down");
                // Every client is told (CLOSE with SHUTDOWN); the flush tasks end it.
                let ids: Vec<ConnId> = relay.connection_ids().collect();
                for conn in ids {
                    relay.close(conn, ErrorCode::SHUTDOWN);
                    finish(&mut relay, conn, &mut conns, &mut per_ip, &config);
                }
                for (_, c) in conns.drain() {
                    c.reader.abort();
                }
                if let Some(glue) = &mut glue {
                    // The links' CLOSEs go out before the relay's NATS connection ends.
                    loop {
                        let mut batch = Transmit::new();
                        match relay.poll_output(&mut batch) {
                            RelayOutput::Transmit(conn, _) if conn.is_link() => {
                                glue.transmit(&mut relay, conn, batch)
                            }
                            RelayOutput::Transmit(..) | RelayOutput::Event(_) => {}
                            _ => break,
                        }
                    }
                    glue.flush().await;
                }
                // Give the flush tasks a moment to put the last bytes on the wire.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Ok(());
            }
            accepted = listener.accept(), if accepting => match accepted {
                Ok((stream, peer)) => {
                    if accept_failing {
                        tracing::warn!("accepting connections again");
                        accept_failing = false;
                    }
                    let ip = peer.ip();
                    let from_ip = per_ip.get(&ip).copied().unwrap_or(0);
                    // Over a limit: a plain client is told why; a TLS one, which could not
                    // read it, is just closed.
                    if conns.len() + handshaking >= config.max_connections {
                        if acceptor.is_none() {
                            refuse(&relay, stream, "the relay is full", &config);
                        }
                        continue;
                    }
                    if from_ip >= config.max_connections_per_ip {
                        if acceptor.is_none() {
                            refuse(&relay, stream, "too many connections from your address", &config);
                        }
                        continue;
                    }
                    crate::socket::tune(&stream);
                    *per_ip.entry(ip).or_default() += 1;
                    match &acceptor {
                        // The handshake goes on beside, within the login deadline; the
                        // connection is served once it is done.
                        Some(acceptor) => {
                            handshaking += 1;
                            let (acceptor, done) = (acceptor.clone(), input_tx.clone());
                            let limit = config.relay.login_timeout;
                            tokio::spawn(async move {
                                let outcome = match relay_tls::handshake(acceptor, stream, limit).await {
                                    Some((stream, session)) => Input::Handshaken(stream, session, peer),
                                    None => Input::HandshakeFailed(ip),
                                };
                                let _ = done.send((ConnId(u64::MAX), outcome)).await;
                            });
                        }
                        None => {
                            let conn = ConnId(next_conn);
                            next_conn += 1;
                            tracing::debug!(conn = conn.0, %peer, "connection accepted");
                            serve_stream(&mut relay, conn, stream, ip, None, &mut conns, &input_tx, &input_room, &config, clock());
                        }
                    }
                }
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) => {
                    // Out of files or memory, or a connection that died in the backlog:
                    // the connections already served go on; accepting resumes shortly.
                    if !accept_failing {
                        tracing::warn!("cannot accept a connection ({e}); retrying every 100 ms");
                        accept_failing = true;
                    }
                    accept_again = crate::clock::tokio_now() + Duration::from_millis(100);
                }
            },
            _ = tokio::time::sleep_until(accept_again), if !accepting => {}
            Some((conn, what)) = input.recv() => match what {
                Input::Read(bytes, room) => {
                    if let Some(m) = &metrics {
                        m.received(bytes.len());
                    }
                    relay.handle_input_buf(clock(), conn, bytes);
                    drop(room);
                }
                Input::Closed => relay.handle_disconnect(conn),
                Input::Handshaken(stream, session, peer) => {
                    handshaking -= 1;
                    let conn = ConnId(next_conn);
                    next_conn += 1;
                    tracing::debug!(conn = conn.0, %peer, "TLS connection accepted");
                    let (tls, early) = relay_tls::session(session);
                    serve_stream(&mut relay, conn, stream, peer.ip(), Some(tls), &mut conns, &input_tx, &input_room, &config, clock());
                    if !early.is_empty() {
                        relay.handle_input_buf(clock(), conn, early);
                    }
                }
                Input::HandshakeFailed(ip) => {
                    handshaking -= 1;
                    tracing::debug!(%ip, "TLS handshake failed");
                    if let Some(n) = per_ip.get_mut(&ip) {
                        *n -= 1;
                        if *n == 0 {
                            per_ip.remove(&ip);
                        }
                    }
                }
                Input::TlsOutput => {
                    // Written now if the socket is free; else the next write carries it.
                    if let Some(c) = conns.get_mut(&conn) {
                        if let (Some(tls), Some(half)) = (c.tls.clone(), c.half.take()) {
                            let records = relay_tls::encrypt(&tls, Transmit::new(), false);
                            write_or_flush(&mut relay, conn, c, half, records, &input_tx, config);
                        }
                    }
                }
                Input::Flushed(half, ok) => {
                    if let Some(c) = conns.get_mut(&conn) {
                        match c.last.take() {
                            // Closed meanwhile: its last frames, then the end; or, if the
                            // socket took nothing, just the end.
                            Some(last) => {
                                if ok {
                                    tokio::spawn(write_and_shut(half, last, config.close_timeout));
                                }
                                forget(conn, &mut conns, &mut per_ip);
                            }
                            None => c.half = Some(half),
                        }
                    }
                    if !ok {
                        relay.handle_disconnect(conn);
                    }
                    // The drive loop above writes whatever was queued meanwhile.
                    relay.resume_writes(conn);
                }
            },
            _ = async { match wake { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                relay.handle_timeout(clock());
            }
            Some(input) = async { match &mut from_nats { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                if let Some(glue) = &mut glue {
                    glue.handle(&mut relay, clock(), input);
                }
            }
            _ = heartbeat.tick(), if glue.is_some() => {
                if let Some(glue) = &mut glue {
                    glue.tick(&mut relay);
                }
            }
        }
    }
}

/// Starts serving an accepted connection as `conn`: its reader (which decrypts, with
/// `tls`), its write side, and the relay's state for it.
#[allow(clippy::too_many_arguments)]
fn serve_stream(
    relay: &mut Relay,
    conn: ConnId,
    stream: TcpStream,
    ip: IpAddr,
    tls: Option<Tls>,
    conns: &mut HashMap<ConnId, Conn>,
    input_tx: &Inputs,
    input_room: &Arc<Semaphore>,
    config: &ServerConfig,
    now: Instant,
) {
    let (rd, half) = stream.into_split();
    let reader = tokio::spawn(read_loop(
        conn,
        rd,
        tls.clone(),
        input_tx.clone(),
        input_room.clone(),
        config.max_read,
    ));
    let closing = Arc::new(Notify::new());
    let c = Conn {
        half: Some(half),
        last: None,
        closing,
        reader,
        ip,
        tls,
    };
    conns.insert(conn, c);
    let _ = relay.open(now, conn);
}

/// Accept errors that say the listener itself is broken, not that this one connection or
/// the process's resources failed for now.
fn is_fatal(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        InvalidInput | PermissionDenied | Unsupported | NotConnected
    )
}

/// Reads `conn`'s socket and hands each buffer to the relay. A read needs room first: in
/// the connection's budget (two reads: one being processed, one on its way) and in the
/// server's, so bytes read and not processed are bounded per connection and in all, and a
/// connection whose input the relay has not processed is not read further. Room is taken
/// only once the socket has bytes, so idle connections hold none.
async fn read_loop(
    conn: ConnId,
    rd: tokio::net::tcp::OwnedReadHalf,
    tls: Option<Tls>,
    tx: Inputs,
    server_room: Arc<Semaphore>,
    max_read: usize,
) {
    let conn_room = Arc::new(Semaphore::new(2 * max_read));
    // Small while the peer is quiet (an idle connection costs one page), larger once it
    // streams; each read is handed over without a copy.
    let mut want = 1024.min(max_read);
    let mut buf = BytesMut::new();
    loop {
        if rd.readable().await.is_err() {
            let _ = tx.send((conn, Input::Closed)).await;
            return;
        }
        let n = u32::try_from(want).unwrap_or(u32::MAX);
        let (Ok(mut mine), Ok(mut all)) = (
            conn_room.clone().acquire_many_owned(n).await,
            server_room.clone().acquire_many_owned(n).await,
        ) else {
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
                let (Some(mine), Some(all)) = (mine.split(read), all.split(read)) else {
                    return;
                };
                let room = InputRoom {
                    _conn: mine,
                    _server: all,
                };
                let mut bytes = buf.split();
                if let Some(tls) = &tls {
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
                if tx.send((conn, Input::Read(bytes, room))).await.is_err() {
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

/// Tells a connection the relay will not serve it why (its `HELLO` and a `CLOSE`), within
/// the close timeout, then drops it.
fn refuse(relay: &Relay, stream: TcpStream, reason: &str, config: &ServerConfig) {
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
fn write_or_flush(
    relay: &mut Relay,
    conn: ConnId,
    c: &mut Conn,
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

/// A connection is over: its last frames (its `CLOSE`) go out, then the socket closes.
fn finish(
    relay: &mut Relay,
    conn: ConnId,
    conns: &mut HashMap<ConnId, Conn>,
    per_ip: &mut HashMap<IpAddr, usize>,
    config: &ServerConfig,
) {
    let mut last = Transmit::new();
    while relay.poll_transmit(conn, &mut last) > 0 {}
    let Some(c) = conns.get_mut(&conn) else {
        return;
    };
    if let Some(tls) = &c.tls {
        last = relay_tls::encrypt(tls, last, true);
    }
    c.reader.abort();
    match c.half.take() {
        Some(half) => {
            tokio::spawn(write_and_shut(half, last, config.close_timeout));
            forget(conn, conns, per_ip);
        }
        // A flush task has the write half: it comes back with `Flushed`, within the
        // close timeout from now.
        None => {
            c.last = Some(last);
            c.closing.notify_one();
        }
    }
}

/// Drops the server's record of a connection whose socket is on its way out.
fn forget(conn: ConnId, conns: &mut HashMap<ConnId, Conn>, per_ip: &mut HashMap<IpAddr, usize>) {
    if let Some(c) = conns.remove(&conn) {
        if let Some(n) = per_ip.get_mut(&c.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&c.ip);
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_logins_throttle_an_address_for_the_window_only() {
        let mut failures = LoginFailures {
            by_ip: HashMap::new(),
            max: 3,
            window: Duration::from_millis(200),
        };
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(!failures.throttled(ip));
            failures.failed(ip);
        }
        assert!(failures.throttled(ip));
        assert!(!failures.throttled(other));
        std::thread::sleep(Duration::from_millis(250));
        assert!(!failures.throttled(ip));
    }
}
