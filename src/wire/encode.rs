//! The encoder: frames into a caller's `BufMut`.
//!
//! Each frame lists its fields once ([`Frame::fields`]); measuring and writing both walk
//! that list, so the length prefix and the bytes written can never disagree.

use bytes::BufMut;

use super::frame::{Digest, Frame, FrameType, MAGIC};
use super::varint::{put_varint, varint_len};

/// Why a frame could not be encoded. Nothing is written when encoding fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A number in the frame is over the largest varint, 2^62 - 1.
    #[error("{frame:?} frame: value {value} is over the largest varint")]
    ValueTooLarge {
        /// The frame being encoded.
        frame: FrameType,
        /// The value.
        value: u64,
    },
    /// The destination has less room than the frame needs.
    #[error("frame needs {needed} bytes, the buffer has room for {available}")]
    BufferTooSmall {
        /// Bytes the frame takes.
        needed: usize,
        /// `remaining_mut()` of the destination.
        available: usize,
    },
}

/// Size of the pieces [`put_payload`] copies a payload in.
const PAYLOAD_PIECE: usize = 2048;

/// Copies a payload into `dst`, in pieces of [`PAYLOAD_PIECE`] bytes.
///
/// One large copy is what glibc's memmove does with `rep movsb`, and on this project's
/// reference CPU (AMD Zen 3) that runs at a third of its speed or less whenever source and
/// destination sit at unlucky offsets from each other (a payload right after a short
/// header usually does). Pieces under glibc's `rep movsb` threshold take its vector loop,
/// which is fast at any alignment. docs/PERFORMANCE.md has the measurements.
fn put_payload<B: BufMut>(dst: &mut B, payload: &[u8]) {
    for piece in payload.chunks(PAYLOAD_PIECE) {
        dst.put_slice(piece);
    }
}

