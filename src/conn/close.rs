//! Why a connection ends: every protocol violation a peer can commit, with its code and
//! reason written once for the client and the relay, and the typed reason a `Closed` event
//! carries.

use core::fmt;

use crate::wire::{DecodeError, Text};
use crate::ErrorCode;

/// A peer broke the protocol: the connection is closed with [`Violation::code`] and the
/// reason [`Violation::reason`] in the `CLOSE` frame.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// The bytes are not a valid frame, or one over the limits (its code says which).
    Decode(DecodeError),
    /// The first frame is not `HELLO`.
    FirstFrameNotHello,
    /// A `HELLO` after the first.
    SecondHello,
    /// A `HELLO` without version 1 and CRC-32C.
    UnsupportedVersion,
    /// A `HELLO` with the relay role where only a client may be.
    NotAClient,
    /// A `HELLO` with the client role on a link between relays.
    NotARelay,
    /// A `LOGIN` to a client from a relay.
    LoginFromRelay,
    /// A second `LOGIN` on one connection.
    SecondLogin,
    /// A `LOGIN_RESULT` nobody asked for.
    UnaskedLoginResult,
    /// A frame the peer's role never sends here.
    UnexpectedFrame,
    /// A message or command before the login was accepted.
    NotLoggedIn,
    /// More frames before login than a relay allows.
    TooManyFramesBeforeLogin,
    /// A new message whose id is not the next one.
    IdOutOfOrder,
    /// A frame for a message id the peer never opened.
    NeverOpened,
    /// A frame for a message id we never sent.
    NeverSent,
    /// A piece that does not fit its message (wrong kind, after `END`, or an `END` for a
    /// command).
    OutOfPlace,
    /// Bytes at the wrong offset or past the declared size.
    BytesOutOfPlace,
    /// `DATA` beyond the transfer's credit.
    BeyondTransferCredit,
    /// Message bytes beyond the connection's credit.
    BeyondConnCredit,
    /// A `CREDIT` above what was forwarded plus the announced transfer window.
    CreditBeyondWindow,
    /// A `CONN_CREDIT` above what was sent plus the announced connection window.
    ConnCreditBeyondWindow,
    /// `RESULT(NOERR)` before the whole message.
    EarlySuccess,
}

impl Violation {
    /// The code the `CLOSE` carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            Violation::Decode(e) => e.code(),
            Violation::UnsupportedVersion => ErrorCode::UNSUPPORTED_VERSION,
            Violation::NotLoggedIn => ErrorCode::NOT_LOGIN,
            Violation::TooManyFramesBeforeLogin => ErrorCode::LIMIT_EXCEEDED,
            Violation::BeyondTransferCredit
            | Violation::BeyondConnCredit
            | Violation::CreditBeyondWindow
            | Violation::ConnCreditBeyondWindow => ErrorCode::FLOW_CONTROL,
            _ => ErrorCode::PROTOCOL_VIOLATION,
        }
    }

    /// The reason the `CLOSE` carries, in a few words.
    pub fn reason(&self) -> &'static str {
        match self {
            Violation::Decode(_) => "undecodable frame",
            Violation::FirstFrameNotHello => "first frame is not HELLO",
            Violation::SecondHello => "second HELLO",
            Violation::UnsupportedVersion => "peer lacks version 1 with CRC-32C",
            Violation::NotAClient => "HELLO from a relay where a client belongs",
            Violation::NotARelay => "HELLO from a client where a relay belongs",
            Violation::LoginFromRelay => "LOGIN from a relay",
            Violation::SecondLogin => "second LOGIN",
            Violation::UnaskedLoginResult => "LOGIN_RESULT without LOGIN",
            Violation::UnexpectedFrame => "frame the peer's role does not send",
            Violation::NotLoggedIn => "not logged in",
            Violation::TooManyFramesBeforeLogin => "too many frames before login",
            Violation::IdOutOfOrder => "message id out of order",
            Violation::NeverOpened => "frame for a message never opened",
            Violation::NeverSent => "frame for a message never sent",
            Violation::OutOfPlace => "frame does not fit the message",
            Violation::BytesOutOfPlace => "bytes out of place",
            Violation::BeyondTransferCredit => "DATA beyond transfer credit",
            Violation::BeyondConnCredit => "message bytes beyond connection credit",
            Violation::CreditBeyondWindow => "CREDIT beyond what was sent plus the window",
            Violation::ConnCreditBeyondWindow => "CONN_CREDIT beyond what was sent plus the window",
            Violation::EarlySuccess => "RESULT(NOERR) before the whole message",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Decode(e) => write!(f, "{e}"),
            other => f.write_str(other.reason()),
        }
    }
}

/// Why a connection ended, as its `Closed` event says.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// This side's application closed it (`close`), or a relay closed it on its
    /// application's word (a shutdown).
    Local,
    /// The peer sent `CLOSE`, with this reason.
    Peer(Text),
    /// The peer broke the protocol; we sent `CLOSE` saying so.
    Violation(Violation),
    /// Nothing heard from the peer for the idle timeout.
    IdleTimeout,
    /// A relay's connection did not log in by its deadline.
    LoginTimeout,
    /// A relay refused the login.
    LoginRefused,
    /// A newer login of the same user replaced this session.
    Replaced,
    /// The peer did not read what a relay queued for it.
    NotReading,
    /// The transport closed under the connection.
    TransportLost,
    /// A frame of ours could not be encoded (a value over 2^62): a bug, not the peer's.
    Unencodable,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed here"),
            CloseReason::Peer(reason) if reason.as_str().is_empty() => {
                f.write_str("closed by the peer")
            }
            CloseReason::Peer(reason) => write!(f, "closed by the peer: {}", reason.as_str()),
            CloseReason::Violation(v) => write!(f, "peer broke the protocol: {v}"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::LoginTimeout => f.write_str("no login in time"),
            CloseReason::LoginRefused => f.write_str("login refused"),
            CloseReason::Replaced => f.write_str("logged in elsewhere"),
            CloseReason::NotReading => f.write_str("peer does not read"),
            CloseReason::TransportLost => f.write_str("transport closed"),
            CloseReason::Unencodable => f.write_str("frame not encodable"),
        }
    }
}

impl CloseReason {
    /// The text our `CLOSE` frame carries for this reason.
    pub(crate) fn wire_text(&self) -> Text {
        match self {
            CloseReason::Local => Text::new(),
            CloseReason::Violation(v) => Text::from(alloc::format!("{v}").as_str()),
            other => Text::from(alloc::format!("{other}").as_str()),
        }
    }
}
