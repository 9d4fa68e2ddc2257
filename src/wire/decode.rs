//! The decoder: the one place a frame is parsed.
//!
//! A frame is `type`, `length`, then `length` bytes of body. The decoder reads the two
//! header varints from whatever has arrived; an unknown type or a length over the limit is
//! an error at once, before the body is awaited. When the whole frame is there it is split
//! off the input and its body parsed with nom; byte fields come out as `Bytes` slices of
//! the input, never copies.

use alloc::boxed::Box;
use bytes::{Buf, Bytes, BytesMut};
use nom::bytes::complete::take;
use nom::error::{ErrorKind, ParseError};
use nom::{Err, IResult};

use super::frame::*;
use super::limits::{Limits, LimitsError, MAX_FRAME_SIZE, MIN_FRAME_SIZE};
use super::text::{Text, UserId, UserIdError};
use super::varint::varint;
use crate::ErrorCode;

/// A limit of [`Limits`] or of the protocol, named in [`DecodeError::LimitExceeded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// [`Limits::max_user_id_len`].
    UserIdLen,
    /// [`Limits::max_token_len`].
    TokenLen,
    /// [`Limits::max_file_name_len`].
    FileNameLen,
    /// [`Limits::max_reason_len`].
    ReasonLen,
    /// [`Limits::max_cmd_size`].
    CmdSize,
    /// [`Limits::max_buffer_size`].
    BufferSize,
    /// [`Limits::max_file_size`].
    FileSize,
    /// The larger of the buffer and file limits, for data offsets and `END` sizes.
    TransferSize,
}

impl core::fmt::Display for Limit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Limit::UserIdLen => "user id length",
            Limit::TokenLen => "token length",
            Limit::FileNameLen => "file name length",
            Limit::ReasonLen => "close reason length",
            Limit::CmdSize => "command size",
            Limit::BufferSize => "buffer size",
            Limit::FileSize => "file size",
            Limit::TransferSize => "transfer size",
        })
    }
}

/// What was wrong with the input. Any error ends the connection: the stream cannot be
/// trusted past it. [`DecodeError::code`] gives the code to close with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame type is not one this version knows.
    #[error("unknown frame type {0:#x}")]
    UnknownFrameType(u64),
    /// The frame's length is over `max_frame_size`.
    #[error("{frame:?} frame of {len} bytes is over the limit of {max}")]
    FrameTooLarge {
        /// The frame's type.
        frame: FrameType,
        /// Its declared body length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A varint was written in more bytes than its value needs.
    #[error("varint {value} written in {len} bytes; the shortest form is required")]
    NonCanonicalVarint {
        /// The value.
        value: u64,
        /// Bytes used.
        len: usize,
    },
    /// The body ended inside a field.
    #[error("{frame:?} frame ends inside a field")]
    Truncated {
        /// The frame's type.
        frame: FrameType,
    },
    /// The body goes on after its last field.
    #[error("{frame:?} frame has {extra} bytes after its last field")]
    TrailingBytes {
        /// The frame's type.
        frame: FrameType,
        /// How many.
        extra: usize,
    },
    /// A `HELLO` that does not start with [`MAGIC`]: the peer does not speak peermsg.
    #[error("HELLO does not start with the peermsg magic: the peer does not speak peermsg")]
    BadMagic,
    /// A length or size is over its limit.
    #[error("{limit} {value} is over the limit of {max}")]
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// The value found.
        value: u64,
        /// The limit.
        max: u64,
    },
    /// A user id is not valid.
    #[error("{frame:?} frame: {error}")]
    InvalidUserId {
        /// The frame's type.
        frame: FrameType,
        /// What is wrong with it.
        error: UserIdError,
    },
    /// A text field is not UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// `"file name"` or `"close reason"`.
        field: &'static str,
    },
    /// A number is outside the values its field allows.
    #[error("{field} {value} is out of range")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// An `END` with a digest algorithm this version does not know.
    #[error("unknown digest algorithm {0}")]
    UnknownDigest(u64),
    /// A digest of the wrong length for its algorithm.
    #[error("digest of algorithm {algorithm} must be {expected} bytes, not {len}")]
    DigestLength {
        /// The algorithm id.
        algorithm: u64,
        /// Its digest length.
        expected: u64,
        /// The length found.
        len: u64,
    },
    /// A buffer `OPEN` with a file name.
    #[error("OPEN of a buffer carries a file name")]
    BufferWithName,
    /// A `CMD` whose identity is neither empty nor 24 bytes.
    #[error("a command's identity must be empty or 24 bytes, not {0}")]
    CmdOnceLength(u64),
    /// An `OPEN` whose resume key is neither empty nor 16 bytes.
    #[error("a resume key must be empty or 16 bytes, not {0}")]
    ResumeKeyLength(u64),
    /// An identity key (`HELLO`, `KEY`) neither empty nor 32 bytes.
    #[error("an identity key must be empty or 32 bytes, not {0}")]
    IdentityKeyLength(u64),
    /// A `CMD` fragment longer than the command it declares.
    #[error("CMD fragment of {len} bytes is longer than its declared total of {total}")]
    CmdOverTotal {
        /// Bytes in the frame.
        len: u64,
        /// Declared total.
        total: u64,
    },
}

