//! The relay's task: it owns the relay state machine and every connection's write half,
//! and follows the drive invariant: after any input (an accept, bytes, a flush, a NATS
//! message, a deadline) it writes frames and answers events until the relay says to
//! wait, then waits on all of them at once. Each kind of input has its method.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use peermsg::relay::{ConnId, Relay, RelayEvent, RelayOutput};
use peermsg::wire::{Transmit, UserId};
use peermsg::ErrorCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use super::admission::{is_fatal, LoginFailures};
use super::hooks::Hooks;
use super::socket::{refuse, write_or_flush, Input, Inputs, Ready, Sockets, Transport};
use super::ServerConfig;
use crate::auth::Authenticator;
use crate::clock::{tokio_now, Clock};
use crate::cluster::ClusterInput;
use crate::relay_tls;
use crate::relay_ws::{self, Frames};

/// How the server treats WebSocket connections.
pub(super) struct WsOptions {
    pub(super) web: Option<PathBuf>,
    pub(super) max_frame: u64,
}

/// Everything the relay's task holds.
pub(super) struct Server<A> {
    relay: Relay,
    config: ServerConfig,
    auth: A,
    hooks: Hooks,
    sockets: Sockets,
    failures: LoginFailures,
    /// TLS, on a TLS relay.
    acceptor: Option<relay_tls::Acceptor>,
    /// WebSocket connections' options, when the relay serves them.
    ws: Option<WsOptions>,
    /// TLS and WebSocket handshakes under way, counted with the connections.
    handshaking: usize,
    next_conn: u64,
    /// What connections' tasks tell this task: reads (within the input budget), flushes,
    /// handshakes, closes.
    inputs: Inputs,
    input: mpsc::Receiver<(ConnId, Input)>,
    /// Room for bytes read and not yet processed, server-wide.
    input_room: Arc<Semaphore>,
    /// Accepting pauses briefly after an accept error (out of files, say).
    accept_again: Option<tokio::time::Instant>,
    clock: Clock,
}

impl<A: Authenticator> Server<A> {
    pub(super) fn new(
        relay: Relay,
        config: ServerConfig,
        auth: A,
        hooks: Hooks,
        acceptor: Option<relay_tls::Acceptor>,
        ws: Option<WsOptions>,
    ) -> Self {
        // Reads waiting in it are bounded by the input budget; flush and close notices
        // wait for room.
        let (inputs, input) = mpsc::channel(1024);
        Server {
            relay,
            failures: LoginFailures::new(config.max_login_failures, config.login_failure_window),
            input_room: Arc::new(Semaphore::new(config.max_unprocessed_input)),
            config,
            auth,
            hooks,
            sockets: Sockets::default(),
            acceptor,
            ws,
            handshaking: 0,
            next_conn: 0,
            inputs,
            input,
            accept_again: None,
            clock: Clock::start(),
        }
    }

