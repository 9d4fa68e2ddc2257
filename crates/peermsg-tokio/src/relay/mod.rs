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

mod admission;
mod hooks;
mod server;
mod socket;

use std::future::Future;
use std::path::PathBuf;
#[cfg(feature = "tls")]
use std::sync::Arc;
use std::time::Duration;

use peermsg::relay::{Relay, RelayConfig};
use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::cluster::{Cluster, Glue};
use crate::metrics::Metrics;

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
#[derive(Debug, Default)]
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
    /// Serve browsers too: WebSocket connections on a listener of their own (over TLS,
    /// `wss://`, when `tls` is set), and a web folder on it.
    pub websocket: Option<WebSocket>,
}

/// Browsers' way in to a relay: a listener for WebSocket connections, each carrying the
/// same byte stream as a TCP connection in binary messages (docs/PROTOCOL.md,
/// "WebSocket"), under the same caps, budgets and deadlines; and, on the same port, the
/// files of a web folder for a plain `GET` (the web client's page, say).
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use peermsg_tokio::{serve_with, Extras, OpenAccess, ServerConfig, WebSocket};
///
/// let tcp = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
/// let ws = tokio::net::TcpListener::bind("127.0.0.1:7080").await?;
/// let extras = Extras {
///     websocket: Some(WebSocket::new(ws).web("crates/peermsg-web/www")),
///     ..Extras::default()
/// };
/// serve_with(tcp, ServerConfig::default(), OpenAccess, extras, std::future::pending()).await
/// # }
/// ```
#[derive(Debug)]
pub struct WebSocket {
    /// Where browsers connect.
    pub listener: TcpListener,
    /// Files served for a plain `GET` (`/` is `index.html`); none if `None`.
    pub web: Option<PathBuf>,
    /// The largest frame a client may send, in bytes; a larger one ends its connection.
    /// Its bytes are never gathered (they are unmasked as they come), so this bounds what
    /// one frame may claim, not memory. Default 1 MiB.
    pub max_frame: u64,
}

impl WebSocket {
    /// WebSocket connections on `listener`, no web folder, frames of at most 1 MiB.
    pub fn new(listener: TcpListener) -> Self {
        WebSocket {
            listener,
            web: None,
            max_frame: 1 << 20,
        }
    }

    /// Serves the files of `dir` for a plain `GET`.
    pub fn web(mut self, dir: impl Into<PathBuf>) -> Self {
        self.web = Some(dir.into());
        self
    }
}

/// [`serve`], with metrics, TLS and a cluster as `extras` say.
pub async fn serve_with(
    listener: TcpListener,
    config: ServerConfig,
    auth: impl Authenticator,
    extras: Extras,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    if config.max_read == 0 || config.max_unprocessed_input < config.max_read {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "max_read must be at least 1 and at most max_unprocessed_input",
        ));
    }
    let Extras {
        metrics,
        #[cfg(feature = "tls")]
        tls,
        cluster,
        websocket,
    } = extras;
    #[cfg(feature = "tls")]
    let acceptor = tls.map(crate::relay_tls::acceptor);
    #[cfg(not(feature = "tls"))]
    let acceptor: Option<crate::relay_tls::Acceptor> = None;
    let mut relay_config = config.relay;
    relay_config.cluster |= cluster.is_some();
    let relay = Relay::new(relay_config).map_err(|e| std::io::Error::other(e.to_string()))?;
    // The cluster's glue and its NATS input.
    let (glue, from_nats) = match cluster {
        Some(cluster) => {
            let (glue, rx) = Glue::connect(cluster, metrics.clone())
                .await
                .map_err(std::io::Error::other)?;
            (Some(glue), Some(rx))
        }
        None => (None, None),
    };
    let hooks = hooks::Hooks::new(metrics, glue);
    let (ws_listener, ws) = match websocket {
        Some(WebSocket {
            listener,
            web,
            max_frame,
        }) => (Some(listener), Some(server::WsOptions { web, max_frame })),
        None => (None, None),
    };
    server::Server::new(relay, config, auth, hooks, acceptor, ws)
        .run(listener, ws_listener, shutdown, from_nats)
        .await
}
