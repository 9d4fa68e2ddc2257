//! The frames of the protocol, as plain data. `docs/PROTOCOL.md` gives their bytes.

use alloc::boxed::Box;
use bytes::Bytes;

use super::text::{Text, UserId};
use crate::ErrorCode;

/// The protocol version this crate speaks.
pub const VERSION: u64 = 1;

/// The four bytes that open every `HELLO` body: a peer that is not peermsg is told apart at
/// its first frame.
pub const MAGIC: [u8; 4] = *b"PMSG";

/// A message id: allocated by the side that sends the command or opens the transfer, on
/// that connection, counting up from 0 by one. A relay maps ids between connections.
pub type MessageId = u64;

/// Declares the frame types once: the enum, its wire numbers and its wire names.
macro_rules! frame_types {
    ($($(#[$doc:meta])* $variant:ident = $num:literal, $wire:literal;)*) => {
        /// The type of a frame, its first varint on the wire.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum FrameType {
            $($(#[$doc])* $variant = $num,)*
        }

        impl FrameType {
            /// The type with this wire number, if there is one.
            pub const fn from_u64(n: u64) -> Option<Self> {
                match n {
                    $($num => Some(FrameType::$variant),)*
                    _ => None,
                }
            }

            /// The name `docs/PROTOCOL.md` uses.
            pub const fn name(self) -> &'static str {
                match self {
                    $(FrameType::$variant => $wire,)*
                }
            }

            /// Every frame type, in wire-number order.
            pub const ALL: &'static [FrameType] = &[$(FrameType::$variant,)*];
        }
    };
}

frame_types! {
    /// Version, capabilities and limits; the first frame each side sends.
    Hello = 0x01, "HELLO";
    /// A user id and token.
    Login = 0x02, "LOGIN";
    /// The answer to `LOGIN`.
    LoginResult = 0x03, "LOGIN_RESULT";
    /// Keepalive request.
    Ping = 0x04, "PING";
    /// Keepalive answer.
    Pong = 0x05, "PONG";
    /// The last frame on a connection.
    Close = 0x06, "CLOSE";
    /// Connection-wide flow-control credit.
    ConnCredit = 0x07, "CONN_CREDIT";
    /// A command, or its first fragment.
    Cmd = 0x10, "CMD";
    /// A later fragment of a command.
    CmdCont = 0x11, "CMD_CONT";
    /// The start of a buffer or file transfer.
    Open = 0x12, "OPEN";
    /// Transfer bytes at an absolute offset.
    Data = 0x13, "DATA";
    /// The end of a transfer: final size and digest.
    End = 0x14, "END";
    /// Per-transfer flow-control credit.
    Credit = 0x15, "CREDIT";
    /// The sender gave up on a message.
    Cancel = 0x16, "CANCEL";
    /// The receiver's final word on a message: delivered, or why not.
    Result = 0x17, "RESULT";
    /// Where a receiver's bytes of a resumable transfer end, and their digest.
    ResumeFrom = 0x18, "RESUME_FROM";
    /// A client asks for a user's identity key (capability `SEALED`).
    KeyQuery = 0x19, "KEY_QUERY";
    /// A user's identity key, or that none is known (capability `SEALED`).
    Key = 0x1a, "KEY";
}

impl FrameType {
    /// The wire number.
    pub const fn as_u64(self) -> u64 {
        self as u64
    }
}

/// Which end of a connection a peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Role {
    /// A user endpoint (also both ends of a direct link).
    Client = 0,
    /// A relay server.
    Relay = 1,
}

/// Optional features, a bit each; a feature is used only when both sides set it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// CRC-32C transfer digests (required in version 1).
    pub const DIGEST_CRC32C: Capabilities = Capabilities(1 << 0);
    /// Resumable transfers: `OPEN` may carry a resume key, answered with `RESUME_FROM`
    /// (docs/PROTOCOL.md, "Resume").
    pub const RESUME: Capabilities = Capabilities(1 << 1);
    /// Set by a client that only sends: a relay logs it in beside the user's full
    /// session, kicks nobody, and routes it no messages (docs/PROTOCOL.md, "Relays").
    pub const SEND_ONLY: Capabilities = Capabilities(1 << 2);
    /// Sealed messages between users: a client's `HELLO` carries its identity key, and
    /// `KEY_QUERY` / `KEY` ask for and give another user's (docs/PROTOCOL.md, "Sealed
    /// messages").
    pub const SEALED: Capabilities = Capabilities(1 << 3);

    /// What this version sets.
    pub const fn supported() -> Self {
        Capabilities(Self::DIGEST_CRC32C.0 | Self::RESUME.0)
    }

    /// `true` if every bit of `other` is set.
    pub const fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits set in both.
    pub const fn intersect(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & other.0)
    }
}

