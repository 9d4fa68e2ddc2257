//! Error codes with wire-stable numbers.
//!
//! Numbers below 9000 are those of the SDK's `CRVIDEOSDK_ERR_DEF` where one fits; codes
//! peermsg adds live in 9000..=9999, a range the SDK does not use. `docs/PROTOCOL.md` holds
//! the same table. Any `u32` is a valid `ErrorCode` on the wire: a code this version does
//! not know is carried as is and shown by number.

use core::fmt;

/// A result or failure code, as carried in `RESULT`, `CANCEL`, `LOGIN_RESULT` and `CLOSE`
/// frames and in result events.
///
/// ```
/// use peermsg::ErrorCode;
///
/// assert_eq!(ErrorCode::OFFLINE.as_u32(), 603);
/// assert_eq!(ErrorCode::from_u32(603), ErrorCode::OFFLINE);
/// assert_eq!(ErrorCode::OFFLINE.name(), Some("OFFLINE"));
/// assert_eq!(ErrorCode::OFFLINE.to_string(), "603 OFFLINE: target user not connected");
/// assert_eq!(ErrorCode::from_u32(4242).to_string(), "4242 (unknown code)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ErrorCode(u32);

/// Declares the codes once: the constants and the table that names them come from one list.
macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $num:literal, $meaning:literal;)*) => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: ErrorCode = ErrorCode($num);)*
        }
        const TABLE: &[(ErrorCode, &str, &str)] = &[$((ErrorCode::$name, stringify!($name), $meaning),)*];
    };
}

codes! {
    /// Success.
    NOERR = 0, "success";
    /// Anything not covered by another code.
    UNKNOWERR = 1, "unknown error";
    /// Empty or malformed user id, or another bad argument.
    PARAM_ERR = 5, "bad argument";
    /// This login was replaced by a newer login of the same user.
    KICKOUT_BY_RELOGIN = 10, "logged in elsewhere";
    /// A send was attempted before login succeeded.
    NOT_LOGIN = 12, "not logged in";
    /// No answer within the configured time.
    SOCKETTIMEOUT = 205, "timed out";
    /// The connection went away with the send pending.
    CONNECTIONLOST = 207, "connection lost";
    /// The target user is not connected.
    OFFLINE = 603, "target user not connected";
    /// The send failed for another reason.
    SENDFAIL = 1000, "send failed";
    /// The command is over the size cap.
    SENDCMD_LARGE = 1100, "command too large";
    /// The buffer is over the size cap.
    SENDBUFFER_LARGE = 1101, "buffer too large";
    /// The target user id is not valid.
    SENDDATA_TARGETINVALID = 1102, "invalid target user";
    /// The file source failed.
    SENDFILE_FILEINERROR = 1103, "file source failed";
    /// Cancel of an unknown or finished send, or of a command.
    TRANSID_INVALID = 1104, "unknown or finished send id";
    /// The file does not exist.
    FILE_NOT_EXIST = 1400, "file not found";
    /// The file could not be read.
    FILE_READ_ERR = 1401, "file read error";
    /// The file could not be written.
    FILE_WRITE_ERR = 1402, "file write error";
    /// The file already exists.
    FILE_EXIST = 1403, "file already exists";
    /// A file operation failed.
    FILE_OPERATION_ERR = 1404, "file operation failed";
    /// The file's size is wrong or over the cap.
    FILE_SIZE_ERR = 1405, "bad file size";
    /// The receiver's disk has no room for the file (refused before its bytes come, or
    /// when the disk filled as they came).
    FILE_NO_SPACE = 1406, "no room for the file at the receiver";
    /// The sender cancelled the send.
    CANCELLED = 9000, "cancelled by the sender";
    /// The receiver rejected the send before taking any of it.
    REJECTED = 9001, "rejected by the receiver";
    /// The receiver aborted the send part way.
    ABORTED = 9002, "aborted by the receiver";
    /// The received bytes do not match the sender's digest.
    DIGEST_MISMATCH = 9003, "digest mismatch";
    /// The received size differs from the declared size.
    SIZE_MISMATCH = 9004, "size mismatch";
    /// The peer broke the protocol (malformed or unexpected frame).
    PROTOCOL_VIOLATION = 9005, "protocol violation";
    /// No protocol version in common.
    UNSUPPORTED_VERSION = 9006, "unsupported protocol version";
    /// The peer sent data beyond the credit it was granted.
    FLOW_CONTROL = 9007, "flow control violated";
    /// Too many commands or transfers in flight, or a declared size over a limit.
    LIMIT_EXCEEDED = 9008, "limit exceeded";
    /// The application refused the login.
    LOGIN_REJECTED = 9009, "login rejected";
    /// The peer is shutting down.
    SHUTDOWN = 9010, "peer shutting down";
    /// The login token has expired.
    TOKEN_EXPIRED = 9011, "login token expired";
    /// The login token is not valid yet.
    TOKEN_NOT_YET_VALID = 9012, "login token not yet valid";
    /// The login token's signature does not check out.
    TOKEN_BAD_SIGNATURE = 9013, "login token signature invalid";
    /// The login token is for another audience.
    TOKEN_WRONG_AUDIENCE = 9014, "login token for another audience";
    /// The login token cannot be read.
    TOKEN_MALFORMED = 9015, "login token malformed";
    /// The login token is for another user.
    TOKEN_WRONG_USER = 9016, "login token for another user";
    /// A command sent again after a lost connection, of a stream the receiver no longer
    /// remembers (it kept its bounds): it may have been delivered, so it is not delivered
    /// now (docs/PROTOCOL.md, "Commands exactly once").
    REPEAT_FORGOTTEN = 9017, "command sent again after the receiver forgot it";
    /// The receiver takes sealed messages only (end-to-end encryption), and this one was
    /// not sealed.
    SEAL_REQUIRED = 9018, "the receiver takes sealed messages only";
    /// A sealed send found no key to seal to: its receiver does not use end-to-end
    /// encryption, or is not known where it was looked up.
    NO_PEER_KEY = 9019, "no key of the receiver to seal to";
    /// The peer's identity key is not the one pinned for it: refused (someone between,
    /// a relay for one, may be swapping keys), until the person accepts the new key.
    PEER_KEY_CHANGED = 9020, "the peer's key is not the one pinned for it";
    /// A sealed message did not open: altered, cut, spliced or moved on its way, or
    /// sealed to a key that is not its receiver's (one pinned before the receiver made a
    /// new one).
    SEAL_BROKEN = 9021, "sealed message did not open (altered on its way, or sealed to a key not the receiver's)";
}

