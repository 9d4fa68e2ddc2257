//! Buffers a receiver keeps across connections, by sender and resume key: the bytes of one
//! cut off part way (its next attempt goes on from them), and the size and digest of one
//! delivered (a repeat, whose sender never heard, is confirmed and not delivered again).
//! Kept for the resume window; memory bounded by [`HeldBuffers::MAX_BYTES`] and
//! [`HeldBuffers::MAX_DONE`], the oldest going first.

use alloc::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use core::time::Duration;

use crate::client::ReceiveId;
use crate::digest::RunningDigest;
use crate::evict::remove_oldest;
use crate::wire::{Digest, ResumeKey, UserId};
use crate::Instant;

type Key = (UserId, ResumeKey);

/// What a receiver holds of keyed buffers across connections.
#[derive(Debug, Default)]
pub(crate) struct HeldBuffers {
    /// Bytes so far of buffers cut off, and when.
    partial: BTreeMap<Key, (Bytes, Instant)>,
    /// Bytes in `partial`.
    partial_bytes: usize,
    /// Size and digest of buffers delivered, and when.
    done: BTreeMap<Key, (u64, Digest, Instant)>,
    /// Keyed buffers arriving on the current connection.
    arriving: BTreeMap<ReceiveId, Key>,
    /// Those that are repeats of one delivered.
    repeats: BTreeSet<ReceiveId>,
}

/// How an offered keyed buffer goes on.
pub(crate) enum Answer {
    /// Delivered before, with this size and digest: answer "all of it".
    Whole(u64, Digest),
    /// Go on from these bytes (empty: from the start).
    From(Bytes),
}

impl HeldBuffers {
    /// Bytes of cut-off buffers held at most.
    pub(crate) const MAX_BYTES: usize = 256 << 20;
    /// Delivered buffers remembered at most.
    pub(crate) const MAX_DONE: usize = 4096;

    /// Forgets what is older than `window`.
    pub(crate) fn expire(&mut self, now: Instant, window: Duration) {
        let live = |at: &Instant| now.saturating_duration_since(*at) < window;
        self.partial.retain(|_, (_, at)| live(at));
        self.partial_bytes = self.partial.values().map(|(b, _)| b.len()).sum();
        self.done.retain(|_, (_, _, at)| live(at));
    }

    /// Buffer `id` of `from` under `key` is offered, `size` bytes: how it goes on.
    pub(crate) fn offered(
        &mut self,
        id: ReceiveId,
        from: &UserId,
        key: ResumeKey,
        size: u64,
    ) -> Answer {
        let at = (from.clone(), key);
        let done = self
            .done
            .get(&at)
            .filter(|d| d.0 == size)
            .map(|d| (d.0, d.1));
        let held = self.partial.remove(&at).map(|(b, _)| b);
        self.partial_bytes -= held.as_ref().map_or(0, Bytes::len);
        self.arriving.insert(id, at);
        match done {
            Some((size, digest)) => {
                self.repeats.insert(id);
                Answer::Whole(size, digest)
            }
            None => Answer::From(held.unwrap_or_default()),
        }
    }

    /// Buffer `id` was cut off with `data` so far: kept for its next attempt, if it fits.
    pub(crate) fn suspended(&mut self, now: Instant, id: ReceiveId, data: Bytes) {
        let Some(at) = self.arriving.remove(&id) else {
            return;
        };
        self.repeats.remove(&id);
        while self.partial_bytes + data.len() > Self::MAX_BYTES {
            match remove_oldest(&mut self.partial, |(_, at)| *at) {
                Some((bytes, _)) => self.partial_bytes -= bytes.len(),
                None => return, // larger than all the room: not kept
            }
        }
        self.partial_bytes += data.len();
        if let Some((old, _)) = self.partial.insert(at, (data, now)) {
            self.partial_bytes -= old.len();
        }
    }

    /// Buffer `id` ended otherwise (refused, cancelled, failed): nothing kept of it.
    pub(crate) fn failed(&mut self, id: ReceiveId) {
        self.arriving.remove(&id);
        self.repeats.remove(&id);
    }

    /// Buffer `id` came whole: `true` if it is a repeat (confirm it, do not deliver it);
    /// else it is remembered as delivered.
    pub(crate) fn received(&mut self, now: Instant, id: ReceiveId, data: &[u8]) -> bool {
        let Some(at) = self.arriving.remove(&id) else {
            return false;
        };
        if self.repeats.remove(&id) {
            return true;
        }
        if self.done.len() >= Self::MAX_DONE {
            remove_oldest(&mut self.done, |(_, _, at)| *at);
        }
        let mut digest = RunningDigest::new();
        digest.update(data);
        self.done
            .insert(at, (data.len() as u64, digest.value(), now));
        false
    }

    /// A new connection: ids of the last one mean nothing any more.
    pub(crate) fn new_connection(&mut self) {
        self.arriving.clear();
        self.repeats.clear();
    }
}