/// `HELLO`: the first frame of each side. The limits are what the sender of the `HELLO`
/// accepts; its peer must stay within them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The highest protocol version the sender speaks.
    pub version: u64,
    /// The sender's optional features.
    pub capabilities: Capabilities,
    /// Client or relay.
    pub role: Role,
    /// Largest frame body the sender accepts.
    pub max_frame_size: u64,
    /// Largest command the sender accepts.
    pub max_cmd_size: u64,
    /// Largest buffer the sender accepts.
    pub max_buffer_size: u64,
    /// Largest file the sender accepts.
    pub max_file_size: u64,
    /// How many commands the peer may have sent and not yet seen a `RESULT` for.
    pub max_cmds_in_flight: u64,
    /// How many transfers the peer may have open toward the sender at once.
    pub max_transfers: u64,
    /// Credit each new transfer starts with: bytes the peer may send before any `CREDIT`.
    pub transfer_window: u64,
    /// Connection credit at the start: `DATA` payload bytes before any `CONN_CREDIT`.
    pub conn_window: u64,
    /// The sender's identity key, for sealed messages (a client that set `SEALED`).
    pub identity: Option<IdentityKey>,
}

impl Hello {
    /// The `HELLO` of this version for a peer in `role` that accepts `limits`, with its
    /// in-flight caps and flow-control windows.
    pub fn new(
        role: Role,
        limits: &super::Limits,
        max_cmds_in_flight: u64,
        max_transfers: u64,
        transfer_window: u64,
        conn_window: u64,
    ) -> Self {
        Hello {
            version: VERSION,
            capabilities: Capabilities::supported(),
            role,
            max_frame_size: limits.max_frame_size,
            max_cmd_size: limits.max_cmd_size,
            max_buffer_size: limits.max_buffer_size,
            max_file_size: limits.max_file_size,
            max_cmds_in_flight,
            max_transfers,
            transfer_window,
            conn_window,
            identity: None,
        }
    }
}

/// A user's identity key: the X25519 public key others seal messages to, and that
/// authenticates what the user seals (docs/PROTOCOL.md, "Sealed messages").
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct IdentityKey(pub [u8; 32]);

impl IdentityKey {
    /// Its length on the wire.
    pub const LEN: u64 = 32;
}

impl core::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "IdentityKey(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// `KEY_QUERY`: a client asks its relay (or its peer on a direct link) for `user`'s
/// identity key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyQuery {
    /// Whose key.
    pub user: UserId,
}

/// `KEY`: the answer to `KEY_QUERY`: `user`'s identity key as announced in its `HELLO`,
/// or `None` if it is not connected or announced none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// Whose key.
    pub user: UserId,
    /// The key, if known.
    pub key: Option<IdentityKey>,
}

/// `LOGIN`: who the sender is, with a token the application checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    /// The user logging in.
    pub user: UserId,
    /// Opaque credentials.
    pub token: Bytes,
}

/// `LOGIN_RESULT`: [`ErrorCode::NOERR`] or why the login was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginResult {
    /// The outcome.
    pub code: ErrorCode,
}

