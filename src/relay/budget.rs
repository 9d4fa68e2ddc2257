//! What the relay holds, bounded: every byte a sender may have in the relay is promised
//! from `max_held_bytes` (`grant`), and comes back when it is written toward its receiver
//! or dropped (`bytes_left`: the one place held bytes go down). Grants the budget cannot
//! pay now are owed, oldest first (`pay_owed`). Incoming links (`link.rs`) are paid from
//! a budget of their own as well, `max_link_bytes`, so the relays of a cluster can have
//! only so much in flight toward this one.

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
        // Only incoming links send payload of all links (and their ids keep the link bit
        // after they are gone, while their last bytes leave).
        self.promised.take(conn.is_link(), len);
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
        let mut room = self
            .config
            .max_held_bytes
            .saturating_sub(self.promised.all());
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // An outgoing link sends no messages: it needs no credit.
        if c.session.is_closed() || !c.session.is_logged_in() || c.is_link(LinkSide::Outgoing) {
            return;
        }
        let link = c.is_link(LinkSide::Incoming);
        if link {
            room = room.min(
                self.config
                    .max_link_bytes
                    .saturating_sub(self.promised.links()),
            );
        }
        let before = c.session.recv.granted();
        let grant = c.session.recv.grant(room, INITIAL_CONN_CREDIT);
        if grant.short && !c.owed {
            c.owed = true;
            match link {
                true => self.owed_links.push_back(conn),
                false => self.owed.push_back(conn),
            }
        }
        if let Some(max_data) = grant.max_data {
            self.promised.add(link, max_data - before);
            self.push(conn, Frame::ConnCredit(ConnCredit { max_data }));
        }
    }

    /// Pays grants the budgets held back, oldest first, while there is room for a step
    /// (links: in both budgets).
    pub(super) fn pay_owed(&mut self) {
        let step = wire::credit_step(self.config.conn_window);
        let room = |relay: &Self| {
            relay
                .config
                .max_held_bytes
                .saturating_sub(relay.promised.all())
        };
        let link_room = |relay: &Self| {
            relay
                .config
                .max_link_bytes
                .saturating_sub(relay.promised.links())
        };
        while room(self) >= step {
            let Some(conn) = self.owed.pop_front() else {
                break;
            };
            self.pay(conn);
        }
        while room(self) >= step && link_room(self) >= step {
            let Some(conn) = self.owed_links.pop_front() else {
                break;
            };
            self.pay(conn);
        }
    }

    fn pay(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.owed = false;
            self.grant(conn);
        }
    }
}

/// Connection credit granted to senders and not yet released, in all and to incoming
/// links from other relays. The one place either count changes.
#[derive(Debug, Default)]
pub(super) struct Promised {
    all: u64,
    links: u64,
}

impl Promised {
    /// `len` more granted to a sender (`link`: an incoming link).
    pub(super) fn add(&mut self, link: bool, len: u64) {
        self.all += len;
        if link {
            self.links += len;
        }
    }

    /// `len` of what a sender was granted (`link`: an incoming link) is no longer
    /// promised: it arrived and left, or was never used.
    pub(super) fn take(&mut self, link: bool, len: u64) {
        debug_assert!(self.all >= len, "more left than was promised");
        self.all = self.all.saturating_sub(len);
        if link {
            self.links = self.links.saturating_sub(len);
        }
    }

    pub(super) fn all(&self) -> u64 {
        self.all
    }

    pub(super) fn links(&self) -> u64 {
        self.links
    }
}
