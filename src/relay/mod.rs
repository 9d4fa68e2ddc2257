//! The relay: the server between clients, as a sans-IO state machine over many connections.
//!
//! The runtime opens a connection ([`Relay::open`]) with an id of its choosing, hands it
//! bytes ([`Relay::handle_input`]), reports transports that closed
//! ([`Relay::handle_disconnect`]) and the passing of time ([`Relay::handle_timeout`]), and
//! after any input calls [`Relay::poll_output`] until it says to wait: it gives frames for
//! a connection (write them to its transport), events (answer [`RelayEvent::Login`] with
//! [`Relay::accept_login`] or [`Relay::reject_login`]), or the next deadline. A transport
//! that cannot take more is paused ([`Relay::pause_writes`]) until it can
//! ([`Relay::resume_writes`]): its frames wait in the relay, within its bounds.
//!
//! What the relay guarantees: nothing but login before login, and that within a deadline;
//! the source of every message stamped from the session; an offline target answered with
//! `OFFLINE` at once; no receiver sent more than the caps it announced (messages over them
//! wait, in turns across senders: `admission.rs`); credit passed end to end, so the bytes
//! it holds for a transfer never exceed the window it granted the sender; every byte it
//! holds promised from a budget (see [`RelayConfig`] and PROTOCOL.md, "What a relay
//! holds"), so a sender waits rather than being refused; a peer that breaks a rule closed
//! without touching anyone else's messages.
//!
//! Where things live: the public calls and the timer table (`handle_timeout`) here; each
//! connection's session, the dispatch of every frame from a client and a connection's end
//! in `session.rs` (its input, handshake and credit are the shared connection layer's,
//! `crate::conn`); routing (new messages, the receivers' caps, ends of messages) in
//! `router.rs`; a forwarded message's pieces, held frames and credit translation in
//! `route.rs` (`Relay::move_on` and `Relay::pass` are the one place bytes go from a sender
//! to a receiver); what the relay holds, and what it may grant, in `budget.rs`
//! (`Relay::bytes_left` is the one place held bytes go down); turns across senders in
//! `admission.rs`; the queue toward each connection in `out_queue.rs`; links to the other
//! relays of a cluster (a remote user is a connection like a local one) in `link.rs`
//! ([`LinkSide`], docs/CLUSTER.md). Routing a frame and
//! finding writable connections cost O(log n) in the number of connections (ordered maps)
//! and O(1) in everything else.

mod admission;
mod budget;
mod link;
mod out_queue;
mod route;
mod router;
mod session;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use bytes::{Bytes, BytesMut};
use core::time::Duration;

use crate::conn::arrival::Arrival;
use crate::conn::credit::RecvWindow;
use crate::conn::ids::IdSpace;
use crate::conn::{self, CloseReason, Session, Violation};
use crate::seq_map::{SeqKey, SeqMap};
use crate::wire::{
    self, Cancel, Close, Cmd, CmdCont, ConnCredit, Credit, Data, Frame, FrameSink, Hello, Limits,
    LoginResult, MessageId, MessageResult, Open, ResumeFrom, Role, Text, UserId,
};
use crate::{ErrorCode, Instant};
use admission::Admission;
use link::Link;
pub use link::{LinkSide, LINK_BIT};
use out_queue::{detach_payload, payload_len, OutQueue};

/// The connection credit a relay's `HELLO` announces: what a sender may send before its
/// login is accepted and the rest of its window is granted (docs/PROTOCOL.md, "What a relay
/// holds").
pub const INITIAL_CONN_CREDIT: u64 = wire::CREDIT_STEP;

/// A connection, named by the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl ConnId {
    /// `true` for a link to another relay of a cluster (the relay's own ids, with
    /// [`LINK_BIT`] set), `false` for a client's connection, named by the runtime.
    pub const fn is_link(self) -> bool {
        self.0 & LINK_BIT != 0
    }
}

