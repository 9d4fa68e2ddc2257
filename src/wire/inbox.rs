//! [`Inbox`]: received bytes waiting to be decoded, the one place a connection's input is
//! buffered (for the client and for each relay connection).

use bytes::{Buf, BytesMut};

use super::decode::{DecodeError, Decoder, MAX_HEAD};
use super::frame::Frame;

/// Received bytes not decoded yet.
///
/// Bytes come in two ways. [`Inbox::push_slice`] copies them. [`Inbox::push_owned`] takes
/// the runtime's buffer itself: frames whole inside it are handed out as slices of it, and
/// when a frame straddles two buffers only that frame is copied, unless the new buffer
/// follows the old one in memory (the usual case when a runtime reads into one
/// `BytesMut` and splits off what each read filled), when the two are joined without a
/// copy.
///
/// Between calls it holds at most the start of one frame, whose announced length the
/// decoder has checked against its limits.
///
/// ```
/// use bytes::BytesMut;
/// use peermsg::wire::{Decoder, Frame, Inbox, Limits, Ping};
///
/// let mut wire = BytesMut::new();
/// for nonce in 0..3 {
///     Frame::Ping(Ping { nonce }).encode(&mut wire).unwrap();
/// }
/// let decoder = Decoder::new(Limits::default()).unwrap();
/// let mut inbox = Inbox::new();
/// let tail = wire.split_off(4); // the second ping is cut in two
/// inbox.push_owned(wire);
/// assert!(inbox.next_frame(&decoder).unwrap().is_some());
/// assert!(inbox.next_frame(&decoder).unwrap().is_none());
/// inbox.push_owned(tail);
/// assert_eq!(inbox.next_frame(&decoder).unwrap(), Some(Frame::Ping(Ping { nonce: 1 })));
/// assert_eq!(inbox.next_frame(&decoder).unwrap(), Some(Frame::Ping(Ping { nonce: 2 })));
/// assert!(inbox.is_empty());
/// ```
#[derive(Debug, Default)]
pub struct Inbox {
    /// Where frames are decoded from.
    buf: BytesMut,
    /// An owned buffer that comes after `buf`, adopted once `buf` is used up.
    next: Option<BytesMut>,
}

impl Inbox {
    /// An empty inbox.
    pub fn new() -> Self {
        Inbox::default()
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.buf.len() + self.next.as_ref().map_or(0, BytesMut::len)
    }

    /// `true` when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a copy of `bytes`.
    pub fn push_slice(&mut self, bytes: &[u8]) {
        match &mut self.next {
            Some(next) => next.extend_from_slice(bytes),
            None => self.buf.extend_from_slice(bytes),
        }
    }

    /// Appends `bytes` without copying them (see the type's documentation).
    pub fn push_owned(&mut self, bytes: BytesMut) {
        if bytes.is_empty() {
            return;
        }
        match &mut self.next {
            // `unsplit` joins in place when `bytes` follows `next` in memory, else copies.
            Some(next) => next.unsplit(bytes),
            None if self.buf.is_empty() => self.buf = bytes,
            None => self.next = Some(bytes),
        }
    }

    /// Takes the next whole frame, or `None` until more bytes come. After an error the
    /// stream is lost.
    pub fn next_frame(&mut self, decoder: &Decoder) -> Result<Option<Frame>, DecodeError> {
        loop {
            let head = decoder.head(&self.buf)?;
            if let Some(head) = head {
                if self.buf.len() >= head.total {
                    return decoder.take(&mut self.buf, head).map(Some);
                }
            }
            let Some(mut next) = self.next.take() else {
                return Ok(None);
            };
            if self.buf.is_empty() {
                self.buf = next;
            } else if follows(&self.buf, &next) {
                self.buf.unsplit(next);
            } else {
                // Copy just what completes the frame (or its header) from `next`.
                let want = match head {
                    Some(head) => head.total - self.buf.len(),
                    None => MAX_HEAD.saturating_sub(self.buf.len()).max(1),
                };
                let n = want.min(next.len());
                self.buf.extend_from_slice(&next[..n]);
                next.advance(n);
                if !next.is_empty() {
                    self.next = Some(next);
                }
            }
        }
    }
}

