//! Connecting: the relays a client may dial, the entry points, and the client's life of
//! one connection after another. When to dial, and when to stop, is the core's
//! ([`Continuity::poll_redial`]); this only dials and sleeps.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use peermsg::client::{ClientConfig, Event};
use peermsg::continuity::{Continuity, Policy};
use peermsg::seal::Sealing;
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;

use super::driver::drive;
use super::handle::{ClientHandle, LastHandle};
use super::state::Shared;
use super::{ClientEvent, ClientEvents, ConnectError, EVENT_QUEUE};
use crate::clock::{random16, Clock};
use crate::sink::FileSink;

/// How a client connects again when its connection is lost ([`connect_with`](crate::connect_with)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconnect {
    /// How long the client tries, and how long its file sends wait for a new connection;
    /// after it they fail with `CONNECTIONLOST`. Default 5 minutes.
    pub window: std::time::Duration,
    /// The first wait between attempts; it doubles, with random jitter, up to
    /// `max_backoff`. Default 100 ms.
    pub backoff: std::time::Duration,
    /// The longest wait between attempts. Default 5 s.
    pub max_backoff: std::time::Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            window: crate::RESUME_WINDOW,
            backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(5),
        }
    }
}

/// A relay to connect to ([`connect_with`](crate::connect_with)).
#[derive(Clone)]
pub enum Server {
    /// Plain TCP to this address (`host:port`).
    Tcp(String),
    /// TLS to this address, the certificate valid for `server_name` under `tls` (the
    /// `tls` feature).
    #[cfg(feature = "tls")]
    Tls {
        /// `host:port`.
        addr: String,
        /// The name the certificate must be valid for.
        server_name: String,
        /// Roots or a pin.
        tls: Arc<rustls::ClientConfig>,
    },
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Server::Tcp(addr) => write!(f, "tcp://{addr}"),
            #[cfg(feature = "tls")]
            Server::Tls { addr, .. } => write!(f, "tls://{addr}"),
        }
    }
}

/// A transport the client task drives: TCP, or TLS over it.
pub(super) trait Transport:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Transport for T {}

impl Server {
    /// The relay a person names: `tls://host:port`, `tcp://host:port`, or a bare
    /// `host:port`, which is TLS unless it is a loopback address. `trust` (a CA file or a
    /// pin) asks for TLS, on loopback too, and says which certificate to trust; without it
    /// TLS trusts the web's authorities. The CLI's `--server` and the C library's
    /// `pm_login` read addresses this way.
    ///
    /// ```
    /// use peermsg_tokio::Server;
    ///
    /// assert!(matches!(Server::from_address("127.0.0.1:7000", None), Ok(Server::Tcp(_))));
    /// assert!(matches!(Server::from_address("relay.example:7000", None), Ok(Server::Tls { .. })));
    /// assert!(Server::from_address("relay.example", None).is_err());
    /// ```
    #[cfg(feature = "tls")]
    pub fn from_address(server: &str, trust: Option<&crate::tls::Trust>) -> Result<Server, String> {
        Ok(match relay_address(server, trust.is_some())? {
            (addr, None) => Server::Tcp(addr),
            (addr, Some(server_name)) => Server::Tls {
                addr,
                server_name,
                tls: crate::tls::client_config(trust.unwrap_or(&crate::tls::Trust::WebRoots))
                    .map_err(|e| format!("{server}: {e}"))?,
            },
        })
    }

    /// Connects to it (and completes the TLS handshake).
    async fn dial(&self) -> Result<Box<dyn Transport>, ConnectError> {
        match self {
            Server::Tcp(addr) => Ok(Box::new(dial_tcp(addr.as_str()).await?)),
            #[cfg(feature = "tls")]
            Server::Tls {
                addr,
                server_name,
                tls,
            } => Ok(Box::new(
                dial_tls(addr.as_str(), server_name, tls.clone()).await?,
            )),
        }
    }
}

/// Bytes a TLS connection reads from its socket at once.
#[cfg(feature = "tls")]
const READ_BUFFER: usize = 256 * 1024;

/// A TCP connection to `addr`, tuned for the relay protocol.
async fn dial_tcp(addr: impl ToSocketAddrs) -> Result<TcpStream, ConnectError> {
    let stream = TcpStream::connect(addr).await?;
    crate::socket::tune(&stream);
    Ok(stream)
}