/// The relay's configuration. Every bound on what the relay holds is here; PROTOCOL.md
/// ("Relays", "What a relay holds") states how they combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    /// What the relay accepts from each client. Default: [`Limits::default`].
    pub limits: Limits,
    /// Commands a client may have in flight through the relay, waiting ones included.
    /// Default 64.
    pub max_cmds_in_flight: u64,
    /// Transfers a client may have open through the relay, waiting ones included.
    /// Default 16.
    pub max_transfers: u64,
    /// Bytes of one transfer a sender may send beyond what its receiver has granted: the
    /// most the relay holds for that transfer. Default 512 KiB.
    pub transfer_window: u64,
    /// Message bytes (commands and data) from one sender that the relay holds at most:
    /// the connection credit it grants. Default 1 MiB.
    pub conn_window: u64,
    /// Message bytes queued toward one receiver's transport at most, for commands and for
    /// data each (so a command never waits for room behind data); the rest waits in the
    /// relay, counted against its senders' `conn_window`. Default 1 MiB.
    pub receiver_queue: u64,
    /// Bytes of frames of any kind queued toward one connection before the relay gives up
    /// on it as a peer that does not read (it is closed with `LIMIT_EXCEEDED`). Messages
    /// are bounded by `receiver_queue`; this bounds answers (`PONG`, credit, results) to a
    /// peer that only writes. Default 4 MiB.
    pub max_queued_bytes: u64,
    /// Message bytes held across all connections above which the relay stops granting
    /// senders connection credit until bytes leave: senders wait, nobody is refused.
    /// Default 256 MiB.
    pub max_held_bytes: u64,
    /// Close a connection after this long without a whole frame from it. Default 60 s.
    pub idle_timeout: Duration,
    /// Close a connection not logged in this long after it was opened, whatever it sends.
    /// Default 10 s.
    pub login_timeout: Duration,
    /// Frames a connection may send before its login is accepted (`HELLO`, `LOGIN`, a few
    /// `PING`s need no more); past it, it is closed with `LIMIT_EXCEEDED`, so a flood
    /// before login costs the relay little. Default 64.
    pub max_frames_before_login: u32,
    /// End a message forwarded to its receiver that moves no byte and gets no credit for
    /// this long: `RESULT(SOCKETTIMEOUT)` to its sender, `CANCEL(SOCKETTIMEOUT)` to its
    /// receiver. Messages still waiting for a slot at the receiver do not time out.
    /// `None` turns it off. Default 60 s.
    pub progress_timeout: Option<Duration>,
    /// Most bytes one `poll_transmit` call appends (at least one frame). Default 256 KiB.
    pub transmit_batch: usize,
    /// One relay of a cluster: a message to a user not logged in here goes out on a link
    /// to the relay that has the user (see [`LinkSide`] and docs/CLUSTER.md), not
    /// answered `OFFLINE` at once. Default `false`.
    pub cluster: bool,
    /// Connection credit granted to all incoming links together at most (beyond each
    /// link's first 64 KiB): what the other relays may send this one before it reads.
    /// Default 8 MiB.
    pub max_link_bytes: u64,
    /// The transfer window of a message that crosses a link (in place of
    /// `transfer_window` at both relays): links cross a slower path, and a sender's bytes
    /// in flight are at most this beyond what its receiver took. Default 4 MiB: over NATS
    /// a 1 GiB file across two relays took 3.3-3.5 s with 1 MiB, 2.8-3.0 s with 4 MiB
    /// (docs/PERFORMANCE.md); what all links may have in flight toward a relay is still
    /// bounded by `max_link_bytes`.
    pub link_window: u64,
    /// Incoming links open at once at most. With `max_link_bytes`, what the other
    /// relays may have in flight toward this one is at most `max_link_bytes + max_links x
    /// 64 KiB` (16 MiB by default). Default 128.
    pub max_links: usize,
    /// Outgoing links one sending user's messages may have opened and open at once. A
    /// user at the bound first closes those of its links with no message on them; if none
    /// is idle, its message to yet another remote user is refused with `LIMIT_EXCEEDED`.
    /// So no user can fill the other relays' `max_links` (docs/CLUSTER.md). Default 8.
    pub max_links_per_sender: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            limits: Limits::default(),
            max_cmds_in_flight: 64,
            max_transfers: 16,
            transfer_window: 512 * 1024,
            conn_window: 1 << 20,
            receiver_queue: 1 << 20,
            max_queued_bytes: 4 << 20,
            max_held_bytes: 256 << 20,
            idle_timeout: Duration::from_secs(60),
            login_timeout: Duration::from_secs(10),
            max_frames_before_login: 64,
            progress_timeout: Some(Duration::from_secs(60)),
            transmit_batch: 256 * 1024,
            cluster: false,
            max_link_bytes: 8 << 20,
            link_window: 4 << 20,
            max_links: 128,
            max_links_per_sender: 8,
        }
    }
}

