//! Continuity: what one user keeps across connections, so that a send survives a lost
//! connection in any runtime.
//!
//! A [`Client`] lives for one connection. A [`Continuity`] holds one at a time and carries,
//! from each to the next: the ids the application knows its sends by, command identities
//! (a receiver delivers a command once, [`SeenCmds`](crate::client::SeenCmds)), sends cut
//! off that wait to go on and when they are given up, buffers this user was receiving
//! when a connection was lost and those it delivered (`held.rs`), and when to dial again
//! (`redial.rs`). Every rule that decides what is a repeat, what is sent again and when to
//! give up is here, sans-IO, with time passed in; a runtime only dials, moves bytes and
//! files, and waits.
//!
//! Files a receiver keeps stay the runtime's: it answers a file's
//! [`Event::Offer`] with [`Continuity::resume_incoming`] from what it holds on disk.
//!
//! # The drive loop
//!
//! The same as a [`Client`]'s, plus dialling: while [`Continuity::is_connected`], feed the
//! transport's bytes and act on [`Continuity::poll_output`] until it says
//! [`Output::Timeout`]; when the transport is lost call [`Continuity::handle_disconnect`];
//! then, while [`Continuity::poll_redial`] gives a time, dial at that time and say how it
//! went ([`Continuity::connected`] or [`Continuity::redial_failed`]), calling
//! [`Continuity::handle_timeout`] at [`Continuity::poll_timeout`] meanwhile.
//!
//! ```
//! use peermsg::client::{ClientConfig, Event, Output};
//! use peermsg::continuity::{Continuity, Policy};
//! use peermsg::{ErrorCode, Instant};
//!
//! let now = Instant::ZERO;
//! let mut alice = Continuity::new(ClientConfig::default(), Some(Policy::default()),
//!                                 "alice", b"token", [7; 16], now).unwrap();
//! let id = alice.send_cmd(now, "bob", "hello".into(), 0).unwrap();
//! let mut out = bytes::BytesMut::new();
//! // HELLO and LOGIN go first; the command waits for the login's answer.
//! assert!(matches!(alice.poll_output(&mut out), Output::Event(Event::SendWaiting { .. })));
//! assert!(matches!(alice.poll_output(&mut out), Output::Transmit(_)));
//! // The transport is lost before any answer: never logged in, there is nothing to go
//! // back to, and the command ends.
//! alice.handle_disconnect(now);
//! let mut events = Vec::new();
//! while let Output::Event(event) = alice.poll_output(&mut out) {
//!     events.push(event);
//! }
//! assert!(events.iter().any(|e| matches!(e,
//!     Event::SendResult { id: i, code: ErrorCode::CONNECTIONLOST, .. } if *i == id)));
//! assert_eq!(alice.poll_redial(), None);
//! ```

pub(crate) mod held;
pub(crate) mod redial;
pub(crate) mod sends;

use alloc::collections::{BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::client::{
    Client, ClientConfig, ConfigError, Event, Output, ReceiveId, SendId, SendKind,
};
use crate::seal::{self, Binding, KeyStatus, Sealing};
use crate::wire::{Digest, FrameSink, IdentityKey, ResumeKey, UserId};
use crate::{ActionError, CloseReason, ErrorCode, Instant, SendError};

use held::{Answer, HeldBuffers};
use redial::{Redial, Rng};
use sends::{Ended, Made, Outcome, Resend, Sends};

/// How a [`Continuity`] carries on after a lost connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How long after a loss the client tries to connect again, a cut-off send waits to go
    /// on, and a cut-off incoming buffer's bytes are kept. Default 5 minutes.
    pub window: Duration,
    /// The first wait before dialling again; it doubles, with random jitter, up to
    /// `max_backoff`. Default 100 ms.
    pub backoff: Duration,
    /// The longest wait between attempts. Default 5 s.
    pub max_backoff: Duration,
    /// How long after its receiver was lost a waiting send is tried again on a live
    /// connection. Default 500 ms.
    pub retry: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            window: Duration::from_secs(300),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            retry: Duration::from_millis(500),
        }
    }
}

