//! `peermsg`: a relay, a listener, a sender, and a demo that runs all three in one process.

mod save;

/// `println!` for every line the program prints: a reader that went away (a closed pipe,
/// `| head`) is no reason to stop a relay or fail a transfer, so what it would have read
/// is dropped instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        crate::print_line(false, &format!($($arg)*))
    }};
}

/// A line on standard error, above any bars.
macro_rules! shout {
    ($($arg:tt)*) => {{
        crate::print_line(true, &format!($($arg)*))
    }};
}

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use peermsg::client::{ClientConfig, Event, SendId, SendKind};
use peermsg::ErrorCode;
use peermsg_tokio::rustls as tls_config;
use peermsg_tokio::{
    connect_tls, connect_with, file_resume_key, serve_with, tls, Authenticator, ClientEvent,
    ClientEvents, ClientHandle, Cluster, Extras, Metrics, Open, Reconnect, SendHandle,
    SendProgress, Server, ServerConfig, SignedTokens, TokenTable,
};
use save::shown;
use serde_json::json;

/// Exit statuses, the same for every subcommand.
const EXIT_STATUSES: &str = "Exit status: 0 delivered (send) or closed cleanly (listen, relay); \
1 a local error (a file that cannot be read, a relay that cannot be reached, a login \
refused); 2 a usage error; 3 not delivered (the receiver's or relay's code is printed); \
130 interrupted by Ctrl-C.";

#[derive(Parser)]
#[command(
    name = "peermsg",
    version,
    about = "Send commands, buffers and files from one user to another through a relay",
    after_help = EXIT_STATUSES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Logs (standard error, filtered by RUST_LOG) as one JSON object per line.
    #[arg(long, global = true)]
    log_json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run a relay server.
    Relay {
        /// Address to listen on, such as 127.0.0.1:7000.
        #[arg(long)]
        listen: String,
        #[command(flatten)]
        auth: AuthArgs,
        /// Connections served at once [default: the open-file limit less 64].
        #[arg(long)]
        max_connections: Option<usize>,
        /// Connections served at once from one IP address.
        #[arg(long, default_value_t = ServerConfig::default().max_connections_per_ip)]
        max_connections_per_ip: usize,
        /// Message bytes the relay holds at most across all users, in MiB (senders wait
        /// beyond it).
        #[arg(long, default_value_t = ServerConfig::default().relay.max_held_bytes >> 20)]
        max_held_mib: u64,
        /// Serve Prometheus metrics at http://ADDR/metrics (and /healthz), such as
        /// 127.0.0.1:9100.
        #[arg(long)]
        metrics: Option<String>,
        #[command(flatten)]
        tls: TlsArgs,
        /// Be one relay of a cluster: the NATS servers its relays share, such as
        /// nats://127.0.0.1:4222 (several: comma-separated). Users on any relay of the
        /// cluster reach each other.
        #[arg(long, value_name = "NATS_URLS")]
        cluster: Option<String>,
        /// This relay's name in the cluster, unique [default: the host's name and the
        /// listening port].
        #[arg(long, requires = "cluster")]
        node: Option<String>,
    },
    /// Log in and print what arrives; files and buffers are saved in DIR.
    Listen {
        #[command(flatten)]
        login: LoginArgs,
        /// Where received files and buffers are written.
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        choice: Choice,
        /// One JSON object per line per event.
        #[arg(long)]
        json: bool,
    },
    /// Send one command, buffer or file; exit status 0 only when the receiver confirmed
    /// (3 when it was not delivered, 130 when interrupted).
    #[command(after_help = EXIT_STATUSES)]
    Send {
        #[command(flatten)]
        login: LoginArgs,
        /// The receiving user.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        what: What,
        /// The name the receiver sees for the file (by default its own name; `stdin` for
        /// standard input).
        #[arg(long, requires = "file")]
        name: Option<String>,
        /// Seconds to wait for the receiver or the relay to come back when either goes
        /// away mid-send; then the send ends, not delivered (207 CONNECTIONLOST). Default
        /// 60 (or --reconnect-window, if given).
        #[arg(long)]
        wait: Option<u64>,
        /// Send a file at most this fast: bytes a second, with K, M or G (1000s) after the
        /// number (`20M`).
        #[arg(long, value_parser = parse_bytes)]
        limit_rate: Option<u64>,
        /// One JSON object per line per event.
        #[arg(long)]
        json: bool,
    },
    /// A relay and two users in one process: a command, a buffer and a file with progress,
    /// one transfer cancelled part way.
    Demo,
    /// Print a signed login token (a JWT) for USER, for a relay started with
    /// --token-secret-file (give the same secret) or --token-public-key (give the matching
    /// private key).
    Token {
        /// The user the token lets log in.
        #[arg(long)]
        user: String,
        /// How long it is valid, such as 1h, 30m or 3600s.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Sign with HMAC-SHA256 and the secret in this file.
        #[arg(long, group = "key", required = true)]
        secret_file: Option<PathBuf>,
        /// Sign with the Ed25519 private key in this PEM file (`openssl genpkey -algorithm
        /// ed25519`).
        #[arg(long, group = "key")]
        private_key: Option<PathBuf>,
        /// The audience (`aud`) the relay asks for, if any.
        #[arg(long)]
        audience: Option<String>,
    },
}

/// What a listener takes.
#[derive(Args)]
struct Choice {
    /// Take messages only from these users (comma-separated); anything from anyone else
    /// is refused as it arrives (9001 REJECTED), before any of its bytes come.
    #[arg(long, value_delimiter = ',')]
    from: Vec<String>,
    /// Take files and buffers of at most this size: bytes, with K, M or G (1000s) after
    /// the number (`2G`). A larger one is refused by the relay before any of its bytes
    /// come (1405 FILE_SIZE_ERR, 1101 SENDBUFFER_LARGE).
    #[arg(long, value_parser = parse_bytes)]
    max_size: Option<u64>,
}

/// The relay's certificate, for TLS.
#[derive(Args)]
struct TlsArgs {
    /// Speak TLS with the certificate chain in this PEM file (leaf first); reloaded, with
    /// the key, on SIGHUP.
    #[arg(long, requires = "tls_key", conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Speak TLS with a certificate made now, for trying it out: its SHA-256 fingerprint
    /// is printed, for clients' --pin.
    #[arg(long)]
    tls_self_signed: bool,
    /// Keep the --tls-self-signed certificate and its key in this directory (made on the
    /// first start, read back on the next), so a restart keeps the fingerprint clients
    /// pinned.
    #[arg(long, requires = "tls_self_signed")]
    tls_state: Option<PathBuf>,
}

