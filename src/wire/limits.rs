//! Limits: the sizes a decoder accepts, checked before anything is buffered or allocated.

use super::varint::VARINT_MAX;

/// The smallest `max_frame_size` a peer may advertise: every control frame with the
/// largest user id, token, file name and reason allowed by [`Limits::validate`] fits in it.
pub const MIN_FRAME_SIZE: u64 = 1024;
/// The largest `max_frame_size` a peer may advertise (16 MiB).
pub const MAX_FRAME_SIZE: u64 = 16 << 20;

/// A receiver grants credit again once it has consumed this many bytes since its last
/// grant, or half its window if that is less (docs/PROTOCOL.md, "Flow control"). A relay's
/// windows are at least this, so a sender behind a relay never waits for a grant that
/// would only come after more than it may send.
pub const CREDIT_STEP: u64 = 64 * 1024;

/// The consumption that earns a new grant in a window of `window` bytes.
pub fn credit_step(window: u64) -> u64 {
    CREDIT_STEP.min(window / 2).max(1)
}

/// The most payload one frame can carry when the receiver accepts bodies of up to
/// `max_frame_size` bytes: a `DATA` or `CMD_CONT` (`cmd_peer` is `None`), or the first
/// fragment of a `CMD` naming `cmd_peer`. It counts the other fields at their largest
/// (8 bytes for each varint, 2 for a user id's length prefix, 25 for a command's identity),
/// so the frame always fits.
pub fn payload_room(max_frame_size: u64, cmd_peer: Option<&super::UserId>) -> u64 {
    let once = 1 + super::CmdOnce::LEN;
    let fields = 2 * 8 + cmd_peer.map_or(0, |peer| 2 + peer.len() as u64 + once);
    max_frame_size.saturating_sub(fields)
}

/// What a decoder accepts from its peer. Each side advertises its own in `HELLO`; a sender
/// must stay within the peer's.
///
/// Every field is checked by the decoder as soon as the value is read, before the body it
/// governs is awaited or any memory is set aside for it.
///
/// ```
/// use peermsg::wire::Limits;
///
/// let limits = Limits { max_cmd_size: 1024, ..Limits::default() };
/// assert!(limits.validate().is_ok());
/// assert!(Limits { max_frame_size: 100, ..limits }.validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body (the bytes after the length field). Default 16 KiB.
    pub max_frame_size: u64,
    /// Longest user id, in bytes. Default 128.
    pub max_user_id_len: u64,
    /// Longest login token, in bytes. Default 512.
    pub max_token_len: u64,
    /// Longest file name, in bytes. Default 512.
    pub max_file_name_len: u64,
    /// Longest close reason, in bytes. Default 256.
    pub max_reason_len: u64,
    /// Largest command. Default 64 KiB.
    pub max_cmd_size: u64,
    /// Largest buffer. Default 100 MiB.
    pub max_buffer_size: u64,
    /// Largest file. Default: the largest varint, 2^62 - 1.
    pub max_file_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: 16 * 1024,
            max_user_id_len: 128,
            max_token_len: 512,
            max_file_name_len: 512,
            max_reason_len: 256,
            max_cmd_size: 64 * 1024,
            max_buffer_size: 100 * 1024 * 1024,
            max_file_size: VARINT_MAX,
        }
    }
}