/// What the application hears from the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayEvent {
    /// A client asks to log in: answer with [`Relay::accept_login`] or
    /// [`Relay::reject_login`].
    Login {
        /// The connection.
        conn: ConnId,
        /// The user it claims to be.
        user: UserId,
        /// Its credentials.
        token: Bytes,
    },
    /// A message through the relay is over, by its result, a cancel, a lost connection or
    /// a timeout, or refused at once (an offline target, a limit): for logs and counters
    /// (one per message; the runtime need not answer).
    MessageEnded {
        /// Its sender.
        from: UserId,
        /// Its receiver.
        to: UserId,
        /// A command (else a buffer or file).
        cmd: bool,
        /// Its declared size.
        size: u64,
        /// The result its sender got (or, for a cancel, the code given to its receiver).
        code: ErrorCode,
    },
    /// A user's session on this relay now takes its messages (with
    /// [`RelayConfig::cluster`] only): a relay of a cluster answers the others' search for
    /// the user from now on.
    UserOnline {
        /// The user.
        user: UserId,
    },
    /// A client asked for the identity key of a user who is not logged in here (with
    /// [`RelayConfig::cluster`] only): ask the relay the user is on
    /// ([`Relay::user_key`] there) and answer with [`Relay::answer_key`].
    KeyWanted {
        /// The connection that asked.
        conn: ConnId,
        /// Whose key.
        user: UserId,
    },
    /// A user's session left this relay (with [`RelayConfig::cluster`] only).
    UserOffline {
        /// The user.
        user: UserId,
    },
    /// A connection is over; the runtime drops its transport after the last
    /// `poll_transmit`.
    Closed {
        /// The connection.
        conn: ConnId,
        /// Who was logged in on it.
        user: Option<UserId>,
        /// The code of the close.
        code: ErrorCode,
        /// Who closed it and why.
        reason: CloseReason,
    },
}

/// What the relay wants of its runtime next; see [`Relay::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayOutput {
    /// This many bytes for this connection were appended to the sink: write them to its
    /// transport.
    Transmit(ConnId, usize),
    /// An event for the application.
    Event(RelayEvent),
    /// Nothing more until input comes or this time passes (then call
    /// [`Relay::handle_timeout`]).
    Timeout(Instant),
    /// Nothing more until input comes.
    Idle,
}

/// Why a relay call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The connection id is in use.
    #[error("connection id already open")]
    InUse,
    /// No such open connection, or no login pending on it.
    #[error("unknown connection or no login pending")]
    Unknown,
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(#[from] wire::LimitsError),
    /// The transfer window (or the link window) is under the credit step (64 KiB), or the
    /// connection window is under the transfer window: senders could stall.
    #[error("transfer_window and link_window must be at least 64 KiB and conn_window at least transfer_window")]
    Windows,
    /// `receiver_queue` is zero, or `max_queued_bytes` is under what an honest receiver's
    /// queue may hold (twice `receiver_queue` and four frames): it would be closed as a
    /// peer that does not read.
    #[error("receiver_queue must be at least 1 and max_queued_bytes at least 2 x receiver_queue + 4 frames")]
    Queues,
    /// A link was asked for a user who has no session here.
    #[error("the user is not logged in on this relay")]
    Offline,
    /// [`RelayConfig::max_links`] incoming links are open.
    #[error("too many links from other relays")]
    Links,
}

/// A route's name in the relay, distinct from the message ids of either end (which the
/// route translates between).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct RouteKey(u64);

impl SeqKey for RouteKey {
    fn seq(self) -> u64 {
        self.0
    }
    fn from_seq(seq: u64) -> Self {
        RouteKey(seq)
    }
}