impl TlsArgs {
    /// The relay's TLS configuration, if it speaks TLS, and what to tell its operator.
    fn server_config(&self) -> Result<Option<(Arc<tls_config::ServerConfig>, String)>> {
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let files = tls::CertificateFiles::load(cert, key)?;
            let said = format!(
                "TLS with {} (SHA-256 {})",
                cert.display(),
                files.fingerprint()
            );
            let config = files.server_config()?;
            // SIGHUP reads the files again: new connections get the new certificate.
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    match files.reload() {
                        Ok(()) => tracing::info!(
                            fingerprint = files.fingerprint(),
                            "certificate reloaded"
                        ),
                        Err(e) => {
                            tracing::warn!("cannot reload the certificate: {e}; the old one stays")
                        }
                    }
                }
            });
            return Ok(Some((config, said)));
        }
        if self.tls_self_signed {
            let (config, pin) = match &self.tls_state {
                Some(dir) => tls::self_signed_in(dir, "localhost")
                    .with_context(|| format!("--tls-state {}", dir.display()))?,
                None => tls::self_signed("localhost")?,
            };
            let said = format!("TLS with a self-signed certificate; clients give --pin {pin}");
            return Ok(Some((config, said)));
        }
        Ok(None)
    }
}

/// Who may log in to a relay: one of a tokens file, signed tokens, or --open.
#[derive(Args)]
struct AuthArgs {
    /// A file of `user token` lines.
    #[arg(long, group = "auth")]
    tokens: Option<PathBuf>,
    /// Accept signed tokens (JWT, HMAC-SHA256) made with the secret in this file (see
    /// `peermsg token`); the token's subject is the user id.
    #[arg(long, group = "auth")]
    token_secret_file: Option<PathBuf>,
    /// Accept signed tokens (JWT, Ed25519) checked with the public key in this PEM file,
    /// so the relay never holds the signing key.
    #[arg(long, group = "auth")]
    token_public_key: Option<PathBuf>,
    /// Signed tokens must name this audience (`aud`).
    #[arg(long)]
    token_audience: Option<String>,
    /// Let anyone log in as anyone (and so take over anyone's session), even on an address
    /// other machines reach. Without any of these the relay serves loopback only.
    #[arg(long, group = "auth")]
    open: bool,
}

impl AuthArgs {
    /// The authenticator the flags ask for.
    fn authenticator(&self) -> Result<Box<dyn Authenticator>> {
        let signed = |tokens: SignedTokens| match &self.token_audience {
            Some(audience) => tokens.audience(audience),
            None => tokens,
        };
        Ok(if let Some(path) = &self.tokens {
            Box::new(TokenTable::new(read_tokens(path)?))
        } else if let Some(path) = &self.token_secret_file {
            Box::new(signed(SignedTokens::hmac(&read_hmac_secret(path)?)))
        } else if let Some(path) = &self.token_public_key {
            let pem = read_secret(path)?;
            let tokens = SignedTokens::ed25519_pem(&pem)
                .with_context(|| format!("{}: not an Ed25519 public key", path.display()))?;
            Box::new(signed(tokens))
        } else {
            Box::new(Open)
        })
    }
}

/// A secret or key from a file, without the line end an editor leaves.
fn read_secret(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    Ok(bytes[..end].to_vec())
}

/// An HMAC token secret from a file: refused if shorter than 32 bytes (an empty one would
/// let anyone sign tokens).
fn read_hmac_secret(path: &Path) -> Result<peermsg_tokio::HmacSecret> {
    let secret = read_secret(path)?;
    peermsg_tokio::HmacSecret::new(&secret).with_context(|| format!("{}", path.display()))
}

#[derive(Args)]
struct LoginArgs {
    /// The relay: `tls://host:port`, or `tcp://host:port` for plain TCP. A bare
    /// `host:port` is TLS, unless it is a loopback address (plain). Several, comma-separated:
    /// the first that answers is used, at the start and after a lost connection.
    #[arg(long)]
    server: String,
    /// Seconds to keep connecting again after a lost connection; a file being sent or
    /// received goes on from what the receiver holds. 0: do not reconnect. Default: 300
    /// for `listen`; for `send`, its --wait.
    #[arg(long)]
    reconnect_window: Option<u64>,
    /// Trust a relay whose certificate is signed by an authority in this PEM file (else
    /// the web's authorities).
    #[arg(long, conflicts_with = "pin")]
    ca: Option<PathBuf>,
    /// Trust exactly the relay certificate with this SHA-256 fingerprint (hex, as
    /// `peermsg relay --tls-self-signed` prints it).
    #[arg(long)]
    pin: Option<String>,
    /// Your user id.
    #[arg(long)]
    user: String,
    /// Your token, if the relay wants one (from PEERMSG_TOKEN, so it does not show in
    /// `ps`, or --token-file).
    #[arg(
        long,
        env = "PEERMSG_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    token: String,
    /// A file whose first line is your token.
    #[arg(long, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// Seconds to wait for the relay to answer the login.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

impl LoginArgs {
    fn token(&self) -> Result<Vec<u8>> {
        match &self.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read token file {}", path.display()))?;
                Ok(text.lines().next().unwrap_or("").trim().as_bytes().to_vec())
            }
            None => Ok(self.token.as_bytes().to_vec()),
        }
    }
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct What {
    /// Send TEXT as a command.
    #[arg(long)]
    cmd: Option<String>,
    /// Send the bytes of PATH as an in-memory buffer.
    #[arg(long)]
    buffer: Option<PathBuf>,
    /// Send the file at PATH; `-` sends standard input (read to its end first).
    #[arg(long)]
    file: Option<PathBuf>,
}

/// Exit status of a run that Ctrl-C interrupted.
const INTERRUPTED: u8 = 130;

/// Exit status of a send the receiver or the relay did not take.
const NOT_DELIVERED: u8 = 3;

/// Ctrl-C, caught from the start of a run to its end: one handler, so no interrupt falls
/// between two waits.
struct Interrupt(tokio::signal::unix::Signal);

impl Interrupt {
    fn new() -> Result<Self> {
        let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("cannot catch Ctrl-C")?;
        Ok(Interrupt(signal))
    }