impl DecodeError {
    /// The code to close the connection with.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::PROTOCOL_VIOLATION
    }
}

/// The error type of the field parsers: either the body ran out, which the caller reports
/// with the frame type, or a field is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FieldError {
    Truncated,
    Invalid(DecodeError),
}

impl ParseError<&[u8]> for FieldError {
    fn from_error_kind(_: &[u8], _: ErrorKind) -> Self {
        FieldError::Truncated
    }

    fn append(_: &[u8], _: ErrorKind, other: Self) -> Self {
        other
    }
}

type Parsed<'a, T> = IResult<&'a [u8], T, FieldError>;

/// A `bytes` field that is empty or exactly `len` long (a command's identity, a resume
/// key): any other length, shorter or longer, is `wrong(length)`, found from the length
/// prefix before the bytes are taken.
fn empty_or_exactly(
    i: &[u8],
    len: u64,
    wrong: fn(u64) -> DecodeError,
) -> Parsed<'_, Option<&[u8]>> {
    let (i, value) = varint(i)?;
    match value {
        0 => Ok((i, None)),
        v if v == len => {
            let (i, bytes) = take(v as usize)(i)?;
            Ok((i, Some(bytes)))
        }
        v => invalid(wrong(v)),
    }
}

/// An identity key field: empty, or 32 bytes.
fn identity_key(i: &[u8]) -> Parsed<'_, Option<IdentityKey>> {
    let (i, key) = empty_or_exactly(i, IdentityKey::LEN, DecodeError::IdentityKeyLength)?;
    let key = key
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .map(IdentityKey);
    Ok((i, key))
}

fn invalid<T>(e: DecodeError) -> Result<T, Err<FieldError>> {
    Err(Err::Failure(FieldError::Invalid(e)))
}

/// A streaming frame decoder. It holds only its limits; the bytes stay in the caller's
/// `BytesMut`.
///
/// ```
/// use bytes::BytesMut;
/// use peermsg::wire::{Decoder, Frame, Limits, Ping};
///
/// let mut wire = BytesMut::new();
/// Frame::Ping(Ping { nonce: 300 }).encode(&mut wire).unwrap();
/// let bytes = wire.split().freeze();
///
/// // The bytes arrive one at a time: "need more" until the frame is whole.
/// let mut decoder = Decoder::new(Limits::default()).unwrap();
/// let mut input = BytesMut::new();
/// let mut frames = Vec::new();
/// for b in bytes.iter() {
///     input.extend_from_slice(&[*b]);
///     while let Some(frame) = decoder.decode(&mut input).unwrap() {
///         frames.push(frame);
///     }
/// }
/// assert_eq!(frames, [Frame::Ping(Ping { nonce: 300 })]);
/// assert!(input.is_empty());
/// ```
#[derive(Clone, Debug)]
pub struct Decoder {
    limits: Limits,
}

impl Decoder {
    /// A decoder that enforces `limits`, once [`Limits::validate`] accepts them.
    pub fn new(limits: Limits) -> Result<Self, LimitsError> {
        limits.validate()?;
        Ok(Decoder { limits })
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Takes the next whole frame off the front of `src`.
    ///
    /// Returns `Ok(None)` when `src` holds no whole frame yet, leaving `src` as it was
    /// (apart from reserving room for the rest of a frame whose length is known and within
    /// the limit). After an error the stream is lost and the connection should be closed
    /// with [`DecodeError::code`].
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some(head) = self.head(src)? else {
            return Ok(None);
        };
        if src.len() < head.total {
            src.reserve(head.total - src.len());
            return Ok(None);
        }
        self.take(src, head).map(Some)
    }