/// A message on its way from one connection to another.
#[derive(Debug)]
struct Route {
    src: ConnId,
    src_id: MessageId,
    dst: ConnId,
    /// Its sender's and receiver's users, for the report of its end.
    from: UserId,
    to: UserId,
    /// Its id toward the receiver, given when a slot at the receiver is free; `None` while
    /// it waits for one (nothing of it has been forwarded yet).
    dst_id: Option<MessageId>,
    /// Frames from the sender not yet forwarded, in order: the `CMD`/`OPEN` itself while
    /// the message waits for a slot, then fragments and `DATA`/`END` waiting for the
    /// receiver's credit or queue room. Ids are the sender's until forwarded.
    held: VecDeque<Frame>,
    /// The receiver's credit for this transfer (absolute offset).
    dst_credit: u64,
    /// `DATA` bytes forwarded to the receiver: with its `transfer_window`, the most credit
    /// it may grant.
    forwarded: u64,
    /// The credit granted to the sender.
    src_credit: u64,
    /// Waiting in the receiver's blocked list.
    blocked: bool,
    /// Its size and what of it came from the sender, checked by the rules its receiver
    /// keeps (so nothing forwarded can make the receiver close).
    arrival: Arrival,
    /// A `CANCEL` went to the receiver after the sender's `END` (the sender's own, or the
    /// relay's on a progress timeout): the receiver's `RESULT` says which came first, the
    /// cancel or its delivery, and ends the route.
    cancelling: bool,
    /// When a byte last moved toward the receiver or the receiver last granted credit.
    last_progress: Instant,
    /// Its `OPEN` carried a resume key: the receiver's `RESUME_FROM` comes before any
    /// `DATA`, and says where the data continues.
    awaiting_resume: bool,
}

/// Which end of a route hears that it ended, and with what code.
enum Tell {
    Receiver(ErrorCode),
    Sender(ErrorCode),
    Both(ErrorCode),
}

/// The relay's timers, one table; each entry is checked against the state when it fires
/// (an entry whose deadline moved is put back at the new one), so input never has to
/// find and move an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Idle(ConnId),
    Login(ConnId),
    /// Messages forwarded to this receiver that may have stopped moving: one entry per
    /// receiver, not per message, so a message costs the table nothing.
    Progress(ConnId),
}

#[derive(Debug)]
struct Conn {
    /// Input, handshake, the client's state, connection credit both ways.
    session: Session,
    out: OutQueue,
    /// Listed for `poll_output`.
    writable: bool,
    /// Its transport is full (the runtime said so): not listed until resumed.
    paused: bool,
    opened: Instant,
    /// Its idle entry in the timer table.
    idle_at: Instant,
    /// Its progress entry in the timer table, while messages are forwarded to it.
    progress_at: Option<Instant>,
    /// Frames received before the login was accepted.
    frames_before_login: u32,
    // As a sender: its messages' routes by its ids. Its connection credit (in `session`)
    // counts bytes released once written toward their receiver, or dropped; none is
    // usable before login.
    inbound: IdSpace<RouteKey>,
    cmds_in: u64,
    transfers_in: u64,
    /// Owed a connection grant that the global budget held back.
    owed: bool,
    // As a receiver: the routes forwarded to it, by the ids the relay gave them.
    outbound: IdSpace<RouteKey>,
    cmds_out: u64,
    transfers_out: u64,
    waiting_cmds: Admission,
    waiting_transfers: Admission,
    blocked: VecDeque<RouteKey>,
    /// Ids given to messages toward it whose first frame has not gone yet: a message's
    /// first frame goes only once every lower id's has (`Relay::pass`), since a peer takes
    /// new ids in order only.
    unstarted: BTreeSet<MessageId>,
    /// A link to another relay of a cluster (`link.rs`).
    link: Option<Link>,
    /// Users whose keys it asked for that are being looked up on other relays of the
    /// cluster (at most [`KEY_LOOKUPS`]).
    key_lookups: Vec<UserId>,
}

impl Conn {
    fn new(session: Session, now: Instant, idle_timeout: Duration) -> Self {
        Conn {
            session,
            out: OutQueue::default(),
            writable: false,
            paused: false,
            opened: now,
            idle_at: now + idle_timeout,
            progress_at: None,
            frames_before_login: 0,
            inbound: IdSpace::new(),
            cmds_in: 0,
            transfers_in: 0,
            owed: false,
            outbound: IdSpace::new(),
            cmds_out: 0,
            transfers_out: 0,
            waiting_cmds: Admission::default(),
            waiting_transfers: Admission::default(),
            blocked: VecDeque::new(),
            unstarted: BTreeSet::new(),
            link: None,
            key_lookups: Vec::new(),
        }
    }