    async fn recv(&mut self) {
        self.0.recv().await;
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not for a log file or a pipe.
        .with_ansi(std::io::stderr().is_terminal() && !cli.log_json);
    if cli.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    // One thread for the tasks: the relay's state is one task's, a client's one task's, and
    // their readers and writers only feed them, so more threads would only add wake-ups
    // across them (file reads and writes go to the blocking pool's threads as before;
    // measured in docs/PERFORMANCE.md). A TLS relay is the exception: its readers decrypt,
    // and that work spreads over the cores.
    let tls_relay = matches!(
        &cli.command,
        Command::Relay { tls, .. } if tls.tls_cert.is_some() || tls.tls_self_signed
    );
    let runtime = match tls_relay {
        true => tokio::runtime::Builder::new_multi_thread(),
        false => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Relay {
                listen,
                auth,
                max_connections,
                max_connections_per_ip,
                max_held_mib,
                metrics,
                tls,
                cluster,
                node,
            } => {
                // A relay's connections are open files: use all the system allows.
                if let Err(e) = peermsg_tokio::raise_open_file_limit() {
                    tracing::warn!("cannot raise the open-file limit: {e}");
                }
                let mut config = ServerConfig {
                    max_connections_per_ip,
                    ..ServerConfig::default()
                };
                config.relay.max_held_bytes = max_held_mib << 20;
                if let Some(max) = max_connections {
                    config.max_connections = max;
                }
                let cluster = cluster.map(|urls| (urls, node));
                relay(&listen, &auth, &tls, config, metrics.as_deref(), cluster).await
            }
            Command::Listen {
                login,
                dir,
                choice,
                json,
            } => listen(&login, &dir, &choice, json).await,
            Command::Send {
                login,
                to,
                what,
                name,
                wait,
                limit_rate,
                json,
            } => {
                let window = wait.or(login.reconnect_window).unwrap_or(SEND_WAIT);
                send(
                    &login,
                    &to,
                    &what,
                    name.as_deref(),
                    window,
                    limit_rate,
                    json,
                )
                .await
            }
            Command::Demo => demo().await,
            Command::Token {
                user,
                ttl,
                secret_file,
                private_key,
                audience,
            } => token(&user, &ttl, secret_file, private_key, audience.as_deref()),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn read_tokens(path: &Path) -> Result<HashMap<String, Vec<u8>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read tokens file {}", path.display()))?;
    let mut tokens = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, token)) = line.split_once(char::is_whitespace) else {
            bail!("{}:{}: expected `user token`", path.display(), n + 1);
        };
        tokens.insert(user.to_string(), token.trim().as_bytes().to_vec());
    }
    Ok(tokens)
}

async fn relay(
    listen: &str,
    auth: &AuthArgs,
    tls: &TlsArgs,
    config: ServerConfig,
    metrics_addr: Option<&str>,
    cluster: Option<(String, Option<String>)>,
) -> Result<ExitCode> {
    let authenticator = auth.authenticator()?;
    let tls = tls.server_config()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    // An open relay lets anyone log in as anyone, and a new login of a name replaces the
    // old session: fine on loopback, a takeover anywhere else.
    if authenticator.is_open() && !addr.ip().is_loopback() && !auth.open {
        bail!(
            "refusing to run an open relay on {addr}: anyone could log in as anyone; give \
             --token-secret-file, --token-public-key or --tokens, or --open to allow it"
        );
    }
    let who = if auth.tokens.is_some() {
        "users in the tokens file may log in"
    } else if auth.token_secret_file.is_some() || auth.token_public_key.is_some() {
        "users with a signed token may log in"
    } else {
        "no authentication: any user may log in as anyone"
    };
    // Served before the first line is printed: a script that waits for it finds both up.
    let metrics = match metrics_addr {
        Some(addr) => Some(serve_metrics(addr).await?),
        None => None,
    };
    say!(
        "relay listening on {addr}; {who}\nat most {} connections ({} per address); \
         at most {} MiB of messages held",
        config.max_connections,
        config.max_connections_per_ip,
        config.relay.max_held_bytes >> 20
    );
    if let Some((_, at)) = &metrics {
        say!("metrics at http://{at}/metrics");
    }
    match &tls {
        Some((_, said)) => say!("{said}"),
        None => say!("plain TCP: anyone on the path reads and changes what passes"),
    }
    let cluster = match cluster {
        Some((urls, node)) => {
            let servers = urls.split(',').map(|u| u.trim().to_string()).collect();
            let node = node.unwrap_or_else(|| default_node_name(addr.port()));
            let cluster = Cluster::new(servers, &node)?;
            say!(
                "relay {node} of the cluster behind {urls}: users on any of its relays reach each other"
            );
            Some(cluster)
        }
        None => None,
    };
    let extras = Extras {
        metrics: metrics.map(|(metrics, _)| metrics),
        tls: tls.map(|(config, _)| config),
        cluster,
    };
    serve_with(listener, config, authenticator, extras, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// A relay's name in a cluster when none is given: the host's name (what a subject may
/// carry of it) and the port, unique on a machine.
fn default_node_name(port: u16) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(48)
        .collect();
    match host.is_empty() {
        true => format!("relay-{port}"),
        false => format!("{host}-{port}"),
    }
}

/// How long a listener keeps connecting again after a lost connection, by default.
const LISTEN_WINDOW: u64 = 300;

/// How long `send` waits for its receiver or the relay to come back, by default: what a
/// person at a terminal waits.
const SEND_WAIT: u64 = 60;

/// Logs in; a session with no directory only sends, so it replaces no listener of the
/// same user. After a lost connection it connects again for `window` seconds (0: not at
/// all), and its sends wait as long for their receivers.
async fn login(
    args: &LoginArgs,
    dir: Option<&Path>,
    max_size: Option<u64>,
    window: u64,
) -> Result<(ClientHandle, ClientEvents)> {
    // A listener confirms a buffer once it is saved (see `Printer::event`). Its size limits
    // go in its HELLO: the relay refuses what is larger before forwarding a byte.
    let defaults = ClientConfig::default();
    let limits = peermsg::wire::Limits {
        max_file_size: max_size.map_or(defaults.limits.max_file_size, |m| {
            m.min(defaults.limits.max_file_size)
        }),
        max_buffer_size: max_size.map_or(defaults.limits.max_buffer_size, |m| {
            m.min(defaults.limits.max_buffer_size)
        }),
        ..defaults.limits
    };
    let config = ClientConfig {
        send_only: dir.is_none(),
        confirm_buffers: dir.is_some(),
        limits,
        ..defaults
    };
    let token = args.token()?;
    let mut servers = Vec::new();
    // Trusting a CA file or a pin only means something over TLS: they ask for it.
    let tls_asked = args.ca.is_some() || args.pin.is_some();
    for server in args.server.split(',').map(str::trim) {
        servers.push(match relay_address(server, tls_asked)? {
            (addr, None) => Server::Tcp(addr),
            (addr, Some(host)) => {
                let trust = match (&args.ca, &args.pin) {
                    (Some(ca), _) => tls::Trust::CaFile(ca.clone()),
                    (None, Some(pin)) => tls::Trust::pin(pin).map_err(anyhow::Error::msg)?,
                    (None, None) => tls::Trust::WebRoots,
                };
                Server::Tls {
                    addr,
                    server_name: host,
                    tls: tls::client_config(&trust)?,
                }
            }
        });
    }
    let reconnect = (window > 0).then(|| Reconnect {
        window: Duration::from_secs(window),
        ..Reconnect::default()
    });
    let connecting = async {
        connect_with(&servers, &args.user, &token, config, dir, reconnect)
            .await
            .map_err(anyhow::Error::from)
    };
    let wait = Duration::from_secs(args.timeout);
    let Ok(connected) = tokio::time::timeout(wait, connecting).await else {
        bail!(
            "{} at {}: no answer within {} s (is a relay listening there?)",
            args.user,
            args.server,
            args.timeout
        );
    };
    connected.with_context(|| format!("{} at {}", args.user, args.server))
}

/// Where `--server` says the relay is: the address to connect to, and the name to check
/// its certificate against when the link is TLS (`None`: plain TCP). `tls_asked` (a
/// `--ca` or `--pin` given) makes a bare loopback address TLS too.
fn relay_address(server: &str, tls_asked: bool) -> Result<(String, Option<String>)> {
    let (scheme, rest) = match server.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, server),
    };
    let host = match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => host,
        _ => bail!("--server {server}: expected [tls://|tcp://]host:port"),
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
            bail!("--server {server}: tcp:// is plain TCP, but --ca or --pin asks for TLS")
        }
        Some("tcp") => false,
        Some(other) => bail!("--server {server}: unknown scheme {other}:// (tls:// or tcp://)"),
        None => tls_asked || !loopback,
    };
    Ok((rest.to_string(), tls.then_some(host)))
}