impl ErrorCode {
    /// The code with this wire number, known or not.
    pub const fn from_u32(n: u32) -> Self {
        ErrorCode(n)
    }

    /// The wire number.
    pub const fn as_u32(self) -> u32 {
        self.0
    }

    /// `true` for [`ErrorCode::NOERR`].
    pub const fn is_success(self) -> bool {
        self.0 == 0
    }

    /// Whether a message ended with this code was cut off by a lost or silent connection
    /// (`CONNECTIONLOST`, `SOCKETTIMEOUT`), as opposed to refused or given up: what came of
    /// it may go on in a new attempt.
    ///
    /// ```
    /// use peermsg::ErrorCode;
    ///
    /// assert!(ErrorCode::CONNECTIONLOST.is_cut_off());
    /// assert!(!ErrorCode::CANCELLED.is_cut_off());
    /// ```
    pub const fn is_cut_off(self) -> bool {
        self.0 == ErrorCode::CONNECTIONLOST.0 || self.0 == ErrorCode::SOCKETTIMEOUT.0
    }

    /// The SDK-style name, or `None` for a code this version does not know.
    pub fn name(self) -> Option<&'static str> {
        self.entry().map(|(_, name, _)| name)
    }

    /// A short description, or `None` for a code this version does not know.
    pub fn meaning(self) -> Option<&'static str> {
        self.entry().map(|(_, _, meaning)| meaning)
    }

    fn entry(self) -> Option<(ErrorCode, &'static str, &'static str)> {
        TABLE.iter().copied().find(|(code, _, _)| *code == self)
    }

    /// Every code this version knows, in ascending order.
    pub fn known() -> impl Iterator<Item = ErrorCode> {
        TABLE.iter().map(|(code, _, _)| *code)
    }
}

impl From<u32> for ErrorCode {
    fn from(n: u32) -> Self {
        ErrorCode(n)
    }
}

impl From<ErrorCode> for u32 {
    fn from(code: ErrorCode) -> u32 {
        code.0
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.entry() {
            Some((_, name, meaning)) => write!(f, "{} {}: {}", self.0, name, meaning),
            None => write!(f, "{} (unknown code)", self.0),
        }
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "ErrorCode::{name}({})", self.0),
            None => write!(f, "ErrorCode({})", self.0),
        }
    }
}