/// A digest's fields (`END`, `RESUME_FROM`): algorithm, then the value length-prefixed.
fn digest_fields(digest: &Digest, f: &mut impl FnMut(Field<'_>)) {
    f(Field::Varint(digest.algorithm()));
    match digest {
        Digest::Crc32c(crc) => f(Field::Prefixed(&crc.to_be_bytes())),
    }
}

/// One field of a frame body, as the wire lays it out.
enum Field<'a> {
    /// A varint.
    Varint(u64),
    /// Bytes written as they are (the `HELLO` magic, a digest value).
    Fixed(&'a [u8]),
    /// A varint length, then the bytes.
    Prefixed(&'a [u8]),
    /// The rest of the body, with no length of its own: the payload of `CMD`, `CMD_CONT`
    /// and `DATA`. Always the last field.
    Payload(&'a [u8]),
}

impl Field<'_> {
    fn len(&self) -> Option<usize> {
        match *self {
            Field::Varint(v) => varint_len(v),
            Field::Fixed(b) | Field::Payload(b) => Some(b.len()),
            Field::Prefixed(b) => Some(varint_len(b.len() as u64)? + b.len()),
        }
    }

    #[inline]
    fn write<B: BufMut>(&self, dst: &mut B) {
        match *self {
            Field::Varint(v) => put_varint(dst, v),
            Field::Fixed(b) => dst.put_slice(b),
            Field::Payload(b) => put_payload(dst, b),
            Field::Prefixed(b) => {
                put_varint(dst, b.len() as u64);
                dst.put_slice(b);
            }
        }
    }
}

/// Sizes of an encoded frame.
#[derive(Clone, Copy)]
struct Measure {
    /// Type and length varints.
    prefix: usize,
    /// Everything after the length varint.
    body: usize,
    /// The trailing payload, part of `body`.
    payload: usize,
}

impl Frame {
    /// Calls `f` with each body field in wire order: the single description of every
    /// frame's layout.
    #[inline]
    fn fields(&self, f: &mut impl FnMut(Field<'_>)) {
        use Field::*;
        match self {
            Frame::Hello(h) => {
                f(Fixed(&MAGIC));
                for v in [
                    h.version,
                    h.capabilities.0,
                    h.role as u64,
                    h.max_frame_size,
                    h.max_cmd_size,
                    h.max_buffer_size,
                    h.max_file_size,
                    h.max_cmds_in_flight,
                    h.max_transfers,
                    h.transfer_window,
                    h.conn_window,
                ] {
                    f(Varint(v));
                }
                // Appended in this version: absent from a HELLO without a key, so a
                // HELLO of an older version is the same bytes.
                if let Some(key) = &h.identity {
                    f(Prefixed(&key.0));
                }
            }
            Frame::Login(l) => {
                f(Prefixed(l.user.as_bytes()));
                f(Prefixed(&l.token));
            }
            Frame::LoginResult(r) => f(Varint(r.code.as_u32().into())),
            Frame::Ping(p) | Frame::Pong(p) => f(Varint(p.nonce)),
            Frame::Close(c) => {
                f(Varint(c.code.as_u32().into()));
                f(Prefixed(c.reason.as_bytes()));
            }
            Frame::ConnCredit(c) => f(Varint(c.max_data)),
            Frame::Cmd(c) => {
                f(Varint(c.id));
                f(Prefixed(c.peer.as_bytes()));
                let once = c.once.map(|o| o.to_bytes());
                f(Prefixed(once.as_ref().map_or(&[][..], |o| &o[..])));
                f(Varint(c.total_len));
                f(Payload(&c.data));
            }
            Frame::CmdCont(c) => {
                f(Varint(c.id));
                f(Varint(c.offset));
                f(Payload(&c.data));
            }
            Frame::Open(o) => {
                f(Varint(o.id));
                f(Varint(o.kind as u64));
                f(Prefixed(o.peer.as_bytes()));
                f(Varint(o.size));
                f(Prefixed(o.name.as_bytes()));
                f(Prefixed(
                    o.resume_key.as_ref().map_or(&[][..], |k| &k.0[..]),
                ));
                // Appended for sealed files: absent from every other `OPEN`.
                if let Some(seal) = &o.seal {
                    f(Prefixed(seal));
                }
            }
            Frame::Data(d) => {
                f(Varint(d.id));
                f(Varint(d.offset));
                f(Payload(&d.payload));
            }
            Frame::End(e) => {
                f(Varint(e.id));
                f(Varint(e.size));
                digest_fields(&e.digest, f);
            }
            Frame::Credit(c) => {
                f(Varint(c.id));
                f(Varint(c.max_offset));
            }
            Frame::Cancel(c) => {
                f(Varint(c.id));
                f(Varint(c.code.as_u32().into()));
            }
            Frame::Result(r) => {
                f(Varint(r.id));
                f(Varint(r.code.as_u32().into()));
            }
            Frame::ResumeFrom(r) => {
                f(Varint(r.id));
                f(Varint(r.offset));
                digest_fields(&r.digest, f);
            }
            Frame::KeyQuery(q) => f(Prefixed(q.user.as_bytes())),
            Frame::Key(k) => {
                f(Prefixed(k.user.as_bytes()));
                f(Prefixed(k.key.as_ref().map_or(&[][..], |k| &k.0[..])));
            }
        }
    }

    #[inline]
    fn measure(&self) -> Result<Measure, EncodeError> {
        let (mut body, mut payload, mut too_large) = (0usize, 0usize, None);
        self.fields(&mut |field| match field.len() {
            Some(n) => {
                body += n;
                if let Field::Payload(_) = field {
                    payload = n;
                }
            }
            None => {
                if let Field::Varint(v) = field {
                    too_large.get_or_insert(v);
                }
            }
        });
        let frame = self.frame_type();
        if let Some(value) = too_large {
            return Err(EncodeError::ValueTooLarge { frame, value });
        }
        let length = varint_len(body as u64).ok_or(EncodeError::ValueTooLarge {
            frame,
            value: body as u64,
        })?;
        // Frame types are below 64: their varint is one byte.
        Ok(Measure {
            prefix: 1 + length,
            body,
            payload,
        })
    }

    /// Bytes the whole frame takes on the wire.
    ///
    /// ```
    /// use peermsg::wire::{Frame, Ping};
    ///
    /// assert_eq!(Frame::Ping(Ping { nonce: 7 }).encoded_len(), Ok(3)); // type, length, nonce
    /// ```
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        self.measure().map(|m| m.prefix + m.body)
    }

    /// Appends the frame to `dst` and returns the number of bytes written.
    ///
    /// Fails, writing nothing, if a number is over the largest varint or `dst` has too
    /// little room (never the case for `Vec<u8>` or `BytesMut`, which grow). The encoder
    /// does not check the peer's limits: that is the sender's job.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use peermsg::wire::{Decoder, Frame, Limits, Ping};
    ///
    /// let mut buf = BytesMut::new();
    /// Frame::Ping(Ping { nonce: 7 }).encode(&mut buf).unwrap();
    /// let frame = Decoder::new(Limits::default()).unwrap().decode(&mut buf).unwrap();
    /// assert_eq!(frame, Some(Frame::Ping(Ping { nonce: 7 })));
    /// ```
    pub fn encode<B: BufMut>(&self, dst: &mut B) -> Result<usize, EncodeError> {
        let m = self.measure()?;
        self.write(dst, m, true)
    }

    /// Appends everything but the trailing payload of a `CMD`, `CMD_CONT` or `DATA` frame,
    /// and returns the number of bytes written. The caller then writes the payload itself,
    /// for example as the second buffer of a vectored write, so the payload is not copied.
    /// For other frames this is the same as [`Frame::encode`].
    ///
    /// ```
    /// use bytes::Bytes;
    /// use peermsg::wire::{Data, Frame};
    ///
    /// let payload = Bytes::from(vec![7u8; 16_000]);
    /// let frame = Frame::Data(Data { id: 3, offset: 0, payload: payload.clone() });
    /// let mut header = Vec::new();
    /// let n = frame.encode_header(&mut header).unwrap();
    /// assert_eq!(n + payload.len(), frame.encoded_len().unwrap());
    /// ```
    pub fn encode_header<B: BufMut>(&self, dst: &mut B) -> Result<usize, EncodeError> {
        let m = self.measure()?;
        self.write(dst, m, false)
    }

    #[inline]
    fn write<B: BufMut>(
        &self,
        dst: &mut B,
        m: Measure,
        with_payload: bool,
    ) -> Result<usize, EncodeError> {
        let needed = m.prefix + m.body - if with_payload { 0 } else { m.payload };
        let available = dst.remaining_mut();
        if available < needed {
            return Err(EncodeError::BufferTooSmall { needed, available });
        }
        put_varint(dst, self.frame_type().as_u64());
        put_varint(dst, m.body as u64);
        self.fields(&mut |field| match field {
            Field::Payload(_) if !with_payload => {}
            field => field.write(dst),
        });
        Ok(needed)
    }
}