/// Prints one event, as text or as a JSON line (the events are listed in docs/CLI.md).
struct Printer {
    json: bool,
    /// Put before each line of text.
    prefix: &'static str,
    dir: Option<PathBuf>,
    /// Progress lines last printed, by send or receive id, so a long transfer prints at
    /// most about ten a second (and always its last).
    progress_at: HashMap<(bool, u64), std::time::Instant>,
    /// Bars of incoming transfers, in text mode on a terminal.
    bars: HashMap<u64, ProgressBar>,
    /// The session a saved buffer is confirmed on, if it confirms buffers
    /// (`ClientConfig::confirm_buffers`).
    confirm: Option<ClientHandle>,
}

/// A code and its name, as every JSON event gives them.
fn code_json(code: ErrorCode) -> serde_json::Value {
    json!(code.name().unwrap_or("UNKNOWN"))
}

impl Printer {
    fn new(json: bool, prefix: &'static str, dir: Option<PathBuf>) -> Self {
        Printer {
            json,
            prefix,
            dir,
            progress_at: HashMap::new(),
            bars: HashMap::new(),
            confirm: None,
        }
    }

    /// One line of output, as JSON or as text.
    fn line(&self, value: serde_json::Value, text: String) {
        if self.json {
            say!("{value}");
        } else {
            say!("{}{text}", self.prefix);
        }
    }

    /// Whether a progress line for (`incoming`, `id`) is due: a tenth of a second since
    /// the last, or the end.
    fn progress_due(&mut self, incoming: bool, id: u64, done: bool) -> bool {
        let now = std::time::Instant::now();
        let last = self.progress_at.get(&(incoming, id));
        if done || last.is_none_or(|t| now - *t >= Duration::from_millis(100)) {
            self.progress_at.insert((incoming, id), now);
            return true;
        }
        false
    }

    /// An incoming transfer ended: its bar goes.
    fn end_bar(&mut self, id: u64) {
        if let Some(bar) = self.bars.remove(&id) {
            bar.finish_and_clear();
        }
        self.progress_at.remove(&(true, id));
    }

    /// A send of ours went on after a lost connection from `offset`, where its
    /// receiver's bytes ended.
    fn resumed(&mut self, id: SendId, offset: u64) {
        self.line(
            json!({"event": "resumed", "send_id": id.0, "offset": offset}),
            format!("{id}: resumed at byte {offset}"),
        );
    }

