//! Messages coming to us: their state while they arrive. An incoming message's state moves
//! only by the table in `lifecycle.rs` (Arriving, then Delivered once whole and verified;
//! done by the application's take or answer, a cancel, a reject or a failure).
//!
//! A command's or buffer's `RESULT` waits until the application has taken the event (or,
//! with `confirm_buffers`, answered it), so a peer's in-flight caps also bound how much
//! undelivered data we hold.

use bytes::BytesMut;

use super::lifecycle::{receive_step, ReceiveInput, Receiving};
use crate::conn::arrival::Arrival;
use crate::digest::RunningDigest;
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
