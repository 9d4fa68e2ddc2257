//! Several relays over NATS (docs/CLUSTER.md): the glue that carries the relay core's
//! links between relays. The core decides everything (which user is reached through which
//! link, credit, caps, the ends of messages); this module only moves a link's bytes in
//! NATS messages, finds the relay a user is logged in on, and notices what NATS cannot
//! say by itself: a lost message (a gap in a link's sequence), a relay that died (its
//! heartbeats stop), its own connection to NATS lost. Each of these ends the links it
//! touches in the core, whose messages then end with `CONNECTIONLOST` on both sides.
//!
//! Subjects (a user's id is hex-encoded, since ids may hold `.`, `*`, `>` or spaces):
//! - `peermsg.user.<hex id>`: subscribed by the relay the user is logged in on, while the
//!   user is there. A search is a request there (no responders: the user is offline at
//!   once); a new login elsewhere publishes there so the older session is closed.
//! - `peermsg.node.<relay>`: each relay's link bytes and link resets.
//! - `peermsg.relays`: every relay's heartbeat.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_nats::{Client, Message, Subscriber};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use peermsg::relay::{ConnId, Relay};
use peermsg::wire::{IdentityKey, Transmit, UserId};
use peermsg::{ErrorCode, Instant};
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// How a relay joins a cluster of relays over NATS, for [`Extras`](crate::Extras).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// NATS servers to connect to (`nats://host:port`); any one will do, the client
    /// moves to another when one fails.
    pub servers: Vec<String>,
    /// This relay's name in the cluster: unique, of letters, digits, `-` and `_`, at most
    /// 64 bytes.
    pub node: String,
    /// How often this relay tells the others it is alive. Default 500 ms.
    pub heartbeat: Duration,
    /// A relay not heard from for this long is taken for dead: the links to it end, and
    /// their senders get `CONNECTIONLOST`. With the defaults, senders to a relay that died
    /// learn it within 3 s. Default 2.5 s.
    pub dead_after: Duration,
    /// How long a search for a user's relay may take before the user counts as offline.
    /// (No relay has the user: answered at once.) Default 2 s.
    pub search_timeout: Duration,
}

/// Why a cluster configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The node name is empty, too long or has characters a subject cannot carry.
    #[error("a relay's name is 1 to 64 letters, digits, '-' or '_': {0:?}")]
    Name(String),
    /// No NATS server was given.
    #[error("no NATS server given")]
    NoServer,
    /// The NATS servers could not be reached.
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
}

impl Cluster {
    /// A relay named `node` joining the cluster behind `servers`, with the default
    /// timings.
    pub fn new(servers: Vec<String>, node: &str) -> Result<Self, ClusterError> {
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if node.is_empty() || node.len() > 64 || !node.chars().all(valid) {
            return Err(ClusterError::Name(node.to_string()));
        }
        if servers.is_empty() {
            return Err(ClusterError::NoServer);
        }
        Ok(Cluster {
            servers,
            node: node.to_string(),
            heartbeat: Duration::from_millis(500),
            dead_after: Duration::from_millis(2500),
            search_timeout: Duration::from_secs(2),
        })
    }
}