    /// A send of ours waits for its receiver or the relay to come back: said once (the
    /// bar, if any, counts down).
    fn waiting(
        &mut self,
        id: SendId,
        to: &str,
        p: &SendProgress,
        w: peermsg_tokio::Waiting,
        on_bar: bool,
    ) {
        let unix = |at: tokio::time::Instant| {
            let now = tokio::time::Instant::now();
            let wall = std::time::SystemTime::now();
            let then = match at >= now {
                true => wall + (at - now),
                false => wall - (now - at),
            };
            then.duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        if self.json {
            say!(
                "{}",
                json!({"event": "waiting", "send_id": id.0, "reason": code_json(w.reason), "code": w.reason.as_u32(),
                       "since": unix(w.since), "deadline": unix(w.deadline), "sent": p.sent, "total": p.total})
            );
        } else if !on_bar {
            say!("{id}: {}", waiting_text(to, p, w));
        }
    }

    /// A send of ours was answered "all of it" by its receiver: an earlier attempt
    /// delivered it (its receiver still has it, unchanged), so nothing is sent again.
    fn already_delivered(&mut self, id: SendId, to: &str, what: &str) {
        self.line(
            json!({"event": "already_delivered", "send_id": id.0}),
            format!(
                "{id}: {} already has {what} (delivered before, unchanged); nothing is sent again",
                shown(to)
            ),
        );
    }

    /// A send of ours got further (JSON only: a terminal has the bar).
    fn send_progress(&mut self, id: SendId, p: SendProgress) {
        if self.json && self.progress_due(false, id.0, p.sent == p.total) {
            self.line(
                json!({"event": "progress", "send_id": id.0, "sent": p.sent, "total": p.total}),
                String::new(),
            );
        }
    }

    /// A send of ours ended.
    fn send_result(&mut self, id: SendId, code: ErrorCode, to: &str) {
        self.line(
            json!({"event": "send_result", "send_id": id.0, "code": code.as_u32(), "code_name": code_json(code)}),
            format!("{id}: {}", outcome(code, to)),
        );
    }

    async fn event(&mut self, event: &ClientEvent) -> Result<()> {
        match event {
            ClientEvent::Core(Event::CmdReceived { id, from, data, .. }) => {
                // Text as it is; other bytes in base64, never with characters replaced.
                let (json, text) = match std::str::from_utf8(data) {
                    Ok(text) => (json!({"event": "cmd_received", "receive_id": id.0, "from": from.as_str(), "data": text}), shown(text)),
                    Err(_) => {
                        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
                        let said = format!("{} bytes, not UTF-8 text (base64 {b64})", data.len());
                        (json!({"event": "cmd_received", "receive_id": id.0, "from": from.as_str(), "data_base64": b64}), said)
                    }
                };
                self.line(json, format!("command from {}: {text}", shown(from.as_str())));
            }
            ClientEvent::Core(Event::BufferReceived { id, from, data }) => {
                self.end_bar(id.0);
                let dir = self.dir.clone().unwrap_or_else(|| PathBuf::from("."));
                let name = format!("buffer-{}.bin", save::user_part(from.as_str()));
                let (into, bytes) = (dir.clone(), data.clone());
                let saved = tokio::task::spawn_blocking(move || save::save_new(&into, &name, &bytes))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                // Its sender hears of success only once it is saved.
                if let Some(session) = &self.confirm {
                    let _ = match &saved {
                        Ok(_) => session.accept_buffer(*id),
                        Err(e) => session.fail_buffer(*id, peermsg_tokio::write_error_code(e)),
                    };
                }
                match saved {
                    Ok(path) => self.line(
                        json!({"event": "buffer_received", "receive_id": id.0, "from": from.as_str(), "size": data.len(), "path": path}),
                        format!("buffer from {}: {} bytes, saved as {}", shown(from.as_str()), data.len(), path.display()),
                    ),
                    // Not fatal: the next message may well be saved.
                    Err(e) => shout!("error: cannot save a buffer from {} in {}: {e}", shown(from.as_str()), dir.display()),
                }
            }
            ClientEvent::FileReceived { id, from, tmp_file, org_file_name, size } => {
                self.end_bar(id.0);
                let dir = self.dir.as_deref().unwrap_or(Path::new("."));
                let path = save::place(tmp_file, dir, org_file_name).unwrap_or_else(|e| {
                    shout!("error: cannot name a received file {}: {e}; it stays as {}", shown(org_file_name), tmp_file.display());
                    tmp_file.clone()
                });
                // A repeat of it is recognised while it is there, unchanged.
                if let Some(session) = &self.confirm {
                    session.file_saved_as(*id, &path);
                }
                self.line(
                    json!({"event": "file_received", "receive_id": id.0, "from": from.as_str(), "org_file_name": org_file_name, "size": size, "path": path}),
                    format!("file from {}: {} ({size} bytes) saved as {}", shown(from.as_str()), shown(org_file_name), shown(&path.display().to_string())),
                )
            }
            ClientEvent::FileAlreadyHeld { id, from, path, size } => {
                self.end_bar(id.0);
                self.line(
                    json!({"event": "already_delivered", "receive_id": id.0, "from": from.as_str(), "size": size, "path": path}),
                    format!("file from {}: sent again, and already here as {} ({size} bytes, unchanged); not kept twice", shown(from.as_str()), shown(&path.display().to_string())),
                )
            }
            ClientEvent::Core(Event::Offer { id, from, name, size, kind, .. }) => {
                let what = if name.is_empty() { "a buffer".to_string() } else { shown(name.as_str()) };
                let kind_name = if *kind == SendKind::File { "file" } else { "buffer" };
                self.line(
                    json!({"event": "offer", "receive_id": id.0, "kind": kind_name, "from": from.as_str(), "name": name.as_str(), "size": size}),
                    format!("{} is sending {what} ({size} bytes)", shown(from.as_str())),
                );
                // The line first, then its bar below it.
                let label = format!("{} from {}", what, shown(from.as_str()));
                if let Some(bar) = progress_bar(&label, *size).filter(|_| !self.json) {
                    self.bars.insert(id.0, bar);
                }
            }
            ClientEvent::Core(Event::ReceiveProgress { id, received, total }) => {
                if let Some(bar) = self.bars.get(&id.0) {
                    bar.set_position(*received);
                }
                if self.json && self.progress_due(true, id.0, received == total) {
                    self.line(json!({"event": "receive_progress", "receive_id": id.0, "received": received, "total": total}), String::new());
                }
            }
            ClientEvent::Core(Event::ReceiveFailed { id, from, code }) if *code == ErrorCode::CANCELLED => {
                self.end_bar(id.0);
                self.line(json!({"event": "cancelled", "receive_id": id.0, "from": from.as_str()}), format!("{} cancelled a transfer", shown(from.as_str())))
            }
            ClientEvent::Core(Event::ReceiveFailed { id, from, code }) => {
                let at = self.bars.get(&id.0).and_then(|b| Some(b.position() * 100 / b.length().filter(|l| *l > 0)?));
                self.end_bar(id.0);
                // Cut off by a lost connection, what came is kept (a file on disk, a
                // buffer in memory) and goes on when its sender sends it again: not a
                // failure to tell, then a file saved, for one file.
                let cut_off = code.is_cut_off();
                let said = match cut_off {
                    true => format!(
                        "a transfer from {} was cut off{} ({} {}); what came is kept, and it goes on when {} sends it again",
                        shown(from.as_str()),
                        at.map_or(String::new(), |at| format!(" at {at}%")),
                        code.as_u32(),
                        code.name().unwrap_or("UNKNOWN"),
                        shown(from.as_str()),
                    ),
                    false => format!(
                        "a transfer from {} failed: {} ({} {})",
                        shown(from.as_str()),
                        code.meaning().unwrap_or("a code this program does not know"),
                        code.as_u32(),
                        code.name().unwrap_or("UNKNOWN")
                    ),
                };
                self.line(
                    json!({"event": "receive_failed", "receive_id": id.0, "from": from.as_str(), "code": code.as_u32(), "code_name": code_json(*code), "cut_off": cut_off}),
                    said,
                )
            }
            ClientEvent::Reconnecting { attempt, error } => self.line(
                json!({"event": "reconnecting", "attempt": attempt, "error": error}),
                format!("connection lost ({}); connecting again (attempt {attempt})", shown(error)),
            ),
            ClientEvent::Reconnected { server } => self.line(
                json!({"event": "reconnected", "server": server}),
                format!("connected again to {}", shown(server)),
            ),
            ClientEvent::Core(Event::Closed { code, reason }) => self.line(
                json!({"event": "closed", "code": code.as_u32(), "code_name": code_json(*code), "reason": reason.to_string()}),
                match code.is_success() {
                    true => format!("connection closed ({})", shown(&reason.to_string())),
                    false => format!("connection closed: {code} ({})", shown(&reason.to_string())),
                },
            ),
            _ => {}
        }
        Ok(())
    }
}

async fn listen(args: &LoginArgs, dir: &Path, choice: &Choice, json: bool) -> Result<ExitCode> {
    let mut interrupt = Interrupt::new()?;
    // Past a file size limit (`ulimit -f`) the system sends SIGXFSZ, which would end the
    // listener; handled, the write fails instead (EFBIG) and that one file fails.
    let _file_too_large =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))?;
    // Paths printed are absolute, whatever the working directory of who reads them.
    let dir = std::fs::canonicalize(dir)
        .with_context(|| format!("cannot use {} for received files", dir.display()))?;
    let (handle, mut events) = tokio::select! {
        logged_in = login(args, Some(&dir), choice.max_size, args.reconnect_window.unwrap_or(LISTEN_WINDOW)) => logged_in.with_context(|| format!("(receiving into {})", dir.display()))?,
        _ = interrupt.recv() => return Ok(ExitCode::from(INTERRUPTED)),
    };
    if !choice.from.is_empty() {
        let senders = choice
            .from
            .iter()
            .map(|u| {
                peermsg::wire::UserId::new(u.trim()).map_err(|e| anyhow::anyhow!("--from {u}: {e}"))
            })
            .collect::<Result<std::collections::BTreeSet<_>>>()?;
        handle.accept_only_from(Some(senders));
    }
    let mut printer = Printer::new(json, "", Some(dir.clone()));
    printer.confirm = Some(handle.clone());
    printer.line(
        json!({"event": "ready", "user": args.user, "server": args.server, "dir": dir}),
        format!(
            "{} logged in at {}; files go to {}",
            args.user,
            args.server,
            dir.display()
        ),
    );
    let mut interrupted = false;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    printer.event(&event).await?;
                    if let ClientEvent::Core(Event::Closed { code, .. }) = event {
                        return Ok(if interrupted {
                            ExitCode::from(INTERRUPTED)
                        } else if code.is_success() {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::FAILURE
                        });
                    }
                }
                None => return Ok(ExitCode::from(if interrupted { INTERRUPTED } else { 1 })),
            },
            _ = interrupt.recv() => {
                interrupted = true;
                handle.close();
            }
        }
    }
}