    fn is_link(&self, side: LinkSide) -> bool {
        self.link.as_ref().is_some_and(|l| l.side == side)
    }

    /// Messages from or to it under way, or waiting for a slot at it.
    fn has_messages(&self) -> bool {
        self.inbound.values().next().is_some()
            || self.outbound.values().next().is_some()
            || !self.waiting_cmds.is_empty()
            || !self.waiting_transfers.is_empty()
    }
}

/// The relay server's state machine. See the [module documentation](self).
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    conns: BTreeMap<ConnId, Conn>,
    users: BTreeMap<UserId, ConnId>,
    /// Messages being forwarded, by key (handed out in order: `next_route`).
    /// Boxed: a route moves into and out of the map as a pointer, not a 200-byte copy.
    routes: SeqMap<RouteKey, Box<Route>>,
    next_route: u64,
    writable: VecDeque<ConnId>,
    events: VecDeque<RelayEvent>,
    timers: BTreeSet<(Instant, Timer)>,
    /// The latest time handed in.
    now: Instant,
    /// Message payload bytes held: in routes and in connections' queues.
    held: u64,
    /// Connection credit granted to senders and not yet released: what they may make the
    /// relay hold. Kept under `max_held_bytes`, but for each sender's first 64 KiB.
    promised: budget::Promised,
    /// Senders owed a connection grant that the budget held back, oldest first.
    owed: VecDeque<ConnId>,
    /// Sessions logged in now (full and send-only).
    logged_in: usize,
    /// Frames passed from a sender to a receiver, ever.
    forwarded: u64,
    /// Outgoing links, by the remote user they stand for.
    remote: BTreeMap<UserId, ConnId>,
    /// Outgoing links open, by the sending user whose message opened them.
    links_opened: BTreeMap<UserId, BTreeSet<ConnId>>,
    /// Incoming links, by the local user they go to.
    links_in: BTreeMap<UserId, BTreeSet<ConnId>>,
    incoming_links: usize,
    next_link: u64,
    /// Incoming links owed a grant the link budget held back, oldest first.
    owed_links: VecDeque<ConnId>,
}

/// What a relay is doing, for an operator's metrics; see [`Relay::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Connections open.
    pub connections: usize,
    /// Sessions logged in.
    pub logged_in: usize,
    /// Messages under way (commands and transfers, waiting or forwarded).
    pub messages: usize,
    /// Message bytes held (see [`Relay::held_bytes`]).
    pub held_bytes: u64,
    /// What it may hold: [`RelayConfig::max_held_bytes`].
    pub held_budget: u64,
    /// Frames passed from senders to receivers since the relay started.
    pub frames_forwarded: u64,
    /// Connection credit granted to incoming links whose bytes have not left this relay:
    /// what the other relays of a cluster may have in flight toward it or held in it (at
    /// most [`RelayConfig::max_link_bytes`] and 64 KiB per incoming link).
    pub link_credit: u64,
    /// Links to and from other relays open.
    pub links: usize,
}

impl Relay {
    /// A relay with no connections.
    pub fn new(config: RelayConfig) -> Result<Self, RelayError> {
        config.limits.validate()?;
        if config.transfer_window < wire::CREDIT_STEP
            || config.conn_window < config.transfer_window
            || config.link_window < wire::CREDIT_STEP
        {
            return Err(RelayError::Windows);
        }
        let honest_queue = config
            .receiver_queue
            .saturating_mul(2)
            .saturating_add(4 * config.limits.max_frame_size);
        if config.receiver_queue == 0 || config.max_queued_bytes < honest_queue {
            return Err(RelayError::Queues);
        }
        Ok(Relay {
            config,
            conns: BTreeMap::new(),
            users: BTreeMap::new(),
            routes: SeqMap::new(),
            next_route: 0,
            writable: VecDeque::new(),
            events: VecDeque::new(),
            timers: BTreeSet::new(),
            now: Instant::ZERO,
            held: 0,
            promised: budget::Promised::default(),
            owed: VecDeque::new(),
            logged_in: 0,
            forwarded: 0,
            remote: BTreeMap::new(),
            links_opened: BTreeMap::new(),
            links_in: BTreeMap::new(),
            incoming_links: 0,
            next_link: 0,
            owed_links: VecDeque::new(),
        })
    }

