//! What every connection does, whoever holds it: the client holds one [`Session`], the
//! relay one per connection. The rules here are written once for both.
//!
//! - [`Session`]: the input (inbox and decoder), the handshake rules, the peer's state as
//!   one enum ([`PeerState`]), connection credit both ways, when the peer was last heard.
//! - [`ids`]: message ids, allocated in order and classified (in progress, ended, never).
//! - [`credit`]: connection credit, given and received.
//! - [`arrival`]: the rules a message's pieces keep as they arrive (the receiver's and the
//!   relay's checks are one).
//! - [`close`]: every protocol violation with its code and reason, and the typed reason a
//!   `Closed` event carries.
//! - [`transmit`]: how frames are batched into a caller's sink.

pub(crate) mod arrival;
pub mod close;
pub(crate) mod credit;
pub(crate) mod ids;

use bytes::BytesMut;

use crate::wire::{
    Capabilities, DecodeError, Decoder, Frame, FrameSink, Hello, Inbox, Limits, LimitsError, Role,
    UserId, VERSION,
};
use crate::Instant;
pub use close::{CloseReason, Violation};
use credit::{RecvWindow, SendWindow};

/// Where the peer stands on a connection: one enum, so no two states can hold at once.
/// A relay moves its clients through all of them; a client sees its peer greet it, and on
/// a direct link log in (accepted at once).
#[derive(Clone, Debug)]
pub(crate) enum PeerState {
    /// Nothing heard yet: only a `HELLO` may come.
    Greeting,
    /// The peer said `HELLO`; it is not logged in.
    Greeted { hello: Hello },
    /// The peer's `LOGIN` waits for an answer.
    LoggingIn { hello: Hello, user: UserId },
    /// The peer is logged in as `user`.
    LoggedIn { hello: Hello, user: UserId },
    /// Over; what the peer was, for the report.
    Closed { user: Option<UserId> },
}

/// One connection's shared part.
#[derive(Debug)]
pub(crate) struct Session {
    input: Inbox,
    decoder: Decoder,
    state: PeerState,
    /// Connection credit we give the peer.
    pub(crate) recv: RecvWindow,
    /// Connection credit the peer gives us.
    pub(crate) send: SendWindow,
    /// When the last whole frame came.
    last_heard: Instant,
}

impl Session {
    /// A connection at `now`, accepting frames within `limits`, giving credit by `recv`.
    pub(crate) fn new(limits: Limits, recv: RecvWindow, now: Instant) -> Result<Self, LimitsError> {
        Ok(Session {
            input: Inbox::new(),
            decoder: Decoder::new(limits)?,
            state: PeerState::Greeting,
            recv,
            send: SendWindow::default(),
            last_heard: now,
        })
    }

    /// Bytes from the transport, copied.
    pub(crate) fn push_slice(&mut self, bytes: &[u8]) {
        self.input.push_slice(bytes);
    }

    /// Bytes from the transport, kept (payloads are handed on as slices of them).
    pub(crate) fn push_owned(&mut self, bytes: BytesMut) {
        self.input.push_owned(bytes);
    }

