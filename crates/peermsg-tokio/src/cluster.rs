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
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use peermsg::relay::{ConnId, LinkSide, Relay, RelayError};
use peermsg::wire::{Transmit, UserId};
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

// Kinds of cluster message (docs/CLUSTER.md, "Messages").
const BYTES: u8 = 1;
const RESET: u8 = 2;
const OPEN: u8 = 3;
const KICK: u8 = 4;
const ALIVE: u8 = 5;
const ACCEPTED: u8 = 6;
const BUSY: u8 = 7;
const PROBE: u8 = 8;

/// A link's name in the cluster: the relay that opened it, that relay's run, its id there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LinkKey {
    node: String,
    run: u64,
    id: u64,
}

/// A relay's run: which process of that name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Relayed {
    node: String,
    run: u64,
}

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u8(s.len() as u8);
    out.put_slice(s.as_bytes());
}

fn get_str(b: &mut Bytes) -> Option<String> {
    let len = usize::from(*b.first()?);
    b.advance(1);
    if b.len() < len {
        return None;
    }
    String::from_utf8(b.split_to(len).to_vec()).ok()
}

fn get_u64(b: &mut Bytes) -> Option<u64> {
    (b.len() >= 8).then(|| b.get_u64())
}

/// A message's head: its kind and the relay (and run) that sent it.
fn head(out: &mut BytesMut, kind: u8, me: &Relayed) {
    out.put_u8(kind);
    put_str(out, &me.node);
    out.put_u64(me.run);
}

fn read_head(b: &mut Bytes) -> Option<(u8, Relayed)> {
    let kind = *b.first()?;
    b.advance(1);
    let node = get_str(b)?;
    let run = get_u64(b)?;
    Some((kind, Relayed { node, run }))
}

fn put_key(out: &mut BytesMut, key: &LinkKey) {
    put_str(out, &key.node);
    out.put_u64(key.run);
    out.put_u64(key.id);
}

