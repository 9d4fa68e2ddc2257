//! A client over TCP: one task owns the socket and drives the state machine; the
//! application calls into the state machine through a cloneable handle, under a lock held
//! only for the call, reads events about incoming messages from a bounded channel
//! ([`ClientEvents`](crate::ClientEvents)), and awaits each of its sends on its own [`SendHandle`](crate::SendHandle).
//!
//! The task takes an event from the state machine only when the channel has room for it.
//! Taking an event is what confirms a delivery (`RESULT(NOERR)` goes to the sender when a
//! command or buffer is taken), so an application that stops reading its events stops
//! confirming: at most [`EVENT_QUEUE`](crate::EVENT_QUEUE) events wait for it, its senders' commands and
//! transfers wait for slots and credit, and nothing piles up in between.
//!
//! The results and progress of the application's own sends confirm nothing, so they do
//! not wait for room in that channel: the task takes them ahead of other events
//! ([`Client::poll_send_event`](peermsg::client::Client::poll_send_event)) and hands each to its send's handle, which holds one
//! result and the latest progress, never a queue.
//!
//! A send is one call on the state machine and a wake-up of the task, so an application
//! that sends many commands at once has them written in one batch. The task follows the
//! drive invariant: after any input (bytes, a wake-up, a file read, a deadline) it writes
//! frames and handles events until neither comes, then waits on all of them at once. File
//! bytes never reach the application as events: files to send are read by offset on the
//! blocking pool while the task goes on, and received files go into a [`FileSink`](crate::FileSink) that
//! also runs on the blocking pool, fed in order over a bounded queue (the task takes no
//! event while that queue is full), and that reports back when a file is kept: only then
//! is the file confirmed to its sender. A file kept whole is the application's even if
//! the connection was lost meanwhile; one cancelled meanwhile is removed.

mod connect;
mod driver;
mod files_in;
mod handle;
mod keys;
mod state;

use std::path::PathBuf;

use peermsg::client::{Event, ReceiveId};
use peermsg::wire::UserId;
use peermsg::{ErrorCode, SendError};
use tokio::sync::mpsc;

#[cfg(feature = "tls")]
pub use connect::connect_tls;
pub use connect::{connect, connect_with, ClientBuilder, Reconnect, Server};
pub use handle::{ClientHandle, SendHandle, SendProgress, Waiting};
pub use keys::file_resume_key;

/// Events waiting for the application, at most.
pub const EVENT_QUEUE: usize = 64;

/// The application's end of a client's events: a bounded channel of [`ClientEvent`]s.
/// Read it: while it is full, the client confirms no delivery and takes no event from the
/// state machine (see [`connect`](crate::connect)).
pub type ClientEvents = mpsc::Receiver<ClientEvent>;

/// What the application hears from a connected client.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// An event of the state machine about incoming messages or the connection. Not file
    /// bytes (they go to the sink), not `FileReceived` (it comes as
    /// [`ClientEvent::FileReceived`](crate::ClientEvent::FileReceived) once the sink kept the file), and nothing about the
    /// application's own sends: their progress and results come through their
    /// [`SendHandle`](crate::SendHandle)s.
    Core(Event),
    /// A file arrived whole and verified, and was kept in the sink's directory. Also when
    /// the connection was lost as it was kept: its sender, once back, is answered "all of
    /// it" and confirmed (a resumable file). A file is never told failed once kept.
    FileReceived {
        /// The incoming message.
        id: ReceiveId,
        /// The sender.
        from: UserId,
        /// Where it is.
        tmp_file: PathBuf,
        /// The sender's name for it, sanitised.
        org_file_name: String,
        /// Its size.
        size: u64,
    },
    /// A resumable file its sender sent again (it never heard of the earlier delivery)
    /// that the application still has, whole and unchanged, where it said it saved it
    /// ([`ClientHandle::file_saved_as`](crate::ClientHandle::file_saved_as)): confirmed, not kept twice.
    FileAlreadyHeld {
        /// The incoming message.
        id: ReceiveId,
        /// The sender.
        from: UserId,
        /// Where the application has it.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The connection was lost and the client is connecting again (with
    /// [`Reconnect`](crate::Reconnect)): resumable file sends wait, incoming files keep what they have.
    Reconnecting {
        /// Attempts so far since the connection was lost.
        attempt: u32,
        /// Why the last attempt failed, or why the connection ended.
        error: String,
    },
    /// Connected and logged in again; waiting file sends go on from what their receivers
    /// hold.
    Reconnected {
        /// The relay it reached.
        server: String,
    },
}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The server could not be reached (the I/O error is the source).
    #[error("cannot connect")]
    Io(#[from] std::io::Error),
    /// The TLS handshake failed: an untrusted or mismatched certificate, a pin that
    /// differs, or a server that does not speak TLS.
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    /// The login was refused.
    #[error("login refused: {0}")]
    Refused(ErrorCode),
    /// The relay closed the connection before the login with a reason of its own (it is
    /// full, or too many connections come from this address).
    #[error("the relay turned the connection away: {code} ({reason})")]
    TurnedAway {
        /// The code of its `CLOSE`.
        code: ErrorCode,
        /// Its reason, as the relay wrote it.
        reason: String,
    },
    /// The connection ended before the login was answered.
    #[error("connection closed during login")]
    Closed,
    /// The user id or configuration is not valid.
    #[error("{0}")]
    Invalid(String),
}

/// Why a file send failed before it started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendFileError {
    /// The file could not be opened or measured.
    #[error("cannot read {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The send was refused.
    #[error(transparent)]
    Send(#[from] SendError),
}
