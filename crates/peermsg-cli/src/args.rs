//! The command line: subcommands, their flags, and the files they name (tokens, secrets).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use peermsg_tokio::rustls as tls_config;
use peermsg_tokio::{tls, Authenticator, OpenAccess, ServerConfig, SignedTokens, TokenTable};

/// Exit statuses, the same for every subcommand.
pub(crate) const EXIT_STATUSES: &str =
    "Exit status: 0 delivered (send) or closed cleanly (listen, relay); \
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
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Logs (standard error, filtered by RUST_LOG) as one JSON object per line.
    #[arg(long, global = true)]
    pub(crate) log_json: bool,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
        #[command(flatten)]
        web: WebArgs,
        /// Be one relay of a cluster: the NATS servers its relays share, such as
        /// nats://127.0.0.1:4222 (several: comma-separated). Users on any relay of the
        /// cluster reach each other.
        #[arg(long, value_name = "NATS_URLS")]
        cluster: Option<String>,
        /// This relay's name in the cluster, unique [default: the host's name and the
        /// listening port].
        #[arg(long, requires = "cluster")]
        node: Option<String>,
        /// Threads for the relay's tasks. One (the default) serves the relay's state and
        /// every connection's reads and writes without a wake-up between threads; more let
        /// a TLS relay decrypt connections' reads on that many cores at once.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
        threads: u16,
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

/// A relay's way in for browsers.
#[derive(Args)]
pub(crate) struct WebArgs {
    /// Also accept WebSocket connections (browsers) on this address, such as
    /// 127.0.0.1:7080: ws://, or wss:// with the relay's TLS certificate.
    #[arg(long, value_name = "ADDR")]
    pub(crate) ws_listen: Option<String>,
    /// Serve the files of DIR on the WebSocket address (the web client's page:
    /// crates/peermsg-web/www once built).
    #[arg(long, value_name = "DIR", requires = "ws_listen")]
    pub(crate) web: Option<PathBuf>,
}

/// What a listener takes.
#[derive(Args)]
pub(crate) struct Choice {
    /// Take messages only from these users (comma-separated); anything from anyone else
    /// is refused as it arrives (9001 REJECTED), before any of its bytes come.
    #[arg(long, value_delimiter = ',')]
    pub(crate) from: Vec<String>,
    /// Take files and buffers of at most this size: bytes, with K, M or G (1000s) after
    /// the number (`2G`). A larger one is refused by the relay before any of its bytes
    /// come (1405 FILE_SIZE_ERR, 1101 SENDBUFFER_LARGE).
    #[arg(long, value_parser = parse_bytes)]
    pub(crate) max_size: Option<u64>,
}

/// The relay's certificate, for TLS.
#[derive(Args)]
pub(crate) struct TlsArgs {
    /// Speak TLS with the certificate chain in this PEM file (leaf first); reloaded, with
    /// the key, on SIGHUP.
    #[arg(long, requires = "tls_key", conflicts_with = "tls_self_signed")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Speak TLS with a certificate made now, for trying it out: its SHA-256 fingerprint
    /// is printed, for clients' --pin.
    #[arg(long)]
    pub(crate) tls_self_signed: bool,
    /// Keep the --tls-self-signed certificate and its key in this directory (made on the
    /// first start, read back on the next), so a restart keeps the fingerprint clients
    /// pinned.
    #[arg(long, requires = "tls_self_signed")]
    pub(crate) tls_state: Option<PathBuf>,
}

impl TlsArgs {
    /// The relay's TLS configuration, if it speaks TLS, and what to tell its operator.
    pub(crate) fn server_config(&self) -> Result<Option<(Arc<tls_config::ServerConfig>, String)>> {
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
pub(crate) struct AuthArgs {
    /// A file of `user token` lines.
    #[arg(long, group = "auth")]
    pub(crate) tokens: Option<PathBuf>,
    /// Accept signed tokens (JWT, HMAC-SHA256) made with the secret in this file (see
    /// `peermsg token`); the token's subject is the user id.
    #[arg(long, group = "auth")]
    pub(crate) token_secret_file: Option<PathBuf>,
    /// Accept signed tokens (JWT, Ed25519) checked with the public key in this PEM file,
    /// so the relay never holds the signing key.
    #[arg(long, group = "auth")]
    pub(crate) token_public_key: Option<PathBuf>,
    /// Signed tokens must name this audience (`aud`).
    #[arg(long)]
    pub(crate) token_audience: Option<String>,
    /// Let anyone log in as anyone (and so take over anyone's session), even on an address
    /// other machines reach. Without any of these the relay serves loopback only.
    #[arg(long, group = "auth")]
    pub(crate) open: bool,
}

impl AuthArgs {
    /// The authenticator the flags ask for.
    pub(crate) fn authenticator(&self) -> Result<Box<dyn Authenticator>> {
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
            Box::new(OpenAccess)
        })
    }
}

