//! Message ids (docs/PROTOCOL.md, "Message ids"): each side allocates its own from 0 up, so
//! an id the peer names is in progress, ended (its late frames crossed our end and are
//! dropped), or never allocated (the peer broke the protocol).

use super::Violation;
use crate::seq_map::SeqMap;
use crate::wire::MessageId;

/// One direction's ids on a connection, with what the holder keeps for each live one.
#[derive(Debug)]
pub(crate) struct IdSpace<V> {
    next: MessageId,
    live: SeqMap<MessageId, V>,
}

impl<V> IdSpace<V> {
    pub(crate) fn new() -> Self {
        IdSpace {
            next: 0,
            live: SeqMap::new(),
        }
    }

    /// The next id, allocated by us for `value`.
    pub(crate) fn allocate(&mut self, value: V) -> MessageId {
        let id = self.next;
        self.next += 1;
        self.live.insert(id, value);
        id
    }

    /// The peer opens its next message with `id`: it must be the next id. The id is spent
    /// whether or not the message is then taken ([`IdSpace::insert`]).
    pub(crate) fn claim(&mut self, id: MessageId) -> Result<(), Violation> {
        if id != self.next {
            return Err(Violation::IdOutOfOrder);
        }
        self.next += 1;
        Ok(())
    }

    /// Keeps `value` for a claimed id.
    pub(crate) fn insert(&mut self, id: MessageId, value: V) {
        debug_assert!(id < self.next, "insert of an id not claimed");
        self.live.insert(id, value);
    }

    /// Where `id` stands: `Ok(Some)` in progress, `Ok(None)` ended, `Err(never)` never
    /// allocated.
    pub(crate) fn find(&self, id: MessageId, never: Violation) -> Result<Option<&V>, Violation> {
        match self.live.get(id) {
            Some(value) => Ok(Some(value)),
            None if id < self.next => Ok(None),
            None => Err(never),
        }
    }

    pub(crate) fn get(&self, id: MessageId) -> Option<&V> {
        self.live.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: MessageId) -> Option<&mut V> {
        self.live.get_mut(id)
    }

    pub(crate) fn contains(&self, id: MessageId) -> bool {
        self.live.contains_key(id)
    }

    /// Ends `id`: later frames for it are dropped.
    pub(crate) fn remove(&mut self, id: MessageId) -> Option<V> {
        self.live.remove(id)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.live.values()
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.live.keys()
    }

    /// Ends every live id, giving their values.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = V> {
        self.live.drain()
    }
}