/// `PING` and `PONG`: a `PONG` echoes the `PING`'s nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ping {
    /// Chosen by the pinging side.
    pub nonce: u64,
}

/// `CLOSE`: why the connection ends. Nothing follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    /// [`ErrorCode::NOERR`] for a normal close.
    pub code: ErrorCode,
    /// Human-readable detail, possibly empty.
    pub reason: Text,
}

/// `CONN_CREDIT`: the sender of this frame accepts `DATA` payload on this connection up to
/// this total, counted from the connection's start. Only increases count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnCredit {
    /// Absolute byte count.
    pub max_data: u64,
}

/// `CMD`: a command, whole or its first fragment.
///
/// Toward a relay, `peer` names the target; from a relay, the source, stamped by the relay.
/// On a direct link it names the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    /// New message id.
    pub id: MessageId,
    /// Target or source user.
    pub peer: UserId,
    /// The command's identity across connections, if its sender may send it again after
    /// a lost connection: the receiver then drops a repeat.
    pub once: Option<CmdOnce>,
    /// Size of the whole command.
    pub total_len: u64,
    /// Bytes `0..data.len()` of the command.
    pub data: Bytes,
}

/// A command's identity across connections (docs/PROTOCOL.md, "Resume"): the sender's
/// stream, the same on every connection of one sending client, and the command's number
/// in it toward this receiver, rising. A receiver that delivered number `seq` of a stream
/// drops any command of that stream numbered `seq` or lower: a repeat sent after a lost
/// connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CmdOnce {
    /// The sending client's stream.
    pub stream: [u8; 16],
    /// The command's number, below 2^63 (the top bit on the wire is `resent`).
    pub seq: u64,
    /// Sent again after a lost connection: it may have been delivered already. A receiver
    /// that no longer knows the stream refuses such a command rather than deliver it
    /// twice; one sent for the first time is never a repeat.
    pub resent: bool,
}

impl CmdOnce {
    /// Its length on the wire.
    pub const LEN: u64 = 24;

    /// The bit of the number's 8 bytes that says `resent`.
    const RESENT: u64 = 1 << 63;

    /// Its 24 bytes on the wire: the stream, then the number big-endian, its top bit set
    /// if `resent`.
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..16].copy_from_slice(&self.stream);
        let number = (self.seq & !Self::RESENT) | if self.resent { Self::RESENT } else { 0 };
        out[16..].copy_from_slice(&number.to_be_bytes());
        out
    }

    /// From its 24 bytes on the wire; `None` for another length.
    pub fn from_bytes(bytes: &[u8]) -> Option<CmdOnce> {
        let bytes: &[u8; 24] = bytes.try_into().ok()?;
        let (stream, number) = bytes.split_at(16);
        let number = u64::from_be_bytes(number.try_into().ok()?);
        Some(CmdOnce {
            stream: stream.try_into().ok()?,
            seq: number & !Self::RESENT,
            resent: number & Self::RESENT != 0,
        })
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for CmdOnce {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(CmdOnce {
            stream: u.arbitrary()?,
            seq: u.arbitrary::<u64>()? & !Self::RESENT,
            resent: u.arbitrary()?,
        })
    }
}

/// `CMD_CONT`: bytes of a command after its first fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmdCont {
    /// The command's id.
    pub id: MessageId,
    /// Where `data` starts in the command.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
}

/// What a transfer carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TransferKind {
    /// An in-memory buffer, delivered whole.
    Buffer = 0,
    /// A file, delivered by offset to the receiver's sink.
    File = 1,
}

