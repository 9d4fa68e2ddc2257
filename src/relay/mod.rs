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
//! Where things live: every frame's handling in `Relay::handle_frame`; the one place bytes
//! pass from a sender to a receiver in `Relay::release`; the one place they stop being held
//! in `Relay::released`; what may be granted in `Relay::grant`; the timer table in
//! `Relay::handle_timeout`. Routing a frame and finding writable connections cost
//! O(log n) in the number of connections (ordered maps) and O(1) in everything else.

mod admission;
mod out_queue;

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use bytes::{Bytes, BytesMut};
use core::time::Duration;

use crate::conn::arrival::Arrival;
use crate::conn::credit::RecvWindow;
use crate::conn::ids::IdSpace;
use crate::conn::{self, CloseReason, Session, Violation};
use crate::wire::{
    self, Cancel, Close, Cmd, CmdCont, ConnCredit, Credit, Data, Frame, FrameSink, Hello, Limits,
    LoginResult, MessageId, Open, Role, SendResult, Text, UserId,
};
use crate::{ErrorCode, Instant};
use admission::Admission;
use out_queue::{detach_payload, payload_len, OutQueue};

/// The connection credit a relay's `HELLO` announces: what a sender may send before its
/// login is accepted and the rest of its window is granted (docs/PROTOCOL.md, "What a relay
/// holds").
pub const INITIAL_CONN_CREDIT: u64 = wire::CREDIT_STEP;

/// A connection, named by the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

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
    /// most the relay holds for that transfer. Default 256 KiB.
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
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            limits: Limits::default(),
            max_cmds_in_flight: 64,
            max_transfers: 16,
            transfer_window: 256 * 1024,
            conn_window: 1 << 20,
            receiver_queue: 1 << 20,
            max_queued_bytes: 4 << 20,
            max_held_bytes: 256 << 20,
            idle_timeout: Duration::from_secs(60),
            login_timeout: Duration::from_secs(10),
            max_frames_before_login: 64,
            progress_timeout: Some(Duration::from_secs(60)),
            transmit_batch: 256 * 1024,
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
    /// a timeout: for logs and counters (one per message; the runtime need not answer).
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
    /// The transfer window is under the credit step (64 KiB), or the connection window is
    /// under the transfer window: senders could stall.
    #[error("transfer_window must be at least 64 KiB and conn_window at least transfer_window")]
    Windows,
    /// `receiver_queue` is zero, or `max_queued_bytes` is under what an honest receiver's
    /// queue may hold (twice `receiver_queue` and four frames): it would be closed as a
    /// peer that does not read.
    #[error("receiver_queue must be at least 1 and max_queued_bytes at least 2 x receiver_queue + 4 frames")]
    Queues,
}

/// A message on its way from one connection to another.
#[derive(Debug)]
struct Route {
    src: ConnId,
    src_id: MessageId,
    dst: ConnId,
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
    inbound: IdSpace<u64>,
    cmds_in: u64,
    transfers_in: u64,
    /// Owed a connection grant that the global budget held back.
    owed: bool,
    // As a receiver: the routes forwarded to it, by the ids the relay gave them.
    outbound: IdSpace<u64>,
    cmds_out: u64,
    transfers_out: u64,
    waiting_cmds: Admission,
    waiting_transfers: Admission,
    blocked: VecDeque<u64>,
}

/// The relay server's state machine. See the [module documentation](self).
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    conns: BTreeMap<ConnId, Conn>,
    users: BTreeMap<UserId, ConnId>,
    routes: BTreeMap<u64, Route>,
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
    promised: u64,
    /// Senders owed a connection grant that the budget held back, oldest first.
    owed: VecDeque<ConnId>,
}

