//! [`SeqMap`]: the map for keys handed out in increasing order (message ids, send ids,
//! route keys), where the client and the relay keep what they know of each message.
//!
//! Live keys are nearly always a short run just below the newest: they sit in a ring
//! indexed by `key - base`, so finding one is arithmetic, and the map allocates nothing
//! for adding or ending one once the ring has grown (a B-tree made and freed nodes).
//! Holders box large values: moving a 200-300 byte value into the ring and out again
//! cost more than its allocation (`pathbench e-memory`, measured both ways).
//! A key that stays live while many after it end (a long file among many commands) would
//! stretch the ring; once more than half of it would be empty slots, its oldest entries
//! move to an ordered map, so memory stays proportional to the live entries whatever the
//! order they end in.

use alloc::collections::{BTreeMap, VecDeque};

/// A key [`SeqMap`] can hold: a number handed out in increasing order.
pub(crate) trait SeqKey: Copy {
    /// The key's number.
    fn seq(self) -> u64;
    /// The key of number `seq`.
    fn from_seq(seq: u64) -> Self;
}

impl SeqKey for u64 {
    fn seq(self) -> u64 {
        self
    }
    fn from_seq(seq: u64) -> Self {
        seq
    }
}

/// Empty slots the ring may have beyond as many as its live entries.
const SLACK: usize = 32;

/// A map of keys handed out in increasing order (see the module's documentation).
/// Iteration is in key order.
#[derive(Debug)]
pub(crate) struct SeqMap<K, V> {
    /// Entries moved out of the ring: all below `base`.
    old: BTreeMap<u64, V>,
    /// The key of the ring's first slot.
    base: u64,
    ring: VecDeque<Option<V>>,
    /// Occupied slots of the ring.
    in_ring: usize,
    key: core::marker::PhantomData<K>,
}

impl<K: SeqKey, V> Default for SeqMap<K, V> {
    fn default() -> Self {
        SeqMap {
            old: BTreeMap::new(),
            base: 0,
            ring: VecDeque::new(),
            in_ring: 0,
            key: core::marker::PhantomData,
        }
    }
}

