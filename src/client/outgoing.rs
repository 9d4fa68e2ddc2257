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

use alloc::boxed::Box;
use bytes::{Bytes, BytesMut};

use crate::digest::RunningDigest;
use crate::seal::file::{self, FileSeal, RECORD, RECORD_WIRE};
use crate::wire::{CmdOnce, Digest, MessageId, ResumeKey, Text, UserId};

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

/// A sealed file as it is read: its seal for this attempt, its sealed header, and where
/// its plain bytes stand (sealed up to a record's start; read past it, not a whole record
/// yet).
#[derive(Debug)]
pub(crate) struct SealedSource {
    pub file: FileSeal,
    /// `OPEN`'s `seal`.
    pub header: Bytes,
    /// The plain offset sealed up to.
    pub sealed_to: u64,
    /// Plain bytes read past `sealed_to`, less than a record.
    pub pending: BytesMut,
}

/// Where a resumable send stands with its receiver's earlier bytes. `DATA` flows only when
/// it is `Settled`.
#[derive(Debug)]
pub(crate) enum Resume {
    /// Not resumable, or agreed: data goes on from `sent`.
    Settled,
    /// Its `OPEN` carried a key: waiting for the receiver's `RESUME_FROM`.
    Asked,
    /// The receiver holds bytes `0..offset` whose digest is `digest`: our own source is
    /// read again up to there (`at` so far, digested in `running`) to check it, so that
    /// bytes of another version of the file are never continued.
    Checking {
        offset: u64,
        digest: Digest,
        at: u64,
        running: RunningDigest,
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
    /// The key that lets the receiver continue it from an earlier attempt (files).
    pub resume_key: Option<ResumeKey>,
    /// A command's identity across connections.
    pub once: Option<CmdOnce>,
    pub resume: Resume,
    /// A sealed file's sealing: then `size`, `sent` and `credit` count its records on the
    /// wire, and what the application reads and sees counts its plain bytes.
    pub sealed: Option<Box<SealedSource>>,
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
            resume_key: None,
            once: None,
            resume: Resume::Settled,
            sealed: None,
        }
    }

    /// Wire bytes the credit lets go beyond `sent`.
    pub(crate) fn credit_room(&self) -> u64 {
        self.credit.min(self.size).saturating_sub(self.sent)
    }

    /// `wire` bytes of this send as its application counts them (a sealed file's plain
    /// bytes), for progress.
    pub(crate) fn shown(&self, wire: u64) -> u64 {
        match &self.sealed {
            Some(s) => file::plain_before(wire).min(s.file.size()),
            None => wire,
        }
    }

    /// The file bytes this send waits for: (offset, most bytes). While it checks a resume
    /// they are its own source again up to the receiver's offset; else they continue from
    /// `sent` within the credit.
    /// A sealed file reads whole records, at least one, as many as the credit has room
    /// for (plain offsets).
    pub(crate) fn wanted(&self) -> (u64, u64) {
        match (&self.resume, &self.sealed) {
            (Resume::Checking { offset, at, .. }, _) => (*at, *offset - *at),
            (_, Some(s)) => {
                let at = s.sealed_to + s.pending.len() as u64;
                let records = (self.credit_room() / RECORD_WIRE).max(1);
                let end = s.sealed_to.saturating_add(records * RECORD);
                (at, end.min(s.file.size()).saturating_sub(at))
            }
            _ => (self.sent, self.credit_room()),
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