    // ----- Connections ---------------------------------------------------------------

    /// A new transport: its `HELLO` is the first thing `poll_transmit` gives for it. Ids
    /// with [`LINK_BIT`] set are the relay's own (links) and refused.
    pub fn open(&mut self, now: Instant, conn: ConnId) -> Result<(), RelayError> {
        // Ids with the link bit are the relay's own.
        if self.conns.contains_key(&conn) || conn.is_link() {
            return Err(RelayError::InUse);
        }
        self.tick(now);
        // Nothing is usable before login (the HELLO's announced credit comes with it).
        let recv = RecvWindow::new(self.config.conn_window, 0);
        let session = Session::new(self.config.limits, recv, now)?;
        let state = Conn::new(session, now, self.config.idle_timeout);
        self.conns.insert(conn, state);
        self.timers
            .insert((now + self.config.idle_timeout, Timer::Idle(conn)));
        self.timers
            .insert((now + self.config.login_timeout, Timer::Login(conn)));
        let hello = self.hello();
        self.push(conn, Frame::Hello(hello));
        Ok(())
    }

    /// What to write to a transport the runtime will not serve (over a connection limit,
    /// say) before closing it: the relay's `HELLO` and a `CLOSE` with `code` and `reason`,
    /// so the client reports why. The relay keeps no state for it.
    pub fn refusal(&self, code: ErrorCode, reason: &str) -> BytesMut {
        let mut out = BytesMut::new();
        let close = Close {
            code,
            reason: Text::from(reason),
        };
        for frame in [Frame::Hello(self.hello()), Frame::Close(close)] {
            // Both within the relay's own limits (a reason too long is cut by `Text`).
            let _ = out.put_frame(&frame);
        }
        out
    }