fn get_key(b: &mut Bytes) -> Option<LinkKey> {
    Some(LinkKey {
        node: get_str(b)?,
        run: get_u64(b)?,
        id: get_u64(b)?,
    })
}

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

    /// Queues a message for the publisher; a full queue makes the message wait (a link's
    /// in order with the rest of that link's), and `link` pauses in the core.
    fn send(&mut self, relay: &mut Relay, link: Option<ConnId>, subject: String, payload: Bytes) {
        if let Some(m) = &self.metrics {
            m.nats(true, payload.len());
        }
        let wire = link.and_then(|l| self.links.get_mut(&l));
        match wire {
            Some(w) if !w.stalled.is_empty() => w.stalled.push_back((link, subject, payload)),
            Some(w) => match self.publish.try_send((link, subject, payload)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(msg)) => {
                    w.stalled.push_back(msg);
                    if let Some(l) = link {
                        relay.pause_writes(l);
                        self.wait_for_room(l);
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            },
            // Not a link's: a heartbeat, reset, kick or answer, small and rare; it waits in
            // a task of its own if it must, up to CONTROL_WAITING of them (past that NATS
            // has been stalled long enough for the links to end, and it is dropped).
            None => {
                if let Err(mpsc::error::TrySendError::Full(msg)) =
                    self.publish.try_send((None, subject, payload))
                {
                    let Ok(permit) = self.control_waiting.clone().try_acquire_owned() else {
                        tracing::warn!("NATS is not taking messages: a control message dropped");
                        return;
                    };
                    let publish = self.publish.clone();
                    tokio::spawn(async move {
                        let _ = publish.send(msg).await;
                        drop(permit);
                    });
                }
            }
        }
    }

    fn wait_for_room(&self, link: ConnId) {
        let (publish, inputs) = (self.publish.clone(), self.inputs.clone());
        tokio::spawn(async move {
            if let Ok(permit) = publish.reserve().await {
                drop(permit);
                let _ = inputs.send(ClusterInput::Room(link)).await;
            }
        });
    }

    /// A link's stalled messages go out as room allows; the link resumes once all did.
    fn drain_stalled(&mut self, relay: &mut Relay, link: ConnId) {
        let Some(w) = self.links.get_mut(&link) else {
            return;
        };
        while let Some(msg) = w.stalled.pop_front() {
            if let Err(mpsc::error::TrySendError::Full(msg)) = self.publish.try_send(msg) {
                w.stalled.push_front(msg);
                self.wait_for_room(link);
                return;
            }
        }
        relay.resume_writes(link);
    }

    /// Bytes the core wrote to a link: sent to the relay at its other end, cut to the
    /// server's `max_payload` and numbered; an outgoing link's first bytes search for its
    /// user's relay.
    pub(crate) fn transmit(&mut self, relay: &mut Relay, conn: ConnId, mut batch: Transmit) {
        let Some(w) = self.links.get_mut(&conn) else {
            if let Some((LinkSide::Outgoing, user)) = relay.link(conn) {
                let user = user.clone();
                self.search(conn, &user, batch);
            }
            return;
        };
        let Some(peer) = &w.peer else {
            w.early.push(batch);
            return;
        };
        let subject = node_subject(&peer.node);
        // Each message is copied once, from the core's frames into it.
        while batch.has_remaining() {
            let Some(w) = self.links.get_mut(&conn) else {
                return;
            };
            let n = batch.remaining().min(self.max_chunk);
            let mut msg = BytesMut::with_capacity(n + 200);
            head(&mut msg, BYTES, &self.me);
            put_key(&mut msg, &w.key);
            msg.put_u64(w.next_out);
            w.next_out += 1;
            msg.put((&mut batch).take(n));
            self.send(relay, Some(conn), subject.clone(), msg.freeze());
        }
    }

    /// Asks the cluster which relay has `user`, with the link's first bytes (its `HELLO`).
    fn search(&mut self, conn: ConnId, user: &UserId, first: Transmit) {
        let key = LinkKey {
            node: self.me.node.clone(),
            run: self.me.run,
            id: conn.0,
        };
        let mut msg = BytesMut::new();
        head(&mut msg, OPEN, &self.me);
        msg.put_u64(conn.0);
        msg.put(first);
        // The search carries the opener's bytes number 0.
        self.add_link(conn, LinkWire::new(key, None, 1, 0));
        if let Some(m) = &self.metrics {
            m.nats(true, msg.len());
        }
        let (client, inputs) = (self.client.clone(), self.inputs.clone());
        let subject = user_subject(user);
        let limit = self.config.search_timeout;
        let msg = msg.freeze();
        tokio::spawn(async move {
            use async_nats::RequestErrorKind;
            // Several NATS servers learn of a new subscription one after the other: no
            // responders there is asked again for a moment before it counts.
            let clustered = !client.server_info().connect_urls.is_empty();
            let started = crate::clock::tokio_now();
            let mut wait = Duration::from_millis(20);
            let asked = loop {
                let asked =
                    tokio::time::timeout(limit, client.request(subject.clone(), msg.clone())).await;
                let nobody =
                    matches!(&asked, Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders);
                if !(nobody
                    && clustered
                    && crate::clock::tokio_now() - started + wait <= INTEREST_SPREADS)
                {
                    break asked;
                }
                tokio::time::sleep(wait).await;
                wait *= 2;
            };
            let answer = match asked {
                Ok(Ok(reply)) => {
                    let mut b = reply.payload;
                    match read_head(&mut b) {
                        Some((ACCEPTED, relay)) => Ok(relay),
                        Some((BUSY, _)) => Err(ErrorCode::LIMIT_EXCEEDED),
                        _ => Err(ErrorCode::CONNECTIONLOST),
                    }
                }
                Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Err(ErrorCode::OFFLINE),
                // Without NATS nothing can be known of the user.
                _ if client.connection_state() != async_nats::connection::State::Connected => {
                    Err(ErrorCode::CONNECTIONLOST)
                }
                // A relay that has the user answers; one that lost it stays silent.
                Ok(Err(e)) if e.kind() == RequestErrorKind::TimedOut => Err(ErrorCode::OFFLINE),
                Err(_) => Err(ErrorCode::OFFLINE),
                Ok(Err(_)) => Err(ErrorCode::CONNECTIONLOST),
            };
            let _ = inputs.send(ClusterInput::Found(conn, answer)).await;
        });
    }

    /// The relay at a link's other end is known: what waited for it goes.
    fn peer_known(&mut self, relay: &mut Relay, conn: ConnId, peer: Relayed) {
        let Some(w) = self.links.get_mut(&conn) else {
            return;
        };
        if w.peer.is_some() {
            return;
        }
        w.peer = Some(peer);
        let early = std::mem::take(&mut w.early);
        for batch in early {
            self.transmit(relay, conn, batch);
        }
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

    fn on_node_message(&mut self, relay: &mut Relay, now: Instant, payload: Bytes) {
        let mut b = payload;
        let Some((kind, from)) = read_head(&mut b) else {
            return;
        };
        let Some(key) = get_key(&mut b) else {
            return;
        };
        let Some(conn) = self.by_key.get(&key).copied() else {
            // A link this relay no longer has: the other end is told.
            if kind == BYTES {
                self.reset(relay, &from.node, &key);
            }
            return;
        };
        // A user briefly on two relays may have both answer a search: the link goes on
        // with the first that did, and the other is told to drop its end.
        let peer = self.links.get(&conn).and_then(|w| w.peer.clone());
        if peer.as_ref().is_some_and(|p| p.node != from.node) {
            if kind == BYTES {
                self.reset(relay, &from.node, &key);
            }
            return;
        }
        match kind {
            BYTES => {
                let Some(seq) = get_u64(&mut b) else {
                    return;
                };
                let Some(w) = self.links.get_mut(&conn) else {
                    return;
                };
                // The same relay in a later run: the link's other end is gone.
                let stale = peer.is_some_and(|p| p.run != from.run);
                if seq != w.next_in || stale {
                    // A message was lost (or came from an earlier run): the link cannot
                    // go on, and its messages end at both ends.
                    tracing::warn!(link = conn.0, seq, want = w.next_in, "gap in a link");
                    self.end_link(relay, conn, "gap");
                    return;
                }
                w.next_in += 1;
                self.peer_known(relay, conn, from);
                relay.handle_input_buf(now, conn, BytesMut::from(b));
            }
            RESET => {
                if let Some(m) = &self.metrics {
                    m.link_ended("lost");
                }
                self.forget(conn);
                relay.handle_disconnect(conn);
            }
            _ => {}
        }
    }

    fn on_user_message(&mut self, relay: &mut Relay, now: Instant, user: UserId, msg: Message) {
        let mut b = msg.payload;
        let Some((kind, from)) = read_head(&mut b) else {
            return;
        };
        match kind {
            OPEN => {
                let (Some(reply), Some(id)) = (msg.reply, get_u64(&mut b)) else {
                    return;
                };
                let key = LinkKey {
                    node: from.node.clone(),
                    run: from.run,
                    id,
                };
                if self.by_key.contains_key(&key) {
                    return;
                }
                let answer = match relay.accept_link(now, &user) {
                    Ok(conn) => {
                        self.add_link(conn, LinkWire::new(key, Some(from), 0, 1));
                        relay.handle_input_buf(now, conn, BytesMut::from(b));
                        ACCEPTED
                    }
                    Err(RelayError::Links) => BUSY,
                    // Not here (any more): another relay may have the user, and answers.
                    Err(_) => return,
                };
                let mut out = BytesMut::new();
                head(&mut out, answer, &self.me);
                self.send(relay, None, reply.to_string(), out.freeze());
            }
            KICK if from.node != self.me.node => {
                let Some(at) = get_u64(&mut b) else {
                    return;
                };
                // The newer login stays (ties: the larger relay name).
                let older = self
                    .present
                    .get(&user)
                    .is_some_and(|p| p.since < at || (p.since == at && from.node > self.me.node));
                if older {
                    tracing::info!(%user, by = %from.node, "session replaced by a login on another relay");
                    relay.kick_user(&user);
                }
            }
            _ => {}
        }
    }

    /// Tells a relay that one of its links is gone here.
    fn reset(&mut self, relay: &mut Relay, node: &str, key: &LinkKey) {
        let mut msg = BytesMut::new();
        head(&mut msg, RESET, &self.me);
        put_key(&mut msg, key);
        self.send(relay, None, node_subject(node), msg.freeze());
    }

    /// Ends a link in the core (its messages end with `CONNECTIONLOST`) and tells the
    /// other end.
    fn end_link(&mut self, relay: &mut Relay, conn: ConnId, why: &'static str) {
        if let Some(m) = &self.metrics {
            m.link_ended(why);
        }
        self.drop_end(relay, conn);
        relay.handle_disconnect(conn);
    }

    /// Forgets this relay's end of a link and tells the other end (if it answered);
    /// `false` if the link was forgotten already.
    fn drop_end(&mut self, relay: &mut Relay, conn: ConnId) -> bool {
        let Some(w) = self.forget(conn) else {
            return false;
        };
        if let Some(peer) = &w.peer {
            self.reset(relay, &peer.node, &w.key);
        }
        true
    }

    fn end_links_with(&mut self, relay: &mut Relay, node: &str, why: &'static str) {
        let gone: Vec<ConnId> = self
            .links
            .iter()
            .filter(|(_, w)| w.peer.as_ref().is_some_and(|p| p.node == node))
            .map(|(c, _)| *c)
            .collect();
        for conn in gone {
            self.end_link(relay, conn, why);
        }
    }

    fn add_link(&mut self, conn: ConnId, wire: LinkWire) {
        self.by_key.insert(wire.key.clone(), conn);
        self.links.insert(conn, wire);
    }

    fn forget(&mut self, conn: ConnId) -> Option<LinkWire> {
        let w = self.links.remove(&conn)?;
        self.by_key.remove(&w.key);
        Some(w)
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

/// Forwards a subscription's messages to the relay's task, waiting for room.
fn forward(
    mut sub: Subscriber,
    inputs: mpsc::Sender<ClusterInput>,
    wrap: impl Fn(Message) -> ClusterInput + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if inputs.send(wrap(msg)).await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_subjects_carry_any_id() {
        let user = UserId::new("a.b *>c").unwrap();
        assert_eq!(user_subject(&user), "peermsg.user.612e62202a3e63");
    }

    #[test]
    fn names_that_a_subject_cannot_carry_are_refused() {
        for bad in ["", "a.b", "a b", "*", &"x".repeat(65)] {
            assert!(Cluster::new(vec!["nats://x".into()], bad).is_err(), "{bad}");
        }
        assert!(Cluster::new(vec![], "ok").is_err());
        assert!(Cluster::new(vec!["nats://x".into()], "relay-1_a").is_ok());
    }

    #[test]
    fn a_message_head_and_key_read_back() {
        let me = Relayed {
            node: "n1".into(),
            run: 7,
        };
        let key = LinkKey {
            node: "n2".into(),
            run: 9,
            id: peermsg::relay::LINK_BIT | 3,
        };
        let mut out = BytesMut::new();
        head(&mut out, BYTES, &me);
        put_key(&mut out, &key);
        out.put_u64(5);
        out.put_slice(b"xyz");
        let mut b = out.freeze();
        assert_eq!(read_head(&mut b), Some((BYTES, me)));
        assert_eq!(get_key(&mut b), Some(key));
        assert_eq!(get_u64(&mut b), Some(5));
        assert_eq!(&b[..], b"xyz");
        // Cut short anywhere, nothing is misread.
        let mut short = Bytes::from_static(&[BYTES, 5, b'a']);
        assert_eq!(read_head(&mut short), None);
    }
}
