//! `peermsg relay`: a relay server, alone or one of a cluster, with its metrics.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use peermsg_tokio::{serve_with, Authenticator, Cluster, Extras, Metrics, ServerConfig, WebSocket};

use crate::args::{AuthArgs, TlsArgs, WebArgs};

pub(crate) async fn relay(
    listen: &str,
    auth: &AuthArgs,
    tls: &TlsArgs,
    web: &WebArgs,
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
    let websocket = match &web.ws_listen {
        Some(at) => Some(websocket(at, web, tls.is_some()).await?),
        None => None,
    };
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
        websocket,
    };
    serve_with(listener, config, authenticator, extras, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// The WebSocket listener at `at`, with the web folder of `web`, and a line saying where
/// browsers connect.
async fn websocket(at: &str, web: &WebArgs, tls: bool) -> Result<WebSocket> {
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .with_context(|| format!("cannot listen for WebSocket connections on {at}"))?;
    let addr = listener.local_addr()?;
    let (ws, http) = match tls {
        true => ("wss", "https"),
        false => ("ws", "http"),
    };
    let mut websocket = WebSocket::new(listener);
    match &web.web {
        Some(dir) => {
            if !dir.join("index.html").is_file() {
                bail!(
                    "--web {}: no index.html there (build the page first: \
                     crates/peermsg-web/build.sh)",
                    dir.display()
                );
            }
            say!("browsers connect to {ws}://{addr}/; the web page is at {http}://{addr}/");
            websocket = websocket.web(dir);
        }
        None => say!("browsers connect to {ws}://{addr}/"),
    }
    Ok(websocket)
}

/// A relay's name in a cluster when none is given: the host's name (what a subject may
/// carry of it) and the port, unique on a machine.
pub(crate) fn default_node_name(port: u16) -> String {
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

/// Serves the relay's metrics at `http://addr/metrics` (and `ok` at `/healthz`) on this
/// runtime, bounded as `peermsg_tokio::serve_metrics` says. Gives the metrics and the
/// address they are served at.
pub(crate) async fn serve_metrics(addr: &str) -> Result<(Metrics, String)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let at = listener.local_addr()?.to_string();
    let metrics = Metrics::new();
    tokio::spawn(peermsg_tokio::serve_metrics(listener, metrics.clone()));
    Ok((metrics, at))
}
