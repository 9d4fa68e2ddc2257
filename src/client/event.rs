//! What a client reports: events as plain data.

use bytes::Bytes;
use core::fmt;

use crate::conn::CloseReason;
use crate::wire::{CmdOnce, Digest, ResumeKey, Text, UserId};
use crate::ErrorCode;

/// A send of ours, as [`Client::send_cmd`](super::Client::send_cmd) and its siblings
/// return it. Local: never on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SendId(pub u64);

/// A message coming to us, as the events about it name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReceiveId(pub u64);

impl fmt::Display for SendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "send-{}", self.0)
    }
}

impl fmt::Display for ReceiveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "recv-{}", self.0)
    }
}

/// What a send carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendKind {
    /// A command (`sendCmd`).
    Cmd,
    /// An in-memory buffer (`sendBuffer`).
    Buffer,
    /// A file (`sendFile`).
    File,
}

/// Something the application should know or act on. Drained with
/// [`Client::poll_event`](super::Client::poll_event).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The answer to [`Client::login`](super::Client::login): `NOERR` or why not.
    LoginResult {
        /// The outcome.
        code: ErrorCode,
    },
    /// On a direct link: the peer logged in as `user`.
    PeerLogin {
        /// The peer's user id.
        user: UserId,
    },
    /// The one result of a send (the SDK's `sendCmdRlst`, `sendBufferRlst`,
    /// `sendFileRlst`). `NOERR` only once the receiver confirmed delivery; for buffers and
    /// files, after it verified size and digest. Nothing about the send follows it.
    SendResult {
        /// The send.
        id: SendId,
        /// What it carried.
        kind: SendKind,
        /// `NOERR`, or what ended it.
        code: ErrorCode,
        /// The cookie given with the send.
        cookie: u64,
    },
    /// Bytes of a buffer or file the receiver has taken (the SDK's `sendProgress`):
    /// monotonic, at most `total`, every `progress_step` bytes and always at the end.
    Progress {
        /// The send.
        id: SendId,
        /// Bytes the receiver acknowledged.
        sent: u64,
        /// The send's size.
        total: u64,
        /// The cookie given with the send.
        cookie: u64,
    },
    /// The answer to [`Client::cancel_send`](super::Client::cancel_send) (the SDK's
    /// `cancelSendRlst`): `NOERR`, or `TRANSID_INVALID` for a command or an unknown or
    /// finished send.
    CancelResult {
        /// The send named in the cancel.
        id: SendId,
        /// The outcome.
        code: ErrorCode,
        /// The cookie given with the cancel.
        cookie: u64,
    },
    /// Bytes of a file being sent are needed: answer with
    /// [`Client::supply_file_data`](super::Client::supply_file_data) (exactly `len` bytes
    /// from `offset`) or [`Client::file_read_failed`](super::Client::file_read_failed).
    FileRead {
        /// The send.
        id: SendId,
        /// Where to read.
        offset: u64,
        /// How much.
        len: u64,
    },
    /// A resumable file send continues where the receiver's bytes end: it holds `offset`
    /// bytes from an earlier attempt, checked against our source (its digest matched), and
    /// data goes on from there.
    Resumed {
        /// The send.
        id: SendId,
        /// Where the receiver's bytes end.
        offset: u64,
        /// The cookie given with the send.
        cookie: u64,
    },
    /// A command arrived (the SDK's `notifyCmdData`).
    CmdReceived {
        /// The incoming message (for logs and the application's records: a command is
        /// confirmed by taking this event, and cannot be refused).
        id: ReceiveId,
        /// The sender, as stamped by the relay (or the peer of a direct link).
        from: UserId,
        /// The command.
        data: Bytes,
        /// Its identity across connections, if its sender gave one
        /// ([`Client::send_cmd_once`](super::Client::send_cmd_once)). The client delivers a
        /// command with an identity once: a repeat after a lost connection is confirmed to
        /// its sender with no event ([`SeenCmds`](super::SeenCmds)).
        once: Option<CmdOnce>,
    },
    /// A buffer or file is on its way. It can be refused with
    /// [`Client::reject`](super::Client::reject); a file's bytes follow as
    /// [`Event::FileData`].
    Offer {
        /// The incoming message.
        id: ReceiveId,
        /// The sender.
        from: UserId,
        /// `SendKind::Buffer` or `SendKind::File`.
        kind: SendKind,
        /// The original file name (empty for a buffer). Untrusted: sanitise before use.
        name: Text,
        /// The declared size.
        size: u64,
        /// With [`ClientConfig::resume_files`](super::ClientConfig::resume_files), the
        /// file's resume key: look for what is held of it from `from` under this key and
        /// answer with [`Client::resume_incoming`](super::Client::resume_incoming).
        resume_key: Option<ResumeKey>,
    },
    /// A buffer arrived whole, size and digest verified (the SDK's `notifyBufferData`).
    BufferReceived {
        /// The incoming message.
        id: ReceiveId,
        /// The sender.
        from: UserId,
        /// The buffer.
        data: Bytes,
    },
    /// Bytes of an incoming file, in order, for the application's sink.
    FileData {
        /// The incoming message.
        id: ReceiveId,
        /// Where `data` goes in the file.
        offset: u64,
        /// The bytes.
        data: Bytes,
        /// The digest of the file's bytes up to the end of `data`, as the client keeps it
        /// anyway: what an application that records how far it wrote (to resume) records,
        /// without digesting the bytes again.
        digest: Digest,
    },
    /// An incoming file is complete, size and digest verified (with the sink's temporary
    /// file, the SDK's `notifyFileData`). The sender is told only when the application
    /// answers with [`Client::accept_delivery`](crate::client::Client::accept_delivery)
    /// once the file is kept, or [`Client::fail_delivery`](crate::client::Client::fail_delivery).
    FileReceived {
        /// The incoming message.
        id: ReceiveId,
        /// The sender.
        from: UserId,
        /// Its size.
        size: u64,
    },
    /// Bytes of an incoming buffer or file received so far, every `progress_step` bytes
    /// and at the end.
    ReceiveProgress {
        /// The incoming message.
        id: ReceiveId,
        /// Bytes received.
        received: u64,
        /// The declared size.
        total: u64,
    },
    /// An incoming buffer with a resume key was cut by a lost connection (with
    /// [`ClientConfig::resume_buffers`](super::ClientConfig::resume_buffers)): it ends here,
    /// as [`Event::ReceiveFailed`] with `CONNECTIONLOST` would, and these are its bytes so
    /// far, for [`Client::resume_incoming_buffer`](super::Client::resume_incoming_buffer)
    /// when its sender offers it again under the same key.
    ReceiveSuspended {
        /// The incoming message.
        id: ReceiveId,
        /// The sender.
        from: UserId,
        /// Its resume key.
        key: ResumeKey,
        /// Its bytes so far, from its start.
        data: Bytes,
    },
    /// An incoming buffer or file ended without completing (the SDK's
    /// `notifyCancelSend`): the sender cancelled (`CANCELLED`), its file source failed,
    /// the connection was lost, or the data failed verification. Discard what was
    /// received of it.
    ReceiveFailed {
        /// The incoming message.
        id: ReceiveId,
        /// The sender.
        from: UserId,
        /// Why.
        code: ErrorCode,
    },
    /// A send of a [`Continuity`](crate::continuity::Continuity) was cut off (its
    /// connection, or its receiver's, was lost) and waits to go on: since `since`, because
    /// of `code`, until `deadline`, when it is given up with `CONNECTIONLOST`. Its
    /// [`Event::SendResult`] comes later, on a connection after this one or at the deadline.
    SendWaiting {
        /// The send.
        id: SendId,
        /// Why it waits: `CONNECTIONLOST`, or `OFFLINE` (its receiver is not back yet).
        code: ErrorCode,
        /// When it was first cut off.
        since: crate::Instant,
        /// When it is given up, unless it goes on before.
        deadline: crate::Instant,
    },
    /// A [`Continuity`](crate::continuity::Continuity) whose connection was lost is
    /// connected and logged in again; its waiting sends go on.
    Reconnected,
    /// A peer's identity key was heard (sealed messages, [`crate::seal`]): asked for
    /// before sealing to it, or in a sealed message from it. `Learned` is pinned now and
    /// the runtime should keep it (a known-peers file); `Changed` and `Unknown` were
    /// refused, with everything sealed with that key.
    PeerKey {
        /// Whose key.
        user: UserId,
        /// The key; `None` if the user has none (it does not use sealed messages, or its
        /// relay does not know it).
        key: Option<crate::wire::IdentityKey>,
        /// What became of it; `None`: it is the key pinned, or there is none.
        status: Option<crate::seal::KeyStatus>,
    },
    /// An incoming message was refused before the application saw it, for a reason the
    /// person should hear of: it was not sealed where sealing is required, its sender's
    /// key is not trusted, or it did not open (altered on its way). Its sender's result
    /// carries the same `code`.
    Refused {
        /// The sender.
        from: UserId,
        /// What it was.
        kind: SendKind,
        /// Why: `SEAL_REQUIRED`, `PEER_KEY_CHANGED`, `NO_PEER_KEY`, `SEAL_BROKEN`.
        code: ErrorCode,
    },
    /// The connection is over: nothing more will come in or go out after the bytes already
    /// handed to `poll_transmit`.
    Closed {
        /// `NOERR` for a normal close; otherwise why (the peer's code if it closed).
        code: ErrorCode,
        /// Who closed it and why: this side, the peer (with its reason), a violation by
        /// the peer, a timeout, the transport.
        reason: CloseReason,
    },
}