    /// Reads the type and length of the frame at the front of `src`, checking both: `None`
    /// while the two varints are not whole.
    // Inlined: returned through memory, its result was read back in pieces of other sizes
    // than were written, a stall per frame (about 4% of `pathbench e-memory`).
    #[inline(always)]
    pub(crate) fn head(&self, src: &[u8]) -> Result<Option<Head>, DecodeError> {
        let (rest, frame_type) = match varint(src) {
            Ok((rest, n)) => (
                rest,
                FrameType::from_u64(n).ok_or(DecodeError::UnknownFrameType(n))?,
            ),
            Err(e) => return need_more(e),
        };
        let (rest, len) = match varint(rest) {
            Ok(v) => v,
            Err(e) => return need_more(e),
        };
        let max = self.limits.max_frame_size;
        if len > max {
            return Err(DecodeError::FrameTooLarge {
                frame: frame_type,
                len,
                max,
            });
        }
        let header = src.len() - rest.len();
        // `len` is at most max_frame_size, which `new` checked is at most 16 MiB: it fits
        // any `usize` of 32 bits or more, and the sum cannot overflow. Checked all the same.
        let total = usize::try_from(len)
            .ok()
            .and_then(|len| header.checked_add(len))
            .ok_or(DecodeError::FrameTooLarge {
                frame: frame_type,
                len,
                max,
            })?;
        Ok(Some(Head {
            frame_type,
            header,
            total,
        }))
    }

    /// Splits the whole frame `head` describes off the front of `src` and parses its body.
    pub(crate) fn take(&self, src: &mut BytesMut, head: Head) -> Result<Frame, DecodeError> {
        if keeps_bytes(head.frame_type) {
            let mut frame = src.split_to(head.total);
            frame.advance(head.header);
            let mut body = frame.freeze();
            let (mut frame, payload_at) =
                parse_body(head.frame_type, &body, Some(&body), &self.limits)?;
            if let Some(payload) = frame.payload_mut() {
                // The body itself becomes the payload: no reference-count update.
                body.advance(payload_at);
                *payload = body;
            }
            return Ok(frame);
        }
        // Nothing of the frame is kept: it is read where it lies, and no shared buffer is
        // made for it and dropped (two reference-count updates per `RESULT` or `CREDIT`).
        let body = src.get(head.header..head.total).unwrap_or_default();
        let frame = parse_body(head.frame_type, body, None, &self.limits);
        src.advance(head.total);
        frame.map(|(frame, _)| frame)
    }
}

/// The type and length varints at the front of a frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Head {
    frame_type: FrameType,
    /// Bytes of the two varints.
    header: usize,
    /// Bytes of the whole frame.
    pub(crate) total: usize,
}

/// Longest frame header: two varints of at most 8 bytes.
pub(crate) const MAX_HEAD: usize = 16;

/// Maps a header parse failure: short input is "need more", anything else an error.
fn need_more<T>(e: Err<FieldError>) -> Result<Option<T>, DecodeError> {
    match e {
        Err::Incomplete(_)
        | Err::Error(FieldError::Truncated)
        | Err::Failure(FieldError::Truncated) => Ok(None),
        Err::Error(FieldError::Invalid(e)) | Err::Failure(FieldError::Invalid(e)) => Err(e),
    }
}

/// `true` for the frame types that keep some of their bytes (a payload, a byte or text
/// field, a user id, which may be long): their body is parsed from a shared buffer.
fn keeps_bytes(frame_type: FrameType) -> bool {
    use FrameType::*;
    match frame_type {
        Hello | Login | Close | Cmd | CmdCont | Open | Data | KeyQuery | Key => true,
        LoginResult | Ping | Pong | ConnCredit | End | Credit | Cancel | Result | ResumeFrom => {
            false
        }
    }
}

/// Parses one complete body of type `frame_type`, `input`; `shared` is the same bytes as a
/// shared buffer, which the frame types that keep bytes ([`keeps_bytes`]) slice from.
/// Gives the frame and where in the body its payload starts (a payload is left empty for
/// the caller to fill).
#[inline(always)]
fn parse_body(
    frame_type: FrameType,
    input: &[u8],
    shared: Option<&Bytes>,
    limits: &Limits,
) -> Result<(Frame, usize), DecodeError> {
    let b = Body {
        bytes: shared,
        len: input.len(),
        payload_at: core::cell::Cell::new(0),
        limits,
        frame_type,
    };
    let parsed = match frame_type {
        FrameType::Hello => b.hello(input),
        FrameType::Login => b.login(input),
        FrameType::LoginResult => b
            .code(input)
            .map(|(i, code)| (i, Frame::LoginResult(LoginResult { code }))),
        FrameType::Ping => varint(input).map(|(i, nonce)| (i, Frame::Ping(Ping { nonce }))),
        FrameType::Pong => varint(input).map(|(i, nonce)| (i, Frame::Pong(Ping { nonce }))),
        FrameType::Close => b.close(input),
        FrameType::ConnCredit => {
            varint(input).map(|(i, max_data)| (i, Frame::ConnCredit(ConnCredit { max_data })))
        }
        FrameType::Cmd => b.cmd(input),
        FrameType::CmdCont => b.cmd_cont(input),
        FrameType::Open => b.open(input),
        FrameType::Data => b.data(input),
        FrameType::End => b.end(input),
        FrameType::Credit => b.credit(input),
        FrameType::ResumeFrom => b.resume_from(input),
        FrameType::KeyQuery => b
            .user_id(input)
            .map(|(i, user)| (i, Frame::KeyQuery(KeyQuery { user }))),
        FrameType::Key => b.key(input),
        FrameType::Cancel => b
            .id_code(input)
            .map(|(i, (id, code))| (i, Frame::Cancel(Cancel { id, code }))),
        FrameType::Result => b
            .id_code(input)
            .map(|(i, (id, code))| (i, Frame::Result(MessageResult { id, code }))),
    };
    let payload_at = b.payload_at.get();
    match parsed {
        // HELLO may grow fields at its end; a peer ignores those it does not know.
        Ok((rest, frame)) if rest.is_empty() || frame_type == FrameType::Hello => {
            Ok((frame, payload_at))
        }
        Ok((rest, _)) => Err(DecodeError::TrailingBytes {
            frame: frame_type,
            extra: rest.len(),
        }),
        Err(Err::Error(FieldError::Invalid(e)) | Err::Failure(FieldError::Invalid(e))) => Err(e),
        Err(_) => Err(DecodeError::Truncated { frame: frame_type }),
    }
}

