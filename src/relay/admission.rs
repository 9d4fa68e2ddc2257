//! Messages waiting for a slot at their receiver: the receiver's announced caps
//! (`max_cmds_in_flight`, `max_transfers`) bound what the relay forwards to it, and the rest
//! wait here, in order per sender and in turns across senders.

use super::RouteKey;
use alloc::collections::{BTreeMap, VecDeque};

use super::ConnId;

/// Routes (by key) waiting for one receiver's slots of one kind.
///
/// Each sender's routes leave in the order they came (so a sender's commands keep their
/// order), and senders take turns: one route from each sender with any waiting, in the
/// order the senders first queued. A sender that floods the queue therefore delays
/// another sender's next message by at most one message per other sender.
#[derive(Debug, Default)]
pub(super) struct Admission {
    by_sender: BTreeMap<ConnId, VecDeque<RouteKey>>,
    turns: VecDeque<ConnId>,
}

impl Admission {
    /// Queues route `key` from `sender`.
    pub(super) fn push(&mut self, sender: ConnId, key: RouteKey) {
        let queue = self.by_sender.entry(sender).or_default();
        if queue.is_empty() {
            self.turns.push_back(sender);
        }
        queue.push_back(key);
    }

    /// The next route to admit: the oldest of the sender whose turn it is.
    pub(super) fn pop(&mut self) -> Option<RouteKey> {
        let sender = self.turns.pop_front()?;
        let queue = self.by_sender.get_mut(&sender)?;
        let key = queue.pop_front()?;
        if queue.is_empty() {
            self.by_sender.remove(&sender);
        } else {
            self.turns.push_back(sender);
        }
        Some(key)
    }

    /// Takes route `key` out (its sender cancelled it or went away): O(what that sender
    /// has waiting), which the sender's own caps bound.
    pub(super) fn remove(&mut self, sender: ConnId, key: RouteKey) {
        let Some(queue) = self.by_sender.get_mut(&sender) else {
            return;
        };
        let Some(at) = queue.iter().position(|k| *k == key) else {
            return;
        };
        queue.remove(at);
        if queue.is_empty() {
            self.by_sender.remove(&sender);
            self.turns.retain(|s| *s != sender);
        }
    }

    /// Nothing is waiting.
    pub(super) fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    /// Every waiting route, emptying the queue (its receiver went away).
    pub(super) fn drain(&mut self) -> impl Iterator<Item = RouteKey> {
        self.turns.clear();
        core::mem::take(&mut self.by_sender).into_values().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn senders_take_turns_and_each_keeps_its_order() {
        let mut q = Admission::default();
        for key in 0..4 {
            q.push(ConnId(1), RouteKey(key));
        }
        q.push(ConnId(2), RouteKey(10));
        q.push(ConnId(3), RouteKey(20));
        q.push(ConnId(2), RouteKey(11));
        let order: Vec<RouteKey> = core::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, [0, 10, 20, 1, 11, 2, 3].map(RouteKey));
        assert!(q.turns.is_empty() && q.by_sender.is_empty());
    }

    #[test]
    fn a_removed_route_and_an_emptied_sender_leave_no_trace() {
        let mut q = Admission::default();
        q.push(ConnId(1), RouteKey(1));
        q.push(ConnId(2), RouteKey(2));
        q.push(ConnId(1), RouteKey(3));
        q.remove(ConnId(2), RouteKey(2));
        q.remove(ConnId(1), RouteKey(1));
        q.remove(ConnId(1), RouteKey(99));
        assert_eq!(q.turns, [ConnId(1)]);
        assert_eq!(q.pop(), Some(RouteKey(3)));
        assert_eq!(q.pop(), None);
        q.push(ConnId(4), RouteKey(5));
        assert_eq!(q.drain().collect::<Vec<_>>(), [RouteKey(5)]);
        assert_eq!(q.pop(), None);
    }
}