/// A TLS connection to `addr`, whose certificate must be valid for `server_name` under
/// `tls`.
///
/// The socket is read through a buffer of [`READ_BUFFER`] bytes: rustls reads at most one
/// record (4-16 KiB) per call, a system call each without it.
#[cfg(feature = "tls")]
async fn dial_tls(
    addr: impl ToSocketAddrs,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<tokio::io::BufReader<TcpStream>>, ConnectError> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| ConnectError::Invalid(format!("{server_name}: {e}")))?;
    let stream = tokio::io::BufReader::with_capacity(READ_BUFFER, dial_tcp(addr).await?);
    tokio_rustls::TlsConnector::from(tls)
        .connect(name, stream)
        .await
        .map_err(ConnectError::Tls)
}

/// Connects to a relay at `addr`, logs in, and returns the handle and the event channel
/// once the login is accepted. Incoming files go to `sink_dir` if given (else they are
/// refused with `FILE_WRITE_ERR`). It does not reconnect; [`connect_with`](crate::connect_with) does.
///
/// Events reach the application through a channel of at most [`EVENT_QUEUE`](crate::EVENT_QUEUE) events, and
/// the client takes an event from the state machine only when there is room: a command or
/// buffer is confirmed to its sender only once its event is in the channel, and an
/// application that stops reading stops its senders (they wait; they are not refused).
/// Read the channel for as long as the connection lives.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use peermsg::client::{ClientConfig, Event};
/// use peermsg_tokio::{connect, ClientEvent};
///
/// let (bob, mut events) = connect("127.0.0.1:7000", "bob", b"", ClientConfig::default(), None).await?;
/// while let Some(event) = events.recv().await {
///     if let ClientEvent::Core(Event::CmdReceived { from, data, .. }) = event {
///         println!("{from}: {}", String::from_utf8_lossy(&data));
///     }
/// }
/// # drop(bob);
/// # Ok(())
/// # }
/// ```
pub async fn connect(
    addr: impl ToSocketAddrs,
    user: &str,
    token: &[u8],
    config: ClientConfig,
    sink_dir: Option<&Path>,
) -> Result<(ClientHandle, ClientEvents), ConnectError> {
    let prepared = prepare(user, token, config, sink_dir, None)?;
    let stream = dial_tcp(addr).await?;
    start(prepared, Box::new(stream), None).await
}

/// [`connect`](crate::connect) over TLS: the relay's certificate must be valid for `server_name` under
/// `tls` (its roots, or a verifier that pins a certificate), else
/// [`ConnectError::Tls`] says why in one line. (The `tls` feature.)
#[cfg(feature = "tls")]
pub async fn connect_tls(
    addr: impl ToSocketAddrs,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
    user: &str,
    token: &[u8],
    config: ClientConfig,
    sink_dir: Option<&Path>,
) -> Result<(ClientHandle, ClientEvents), ConnectError> {
    let prepared = prepare(user, token, config, sink_dir, None)?;
    let stream = dial_tls(addr, server_name, tls).await?;
    start(prepared, Box::new(stream), None).await
}

/// [`connect`](crate::connect) to the first of `servers` that answers, and, with `reconnect`, again to the
/// first that answers whenever the connection is lost: the client logs in again, its
/// resumable file sends (every [`ClientHandle::send_file`](crate::ClientHandle::send_file)) go on from what their
/// receivers hold, and incoming files from what the sink holds. The application hears
/// [`ClientEvent::Reconnecting`](crate::ClientEvent::Reconnecting) and [`ClientEvent::Reconnected`](crate::ClientEvent::Reconnected); if no server answers
/// within the window, waiting sends end with `CONNECTIONLOST` and the events end with
/// `Closed`. Commands cut off by a lost connection are sent again, and delivered once
/// (they carry an identity their receiver checks); buffers go on from what their
/// receivers kept in memory. Sends made while there is no connection wait for the next
/// one. Every rule of this is the core's ([`peermsg::continuity`]): this crate dials,
/// moves bytes and files, and sleeps.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use peermsg::client::ClientConfig;
/// use peermsg_tokio::{connect_with, Reconnect, Server};
///
/// let servers = [Server::Tcp("10.0.0.1:7000".into()), Server::Tcp("10.0.0.2:7000".into())];
/// let (alice, _events) = connect_with(
///     &servers, "alice", b"", ClientConfig::default(), None, Some(Reconnect::default()),
/// ).await?;
/// let code = alice.send_file("bob", "big.iso".as_ref(), 0).await?.await;
/// println!("{code}");
/// # Ok(())
/// # }
/// ```
pub async fn connect_with(
    servers: &[Server],
    user: &str,
    token: &[u8],
    config: ClientConfig,
    sink_dir: Option<&Path>,
    reconnect: Option<Reconnect>,
) -> Result<(ClientHandle, ClientEvents), ConnectError> {
    let mut builder = ClientBuilder::new(user)
        .token(token)
        .servers(servers.iter().cloned())
        .config(config);
    builder.sink_dir = sink_dir.map(Path::to_path_buf);
    builder.reconnect = reconnect;
    builder.connect().await
}