    /// Bytes from `conn`'s transport, split anywhere; they are copied.
    pub fn handle_input(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session.push_slice(bytes);
            self.decode_input(now, conn);
        }
    }

    /// Like [`Relay::handle_input`], but takes the runtime's buffer: payloads are forwarded
    /// as slices of it, not copied (see [`wire::Inbox`]).
    pub fn handle_input_buf(&mut self, now: Instant, conn: ConnId, bytes: BytesMut) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session.push_owned(bytes);
            self.decode_input(now, conn);
        }
    }

    fn decode_input(&mut self, now: Instant, conn: ConnId) {
        self.tick(now);
        // Relays talk to relays on links only.
        let clients_only = |role: Role| role == Role::Client;
        let relays_only = |role: Role| role == Role::Relay;
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let roles = match c.link {
                Some(_) => relays_only,
                None => clients_only,
            };
            // Only a whole frame counts as hearing from the peer (the session's rule): a
            // trickle of partial frames does not keep a connection alive.
            let frame = match c.session.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => return self.violation(conn, Violation::Decode(e)),
            };
            match c.session.admit(now, &frame, roles) {
                Ok(false) => self.handle_frame(conn, frame),
                Ok(true) => self.link_greeted(conn),
                Err(violation) => return self.violation(conn, violation),
            }
        }
    }

    /// Closes `conn` from the relay's side: a `CLOSE` with `code` (for example `SHUTDOWN`)
    /// goes out, and its messages end on the other side as if it had dropped.
    pub fn close(&mut self, conn: ConnId, code: ErrorCode) {
        self.shut(conn, code, CloseReason::Local, true);
    }

    /// Every open connection, for closing them all at shutdown.
    pub fn connection_ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.conns.keys().copied()
    }

    /// `conn`'s transport closed.
    pub fn handle_disconnect(&mut self, conn: ConnId) {
        // Nothing more can be written to it: what waited for its transport goes now, and
        // `poll_output` never gives its frames to a runtime that dropped the transport.
        self.drop_output(conn);
        self.shut(
            conn,
            ErrorCode::CONNECTIONLOST,
            CloseReason::TransportLost,
            false,
        );
    }

    /// The passing of time: idle connections, connections not logged in by their
    /// deadline, and forwarded messages that stopped moving are ended.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        while let Some(&(deadline, timer)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Idle(conn) => {
                    let Some(c) = self.conns.get_mut(&conn) else {
                        continue;
                    };
                    // A link is idle when no message is on it (its far end may say
                    // nothing for long while a message waits there for a slot); an
                    // incoming link waits twice as long, so its sender's relay, which
                    // closes first, is never cut off mid-message.
                    let idle = self.config.idle_timeout;
                    let due = match &c.link {
                        Some(_) if c.has_messages() => now + idle,
                        Some(l) if l.side == LinkSide::Incoming => {
                            c.session.last_heard() + idle.saturating_mul(2)
                        }
                        _ => c.session.last_heard() + idle,
                    };
                    if due > now {
                        c.idle_at = due;
                        self.timers.insert((due, timer));
                    } else {
                        self.shut(
                            conn,
                            ErrorCode::SOCKETTIMEOUT,
                            CloseReason::IdleTimeout,
                            true,
                        );
                    }
                }
                Timer::Login(conn) => {
                    let Some(c) = self.conns.get(&conn) else {
                        continue;
                    };
                    // A connection id the runtime reused after this entry was made has a
                    // later deadline of its own.
                    if c.session.user().is_none() && c.opened + self.config.login_timeout <= now {
                        self.shut(
                            conn,
                            ErrorCode::SOCKETTIMEOUT,
                            CloseReason::LoginTimeout,
                            true,
                        );
                    }
                }
                Timer::Progress(conn) => self.check_progress(conn, now),
            }
        }
    }

    /// Lets a pending login in. A session of the same user elsewhere is closed with
    /// `KICKOUT_BY_RELOGIN`, unless this one is send-only (its `HELLO` sets
    /// [`Capabilities::SEND_ONLY`](wire::Capabilities::SEND_ONLY)): it then sits beside the
    /// user's session, and messages to the user still go to that one.
    pub fn accept_login(&mut self, conn: ConnId) -> Result<(), RelayError> {
        let c = self.conns.get_mut(&conn).ok_or(RelayError::Unknown)?;
        let user = c.session.accept_login().ok_or(RelayError::Unknown)?;
        self.logged_in += 1;
        let send_only = c
            .session
            .peer()
            .is_some_and(|h| h.capabilities.contains(wire::Capabilities::SEND_ONLY));
        // The credit its HELLO announced becomes usable now; the rest of the window comes
        // from the budget.
        c.session.recv.set_granted(INITIAL_CONN_CREDIT);
        self.promised.add(false, INITIAL_CONN_CREDIT);
        // A send-only session takes over no inbox: it is not the user's address.
        let replaced = if send_only {
            None
        } else {
            if self.config.cluster {
                self.events
                    .push_back(RelayEvent::UserOnline { user: user.clone() });
            }
            self.users.insert(user.clone(), conn)
        };
        if let Some(old) = replaced {
            if old != conn {
                self.shut(
                    old,
                    ErrorCode::KICKOUT_BY_RELOGIN,
                    CloseReason::Replaced,
                    true,
                );
            }
        }
        self.push(
            conn,
            Frame::LoginResult(LoginResult {
                code: ErrorCode::NOERR,
            }),
        );
        self.grant(conn);
        Ok(())
    }

    /// Refuses a pending login with `code` (for example `LOGIN_REJECTED`) and closes.
    pub fn reject_login(&mut self, conn: ConnId, code: ErrorCode) -> Result<(), RelayError> {
        let c = self.conns.get_mut(&conn).ok_or(RelayError::Unknown)?;
        if !c.session.refuse_login() {
            return Err(RelayError::Unknown);
        }
        self.push(conn, Frame::LoginResult(LoginResult { code }));
        self.shut(conn, code, CloseReason::LoginRefused, true);
        Ok(())
    }

    // ----- Outputs -------------------------------------------------------------------

    /// The drive loop in one call: frames for a connection (appended to `out`, which the
    /// runtime writes to that connection's transport and empties before the next call),
    /// else an event, else the time to wait for. Call it after any input until it gives
    /// [`RelayOutput::Timeout`] or [`RelayOutput::Idle`]. Connections take turns, a batch
    /// each; one whose transport cannot take more is left out while paused
    /// ([`Relay::pause_writes`]), its frames kept (and counted against `max_queued_bytes`).
    pub fn poll_output<S: FrameSink + ?Sized>(&mut self, out: &mut S) -> RelayOutput {
        while let Some(conn) = self.writable.pop_front() {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            c.writable = false;
            if c.paused {
                continue; // `resume_writes` lists it again
            }
            // Lists it again at the back if frames remain.
            let written = self.poll_transmit(conn, out);
            if written > 0 {
                return RelayOutput::Transmit(conn, written);
            }
        }
        if let Some(event) = self.poll_event() {
            return RelayOutput::Event(event);
        }
        match self.poll_timeout() {
            Some(at) => RelayOutput::Timeout(at),
            None => RelayOutput::Idle,
        }
    }

    /// `conn`'s transport cannot take more for now: [`Relay::poll_output`] gives nothing
    /// for it until [`Relay::resume_writes`].
    pub fn pause_writes(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.paused = true;
        }
    }

    /// `conn`'s transport can take more again.
    pub fn resume_writes(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.paused = false;
        }
        self.list_writable(conn);
    }

    /// Appends `conn`'s frames to `out`, up to `transmit_batch` bytes, and returns the
    /// number of bytes appended. A closed connection's state is dropped once its last
    /// frame (its `CLOSE`) has been taken.
    ///
    /// `out` is a `BytesMut` (every byte copied into one buffer) or a [`wire::Transmit`]
    /// (payloads forwarded as slices of the input they came in, for vectored writes).
    pub fn poll_transmit<S: FrameSink + ?Sized>(&mut self, conn: ConnId, out: &mut S) -> usize {
        let Some(c) = self.conns.get_mut(&conn) else {
            return 0;
        };
        // Payload written, by sender; consecutive frames of one sender are summed, and the
        // first sender needs no allocation.
        let mut first: Option<(ConnId, u64)> = None;
        let mut more: Vec<(ConnId, u64)> = Vec::new();
        let written = conn::transmit(out, self.config.transmit_batch, || {
            let (frame, owner) = c.out.pop()?;
            if let Some(owner) = owner {
                let len = payload_len(&frame);
                match (more.last_mut(), &mut first) {
                    (Some((last, sum)), _) | (None, Some((last, sum))) if *last == owner => {
                        *sum += len
                    }
                    (_, None) => first = Some((owner, len)),
                    _ => more.push((owner, len)),
                }
            }
            Some(frame)
        });
        if c.out.is_empty() && c.session.is_closed() {
            self.forget(conn);
        }
        self.list_writable(conn);
        for (owner, len) in first.into_iter().chain(more) {
            self.bytes_left(owner, len, true);
        }
        // Room in the queue: messages waiting for it move on.
        self.unblock(conn);
        match written {
            Ok(written) => written,
            Err(written) => {
                // Values come from decoded frames and the relay's own counters: all in
                // range, so this is a bug of ours.
                debug_assert!(false, "a frame for {conn:?} could not be encoded");
                self.shut(conn, ErrorCode::UNKNOWERR, CloseReason::Unencodable, false);
                written
            }
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    /// When [`Relay::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Connections open (including closed ones whose `CLOSE` has not been taken yet).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// What the relay is doing now: connections, sessions, messages, held bytes. O(1).
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            connections: self.conns.len(),
            logged_in: self.logged_in,
            messages: self.routes.len(),
            held_bytes: self.held,
            held_budget: self.config.max_held_bytes,
            frames_forwarded: self.forwarded,
            link_credit: self.promised.links(),
            links: self.remote.len() + self.incoming_links,
        }
    }

    /// Message payload bytes the relay holds (waiting for credit, a slot or queue room,
    /// or queued toward a transport): what [`RelayConfig::max_held_bytes`] governs. O(1).
    pub fn held_bytes(&self) -> u64 {
        self.held
    }

    /// Bytes the relay holds: undecoded input, frames waiting to be written (headers
    /// included), message bytes waiting in routes. (A walk over the connections and
    /// messages in progress.)
    pub fn buffered_bytes(&self) -> u64 {
        let conns: u64 = self
            .conns
            .values()
            .map(|c| c.session.input_len() as u64 + c.out.wire_bytes())
            .sum();
        let held: u64 = self
            .routes
            .values()
            .flat_map(|r| r.held.iter())
            .map(payload_len)
            .sum();
        conns + held
    }

    // ----- Internals -----------------------------------------------------------------
}