    /// The next whole frame from the peer; `None` once closed or until more bytes come.
    /// Pass it to [`Session::admit`] before anything else looks at it.
    #[inline]
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if self.is_closed() {
            return Ok(None);
        }
        self.input.next_frame(&self.decoder)
    }

    /// The handshake rules (docs/PROTOCOL.md, "Handshake") for a frame that came at `now`:
    /// the first frame must be a `HELLO` with version 1 and CRC-32C, from a role `roles`
    /// allows; no `HELLO` may follow. `Ok(true)` if the session took the frame (the
    /// `HELLO`, which sets the connection credit we have), `Ok(false)` to handle it. Only a
    /// whole frame counts as hearing from the peer. (Checked by reference, so a frame is
    /// moved once, to whoever handles it.)
    #[inline]
    pub(crate) fn admit(
        &mut self,
        now: Instant,
        frame: &Frame,
        roles: fn(Role) -> bool,
    ) -> Result<bool, Violation> {
        self.last_heard = now;
        match (&self.state, frame) {
            (PeerState::Greeting, Frame::Hello(hello)) => {
                self.greet(hello.clone(), roles)?;
                Ok(true)
            }
            (PeerState::Greeting, _) => Err(Violation::FirstFrameNotHello),
            (_, Frame::Hello(_)) => Err(Violation::SecondHello),
            _ => Ok(false),
        }
    }

    /// The peer's `HELLO`, its first frame.
    fn greet(&mut self, hello: Hello, roles: fn(Role) -> bool) -> Result<(), Violation> {
        if hello.version < VERSION || !hello.capabilities.contains(Capabilities::DIGEST_CRC32C) {
            return Err(Violation::UnsupportedVersion);
        }
        if !roles(hello.role) {
            return Err(match hello.role {
                Role::Relay => Violation::NotAClient,
                Role::Client => Violation::NotARelay,
            });
        }
        // The peer's first grant is its announced window.
        let _ = self.send.raise(hello.conn_window, None);
        self.state = PeerState::Greeted { hello };
        Ok(())
    }

    /// The peer's `HELLO`, once it came.
    pub(crate) fn peer(&self) -> Option<&Hello> {
        match &self.state {
            PeerState::Greeted { hello }
            | PeerState::LoggingIn { hello, .. }
            | PeerState::LoggedIn { hello, .. } => Some(hello),
            PeerState::Greeting | PeerState::Closed { .. } => None,
        }
    }

    /// The user the peer is logged in as.
    pub(crate) fn user(&self) -> Option<&UserId> {
        match &self.state {
            PeerState::LoggedIn { user, .. } => Some(user),
            PeerState::Closed { user } => user.as_ref(),
            _ => None,
        }
    }

    pub(crate) fn is_logged_in(&self) -> bool {
        matches!(self.state, PeerState::LoggedIn { .. })
    }

    /// The peer's `LOGIN` as `user`: it waits for an answer. Only one per connection.
    pub(crate) fn begin_login(&mut self, user: UserId) -> Result<(), Violation> {
        match &self.state {
            PeerState::Greeted { hello } => {
                let hello = hello.clone();
                self.state = PeerState::LoggingIn { hello, user };
                Ok(())
            }
            _ => Err(Violation::SecondLogin),
        }
    }

    /// The pending login is accepted; gives its user.
    pub(crate) fn accept_login(&mut self) -> Option<UserId> {
        let PeerState::LoggingIn { hello, user } = &self.state else {
            return None;
        };
        let (hello, user) = (hello.clone(), user.clone());
        self.state = PeerState::LoggedIn {
            hello,
            user: user.clone(),
        };
        Some(user)
    }

    /// A link between relays: once the other relay greeted, it speaks for `user` (the
    /// user its messages go to or come from) without a `LOGIN`. `false` if it has not
    /// greeted.
    pub(crate) fn link_up(&mut self, user: UserId) -> bool {
        let PeerState::Greeted { hello } = &self.state else {
            return false;
        };
        let hello = hello.clone();
        self.state = PeerState::LoggedIn { hello, user };
        true
    }

    /// The pending login is refused; `false` if there was none.
    pub(crate) fn refuse_login(&mut self) -> bool {
        let PeerState::LoggingIn { hello, .. } = &self.state else {
            return false;
        };
        self.state = PeerState::Greeted {
            hello: hello.clone(),
        };
        true
    }

    /// Ends the connection; `false` if it was over already.
    pub(crate) fn close(&mut self) -> bool {
        if self.is_closed() {
            return false;
        }
        let user = match &self.state {
            PeerState::LoggedIn { user, .. } => Some(user.clone()),
            _ => None,
        };
        self.state = PeerState::Closed { user };
        true
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.state, PeerState::Closed { .. })
    }

    pub(crate) fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// Received bytes not yet decoded.
    pub(crate) fn input_len(&self) -> usize {
        self.input.len()
    }
}

/// Appends frames from `next` to `out` until at least `max` bytes were appended or `next`
/// has none, and gives the bytes appended; `Err` (with what was appended) if a frame could
/// not be encoded, which only a value over 2^62 can cause: the holder closes with
/// [`CloseReason::Unencodable`].
#[inline]
pub(crate) fn transmit<S: FrameSink + ?Sized>(
    out: &mut S,
    max: usize,
    mut next: impl FnMut() -> Option<Frame>,
) -> Result<usize, usize> {
    let start = out.len();
    while out.len() - start < max {
        let Some(frame) = next() else {
            break;
        };
        if out.put_frame(&frame).is_err() {
            return Err(out.len() - start);
        }
    }
    Ok(out.len() - start)
}