impl Relay {
    /// A relay with no connections.
    pub fn new(config: RelayConfig) -> Result<Self, RelayError> {
        config.limits.validate()?;
        if config.transfer_window < wire::CREDIT_STEP || config.conn_window < config.transfer_window
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
            routes: BTreeMap::new(),
            next_route: 0,
            writable: VecDeque::new(),
            events: VecDeque::new(),
            timers: BTreeSet::new(),
            now: Instant::ZERO,
            held: 0,
            promised: 0,
            owed: VecDeque::new(),
        })
    }

    fn hello(&self) -> Hello {
        let c = &self.config;
        Hello::new(
            Role::Relay,
            &c.limits,
            c.max_cmds_in_flight,
            c.max_transfers,
            c.transfer_window,
            INITIAL_CONN_CREDIT,
        )
    }

    // ----- Connections ---------------------------------------------------------------

    /// A new transport: its `HELLO` is the first thing `poll_transmit` gives for it.
    pub fn open(&mut self, now: Instant, conn: ConnId) -> Result<(), RelayError> {
        if self.conns.contains_key(&conn) {
            return Err(RelayError::InUse);
        }
        self.tick(now);
        // Nothing is usable before login (the HELLO's announced credit comes with it).
        let recv = RecvWindow::new(self.config.conn_window, 0);
        let state = Conn {
            session: Session::new(self.config.limits, recv, now)?,
            out: OutQueue::default(),
            writable: false,
            paused: false,
            opened: now,
            idle_at: now + self.config.idle_timeout,
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
        };
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
        // Relays do not talk to relays.
        let clients_only = |role: Role| role == Role::Client;
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            // Only a whole frame counts as hearing from the peer (the session's rule): a
            // trickle of partial frames does not keep a connection alive.
            match c.session.next_frame(now, clients_only) {
                Ok(Some(frame)) => self.handle_frame(conn, frame),
                Ok(None) => return,
                Err(violation) => {
                    self.violation(conn, violation);
                    return;
                }
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
                    let due = c.session.last_heard() + self.config.idle_timeout;
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
        let send_only = c
            .session
            .peer()
            .is_some_and(|h| h.capabilities.contains(wire::Capabilities::SEND_ONLY));
        // The credit its HELLO announced becomes usable now; the rest of the window comes
        // from the budget.
        c.session.recv.set_granted(INITIAL_CONN_CREDIT);
        self.promised += INITIAL_CONN_CREDIT;
        // A send-only session takes over no inbox: it is not the user's address.
        let replaced = if send_only {
            None
        } else {
            self.users.insert(user, conn)
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

    /// Lists `conn` for [`Relay::poll_output`] if it has frames to write, is not paused
    /// and is not listed already.
    fn list_writable(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.out.is_empty() && !c.writable && !c.paused {
                c.writable = true;
                self.writable.push_back(conn);
            }
        }
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
            self.released(owner, len, true);
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

    fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Queues a frame of the relay's own (no message payload) for `conn`.
    fn push(&mut self, conn: ConnId, frame: Frame) {
        self.push_from(conn, frame, None);
    }

    /// Queues `frame` for `conn`, cut to the frame size `conn` accepts; `owner` is the
    /// sender of the message payload it carries.
    fn push_from(&mut self, conn: ConnId, frame: Frame, owner: Option<ConnId>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.session.is_closed() {
            // Its messages were ended when it closed; a late payload is dropped here.
            if let Some(owner) = owner {
                self.released(owner, payload_len(&frame), true);
            }
            return;
        }
        let max = c
            .session
            .peer()
            .map_or(wire::MIN_FRAME_SIZE, |h| h.max_frame_size);
        let mut frame = frame;
        if c.out.payload_bytes() >= self.config.transmit_batch as u64 {
            // The runtime is not keeping up with this connection: this frame will wait.
            detach_payload(&mut frame);
        }
        // A receiver may accept smaller frames than the sender wrote: cut the payload.
        while let Some(rest) = split_to_fit(&mut frame, max) {
            c.out.push(frame, owner);
            frame = rest;
        }
        c.out.push(frame, owner);
        if c.out.wire_bytes() > self.config.max_queued_bytes {
            // It does not read: nothing more will be written to it.
            for (owner, len) in c.out.clear() {
                self.released(owner, len, true);
            }
            self.shut(
                conn,
                ErrorCode::LIMIT_EXCEEDED,
                CloseReason::NotReading,
                false,
            );
            return;
        }
        self.list_writable(conn);
    }

    /// Every frame from a client, in one place.
    fn handle_frame(&mut self, conn: ConnId, frame: Frame) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let logged_in = c.session.is_logged_in();
        if !logged_in {
            c.frames_before_login += 1;
            if c.frames_before_login > self.config.max_frames_before_login {
                self.violation(conn, Violation::TooManyFramesBeforeLogin);
                return;
            }
        }
        match frame {
            Frame::Ping(p) => self.push(conn, Frame::Pong(p)),
            Frame::Pong(_) => {}
            Frame::Close(close) => {
                self.shut(conn, close.code, CloseReason::Peer(close.reason), false)
            }
            Frame::Login(login) => match c.session.begin_login(login.user.clone()) {
                Ok(()) => self.events.push_back(RelayEvent::Login {
                    conn,
                    user: login.user,
                    token: login.token,
                }),
                Err(violation) => self.violation(conn, violation),
            },
            _ if !logged_in => self.violation(conn, Violation::NotLoggedIn),
            // (A HELLO is the session's; a second one never comes here.)
            Frame::Hello(_) | Frame::LoginResult(_) => {
                self.violation(conn, Violation::UnexpectedFrame)
            }
            Frame::Cmd(cmd) => {
                let (id, first) = (cmd.id, cmd.data.len() as u64);
                if !self.count_received(conn, first) {
                    return;
                }
                let (peer, size) = (cmd.peer.clone(), cmd.total_len);
                match self.new_route(conn, id, &peer, Some(first), None, size) {
                    Some((key, src_user)) => {
                        let first = Cmd {
                            peer: src_user,
                            ..cmd
                        };
                        self.forward(key, Frame::Cmd(first));
                    }
                    None => self.released(conn, first, false),
                }
            }
            Frame::Open(open) => {
                let peer = open.peer.clone();
                if let Some((key, src_user)) =
                    self.new_route(conn, open.id, &peer, None, Some(open.kind), open.size)
                {
                    let first = Open {
                        peer: src_user,
                        ..open
                    };
                    self.forward(key, Frame::Open(first));
                }
            }
            piece @ (Frame::CmdCont(_) | Frame::Data(_) | Frame::End(_)) => {
                self.on_piece(conn, piece)
            }
            Frame::Cancel(cancel) => {
                let Some(key) = self.inbound_key(conn, cancel.id) else {
                    return;
                };
                match self
                    .routes
                    .get(&key)
                    .map(|r| (r.arrival.ended(), r.cancelling))
                {
                    // Before its END the sender is done with the message at once.
                    Some((false, _)) => self.end_route_telling(key, Tell::Receiver(cancel.code)),
                    // After it, the sender waits for a RESULT: the receiver's word.
                    Some((true, false)) => self.ask_cancel(key, cancel.code),
                    _ => {}
                }
            }
            Frame::Credit(credit) => {
                let Some(key) = self.outbound_key(conn, credit.id) else {
                    return;
                };
                let window = self.config.transfer_window;
                let dst_window = self
                    .conns
                    .get(&conn)
                    .and_then(|c| c.session.peer())
                    .map_or(0, |h| h.transfer_window);
                let now = self.now;
                let Some(r) = self.routes.get_mut(&key) else {
                    return;
                };
                if credit.max_offset > r.forwarded.saturating_add(dst_window) {
                    // A grant is consumption plus the announced window, and nothing past
                    // what was forwarded can have been consumed.
                    self.violation(conn, Violation::CreditBeyondWindow);
                    return;
                }
                if credit.max_offset > r.dst_credit {
                    r.dst_credit = credit.max_offset;
                    r.last_progress = now;
                    // The receiver's grant is its consumption plus its window; the sender's
                    // is the same consumption plus the relay's window. So the sender's
                    // progress (grant less window) is what the receiver consumed, and the
                    // relay holds at most its window less the receiver's.
                    let grant = credit.max_offset.saturating_sub(dst_window) + window;
                    if grant > r.src_credit {
                        r.src_credit = grant;
                        let (src, id) = (r.src, r.src_id);
                        self.push(
                            src,
                            Frame::Credit(Credit {
                                id,
                                max_offset: grant,
                            }),
                        );
                    }
                    self.release(key);
                }
            }
            Frame::ConnCredit(cc) => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                // A receiver's grant is what it took plus the window it announced.
                let window = c.session.peer().map_or(0, |h| h.conn_window);
                match c.session.send.raise(cc.max_data, Some(window)) {
                    Ok(true) => self.unblock(conn),
                    Ok(false) => {}
                    Err(violation) => self.violation(conn, violation),
                }
            }
            Frame::Result(result) => {
                let Some(key) = self.outbound_key(conn, result.id) else {
                    return;
                };
                let Some(r) = self.routes.get(&key) else {
                    return;
                };
                let whole = if r.arrival.is_cmd() {
                    r.arrival.received() == r.arrival.size() && r.held.is_empty()
                } else {
                    r.arrival.ended() && r.held.is_empty()
                };
                if result.code.is_success() && !whole {
                    // Its sender would close on it: the receiver is the one at fault.
                    self.violation(conn, Violation::EarlySuccess);
                    return;
                }
                self.end_route_telling(key, Tell::Sender(result.code));
            }
        }
    }

    /// `len` message bytes arrived from sender `conn`: within the connection credit the
    /// relay granted, or `conn` is closed (`false`).
    fn count_received(&mut self, conn: ConnId, len: u64) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if let Err(violation) = c.session.recv.count(len) {
            self.violation(conn, violation);
            return false;
        }
        true
    }

    /// A fragment, `DATA` or `END` of one of sender `conn`'s messages: its payload counted,
    /// checked against the message, and forwarded.
    fn on_piece(&mut self, conn: ConnId, frame: Frame) {
        let len = payload_len(&frame);
        let (id, offset) = match &frame {
            Frame::CmdCont(c) => (c.id, c.offset),
            Frame::Data(d) => (d.id, d.offset),
            Frame::End(e) => (e.id, 0),
            _ => return,
        };
        if !self.count_received(conn, len) {
            return;
        }
        let Some(key) = self.inbound_key(conn, id) else {
            self.released(conn, len, false); // an ended message: dropped
            return;
        };
        let Some(r) = self.routes.get_mut(&key) else {
            return;
        };
        // The receiver's rules, so that nothing forwarded can make the receiver close: a
        // sender's mistake stays the sender's.
        let checked = match &frame {
            Frame::End(_) => r.arrival.end(),
            Frame::CmdCont(_) => r.arrival.bytes(true, offset, len, u64::MAX),
            _ => r.arrival.bytes(false, offset, len, r.src_credit),
        };
        if let Err(violation) = checked {
            self.violation(conn, violation);
            return;
        }
        self.forward(key, frame);
    }

    /// Appends a frame of the sender's to route `key` and moves what may move. A frame
    /// that stays gets its own copy of its payload (see `detach_payload`).
    fn forward(&mut self, key: u64, frame: Frame) {
        let Some(r) = self.routes.get(&key) else {
            return;
        };
        self.held += payload_len(&frame);
        // Behind frames already waiting it waits too; else it may go straight on.
        let waiting = if r.held.is_empty() {
            self.pass(key, frame).err()
        } else {
            Some(frame)
        };
        if let (Some(mut frame), Some(r)) = (waiting, self.routes.get_mut(&key)) {
            detach_payload(&mut frame);
            r.held.push_back(frame);
        }
    }

    /// A new message from `conn` to `peer`: its id checked against the order, the sender's
    /// caps and the target; a route made, waiting for a slot at the receiver. `None` if
    /// refused (answered already). Gives the route and the sender's user id.
    fn new_route(
        &mut self,
        conn: ConnId,
        id: MessageId,
        peer: &UserId,
        first_fragment: Option<u64>,
        kind: Option<wire::TransferKind>,
        size: u64,
    ) -> Option<(u64, UserId)> {
        let is_cmd = first_fragment.is_some();
        let (max_cmds, max_transfers) = (self.config.max_cmds_in_flight, self.config.max_transfers);
        let c = self.conns.get_mut(&conn)?;
        if let Err(violation) = c.inbound.claim(id) {
            self.violation(conn, violation);
            return None;
        }
        let refuse = |relay: &mut Self, code| {
            relay.push(conn, Frame::Result(SendResult { id, code }));
            None
        };
        let over = if is_cmd {
            c.cmds_in >= max_cmds
        } else {
            c.transfers_in >= max_transfers
        };
        if over {
            return refuse(self, ErrorCode::LIMIT_EXCEEDED);
        }
        let src_user = c.session.user().cloned()?;
        let dst = match self.users.get(peer) {
            Some(dst) if self.conns.get(dst).is_some_and(|d| !d.session.is_closed()) => *dst,
            _ => return refuse(self, ErrorCode::OFFLINE),
        };
        let d = self.conns.get_mut(&dst)?;
        // Nothing the receiver's decoder would refuse is forwarded.
        let (max, too_large) = match (kind, d.session.peer()) {
            (_, None) => (0, ErrorCode::OFFLINE),
            (None, Some(h)) => (h.max_cmd_size, ErrorCode::SENDCMD_LARGE),
            (Some(wire::TransferKind::Buffer), Some(h)) => {
                (h.max_buffer_size, ErrorCode::SENDBUFFER_LARGE)
            }
            (Some(wire::TransferKind::File), Some(h)) => {
                (h.max_file_size, ErrorCode::FILE_SIZE_ERR)
            }
        };
        if size > max || d.session.peer().is_none() {
            return refuse(self, too_large);
        }
        let dst_credit = d.session.peer().map_or(0, |h| h.transfer_window);
        let key = self.next_route;
        self.next_route += 1;
        // A free slot and nobody waiting for one: it goes straight on, below.
        let (waiting, out, cap) = match (is_cmd, d.session.peer()) {
            (true, Some(h)) => (&mut d.waiting_cmds, &mut d.cmds_out, h.max_cmds_in_flight),
            (false, Some(h)) => (
                &mut d.waiting_transfers,
                &mut d.transfers_out,
                h.max_transfers,
            ),
            (_, None) => return None,
        };
        let straight_on = waiting.is_empty() && *out < cap;
        if straight_on {
            *out += 1;
        } else {
            waiting.push(conn, key);
        }
        let c = self.conns.get_mut(&conn)?;
        c.inbound.insert(id, key);
        if is_cmd {
            c.cmds_in += 1;
        } else {
            c.transfers_in += 1;
        }
        let route = Route {
            src: conn,
            src_id: id,
            dst,
            dst_id: None,
            held: VecDeque::new(),
            dst_credit,
            forwarded: 0,
            src_credit: self.config.transfer_window,
            blocked: false,
            arrival: Arrival::new(is_cmd, size, first_fragment.unwrap_or(0)),
            cancelling: false,
            last_progress: self.now,
        };
        self.routes.insert(key, route);
        if straight_on {
            self.forward_to(dst, key);
        }
        Some((key, src_user))
    }

    /// Drops a connection's state and its timers.
    fn forget(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            self.timers.remove(&(c.idle_at, Timer::Idle(conn)));
            if let Some(at) = c.progress_at {
                self.timers.remove(&(at, Timer::Progress(conn)));
            }
            let login_at = c.opened + self.config.login_timeout;
            self.timers.remove(&(login_at, Timer::Login(conn)));
        }
    }

    /// Gives waiting messages to `dst` while it has free slots under the caps it announced,
    /// each with the next id of `dst`'s connection.
    fn admit(&mut self, dst: ConnId) {
        loop {
            let Some(d) = self.conns.get_mut(&dst) else {
                return;
            };
            let Some(h) = d.session.peer() else {
                return;
            };
            let key = if d.cmds_out < h.max_cmds_in_flight {
                d.waiting_cmds.pop()
            } else {
                None
            };
            let key = match key {
                Some(key) => {
                    d.cmds_out += 1;
                    key
                }
                None if d.transfers_out < h.max_transfers => match d.waiting_transfers.pop() {
                    Some(key) => {
                        d.transfers_out += 1;
                        key
                    }
                    None => return,
                },
                None => return,
            };
            self.forward_to(dst, key);
        }
    }

    /// Route `key` takes a slot at `dst` (already counted): it gets `dst`'s next id, its
    /// progress timer starts, and what it holds moves on.
    fn forward_to(&mut self, dst: ConnId, key: u64) {
        let Some(d) = self.conns.get_mut(&dst) else {
            return;
        };
        let dst_id = d.outbound.allocate(key);
        let now = self.now;
        let Some(r) = self.routes.get_mut(&key) else {
            return;
        };
        r.dst_id = Some(dst_id);
        r.last_progress = now;
        if let (Some(limit), None) = (self.config.progress_timeout, d.progress_at) {
            d.progress_at = Some(now + limit);
            self.timers.insert((now + limit, Timer::Progress(dst)));
        }
        self.release(key);
    }

    /// Cancels route `key`, whose sender has sent its `END`, with `code`: a receiver that
    /// may have it whole decides (its `RESULT` goes to the sender); one that cannot (it
    /// never got a frame of it) is not asked.
    fn ask_cancel(&mut self, key: u64, code: ErrorCode) {
        let Some(r) = self.routes.get_mut(&key) else {
            return;
        };
        let Some(dst_id) = r.dst_id else {
            self.end_route_telling(key, Tell::Sender(code));
            return;
        };
        r.cancelling = true;
        r.last_progress = self.now;
        // What it still held goes nowhere now.
        let (src, dst) = (r.src, r.dst);
        let held: u64 = r.held.drain(..).map(|f| payload_len(&f)).sum();
        self.released(src, held, true);
        self.push(dst, Frame::Cancel(Cancel { id: dst_id, code }));
    }

    /// Ends the messages forwarded to `dst` that have not moved for the progress timeout,
    /// on both ends, and sets the timer for the next that could.
    fn check_progress(&mut self, dst: ConnId, now: Instant) {
        let Some(limit) = self.config.progress_timeout else {
            return;
        };
        let Some(d) = self.conns.get_mut(&dst) else {
            return;
        };
        d.progress_at = None;
        let mut stalled = Vec::new();
        let mut next: Option<Instant> = None;
        for key in d.outbound.values() {
            let Some(r) = self.routes.get(key) else {
                continue;
            };
            let due = r.last_progress + limit;
            if due <= now {
                stalled.push(*key);
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        if let Some(due) = next {
            d.progress_at = Some(due);
            self.timers.insert((due, Timer::Progress(dst)));
        }
        let mut asked = false;
        for key in stalled {
            // A whole message whose receiver has not answered may be delivered already:
            // the receiver is asked, and has one more timeout to answer.
            match self
                .routes
                .get(&key)
                .map(|r| (r.arrival.ended(), r.cancelling))
            {
                Some((true, false)) => {
                    self.ask_cancel(key, ErrorCode::SOCKETTIMEOUT);
                    asked = true;
                }
                _ => self.end_route_telling(key, Tell::Both(ErrorCode::SOCKETTIMEOUT)),
            }
        }
        if let (true, Some(d)) = (asked, self.conns.get_mut(&dst)) {
            if d.progress_at.is_none() {
                d.progress_at = Some(now + limit);
                self.timers.insert((now + limit, Timer::Progress(dst)));
            }
        }
    }

    /// The route of `conn`'s own message `id`. `None` for a message already ended (its
    /// frames are dropped) or never begun (the connection is closed).
    fn inbound_key(&mut self, conn: ConnId, id: MessageId) -> Option<u64> {
        let found = self
            .conns
            .get(&conn)?
            .inbound
            .find(id, Violation::NeverOpened);
        self.route_of(conn, found.map(Option::<&u64>::copied))
    }

    /// The route of a message the relay sent to `conn` as `id`.
    fn outbound_key(&mut self, conn: ConnId, id: MessageId) -> Option<u64> {
        let found = self
            .conns
            .get(&conn)?
            .outbound
            .find(id, Violation::NeverSent);
        self.route_of(conn, found.map(Option::<&u64>::copied))
    }

    /// An id's route; an id never allocated closes `conn`.
    fn route_of(&mut self, conn: ConnId, found: Result<Option<u64>, Violation>) -> Option<u64> {
        match found {
            Ok(key) => key,
            Err(violation) => {
                self.violation(conn, violation);
                None
            }
        }
    }

    /// Moves a route's held frames to its receiver as far as [`Relay::pass`] lets them.
    fn release(&mut self, key: u64) {
        loop {
            let Some(frame) = self.routes.get_mut(&key).and_then(|r| r.held.pop_front()) else {
                return;
            };
            if let Err(frame) = self.pass(key, frame) {
                if let Some(r) = self.routes.get_mut(&key) {
                    r.held.push_front(frame);
                }
                return;
            }
        }
    }

    /// Forwards `frame`, the next of route `key`, to its receiver if the receiver's credit
    /// (for the transfer and for the connection) and its queue room allow; else gives it
    /// back. The one place where a message's bytes pass from one connection to the other.
    fn pass(&mut self, key: u64, mut frame: Frame) -> Result<(), Frame> {
        let Some(r) = self.routes.get_mut(&key) else {
            return Err(frame);
        };
        let (src, dst) = (r.src, r.dst);
        let Some(dst_id) = r.dst_id else {
            return Err(frame); // waiting for a slot: `admit` calls release
        };
        let len = payload_len(&frame);
        if let Frame::Data(d) = &frame {
            if d.offset + len > r.dst_credit {
                return Err(frame); // the receiver's CREDIT calls release again
            }
        }
        if len > 0 {
            let Some(dc) = self.conns.get_mut(&dst) else {
                return Err(frame);
            };
            let full = dc.out.payload_in_lane_of(&frame) >= self.config.receiver_queue;
            if len > dc.session.send.room() || full {
                if !r.blocked {
                    r.blocked = true;
                    dc.blocked.push_back(key);
                }
                return Err(frame); // CONN_CREDIT or a drained queue calls release again
            }
            dc.session.send.spend(len);
        }
        if let Some(id) = frame.sender_id_mut() {
            *id = dst_id;
        }
        if matches!(frame, Frame::Data(_)) {
            r.forwarded += len;
        }
        r.last_progress = self.now;
        self.push_from(dst, frame, Some(src));
        Ok(())
    }

    /// Routes toward `conn` that waited for its credit or queue room try again.
    fn unblock(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.blocked.is_empty() || c.session.send.room() == 0 {
            return;
        }
        let blocked: Vec<u64> = c.blocked.drain(..).collect();
        for key in blocked {
            if let Some(r) = self.routes.get_mut(&key) {
                r.blocked = false;
            }
            self.release(key);
        }
    }

    /// `len` message bytes from sender `conn` left the relay (`held`: they had been stored
    /// in it; else dropped on arrival): they are no longer held or promised, and the
    /// sender is granted more as the window and the budget allow. The one place where
    /// what the relay holds goes down.
    fn released(&mut self, conn: ConnId, len: u64, held: bool) {
        if held {
            self.held = self.held.saturating_sub(len);
        }
        self.promised = self.promised.saturating_sub(len);
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.session.is_closed() {
                c.session.recv.release(len);
                self.grant(conn);
            }
        }
        self.pay_owed();
    }

    /// Grants `conn` connection credit up to what it released plus the window, when that
    /// is a step more than it has. Past the budget it gets less, but never less than
    /// [`INITIAL_CONN_CREDIT`] beyond what it released, so every sender can always go on;
    /// what it did not get is owed.
    fn grant(&mut self, conn: ConnId) {
        let room = self.config.max_held_bytes.saturating_sub(self.promised);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.session.is_closed() || !c.session.is_logged_in() {
            return;
        }
        let before = c.session.recv.granted();
        let grant = c.session.recv.grant(room, INITIAL_CONN_CREDIT);
        if grant.short && !c.owed {
            c.owed = true;
            self.owed.push_back(conn);
        }
        if let Some(max_data) = grant.max_data {
            self.promised += max_data - before;
            self.push(conn, Frame::ConnCredit(ConnCredit { max_data }));
        }
    }

    /// Pays grants the budget held back, oldest first, while there is room for a step.
    fn pay_owed(&mut self) {
        let step = wire::credit_step(self.config.conn_window);
        while self.config.max_held_bytes.saturating_sub(self.promised) >= step {
            let Some(conn) = self.owed.pop_front() else {
                return;
            };
            if let Some(c) = self.conns.get_mut(&conn) {
                c.owed = false;
                self.grant(conn);
            }
        }
    }

    /// Ends a route, telling the ends that are still there: the receiver with `CANCEL`
    /// (only if it was told of the message), the sender with `RESULT`.
    fn end_route_telling(&mut self, key: u64, tell: Tell) {
        if let Some(r) = self.routes.get(&key) {
            let (to_receiver, to_sender, code) = match tell {
                Tell::Receiver(code) => (Some(code), None, code),
                Tell::Sender(code) => (None, Some(code), code),
                Tell::Both(code) => (Some(code), Some(code), code),
            };
            let (src, src_id, dst, dst_id) = (r.src, r.src_id, r.dst, r.dst_id);
            let user = |conn| {
                self.conns
                    .get(&conn)
                    .and_then(|c| c.session.user().cloned())
            };
            if let (Some(from), Some(to)) = (user(src), user(dst)) {
                self.events.push_back(RelayEvent::MessageEnded {
                    from,
                    to,
                    cmd: r.arrival.is_cmd(),
                    size: r.arrival.size(),
                    code,
                });
            }
            if let (Some(code), Some(id)) = (to_receiver, dst_id) {
                self.push(dst, Frame::Cancel(Cancel { id, code }));
            }
            if let Some(code) = to_sender {
                self.push(src, Frame::Result(SendResult { id: src_id, code }));
            }
        }
        self.end_route(key);
    }

    /// Forgets a route: its held bytes count as released for the sender, and its slot at
    /// the receiver goes to the next waiting message.
    fn end_route(&mut self, key: u64) {
        let Some(r) = self.routes.remove(&key) else {
            return;
        };
        let held: u64 = r.held.iter().map(payload_len).sum();
        if let Some(c) = self.conns.get_mut(&r.src) {
            c.inbound.remove(r.src_id);
            if r.arrival.is_cmd() {
                c.cmds_in = c.cmds_in.saturating_sub(1);
            } else {
                c.transfers_in = c.transfers_in.saturating_sub(1);
            }
        }
        if let Some(d) = self.conns.get_mut(&r.dst) {
            match r.dst_id {
                Some(id) => {
                    d.outbound.remove(id);
                    if r.arrival.is_cmd() {
                        d.cmds_out = d.cmds_out.saturating_sub(1);
                    } else {
                        d.transfers_out = d.transfers_out.saturating_sub(1);
                    }
                }
                None if r.arrival.is_cmd() => d.waiting_cmds.remove(r.src, key),
                None => d.waiting_transfers.remove(r.src, key),
            }
        }
        self.released(r.src, held, true);
        if r.dst_id.is_some() {
            self.admit(r.dst);
        }
    }

    /// `conn` broke the protocol: it is told why and closed.
    fn violation(&mut self, conn: ConnId, violation: Violation) {
        self.shut(
            conn,
            violation.code(),
            CloseReason::Violation(violation),
            true,
        );
    }

    /// Ends a connection: its messages end on the other side (`CANCEL` to receivers,
    /// `RESULT(CONNECTIONLOST)` to senders, waiting ones included), its user is logged
    /// out, `Closed` is reported.
    fn shut(&mut self, conn: ConnId, code: ErrorCode, reason: CloseReason, send_close: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if send_close && !c.session.is_closed() {
            let close = Close {
                code,
                reason: reason.wire_text(),
            };
            c.out.push(Frame::Close(close), None);
        }
        if !c.session.close() {
            return;
        }
        // Credit it never used is no longer promised; what it has in the relay is
        // released as it leaves.
        let unused = c
            .session
            .recv
            .granted()
            .saturating_sub(c.session.recv.received());
        self.promised = self.promised.saturating_sub(unused);
        let user = c.session.user().cloned();
        let inbound: Vec<u64> = c.inbound.drain().collect();
        let mut outbound: Vec<u64> = c.outbound.drain().collect();
        outbound.extend(c.waiting_cmds.drain());
        outbound.extend(c.waiting_transfers.drain());
        c.blocked.clear();
        let nothing_to_write = c.out.is_empty();
        if let Some(u) = &user {
            if self.users.get(u) == Some(&conn) {
                self.users.remove(u);
            }
        }
        for key in inbound {
            self.end_route_telling(key, Tell::Receiver(ErrorCode::CONNECTIONLOST));
        }
        for key in outbound {
            self.end_route_telling(key, Tell::Sender(ErrorCode::CONNECTIONLOST));
        }
        if nothing_to_write {
            self.forget(conn);
        } else {
            self.list_writable(conn);
        }
        self.events.push_back(RelayEvent::Closed {
            conn,
            user,
            code,
            reason,
        });
    }
}

