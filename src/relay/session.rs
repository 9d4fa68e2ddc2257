//! Each connection's session at the relay: its `HELLO`, login and the frames a client may
//! send (`handle_frame`, where every frame from a client is dispatched), the queue of
//! frames toward it (`push_from`, which cuts payloads to the frame size it accepts and
//! closes a peer that does not read), and its end (`shut`).

use super::RouteKey;
use super::*;

impl Relay {
    pub(super) fn hello(&self) -> Hello {
        self.hello_with(self.config.transfer_window)
    }

    /// The relay's `HELLO` announcing `transfer_window` (a link's is `link_window`).
    pub(super) fn hello_with(&self, transfer_window: u64) -> Hello {
        let c = &self.config;
        let mut hello = Hello::new(
            Role::Relay,
            &c.limits,
            c.max_cmds_in_flight,
            c.max_transfers,
            transfer_window,
            INITIAL_CONN_CREDIT,
        );
        // It answers KEY_QUERY.
        hello.capabilities =
            wire::Capabilities(hello.capabilities.0 | wire::Capabilities::SEALED.0);
        hello
    }

    /// The relay's transfer window for a message from `src` to `dst`: `link_window` if it
    /// crosses a link, else `transfer_window`.
    pub(super) fn window_of(&self, src: ConnId, dst: ConnId) -> u64 {
        let crosses = self
            .conns
            .get(&src)
            .is_some_and(|c| c.is_link(LinkSide::Incoming))
            || self
                .conns
                .get(&dst)
                .is_some_and(|d| d.is_link(LinkSide::Outgoing));
        match crosses {
            true => self.config.link_window,
            false => self.config.transfer_window,
        }
    }

