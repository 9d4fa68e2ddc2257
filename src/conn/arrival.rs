//! The rules a message's pieces keep as they arrive, whoever receives them: the client
//! (the message's receiver) and the relay (which checks them before forwarding, so that
//! nothing it forwards can make the receiver close). Written once, independent of role.

use super::Violation;

/// How much of one message has arrived.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arrival {
    cmd: bool,
    size: u64,
    received: u64,
    ended: bool,
}

impl Arrival {
    /// A command (`cmd`) or transfer of `size` bytes, `received` of them in its first frame.
    pub(crate) fn new(cmd: bool, size: u64, received: u64) -> Self {
        Arrival {
            cmd,
            size,
            received,
            ended: false,
        }
    }

    /// The next bytes: a command's fragment (`cmd_piece`) or a transfer's `DATA`, which
    /// must stay below `credit`. They continue the message where it stands, within its
    /// declared size.
    pub(crate) fn bytes(
        &mut self,
        cmd_piece: bool,
        offset: u64,
        len: u64,
        credit: u64,
    ) -> Result<(), Violation> {
        if cmd_piece != self.cmd || self.ended {
            return Err(Violation::OutOfPlace);
        }
        let end = offset.saturating_add(len);
        if offset != self.received || end > self.size {
            return Err(Violation::BytesOutOfPlace);
        }
        if !self.cmd && end > credit {
            return Err(Violation::BeyondTransferCredit);
        }
        self.received = end;
        Ok(())
    }

    /// A resumed transfer continues at `offset`: the receiver holds bytes `0..offset` from
    /// an earlier attempt. Only before any byte of this attempt came, and within its size.
    pub(crate) fn resume_at(&mut self, offset: u64) -> Result<(), Violation> {
        if self.cmd || self.ended || self.received != 0 || offset > self.size {
            return Err(Violation::OutOfPlace);
        }
        self.received = offset;
        Ok(())
    }

    /// A transfer's `END` (its size and digest are the receiver's to check).
    pub(crate) fn end(&mut self) -> Result<(), Violation> {
        if self.cmd || self.ended {
            return Err(Violation::OutOfPlace);
        }
        self.ended = true;
        Ok(())
    }

    /// All of it is in: every byte of a command, or a transfer's `END`.
    pub(crate) fn is_whole(&self) -> bool {
        if self.cmd {
            self.received == self.size
        } else {
            self.ended
        }
    }

    pub(crate) fn is_cmd(&self) -> bool {
        self.cmd
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    pub(crate) fn ended(&self) -> bool {
        self.ended
    }
}
