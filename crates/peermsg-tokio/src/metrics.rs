//! What an operator watches: a relay's metrics in a Prometheus registry
//! (`prometheus-client`), updated by [`serve`](crate::serve) when its [`ServerConfig`]
//! carries them, and encoded as Prometheus text by [`Metrics::encode`].
//!
//! [`ServerConfig`]: crate::ServerConfig

use std::sync::Arc;

use peermsg::relay::RelayStats;
use peermsg::ErrorCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A code, as a label: its name (or number, for a code this version does not know).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

/// A message's kind and end, as labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabel {
    kind: &'static str,
    code: String,
}

/// A label of a fixed set (a direction, an outcome, a reason).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatLabel {
    what: &'static str,
}

fn name(code: ErrorCode) -> String {
    code.name()
        .map_or_else(|| code.as_u32().to_string(), str::to_string)
}

/// A relay's metrics. Cloning shares them (the registry and every metric are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    connections: Gauge,
    logged_in: Gauge,
    messages: Gauge,
    held_bytes: Gauge,
    held_budget: Gauge,
    frames_forwarded: Counter,
    forwarded_seen: Arc<std::sync::atomic::AtomicU64>,
    bytes_in: Counter,
    bytes_out: Counter,
    logins: Counter,
    logins_refused: Family<CodeLabel, Counter>,
    messages_ended: Family<MessageLabel, Counter>,
    nats_messages: Family<WhatLabel, Counter>,
    nats_bytes: Family<WhatLabel, Counter>,
    links: Gauge,
    link_credit: Gauge,
    peer_relays: Gauge,
    link_ends: Family<WhatLabel, Counter>,
    searches: Family<WhatLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the relay's metrics, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("peermsg_relay");
        let metrics = Metrics {
            registry: Arc::default(),
            connections: Gauge::default(),
            logged_in: Gauge::default(),
            messages: Gauge::default(),
            held_bytes: Gauge::default(),
            held_budget: Gauge::default(),
            frames_forwarded: Counter::default(),
            forwarded_seen: Arc::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            logins: Counter::default(),
            logins_refused: Family::default(),
            messages_ended: Family::default(),
            nats_messages: Family::default(),
            nats_bytes: Family::default(),
            links: Gauge::default(),
            link_credit: Gauge::default(),
            peer_relays: Gauge::default(),
            link_ends: Family::default(),
            searches: Family::default(),
        };
        let m = &metrics;
        registry.register("connections", "Connections open", m.connections.clone());
        registry.register("sessions", "Sessions logged in", m.logged_in.clone());
        registry.register(
            "messages_active",
            "Messages under way (commands and transfers)",
            m.messages.clone(),
        );
        registry.register(
            "held_bytes",
            "Message bytes the relay holds",
            m.held_bytes.clone(),
        );
        registry.register(
            "held_budget_bytes",
            "Message bytes the relay may hold (max_held_bytes)",
            m.held_budget.clone(),
        );
        registry.register(
            "frames_forwarded",
            "Frames passed from senders to receivers",
            m.frames_forwarded.clone(),
        );
        registry.register(
            "received_bytes",
            "Bytes read from clients",
            m.bytes_in.clone(),
        );
        registry.register(
            "sent_bytes",
            "Bytes written to clients",
            m.bytes_out.clone(),
        );
        registry.register("logins", "Logins accepted", m.logins.clone());
        registry.register(
            "logins_refused",
            "Logins refused, by code",
            m.logins_refused.clone(),
        );
        registry.register(
            "messages_ended",
            "Messages ended, by kind and by the result their sender got",
            m.messages_ended.clone(),
        );
        registry.register(
            "nats_messages",
            "NATS messages of a cluster relay, by direction (in, out)",
            m.nats_messages.clone(),
        );
        registry.register(
            "nats_bytes",
            "NATS payload bytes of a cluster relay, by direction (in, out)",
            m.nats_bytes.clone(),
        );
        registry.register(
            "links",
            "Links to other relays of the cluster open",
            m.links.clone(),
        );
        registry.register(
            "link_credit_bytes",
            "What other relays may have in flight toward this one (credit granted to incoming links)",
            m.link_credit.clone(),
        );
        registry.register(
            "peer_relays",
            "Other relays of the cluster heard from recently",
            m.peer_relays.clone(),
        );
        registry.register(
            "link_ends",
            "Links to other relays ended, by why (closed, lost, gap, peer_dead, nats_down)",
            m.link_ends.clone(),
        );
        registry.register(
            "user_searches",
            "Searches for a user's relay, by outcome (found, offline, busy, failed)",
            m.searches.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            ..metrics
        }
    }

    /// The metrics as Prometheus text (for `GET /metrics`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The relay core's state, as gauges.
    pub(crate) fn observe(&self, stats: RelayStats) {
        let gauge = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        gauge(&self.connections, stats.connections as u64);
        gauge(&self.logged_in, stats.logged_in as u64);
        gauge(&self.messages, stats.messages as u64);
        gauge(&self.held_bytes, stats.held_bytes);
        gauge(&self.held_budget, stats.held_budget);
        gauge(&self.link_credit, stats.link_credit);
        gauge(&self.links, stats.links as u64);
        // The core counts from its start; the counter takes what is new.
        let seen = self
            .forwarded_seen
            .swap(stats.frames_forwarded, std::sync::atomic::Ordering::Relaxed);
        self.frames_forwarded
            .inc_by(stats.frames_forwarded.saturating_sub(seen));
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.bytes_in.inc_by(bytes as u64);
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.bytes_out.inc_by(bytes as u64);
    }

    pub(crate) fn login(&self, refused: Option<ErrorCode>) {
        match refused {
            None => {
                self.logins.inc();
            }
            Some(code) => {
                self.logins_refused
                    .get_or_create(&CodeLabel { code: name(code) })
                    .inc();
            }
        }
    }

    pub(crate) fn message_ended(&self, cmd: bool, code: ErrorCode) {
        let kind = if cmd { "command" } else { "transfer" };
        let label = MessageLabel {
            kind,
            code: name(code),
        };
        self.messages_ended.get_or_create(&label).inc();
    }

    #[cfg(feature = "cluster")]
    pub(crate) fn nats(&self, out: bool, bytes: usize) {
        let what = if out { "out" } else { "in" };
        self.nats_messages.get_or_create(&WhatLabel { what }).inc();
        self.nats_bytes
            .get_or_create(&WhatLabel { what })
            .inc_by(bytes as u64);
    }

    #[cfg(feature = "cluster")]
    pub(crate) fn peer_relays(&self, peer_relays: usize) {
        self.peer_relays
            .set(i64::try_from(peer_relays).unwrap_or(i64::MAX));
    }

    #[cfg(feature = "cluster")]
    pub(crate) fn link_ended(&self, what: &'static str) {
        self.link_ends.get_or_create(&WhatLabel { what }).inc();
    }

    #[cfg(feature = "cluster")]
    pub(crate) fn searched(&self, what: &'static str) {
        self.searches.get_or_create(&WhatLabel { what }).inc();
    }
}

