//! A connection's frames waiting to be written, in two lanes, and the one rule that orders
//! them: transfer data waits behind everything else.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use bytes::Bytes;

use super::ConnId;
use crate::wire::Frame;

/// A queued frame, and the sender whose message payload it carries: that sender's credit
/// comes back only when the frame is written.
type Queued = (Frame, Option<ConnId>);

/// A queued frame as held: with the bytes it takes on the wire, measured once.
type Held = (Frame, Option<ConnId>, u64);

/// Frames for one connection, not yet taken by `poll_transmit`.
///
/// `DATA` and `END` go in the data lane; every other frame goes in the prompt lane, which
/// is always written first. So a command (or a credit, a result, a cancel) never waits
/// behind the transfer data the relay holds for a busy receiver: it waits for at most what
/// the runtime has already been handed.
///
/// Why this keeps the protocol's order: a frame in the prompt lane queued before one in
/// the data lane is still written first, so only `DATA`/`END` can be overtaken, and only by
/// frames that may come first: new messages (`CMD`, `OPEN` keep their id order, being in
/// one lane and queued in id order: `Relay::pass` lets a first frame go only after every
/// lower id's), frames about the connection's own sends (`CREDIT`, `RESULT`, `CONN_CREDIT`),
/// and a `CANCEL`, after which the receiver drops the transfer's late frames as for any
/// ended message. A transfer's `OPEN` is queued before its `DATA`, so it is written first.
/// `CLOSE` is queued after both lanes and written last.
#[derive(Debug, Default)]
pub(super) struct OutQueue {
    prompt: VecDeque<Held>,
    data: VecDeque<Held>,
    close: Option<Frame>,
    /// Payload bytes held (the part that counts against windows and budgets), and the
    /// part of it in the data lane.
    payload: u64,
    data_payload: u64,
    /// Bytes the queued frames take on the wire, headers included: what bounds a
    /// connection that does not read.
    wire: u64,
}

impl OutQueue {
    /// Queues `frame` in its lane; `owner` is the sender of the message payload it
    /// carries, if any.
    pub(super) fn push(&mut self, frame: Frame, owner: Option<ConnId>) {
        let (payload, wire) = (payload_len(&frame), wire_len(&frame));
        self.payload += payload;
        self.wire += wire;
        match frame {
            Frame::Data(_) | Frame::End(_) => {
                self.data_payload += payload;
                self.data.push_back((frame, owner, wire));
            }
            Frame::Close(_) => self.close = Some(frame),
            _ => self.prompt.push_back((frame, owner, wire)),
        }
    }

    /// The next frame to write, and the sender of its payload.
    pub(super) fn pop(&mut self) -> Option<Queued> {
        let (frame, owner, wire) = match self.prompt.pop_front() {
            Some(held) => held,
            None => match self.data.pop_front() {
                Some(held) => {
                    self.data_payload = self.data_payload.saturating_sub(payload_len(&held.0));
                    held
                }
                None => {
                    let close = self.close.take()?;
                    let wire = wire_len(&close);
                    (close, None, wire)
                }
            },
        };
        self.payload = self.payload.saturating_sub(payload_len(&frame));
        self.wire = self.wire.saturating_sub(wire);
        Some((frame, owner))
    }

    /// Frames queued.
    pub(super) fn len(&self) -> usize {
        self.prompt.len() + self.data.len() + usize::from(self.close.is_some())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Payload bytes queued.
    pub(super) fn payload_bytes(&self) -> u64 {
        self.payload
    }

    /// Payload bytes queued in the lane `frame` would join: commands and data are bounded
    /// apart, so a command never waits for room behind data.
    pub(super) fn payload_in_lane_of(&self, frame: &Frame) -> u64 {
        match frame {
            Frame::Data(_) | Frame::End(_) => self.data_payload,
            _ => self.payload.saturating_sub(self.data_payload),
        }
    }

    /// Bytes the queued frames take on the wire.
    pub(super) fn wire_bytes(&self) -> u64 {
        self.wire
    }

    /// Drops every frame; gives each payload dropped with its sender.
    pub(super) fn clear(&mut self) -> Vec<(ConnId, u64)> {
        let dropped = self
            .prompt
            .drain(..)
            .chain(self.data.drain(..))
            .filter_map(|(frame, owner, _)| Some((owner?, payload_len(&frame))))
            .collect();
        *self = OutQueue::default();
        dropped
    }
}

/// Gives a frame that will wait its own copy of its payload. A decoded payload is a slice
/// of the buffer it was read in and keeps all of that buffer alive: frames that wait (for
/// a receiver's credit, or behind a socket that is not drained) would otherwise pin many
/// times their own size when they come from many reads. Frames that go straight out stay
/// slices.
pub(super) fn detach_payload(frame: &mut Frame) {
    if let Some(payload) = frame.payload_mut() {
        *payload = Bytes::copy_from_slice(payload);
    }
}

/// Payload bytes a frame carries, the part that counts against windows.
pub(super) fn payload_len(frame: &Frame) -> u64 {
    frame.payload().map_or(0, |p| p.len() as u64)
}

/// Bytes a frame takes on the wire. Frames the relay queues were decoded or built within
/// limits, so they encode; were one not to, it counts as its payload.
fn wire_len(frame: &Frame) -> u64 {
    frame
        .encoded_len()
        .map_or_else(|_| payload_len(frame), |n| n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Close, Cmd, Data, Digest, End, Ping, Text, UserId};

    #[test]
    fn data_waits_behind_other_frames_and_close_is_last() {
        let data = |offset| {
            Frame::Data(Data {
                id: 0,
                offset,
                payload: Bytes::from_static(b"xyz"),
            })
        };
        let cmd = Frame::Cmd(Cmd {
            id: 1,
            peer: UserId::new("a").unwrap(),
            once: None,
            total_len: 2,
            data: Bytes::from_static(b"hi"),
        });
        let end = Frame::End(End {
            id: 0,
            size: 6,
            digest: Digest::Crc32c(0),
        });
        let close = Frame::Close(Close {
            code: crate::ErrorCode::NOERR,
            reason: Text::new(),
        });
        let mut q = OutQueue::default();
        let alice = Some(ConnId(7));
        q.push(data(0), alice);
        q.push(data(3), alice);
        q.push(end.clone(), None);
        q.push(cmd.clone(), alice);
        q.push(Frame::Pong(Ping { nonce: 4 }), None);
        q.push(close.clone(), None);
        assert_eq!((q.len(), q.payload_bytes()), (6, 8));
        let wire: usize = [&cmd, &end, &close]
            .iter()
            .map(|f| f.encoded_len().unwrap())
            .sum::<usize>()
            + 2 * data(0).encoded_len().unwrap()
            + Frame::Pong(Ping { nonce: 4 }).encoded_len().unwrap();
        assert_eq!(q.wire_bytes(), wire as u64);
        let order: Vec<Frame> = core::iter::from_fn(|| q.pop().map(|(f, _)| f)).collect();
        assert_eq!(
            order,
            [
                cmd,
                Frame::Pong(Ping { nonce: 4 }),
                data(0),
                data(3),
                end,
                close
            ]
        );
        assert_eq!((q.len(), q.payload_bytes(), q.wire_bytes()), (0, 0, 0));
    }
}
