//! A file being sent, read ahead: each read of a `Blob` is a round trip to the browser's
//! blob store (a millisecond or more), and the core asks for a file's bytes as its
//! receiver's credit comes, in pieces often far smaller than that costs. So the file is
//! read in blocks of [`BLOCK`] bytes, the next one while the core takes the current one,
//! and the core's asks are answered from them. Memory: two blocks per file being sent.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Bytes read from a file at once.
pub const BLOCK: u64 = 8 << 20;

/// The blocks read of a file being sent, and what the core waits for.
pub(crate) struct Source {
    size: u64,
    /// Blocks read, in file order, contiguous: at most two.
    blocks: VecDeque<(u64, Bytes)>,
    /// The block being read: its offset.
    reading: Option<u64>,
    /// What the core asked for and was not given yet.
    wanted: Option<(u64, u64)>,
}

impl Source {
    /// A file of `size` bytes, nothing read yet.
    pub(crate) fn new(size: u64) -> Source {
        Source {
            size,
            blocks: VecDeque::new(),
            reading: None,
            wanted: None,
        }
    }

    /// The core asks for `len` bytes from `offset`: them, if read already; else they are
    /// given when their block comes ([`Source::arrived`]).
    pub(crate) fn ask(&mut self, offset: u64, len: u64) -> Option<Bytes> {
        // Blocks wholly before what is asked are done with.
        while self
            .blocks
            .front()
            .is_some_and(|(at, b)| at + b.len() as u64 <= offset)
        {
            self.blocks.pop_front();
        }
        match self.gather(offset, len) {
            Some(bytes) => Some(bytes),
            None => {
                self.wanted = Some((offset, len));
                None
            }
        }
    }

    /// The block to read next, if one should be (none while one is being read): the one
    /// with what is wanted, or the one after those held.
    pub(crate) fn next_read(&mut self) -> Option<(u64, u64)> {
        if self.reading.is_some() {
            return None;
        }
        let at = match self.wanted {
            // Wanted and not held: read from there, and forget what is held elsewhere.
            Some((offset, _)) if !self.holds(offset) => {
                self.blocks.clear();
                offset
            }
            _ if self.blocks.len() >= 2 => return None,
            _ => self.blocks.back().map(|(at, b)| at + b.len() as u64)?,
        };
        if at >= self.size {
            return None;
        }
        let len = BLOCK.min(self.size - at);
        self.reading = Some(at);
        Some((at, len))
    }

    /// The block read at `offset` came: held, and what was wanted of it, if it can be
    /// given now (its offset and bytes).
    pub(crate) fn arrived(&mut self, offset: u64, bytes: Bytes) -> Option<(u64, Bytes)> {
        self.reading = None;
        let follows = match self.blocks.back() {
            Some((at, b)) => at + b.len() as u64 == offset,
            None => true,
        };
        if !follows {
            self.blocks.clear();
        }
        self.blocks.push_back((offset, bytes));
        let (want_at, want_len) = self.wanted?;
        let bytes = self.gather(want_at, want_len)?;
        self.wanted = None;
        Some((want_at, bytes))
    }

    /// A read failed: nothing is being read.
    pub(crate) fn read_failed(&mut self) {
        self.reading = None;
    }

    fn holds(&self, offset: u64) -> bool {
        self.blocks
            .iter()
            .any(|(at, b)| (*at..at + b.len() as u64).contains(&offset))
    }

    /// `len` bytes from `offset`, if the blocks hold them all (a slice of one block, or a
    /// copy across two).
    fn gather(&self, offset: u64, len: u64) -> Option<Bytes> {
        let end = offset.checked_add(len)?;
        let mut out: Option<BytesMut> = None;
        for (at, block) in &self.blocks {
            let block_end = at + block.len() as u64;
            if block_end <= offset || *at >= end {
                continue;
            }
            let from = offset.max(*at) - at;
            let to = end.min(block_end) - at;
            let part = block.slice(from as usize..to as usize);
            if out.is_none() && *at <= offset && block_end >= end {
                return Some(part); // all in this block: no copy
            }
            out.get_or_insert_with(BytesMut::new)
                .extend_from_slice(&part);
        }
        out.filter(|b| b.len() as u64 == len).map(BytesMut::freeze)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(at: u64, len: u64) -> Bytes {
        (at..at + len).map(|i| i as u8).collect::<Vec<_>>().into()
    }

    fn expect(bytes: Option<Bytes>, at: u64, len: u64) {
        assert_eq!(bytes.expect("given"), block(at, len));
    }

    #[test]
    fn asks_are_answered_from_blocks_read_ahead_across_their_edges() {
        let size = 3 * BLOCK + 5;
        let mut source = Source::new(size);
        assert_eq!(source.ask(0, 1000), None);
        assert_eq!(source.next_read(), Some((0, BLOCK)));
        assert_eq!(source.next_read(), None, "one read at a time");
        let (at, bytes) = source.arrived(0, block(0, BLOCK)).expect("the wanted part");
        assert_eq!((at, bytes), (0, block(0, 1000)));
        // The next block is read while the first is taken.
        assert_eq!(source.next_read(), Some((BLOCK, BLOCK)));
        expect(source.ask(1000, 5000), 1000, 5000);
        // Across the edge: wanted until the next block comes, then copied from both.
        assert_eq!(source.ask(BLOCK - 10, 20), None);
        let (at, bytes) = source.arrived(BLOCK, block(BLOCK, BLOCK)).unwrap();
        assert_eq!((at, bytes), (BLOCK - 10, block(BLOCK - 10, 20)));
        // Two blocks held: no more read ahead until the first is done with.
        assert_eq!(source.next_read(), None);
        expect(source.ask(BLOCK + 10, 10), BLOCK + 10, 10);
        assert_eq!(source.next_read(), Some((2 * BLOCK, BLOCK)));
        source.arrived(2 * BLOCK, block(2 * BLOCK, BLOCK));
        expect(source.ask(3 * BLOCK - 1, 1), 3 * BLOCK - 1, 1);
        // The last block is only what is left of the file.
        assert_eq!(source.next_read(), Some((3 * BLOCK, 5)));
    }

    #[test]
    fn an_ask_elsewhere_reads_from_there() {
        // A resumed send goes on from its receiver's offset, behind what was read.
        let mut source = Source::new(4 * BLOCK);
        source.ask(0, 10);
        source.next_read();
        source.arrived(0, block(0, BLOCK));
        source.next_read();
        source.arrived(BLOCK, block(BLOCK, BLOCK));
        assert_eq!(source.ask(3 * BLOCK + 7, 100), None);
        assert_eq!(source.next_read(), Some((3 * BLOCK + 7, BLOCK - 7)));
        let (at, bytes) = source
            .arrived(3 * BLOCK + 7, block(3 * BLOCK + 7, BLOCK - 7))
            .unwrap();
        assert_eq!((at, bytes), (3 * BLOCK + 7, block(3 * BLOCK + 7, 100)));
        // A failed read leaves nothing being read: asked again, it is read again.
        assert_eq!(source.ask(10, 10), None);
        assert_eq!(source.next_read(), Some((10, BLOCK)));
        source.read_failed();
        assert_eq!(source.next_read(), Some((10, BLOCK)));
    }
}