/// A number of bytes as `--limit-rate` (a second) and `--max-size` take it: digits, K, M
/// or G (1000s) after them.
fn parse_bytes(text: &str) -> std::result::Result<u64, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let scale: u64 = match unit {
        "" => 1,
        "K" | "k" => 1_000,
        "M" | "m" => 1_000_000,
        "G" | "g" => 1_000_000_000,
        _ => return Err(format!("{text}: a number of bytes, K, M or G after it")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text}: a positive number of bytes, K, M or G after it"))
}

async fn send(
    args: &LoginArgs,
    to: &str,
    what: &What,
    name: Option<&str>,
    window: u64,
    limit_rate: Option<u64>,
    json: bool,
) -> Result<ExitCode> {
    let mut interrupt = Interrupt::new()?;
    // What to send is read and checked before connecting.
    let source = Source::of(what, name)?;
    let (handle, mut events) = tokio::select! {
        logged_in = login(args, None, None, window) => logged_in?,
        _ = interrupt.recv() => return Ok(ExitCode::from(INTERRUPTED)),
    };
    handle.set_file_rate(limit_rate);
    let mut sending = source.start(&handle, to).await?;
    let id = sending.id();
    let mut progress = sending.progress();
    let started = std::time::Instant::now();
    // The bar comes once there is something to show (the size is known).
    let label = format!("{} to {}", source.label(), shown(to));
    let mut bar: Option<ProgressBar> = None;
    let with_bar = !json && what.cmd.is_none();
    let mut printer = Printer::new(json, "", None);
    let mut interrupted = false;
    let mut shown_progress = SendProgress::default();
    // The last time the send waited for its receiver or the relay, if it did.
    let mut waited: Option<peermsg_tokio::Waiting> = None;
    let mut show = |printer: &mut Printer, p: SendProgress| {
        if p != shown_progress {
            if let Some(offset) = p
                .resumed_at
                .filter(|_| p.resumed_at != shown_progress.resumed_at)
            {
                match offset == p.total && p.total > 0 {
                    true => printer.already_delivered(id, to, &source.label()),
                    false => printer.resumed(id, offset),
                }
                // Speed and time left count only what moves from here.
                if let Some(bar) = &bar {
                    bar.set_position(offset);
                    bar.reset_eta();
                }
            }
            if let Some(w) = p.waiting {
                waited = Some(w);
                // Said once a waiting spell (tried again meanwhile, it may change reason).
                if shown_progress.waiting.is_none() {
                    printer.waiting(id, to, &p, w, bar.is_some());
                }
            }
            if p.waiting.is_none() && shown_progress.waiting.is_some() {
                if let Some(bar) = &bar {
                    bar.set_message(label.clone());
                }
            }
            shown_progress = p;
            if bar.is_none() && with_bar && p.sent < p.total {
                bar = progress_bar(&label, p.total);
            }
            if let Some(bar) = &bar {
                bar.set_length(p.total);
                bar.set_position(p.sent);
            }
            printer.send_progress(id, p);
        }
        // While it waits, its bar says so, and counts down.
        if let (Some(w), Some(bar)) = (p.waiting, &bar) {
            bar.set_message(waiting_text(to, &p, w));
        }
    };
    let mut clock = tokio::time::interval(Duration::from_secs(1));
    let code = loop {
        tokio::select! {
            code = &mut sending => break code,
            _ = clock.tick() => {
                let p = *progress.borrow();
                if p.waiting.is_some() {
                    show(&mut printer, p);
                }
            }
            changed = progress.changed() => {
                if changed.is_err() {
                    // The send is over: its result is there.
                    break (&mut sending).await;
                }
                show(&mut printer, *progress.borrow_and_update());
            }
            // Others may send to this user too: what they send is told, not kept.
            Some(event) = events.recv() => printer.event(&event).await?,
            _ = interrupt.recv(), if !interrupted => {
                interrupted = true;
                let code = sending.cancel();
                if !json {
                    match code.is_success() {
                        true => shout!("cancelling {id}"),
                        false => shout!("cannot cancel {id}: {code}"),
                    }
                }
            }
        }
    };
    // The last progress comes before the result, but the result may be seen first.
    show(&mut printer, *progress.borrow());
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    printer.send_result(id, code, to);
    if let (Some(w), ErrorCode::CONNECTIONLOST, false) = (waited, code, json) {
        say!(
            "gave up waiting for {} after {} s (--wait)",
            shown(to),
            w.deadline.saturating_duration_since(w.since).as_secs()
        );
    }
    if code.is_success() && !json {
        let secs = started.elapsed().as_secs_f64();
        let size = source.size();
        // Only bytes that moved in this attempt count toward a rate.
        let resumed_at = progress.borrow().resumed_at.unwrap_or(0);
        let moved = size.saturating_sub(resumed_at);
        match source {
            _ if moved == 0 && size > 0 => say!(
                "{} already had it: nothing was sent again ({size} bytes, delivered before)",
                shown(to)
            ),
            Source::Cmd(_) => say!("delivered {size} bytes to {} in {secs:.3} s", shown(to)),
            _ if resumed_at > 0 => say!(
                "delivered {size} bytes to {} in {secs:.3} s: {moved} sent now ({:.1} MB/s), {resumed_at} it had",
                shown(to),
                moved as f64 / secs.max(1e-6) / 1e6
            ),
            _ => say!(
                "delivered {size} bytes to {} in {secs:.3} s ({:.1} MB/s)",
                shown(to),
                size as f64 / secs.max(1e-6) / 1e6
            ),
        }
    }
    handle.close();
    Ok(if interrupted {
        ExitCode::from(INTERRUPTED)
    } else if code.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_DELIVERED)
    })
}

