//! Where encoded frames go: [`FrameSink`], and [`Transmit`], the sink that does not copy
//! payloads.

use alloc::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::encode::EncodeError;
use super::frame::Frame;

/// Payloads at least this long go out as their own chunk of a [`Transmit`]; shorter ones
/// are copied next to their header, where a copy costs less than an extra chunk (one more
/// `iovec` for the kernel, one more reference count).
pub const SHARED_PAYLOAD_MIN: usize = 2048;

/// Where `poll_transmit` puts frames: a `BytesMut` (every byte copied into one contiguous
/// buffer) or a [`Transmit`] (payloads shared, not copied).
pub trait FrameSink {
    /// Bytes held so far.
    fn len(&self) -> usize;

    /// `true` when nothing is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one frame; returns the number of bytes it takes on the wire.
    fn put_frame(&mut self, frame: &Frame) -> Result<usize, EncodeError>;
}

impl FrameSink for BytesMut {
    fn len(&self) -> usize {
        BytesMut::len(self)
    }

    fn put_frame(&mut self, frame: &Frame) -> Result<usize, EncodeError> {
        frame.encode(self)
    }
}

/// Frames ready for the transport, as a queue of byte chunks: headers and short frames
/// are written into one growing buffer, and each long payload stays the [`Bytes`] it was
/// handed in as, so no payload byte is copied on the way out.
///
/// It is a [`Buf`]: a runtime writes it with a vectored write (`chunks_vectored`, or
/// tokio's `write_all_buf`), or takes it chunk by chunk with [`Transmit::pop_chunk`].
///
/// ```
/// use bytes::{Buf, Bytes};
/// use peermsg::wire::{Data, Frame, FrameSink, Ping, Transmit};
///
/// let payload = Bytes::from(vec![7u8; 16_000]);
/// let mut out = Transmit::new();
/// out.put_frame(&Frame::Ping(Ping { nonce: 1 })).unwrap();
/// out.put_frame(&Frame::Data(Data { id: 0, offset: 0, payload: payload.clone() })).unwrap();
///
/// // The same bytes `Frame::encode` writes, in three chunks: the ping and the DATA header,
/// // the payload itself (not a copy), and nothing after it.
/// let first = out.pop_chunk().unwrap();
/// assert_eq!(first.len(), 3 + 5); // type, length (2), id, offset
/// let second = out.pop_chunk().unwrap();
/// assert_eq!(second.as_ptr(), payload.as_ptr());
/// assert!(out.pop_chunk().is_none());
/// ```
#[derive(Debug, Default)]
pub struct Transmit {
    /// Chunks complete so far, in wire order.
    chunks: VecDeque<Bytes>,
    /// Bytes written after the last chunk.
    head: BytesMut,
    /// Bytes in `chunks` and `head`.
    len: usize,
}

impl Transmit {
    /// An empty queue.
    pub fn new() -> Self {
        Transmit::default()
    }

    /// The next chunk in wire order, or `None` when empty.
    pub fn pop_chunk(&mut self) -> Option<Bytes> {
        let chunk = match self.chunks.pop_front() {
            Some(chunk) => chunk,
            None if self.head.is_empty() => return None,
            None => self.head.split().freeze(),
        };
        self.len -= chunk.len();
        Some(chunk)
    }

    /// Appends bytes made elsewhere, as one chunk: for an adapter that turns what it
    /// writes into other bytes (a TLS layer's records, say).
    pub fn push_bytes(&mut self, bytes: Bytes) {
        if !self.head.is_empty() {
            self.chunks.push_back(self.head.split().freeze());
        }
        self.len += bytes.len();
        if !bytes.is_empty() {
            self.chunks.push_back(bytes);
        }
    }

    /// Drops everything held.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.head.clear();
        self.len = 0;
    }
}

impl FrameSink for Transmit {
    fn len(&self) -> usize {
        self.len
    }