/// How a client connects, named piece by piece ([`ClientHandle::builder`]): the relays,
/// the token, where incoming files go, how it connects again. Then
/// [`ClientBuilder::connect`].
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use peermsg_tokio::{ClientHandle, Reconnect, Server};
///
/// let (alice, _events) = ClientHandle::builder("alice")
///     .token(b"secret")
///     .servers([Server::Tcp("10.0.0.1:7000".into()), Server::Tcp("10.0.0.2:7000".into())])
///     .files_to("inbox")
///     .reconnect(Reconnect::default())
///     .connect()
///     .await?;
/// let code = alice.send_cmd("bob", "hello".into(), 0).await?.await;
/// println!("{code}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `connect`"]
pub struct ClientBuilder {
    user: String,
    token: Vec<u8>,
    servers: Vec<Server>,
    config: ClientConfig,
    sink_dir: Option<PathBuf>,
    reconnect: Option<Reconnect>,
    sealing: Option<Sealing>,
}

impl ClientBuilder {
    /// A client of `user`, with an empty token, no relay yet, the default configuration,
    /// no directory for files (they are refused), and no reconnecting.
    pub fn new(user: &str) -> Self {
        ClientBuilder {
            user: user.to_string(),
            token: Vec::new(),
            servers: Vec::new(),
            config: ClientConfig::default(),
            sink_dir: None,
            reconnect: None,
            sealing: None,
        }
    }

    /// Seals commands and buffers between users ([`peermsg::seal`]): each is sealed for
    /// its receiver, whose key is asked of the relay unless pinned, and everything that
    /// comes in must be sealed for this user ([`Continuity::set_sealing`]). The generator
    /// of ephemeral keys is seeded from the system's random source (`entropy` is
    /// replaced). Keys learned and refused come as [`ClientEvent::Core`] with
    /// `Event::PeerKey`; keep learned ones to pin them next time.
    pub fn sealing(mut self, sealing: Sealing) -> Self {
        self.sealing = Some(sealing);
        self
    }

    /// The login token.
    pub fn token(mut self, token: &[u8]) -> Self {
        self.token = token.to_vec();
        self
    }

    /// One more relay to try, in order.
    pub fn server(mut self, server: Server) -> Self {
        self.servers.push(server);
        self
    }

    /// More relays to try, in order.
    pub fn servers(mut self, servers: impl IntoIterator<Item = Server>) -> Self {
        self.servers.extend(servers);
        self
    }

    /// The client's configuration (limits, windows, timeouts).
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Incoming files are kept in `dir` (a [`FileSink`](crate::FileSink)).
    pub fn files_to(mut self, dir: impl Into<PathBuf>) -> Self {
        self.sink_dir = Some(dir.into());
        self
    }

    /// After a lost connection, connect again (to the first relay that answers) and go on.
    pub fn reconnect(mut self, reconnect: Reconnect) -> Self {
        self.reconnect = Some(reconnect);
        self
    }

    /// Connects and logs in ([`connect_with`]).
    pub async fn connect(self) -> Result<(ClientHandle, ClientEvents), ConnectError> {
        let reconnect = self.reconnect;
        // Buffers cut by a lost connection are kept in memory, to go on when it is back.
        let config = ClientConfig {
            resume_buffers: reconnect.is_some(),
            resume_window: reconnect
                .as_ref()
                .map_or(crate::RESUME_WINDOW, |r| r.window),
            ..self.config
        };
        let sink_dir = self.sink_dir.as_deref();
        let mut prepared = prepare(
            &self.user,
            &self.token,
            config,
            sink_dir,
            reconnect.as_ref(),
        )?;
        if let Some(mut sealing) = self.sealing {
            sealing.entropy = crate::clock::random32()
                .ok_or_else(|| ConnectError::Invalid("no random source to seal with".into()))?;
            prepared.0.set_sealing(sealing);
        }
        let (stream, _) = dial_any(&self.servers).await?;
        let redial = reconnect.map(|_| Redial {
            servers: self.servers.clone(),
            sink_dir: self.sink_dir.clone(),
        });
        start(prepared, stream, redial).await
    }
}

