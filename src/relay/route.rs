//! One forwarded message on its way: its pieces checked against the receiver's rules
//! (`on_piece`), held while the receiver has no credit or queue room, and passed on in
//! order (`move_on`, `pass`: the one place bytes go from a sender to a receiver, with ids
//! and credit translated).

use super::session::split_payload;
use super::RouteKey;
use super::*;

impl Relay {
    /// A fragment, `DATA` or `END` of one of sender `conn`'s messages: its payload counted,
    /// checked against the message, and forwarded.
    pub(super) fn on_piece(&mut self, conn: ConnId, frame: Frame) {
        let len = payload_len(&frame);
        let (id, offset) = match &frame {
            Frame::CmdCont(c) => (c.id, c.offset),
            Frame::Data(d) => (d.id, d.offset),
            Frame::End(e) => (e.id, 0),
            _ => return,
        };
        if !self.count_received(conn, len) {
            return;
        }
        let Some(key) = self.inbound_key(conn, id) else {
            self.bytes_left(conn, len, false); // an ended message: dropped
            return;
        };
        let Some(r) = self.routes.get_mut(key) else {
            return;
        };
        // The receiver's rules, so that nothing forwarded can make the receiver close: a
        // sender's mistake stays the sender's. No DATA before the receiver said where it
        // resumes.
        let checked = match &frame {
            Frame::Data(_) if r.awaiting_resume => Err(Violation::OutOfPlace),
            Frame::End(_) => r.arrival.end(),
            Frame::CmdCont(_) => r.arrival.bytes(true, offset, len, u64::MAX),
            _ => r.arrival.bytes(false, offset, len, r.src_credit),
        };
        if let Err(violation) = checked {
            self.violation(conn, violation);
            return;
        }
        self.forward(key, frame);
    }

    /// Appends a frame of the sender's to route `key` and moves what may move. A frame
    /// that stays gets its own copy of its payload (see `detach_payload`).
    pub(super) fn forward(&mut self, key: RouteKey, frame: Frame) {
        let Some(r) = self.routes.get(key) else {
            return;
        };
        self.held += payload_len(&frame);
        // Behind frames already waiting it waits too; else it may go straight on.
        let waiting = if r.held.is_empty() {
            self.pass(key, frame).err()
        } else {
            Some(frame)
        };
        if let (Some(mut frame), Some(r)) = (waiting, self.routes.get_mut(key)) {
            detach_payload(&mut frame);
            r.held.push_back(frame);
        }
    }

    /// Moves a route's held frames to its receiver as far as [`Relay::pass`] lets them.
    pub(super) fn move_on(&mut self, key: RouteKey) {
        loop {
            let Some(frame) = self.routes.get_mut(key).and_then(|r| r.held.pop_front()) else {
                return;
            };
            if let Err(frame) = self.pass(key, frame) {
                if let Some(r) = self.routes.get_mut(key) {
                    r.held.push_front(frame);
                }
                return;
            }
        }
    }

    /// Forwards `frame`, the next of route `key`, to its receiver if the receiver's credit
    /// (for the transfer and for the connection) and its queue room allow; else gives it
    /// back. The one place where a message's bytes pass from one connection to the other.
    pub(super) fn pass(&mut self, key: RouteKey, mut frame: Frame) -> Result<(), Frame> {
        let Some(r) = self.routes.get_mut(key) else {
            return Err(frame);
        };
        let (src, dst) = (r.src, r.dst);
        let Some(dst_id) = r.dst_id else {
            return Err(frame); // waiting for a slot: `admit` calls move_on
        };
        let mut len = payload_len(&frame);
        if let Frame::Data(d) = &frame {
            if d.offset + len > r.dst_credit {
                return Err(frame); // the receiver's CREDIT calls move_on again
            }
        }
        // A message's first frame waits while a lower id's has not gone (it waits in the
        // receiver's blocked queue, behind that one, which is let go first).
        let first = matches!(frame, Frame::Cmd(_) | Frame::Open(_));
        if first {
            let Some(dc) = self.conns.get_mut(&dst) else {
                return Err(frame);
            };
            if dc.unstarted.first().is_some_and(|lowest| *lowest < dst_id) {
                if !r.blocked {
                    r.blocked = true;
                    dc.blocked.push_back(key);
                }
                return Err(frame);
            }
        }
        if len > 0 {
            let Some(dc) = self.conns.get_mut(&dst) else {
                return Err(frame);
            };
            let full = dc.out.payload_in_lane_of(&frame) >= self.config.receiver_queue;
            let room = dc.session.send.room();
            if room == 0 || full {
                if !r.blocked {
                    r.blocked = true;
                    dc.blocked.push_back(key);
                }
                return Err(frame); // CONN_CREDIT or a drained queue calls move_on again
            }
            if len > room {
                // What credit there is goes now: a peer that grants in steps (a relay at
                // the far end of a link) grants more only once it is used.
                let n = usize::try_from(room).unwrap_or(usize::MAX);
                if let Some(mut rest) = split_payload(&mut frame, n) {
                    // The rest waits for the next CONN_CREDIT, like a frame that found no
                    // room at all.
                    detach_payload(&mut rest);
                    r.held.push_front(rest);
                    if !r.blocked {
                        r.blocked = true;
                        dc.blocked.push_back(key);
                    }
                }
                len = room;
            }
            dc.session.send.spend(len);
        }
        if let Some(id) = frame.sender_id_mut() {
            *id = dst_id;
        }
        if first {
            if let Some(dc) = self.conns.get_mut(&dst) {
                dc.unstarted.remove(&dst_id);
            }
        }
        if matches!(frame, Frame::Data(_)) {
            r.forwarded += len;
        }
        r.last_progress = self.now;
        self.forwarded += 1;
        self.push_from(dst, frame, Some(src));
        Ok(())
    }