/// `true` when `b` starts where `a` ends in memory, so `a.unsplit(b)` need not copy.
fn follows(a: &BytesMut, b: &BytesMut) -> bool {
    core::ptr::eq(a.as_ptr().wrapping_add(a.len()), b.as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Data, Limits, Ping};
    use alloc::vec::Vec;
    use bytes::Bytes;

    fn stream() -> (Vec<Frame>, BytesMut) {
        let frames: Vec<Frame> = (0..20u64)
            .map(|i| match i % 2 {
                0 => Frame::Ping(Ping { nonce: i * 1000 }),
                _ => Frame::Data(Data {
                    id: 1,
                    offset: i * 5000,
                    payload: Bytes::from(alloc::vec![i as u8; 5000]),
                }),
            })
            .collect();
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire).unwrap();
        }
        (frames, wire)
    }

    fn drain(inbox: &mut Inbox, decoder: &Decoder, got: &mut Vec<Frame>) {
        while let Some(f) = inbox.next_frame(decoder).unwrap() {
            got.push(f);
        }
    }

    #[test]
    fn owned_pieces_cut_anywhere_give_the_same_frames() {
        let decoder = Decoder::new(Limits::default()).unwrap();
        let (frames, wire) = stream();
        for step in [1, 2, 7, 100, 4999, 5003, 20_000] {
            // Separate allocations: every boundary takes the copying path.
            let mut inbox = Inbox::new();
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                inbox.push_owned(BytesMut::from(piece));
                drain(&mut inbox, &decoder, &mut got);
            }
            assert_eq!(got, frames, "step {step}");
            assert!(inbox.is_empty());
        }
    }

    #[test]
    fn pieces_split_from_one_buffer_are_joined_without_a_copy() {
        let decoder = Decoder::new(Limits::default()).unwrap();
        let (frames, mut wire) = stream();
        let (start, end) = (wire.as_ptr() as usize, wire.as_ptr() as usize + wire.len());
        let mut inbox = Inbox::new();
        let mut got = Vec::new();
        while !wire.is_empty() {
            let piece = wire.split_to(3333.min(wire.len()));
            inbox.push_owned(piece);
            drain(&mut inbox, &decoder, &mut got);
        }
        assert_eq!(got, frames);
        // Each payload is a slice of the one original buffer: none was copied.
        let payloads: Vec<&Bytes> = got.iter().filter_map(Frame::payload).collect();
        assert_eq!(payloads.len(), 10);
        for p in payloads {
            let at = p.as_ptr() as usize;
            assert!(at >= start && at + p.len() <= end, "a payload was copied");
        }
    }

    #[test]
    fn slices_and_owned_buffers_mix_in_order() {
        let decoder = Decoder::new(Limits::default()).unwrap();
        let (frames, wire) = stream();
        let mut inbox = Inbox::new();
        let mut got = Vec::new();
        for (i, piece) in wire.chunks(777).enumerate() {
            if i % 2 == 0 {
                inbox.push_slice(piece);
            } else {
                inbox.push_owned(BytesMut::from(piece));
            }
            if i % 3 == 0 {
                drain(&mut inbox, &decoder, &mut got);
            }
        }
        drain(&mut inbox, &decoder, &mut got);
        assert_eq!(got, frames);
    }

    #[test]
    fn a_bad_header_in_an_owned_buffer_is_an_error() {
        let decoder = Decoder::new(Limits::default()).unwrap();
        let mut inbox = Inbox::new();
        inbox.push_owned(BytesMut::from(&[0x00u8, 1, 2][..]));
        assert!(inbox.next_frame(&decoder).is_err());
    }
}