impl ClientHandle {
    /// A [`ClientBuilder`] for `user`.
    pub fn builder(user: &str) -> ClientBuilder {
        ClientBuilder::new(user)
    }
}

/// The first of `servers` that answers, and its name; else the last one's error.
async fn dial_any(servers: &[Server]) -> Result<(Box<dyn Transport>, String), ConnectError> {
    let mut last = ConnectError::Invalid("no relay address".to_string());
    for server in servers {
        match server.dial().await {
            Ok(stream) => return Ok((stream, format!("{server:?}"))),
            Err(error) => {
                tracing::debug!(?server, %error, "cannot connect");
                last = error;
            }
        }
    }
    Err(last)
}

/// What a client needs to connect again.
struct Redial {
    servers: Vec<Server>,
    sink_dir: Option<PathBuf>,
}

/// How long after a receiver's connection was lost a waiting send is tried again.
const RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// The user's state machine, logged in, its sink and its clock: checked before anything
/// goes on the network.
fn prepare(
    user: &str,
    token: &[u8],
    config: ClientConfig,
    sink_dir: Option<&Path>,
    reconnect: Option<&Reconnect>,
) -> Result<(Continuity, Option<FileSink>, Clock), ConnectError> {
    let sink = sink_dir.map(FileSink::new).transpose()?;
    // The sink keeps partial files: resumable files resume from what it holds.
    let config = ClientConfig {
        resume_files: sink.is_some(),
        ..config
    };
    let policy = reconnect.map(|r| Policy {
        window: r.window,
        backoff: r.backoff,
        max_backoff: r.max_backoff,
        retry: RETRY,
    });
    let clock = Clock::start();
    let cont = Continuity::new(config, policy, user, token, random16(), clock.now())
        .map_err(|e| ConnectError::Invalid(e.to_string()))?;
    Ok((cont, sink, clock))
}