/// If `frame` is longer than `max_frame_size`, shortens it to fit and returns a frame
/// with the rest of its payload (a `DATA` continues as `DATA`, a command as `CMD_CONT`).
fn split_to_fit(frame: &mut Frame, max_frame_size: u64) -> Option<Frame> {
    let room = |peer| {
        usize::try_from(wire::payload_room(max_frame_size, peer).max(1)).unwrap_or(usize::MAX)
    };
    match frame {
        Frame::Data(d) if d.payload.len() > room(None) => {
            let payload = d.payload.split_off(room(None));
            let offset = d.offset + d.payload.len() as u64;
            Some(Frame::Data(Data {
                id: d.id,
                offset,
                payload,
            }))
        }
        Frame::CmdCont(c) if c.data.len() > room(None) => {
            let data = c.data.split_off(room(None));
            let offset = c.offset + c.data.len() as u64;
            Some(Frame::CmdCont(CmdCont {
                id: c.id,
                offset,
                data,
            }))
        }
        Frame::Cmd(c) if c.data.len() > room(Some(&c.peer)) => {
            let data = c.data.split_off(room(Some(&c.peer)));
            let offset = c.data.len() as u64;
            Some(Frame::CmdCont(CmdCont {
                id: c.id,
                offset,
                data,
            }))
        }
        _ => None,
    }
}