/// What `send` sends, read or checked before connecting. A file that is not a regular
/// file (standard input, a pipe, a device) is read to its end into a temporary file first,
/// so its size is known and no byte is lost.
enum Source {
    Cmd(Bytes),
    Buffer(Bytes),
    /// A file, and the temporary directory holding it if it was spooled (kept until the
    /// send ends).
    File(PathBuf, #[allow(dead_code)] Option<tempfile::TempDir>),
}

impl Source {
    fn of(what: &What, named: Option<&str>) -> Result<Self> {
        if let Some(text) = &what.cmd {
            return Ok(Source::Cmd(Bytes::from(text.clone())));
        }
        if let Some(path) = &what.buffer {
            let data =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            return Ok(Source::Buffer(Bytes::from(data)));
        }
        let Some(path) = &what.file else {
            bail!("nothing to send")
        };
        if path.as_os_str() == "-" {
            return Self::spooled(&mut std::io::stdin().lock(), named.unwrap_or("stdin"));
        }
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            let base = path
                .file_name()
                .map_or("dir".into(), |n| n.to_string_lossy().into_owned());
            bail!(
                "{} is a directory: send one file, for example an archive of it: \
                 tar -czf {base}.tar.gz -C {} {base}, then --file {base}.tar.gz",
                path.display(),
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or(".".into(), |p| p.display().to_string()),
            );
        }
        if meta.is_file() {
            return match named {
                None => Ok(Source::File(path.clone(), None)),
                Some(name) => Self::renamed(path, name),
            };
        }
        let mut input =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = named.map_or_else(
            || {
                path.file_name()
                    .map_or("file".into(), |n| n.to_string_lossy().into_owned())
            },
            str::to_string,
        );
        Self::spooled(&mut input, &name)
    }

    /// The regular file at `path`, sent as `name`: a link of that name to it, in a
    /// temporary directory of our own (the file itself is not copied).
    fn renamed(path: &Path, name: &str) -> Result<Self> {
        let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
        let target = std::fs::canonicalize(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let link = dir.path().join(peermsg_tokio::sanitize_file_name(name));
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("cannot name {} {name}", path.display()))?;
        Ok(Source::File(link, Some(dir)))
    }

    /// `input` read to its end into a temporary file named `name`.
    fn spooled(input: &mut impl std::io::Read, name: &str) -> Result<Self> {
        let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
        let path = dir.path().join(peermsg_tokio::sanitize_file_name(name));
        // A new file in a directory of our own: nothing to replace, no link to follow.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::io::copy(input, &mut file).context("cannot read the input")?;
        Ok(Source::File(path, Some(dir)))
    }

    /// What it is, for the progress bar.
    fn label(&self) -> String {
        match self {
            Source::Cmd(_) => "a command".to_string(),
            Source::Buffer(_) => "a buffer".to_string(),
            Source::File(path, _) => path
                .file_name()
                .map_or("a file".to_string(), |n| shown(&n.to_string_lossy())),
        }
    }

    /// Its size in bytes.
    fn size(&self) -> u64 {
        match self {
            Source::Cmd(b) | Source::Buffer(b) => b.len() as u64,
            Source::File(path, _) => std::fs::metadata(path).map_or(0, |m| m.len()),
        }
    }

    async fn start(&self, handle: &ClientHandle, to: &str) -> Result<SendHandle> {
        Ok(match self {
            Source::Cmd(text) => handle.send_cmd(to, text.clone(), 0).await?,
            Source::Buffer(data) => handle.send_buffer(to, data.clone(), 0).await?,
            // The same key for the same unchanged file: a `send` run again after it was
            // killed continues where the receiver's bytes end.
            Source::File(path, _) => {
                let key = file_resume_key(path, to)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                handle.send_file_with_key(to, path, key, 0).await?
            }
        })
    }
}

/// The terminal's bars: one set for the whole program (the demo runs two users in one
/// process), when standard error is a terminal. Every line is printed above them
/// ([`print_line`]), so a bar's redraw never takes a line away.
fn screen() -> Option<&'static indicatif::MultiProgress> {
    static SCREEN: std::sync::OnceLock<Option<indicatif::MultiProgress>> =
        std::sync::OnceLock::new();
    SCREEN
        .get_or_init(|| {
            std::io::stderr()
                .is_terminal()
                .then(indicatif::MultiProgress::new)
        })
        .as_ref()
}

/// Writes `text` as a line to standard output (standard error if `err`), above the bars.
fn print_line(err: bool, text: &str) {
    use std::io::Write as _;
    let write = || {
        let _ = match err {
            true => writeln!(std::io::stderr().lock(), "{text}"),
            false => writeln!(std::io::stdout().lock(), "{text}"),
        };
    };
    match screen() {
        Some(screen) => screen.suspend(write),
        None => write(),
    }
}

/// A bar named `label` for `total` bytes, with the percentage, bytes, rate and time left,
/// on the terminal's bars; `None` without a terminal or for nothing to show (a bar of no
/// bytes would sit at `100% 0 B/0 B`).
fn progress_bar(label: &str, total: u64) -> Option<ProgressBar> {
    let screen = screen().filter(|_| total > 0)?;
    // Hidden until it is on the screen's set: drawn on its own first, its first frame
    // stayed behind as a dead line (`100% 0 B/0 B`) that nothing cleared.
    let bar = ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::hidden());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} {bar:30} {percent:>3}% {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(label.to_string());
    Some(screen.add(bar))
}

/// What a waiting send is doing, in words: "waiting for bob (gone at 19%, 0:12 ago;
/// giving up in 0:48)".
fn waiting_text(to: &str, p: &SendProgress, w: peermsg_tokio::Waiting) -> String {
    let now = tokio::time::Instant::now();
    let clock = |d: Duration| format!("{}:{:02}", d.as_secs() / 60, d.as_secs() % 60);
    let at = match p.total {
        0 => String::new(),
        total => format!("gone at {}%, ", p.sent.saturating_mul(100) / total),
    };
    format!(
        "waiting for {} ({at}{} ago; giving up in {})",
        shown(to),
        clock(now.saturating_duration_since(w.since)),
        clock(w.deadline.saturating_duration_since(now))
    )
}

