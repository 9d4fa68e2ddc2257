//! Messages coming to us: their state while they arrive. An incoming message's state moves
//! only by the table in `lifecycle.rs` (Arriving, then Delivered once whole and verified;
//! done by the application's take or answer, a cancel, a reject or a failure).
//!
//! A command's or buffer's `RESULT` waits until the application has taken the event (or,
//! with `confirm_buffers`, answered it), so a peer's in-flight caps also bound how much
//! undelivered data we hold.

use alloc::boxed::Box;
use bytes::BytesMut;

use super::lifecycle::{receive_step, ReceiveInput, Receiving};
use crate::conn::arrival::Arrival;
use crate::digest::RunningDigest;
use crate::seal::file::{self, FileSeal, RECORD, RECORD_WIRE};
use crate::wire::{CmdOnce, ResumeKey, UserId};

use super::event::SendKind;

#[derive(Debug)]
pub(crate) struct Incoming {
    pub kind: SendKind,
    pub from: UserId,
    /// Its size and how much of it came, under the rules every receiver keeps.
    pub arrival: Arrival,
    /// Bytes the application has taken (a buffer's are taken as they arrive).
    pub consumed: u64,
    /// The credit we last granted: the peer may send below this offset.
    pub granted: u64,
    /// Bytes reported in the last receive progress event.
    pub reported: u64,
    /// A command's or buffer's bytes so far.
    pub data: BytesMut,
    pub digest: Option<RunningDigest>,
    /// Its `OPEN` carried a resume key the application is to answer
    /// ([`Client::resume_incoming`](super::Client::resume_incoming)): no `DATA` may come
    /// before that.
    pub awaiting_resume: bool,
    /// A command's identity across connections, as its sender gave it.
    pub once: Option<CmdOnce>,
    /// A transfer's resume key, when the application keeps what arrives of it.
    /// The resume key its `OPEN` carried, kept or not: a sealed buffer is bound to it.
    pub offered_key: Option<ResumeKey>,
    pub resume_key: Option<ResumeKey>,
    /// A sealed file's opening: then its arrival counts records on the wire, and what the
    /// application sees counts plain bytes.
    pub sealed: Option<Box<SealedArrival>>,
}

/// A sealed file as it arrives: its seal for this attempt, and the record arriving.
#[derive(Debug)]
pub(crate) struct SealedArrival {
    pub file: FileSeal,
    /// The wire bytes of record `number` so far (at most a record: what a sealed file
    /// holds here, besides what waits for the application).
    pub record: BytesMut,
    pub number: u64,
}

impl SealedArrival {
    /// The next whole record, if in (the last may be short): its number, plain offset and
    /// wire bytes. `arrived` is the wire bytes of the file in so far.
    pub(crate) fn next_record(&mut self, arrived: u64) -> Option<(u64, u64, BytesMut)> {
        let whole = self.record.len() as u64 >= RECORD_WIRE
            || arrived == self.file.wire_size() && !self.record.is_empty();
        if !whole {
            return None;
        }
        let len = self.record.len().min(RECORD_WIRE as usize);
        let number = self.number;
        self.number += 1;
        Some((number, number * RECORD, self.record.split_to(len)))
    }

    /// `wire` bytes of the file as its application counts them.
    pub(crate) fn shown(&self, wire: u64) -> u64 {
        file::plain_before(wire).min(self.file.size())
    }
}

impl Incoming {
    /// A message of `size` bytes, `first` of them in its first frame, whose transfer
    /// credit starts at `window`.
    pub(crate) fn new(kind: SendKind, from: UserId, size: u64, first: u64, window: u64) -> Self {
        Incoming {
            kind,
            from,
            arrival: Arrival::new(kind == SendKind::Cmd, size, first),
            consumed: 0,
            granted: window,
            reported: 0,
            data: BytesMut::new(),
            digest: (kind != SendKind::Cmd).then(RunningDigest::new),
            awaiting_resume: false,
            once: None,
            resume_key: None,
            offered_key: None,
            sealed: None,
        }
    }

    /// Complete (and, for a transfer, verified: one that fails is dropped at its `END`),
    /// waiting for the application.
    pub(crate) fn is_delivered(&self) -> bool {
        self.arrival.is_whole()
    }

    /// Where it stands in its lifecycle (`lifecycle.rs`).
    pub(crate) fn state(&self) -> Receiving {
        match self.is_delivered() {
            true => Receiving::Delivered,
            false => Receiving::Arriving,
        }
    }

    /// Whether `on` applies where it stands.
    pub(crate) fn allows(&self, on: ReceiveInput) -> bool {
        receive_step(self.state(), on).is_some()
    }

    pub(crate) fn size(&self) -> u64 {
        self.arrival.size()
    }
}
