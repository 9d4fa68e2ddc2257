//! Our sends: their state and the frames they produce. A send's state moves only by the
//! table in `lifecycle.rs` ([`Outgoing::advance`]); what each state sends:
//!
//! | state | what it sends |
//! | --- | --- |
//! | Waiting | nothing |
//! | Sending | `CMD`/`CMD_CONT`, or `OPEN`, `DATA` within credit, `END` |
//! | Ending | nothing |
//! | Cancelling | `CANCEL` (once) |
//! | done | `CANCEL` if the peer knows it, no `RESULT` came and none was sent |
//!
//! "done" is not a state: a finished send is removed, and exactly one `SendResult` event is
//! emitted at that moment, by [`Client::finish_send`](super::Client).

use bytes::Bytes;

use crate::digest::RunningDigest;
use crate::wire::{MessageId, Text, UserId};

use super::event::SendKind;

pub(crate) use super::lifecycle::Phase;
use super::lifecycle::{send_step, Next, SendInput};

/// The bytes a send draws from.
#[derive(Debug)]
pub(crate) enum Source {
    /// A command or buffer: all of it, from the start.
    Memory(Bytes),
    /// A file: the piece the application supplied, starting at `offset`, and whether a
    /// read is outstanding.
    File {
        offset: u64,
        piece: Bytes,
        reading: bool,
    },
}

#[derive(Debug)]
pub(crate) struct Outgoing {
    pub kind: SendKind,
    pub cookie: u64,
    pub to: UserId,
    pub name: Text,
    pub size: u64,
    pub phase: Phase,
    /// The id on the wire, given when its first frame is produced.
    pub wire_id: Option<MessageId>,
    pub source: Source,
    /// Bytes put on the wire so far (for a command: bytes of its fragments).
    pub sent: u64,
    /// Highest offset the peer allows (transfers).
    pub credit: u64,
    /// Bytes the peer acknowledged, as last reported in a progress event.
    pub reported: u64,
    /// Running digest of the bytes sent (transfers).
    pub digest: Option<RunningDigest>,
    /// In the round-robin queue already.
    pub queued: bool,
    /// When the send times out, if a timeout is configured.
    pub deadline: Option<crate::Instant>,
}

impl Outgoing {
    pub(crate) fn new(
        kind: SendKind,
        cookie: u64,
        to: UserId,
        name: Text,
        size: u64,
        source: Source,
    ) -> Self {
        Outgoing {
            kind,
            cookie,
            to,
            name,
            size,
            phase: Phase::Waiting,
            wire_id: None,
            source,
            sent: 0,
            credit: 0,
            reported: 0,
            digest: (kind != SendKind::Cmd).then(RunningDigest::new),
            queued: false,
            deadline: None,
        }
    }

    /// Up to `max` bytes from `sent` on that are in hand, without copying.
    pub(crate) fn bytes_at_sent(&self, max: u64) -> Option<Bytes> {
        let (start, bytes) = match &self.source {
            Source::Memory(b) => (0, b),
            Source::File { offset, piece, .. } => (*offset, piece),
        };
        let from = usize::try_from(self.sent.checked_sub(start)?).ok()?;
        let available = bytes.len().checked_sub(from)?;
        let take = available.min(usize::try_from(max).unwrap_or(usize::MAX));
        if take == 0 {
            return None;
        }
        Some(bytes.slice(from..from + take))
    }

    /// Moves the send by its lifecycle (`lifecycle.rs`): where `on` takes it, `None` if
    /// `on` does not apply where it stands (then nothing changes).
    pub(crate) fn advance(&mut self, on: SendInput) -> Option<Next<Phase>> {
        let next = send_step(self.phase, on);
        debug_assert!(next.is_some(), "{on:?} in {:?}", self.phase);
        if let Some(Next::To(phase)) = next {
            self.phase = phase;
        }
        next
    }

    /// Bytes held for this send beyond what the application passed in with the call.
    pub(crate) fn held(&self) -> u64 {
        match &self.source {
            Source::File { piece, .. } => piece.len() as u64,
            Source::Memory(_) => 0,
        }
    }
}