/// The subject a user's relay answers on.
fn user_subject(user: &UserId) -> String {
    let mut s = String::with_capacity(13 + 2 * user.as_bytes().len());
    s.push_str("peermsg.user.");
    for b in user.as_bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn node_subject(node: &str) -> String {
    format!("peermsg.node.{node}")
}

const RELAYS_SUBJECT: &str = "peermsg.relays";

mod inbound;
mod links;
mod msg;

use inbound::forward;
use msg::*;

/// What NATS tells the relay's task.
pub(crate) enum ClusterInput {
    /// On this relay's subject: link bytes or a reset.
    Node(Bytes),
    /// On a user's subject: a search (with its reply subject) or a newer login elsewhere.
    User(UserId, Message),
    /// A heartbeat.
    Alive(Bytes),
    /// A search for an outgoing link's user ended.
    Found(ConnId, Result<Relayed, ErrorCode>),
    /// A key lookup ended: the key the user's relay has for it, if any.
    KeyFound(ConnId, UserId, Option<IdentityKey>),
    /// A login's subscription is in place (or could not be made): the login is accepted,
    /// and what came on the user's subject meanwhile is handled.
    Subscribed(ConnId, UserId, Option<Subscriber>, Vec<Message>),
    /// The connection to NATS was lost.
    NatsDown,
    /// Room to publish for a link that had to wait.
    Room(ConnId),
    /// A link's message could not be published: the link cannot go on.
    Unsent(ConnId),
}

/// A message for the publisher task: its link, if it is a link's, its subject, itself.
type Publish = (Option<ConnId>, String, Bytes);

/// One link's wire: where its bytes go, and their sequence each way.
struct LinkWire {
    key: LinkKey,
    /// The relay at its other end, once known.
    peer: Option<Relayed>,
    next_out: u64,
    next_in: u64,
    /// Bytes made before the other relay was known.
    early: Vec<Transmit>,
    /// Messages waiting for room in the publisher's queue, in order.
    stalled: VecDeque<Publish>,
}

impl LinkWire {
    fn new(key: LinkKey, peer: Option<Relayed>, next_out: u64, next_in: u64) -> Self {
        LinkWire {
            key,
            peer,
            next_out,
            next_in,
            early: Vec::new(),
            stalled: VecDeque::new(),
        }
    }
}

/// A user logged in here: the task that forwards its subject, and since when.
struct Present {
    forwarder: JoinHandle<()>,
    since: u64,
}

/// How long a search that found no responders is asked again when the NATS servers form a
/// cluster (a new subscription reaches the other servers a moment after its own).
const INTEREST_SPREADS: Duration = Duration::from_millis(300);

/// Control messages (heartbeats, resets, kicks, answers) that may wait for room in the
/// publisher's queue at once.
const CONTROL_WAITING: usize = 256;

/// Messages waiting for the publisher task at most; past it a link waits (paused in the
/// core), and the rest of the relay goes on.
const PUBLISH_QUEUE: usize = 1024;

/// The cluster glue of one relay, owned by the relay's task.
pub(crate) struct Glue {
    config: Cluster,
    me: Relayed,
    client: Client,
    publish: mpsc::Sender<Publish>,
    /// Room for control messages waiting for the publisher's queue.
    control_waiting: Arc<Semaphore>,
    inputs: mpsc::Sender<ClusterInput>,
    links: HashMap<ConnId, LinkWire>,
    by_key: HashMap<LinkKey, ConnId>,
    present: HashMap<UserId, Present>,
    /// Other relays heard from: their run and when.
    relays: HashMap<String, (u64, tokio::time::Instant)>,
    /// Largest link payload in one message (the server's `max_payload` less the head).
    max_chunk: usize,
    metrics: Option<Metrics>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Glue {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for p in self.present.values() {
            p.forwarder.abort();
        }
    }
}

impl Glue {
    /// Connects to NATS and subscribes to this relay's subjects. NATS input comes on the
    /// returned channel, for [`Glue::handle`].
    pub(crate) async fn connect(
        config: Cluster,
        metrics: Option<Metrics>,
    ) -> Result<(Self, mpsc::Receiver<ClusterInput>), ClusterError> {
        let (inputs, rx) = mpsc::channel(1024);
        let down = inputs.clone();
        let client = async_nats::ConnectOptions::new()
            .name(format!("peermsg relay {}", config.node))
            // Its own server's death is noticed within two pings.
            .ping_interval(config.dead_after)
            .request_timeout(Some(config.search_timeout))
            .subscription_capacity(8192)
            .event_callback(move |event| {
                let down = down.clone();
                async move {
                    tracing::info!(%event, "NATS");
                    if matches!(event, async_nats::Event::Disconnected) {
                        let _ = down.send(ClusterInput::NatsDown).await;
                    }
                }
            })
            .connect(config.servers.as_slice())
            .await
            .map_err(|e| ClusterError::Connect(e.to_string()))?;
        let subscribe = |subject: String| {
            let client = client.clone();
            async move {
                client
                    .subscribe(subject)
                    .await
                    .map_err(|e| ClusterError::Connect(e.to_string()))
            }
        };
        let node_sub = subscribe(node_subject(&config.node)).await?;
        let alive_sub = subscribe(RELAYS_SUBJECT.to_string()).await?;
        let (publish, mut queue) = mpsc::channel::<Publish>(PUBLISH_QUEUE);
        let (publisher, unsent) = (client.clone(), inputs.clone());
        let mut tasks = vec![tokio::spawn(async move {
            // One publisher: NATS keeps the order of one connection's messages.
            while let Some((link, subject, payload)) = queue.recv().await {
                if let (Err(e), Some(link)) = (publisher.publish(subject, payload).await, link) {
                    tracing::warn!(link = link.0, "cannot publish: {e}");
                    let _ = unsent.send(ClusterInput::Unsent(link)).await;
                }
            }
        })];
        tasks.push(forward(node_sub, inputs.clone(), |m| {
            ClusterInput::Node(m.payload)
        }));
        tasks.push(forward(alive_sub, inputs.clone(), |m| {
            ClusterInput::Alive(m.payload)
        }));
        let head_room = 1 + 65 + 8 + 65 + 16 + 8;
        let max_chunk = client
            .server_info()
            .max_payload
            .saturating_sub(head_room)
            .max(1024);
        let run = crate::clock::unix_micros() ^ (u64::from(std::process::id()) << 40);
        let me = Relayed {
            node: config.node.clone(),
            run,
        };
        let glue = Glue {
            config,
            me,
            client,
            publish,
            control_waiting: Arc::new(Semaphore::new(CONTROL_WAITING)),
            inputs,
            links: HashMap::new(),
            by_key: HashMap::new(),
            present: HashMap::new(),
            relays: HashMap::new(),
            max_chunk,
            metrics,
            tasks,
        };
        Ok((glue, rx))
    }

    /// How often [`Glue::tick`] wants to run.
    pub(crate) fn heartbeat(&self) -> Duration {
        self.config.heartbeat
    }

    /// A login passed the authenticator: it is accepted once its user's subject is
    /// subscribed (so a search right after the login finds it).
    pub(crate) fn login(&self, conn: ConnId, user: UserId) {
        let (client, inputs) = (self.client.clone(), self.inputs.clone());
        let mut probe = BytesMut::new();
        head(&mut probe, PROBE, &self.me);
        probe.put_u64(conn.0);
        probe.put_u64(crate::clock::unix_micros());
        let probe = probe.freeze();
        let limit = self.config.search_timeout;
        tokio::spawn(async move {
            let subject = user_subject(&user);
            let mut early = Vec::new();
            let sub = match client.subscribe(subject.clone()).await {
                // The server has the subscription once a message published after it comes
                // back on it: a probe of this relay's own (flushing the socket is not
                // enough). Others' messages before it are kept for after the login.
                Ok(mut sub) => {
                    let _ = client.publish(subject, probe.clone()).await;
                    let _ = tokio::time::timeout(limit, async {
                        while let Some(msg) = sub.next().await {
                            if msg.payload == probe {
                                return;
                            }
                            early.push(msg);
                        }
                    })
                    .await;
                    Some(sub)
                }
                Err(_) => None,
            };
            let _ = inputs
                .send(ClusterInput::Subscribed(conn, user, sub, early))
                .await;
        });
    }

    /// NATS input and the glue's own notices.
    pub(crate) fn handle(&mut self, relay: &mut Relay, now: Instant, input: ClusterInput) {
        match input {
            ClusterInput::Node(payload) => {
                if let Some(m) = &self.metrics {
                    m.nats(false, payload.len());
                }
                self.on_node_message(relay, now, payload);
            }
            ClusterInput::User(user, msg) => {
                if let Some(m) = &self.metrics {
                    m.nats(false, msg.payload.len());
                }
                self.on_user_message(relay, now, user, msg);
            }
            ClusterInput::Alive(payload) => {
                let mut b = payload;
                if let Some((ALIVE, from)) = read_head(&mut b) {
                    if from.node != self.me.node {
                        let seen = crate::clock::tokio_now();
                        let before = self.relays.insert(from.node.clone(), (from.run, seen));
                        if before.is_some_and(|(run, _)| run != from.run) {
                            // The relay restarted: links to its last run are gone.
                            self.end_links_with(relay, &from.node, "peer_dead");
                        }
                    }
                }
            }
            ClusterInput::Found(conn, answer) => match answer {
                Ok(peer) => {
                    if let Some(m) = &self.metrics {
                        m.searched("found");
                    }
                    let chosen = self.links.get(&conn).and_then(|w| w.peer.clone());
                    match chosen {
                        // Another relay that has the user spoke first: this one drops
                        // its end.
                        Some(p) if p.node != peer.node => {
                            if let Some(key) = self.links.get(&conn).map(|w| w.key.clone()) {
                                self.reset(relay, &peer.node, &key);
                            }
                        }
                        _ => self.peer_known(relay, conn, peer),
                    }
                }
                Err(code) => {
                    if let Some(m) = &self.metrics {
                        m.searched(match code {
                            ErrorCode::OFFLINE => "offline",
                            ErrorCode::LIMIT_EXCEEDED => "busy",
                            _ => "failed",
                        });
                    }
                    // Only if no byte came from a relay meanwhile (it then has the user).
                    if self.links.get(&conn).is_some_and(|w| w.peer.is_none()) {
                        self.forget(conn);
                        relay.link_failed(conn, code);
                    }
                }
            },
            ClusterInput::KeyFound(conn, user, key) => relay.answer_key(conn, user, key),
            ClusterInput::Subscribed(conn, user, sub, early) => {
                if relay.accept_login(conn).is_err() {
                    return; // gone meanwhile; the subscription ends with `sub`
                }
                if relay.user_session(&user) != Some(conn) {
                    return; // a send-only session: it answers no search
                }
                let since = crate::clock::unix_micros();
                if let Some(sub) = sub {
                    let name = user.clone();
                    let forwarder = forward(sub, self.inputs.clone(), move |m| {
                        ClusterInput::User(name.clone(), m)
                    });
                    let present = Present { forwarder, since };
                    if let Some(old) = self.present.insert(user.clone(), present) {
                        old.forwarder.abort();
                    }
                }
                // An older session of the user on another relay is closed.
                let mut msg = BytesMut::new();
                head(&mut msg, KICK, &self.me);
                msg.put_u64(since);
                self.send(relay, None, user_subject(&user), msg.freeze());
                for msg in early {
                    self.on_user_message(relay, now, user.clone(), msg);
                }
            }
            ClusterInput::NatsDown => {
                let all: Vec<ConnId> = self.links.keys().copied().collect();
                for conn in all {
                    self.end_link(relay, conn, "nats_down");
                }
            }
            ClusterInput::Room(conn) => self.drain_stalled(relay, conn),
            ClusterInput::Unsent(conn) => self.end_link(relay, conn, "gap"),
        }
    }

    /// The core closed a connection: a link's other end is told (its `CLOSE`, if the core
    /// sent one, went first).
    pub(crate) fn closed(&mut self, relay: &mut Relay, conn: ConnId) {
        if !conn.is_link() {
            return;
        }
        if self.drop_end(relay, conn) {
            if let Some(m) = &self.metrics {
                m.link_ended("closed");
            }
        }
    }

    /// A user's session left this relay: it answers no more searches for the user.
    pub(crate) fn user_offline(&mut self, user: &UserId) {
        if let Some(p) = self.present.remove(user) {
            p.forwarder.abort();
        }
    }

    /// Every heartbeat: this relay's own goes out, and links to relays not heard from
    /// for `dead_after` end.
    pub(crate) fn tick(&mut self, relay: &mut Relay) {
        let mut msg = BytesMut::new();
        head(&mut msg, ALIVE, &self.me);
        self.send(relay, None, RELAYS_SUBJECT.to_string(), msg.freeze());
        let now = crate::clock::tokio_now();
        let limit = self.config.dead_after;
        let dead: Vec<String> = self
            .relays
            .iter()
            .filter(|(_, (_, seen))| now.duration_since(*seen) > limit)
            .map(|(node, _)| node.clone())
            .collect();
        for node in dead {
            tracing::warn!(%node, "relay not heard from: taken for dead");
            self.relays.remove(&node);
            self.end_links_with(relay, &node, "peer_dead");
        }
        // A link whose other relay never sent a heartbeat is judged by the same rule.
        let silent: Vec<Relayed> = self
            .links
            .values()
            .filter_map(|w| w.peer.clone())
            .filter(|p| !self.relays.contains_key(&p.node))
            .collect();
        for peer in silent {
            self.relays.entry(peer.node).or_insert((peer.run, now));
        }
        if let Some(m) = &self.metrics {
            m.peer_relays(self.relays.len());
        }
    }

    /// Lets the last messages out before the relay stops.
    pub(crate) async fn flush(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.flush()).await;
    }
}