/// Why a [`Continuity`] could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetupError {
    /// The client configuration is not valid.
    Config(ConfigError),
    /// The user name cannot log in.
    Login(SendError),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Config(e) => write!(f, "{e}"),
            SetupError::Login(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for SetupError {}

/// Where the connection stands.
#[derive(Clone, Copy, Debug)]
enum Link {
    /// A connection, live or ending: `logged_in` once its login was accepted;
    /// `again` for every connection after the first.
    Up { logged_in: bool, again: bool },
    /// Lost; dialling again.
    Down(Redial),
    /// Over for good: closed, refused, replaced elsewhere, or no relay within the window.
    Over,
}

/// One user across connections: a [`Client`] per connection, and what goes from one to
/// the next. See the [module documentation](self).
#[derive(Debug)]
pub struct Continuity {
    client: Client,
    config: ClientConfig,
    /// `None`: it does not reconnect, and sends end with their connection.
    policy: Option<Policy>,
    user: UserId,
    token: Vec<u8>,
    link: Link,
    sends: Sends,
    held: HeldBuffers,
    rng: Rng,
    /// A login was accepted once: only then is a lost connection replaced.
    logged_in: bool,
    /// The application closed it, or it was refused or replaced: no reconnecting.
    closing: bool,
    /// The first accepted login was told to the application.
    told_login: bool,
    /// The latest time given.
    now: Instant,
    /// Events of its own (waits, results of sends given up, reconnects, the last close).
    own: VecDeque<Event>,
    /// Sealed sends whose receiver's key was asked for, in the order they were made.
    awaiting_key: VecDeque<AwaitingKey>,
}

/// A sealed send made before its receiver's key was known: it starts, sealed, once the
/// key is heard, or ends with the reason there is none.
#[derive(Debug)]
struct AwaitingKey {
    id: SendId,
    kind: SendKind,
    to: UserId,
    what: Awaited,
    cookie: u64,
}

/// What a send waiting for its receiver's key will send.
#[derive(Debug)]
enum Awaited {
    /// A command's or buffer's bytes.
    Data(Bytes),
    /// A file, as [`Continuity::send_file`] was given it.
    File {
        name: String,
        size: u64,
        key: ResumeKey,
    },
}

impl Continuity {
    /// A user's first connection at `now`, logging in as `user` with `token`. `seed` is
    /// random bytes of the runtime's: this user's stream of command identities and the
    /// jitter of its redials.
    pub fn new(
        config: ClientConfig,
        policy: Option<Policy>,
        user: &str,
        token: &[u8],
        seed: [u8; 16],
        now: Instant,
    ) -> Result<Self, SetupError> {
        let mut client = Client::new(config, now).map_err(SetupError::Config)?;
        client.login(user, token).map_err(SetupError::Login)?;
        // Valid, as the login just checked; kept as an id (sealing binds it).
        let user = UserId::new(user).map_err(|e| SetupError::Login(SendError::InvalidUser(e)))?;
        let mut jitter = [0u8; 8];
        jitter.copy_from_slice(&seed[8..]);
        Ok(Continuity {
            client,
            config,
            policy,
            user,
            token: token.into(),
            link: Link::Up {
                logged_in: false,
                again: false,
            },
            sends: Sends::new(seed, policy.is_some()),
            held: HeldBuffers::default(),
            rng: Rng::new(u64::from_le_bytes(jitter)),
            logged_in: false,
            closing: false,
            told_login: false,
            now,
            own: VecDeque::new(),
            awaiting_key: VecDeque::new(),
        })
    }

    /// Seals messages between users ([`crate::seal`], [`Client::set_sealing`]): every
    /// command, buffer and file sent is sealed for its receiver, whose key is asked of the relay
    /// if it is not pinned (the send waits for it); every one that comes in must be
    /// sealed for this user. Files are sealed too, each attempt under its own key, their
    /// names with them. Call it before the first output.
    pub fn set_sealing(&mut self, sealing: Sealing) {
        self.client.set_sealing(sealing);
        // Sends wait for keys under ids of ours.
        self.sends.track();
    }

    /// The application trusts `key` for `user` from now on ([`Client::pin_key`]); sends
    /// waiting for that user's key go.
    pub fn pin_key(&mut self, user: UserId, key: IdentityKey) {
        self.client.pin_key(user.clone(), key);
        self.keys_heard(user, Some(key), None);
    }

    /// The current connection's client, to look at (round-trip time, bytes held).
    pub fn client(&self) -> &Client {
        &self.client
    }

    // ----- Sends ---------------------------------------------------------------------

    /// `sendCmd`. With a [`Policy`] it carries an identity: cut off, it is sent again and
    /// its receiver delivers it once; commands to one receiver keep their order. Made
    /// while no connection is live, it waits for the next.
    pub fn send_cmd(
        &mut self,
        now: Instant,
        to: &str,
        data: Bytes,
        cookie: u64,
    ) -> Result<SendId, SendError> {
        self.send_data(now, SendKind::Cmd, to, data, cookie, None)
    }

    /// `sendBuffer`. With a [`Policy`] it carries a resume key: cut off, it goes on from
    /// what its receiver kept of it, and a repeat of one delivered is not delivered again.
    pub fn send_buffer(
        &mut self,
        now: Instant,
        to: &str,
        data: Bytes,
        cookie: u64,
    ) -> Result<SendId, SendError> {
        self.send_data(now, SendKind::Buffer, to, data, cookie, None)
    }

    /// A command or buffer, sealed where sealing is on (once: a re-send is the same
    /// bytes), under `id` if it waited for its receiver's key.
    fn send_data(
        &mut self,
        now: Instant,
        kind: SendKind,
        to: &str,
        data: Bytes,
        cookie: u64,
        id: Option<SendId>,
    ) -> Result<SendId, SendError> {
        let sealed_for = match self.client.is_sealing() {
            true => Some(UserId::new(to).map_err(SendError::InvalidTarget)?),
            false => None,
        };
        if let Some(target) = &sealed_for {
            if self.client.pinned_key(target).is_none() {
                let what = Awaited::Data(data);
                return self.await_key(now, kind, target.clone(), what, cookie, id);
            }
        }
        let (once, key) = match (kind, self.policy) {
            (_, None) => (None, None),
            (SendKind::Cmd, Some(_)) => (Some(self.sends.next_once(to)), None),
            (_, Some(_)) => (None, Some(self.sends.next_key())),
        };
        let data = match &sealed_for {
            Some(target) => {
                let binding = match kind {
                    SendKind::Cmd => Binding::Cmd(once),
                    _ => Binding::Buffer(key),
                };
                let sealed = self.client.seal(&self.user, target, binding, &data);
                sealed.map_err(SendError::Sealing)?
            }
            None => data,
        };
        let resend = match (once, key) {
            (Some(once), _) => Some(Resend::Cmd {
                to: to.into(),
                data: data.clone(),
                once,
            }),
            (_, Some(key)) => Some(Resend::Buffer {
                to: to.into(),
                data: data.clone(),
                key,
            }),
            _ => None,
        };
        self.start(now, kind, cookie, resend, id, |c| match kind {
            SendKind::Cmd => c.send_cmd(now, to, data, cookie),
            _ => c.send_buffer(now, to, data, cookie),
        })
    }

    /// A sealed send waits for its receiver's key, asked for now if the connection is up.
    fn await_key(
        &mut self,
        now: Instant,
        kind: SendKind,
        to: UserId,
        what: Awaited,
        cookie: u64,
        id: Option<SendId>,
    ) -> Result<SendId, SendError> {
        self.now = now;
        if self.closing {
            return Err(SendError::Closed);
        }
        let queued = self.awaiting_key.len() + self.sends.waiting();
        if id.is_none() && queued >= self.config.max_queued_sends {
            return Err(SendError::QueueFull);
        }
        let id = id.unwrap_or_else(|| self.sends.reserve());
        self.awaiting_key.push_back(AwaitingKey {
            id,
            kind,
            to: to.clone(),
            what,
            cookie,
        });
        self.ask_key(&to);
        Ok(id)
    }

    /// Asks for `user`'s key on a live connection (a new one asks again for every send
    /// still waiting). A relay that does not give keys has none to give.
    fn ask_key(&mut self, user: &UserId) {
        if !self.is_logged_in() {
            return;
        }
        match self.client.peer_has_keys() {
            true => self.client.query_key(user.clone()),
            false => self.keys_heard(user.clone(), None, None),
        }
    }

    /// `user`'s key was heard (or there is none): the sends waiting for it are sealed and
    /// go, or end with the reason.
    fn keys_heard(&mut self, user: UserId, key: Option<IdentityKey>, status: Option<KeyStatus>) {
        let code = match (key, status) {
            (None, _) => Some(ErrorCode::NO_PEER_KEY),
            (Some(_), None | Some(KeyStatus::Learned)) => None,
            (Some(_), Some(KeyStatus::Changed { .. })) => Some(ErrorCode::PEER_KEY_CHANGED),
            (Some(_), Some(KeyStatus::Unknown)) => Some(ErrorCode::NO_PEER_KEY),
        };
        let (go, stay): (VecDeque<_>, VecDeque<_>) = core::mem::take(&mut self.awaiting_key)
            .into_iter()
            .partition(|a| a.to == user);
        self.awaiting_key = stay;
        for a in go {
            let started = match code {
                Some(code) => Err(SendError::Sealing(code)),
                None => {
                    let (now, to, id) = (self.now, a.to.as_str(), Some(a.id));
                    match a.what {
                        Awaited::Data(data) => self.send_data(now, a.kind, to, data, a.cookie, id),
                        Awaited::File { name, size, key } => {
                            self.file(now, to, &name, size, key, a.cookie, id)
                        }
                    }
                }
            };
            if let Err(e) = started {
                self.tell_ended([Ended {
                    id: a.id,
                    kind: a.kind,
                    code: e.code(),
                    cookie: a.cookie,
                }]);
            }
        }
    }

    /// `sendFile` of `size` bytes under `key` (its bytes come as [`Event::FileRead`]):
    /// cut off, it goes on from what its receiver holds. Where sealing is on, each attempt
    /// is sealed for its receiver (by the client: a file's bytes are read again on every
    /// attempt), once its key is known.
    pub fn send_file(
        &mut self,
        now: Instant,
        to: &str,
        name: &str,
        size: u64,
        key: ResumeKey,
        cookie: u64,
    ) -> Result<SendId, SendError> {
        self.file(now, to, name, size, key, cookie, None)
    }

    /// [`Continuity::send_file`], under `id` if it waited for its receiver's key.
    #[allow(clippy::too_many_arguments)]
    fn file(
        &mut self,
        now: Instant,
        to: &str,
        name: &str,
        size: u64,
        key: ResumeKey,
        cookie: u64,
        id: Option<SendId>,
    ) -> Result<SendId, SendError> {
        if self.client.is_sealing() {
            let target = UserId::new(to).map_err(SendError::InvalidTarget)?;
            if self.client.pinned_key(&target).is_none() {
                let name = name.into();
                let what = Awaited::File { name, size, key };
                return self.await_key(now, SendKind::File, target, what, cookie, id);
            }
        }
        let resend = self.policy.map(|_| Resend::File {
            to: to.into(),
            name: name.into(),
            size,
            key,
        });
        self.start(now, SendKind::File, cookie, resend, id, |c| {
            c.send_file_resumable(now, to, name, size, key, cookie)
        })
    }

    fn start(
        &mut self,
        now: Instant,
        kind: SendKind,
        cookie: u64,
        resend: Option<Resend>,
        id: Option<SendId>,
        plain: impl FnOnce(&mut Client) -> Result<SendId, SendError>,
    ) -> Result<SendId, SendError> {
        self.now = now;
        if self.closing {
            return Err(SendError::Closed);
        }
        // Before a login is accepted, a send that can wait does.
        let connected = matches!(
            self.link,
            Link::Up {
                logged_in: true,
                ..
            }
        ) && !self.client.is_closed();
        // The first sending and every re-send go the same way, when there is a way to
        // send again; else as a plain send.
        let first = resend.clone();
        let client = &mut self.client;
        let (id, waits) = self.sends.start(
            now,
            Made { id, kind, cookie },
            resend,
            connected,
            || match first {
                Some(resend) => resend.start(client, now, cookie, false),
                None => plain(client),
            },
        )?;
        if let Some(code) = waits {
            self.tell_waiting(id, now, code);
        }
        Ok(id)
    }

    /// `cancelSend` of send `id`: on the connection (its result follows), or waiting (it
    /// ends at once with `CANCELLED`). `TRANSID_INVALID` for one not known.
    pub fn cancel_send(&mut self, id: SendId, cookie: u64) -> ErrorCode {
        if let Some(at) = self.awaiting_key.iter().position(|a| a.id == id) {
            if let Some(a) = self.awaiting_key.remove(at) {
                self.tell_ended([Ended {
                    id,
                    kind: a.kind,
                    code: ErrorCode::CANCELLED,
                    cookie: a.cookie,
                }]);
            }
            return ErrorCode::NOERR;
        }
        if let Some(on) = self.sends.on_conn(id) {
            return self.client.cancel_send(on, cookie);
        }
        match self.sends.cancel_waiting(id) {
            Some(ended) => {
                self.tell_ended([ended]);
                ErrorCode::NOERR
            }
            None => ErrorCode::TRANSID_INVALID,
        }
    }

    /// The bytes an [`Event::FileRead`] asked for.
    pub fn supply_file_data(
        &mut self,
        id: SendId,
        offset: u64,
        data: Bytes,
    ) -> Result<(), ActionError> {
        let on = self.sends.on_conn(id).ok_or(ActionError::UnknownId)?;
        self.client.supply_file_data(on, offset, data)
    }

    /// The file of send `id` could not be read.
    pub fn file_read_failed(&mut self, id: SendId) -> Result<(), ActionError> {
        let on = self.sends.on_conn(id).ok_or(ActionError::UnknownId)?;
        self.client.file_read_failed(on)
    }

    /// `true` while send `id` re-reads what its receiver holds to check a resume
    /// ([`Client::is_checking_resume`]).
    pub fn is_checking_resume(&self, id: SendId) -> bool {
        self.sends
            .on_conn(id)
            .is_some_and(|on| self.client.is_checking_resume(on))
    }

    /// Sends waiting for a connection or their receiver.
    pub fn waiting_sends(&self) -> usize {
        self.sends.waiting()
    }

    // ----- Receiving -----------------------------------------------------------------

    /// [`Client::reject`] on the current connection.
    pub fn reject(&mut self, id: ReceiveId, code: ErrorCode) -> Result<(), ActionError> {
        self.client.reject(id, code)
    }

    /// [`Client::accept_delivery`] on the current connection.
    pub fn accept_delivery(&mut self, id: ReceiveId) -> Result<(), ActionError> {
        self.client.accept_delivery(id)
    }

    /// [`Client::fail_delivery`] on the current connection.
    pub fn fail_delivery(&mut self, id: ReceiveId, code: ErrorCode) -> Result<(), ActionError> {
        self.client.fail_delivery(id, code)
    }

    /// [`Client::resume_incoming`]: a keyed file's offer answered from what the runtime
    /// holds of it on disk.
    pub fn resume_incoming(
        &mut self,
        id: ReceiveId,
        offset: u64,
        digest: Digest,
    ) -> Result<(), ActionError> {
        self.client.resume_incoming(id, offset, digest)
    }

    /// [`Client::incoming_kind`] on the current connection.
    pub fn incoming_kind(&self, id: ReceiveId) -> Option<SendKind> {
        self.client.incoming_kind(id)
    }

    /// [`Client::accept_only_from`], on this connection and the next ones.
    pub fn accept_only_from(&mut self, senders: Option<BTreeSet<UserId>>) {
        self.client.accept_only_from(senders);
    }

    /// The application is done: the connection closes, nothing reconnects, waiting sends
    /// end with `CONNECTIONLOST`.
    pub fn close(&mut self) {
        self.closing = true;
        self.client.close();
        self.give_up_link();
    }

    // ----- Inputs --------------------------------------------------------------------

    /// Bytes from the transport, split anywhere; they are copied.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        self.now = now;
        self.client.handle_input(now, bytes);
        self.check_link();
    }

    /// Bytes from the transport, handed over without a copy.
    pub fn handle_input_buf(&mut self, now: Instant, bytes: BytesMut) {
        self.now = now;
        self.client.handle_input_buf(now, bytes);
        self.check_link();
    }

    /// The transport was lost.
    pub fn handle_disconnect(&mut self, now: Instant) {
        self.now = now;
        self.client.handle_disconnect();
        self.check_link();
    }

    /// The passing of time: the connection's timers, sends tried again or given up, and
    /// the end of the window for reconnecting.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if !self.client.is_closed() {
            self.client.handle_timeout(now);
        }
        self.check_link();
        let Some(policy) = self.policy else {
            return;
        };
        let ended = self.sends.give_up(now, Some(policy.window));
        self.tell_ended(ended);
        match self.link {
            Link::Up {
                logged_in: true, ..
            } if self.sends.retry_at().is_some_and(|at| at <= now) => self.resubmit(now),
            Link::Down(redial) if now >= redial.since + policy.window => self.give_up_link(),
            _ => {}
        }
    }

    // ----- Connections ---------------------------------------------------------------

    /// `true` while there is a connection to drive (it may be ending: drive it until its
    /// output is drained).
    pub fn is_connected(&self) -> bool {
        !self.client.is_closed()
    }

    /// `true` while the connection is live and its login was accepted.
    pub fn is_logged_in(&self) -> bool {
        !self.client.is_closed() && self.client.is_logged_in()
    }

    /// When to dial again: `None` while a connection is live, and once it will not
    /// reconnect (never logged in, closed, refused, replaced, or the window passed).
    pub fn poll_redial(&mut self) -> Option<Instant> {
        self.check_link();
        match self.link {
            Link::Down(redial) => Some(redial.next),
            _ => None,
        }
    }

    /// The attempt to dial at `now` failed: the next waits longer; past the window, the
    /// client gives up.
    pub fn redial_failed(&mut self, now: Instant) {
        self.now = now;
        if let (Link::Down(redial), Some(policy)) = (&mut self.link, self.policy) {
            redial.failed(now, policy.max_backoff, &mut self.rng);
            if now >= redial.since + policy.window {
                self.give_up_link();
            }
        }
    }

    /// Attempts made since the connection was lost.
    pub fn redial_attempts(&self) -> u32 {
        match self.link {
            Link::Down(redial) => redial.attempts,
            _ => 0,
        }
    }

    /// A new transport at `now`: a new connection's client, logging in again, which
    /// inherits what this user delivered. Waiting sends go on once it is logged in.
    pub fn connected(&mut self, now: Instant) {
        self.now = now;
        if !matches!(self.link, Link::Down(_)) {
            return;
        }
        let Ok(mut client) = Client::new(self.config, now) else {
            return; // checked when first made
        };
        if client.login(self.user.as_str(), &self.token).is_err() {
            return;
        }
        // What the old connection said of our sends is heard; what it said of messages
        // coming to us goes with it (their senders send them again).
        while let Some(event) = self.client.poll_send_event() {
            if let Some(event) = self.translate(event) {
                self.own.push_back(event);
            }
        }
        client.carry_from(&mut self.client);
        self.client = client;
        self.sends.connection_over();
        self.held.new_connection();
        self.link = Link::Up {
            logged_in: false,
            again: true,
        };
    }

    // ----- Outputs -------------------------------------------------------------------

    /// Bytes to write, appended to `out`; how many.
    pub fn poll_transmit<S: FrameSink + ?Sized>(&mut self, out: &mut S) -> usize {
        self.client.poll_transmit(out)
    }

    /// The next event. Taking one can let frames out: drain
    /// [`Continuity::poll_transmit`] after events.
    pub fn poll_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.own.pop_front() {
                return Some(event);
            }
            let event = self.client.poll_event()?;
            if let Some(event) = self.translate(event) {
                return Some(event);
            }
        }
    }

    /// The next event about one of our sends ([`Event::send_id`]), ahead of the rest
    /// ([`Client::poll_send_event`]).
    pub fn poll_send_event(&mut self) -> Option<Event> {
        loop {
            let own = self.own.iter().position(|e| e.send_id().is_some());
            if let Some(event) = own.and_then(|at| self.own.remove(at)) {
                return Some(event);
            }
            let event = self.client.poll_send_event()?;
            if let Some(event) = self.translate(event) {
                return Some(event);
            }
        }
    }

    /// The drive loop in one call, as [`Client::poll_output`]; [`Output::Closed`] once the
    /// user is done for good.
    pub fn poll_output<S: FrameSink + ?Sized>(&mut self, out: &mut S) -> Output {
        crate::client::poll_output(self, out)
    }

    /// When [`Continuity::handle_timeout`] should next be called: the connection's timers,
    /// waiting sends tried again or given up, the next dial; `None` once over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let window = self.policy.map_or(Duration::ZERO, |p| p.window);
        let give_up = self.sends.next_give_up(window);
        let at = match self.link {
            Link::Up { logged_in, .. } => {
                let retry = self.sends.retry_at().filter(|_| logged_in);
                [self.client.poll_timeout(), retry, give_up]
                    .into_iter()
                    .flatten()
                    .min()
            }
            Link::Down(redial) => Some(redial.next.min(redial.since + window)),
            Link::Over => None,
        };
        match (at, give_up) {
            (Some(at), Some(g)) => Some(at.min(g)),
            (at, g) => at.or(g),
        }
    }

    // ----- Rules ---------------------------------------------------------------------

    /// Follows the connection: a login accepted (waiting sends go on), a connection over
    /// (reconnect, or not).
    fn check_link(&mut self) {
        while let Some((user, key, status)) = self.client.take_key_heard() {
            self.keys_heard(user, key, status);
        }
        let Link::Up { logged_in, again } = self.link else {
            return;
        };
        if !logged_in && self.client.is_logged_in() {
            self.logged_in = true;
            self.link = Link::Up {
                logged_in: true,
                again,
            };
            if again {
                self.own.push_back(Event::Reconnected);
            }
            self.resubmit(self.now);
            let users: BTreeSet<UserId> = self.awaiting_key.iter().map(|a| a.to.clone()).collect();
            for user in users {
                self.ask_key(&user);
            }
        }
        if !self.client.is_closed() {
            return;
        }
        let replaced = self.client.close_code() == Some(ErrorCode::KICKOUT_BY_RELOGIN);
        match self.policy {
            Some(policy) if self.logged_in && !self.closing && !replaced => {
                self.link = Link::Down(Redial::lost(self.now, policy.backoff, &mut self.rng));
            }
            // Its sends' results are still to come from the client; any that waits ends
            // now.
            _ => {
                self.closing |= replaced;
                self.give_up_link();
            }
        }
    }

    /// No more connections: waiting sends end, and the application hears the end if the
    /// last connection's was not told.
    fn give_up_link(&mut self) {
        let down = matches!(self.link, Link::Down(_));
        self.link = Link::Over;
        let ended = self.sends.give_up(self.now, None);
        self.tell_ended(ended);
        let awaiting: Vec<_> = self.awaiting_key.drain(..).collect();
        self.tell_ended(awaiting.into_iter().map(|a| Ended {
            id: a.id,
            kind: a.kind,
            code: ErrorCode::CONNECTIONLOST,
            cookie: a.cookie,
        }));
        if down {
            self.own.push_back(Event::Closed {
                code: ErrorCode::CONNECTIONLOST,
                reason: CloseReason::TransportLost,
            });
        }
    }

    /// Waiting sends start again on the live connection.
    fn resubmit(&mut self, now: Instant) {
        let ended = self.sends.resubmit(&mut self.client, now);
        self.tell_ended(ended);
    }

    fn tell_ended(&mut self, ended: impl IntoIterator<Item = Ended>) {
        for e in ended {
            self.own.push_back(Event::SendResult {
                id: e.id,
                kind: e.kind,
                code: e.code,
                cookie: e.cookie,
            });
        }
    }

    fn tell_waiting(&mut self, id: SendId, since: Instant, code: ErrorCode) {
        let event = self.waiting_event(id, since, code);
        self.own.push_back(event);
    }

    /// Send `id` waits since `since` because of `code`, until the window's end.
    fn waiting_event(&self, id: SendId, since: Instant, code: ErrorCode) -> Event {
        let window = self.policy.map_or(Duration::ZERO, |p| p.window);
        Event::SendWaiting {
            id,
            code,
            since,
            deadline: since + window,
        }
    }

    /// Whether our send `id` is a sealed buffer: its progress and resume offsets count
    /// sealed bytes on the connection, and plain ones for the application.
    fn sealed_buffer(&self, id: SendId) -> bool {
        self.client.is_sealing() && self.sends.kind(id) == Some(SendKind::Buffer)
    }

    /// An event of the connection's client, as the application hears it: our sends by
    /// the ids it knows; keyed buffers resumed, or confirmed and dropped as repeats; the
    /// end of a connection that will be replaced, not told.
    fn translate(&mut self, event: Event) -> Option<Event> {
        let now = self.now;
        match event {
            Event::SendResult {
                id,
                kind,
                code,
                cookie,
            } => {
                let may_wait = self.policy.is_some() && !self.closing;
                let outcome = self.sends.result(now, id, code, may_wait);
                if self.sends.take_released() && self.is_logged_in() {
                    self.resubmit(now);
                }
                match outcome {
                    Outcome::Result(id) => Some(Event::SendResult {
                        id,
                        kind,
                        code,
                        cookie,
                    }),
                    // Given up, if it comes to that, at the deadline (`handle_timeout`).
                    Outcome::Waits(id, since, code) => {
                        let retry = self.policy.map_or(Duration::ZERO, |p| p.retry);
                        self.sends.retry_later(now + retry);
                        Some(self.waiting_event(id, since, code))
                    }
                    Outcome::Unknown => None,
                }
            }
            Event::Progress {
                id,
                sent,
                total,
                cookie,
            } => {
                let id = self.sends.ours(id)?;
                let (sent, total) = match self.sealed_buffer(id) {
                    true => (seal::plain_of(sent, total), seal::plain_of(total, total)),
                    false => (sent, total),
                };
                Some(Event::Progress {
                    id,
                    sent,
                    total,
                    cookie,
                })
            }
            Event::CancelResult { id, code, cookie } => Some(Event::CancelResult {
                id: self.sends.ours(id).unwrap_or(id),
                code,
                cookie,
            }),
            Event::FileRead { id, offset, len } => Some(Event::FileRead {
                id: self.sends.ours(id)?,
                offset,
                len,
            }),
            Event::Resumed { id, offset, cookie } => {
                let id = self.sends.ours(id)?;
                let offset = match (self.sealed_buffer(id), self.sends.buffer_len(id)) {
                    (true, Some(len)) => seal::plain_of(offset, len),
                    _ => offset,
                };
                Some(Event::Resumed { id, offset, cookie })
            }
            Event::Offer {
                id,
                kind: SendKind::Buffer,
                ref from,
                size,
                resume_key: Some(key),
                ..
            } => {
                if let Some(policy) = self.policy {
                    self.held.expire(now, policy.window);
                }
                let answer = match self.held.offered(id, from, key, size) {
                    Answer::Whole(size, digest) => self.client.resume_incoming(id, size, digest),
                    Answer::From(held) => self.client.resume_incoming_buffer(id, held),
                };
                // A buffer ended meanwhile needs no answer.
                let _ = answer;
                Some(event)
            }
            Event::ReceiveSuspended { id, from, data, .. } => {
                self.held.suspended(now, id, data);
                Some(Event::ReceiveFailed {
                    id,
                    from,
                    code: ErrorCode::CONNECTIONLOST,
                })
            }
            Event::ReceiveFailed { id, .. } => {
                self.held.failed(id);
                Some(event)
            }
            Event::BufferReceived { id, ref data, .. } => {
                if self.held.received(now, id, data) {
                    // Delivered before; its sender never heard. Confirmed, not delivered
                    // again (taking it confirmed it, unless the application confirms
                    // buffers itself).
                    let _ = self.client.accept_delivery(id);
                    return None;
                }
                Some(event)
            }
            Event::LoginResult { code } if !code.is_success() => {
                // Refused: no trying again.
                self.closing = true;
                match self.link {
                    Link::Down(_) => self.give_up_link(),
                    _ => {
                        let ended = self.sends.give_up(now, None);
                        self.tell_ended(ended);
                    }
                }
                Some(event)
            }
            // The first acceptance is told; later ones are said as `Reconnected`.
            Event::LoginResult { .. } if self.told_login => None,
            Event::LoginResult { .. } => {
                self.told_login = true;
                Some(event)
            }
            // The end of a connection that is replaced is not the end.
            Event::Closed { .. } if matches!(self.link, Link::Down(_)) => None,
            other => Some(other),
        }
    }
}

impl crate::client::Endpoint for Continuity {
    fn next_event(&mut self) -> Option<Event> {
        self.poll_event()
    }
    fn transmit<S: FrameSink + ?Sized>(&mut self, out: &mut S) -> usize {
        self.poll_transmit(out)
    }
    fn next_timeout(&self) -> Option<Instant> {
        self.poll_timeout()
    }
}
