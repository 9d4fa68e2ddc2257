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

/// Where `--server` says the relay is: the address to connect to, and the name to check
/// its certificate against when the link is TLS (`None`: plain TCP). `tls_asked` (a
/// `--ca` or `--pin` given) makes a bare loopback address TLS too.
pub(crate) fn relay_address(server: &str, tls_asked: bool) -> Result<(String, Option<String>)> {
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
