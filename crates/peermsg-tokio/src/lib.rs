//! Runs [`peermsg`] over TCP (plain or TLS) with tokio.
//!
//! - [`connect`] logs a user in to a relay and returns a [`ClientHandle`], whose async
//!   methods mirror the SDK's calls, and a bounded channel of [`ClientEvent`]s
//!   ([`ClientEvents`]) about incoming messages: a delivery is confirmed to its sender only
//!   once its event is in that channel, so an application that stops reading stops its
//!   senders. Each send returns a [`SendHandle`]: `.await` it for that send's result; its
//!   progress and cancel are on it too. Files to send are read from disk by offset;
//!   received files go into a [`FileSink`] directory.
//! - [`serve`] runs a relay on a `TcpListener` until a shutdown future completes, checking
//!   logins with an [`Authenticator`] (signed tokens a backend mints, a token table, or
//!   anyone), within the limits of a [`ServerConfig`] (connections,
//!   connections per address, failed logins, write timeouts) and of the relay core's
//!   [`RelayConfig`] (held bytes, login deadline, progress). [`serve_with`] adds TLS and
//!   [`Metrics`] ([`Extras`]).
//! - [`connect_tls`] is [`connect`] over TLS; [`tls`] makes the configurations both ends
//!   need (a relay's certificate from PEM files, reloadable; a client's trust: the web's
//!   roots, a CA file or a pinned certificate).
//! - Signed login tokens: [`SignedTokens`] checks them at the relay, [`mint_hmac`] and
//!   [`mint_ed25519`] make them in an application's backend.
//!
//! Each client is one task that owns the socket and drives the state machine, which the
//! handle calls into under a short lock (so a burst of sends goes out in one write); the
//! relay is one task that owns the relay state machine and writes to every socket itself,
//! with a reader task per connection (and a flush task while a socket is full). Reads are
//! handed to the core without a copy and writes are vectored. The
//! core stays free of any runtime: this crate is where tokio lives.
//!
//! Features (all on by default): `tls` (TLS at both ends, [`tls`]; rustls, ring, rcgen),
//! `jwt` ([`SignedTokens`] and minting; jsonwebtoken),
//! `metrics` ([`Metrics`] and [`serve_metrics`]; prometheus-client and hyper), `cluster`
//! ([`Cluster`]; async-nats). A plain client needs none of them:
//! `peermsg-tokio = { default-features = false }`. Without a feature its types are still
//! named, but no value of them can exist.
//!
//! `examples/two_users.rs` is a relay and two users exchanging a command and a file in a
//! page (`cargo run -p peermsg-tokio --example two_users`).

#![warn(missing_docs)]

mod auth;
mod client;
mod clock;
#[cfg(feature = "cluster")]
mod cluster;
#[cfg(not(feature = "cluster"))]
#[path = "cluster_off.rs"]
mod cluster;
#[cfg(feature = "jwt")]
mod jwt;
#[cfg(feature = "metrics")]
mod metrics;
#[cfg(not(feature = "metrics"))]
#[path = "metrics_off.rs"]
mod metrics;
mod partial;
mod relay;
#[cfg(feature = "tls")]
mod relay_tls;
#[cfg(not(feature = "tls"))]
#[path = "relay_tls_off.rs"]
mod relay_tls;
mod relay_ws;
mod sink;
mod socket;
#[cfg(feature = "tls")]
pub mod tls;

#[allow(deprecated)]
pub use auth::Open;
pub use auth::{Authenticator, OpenAccess, TokenTable};
#[cfg(feature = "tls")]
pub use client::connect_tls;
pub use client::{
    connect, connect_with, file_resume_key, ClientBuilder, ClientEvent, ClientEvents, ClientHandle,
    ConnectError, Reconnect, SendFileError, SendHandle, SendProgress, Server, Waiting, EVENT_QUEUE,
};
pub use cluster::{Cluster, ClusterError};
#[cfg(feature = "jwt")]
pub use jwt::{mint_ed25519, mint_hmac, Claims, HmacSecret, ShortSecret, SignedTokens};
pub use metrics::Metrics;
#[cfg(feature = "metrics")]
pub use metrics::{serve_metrics, METRICS_CONNECTIONS, METRICS_HEAD_BYTES, METRICS_READ_TIME};
pub use relay::{
    raise_open_file_limit, serve, serve_with, Extras, ServerConfig, WebSocket, RESERVED_FILES,
};
#[cfg(feature = "tls")]
pub use rustls;
pub use sink::{
    is_bidi_control, sanitize_file_name, write_error_code, ArrivedFile, DoneRecord, FileSink, Kept,
    KeptLimits, SavedFile, RECORD_EVERY, RESUME_WINDOW,
};
pub use socket::UNSENT_LIMIT;

// The core's types this crate's API speaks in, so an application needs only this crate.
pub use peermsg::client::{ClientConfig, Event, ReceiveId, SendId, SendKind};
pub use peermsg::relay::RelayConfig;
pub use peermsg::wire::{ResumeKey, UserId};
pub use peermsg::{ActionError, ErrorCode, SendError};