impl Event {
    /// The incoming message this event delivers, for [`Event::CmdReceived`],
    /// [`Event::BufferReceived`] and [`Event::FileReceived`].
    pub fn delivery_of(&self) -> Option<ReceiveId> {
        match self {
            Event::CmdReceived { id, .. }
            | Event::BufferReceived { id, .. }
            | Event::FileReceived { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// The send of ours this event is about, for the events that take nothing of the
    /// application's attention to confirm: [`Event::SendResult`], [`Event::Progress`],
    /// [`Event::CancelResult`], [`Event::Resumed`], [`Event::SendWaiting`] and [`Event::FileRead`]. `None` for the rest (incoming
    /// messages and the connection). These are the events
    /// [`Client::poll_send_event`](super::Client::poll_send_event) takes.
    pub fn send_id(&self) -> Option<SendId> {
        match self {
            Event::SendResult { id, .. }
            | Event::Progress { id, .. }
            | Event::CancelResult { id, .. }
            | Event::Resumed { id, .. }
            | Event::SendWaiting { id, .. }
            | Event::FileRead { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// What the client wants of its runtime next: the whole drive loop is "call
/// [`Client::poll_output`](super::Client::poll_output) and act on what it says, until it
/// says [`Output::Timeout`]; then wait for input or that time".
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// This many bytes were appended to the sink: write them to the transport.
    Transmit(usize),
    /// An event for the application.
    Event(Event),
    /// Nothing more until input comes or this time passes (then call
    /// [`Client::handle_timeout`](super::Client::handle_timeout)).
    Timeout(crate::Instant),
    /// The connection is over and everything has been given out: close the transport.
    Closed,
}

/// What an endpoint's one-call drive loop is made of: [`Client`](super::Client) and
/// [`Continuity`](crate::continuity::Continuity) both answer `poll_output` with it.
pub(crate) trait Endpoint {
    fn next_event(&mut self) -> Option<Event>;
    fn transmit<S: crate::wire::FrameSink + ?Sized>(&mut self, out: &mut S) -> usize;
    fn next_timeout(&self) -> Option<crate::Instant>;
}

/// The drive loop in one call: an event, else bytes to write, else the time to wait for.
pub(crate) fn poll_output<E: Endpoint, S: crate::wire::FrameSink + ?Sized>(
    endpoint: &mut E,
    out: &mut S,
) -> Output {
    // Events first: the frames taking them lets out (results, credit) then go in one
    // batch rather than one write each.
    if let Some(event) = endpoint.next_event() {
        return Output::Event(event);
    }
    let written = endpoint.transmit(out);
    if written > 0 {
        return Output::Transmit(written);
    }
    // Writing can raise an event (a request for a file's next bytes): it is not a wait.
    if let Some(event) = endpoint.next_event() {
        return Output::Event(event);
    }
    match endpoint.next_timeout() {
        Some(at) => Output::Timeout(at),
        None => Output::Closed,
    }
}

impl crate::seq_map::SeqKey for SendId {
    fn seq(self) -> u64 {
        self.0
    }
    fn from_seq(seq: u64) -> Self {
        SendId(seq)
    }
}