/// Why a send was refused before anything was queued. [`SendError::code`] gives the
/// SDK-style code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Login has not succeeded (yet).
    #[error("not logged in")]
    NotLoggedIn,
    /// The target is not a valid user id.
    #[error("invalid target: {0}")]
    InvalidTarget(crate::wire::UserIdError),
    /// The user id given to log in with is not a valid user id.
    #[error("invalid user id: {0}")]
    InvalidUser(crate::wire::UserIdError),
    /// The target is longer than the peer accepts.
    #[error("target user id of {len} bytes is over the limit of {max}")]
    TargetTooLong {
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// On a direct link, the target is not the peer.
    #[error("the target is not the peer of this direct link")]
    NotThePeer,
    /// The command is over the size cap.
    #[error("command of {size} bytes is over the cap of {max}")]
    CmdTooLarge {
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The buffer is over the size cap.
    #[error("buffer of {size} bytes is over the cap of {max}")]
    BufferTooLarge {
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The file is over the size cap.
    #[error("file of {size} bytes is over the cap of {max}")]
    FileTooLarge {
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The file name is longer than the peer accepts.
    #[error("file name of {len} bytes is over the limit of {max}")]
    FileNameTooLong {
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Too many sends are already waiting.
    #[error("too many sends waiting")]
    QueueFull,
    /// The connection is closed.
    #[error("the connection is closed")]
    Closed,
    /// Sealing refused the send: no key of the receiver (`NO_PEER_KEY`, or
    /// `PEER_KEY_CHANGED` for a key that is not the one pinned).
    #[error("not sealed: {0}")]
    Sealing(ErrorCode),
}

impl SendError {
    /// The code a result event would carry.
    pub fn code(&self) -> ErrorCode {
        match self {
            SendError::NotLoggedIn => ErrorCode::NOT_LOGIN,
            SendError::InvalidTarget(_) | SendError::InvalidUser(_) => ErrorCode::PARAM_ERR,
            SendError::TargetTooLong { .. } | SendError::NotThePeer => {
                ErrorCode::SENDDATA_TARGETINVALID
            }
            SendError::CmdTooLarge { .. } => ErrorCode::SENDCMD_LARGE,
            SendError::BufferTooLarge { .. } => ErrorCode::SENDBUFFER_LARGE,
            SendError::FileTooLarge { .. } => ErrorCode::FILE_SIZE_ERR,
            SendError::FileNameTooLong { .. } => ErrorCode::PARAM_ERR,
            SendError::QueueFull => ErrorCode::LIMIT_EXCEEDED,
            SendError::Closed => ErrorCode::CONNECTIONLOST,
            SendError::Sealing(code) => *code,
        }
    }
}

/// Why an action on a send or an incoming message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// No such send or incoming message is in progress.
    #[error("unknown or finished id")]
    UnknownId,
    /// File bytes that were not asked for: another offset, or another length.
    #[error("file data at offset {offset}, length {len}: expected offset {expected_offset}, length {expected_len}")]
    UnexpectedFileData {
        /// Offset given.
        offset: u64,
        /// Length given.
        len: u64,
        /// Offset asked for.
        expected_offset: u64,
        /// Length asked for.
        expected_len: u64,
    },
    /// A resume offset past the transfer's declared size.
    #[error("resume at offset {offset} of a transfer of {size} bytes")]
    ResumeBeyondSize {
        /// Offset given.
        offset: u64,
        /// The transfer's size.
        size: u64,
    },
}

impl ActionError {
    /// The code for it.
    pub fn code(&self) -> ErrorCode {
        match self {
            ActionError::UnknownId => ErrorCode::TRANSID_INVALID,
            ActionError::UnexpectedFileData { .. } | ActionError::ResumeBeyondSize { .. } => {
                ErrorCode::PARAM_ERR
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn table_is_sorted_and_unique() {
        let codes: alloc::vec::Vec<u32> = ErrorCode::known().map(ErrorCode::as_u32).collect();
        assert!(codes.windows(2).all(|w| w[0] < w[1]), "{codes:?}");
    }

    #[test]
    fn new_codes_stay_in_their_range() {
        for code in ErrorCode::known().filter(|c| c.as_u32() >= 2000) {
            assert!((9000..=9999).contains(&code.as_u32()), "{code:?}");
        }
    }

    #[test]
    fn debug_names_known_codes() {
        assert_eq!(
            format!("{:?}", ErrorCode::NOT_LOGIN),
            "ErrorCode::NOT_LOGIN(12)"
        );
        assert_eq!(format!("{:?}", ErrorCode::from_u32(77)), "ErrorCode(77)");
    }
}