    /// Lists `conn` for [`Relay::poll_output`] if it has frames to write, is not paused
    /// and is not listed already.
    pub(super) fn list_writable(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.out.is_empty() && !c.writable && !c.paused {
                c.writable = true;
                self.writable.push_back(conn);
            }
        }
    }

    pub(super) fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Queues a frame of the relay's own (no message payload) for `conn`.
    pub(super) fn push(&mut self, conn: ConnId, frame: Frame) {
        self.push_from(conn, frame, None);
    }

    /// Queues `frame` for `conn`, cut to the frame size `conn` accepts; `owner` is the
    /// sender of the message payload it carries.
    pub(super) fn push_from(&mut self, conn: ConnId, frame: Frame, owner: Option<ConnId>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.session.is_closed() {
            // Its messages were ended when it closed; a late payload is dropped here.
            if let Some(owner) = owner {
                self.bytes_left(owner, payload_len(&frame), true);
            }
            return;
        }
        let max = c
            .session
            .peer()
            .map_or(wire::MIN_FRAME_SIZE, |h| h.max_frame_size);
        let mut frame = frame;
        if c.out.payload_bytes() >= self.config.transmit_batch as u64 {
            // The runtime is not keeping up with this connection: this frame will wait.
            detach_payload(&mut frame);
        }
        // A receiver may accept smaller frames than the sender wrote: cut the payload.
        while let Some(rest) = split_to_fit(&mut frame, max) {
            c.out.push(frame, owner);
            frame = rest;
        }
        c.out.push(frame, owner);
        if c.out.wire_bytes() > self.config.max_queued_bytes {
            // It does not read: nothing more will be written to it.
            self.drop_output(conn);
            self.shut(
                conn,
                ErrorCode::LIMIT_EXCEEDED,
                CloseReason::NotReading,
                false,
            );
            return;
        }
        self.list_writable(conn);
    }

    /// Every frame from a client, in one place.
    pub(super) fn handle_frame(&mut self, conn: ConnId, frame: Frame) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let logged_in = c.session.is_logged_in();
        if !logged_in {
            c.frames_before_login += 1;
            if c.frames_before_login > self.config.max_frames_before_login {
                self.violation(conn, Violation::TooManyFramesBeforeLogin);
                return;
            }
        }
        match frame {
            Frame::Ping(p) => self.push(conn, Frame::Pong(p)),
            Frame::Pong(_) => {}
            Frame::Close(close) => {
                self.shut(conn, close.code, CloseReason::Peer(close.reason), false)
            }
            Frame::Login(login) => match c.session.begin_login(login.user.clone()) {
                Ok(()) => self.events.push_back(RelayEvent::Login {
                    conn,
                    user: login.user,
                    token: login.token,
                }),
                Err(violation) => self.violation(conn, violation),
            },
            _ if !logged_in => self.violation(conn, Violation::NotLoggedIn),
            // An outgoing link carries a receiver's answers, never messages.
            Frame::Cmd(_)
            | Frame::Open(_)
            | Frame::CmdCont(_)
            | Frame::Data(_)
            | Frame::End(_)
            | Frame::Cancel(_)
                if c.is_link(LinkSide::Outgoing) =>
            {
                self.violation(conn, Violation::UnexpectedFrame)
            }
            // (A HELLO is the session's; a second one never comes here.)
            Frame::Hello(_) | Frame::LoginResult(_) => {
                self.violation(conn, Violation::UnexpectedFrame)
            }
            Frame::Cmd(cmd) => {
                let (id, first) = (cmd.id, cmd.data.len() as u64);
                if !self.count_received(conn, first) {
                    return;
                }
                let (peer, size) = (cmd.peer.clone(), cmd.total_len);
                match self.new_route(conn, id, &peer, Some(first), None, size) {
                    Some((key, src_user)) => {
                        let first = Cmd {
                            peer: src_user,
                            ..cmd
                        };
                        self.forward(key, Frame::Cmd(first));
                    }
                    None => self.bytes_left(conn, first, false),
                }
            }
            Frame::Open(open) => {
                let peer = open.peer.clone();
                if let Some((key, src_user)) =
                    self.new_route(conn, open.id, &peer, None, Some(open.kind), open.size)
                {
                    let resume_key = self.resume_key_for(key, conn, &open);
                    let first = Open {
                        peer: src_user,
                        resume_key,
                        ..open
                    };
                    self.forward(key, Frame::Open(first));
                }
            }
            Frame::ResumeFrom(r) => self.on_resume_from(conn, r),
            piece @ (Frame::CmdCont(_) | Frame::Data(_) | Frame::End(_)) => {
                self.on_piece(conn, piece)
            }
            Frame::Cancel(cancel) => {
                let Some(key) = self.inbound_key(conn, cancel.id) else {
                    return;
                };
                match self
                    .routes
                    .get(key)
                    .map(|r| (r.arrival.ended(), r.cancelling))
                {
                    // Before its END the sender is done with the message at once.
                    Some((false, _)) => self.end_route_telling(key, Tell::Receiver(cancel.code)),
                    // After it, the sender waits for a RESULT: the receiver's word.
                    Some((true, false)) => self.ask_cancel(key, cancel.code),
                    _ => {}
                }
            }
            Frame::Credit(credit) => self.on_credit(conn, credit),
            Frame::ConnCredit(cc) => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                // A receiver's grant is what it took plus the window it announced.
                // A relay at the far end of a link grants from its own budget.
                let window = match c.link {
                    Some(_) => None,
                    None => Some(c.session.peer().map_or(0, |h| h.conn_window)),
                };
                match c.session.send.raise(cc.max_data, window) {
                    Ok(true) => self.unblock(conn),
                    Ok(false) => {}
                    Err(violation) => self.violation(conn, violation),
                }
            }
            Frame::Result(result) => self.on_result(conn, result),
            Frame::KeyQuery(query) => self.key_query(conn, query.user),
            Frame::Key(_) => self.violation(conn, Violation::UnexpectedFrame),
        }
    }

    /// Drops the frames waiting to be written to `conn`, whose transport will take no
    /// more: each payload's bytes leave its sender's account.
    pub(super) fn drop_output(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        for (owner, len) in c.out.clear() {
            self.bytes_left(owner, len, true);
        }
    }

    /// `len` message bytes arrived from sender `conn`: within the connection credit the
    /// relay granted, or `conn` is closed (`false`).
    pub(super) fn count_received(&mut self, conn: ConnId, len: u64) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if let Err(violation) = c.session.recv.count(len) {
            self.violation(conn, violation);
            return false;
        }
        true
    }

    /// Drops a connection's state and its timers.
    pub(super) fn forget(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            self.timers.remove(&(c.idle_at, Timer::Idle(conn)));
            if let Some(at) = c.progress_at {
                self.timers.remove(&(at, Timer::Progress(conn)));
            }
            let login_at = c.opened + self.config.login_timeout;
            self.timers.remove(&(login_at, Timer::Login(conn)));
        }
    }

    /// `conn` broke the protocol: it is told why and closed.
    pub(super) fn violation(&mut self, conn: ConnId, violation: Violation) {
        self.shut(
            conn,
            violation.code(),
            CloseReason::Violation(violation),
            true,
        );
    }

    /// Ends a connection: its messages end on the other side (`CANCEL` to receivers,
    /// `RESULT(CONNECTIONLOST)` to senders, waiting ones included), its user is logged
    /// out, `Closed` is reported.
    pub(super) fn shut(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        reason: CloseReason,
        send_close: bool,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if send_close && !c.session.is_closed() {
            let close = Close {
                code,
                reason: reason.wire_text(),
            };
            c.out.push(Frame::Close(close), None);
        }
        let was_logged_in = c.session.is_logged_in();
        // A link that never came up ends its messages with why (`OFFLINE`, say).
        let lost = match &c.link {
            Some(_) if !was_logged_in => code,
            _ => ErrorCode::CONNECTIONLOST,
        };
        if !c.session.close() {
            return;
        }
        let link = c.link.clone();
        if was_logged_in && link.is_none() {
            self.logged_in = self.logged_in.saturating_sub(1);
        }
        // Credit it never used is no longer promised; what it has in the relay is
        // released as it leaves.
        let unused = c
            .session
            .recv
            .granted()
            .saturating_sub(c.session.recv.received());
        self.promised.take(c.is_link(LinkSide::Incoming), unused);
        let user = c.session.user().cloned();
        let inbound: Vec<RouteKey> = c.inbound.drain().collect();
        let mut outbound: Vec<RouteKey> = c.outbound.drain().collect();
        outbound.extend(c.waiting_cmds.drain());
        outbound.extend(c.waiting_transfers.drain());
        c.blocked.clear();
        let nothing_to_write = c.out.is_empty();
        for key in inbound {
            self.end_route_telling(key, Tell::Receiver(ErrorCode::CONNECTIONLOST));
        }
        for key in outbound {
            self.end_route_telling(key, Tell::Sender(lost));
        }
        match (&link, &user) {
            (Some(link), _) => self.link_closed(conn, link),
            (None, Some(u)) if self.users.get(u) == Some(&conn) => {
                self.users.remove(u);
                self.user_left(u);
            }
            _ => {}
        }
        if nothing_to_write {
            self.forget(conn);
        } else {
            self.list_writable(conn);
        }
        self.events.push_back(RelayEvent::Closed {
            conn,
            user,
            code,
            reason,
        });
    }
}

