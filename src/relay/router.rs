//! Routing: a new message from a sender gets a route to its receiver (`new_route`: the
//! target online, within the receiver's announced limits), waits for a slot under the
//! receiver's caps (`admit`, in turns across senders), and ends on both sides
//! (`end_route_telling`), by its result, a cancel, a timeout or a connection's end.

use super::RouteKey;
use super::*;

impl Relay {
    /// A new message from `conn` to `peer`: its id checked against the order, the sender's
    /// caps and the target; a route made, waiting for a slot at the receiver. `None` if
    /// refused (answered already). Gives the route and the sender's user id.
    pub(super) fn new_route(
        &mut self,
        conn: ConnId,
        id: MessageId,
        peer: &UserId,
        first_fragment: Option<u64>,
        kind: Option<wire::TransferKind>,
        size: u64,
    ) -> Option<(RouteKey, UserId)> {
        let is_cmd = first_fragment.is_some();
        let (max_cmds, max_transfers) = (self.config.max_cmds_in_flight, self.config.max_transfers);
        let c = self.conns.get_mut(&conn)?;
        if let Err(violation) = c.inbound.claim(id) {
            self.violation(conn, violation);
            return None;
        }
        // On an incoming link the other relay stamped the source and the link names the
        // receiver; from a client, the session is the source and the frame names the
        // receiver.
        let incoming = c.link.as_ref().map(|l| l.user.clone());
        let (from, to) = match incoming.clone() {
            Some(user) => (peer.clone(), user),
            None => (c.session.user().cloned()?, peer.clone()),
        };
        // Refused at once: answered, and reported as a message that ended.
        let refuse = |relay: &mut Self, code| {
            relay.push(conn, Frame::Result(MessageResult { id, code }));
            relay.events.push_back(RelayEvent::MessageEnded {
                from: from.clone(),
                to: to.clone(),
                cmd: is_cmd,
                size,
                code,
            });
            None
        };
        let over = if is_cmd {
            c.cmds_in >= max_cmds
        } else {
            c.transfers_in >= max_transfers
        };
        if over {
            return refuse(self, ErrorCode::LIMIT_EXCEEDED);
        }
        let dst = match self.users.get(&to) {
            Some(dst) if self.conns.get(dst).is_some_and(|d| !d.session.is_closed()) => *dst,
            // A user elsewhere in the cluster is reached through a link (never one that
            // came in on a link: a message crosses one link at most).
            _ if self.config.cluster && incoming.is_none() => {
                match self.outgoing_link(&to, &from) {
                    Some(link) => link,
                    None => return refuse(self, ErrorCode::LIMIT_EXCEEDED),
                }
            }
            _ => return refuse(self, ErrorCode::OFFLINE),
        };
        let d = self.conns.get_mut(&dst)?;
        // Nothing the receiver's decoder would refuse is forwarded. A link still looking
        // for its user has no limits yet: the relay at its far end checks them.
        let (max, too_large) = match (kind, d.session.peer()) {
            (_, None) if d.link.is_some() => (u64::MAX, ErrorCode::OFFLINE),
            (_, None) => (0, ErrorCode::OFFLINE),
            (None, Some(h)) => (h.max_cmd_size, ErrorCode::SENDCMD_LARGE),
            (Some(wire::TransferKind::Buffer), Some(h)) => {
                (h.max_buffer_size, ErrorCode::SENDBUFFER_LARGE)
            }
            (Some(wire::TransferKind::File), Some(h)) => {
                (h.max_file_size, ErrorCode::FILE_SIZE_ERR)
            }
        };
        if size > max {
            return refuse(self, too_large);
        }
        let key = RouteKey(self.next_route);
        self.next_route += 1;
        // A free slot and nobody waiting for one: it goes straight on, below. (A link
        // not yet greeted has no slots: its messages wait for its HELLO.)
        let caps = d.session.peer().map(|h| match is_cmd {
            true => h.max_cmds_in_flight,
            false => h.max_transfers,
        });
        let (waiting, out) = match is_cmd {
            true => (&mut d.waiting_cmds, &mut d.cmds_out),
            false => (&mut d.waiting_transfers, &mut d.transfers_out),
        };
        let straight_on = waiting.is_empty() && caps.is_some_and(|cap| *out < cap);
        if straight_on {
            *out += 1;
        } else {
            waiting.push(conn, key);
        }
        let src_credit = self.window_of(conn, dst);
        let c = self.conns.get_mut(&conn)?;
        c.inbound.insert(id, key);
        if is_cmd {
            c.cmds_in += 1;
        } else {
            c.transfers_in += 1;
        }
        let route = Route {
            src: conn,
            src_id: id,
            dst,
            from: from.clone(),
            to,
            dst_id: None,
            held: VecDeque::new(),
            dst_credit: 0,
            forwarded: 0,
            src_credit,
            blocked: false,
            arrival: Arrival::new(is_cmd, size, first_fragment.unwrap_or(0)),
            cancelling: false,
            last_progress: self.now,
            awaiting_resume: false,
        };
        self.routes.insert(key, Box::new(route));
        if straight_on {
            self.forward_to(dst, key);
        }
        Some((key, from))
    }