/// The body being parsed: where byte fields are sliced from, and the limits they obey.
struct Body<'b> {
    /// The body as a shared buffer, for the frame types that keep bytes.
    bytes: Option<&'b Bytes>,
    /// The body's length.
    len: usize,
    /// Where the payload starts, once a payload field has been read.
    payload_at: core::cell::Cell<usize>,
    limits: &'b Limits,
    frame_type: FrameType,
}

/// A digest (`END`, `RESUME_FROM`): its algorithm, then its value, length-prefixed.
fn digest(i: &[u8]) -> Parsed<'_, Digest> {
    let (i, algorithm) = varint(i)?;
    if algorithm != Digest::CRC32C_ID {
        return invalid(DecodeError::UnknownDigest(algorithm));
    }
    let (i, len) = varint(i)?;
    if len != 4 {
        return invalid(DecodeError::DigestLength {
            algorithm,
            expected: 4,
            len,
        });
    }
    let (i, crc) = nom::number::complete::be_u32(i)?;
    Ok((i, Digest::Crc32c(crc)))
}

impl<'b> Body<'b> {
    /// The shared buffer to slice kept bytes from; every frame type with such a field has
    /// one ([`keeps_bytes`]), so the error is never met.
    fn shared(&self) -> Result<&'b Bytes, Err<FieldError>> {
        self.bytes
            .ok_or(Err::Failure(FieldError::Invalid(DecodeError::Truncated {
                frame: self.frame_type,
            })))
    }

    /// A length-prefixed byte field; the length is checked against `max` before the bytes
    /// are taken.
    #[inline]
    fn prefixed<'a>(&self, i: &'a [u8], limit: Limit, max: u64) -> Parsed<'a, Bytes> {
        let (i, field) = self.prefixed_slice(i, limit, max)?;
        Ok((i, self.shared()?.slice_ref(field)))
    }

    /// [`Body::prefixed`] as a slice of the input.
    #[inline]
    fn prefixed_slice<'a>(&self, i: &'a [u8], limit: Limit, max: u64) -> Parsed<'a, &'a [u8]> {
        let (i, value) = varint(i)?;
        // A length over the limit, or over what this platform can address.
        let Some(len) = usize::try_from(value).ok().filter(|_| value <= max) else {
            return invalid(DecodeError::LimitExceeded { limit, value, max });
        };
        take(len)(i)
    }

    /// The rest of the body, the payload of `CMD`, `CMD_CONT` and `DATA`: its length now;
    /// [`Decoder::take`] then hands the body itself over as the payload, which saves a
    /// reference-count update per frame over slicing it here.
    #[inline]
    fn payload<'a>(&self, i: &'a [u8]) -> Parsed<'a, usize> {
        self.payload_at.set(self.len - i.len());
        Ok((&i[i.len()..], i.len()))
    }

    #[inline]
    fn user_id<'a>(&self, i: &'a [u8]) -> Parsed<'a, UserId> {
        let max = self.limits.max_user_id_len;
        let (i, id) = self.prefixed_slice(i, Limit::UserIdLen, max)?;
        let shared = self.shared()?;
        match UserId::from_slice(id, |id| shared.slice_ref(id)) {
            Ok(id) => Ok((i, id)),
            Err(error) => invalid(DecodeError::InvalidUserId {
                frame: self.frame_type,
                error,
            }),
        }
    }

    #[inline]
    fn text<'a>(
        &self,
        i: &'a [u8],
        limit: Limit,
        max: u64,
        field: &'static str,
    ) -> Parsed<'a, Text> {
        let (i, bytes) = self.prefixed(i, limit, max)?;
        match Text::from_utf8(bytes) {
            Ok(text) => Ok((i, text)),
            Err(_) => invalid(DecodeError::InvalidUtf8 { field }),
        }
    }

    #[inline]
    fn code<'a>(&self, i: &'a [u8]) -> Parsed<'a, ErrorCode> {
        let (i, n) = varint(i)?;
        match u32::try_from(n) {
            Ok(n) => Ok((i, ErrorCode::from_u32(n))),
            Err(_) => invalid(DecodeError::OutOfRange {
                field: "error code",
                value: n,
            }),
        }
    }

    /// `value` must be at most `max`.
    fn at_most(value: u64, limit: Limit, max: u64) -> Result<(), Err<FieldError>> {
        if value > max {
            return invalid(DecodeError::LimitExceeded { limit, value, max });
        }
        Ok(())
    }

    fn hello<'a>(&self, i: &'a [u8]) -> Parsed<'a, Frame> {
        let (i, magic) = take(MAGIC.len())(i)?;
        if magic != MAGIC {
            return invalid(DecodeError::BadMagic);
        }
        let mut v = [0u64; 11];
        let mut i = i;
        for slot in &mut v {
            (i, *slot) = varint(i)?;
        }
        let [version, capabilities, role, max_frame_size, max_cmd_size, max_buffer_size, max_file_size, max_cmds_in_flight, max_transfers, transfer_window, conn_window] =
            v;
        let role = match role {
            0 => Role::Client,
            1 => Role::Relay,
            value => {
                return invalid(DecodeError::OutOfRange {
                    field: "role",
                    value,
                })
            }
        };
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&max_frame_size) {
            return invalid(DecodeError::OutOfRange {
                field: "max_frame_size",
                value: max_frame_size,
            });
        }
        let hello = Hello {
            version,
            capabilities: Capabilities(capabilities),
            role,
            max_frame_size,
            max_cmd_size,
            max_buffer_size,
            max_file_size,
            max_cmds_in_flight,
            max_transfers,
            transfer_window,
            conn_window,
            identity: None,
        };
        // The identity key, appended in this version; what follows it is ignored.
        let (i, identity) = match i.is_empty() {
            true => (i, None),
            false => identity_key(i)?,
        };
        Ok((i, Frame::Hello(Hello { identity, ..hello })))
    }

    #[inline]
    fn login<'a>(&self, i: &'a [u8]) -> Parsed<'a, Frame> {
        let (i, user) = self.user_id(i)?;
        let (i, token) = self.prefixed(i, Limit::TokenLen, self.limits.max_token_len)?;
        Ok((i, Frame::Login(Login { user, token })))
    }

    #[inline]
    fn close<'a>(&self, i: &'a [u8]) -> Parsed<'a, Frame> {
        let (i, code) = self.code(i)?;
        let (i, reason) = self.text(
            i,
            Limit::ReasonLen,
            self.limits.max_reason_len,
            "close reason",
        )?;
        Ok((i, Frame::Close(Close { code, reason })))
    }

    #[inline]
    fn cmd<'a>(&self, i: &'a [u8]) -> Parsed<'a, Frame> {
        let (i, id) = varint(i)?;
        let (i, peer) = self.user_id(i)?;
        let (i, once) = empty_or_exactly(i, CmdOnce::LEN, DecodeError::CmdOnceLength)?;
        let once = once.and_then(CmdOnce::from_bytes);
        let (i, total_len) = varint(i)?;
        Self::at_most(total_len, Limit::CmdSize, self.limits.max_cmd_size)?;
        let (i, len) = self.payload(i)?;
        if len as u64 > total_len {
            return invalid(DecodeError::CmdOverTotal {
                len: len as u64,
                total: total_len,
            });
        }
        Ok((
            i,
            Frame::Cmd(Cmd {
                id,
                peer,
                once,
                total_len,
                data: Bytes::new(),
            }),
        ))
    }

    #[inline]
    fn cmd_cont<'a>(&self, i: &'a [u8]) -> Parsed<'a, Frame> {
        let max = self.limits.max_cmd_size;
        let (i, (id, offset)) = self.placed_payload(i, Limit::CmdSize, max)?;
        let data = Bytes::new();
        Ok((i, Frame::CmdCont(CmdCont { id, offset, data })))
    }

    /// The fields of `CMD_CONT` and `DATA`: id, offset, then a payload that must end at or
    /// before `max`.
    #[inline]
    fn placed_payload<'a>(
        &self,
        i: &'a [u8],
        limit: Limit,
        max: u64,
    ) -> Parsed<'a, (MessageId, u64)> {
        let (i, id) = varint(i)?;
        let (i, offset) = varint(i)?;
        let (i, len) = self.payload(i)?;
        Self::at_most(offset.saturating_add(len as u64), limit, max)?;
        Ok((i, (id, offset)))
    }

    #[inline]
    fn open<'a>(&self, i: &'a [u8]) -> Parsed<'a, Frame> {
        let (i, id) = varint(i)?;
        let (i, kind) = varint(i)?;
        let kind = match kind {
            0 => TransferKind::Buffer,
            1 => TransferKind::File,
            value => {
                return invalid(DecodeError::OutOfRange {
                    field: "transfer kind",
                    value,
                })
            }
        };
        let (i, peer) = self.user_id(i)?;
        let (i, size) = varint(i)?;
        match kind {
            TransferKind::Buffer => {
                Self::at_most(size, Limit::BufferSize, self.limits.max_buffer_size)?
            }
            TransferKind::File => Self::at_most(size, Limit::FileSize, self.limits.max_file_size)?,
        }
        let (i, name) = self.text(
            i,
            Limit::FileNameLen,
            self.limits.max_file_name_len,
            "file name",
        )?;
        if kind == TransferKind::Buffer && !name.is_empty() {
            return invalid(DecodeError::BufferWithName);
        }
        let (i, key) = empty_or_exactly(i, ResumeKey::LEN, DecodeError::ResumeKeyLength)?;
        let resume_key = key
            .and_then(|key| <[u8; 16]>::try_from(key).ok())
            .map(ResumeKey);
        // A sealed file's header, appended in this version: absent, or the name's limit
        // plus what sealing adds.
        let (i, seal) = match i.is_empty() {
            true => (i, None),
            false => {
                let max = self
                    .limits
                    .max_file_name_len
                    .saturating_add(crate::seal::file::HEADER_OVERHEAD);
                let (i, seal) = self.prefixed(i, Limit::FileNameLen, max)?;
                (i, (!seal.is_empty()).then(|| Box::new(seal)))
            }
        };
        Ok((
            i,
            Frame::Open(Open {
                id,
                kind,
                peer,
                size,
                name,
                resume_key,
                seal,
            }),
        ))
    }

    #[inline]
    fn data<'a>(&self, i: &'a [u8]) -> Parsed<'a, Frame> {
        let max = self.limits.max_transfer_size();
        let (i, (id, offset)) = self.placed_payload(i, Limit::TransferSize, max)?;
        let payload = Bytes::new();
        Ok((
            i,
            Frame::Data(Data {
                id,
                offset,
                payload,
            }),
        ))
    }

    #[inline]
    fn end<'a>(&self, i: &'a [u8]) -> Parsed<'a, Frame> {
        let (i, id) = varint(i)?;
        let (i, size) = varint(i)?;
        Self::at_most(size, Limit::TransferSize, self.limits.max_transfer_size())?;
        let (i, digest) = digest(i)?;
        Ok((i, Frame::End(End { id, size, digest })))
    }

    fn key<'a>(&self, i: &'a [u8]) -> Parsed<'a, Frame> {
        let (i, user) = self.user_id(i)?;
        let (i, key) = identity_key(i)?;
        Ok((i, Frame::Key(Key { user, key })))
    }

    #[inline]
    fn resume_from<'a>(&self, i: &'a [u8]) -> Parsed<'a, Frame> {
        let (i, id) = varint(i)?;
        let (i, offset) = varint(i)?;
        Self::at_most(offset, Limit::TransferSize, self.limits.max_transfer_size())?;
        let (i, digest) = digest(i)?;
        Ok((i, Frame::ResumeFrom(ResumeFrom { id, offset, digest })))
    }

    #[inline]
    fn credit<'a>(&self, i: &'a [u8]) -> Parsed<'a, Frame> {
        let (i, id) = varint(i)?;
        let (i, max_offset) = varint(i)?;
        Ok((i, Frame::Credit(Credit { id, max_offset })))
    }

    #[inline]
    fn id_code<'a>(&self, i: &'a [u8]) -> Parsed<'a, (MessageId, ErrorCode)> {
        let (i, id) = varint(i)?;
        let (i, code) = self.code(i)?;
        Ok((i, (id, code)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::varint::put_varint;
    use alloc::vec::Vec;

    /// A frame built by hand: type, canonical length, body.
    fn raw(ty: u64, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        put_varint(&mut b, ty);
        put_varint(&mut b, body.len() as u64);
        b.extend_from_slice(body);
        b
    }

    fn decode(mut b: BytesMut) -> Result<Option<Frame>, DecodeError> {
        Decoder::new(Limits::default()).unwrap().decode(&mut b)
    }

    #[test]
    fn unknown_type_fails_before_the_length_arrives() {
        assert_eq!(
            decode(BytesMut::from(&[0x00][..])),
            Err(DecodeError::UnknownFrameType(0))
        );
        assert_eq!(
            decode(BytesMut::from(&[0x3f][..])),
            Err(DecodeError::UnknownFrameType(0x3f))
        );
        assert_eq!(
            decode(BytesMut::from(&[0x41, 0x00][..])),
            Err(DecodeError::UnknownFrameType(256))
        );
    }

    #[test]
    fn oversize_length_fails_from_the_header_alone() {
        // DATA declaring 16 KiB + 1 bytes; no body present.
        let mut b = BytesMut::new();
        put_varint(&mut b, FrameType::Data.as_u64());
        put_varint(&mut b, 16 * 1024 + 1);
        assert_eq!(
            decode(b),
            Err(DecodeError::FrameTooLarge {
                frame: FrameType::Data,
                len: 16 * 1024 + 1,
                max: 16 * 1024
            })
        );
    }

    #[test]
    fn need_more_consumes_nothing() {
        let whole = raw(FrameType::Ping.as_u64(), &[0x41, 0x00]);
        let mut decoder = Decoder::new(Limits::default()).unwrap();
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(decoder.decode(&mut part), Ok(None), "cut at {cut}");
            assert_eq!(&part[..], &whole[..cut]);
        }
    }

    #[test]
    fn body_shorter_than_its_fields_is_truncated() {
        assert_eq!(
            decode(raw(0x04, &[])),
            Err(DecodeError::Truncated {
                frame: FrameType::Ping
            })
        );
        // RESULT whose code varint announces 2 bytes but the body ends after 1.
        assert_eq!(
            decode(raw(0x17, &[0x00, 0x43])),
            Err(DecodeError::Truncated {
                frame: FrameType::Result
            })
        );
    }

    #[test]
    fn bytes_after_the_last_field_are_refused_except_in_hello() {
        assert_eq!(
            decode(raw(0x04, &[0x01, 0x00])),
            Err(DecodeError::TrailingBytes {
                frame: FrameType::Ping,
                extra: 1
            })
        );
        let mut body = Vec::from(MAGIC);
        body.extend_from_slice(&[1, 1, 0, 0x50, 0x00, 1, 1, 1, 1, 1, 1, 1]);
        // No identity key (its field is known to this version), then later fields.
        body.push(0);
        body.extend_from_slice(b"future fields");
        assert!(
            matches!(decode(raw(0x01, &body)), Ok(Some(Frame::Hello(h))) if h.max_frame_size == 4096)
        );
    }

    #[test]
    fn hello_checks_magic_role_and_frame_size() {
        let hello = |magic: &[u8], role: u8, frame: [u8; 2]| {
            let mut body = Vec::from(magic);
            body.extend_from_slice(&[1, 1, role, frame[0], frame[1], 1, 1, 1, 1, 1, 1, 1]);
            decode(raw(0x01, &body))
        };
        assert_eq!(hello(b"HTTP", 0, [0x44, 0]), Err(DecodeError::BadMagic));
        assert_eq!(
            hello(&MAGIC, 2, [0x44, 0]),
            Err(DecodeError::OutOfRange {
                field: "role",
                value: 2
            })
        );
        assert_eq!(
            hello(&MAGIC, 0, [0x43, 0xff]),
            Err(DecodeError::OutOfRange {
                field: "max_frame_size",
                value: 1023
            })
        );
        assert!(hello(&MAGIC, 1, [0x44, 0]).is_ok());
    }

    #[test]
    fn non_canonical_varints_are_refused_in_header_and_body() {
        assert_eq!(
            decode(BytesMut::from(&[0x40, 0x04, 0x01, 0x00][..])),
            Err(DecodeError::NonCanonicalVarint { value: 4, len: 2 })
        );
        assert_eq!(
            decode(raw(0x04, &[0x40, 0x01])),
            Err(DecodeError::NonCanonicalVarint { value: 1, len: 2 })
        );
    }

    #[test]
    fn user_ids_are_checked() {
        let login = |user: &[u8]| {
            let mut body = Vec::from([user.len() as u8]);
            body.extend_from_slice(user);
            body.push(0);
            decode(raw(0x02, &body))
        };
        let bad = |error| {
            Err(DecodeError::InvalidUserId {
                frame: FrameType::Login,
                error,
            })
        };
        assert_eq!(login(b""), bad(UserIdError::Empty));
        assert_eq!(login(b"a\xffb"), bad(UserIdError::InvalidUtf8));
        assert_eq!(login(b"a\x00b"), bad(UserIdError::ControlCharacter));
        assert!(
            matches!(login("zoë".as_bytes()), Ok(Some(Frame::Login(l))) if l.user.as_str() == "zoë")
        );
    }

    #[test]
    fn text_fields_must_be_utf8() {
        assert_eq!(
            decode(raw(0x06, &[0x00, 0x02, 0xc3, 0x28])),
            Err(DecodeError::InvalidUtf8 {
                field: "close reason"
            })
        );
        let open = [0x00, 0x01, 0x01, b'u', 0x05, 0x01, 0xff];
        assert_eq!(
            decode(raw(0x12, &open)),
            Err(DecodeError::InvalidUtf8 { field: "file name" })
        );
    }

    #[test]
    fn numbers_outside_their_field_are_refused() {
        let code = [0x00, 0xc0, 0, 0, 1, 0, 0, 0, 0]; // 2^32
        assert_eq!(
            decode(raw(0x17, &code)),
            Err(DecodeError::OutOfRange {
                field: "error code",
                value: 1 << 32
            })
        );
        let open = [0x00, 0x02, 0x01, b'u', 0x05, 0x00];
        assert_eq!(
            decode(raw(0x12, &open)),
            Err(DecodeError::OutOfRange {
                field: "transfer kind",
                value: 2
            })
        );
        let buffer_named = [0x00, 0x00, 0x01, b'u', 0x05, 0x01, b'x'];
        assert_eq!(
            decode(raw(0x12, &buffer_named)),
            Err(DecodeError::BufferWithName)
        );
        let cmd = [0x00, 0x01, b'u', 0x00, 0x01, b'a', b'b'];
        assert_eq!(
            decode(raw(0x10, &cmd)),
            Err(DecodeError::CmdOverTotal { len: 2, total: 1 })
        );
        let cmd_with_a_short_identity = [0x00, 0x01, b'u', 0x01, 0x07, 0x01, b'a'];
        assert_eq!(
            decode(raw(0x10, &cmd_with_a_short_identity)),
            Err(DecodeError::CmdOnceLength(1))
        );
        // Longer than 24, within the body or past it: the same error, found from the
        // length alone (it was LimitExceeded, which PROTOCOL.md did not name for it).
        let mut long = alloc::vec![0x00, 0x01, b'u', 25];
        long.extend([7u8; 25]);
        long.extend([0x01, b'a']);
        assert_eq!(
            decode(raw(0x10, &long)),
            Err(DecodeError::CmdOnceLength(25))
        );
        let past_the_body = [0x00, 0x01, b'u', 0x40, 0xc8, 0x01, b'a'];
        assert_eq!(
            decode(raw(0x10, &past_the_body)),
            Err(DecodeError::CmdOnceLength(200))
        );
        let mut open_long_key = alloc::vec![0x00, 0x01, 0x01, b'u', 0x05, 0x00, 17];
        open_long_key.extend([1u8; 17]);
        assert_eq!(
            decode(raw(0x12, &open_long_key)),
            Err(DecodeError::ResumeKeyLength(17))
        );
    }

    #[test]
    fn digests_are_checked_by_algorithm() {
        assert_eq!(
            decode(raw(0x14, &[0, 0, 2, 4, 1, 2, 3, 4])),
            Err(DecodeError::UnknownDigest(2))
        );
        assert_eq!(
            decode(raw(0x14, &[0, 0, 1, 3, 1, 2, 3])),
            Err(DecodeError::DigestLength {
                algorithm: 1,
                expected: 4,
                len: 3
            })
        );
        assert_eq!(
            decode(raw(0x14, &[5, 9, 1, 4, 0xe3, 0x06, 0x92, 0x83])),
            Ok(Some(Frame::End(End {
                id: 5,
                size: 9,
                digest: Digest::Crc32c(0xe306_9283)
            })))
        );
    }

    #[test]
    fn payload_is_a_slice_of_the_input_not_a_copy() {
        let mut b = raw(0x13, &[0x07, 0x00, 1, 2, 3, 4, 5, 6, 7, 8]);
        let range = b.as_ptr_range();
        let Ok(Some(Frame::Data(d))) = Decoder::new(Limits::default()).unwrap().decode(&mut b)
        else {
            panic!("DATA expected");
        };
        assert_eq!(&d.payload[..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(range.contains(&d.payload.as_ptr()));
    }

    #[test]
    fn limits_are_checked_before_a_decoder_exists() {
        let huge = Limits {
            max_frame_size: u64::MAX,
            ..Limits::default()
        };
        assert_eq!(
            Decoder::new(huge).err(),
            Some(LimitsError::FrameSize(u64::MAX))
        );
    }

    #[test]
    fn every_error_closes_with_protocol_violation() {
        assert_eq!(DecodeError::BadMagic.code(), ErrorCode::PROTOCOL_VIOLATION);
    }
}