/// If `frame` is longer than `max_frame_size`, shortens it to fit and returns a frame
/// with the rest of its payload.
fn split_to_fit(frame: &mut Frame, max_frame_size: u64) -> Option<Frame> {
    let peer = match frame {
        Frame::Cmd(c) => Some(&c.peer),
        _ => None,
    };
    let room = wire::payload_room(max_frame_size, peer).max(1);
    split_payload(frame, usize::try_from(room).unwrap_or(usize::MAX))
}

/// If `frame` carries more than `n` (at least 1) payload bytes, keeps the first `n` and
/// returns a frame with the rest (a `DATA` continues as `DATA`, a command as `CMD_CONT`).
pub(super) fn split_payload(frame: &mut Frame, n: usize) -> Option<Frame> {
    let n = n.max(1);
    match frame {
        Frame::Data(d) if d.payload.len() > n => {
            let payload = d.payload.split_off(n);
            let offset = d.offset + n as u64;
            Some(Frame::Data(Data {
                id: d.id,
                offset,
                payload,
            }))
        }
        Frame::CmdCont(c) if c.data.len() > n => {
            let data = c.data.split_off(n);
            let offset = c.offset + n as u64;
            Some(Frame::CmdCont(CmdCont {
                id: c.id,
                offset,
                data,
            }))
        }
        Frame::Cmd(c) if c.data.len() > n => {
            let data = c.data.split_off(n);
            Some(Frame::CmdCont(CmdCont {
                id: c.id,
                offset: n as u64,
                data,
            }))
        }
        _ => None,
    }
}
