//! Logging in to a relay: where `--server` points, TLS or not, and how long a lost
//! connection is waited for.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use peermsg::client::ClientConfig;
use peermsg_tokio::{tls, ClientEvents, ClientHandle, Reconnect, Server};

use crate::args::LoginArgs;

/// How long a listener keeps connecting again after a lost connection, by default.
pub(crate) const LISTEN_WINDOW: u64 = 300;

/// How long `send` waits for its receiver or the relay to come back, by default: what a
/// person at a terminal waits.
pub(crate) const SEND_WAIT: u64 = 60;

/// Logs in; a session with no directory only sends, so it replaces no listener of the
/// same user. After a lost connection it connects again for `window` seconds (0: not at
/// all), and its sends wait as long for their receivers.
pub(crate) async fn login(
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
    let trust = match (&args.ca, &args.pin) {
        (Some(ca), _) => Some(tls::Trust::CaFile(ca.clone())),
        (None, Some(pin)) => Some(tls::Trust::pin(pin).map_err(anyhow::Error::msg)?),
        (None, None) => None,
    };
    for server in args.server.split(',').map(str::trim) {
        let server = Server::from_address(server, trust.as_ref())
            .map_err(|e| anyhow::anyhow!("--server {e}"))?;
        servers.push(server);
    }
    let reconnect = (window > 0).then(|| Reconnect {
        window: Duration::from_secs(window),
        ..Reconnect::default()
    });
    let mut builder = ClientHandle::builder(&args.user)
        .token(&token)
        .servers(servers)
        .config(config);
    if let Some(dir) = dir {
        builder = builder.files_to(dir);
    }
    if let Some(reconnect) = reconnect {
        builder = builder.reconnect(reconnect);
    }
    if let Some(keys) = args.e2e_keys()? {
        let (sealing, fingerprint) = keys.sealing()?;
        shout!(
            "end to end: your key is {fingerprint} (in {}); a peer can compare it with what their peermsg shows",
            keys.identity_path().display()
        );
        builder = builder.sealing(sealing);
    }
    let connecting = async { builder.connect().await.map_err(anyhow::Error::from) };
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