    /// Gives waiting messages to `dst` while it has free slots under the caps it announced,
    /// each with the next id of `dst`'s connection.
    pub(super) fn admit(&mut self, dst: ConnId) {
        loop {
            let Some(d) = self.conns.get_mut(&dst) else {
                return;
            };
            let Some(h) = d.session.peer() else {
                return;
            };
            let key = if d.cmds_out < h.max_cmds_in_flight {
                d.waiting_cmds.pop()
            } else {
                None
            };
            let key = match key {
                Some(key) => {
                    d.cmds_out += 1;
                    key
                }
                None if d.transfers_out < h.max_transfers => match d.waiting_transfers.pop() {
                    Some(key) => {
                        d.transfers_out += 1;
                        key
                    }
                    None => return,
                },
                None => return,
            };
            self.forward_to(dst, key);
        }
    }

    /// Route `key` takes a slot at `dst` (already counted): it gets `dst`'s next id, its
    /// progress timer starts, and what it holds moves on.
    pub(super) fn forward_to(&mut self, dst: ConnId, key: RouteKey) {
        let Some(d) = self.conns.get_mut(&dst) else {
            return;
        };
        let dst_id = d.outbound.allocate(key);
        d.unstarted.insert(dst_id);
        let now = self.now;
        let Some(r) = self.routes.get_mut(key) else {
            return;
        };
        r.dst_id = Some(dst_id);
        r.last_progress = now;
        // The receiver's first grant is the window its HELLO announced.
        r.dst_credit = d.session.peer().map_or(0, |h| h.transfer_window);
        // Across a link the relay at its far end keeps the progress timeout: it knows
        // whether the message waits for a slot there (which never times out).
        let timed = d.link.is_none();
        if let (Some(limit), None, true) = (self.config.progress_timeout, d.progress_at, timed) {
            d.progress_at = Some(now + limit);
            self.timers.insert((now + limit, Timer::Progress(dst)));
        }
        self.move_on(key);
    }

    /// Cancels route `key`, whose sender has sent its `END`, with `code`: a receiver that
    /// may have it whole decides (its `RESULT` goes to the sender); one that cannot (it
    /// never got a frame of it) is not asked.
    pub(super) fn ask_cancel(&mut self, key: RouteKey, code: ErrorCode) {
        let Some(r) = self.routes.get_mut(key) else {
            return;
        };
        let Some(dst_id) = r.dst_id else {
            self.end_route_telling(key, Tell::Sender(code));
            return;
        };
        r.cancelling = true;
        r.last_progress = self.now;
        // What it still held goes nowhere now.
        let (src, dst) = (r.src, r.dst);
        let held: u64 = r.held.drain(..).map(|f| payload_len(&f)).sum();
        self.bytes_left(src, held, true);
        self.push(dst, Frame::Cancel(Cancel { id: dst_id, code }));
    }