/// `OPEN`: a buffer or file transfer begins. `peer` is as in [`Cmd`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    /// New message id.
    pub id: MessageId,
    /// Buffer or file.
    pub kind: TransferKind,
    /// Target or source user.
    pub peer: UserId,
    /// Declared total size; `END` must confirm it.
    pub size: u64,
    /// Original file name; empty for a buffer.
    pub name: Text,
    /// The transfer's end-to-end key, if it may resume: the receiver answers with
    /// `RESUME_FROM` before any `DATA` comes. Only toward a peer that announced
    /// [`Capabilities::RESUME`].
    pub resume_key: Option<ResumeKey>,
    /// A sealed file's header, sealed for the receiver: the file key, its plain size and
    /// name (`size` and `name` then say nothing of them: the wire size, and empty). Only
    /// between users that announced [`Capabilities::SEALED`]; see docs/PROTOCOL.md,
    /// "Sealed files". (Boxed: it is rare, and every frame is as large as its largest
    /// kind.)
    pub seal: Option<Box<Bytes>>,
}

/// A resumable transfer's key: chosen by the sender, the same on every connection and
/// every hop, so a receiver finds what it holds of the transfer from an earlier attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ResumeKey(pub [u8; 16]);

impl ResumeKey {
    /// Its length on the wire.
    pub const LEN: u64 = 16;
}

/// `RESUME_FROM`: the receiver's answer to an `OPEN` with a resume key. It holds bytes
/// `0..offset` of the transfer already (0 for none), whose digest is `digest`; the sender
/// continues with `DATA` at `offset` once it has checked the digest against its own
/// source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeFrom {
    /// The transfer (an id its peer allocated).
    pub id: MessageId,
    /// Where the receiver's bytes end.
    pub offset: u64,
    /// The digest of bytes `0..offset` (of no bytes for 0: CRC-32C 0).
    pub digest: Digest,
}

/// `DATA`: transfer bytes at an absolute offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Data {
    /// The transfer.
    pub id: MessageId,
    /// Where `payload` starts in the transfer.
    pub offset: u64,
    /// The bytes.
    pub payload: Bytes,
}

/// An integrity digest of a whole transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Digest {
    /// CRC-32C (Castagnoli), algorithm id 1.
    Crc32c(u32),
}

impl Digest {
    /// Algorithm id of CRC-32C.
    pub const CRC32C_ID: u64 = 1;

    /// The digest of no bytes (CRC-32C), as `RESUME_FROM` states an empty hold.
    pub const OF_NOTHING: Digest = Digest::Crc32c(0);

    /// The algorithm id on the wire.
    pub const fn algorithm(&self) -> u64 {
        match self {
            Digest::Crc32c(_) => Self::CRC32C_ID,
        }
    }
}

/// `END`: the sender has sent every byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct End {
    /// The transfer.
    pub id: MessageId,
    /// Final size.
    pub size: u64,
    /// Digest of all `size` bytes.
    pub digest: Digest,
}

/// `CREDIT`: the sender of this frame accepts bytes of transfer `id` up to offset
/// `max_offset` (exclusive). Only increases count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credit {
    /// The transfer (an id its peer allocated).
    pub id: MessageId,
    /// Absolute offset.
    pub max_offset: u64,
}

/// `CANCEL`: the message's sender gives it up; the receiver drops what it holds of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cancel {
    /// The message.
    pub id: MessageId,
    /// Why: [`ErrorCode::CANCELLED`], [`ErrorCode::SENDFILE_FILEINERROR`], ...
    pub code: ErrorCode,
}

/// `RESULT`: the receiver's final word on a message. [`ErrorCode::NOERR`] means delivered
/// (for transfers: size and digest verified); otherwise the message was rejected (before
/// any data was taken), aborted (part way) or failed, and the code says why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageResult {
    /// The message (an id its peer allocated).
    pub id: MessageId,
    /// The outcome.
    pub code: ErrorCode,
}

