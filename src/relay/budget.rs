//! What the relay holds, bounded: every byte a sender may have in the relay is promised
//! from `max_held_bytes` (`grant`), and comes back when it is written toward its receiver
//! or dropped (`bytes_left`: the one place held bytes go down). Grants the budget cannot
//! pay now are owed, oldest first (`pay_owed`).

use super::*;

impl Relay {
    /// `len` message bytes from sender `conn` left the relay (`held`: they had been stored
    /// in it; else dropped on arrival): they are no longer held or promised, and the
    /// sender is granted more as the window and the budget allow. The one place where
    /// what the relay holds goes down.
    pub(super) fn bytes_left(&mut self, conn: ConnId, len: u64, held: bool) {
        if held {
            debug_assert!(self.held >= len, "more left than was held");
            self.held = self.held.saturating_sub(len);
        }
        debug_assert!(self.promised >= len, "more left than was promised");
        self.promised = self.promised.saturating_sub(len);
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.session.is_closed() {
                c.session.recv.release(len);
                self.grant(conn);
            }
        }
        self.pay_owed();
    }

    /// Grants `conn` connection credit up to what it released plus the window, when that
    /// is a step more than it has. Past the budget it gets less, but never less than
    /// [`INITIAL_CONN_CREDIT`] beyond what it released, so every sender can always go on;
    /// what it did not get is owed.
    pub(super) fn grant(&mut self, conn: ConnId) {
        let room = self.config.max_held_bytes.saturating_sub(self.promised);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.session.is_closed() || !c.session.is_logged_in() {
            return;
        }
        let before = c.session.recv.granted();
        let grant = c.session.recv.grant(room, INITIAL_CONN_CREDIT);
        if grant.short && !c.owed {
            c.owed = true;
            self.owed.push_back(conn);
        }
        if let Some(max_data) = grant.max_data {
            self.promised += max_data - before;
            self.push(conn, Frame::ConnCredit(ConnCredit { max_data }));
        }
    }

    /// Pays grants the budget held back, oldest first, while there is room for a step.
    pub(super) fn pay_owed(&mut self) {
        let step = wire::credit_step(self.config.conn_window);
        while self.config.max_held_bytes.saturating_sub(self.promised) >= step {
            let Some(conn) = self.owed.pop_front() else {
                return;
            };
            if let Some(c) = self.conns.get_mut(&conn) {
                c.owed = false;
                self.grant(conn);
            }
        }
    }
}