    /// Ends the messages forwarded to `dst` that have not moved for the progress timeout,
    /// on both ends, and sets the timer for the next that could.
    pub(super) fn check_progress(&mut self, dst: ConnId, now: Instant) {
        let Some(limit) = self.config.progress_timeout else {
            return;
        };
        let Some(d) = self.conns.get_mut(&dst) else {
            return;
        };
        d.progress_at = None;
        let mut stalled = Vec::new();
        let mut next: Option<Instant> = None;
        for key in d.outbound.values() {
            let Some(r) = self.routes.get(*key) else {
                continue;
            };
            let due = r.last_progress + limit;
            if due <= now {
                stalled.push(*key);
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        if let Some(due) = next {
            d.progress_at = Some(due);
            self.timers.insert((due, Timer::Progress(dst)));
        }
        let mut asked = false;
        for key in stalled {
            // A whole message whose receiver has not answered may be delivered already:
            // the receiver is asked, and has one more timeout to answer.
            match self
                .routes
                .get(key)
                .map(|r| (r.arrival.ended(), r.cancelling))
            {
                Some((true, false)) => {
                    self.ask_cancel(key, ErrorCode::SOCKETTIMEOUT);
                    asked = true;
                }
                _ => self.end_route_telling(key, Tell::Both(ErrorCode::SOCKETTIMEOUT)),
            }
        }
        if let (true, Some(d)) = (asked, self.conns.get_mut(&dst)) {
            if d.progress_at.is_none() {
                d.progress_at = Some(now + limit);
                self.timers.insert((now + limit, Timer::Progress(dst)));
            }
        }
    }

    /// The route of `conn`'s own message `id`. `None` for a message already ended (its
    /// frames are dropped) or never begun (the connection is closed).
    pub(super) fn inbound_key(&mut self, conn: ConnId, id: MessageId) -> Option<RouteKey> {
        let found = self
            .conns
            .get(&conn)?
            .inbound
            .find(id, Violation::NeverOpened);
        self.route_of(conn, found.map(Option::<&RouteKey>::copied))
    }

    /// The route of a message the relay sent to `conn` as `id`.
    pub(super) fn outbound_key(&mut self, conn: ConnId, id: MessageId) -> Option<RouteKey> {
        let found = self
            .conns
            .get(&conn)?
            .outbound
            .find(id, Violation::NeverSent);
        self.route_of(conn, found.map(Option::<&RouteKey>::copied))
    }

    /// An id's route; an id never allocated closes `conn`.
    pub(super) fn route_of(
        &mut self,
        conn: ConnId,
        found: Result<Option<RouteKey>, Violation>,
    ) -> Option<RouteKey> {
        match found {
            Ok(key) => key,
            Err(violation) => {
                self.violation(conn, violation);
                None
            }
        }
    }

    /// Ends a route, telling the ends that are still there: the receiver with `CANCEL`
    /// (only if it was told of the message), the sender with `RESULT`.
    pub(super) fn end_route_telling(&mut self, key: RouteKey, tell: Tell) {
        if let Some(r) = self.routes.get(key) {
            let (to_receiver, to_sender, code) = match tell {
                Tell::Receiver(code) => (Some(code), None, code),
                Tell::Sender(code) => (None, Some(code), code),
                Tell::Both(code) => (Some(code), Some(code), code),
            };
            let (src, src_id, dst, dst_id) = (r.src, r.src_id, r.dst, r.dst_id);
            self.events.push_back(RelayEvent::MessageEnded {
                from: r.from.clone(),
                to: r.to.clone(),
                cmd: r.arrival.is_cmd(),
                size: r.arrival.size(),
                code,
            });
            if let (Some(code), Some(id)) = (to_receiver, dst_id) {
                self.push(dst, Frame::Cancel(Cancel { id, code }));
            }
            if let Some(code) = to_sender {
                self.push(src, Frame::Result(MessageResult { id: src_id, code }));
            }
        }
        self.end_route(key);
    }

    /// Forgets a route: its held bytes count as released for the sender, and its slot at
    /// the receiver goes to the next waiting message.
    pub(super) fn end_route(&mut self, key: RouteKey) {
        let Some(r) = self.routes.remove(key) else {
            return;
        };
        let held: u64 = r.held.iter().map(payload_len).sum();
        if let Some(c) = self.conns.get_mut(&r.src) {
            c.inbound.remove(r.src_id);
            if r.arrival.is_cmd() {
                c.cmds_in = c.cmds_in.saturating_sub(1);
            } else {
                c.transfers_in = c.transfers_in.saturating_sub(1);
            }
        }
        if let Some(d) = self.conns.get_mut(&r.dst) {
            match r.dst_id {
                Some(id) => {
                    d.outbound.remove(id);
                    d.unstarted.remove(&id);
                    if r.arrival.is_cmd() {
                        d.cmds_out = d.cmds_out.saturating_sub(1);
                    } else {
                        d.transfers_out = d.transfers_out.saturating_sub(1);
                    }
                }
                None if r.arrival.is_cmd() => d.waiting_cmds.remove(r.src, key),
                None => d.waiting_transfers.remove(r.src, key),
            }
        }
        self.bytes_left(r.src, held, true);
        if r.dst_id.is_some() {
            self.admit(r.dst);
            // A message whose first frame waited behind this one's may go now.
            self.unblock(r.dst);
        }
    }

    /// A receiver's `RESULT` for a message forwarded to it: it goes to the sender, and the
    /// route ends.
    pub(super) fn on_result(&mut self, conn: ConnId, result: MessageResult) {
        let Some(key) = self.outbound_key(conn, result.id) else {
            return;
        };
        let Some(r) = self.routes.get(key) else {
            return;
        };
        // Forwarded whole: all of it came from the sender, and none still waits here.
        let whole = r.arrival.is_whole() && r.held.is_empty();
        if result.code.is_success() && !whole {
            // Its sender would close on it: the receiver is the one at fault.
            self.violation(conn, Violation::EarlySuccess);
            return;
        }
        self.end_route_telling(key, Tell::Sender(result.code));
    }
}