    fn put_frame(&mut self, frame: &Frame) -> Result<usize, EncodeError> {
        let n = match frame.payload() {
            Some(payload) if payload.len() >= SHARED_PAYLOAD_MIN => {
                let header = frame.encode_header(&mut self.head)?;
                self.chunks.push_back(self.head.split().freeze());
                self.chunks.push_back(payload.clone());
                header + payload.len()
            }
            _ => frame.encode(&mut self.head)?,
        };
        self.len += n;
        Ok(n)
    }
}

impl Buf for Transmit {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        match self.chunks.front() {
            Some(chunk) => chunk,
            None => &self.head,
        }
    }

    /// Advancing past the end empties the queue (the core does not panic, even on a
    /// runtime's miscount).
    fn advance(&mut self, cnt: usize) {
        let mut cnt = cnt.min(self.len);
        self.len -= cnt;
        while cnt > 0 {
            match self.chunks.front_mut() {
                Some(chunk) if cnt >= chunk.len() => {
                    cnt -= chunk.len();
                    self.chunks.pop_front();
                }
                Some(chunk) => {
                    chunk.advance(cnt);
                    return;
                }
                None => {
                    self.head.advance(cnt);
                    return;
                }
            }
        }
    }

    #[cfg(feature = "std")]
    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        let parts = self.chunks.iter().map(|c| &c[..]).chain([&self.head[..]]);
        for (slot, part) in dst.iter_mut().zip(parts.filter(|p| !p.is_empty())) {
            *slot = std::io::IoSlice::new(part);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Cmd, Data, Ping, UserId};

    fn frames() -> [Frame; 4] {
        [
            Frame::Ping(Ping { nonce: 9 }),
            Frame::Data(Data {
                id: 1,
                offset: 0,
                payload: Bytes::from(alloc::vec![1u8; 10_000]),
            }),
            Frame::Cmd(Cmd {
                id: 2,
                peer: UserId::new("bob").unwrap(),
                once: None,
                total_len: 3,
                data: Bytes::from_static(b"abc"),
            }),
            Frame::Data(Data {
                id: 1,
                offset: 10_000,
                payload: Bytes::from(alloc::vec![2u8; SHARED_PAYLOAD_MIN]),
            }),
        ]
    }

    /// The test frames written into each sink.
    fn both_sinks() -> (BytesMut, Transmit) {
        let mut flat = BytesMut::new();
        let mut out = Transmit::new();
        for frame in frames() {
            flat.put_frame(&frame).unwrap();
            out.put_frame(&frame).unwrap();
        }
        (flat, out)
    }

    #[test]
    fn holds_the_bytes_encode_writes() {
        let mut flat = BytesMut::new();
        let mut out = Transmit::new();
        for frame in frames() {
            let a = flat.put_frame(&frame).unwrap();
            let b = out.put_frame(&frame).unwrap();
            assert_eq!(a, b);
        }
        assert_eq!(out.remaining(), flat.len());
        let mut joined = alloc::vec::Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = out.pop_chunk() {
            joined.extend_from_slice(&chunk);
            chunks += 1;
        }
        // Ping + DATA header, payload, CMD + DATA header, payload.
        assert_eq!(chunks, 4);
        assert_eq!(joined, flat);
        assert_eq!(out.remaining(), 0);
    }

    #[test]
    fn advances_across_chunks() {
        let (flat, mut out) = both_sinks();
        let mut read = alloc::vec::Vec::new();
        let mut step = 1;
        while out.has_remaining() {
            let n = step.min(out.chunk().len());
            read.extend_from_slice(&out.chunk()[..n]);
            out.advance(n);
            step = step * 3 + 1;
        }
        assert_eq!(read, flat);
        out.advance(1); // past the end: nothing happens
        assert_eq!(out.remaining(), 0);
    }

    #[cfg(feature = "std")]
    #[test]
    fn vectored_view_is_the_whole_queue() {
        let (flat, mut out) = both_sinks();
        out.advance(5);
        let mut slots = [std::io::IoSlice::new(&[]); 8];
        let n = out.chunks_vectored(&mut slots);
        let joined: alloc::vec::Vec<u8> =
            slots[..n].iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(joined, flat[5..]);
    }
}
