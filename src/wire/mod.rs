//! The wire: frames, their encoder and their streaming decoder.
//!
//! `docs/PROTOCOL.md` is the byte-level specification; this module is its code. Frames are
//! plain data ([`Frame`]); [`Frame::encode`] writes one into any `BufMut`;
//! [`Decoder::decode`] takes one off the front of a `BytesMut` that holds whatever has
//! arrived so far, checking every length against [`Limits`] before it waits for or keeps
//! the bytes the length announces.

#[cfg(feature = "arbitrary")]
mod arbitrary;
mod decode;
mod encode;
mod frame;
mod inbox;
mod limits;
mod text;
mod transmit;
mod varint;

pub use decode::{DecodeError, Decoder, Limit};
pub use encode::EncodeError;
pub use frame::{
    Cancel, Capabilities, Close, Cmd, CmdCont, CmdOnce, ConnCredit, Credit, Data, Digest, End,
    Frame, FrameType, Hello, IdentityKey, Key, KeyQuery, Login, LoginResult, MessageId,
    MessageResult, Open, Ping, ResumeFrom, ResumeKey, Role, TransferKind, MAGIC, VERSION,
};
pub use inbox::Inbox;
pub use limits::{
    credit_step, payload_room, Limits, LimitsError, CREDIT_STEP, MAX_FRAME_SIZE, MIN_FRAME_SIZE,
};
pub use text::{Text, UserId, UserIdError};
pub use transmit::{FrameSink, Transmit, SHARED_PAYLOAD_MIN};
pub use varint::{varint_len, VARINT_MAX};