/// Starts the task over `stream` and waits for the login's answer.
async fn start(
    (cont, sink, clock): (Continuity, Option<FileSink>, Clock),
    stream: Box<dyn Transport>,
    redial: Option<Redial>,
) -> Result<(ClientHandle, ClientEvents), ConnectError> {
    let shared = Shared::new(cont, clock);
    let (event_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    tokio::spawn(supervise(shared.clone(), stream, event_tx, sink, redial));
    // The first word is the login's.
    loop {
        match events.recv().await {
            Some(ClientEvent::Core(Event::LoginResult { code })) if code.is_success() => break,
            Some(ClientEvent::Core(Event::LoginResult { code })) => {
                return Err(ConnectError::Refused(code))
            }
            Some(ClientEvent::Core(Event::Closed {
                code,
                reason: peermsg::CloseReason::Peer(reason),
            })) if !code.is_success() && !reason.is_empty() => {
                return Err(ConnectError::TurnedAway {
                    code,
                    reason: reason.as_str().to_string(),
                })
            }
            Some(ClientEvent::Core(Event::Closed { code, .. })) if !code.is_success() => {
                return Err(ConnectError::Refused(code))
            }
            Some(_) => continue,
            None => return Err(ConnectError::Closed),
        }
    }
    let handle = ClientHandle {
        _last: Arc::new(LastHandle(shared.clone())),
        shared,
    };
    Ok((handle, events))
}

/// The client's life: one connection after another (with [`Reconnect`](crate::Reconnect)), each driven by
/// [`drive`] until it ends, and between them, dialling when the core says.
async fn supervise(
    shared: Arc<Shared>,
    mut stream: Box<dyn Transport>,
    events: mpsc::Sender<ClientEvent>,
    mut sink: Option<FileSink>,
    redial: Option<Redial>,
) {
    loop {
        drive(shared.clone(), stream, events.clone(), sink.take()).await;
        let found = match &redial {
            Some(redial) => between(&shared, &events, &redial.servers).await,
            None => None,
        };
        let (Some((next, server)), Some(redial)) = (found, &redial) else {
            // Whoever still waits for a send hears `CONNECTIONLOST`.
            shared.lock().abandon_sends();
            return;
        };
        shared.lock().server = server;
        sink = redial.sink_dir.as_deref().and_then(|dir| {
            FileSink::new(dir)
                .map_err(|error| tracing::warn!(%error, "the file sink cannot be opened"))
                .ok()
        });
        stream = next;
    }
}

/// Between connections: dials when the core says, until one answers (`Some`) or the core
/// gives up (`None`: its last events go to the application).
async fn between(
    shared: &Arc<Shared>,
    events: &mpsc::Sender<ClientEvent>,
    servers: &[Server],
) -> Option<(Box<dyn Transport>, String)> {
    // No file is read between connections; sends given up go to their handles.
    let (reads, _) = mpsc::channel(1);
    let mut error = "connection lost".to_string();
    let mut tried = false;
    loop {
        shared.tell_senders(&reads);
        let (redial, wake) = {
            let mut s = shared.lock();
            (s.cont.poll_redial(), s.cont.poll_timeout())
        };
        let Some(at) = redial else {
            if tried {
                tracing::warn!("no relay answered within the resume window");
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                loop {
                    let event = shared.lock().cont.poll_event();
                    let Some(event) = event else { break };
                    if event.send_id().is_none() {
                        let _ = events.send(ClientEvent::Core(event)).await;
                    }
                }
            })
            .await;
            shared.tell_senders(&reads);
            return None;
        };
        let now = shared.now();
        if at <= now {
            let attempt = shared.lock().cont.redial_attempts() + 1;
            // Informational: dropped if the application's channel is full.
            let _ = events.try_send(ClientEvent::Reconnecting {
                attempt,
                error: error.clone(),
            });
            tried = true;
            match dial_any(servers).await {
                Ok(found) => {
                    let now = shared.now();
                    shared.lock().cont.connected(now);
                    return Some(found);
                }
                Err(e) => {
                    error = e.to_string();
                    let now = shared.now();
                    shared.lock().cont.redial_failed(now);
                }
            }
            continue;
        }
        let until = wake.map_or(at, |w| w.min(at));
        tokio::select! {
            _ = tokio::time::sleep_until(shared.clock.at(until)) => {
                let now = shared.now();
                shared.lock().cont.handle_timeout(now);
            }
            _ = shared.wake.notified() => {}
        }
    }
}

/// Where a relay address points: the address to connect to, and the name to check its
/// certificate against when the link is TLS (`None`: plain TCP). `tls_asked` (a CA file or
/// a pin given) makes a bare loopback address TLS too.
#[cfg(feature = "tls")]
fn relay_address(server: &str, tls_asked: bool) -> Result<(String, Option<String>), String> {
    let (scheme, rest) = match server.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, server),
    };
    let host = match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => host,
        _ => return Err(format!("{server}: expected [tls://|tcp://]host:port")),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let tls = match scheme {
        Some("tls") => true,
        Some("tcp") if tls_asked => {
            return Err(format!(
                "{server}: tcp:// is plain TCP, but a CA file or a pin asks for TLS"
            ))
        }
        Some("tcp") => false,
        Some(other) => {
            return Err(format!(
                "{server}: unknown scheme {other}:// (tls:// or tcp://)"
            ))
        }
        None => tls_asked || !loopback,
    };
    Ok((rest.to_string(), tls.then_some(host)))
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::relay_address;

    #[test]
    fn a_bare_address_is_tls_unless_it_is_loopback() {
        let tls = |s: &str| relay_address(s, false).unwrap().1;
        // A pin or a CA file asks for TLS, on loopback too; never with tcp://.
        assert_eq!(
            relay_address("127.0.0.1:7000", true).unwrap().1,
            Some("127.0.0.1".into())
        );
        assert!(relay_address("tcp://127.0.0.1:7000", true).is_err());
        assert_eq!(tls("relay.example:7000"), Some("relay.example".into()));
        assert_eq!(tls("203.0.113.5:7000"), Some("203.0.113.5".into()));
        assert_eq!(tls("127.0.0.1:7000"), None);
        assert_eq!(tls("localhost:7000"), None);
        assert_eq!(tls("[::1]:7000"), None);
        assert_eq!(tls("tls://127.0.0.1:7000"), Some("127.0.0.1".into()));
        assert_eq!(tls("tcp://relay.example:7000"), None);
        assert!(relay_address("ftp://x:1", false).is_err());
        assert!(relay_address("no-port", false).is_err());
    }
}