/// A send's result in words, with the SDK's code and name after them: what a person
/// reads first is what happened.
fn outcome(code: ErrorCode, to: &str) -> String {
    let said = match code {
        ErrorCode::NOERR => "delivered".to_string(),
        ErrorCode::CANCELLED => "cancelled".to_string(),
        ErrorCode::REJECTED => format!("{} refused it", shown(to)),
        ErrorCode::OFFLINE => format!("not delivered: {} is not connected", shown(to)),
        code => format!(
            "not delivered: {}",
            code.meaning()
                .unwrap_or("a code this program does not know")
        ),
    };
    format!(
        "{said} ({} {})",
        code.as_u32(),
        code.name().unwrap_or("UNKNOWN")
    )
}

/// The demo: a relay on loopback, alice and bob, each kind of send, one cancel.
async fn demo() -> Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // TLS, with a certificate made now; the clients trust exactly it (a pin).
    let (relay_tls, pin) = tls::self_signed("localhost")?;
    let extras = Extras {
        tls: Some(relay_tls),
        ..Extras::default()
    };
    let server = tokio::spawn(serve_with(
        listener,
        ServerConfig::default(),
        Open,
        extras,
        async move {
            let _ = stopped.await;
        },
    ));
    say!("relay on {addr}, TLS with a certificate of SHA-256 {pin}");
    let trust = tls::client_config(&tls::Trust::pin(&pin).map_err(anyhow::Error::msg)?)?;
    let dir = tempfile::tempdir()?;
    let saves = dir.path().to_path_buf();
    // alice only sends: her results come on each send's handle, and nothing comes to her.
    let (alice, _a_events) = connect_tls(
        addr,
        "localhost",
        trust.clone(),
        "alice",
        b"",
        ClientConfig::default(),
        None,
    )
    .await?;
    // bob confirms a buffer once he has saved it, as `listen` does.
    let bob_config = ClientConfig {
        confirm_buffers: true,
        ..ClientConfig::default()
    };
    let (bob, mut b_events) = connect_tls(
        addr,
        "localhost",
        trust,
        "bob",
        b"",
        bob_config,
        Some(dir.path()),
    )
    .await?;
    say!(
        "alice and bob logged in; bob saves files in {}",
        dir.path().display()
    );
    let confirm = bob.clone();
    let bob_printer = tokio::spawn(async move {
        let mut printer = Printer::new(false, "  bob: ", Some(saves));
        printer.confirm = Some(confirm);
        while let Some(event) = b_events.recv().await {
            let _ = printer.event(&event).await;
        }
    });

    // The demo's own files to send, made new in a directory of its own (never written
    // through a link or over a file).
    let originals = tempfile::tempdir()?;
    let write_new = |name: &str, bytes: &[u8]| -> std::io::Result<PathBuf> {
        let path = originals.path().join(name);
        let mut file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&path)?;
        std::io::Write::write_all(&mut file, bytes)?;
        Ok(path)
    };
    let pattern: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    let src = write_new("report.pdf", &pattern)?;
    let big = write_new("movie.mkv", &vec![0u8; 256 << 20])?;

    let cmd = alice
        .send_cmd("bob", Bytes::from_static(b"hello from alice"), 1)
        .await?;
    wait(cmd, None, "command").await;
    let buffer = alice
        .send_buffer("bob", Bytes::from(vec![42u8; 8 << 20]), 2)
        .await?;
    wait(buffer, Some("alice: buffer"), "buffer of 8 MiB").await;
    let file = alice.send_file("bob", &src, 3).await?;
    wait(file, Some("alice: report.pdf"), "file of 24 MiB").await;
    let doomed = alice.send_file("bob", &big, 4).await?;
    let mut progress = doomed.progress();
    let mut bar = None;
    while progress.changed().await.is_ok() {
        let SendProgress { sent, total, .. } = *progress.borrow_and_update();
        let bar = bar.get_or_insert_with(|| progress_bar("alice: movie.mkv", total));
        if let Some(bar) = bar {
            bar.set_position(sent);
        }
        if sent > total / 4 {
            let code = doomed.cancel();
            if let Some(bar) = bar.take() {
                bar.finish_and_clear();
            }
            match code.is_success() {
                true => say!("alice cancels the 256 MiB file at {}%", sent * 100 / total),
                false => say!("alice cannot cancel the 256 MiB file: {code}"),
            }
            break;
        }
    }
    if let Some(bar) = bar.flatten() {
        bar.finish_and_clear();
    }
    say!("alice: file of 256 MiB: {}", outcome(doomed.await, "bob"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    alice.close();
    bob.close();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = stop.send(());
    let _ = server.await;
    bob_printer.abort();
    Ok(ExitCode::SUCCESS)
}

/// Waits for `send`'s result, showing its progress on a bar named `label` (if any, once
/// its size is known), and says how it ended.
async fn wait(mut send: SendHandle, label: Option<&str>, what: &str) {
    let mut progress = send.progress();
    let mut bar = None;
    let code = loop {
        tokio::select! {
            code = &mut send => break code,
            changed = progress.changed() => match (changed, label) {
                (Err(_), _) => break (&mut send).await,
                (Ok(()), Some(label)) => {
                    let p = *progress.borrow_and_update();
                    if let Some(bar) = bar.get_or_insert_with(|| progress_bar(label, p.total)) {
                        bar.set_position(p.sent);
                    }
                }
                (Ok(()), None) => {}
            },
        }
    };
    if let Some(bar) = bar.flatten() {
        bar.finish_and_clear();
    }
    say!("alice: {what}: {}", outcome(code, "bob"));
}

/// `peermsg token`: a signed login token on standard output.
fn token(
    user: &str,
    ttl: &str,
    secret_file: Option<PathBuf>,
    private_key: Option<PathBuf>,
    audience: Option<&str>,
) -> Result<ExitCode> {
    let ttl = humantime::parse_duration(ttl)
        .with_context(|| format!("--ttl {ttl}: not a duration such as 1h, 30m or 3600s"))?;
    let token = match (secret_file, private_key) {
        (Some(path), _) => {
            peermsg_tokio::mint_hmac(&read_hmac_secret(&path)?, user, ttl.as_secs(), audience)?
        }
        (None, Some(path)) => {
            peermsg_tokio::mint_ed25519(&read_secret(&path)?, user, ttl.as_secs(), audience)
                .with_context(|| format!("{}: not an Ed25519 private key", path.display()))?
        }
        (None, None) => bail!("give --secret-file or --private-key"),
    };
    say!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// Serves the relay's metrics at `http://addr/metrics` (and `ok` at `/healthz`) on this
/// runtime, bounded as `peermsg_tokio::serve_metrics` says. Gives the metrics and the
/// address they are served at.
async fn serve_metrics(addr: &str) -> Result<(Metrics, String)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let at = listener.local_addr()?.to_string();
    let metrics = Metrics::new();
    tokio::spawn(peermsg_tokio::serve_metrics(listener, metrics.clone()));
    Ok((metrics, at))
}

#[cfg(test)]
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