    /// Serves until `shutdown` completes.
    pub(super) async fn run(
        mut self,
        listener: TcpListener,
        ws_listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
        mut from_nats: Option<mpsc::Receiver<ClusterInput>>,
    ) -> std::io::Result<()> {
        let mut heartbeat = tokio::time::interval(self.hooks.heartbeat());
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let wake = self.drive();
            let accepting = self.accept_again.is_none_or(|at| tokio_now() >= at);
            tokio::select! {
                _ = &mut shutdown => {
                    self.shut().await;
                    return Ok(());
                }
                accepted = listener.accept(), if accepting => match accepted {
                    Ok((stream, peer)) => self.on_accept(stream, peer, false),
                    Err(e) if is_fatal(&e) => return Err(e),
                    Err(e) => self.on_accept_error(e),
                },
                accepted = accept(ws_listener.as_ref()), if accepting => match accepted {
                    Ok((stream, peer)) => self.on_accept(stream, peer, true),
                    Err(e) if is_fatal(&e) => return Err(e),
                    Err(e) => self.on_accept_error(e),
                },
                _ = sleep_until(self.accept_again), if !accepting => {}
                Some((conn, what)) = self.input.recv() => self.on_input(conn, what),
                _ = sleep_until(wake) => {
                    self.relay.handle_timeout(self.clock.now());
                }
                Some(input) = async { from_nats.as_mut()?.recv().await } => {
                    self.hooks.cluster_input(&mut self.relay, self.clock.now(), input);
                }
                _ = heartbeat.tick(), if self.hooks.in_cluster() => self.hooks.tick(&mut self.relay),
            }
        }
    }

    /// Frames to sockets and events to the rules, until the relay says to wait: until
    /// when (`None`: until input comes).
    fn drive(&mut self) -> Option<tokio::time::Instant> {
        loop {
            let mut batch = Transmit::new();
            match self.relay.poll_output(&mut batch) {
                RelayOutput::Transmit(conn, written) => {
                    self.hooks.sent(written);
                    self.on_transmit(conn, batch);
                }
                RelayOutput::Event(event) => self.on_event(event),
                other => {
                    let relay = &self.relay;
                    self.hooks.observe(|| relay.stats());
                    return match other {
                        RelayOutput::Timeout(at) => Some(self.clock.at(at)),
                        _ => None,
                    };
                }
            }
        }
    }

    /// A batch of frames for `conn`: to its link, or its socket. A connection whose socket
    /// is full is paused in the relay (its frames stay there) until its flush task brings
    /// the socket back.
    fn on_transmit(&mut self, conn: ConnId, batch: Transmit) {
        let Some(batch) = self.hooks.link_transmit(&mut self.relay, conn, batch) else {
            return;
        };
        let Some(c) = self.sockets.get_mut(conn) else {
            return; // gone already: its frames go nowhere
        };
        let Some(half) = c.half.take() else {
            // Only a paused connection's half is with a flush task.
            debug_assert!(false, "frames for a paused connection");
            return;
        };
        let batch = c.wrap(batch, false);
        write_or_flush(
            &mut self.relay,
            conn,
            c,
            half,
            batch,
            &self.inputs,
            self.config,
        );
    }

    fn on_event(&mut self, event: RelayEvent) {
        match event {
            RelayEvent::Login { conn, user, token } => self.on_login(conn, user, &token),
            RelayEvent::MessageEnded {
                from,
                to,
                cmd,
                size,
                code,
            } => {
                self.hooks.message_ended(cmd, code);
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
                self.hooks.closed(&mut self.relay, conn);
                self.sockets
                    .finish(&mut self.relay, conn, self.config.close_timeout);
            }
            RelayEvent::UserOffline { user } => self.hooks.user_offline(&user),
            RelayEvent::KeyWanted { conn, user } => {
                self.hooks.key_wanted(&mut self.relay, conn, user)
            }
            // Events of a later core version; this server answers none yet.
            _ => {}
        }
    }

    /// A login to decide: throttled addresses are refused, the rest asked of `auth`.
    fn on_login(&mut self, conn: ConnId, user: UserId, token: &[u8]) {
        let ip = self.sockets.get(conn).map(|c| c.ip);
        let throttled = ip.is_some_and(|ip| self.failures.throttled(ip));
        let decided = match throttled {
            true => Err(ErrorCode::LOGIN_REJECTED),
            false => self.auth.authenticate(user.as_str(), token),
        };
        match decided {
            Ok(()) => tracing::info!(%user, conn = conn.0, "login accepted"),
            Err(code) => {
                tracing::info!(%user, conn = conn.0, %code, throttled, "login refused");
                if let (Some(ip), false) = (ip, throttled) {
                    self.failures.failed(ip);
                }
            }
        }
        self.hooks.login(&mut self.relay, conn, user, decided);
    }

    /// A connection accepted (on the WebSocket listener with `ws`): over a cap it is
    /// turned away (a plain TCP client is told why; one that could not read it is just
    /// closed); else served, after its TLS and WebSocket handshakes where it has them.
    fn on_accept(&mut self, stream: TcpStream, peer: SocketAddr, ws: bool) {
        if self.accept_again.take().is_some() {
            tracing::warn!("accepting connections again");
        }
        let ip = peer.ip();
        let full = self.sockets.len() + self.handshaking >= self.config.max_connections;
        let crowded = self.sockets.count_from(ip) >= self.config.max_connections_per_ip;
        if full || crowded {
            if self.acceptor.is_none() && !ws {
                let reason = match full {
                    true => "the relay is full",
                    false => "too many connections from your address",
                };
                refuse(&self.relay, stream, reason, &self.config);
            }
            return;
        }
        crate::socket::tune(&stream);
        self.sockets.count(ip);
        let acceptor = self.acceptor.clone();
        let limit = self.config.relay.login_timeout;
        let done = self.inputs.clone();
        // The handshakes go on beside, within the login deadline; the connection is
        // served once they are done.
        let handshake = match (ws, &self.ws, acceptor) {
            (true, Some(options), acceptor) => {
                let (web, max_frame) = (options.web.clone(), options.max_frame);
                tokio::spawn(async move {
                    let opened = relay_ws::handshake(acceptor, stream, limit, web).await;
                    let outcome = match opened {
                        Some(o) => Input::Handshaken(Box::new(Ready {
                            stream: o.stream,
                            session: o.session,
                            peer,
                            ws: Some(Frames::new(max_frame)),
                            early: o.early,
                        })),
                        None => Input::HandshakeFailed(ip),
                    };
                    let _ = done.send((ConnId(u64::MAX), outcome)).await;
                })
            }
            (false, _, Some(acceptor)) => tokio::spawn(async move {
                let outcome = match relay_tls::handshake(acceptor, stream, limit).await {
                    Some((stream, session)) => Input::Handshaken(Box::new(Ready {
                        stream,
                        session: Some(session),
                        peer,
                        ws: None,
                        early: BytesMut::new(),
                    })),
                    None => Input::HandshakeFailed(ip),
                };
                let _ = done.send((ConnId(u64::MAX), outcome)).await;
            }),
            _ => {
                tracing::debug!(%peer, "connection accepted");
                self.open(
                    Transport {
                        stream,
                        ip,
                        ws: None,
                        early: BytesMut::new(),
                    },
                    None,
                );
                return;
            }
        };
        drop(handshake);
        self.handshaking += 1;
    }

    /// Out of files or memory, or a connection that died in the backlog: the connections
    /// already served go on; accepting resumes shortly.
    fn on_accept_error(&mut self, e: std::io::Error) {
        if self.accept_again.is_none() {
            tracing::warn!("cannot accept a connection ({e}); retrying every 100 ms");
        }
        self.accept_again = Some(tokio_now() + Duration::from_millis(100));
    }

    /// Serves a connection whose transport is ready.
    fn open(&mut self, transport: Transport, tls: Option<relay_tls::Tls>) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.sockets.open(
            &mut self.relay,
            conn,
            transport,
            tls,
            &self.inputs,
            &self.input_room,
            self.config.max_read,
            self.clock.now(),
        );
        conn
    }

    fn on_input(&mut self, conn: ConnId, what: Input) {
        match what {
            Input::Read(bytes, room) => {
                self.hooks.received(bytes.len());
                self.relay.handle_input_buf(self.clock.now(), conn, bytes);
                drop(room);
            }
            Input::Closed => self.relay.handle_disconnect(conn),
            Input::Handshaken(ready) => {
                self.handshaking -= 1;
                let Ready {
                    stream,
                    session,
                    peer,
                    ws,
                    mut early,
                } = *ready;
                tracing::debug!(%peer, ws = ws.is_some(), "connection accepted");
                // The session's plaintext so far comes after what the handshake read.
                let tls = session.map(|session| {
                    let (tls, plain) = relay_tls::session(session);
                    early.unsplit(plain);
                    tls
                });
                let ip = peer.ip();
                self.open(
                    Transport {
                        stream,
                        ip,
                        ws,
                        early,
                    },
                    tls,
                );
            }
            Input::HandshakeFailed(ip) => {
                self.handshaking -= 1;
                tracing::debug!(%ip, "handshake failed");
                self.sockets.uncount(ip);
            }
            Input::TlsOutput | Input::Reply(_) => {
                // Written now if the socket is free (no frame is half written); else the
                // next write carries the TLS layer's records, and a pong is not owed.
                if let Some(c) = self.sockets.get_mut(conn) {
                    if let Some(half) = c.half.take() {
                        let mut out = Transmit::new();
                        if let Input::Reply(frame) = what {
                            out.push_bytes(frame);
                        }
                        let records = match &c.tls {
                            Some(tls) => relay_tls::encrypt(tls, out, false),
                            None => out,
                        };
                        write_or_flush(
                            &mut self.relay,
                            conn,
                            c,
                            half,
                            records,
                            &self.inputs,
                            self.config,
                        );
                    }
                }
            }
            Input::Flushed(half, ok) => {
                self.sockets
                    .flushed(conn, half, ok, self.config.close_timeout);
                if !ok {
                    self.relay.handle_disconnect(conn);
                }
                // The drive loop writes whatever was queued meanwhile.
                self.relay.resume_writes(conn);
            }
        }
    }

    /// Every client is told (`CLOSE` with `SHUTDOWN`), the flush tasks end it, and the
    /// cluster hears the links end.
    async fn shut(&mut self) {
        tracing::info!("relay shutting down");
        let ids: Vec<ConnId> = self.relay.connection_ids().collect();
        for conn in ids {
            self.relay.close(conn, ErrorCode::SHUTDOWN);
            self.sockets
                .finish(&mut self.relay, conn, self.config.close_timeout);
        }
        self.sockets.abort_readers();
        self.hooks.shut(&mut self.relay).await;
        // Give the flush tasks a moment to put the last bytes on the wire.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A connection from `listener`, if there is one; else waits for ever.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or for ever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