impl<K: SeqKey, V> SeqMap<K, V> {
    /// An empty map.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.old.len() + self.in_ring
    }

    /// The ring's slot for `seq`, if it is in the ring's range.
    fn slot(&self, seq: u64) -> Option<usize> {
        let at = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        (at < self.ring.len()).then_some(at)
    }

    /// Adds `value` under `key`, giving the value it replaces.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let seq = key.seq();
        if seq < self.base {
            return self.old.insert(seq, value);
        }
        let at = seq - self.base;
        let gap = at.saturating_sub(self.ring.len() as u64);
        if gap > (2 * self.in_ring + SLACK) as u64 {
            // A jump far past the ring (not how keys are handed out, but possible): the
            // ring's entries go to the ordered map and the ring starts at `seq`.
            self.retire_ring();
            self.base = seq;
        }
        // Within the ring or at most `2 * in_ring + SLACK` past its end: a usize.
        let at = (seq - self.base) as usize;
        while self.ring.len() <= at {
            self.ring.push_back(None);
        }
        let before = self.ring.get_mut(at)?.replace(value);
        if before.is_none() {
            self.in_ring += 1;
        }
        self.compact();
        before
    }

    /// The value under `key`.
    pub(crate) fn get(&self, key: K) -> Option<&V> {
        let seq = key.seq();
        match self.slot(seq) {
            Some(at) => self.ring.get(at)?.as_ref(),
            None => self.old.get(&seq),
        }
    }

    /// The value under `key`, to change.
    pub(crate) fn get_mut(&mut self, key: K) -> Option<&mut V> {
        let seq = key.seq();
        match self.slot(seq) {
            Some(at) => self.ring.get_mut(at)?.as_mut(),
            None => self.old.get_mut(&seq),
        }
    }

    /// `true` when `key` has a value.
    pub(crate) fn contains_key(&self, key: K) -> bool {
        self.get(key).is_some()
    }

    /// Takes the value under `key` out.
    pub(crate) fn remove(&mut self, key: K) -> Option<V> {
        let seq = key.seq();
        let Some(at) = self.slot(seq) else {
            return self.old.remove(&seq);
        };
        let value = self.ring.get_mut(at)?.take()?;
        self.in_ring -= 1;
        self.compact();
        Some(value)
    }

    /// Keys and values in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (K, &V)> {
        let base = self.base;
        let old = self.old.iter().map(|(k, v)| (K::from_seq(*k), v));
        let ring = self
            .ring
            .iter()
            .enumerate()
            .filter_map(move |(i, v)| v.as_ref().map(|v| (K::from_seq(base + i as u64), v)));
        old.chain(ring)
    }

    /// Keys in order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Values in key order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Takes every entry out, in key order.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = V> {
        let old = core::mem::take(&mut self.old);
        let ring = core::mem::take(&mut self.ring);
        self.in_ring = 0;
        old.into_values().chain(ring.into_iter().flatten())
    }

    /// Keeps the ring from the first live slot, and at most half empty slots (past
    /// `SLACK`): its oldest entries move to the ordered map.
    fn compact(&mut self) {
        loop {
            match self.ring.front() {
                Some(None) => {}
                Some(Some(_)) if self.ring.len() > 2 * self.in_ring + SLACK => {}
                _ => break,
            }
            if let Some(Some(value)) = self.ring.pop_front() {
                self.old.insert(self.base, value);
                self.in_ring -= 1;
            }
            self.base += 1;
        }
        // A ring that grew for a burst gives its memory back once it is empty.
        if self.ring.is_empty() && self.ring.capacity() > 4 * SLACK {
            self.ring = VecDeque::new();
        }
    }

    /// Moves every entry of the ring to the ordered map, leaving the ring empty.
    fn retire_ring(&mut self) {
        let base = self.base;
        let ring = core::mem::take(&mut self.ring);
        self.base += ring.len() as u64;
        for (i, value) in ring.into_iter().enumerate() {
            if let Some(value) = value {
                self.old.insert(base + i as u64, value);
            }
        }
        self.in_ring = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// Insert the next key (keys are handed out in order).
        Next,
        /// Skip a key (handed out, never inserted).
        Skip,
        /// Insert a key this far ahead.
        Jump(u64),
        /// Remove the live key at this place in order.
        Remove(usize),
        /// Remove a key this far behind the next.
        RemoveBehind(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => Just(Op::Next),
            1 => Just(Op::Skip),
            1 => (0u64..100_000).prop_map(Op::Jump),
            5 => any::<usize>().prop_map(Op::Remove),
            1 => (0u64..200).prop_map(Op::RemoveBehind),
        ]
    }

    proptest! {
        /// Against a B-tree: the same answers, and a ring never more than about twice
        /// its live entries.
        #[test]
        fn behaves_as_an_ordered_map(ops in proptest::collection::vec(op(), 0..600)) {
            let mut map = SeqMap::<u64, u64>::new();
            let mut model = BTreeMap::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Next => {
                        prop_assert_eq!(map.insert(next, next * 7), model.insert(next, next * 7));
                        next += 1;
                    }
                    Op::Skip => next += 1,
                    Op::Jump(ahead) => {
                        next += ahead;
                        prop_assert_eq!(map.insert(next, 1), model.insert(next, 1));
                        next += 1;
                    }
                    Op::Remove(i) => {
                        if let Some(key) = model.keys().nth(i % model.len().max(1)).copied() {
                            prop_assert_eq!(map.remove(key), model.remove(&key));
                        }
                    }
                    Op::RemoveBehind(back) => {
                        let key = next.saturating_sub(back);
                        prop_assert_eq!(map.remove(key), model.remove(&key));
                    }
                }
                prop_assert_eq!(map.len(), model.len());
                prop_assert!(map.ring.len() <= 2 * map.in_ring + SLACK + 1);
                let got: Vec<(u64, u64)> = map.iter().map(|(k, v)| (k, *v)).collect();
                let want: Vec<(u64, u64)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(got, want);
                for key in next.saturating_sub(40)..next + 2 {
                    prop_assert_eq!(map.get(key), model.get(&key));
                }
            }
            let drained: Vec<u64> = map.drain().collect();
            prop_assert_eq!(drained, model.values().copied().collect::<Vec<_>>());
            prop_assert_eq!(map.len(), 0);
        }
    }

    #[test]
    fn a_long_lived_key_leaves_the_ring_and_memory_stays_bounded() {
        let mut map = SeqMap::<u64, u64>::new();
        map.insert(0, 0); // a file that lasts
        for key in 1..100_000 {
            map.insert(key, key); // a command, ended at once
            assert_eq!(map.remove(key), Some(key));
            assert!(map.ring.len() <= SLACK + 2, "ring of {}", map.ring.len());
        }
        assert_eq!(map.get(0), Some(&0));
        assert_eq!(map.remove(0), Some(0));
        assert_eq!(map.len(), 0);
    }

    #[test]
    fn a_burst_gives_its_memory_back_once_over() {
        let mut map = SeqMap::<u64, [u8; 64]>::new();
        for key in 0..10_000 {
            map.insert(key, [1; 64]);
        }
        for key in 0..10_000 {
            map.remove(key);
        }
        assert_eq!(map.ring.capacity(), 0);
    }
}