    /// Routes toward `conn` that waited for its credit or queue room try again.
    pub(super) fn unblock(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.blocked.is_empty() || c.session.send.room() == 0 {
            return;
        }
        let blocked: Vec<RouteKey> = c.blocked.drain(..).collect();
        for key in blocked {
            if let Some(r) = self.routes.get_mut(key) {
                r.blocked = false;
            }
            self.move_on(key);
        }
    }

    /// A receiver's `CREDIT` for a message forwarded to it: checked against what was
    /// forwarded, and translated into the sender's credit.
    pub(super) fn on_credit(&mut self, conn: ConnId, credit: Credit) {
        let Some(key) = self.outbound_key(conn, credit.id) else {
            return;
        };
        let Some((src, dst)) = self.routes.get(key).map(|r| (r.src, r.dst)) else {
            return;
        };
        let window = self.window_of(src, dst);
        let dst_window = self
            .conns
            .get(&conn)
            .and_then(|c| c.session.peer())
            .map_or(0, |h| h.transfer_window);
        let now = self.now;
        let Some(r) = self.routes.get_mut(key) else {
            return;
        };
        if credit.max_offset > r.forwarded.saturating_add(dst_window) {
            // A grant is consumption plus the announced window, and nothing past
            // what was forwarded can have been consumed.
            self.violation(conn, Violation::CreditBeyondWindow);
            return;
        }
        if credit.max_offset > r.dst_credit {
            r.dst_credit = credit.max_offset;
            r.last_progress = now;
            // The receiver's grant is its consumption plus its window; the sender's
            // is the same consumption plus the relay's window. So the sender's
            // progress (grant less window) is what the receiver consumed, and the
            // relay holds at most its window less the receiver's.
            let grant = credit.max_offset.saturating_sub(dst_window) + window;
            if grant > r.src_credit {
                r.src_credit = grant;
                let (src, id) = (r.src, r.src_id);
                self.push(
                    src,
                    Frame::Credit(Credit {
                        id,
                        max_offset: grant,
                    }),
                );
            }
            self.move_on(key);
        }
    }

    /// The resume key route `key` forwards with sender `conn`'s `OPEN`: the key itself if
    /// the receiver announced resume (its `RESUME_FROM` is then awaited), else none, and
    /// the relay answers the sender for it that nothing is held.
    pub(super) fn resume_key_for(
        &mut self,
        key: RouteKey,
        conn: ConnId,
        open: &wire::Open,
    ) -> Option<wire::ResumeKey> {
        let resume_key = open.resume_key?;
        let r = self.routes.get_mut(key)?;
        // An outgoing link forwards the key: the relay at its far end answers for its user.
        let resumes = self.conns.get(&r.dst).is_some_and(|d| {
            d.is_link(LinkSide::Outgoing)
                || d.session
                    .peer()
                    .is_some_and(|h| h.capabilities.contains(wire::Capabilities::RESUME))
        });
        if resumes {
            r.awaiting_resume = true;
            return Some(resume_key);
        }
        self.push(
            conn,
            Frame::ResumeFrom(ResumeFrom {
                id: open.id,
                offset: 0,
                digest: wire::Digest::OF_NOTHING,
            }),
        );
        None
    }

    /// A receiver's `RESUME_FROM` for a transfer forwarded to it with a resume key: the
    /// route continues at its offset, and the sender hears it with its own id.
    pub(super) fn on_resume_from(&mut self, conn: ConnId, resume: ResumeFrom) {
        let Some(key) = self.outbound_key(conn, resume.id) else {
            return;
        };
        let Some(r) = self.routes.get_mut(key) else {
            return;
        };
        if !r.awaiting_resume || r.arrival.resume_at(resume.offset).is_err() {
            self.violation(conn, Violation::OutOfPlace);
            return;
        }
        r.awaiting_resume = false;
        // Bytes below the offset count as forwarded: the receiver's credit is measured
        // from there.
        r.forwarded = resume.offset;
        r.last_progress = self.now;
        let (src, id) = (r.src, r.src_id);
        self.push(src, Frame::ResumeFrom(ResumeFrom { id, ..resume }));
    }
}