/// Connections to the metrics endpoint served at once at most; past it, a new one is
/// closed at once (a scraper retries; nothing waits in memory for a slot).
pub const METRICS_CONNECTIONS: usize = 64;
/// Bytes a request's head may take at most (hyper's read buffer); a longer one ends its
/// connection.
pub const METRICS_HEAD_BYTES: usize = 16 * 1024;
/// Time a connection has to send its request's head, and in all, at most.
pub const METRICS_READ_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `metrics` on `listener` as an operator's scraper expects: Prometheus text at
/// `GET /metrics`, `ok` at `/healthz`, 404 elsewhere; one request per connection. Runs on
/// the caller's tokio runtime until the future is dropped, and never ends by itself: a
/// failed accept (no file descriptor left, say) is logged and tried again after a pause.
/// Memory and tasks are bounded: [`METRICS_CONNECTIONS`] connections at once, each with
/// a head of [`METRICS_HEAD_BYTES`] sent within [`METRICS_READ_TIME`].
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let metrics = peermsg_tokio::Metrics::new();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9100").await?;
/// tokio::spawn(peermsg_tokio::serve_metrics(listener, metrics.clone()));
/// // ... give `metrics` to the relay's ServerConfig.
/// # Ok(()) }
/// ```
pub async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Metrics) {
    let slots = Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, or a connection reset before it was taken:
                // the endpoint pauses rather than spin or stop.
                tracing::warn!(%error, "metrics endpoint cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream); // at the bound: closed at once
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = hyper::service::service_fn(move |request| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&metrics, &request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(METRICS_READ_TIME)
                .max_buf_size(METRICS_HEAD_BYTES)
                .keep_alive(false)
                .serve_connection(io, service);
            // A slow reader of the answer is cut off too.
            let _ = tokio::time::timeout(METRICS_READ_TIME, connection).await;
            drop(slot);
        });
    }
}

/// The answer to one request of the metrics endpoint.
fn answer<B>(
    metrics: &Metrics,
    request: &hyper::Request<B>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, body, kind) = match request.uri().path() {
        "/metrics" => (
            200,
            metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        "/healthz" => (200, "ok\n".to_string(), "text/plain"),
        _ => (404, "not found\n".to_string(), "text/plain"),
    };
    let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    if let Ok(kind) = hyper::header::HeaderValue::from_str(kind) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, kind);
    }
    response
}