/// A frame of any type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// `HELLO`: see [`Hello`].
    Hello(Hello),
    /// `LOGIN`: see [`Login`].
    Login(Login),
    /// `LOGIN_RESULT`: see [`LoginResult`].
    LoginResult(LoginResult),
    /// `PING`: see [`Ping`].
    Ping(Ping),
    /// `PONG`: see [`Ping`].
    Pong(Ping),
    /// `CLOSE`: see [`Close`].
    Close(Close),
    /// `CONN_CREDIT`: see [`ConnCredit`].
    ConnCredit(ConnCredit),
    /// `CMD`: see [`Cmd`].
    Cmd(Cmd),
    /// `CMD_CONT`: see [`CmdCont`].
    CmdCont(CmdCont),
    /// `OPEN`: see [`Open`].
    Open(Open),
    /// `DATA`: see [`Data`].
    Data(Data),
    /// `END`: see [`End`].
    End(End),
    /// `CREDIT`: see [`Credit`].
    Credit(Credit),
    /// `CANCEL`: see [`Cancel`].
    Cancel(Cancel),
    /// `RESULT`: see [`MessageResult`].
    Result(MessageResult),
    /// `RESUME_FROM`: see [`ResumeFrom`].
    ResumeFrom(ResumeFrom),
    /// `KEY_QUERY`: see [`KeyQuery`].
    KeyQuery(KeyQuery),
    /// `KEY`: see [`Key`].
    Key(Key),
}

impl Frame {
    /// The trailing payload of `CMD`, `CMD_CONT` and `DATA`: the bytes a runtime can write
    /// without copying them (see [`Frame::encode_header`]).
    pub fn payload(&self) -> Option<&Bytes> {
        match self {
            Frame::Cmd(Cmd { data, .. }) | Frame::CmdCont(CmdCont { data, .. }) => Some(data),
            Frame::Data(Data { payload, .. }) => Some(payload),
            _ => None,
        }
    }

    /// The trailing payload of `CMD`, `CMD_CONT` and `DATA`.
    pub(crate) fn payload_mut(&mut self) -> Option<&mut Bytes> {
        match self {
            Frame::Cmd(Cmd { data, .. }) | Frame::CmdCont(CmdCont { data, .. }) => Some(data),
            Frame::Data(Data { payload, .. }) => Some(payload),
            _ => None,
        }
    }

    /// The message id of a frame that travels from a message's sender (`CMD`, `CMD_CONT`,
    /// `OPEN`, `DATA`, `END`, `CANCEL`), for a relay to map it onto the next hop.
    pub(crate) fn sender_id_mut(&mut self) -> Option<&mut MessageId> {
        match self {
            Frame::Cmd(Cmd { id, .. })
            | Frame::CmdCont(CmdCont { id, .. })
            | Frame::Open(Open { id, .. })
            | Frame::Data(Data { id, .. })
            | Frame::End(End { id, .. })
            | Frame::Cancel(Cancel { id, .. }) => Some(id),
            _ => None,
        }
    }

    /// The frame's type.
    pub const fn frame_type(&self) -> FrameType {
        match self {
            Frame::Hello(_) => FrameType::Hello,
            Frame::Login(_) => FrameType::Login,
            Frame::LoginResult(_) => FrameType::LoginResult,
            Frame::Ping(_) => FrameType::Ping,
            Frame::Pong(_) => FrameType::Pong,
            Frame::Close(_) => FrameType::Close,
            Frame::ConnCredit(_) => FrameType::ConnCredit,
            Frame::Cmd(_) => FrameType::Cmd,
            Frame::CmdCont(_) => FrameType::CmdCont,
            Frame::Open(_) => FrameType::Open,
            Frame::Data(_) => FrameType::Data,
            Frame::End(_) => FrameType::End,
            Frame::Credit(_) => FrameType::Credit,
            Frame::Cancel(_) => FrameType::Cancel,
            Frame::Result(_) => FrameType::Result,
            Frame::ResumeFrom(_) => FrameType::ResumeFrom,
            Frame::KeyQuery(_) => FrameType::KeyQuery,
            Frame::Key(_) => FrameType::Key,
        }
    }
}
