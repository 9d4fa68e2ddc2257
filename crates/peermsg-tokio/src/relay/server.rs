//! The relay's task: it owns the relay state machine and every connection's write half,
//! and follows the drive invariant: after any input (an accept, bytes, a flush, a NATS
//! message, a deadline) it writes frames and answers events until the relay says to
//! wait, then waits on all of them at once. Each kind of input has its method.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use peermsg::relay::{ConnId, Relay, RelayEvent, RelayOutput};
use peermsg::wire::{Transmit, UserId};
use peermsg::ErrorCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use super::admission::{is_fatal, LoginFailures};
use super::hooks::Hooks;
use super::socket::{refuse, write_or_flush, Input, Inputs, Sockets};
use super::ServerConfig;
use crate::auth::Authenticator;
use crate::clock::{tokio_now, Clock};
use crate::cluster::ClusterInput;
use crate::relay_tls;

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
    /// TLS handshakes under way, counted with the connections.
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
                    Ok((stream, peer)) => self.on_accept(stream, peer),
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
        let batch = match &c.tls {
            Some(tls) => relay_tls::encrypt(tls, batch, false),
            None => batch,
        };
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

    /// A connection accepted: over a cap it is turned away (a plain client is told why; a
    /// TLS one, which could not read it, is just closed); else served, after its TLS
    /// handshake on a TLS relay.
    // Without the `tls` feature the handshake's arm cannot be reached (its acceptor has
    // no value).
    #[cfg_attr(not(feature = "tls"), allow(unreachable_code))]
    fn on_accept(&mut self, stream: TcpStream, peer: SocketAddr) {
        if self.accept_again.take().is_some() {
            tracing::warn!("accepting connections again");
        }
        let ip = peer.ip();
        let full = self.sockets.len() + self.handshaking >= self.config.max_connections;
        let crowded = self.sockets.count_from(ip) >= self.config.max_connections_per_ip;
        if full || crowded {
            if self.acceptor.is_none() {
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
        match &self.acceptor {
            // The handshake goes on beside, within the login deadline; the connection is
            // served once it is done.
            Some(acceptor) => {
                self.handshaking += 1;
                let (acceptor, done) = (acceptor.clone(), self.inputs.clone());
                let limit = self.config.relay.login_timeout;
                tokio::spawn(async move {
                    let outcome = match relay_tls::handshake(acceptor, stream, limit).await {
                        Some((stream, session)) => Input::Handshaken(stream, session, peer),
                        None => Input::HandshakeFailed(ip),
                    };
                    let _ = done.send((ConnId(u64::MAX), outcome)).await;
                });
            }
            None => {
                tracing::debug!(%peer, "connection accepted");
                self.open(stream, ip, None);
            }
        }
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
    fn open(&mut self, stream: TcpStream, ip: IpAddr, tls: Option<relay_tls::Tls>) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.sockets.open(
            &mut self.relay,
            conn,
            stream,
            ip,
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
            Input::Handshaken(stream, session, peer) => {
                self.handshaking -= 1;
                tracing::debug!(%peer, "TLS connection accepted");
                let (tls, early) = relay_tls::session(session);
                let conn = self.open(stream, peer.ip(), Some(tls));
                if !early.is_empty() {
                    self.relay.handle_input_buf(self.clock.now(), conn, early);
                }
            }
            Input::HandshakeFailed(ip) => {
                self.handshaking -= 1;
                tracing::debug!(%ip, "TLS handshake failed");
                self.sockets.uncount(ip);
            }
            Input::TlsOutput => {
                // Written now if the socket is free; else the next write carries it.
                if let Some(c) = self.sockets.get_mut(conn) {
                    if let (Some(tls), Some(half)) = (c.tls.clone(), c.half.take()) {
                        let records = relay_tls::encrypt(&tls, Transmit::new(), false);
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

/// Sleeps until `at`, or for ever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