/// A secret or key from a file, without the line end an editor leaves.
pub(crate) fn read_secret(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    Ok(bytes[..end].to_vec())
}

/// An HMAC token secret from a file: refused if shorter than 32 bytes (an empty one would
/// let anyone sign tokens).
pub(crate) fn read_hmac_secret(path: &Path) -> Result<peermsg_tokio::HmacSecret> {
    let secret = read_secret(path)?;
    peermsg_tokio::HmacSecret::new(&secret).with_context(|| format!("{}", path.display()))
}

#[derive(Args)]
pub(crate) struct LoginArgs {
    /// The relay: `tls://host:port`, or `tcp://host:port` for plain TCP. A bare
    /// `host:port` is TLS, unless it is a loopback address (plain). Several, comma-separated:
    /// the first that answers is used, at the start and after a lost connection.
    #[arg(long)]
    pub(crate) server: String,
    /// Seconds to keep connecting again after a lost connection; a file being sent or
    /// received goes on from what the receiver holds. 0: do not reconnect. Default: 300
    /// for `listen`; for `send`, its --wait.
    #[arg(long)]
    pub(crate) reconnect_window: Option<u64>,
    /// Trust a relay whose certificate is signed by an authority in this PEM file (else
    /// the web's authorities).
    #[arg(long, conflicts_with = "pin")]
    pub(crate) ca: Option<PathBuf>,
    /// Trust exactly the relay certificate with this SHA-256 fingerprint (hex, as
    /// `peermsg relay --tls-self-signed` prints it).
    #[arg(long)]
    pub(crate) pin: Option<String>,
    /// Your user id.
    #[arg(long)]
    pub(crate) user: String,
    /// Your token, if the relay wants one (from PEERMSG_TOKEN, so it does not show in
    /// `ps`, or --token-file).
    #[arg(
        long,
        env = "PEERMSG_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    pub(crate) token: String,
    /// A file whose first line is your token.
    #[arg(long, conflicts_with = "token")]
    pub(crate) token_file: Option<PathBuf>,
    /// Seconds to wait for the relay to answer the login.
    #[arg(long, default_value_t = 10)]
    pub(crate) timeout: u64,
    /// Seal everything end to end (commands, buffers, files and their names): the relay
    /// routes what it cannot read. Your key is made on first use and kept in --keys; a
    /// peer's key is trusted the first time it is seen and kept, and a changed one is
    /// refused. Both ends need it.
    #[arg(long)]
    pub(crate) e2e: bool,
    /// Where --e2e keeps your key (`identity`) and your peers' (`known_peers`).
    /// Default: ~/.config/peermsg.
    #[arg(long, env = "PEERMSG_KEYS")]
    pub(crate) keys: Option<PathBuf>,
}

impl LoginArgs {
    /// The keys --e2e uses, if it is given.
    pub(crate) fn e2e_keys(&self) -> Result<Option<crate::keys::Keys>> {
        match self.e2e {
            true => crate::keys::Keys::at(self.keys.as_deref()).map(Some),
            false => Ok(None),
        }
    }
}

impl LoginArgs {
    pub(crate) fn token(&self) -> Result<Vec<u8>> {
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
pub(crate) struct What {
    /// Send TEXT as a command.
    #[arg(long)]
    pub(crate) cmd: Option<String>,
    /// Send the bytes of PATH as an in-memory buffer.
    #[arg(long)]
    pub(crate) buffer: Option<PathBuf>,
    /// Send the file at PATH; `-` sends standard input (read to its end first).
    #[arg(long)]
    pub(crate) file: Option<PathBuf>,
}

/// Exit status of a run that Ctrl-C interrupted.
pub(crate) const INTERRUPTED: u8 = 130;

/// Exit status of a send the receiver or the relay did not take.
pub(crate) const NOT_DELIVERED: u8 = 3;

/// Ctrl-C, caught from the start of a run to its end: one handler, so no interrupt falls
/// between two waits.
pub(crate) struct Interrupt(tokio::signal::unix::Signal);

impl Interrupt {
    pub(crate) fn new() -> Result<Self> {
        let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("cannot catch Ctrl-C")?;
        Ok(Interrupt(signal))
    }

    pub(crate) async fn recv(&mut self) {
        self.0.recv().await;
    }
}

pub(crate) fn read_tokens(path: &Path) -> Result<HashMap<String, Vec<u8>>> {
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

/// A number of bytes as `--limit-rate` (a second) and `--max-size` take it: digits, K, M
/// or G (1000s) after them.
pub(crate) fn parse_bytes(text: &str) -> std::result::Result<u64, String> {
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