/// Why a [`Limits`] cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// `max_frame_size` is outside `MIN_FRAME_SIZE..=MAX_FRAME_SIZE`.
    #[error("max_frame_size {0} is outside {MIN_FRAME_SIZE}..={MAX_FRAME_SIZE}")]
    FrameSize(u64),
    /// A user id, token, file name or reason limit is zero or too large to fit in the
    /// smallest frame a peer may advertise.
    #[error("{0} must be between 1 and {1}")]
    FieldLength(&'static str, u64),
    /// A size limit is over [`VARINT_MAX`].
    #[error("{0} is over the largest varint")]
    Size(&'static str),
}

impl Limits {
    /// Checks that the limits are usable: the frame size within bounds, and the text
    /// fields small enough that `LOGIN`, `OPEN` and `CLOSE` fit in [`MIN_FRAME_SIZE`].
    pub fn validate(&self) -> Result<(), LimitsError> {
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&self.max_frame_size) {
            return Err(LimitsError::FrameSize(self.max_frame_size));
        }
        // Room for the varints around them; see docs/PROTOCOL.md, "Limits".
        let fields = [
            ("max_user_id_len", self.max_user_id_len, 255),
            ("max_token_len", self.max_token_len, 640),
            ("max_file_name_len", self.max_file_name_len, 640),
            ("max_reason_len", self.max_reason_len, 900),
        ];
        for (name, value, max) in fields {
            if value == 0 || value > max {
                return Err(LimitsError::FieldLength(name, max));
            }
        }
        let sizes = [
            ("max_cmd_size", self.max_cmd_size),
            ("max_buffer_size", self.max_buffer_size),
            ("max_file_size", self.max_file_size),
        ];
        for (name, value) in sizes {
            if value > VARINT_MAX {
                return Err(LimitsError::Size(name));
            }
        }
        Ok(())
    }

    /// The largest transfer size any `OPEN` may declare: the larger of the buffer and file
    /// limits. Data offsets are checked against it.
    pub fn max_transfer_size(&self) -> u64 {
        self.max_buffer_size.max(self.max_file_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_room_always_fits_the_frame() {
        use crate::wire::{Cmd, CmdCont, Data, Decoder, Frame, UserId, VARINT_MAX};
        use bytes::{Bytes, BytesMut};
        let max = MIN_FRAME_SIZE;
        let limits = Limits {
            max_frame_size: max,
            ..Limits::default()
        };
        let peer = UserId::new(&"p".repeat(128)).unwrap();
        let full = |room: u64| Bytes::from(alloc::vec![0u8; room as usize]);
        let big = VARINT_MAX - 2 * MAX_FRAME_SIZE; // ids and offsets at their longest
        let frames = [
            Frame::Data(Data {
                id: big,
                offset: big,
                payload: full(payload_room(max, None)),
            }),
            Frame::CmdCont(CmdCont {
                id: big,
                offset: 0,
                data: full(payload_room(max, None)),
            }),
            Frame::Cmd(Cmd {
                id: big,
                peer: peer.clone(),
                once: None,
                total_len: 1 << 16,
                data: full(payload_room(max, Some(&peer))),
            }),
        ];
        for frame in frames {
            let mut buf = BytesMut::new();
            frame.encode(&mut buf).unwrap();
            let decoded = Decoder::new(limits).unwrap().decode(&mut buf);
            assert_eq!(decoded, Ok(Some(frame)));
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn frame_size_bounds_are_inclusive() {
        let at = |n| {
            Limits {
                max_frame_size: n,
                ..Limits::default()
            }
            .validate()
        };
        assert_eq!(at(MIN_FRAME_SIZE), Ok(()));
        assert_eq!(at(MAX_FRAME_SIZE), Ok(()));
        assert_eq!(
            at(MIN_FRAME_SIZE - 1),
            Err(LimitsError::FrameSize(MIN_FRAME_SIZE - 1))
        );
        assert_eq!(
            at(MAX_FRAME_SIZE + 1),
            Err(LimitsError::FrameSize(MAX_FRAME_SIZE + 1))
        );
    }

    #[test]
    fn text_limits_must_fit_the_smallest_frame() {
        let l = Limits {
            max_user_id_len: 256,
            ..Limits::default()
        };
        assert_eq!(
            l.validate(),
            Err(LimitsError::FieldLength("max_user_id_len", 255))
        );
        let l = Limits {
            max_token_len: 0,
            ..Limits::default()
        };
        assert!(l.validate().is_err());
    }
}
