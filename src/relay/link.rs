//! Links between the relays of a cluster (docs/CLUSTER.md). A user on another relay is
//! reached through a link: a connection like any other, whose bytes the runtime carries to
//! the other relay, so every rule of routing, credit, caps and ends applies across relays
//! as it does within one, written once.
//!
//! - At the sender's relay, an **outgoing** link stands for one remote user: messages to
//!   that user are routed to it as to the user's own connection (its `RESULT`, `CREDIT`,
//!   `CONN_CREDIT` and `RESUME_FROM` come back as a receiver's would). It is made here
//!   when a message names a user who is not logged in on this relay
//!   ([`RelayConfig::cluster`]); the runtime finds the user's relay and carries its bytes,
//!   or reports that nobody has the user ([`Relay::link_failed`] with `OFFLINE`). It
//!   counts against the sending user whose message opened it, who may have
//!   [`RelayConfig::max_links_per_sender`] open: each holds one of the other relay's
//!   [`RelayConfig::max_links`].
//! - At the receiver's relay, an **incoming** link is a sender on behalf of the other
//!   relay's users, toward one local user ([`Relay::accept_link`]). The source of each
//!   message is the one the sender's relay stamped; the destination is the link's user.
//!   It gets connection credit from its own budget ([`RelayConfig::max_link_bytes`]), so
//!   what all other relays may send this one is bounded.
//!
//! A link ends like any connection (`handle_disconnect`, a `CLOSE`): its messages end on
//! the other side with `CONNECTIONLOST`. An incoming link closes when its user leaves
//! this relay, so the other relay looks for the user again.

use super::*;

/// The bit set in every [`ConnId`] the relay gives a link; the runtime names its own
/// connections with ids below it.
pub const LINK_BIT: u64 = 1 << 63;

/// Most identity keys one connection may have looked up on other relays at once.
pub(super) const KEY_LOOKUPS: usize = 8;

/// Which way a link's messages go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkSide {
    /// Toward a user on another relay: this relay's senders' messages go out on it.
    Outgoing,
    /// From another relay's users toward a user here.
    Incoming,
}

/// A link's state in its connection.
#[derive(Clone, Debug)]
pub(super) struct Link {
    pub(super) side: LinkSide,
    /// The user its messages go to (on the other relay for an outgoing link, here for an
    /// incoming one).
    pub(super) user: UserId,
    /// For an outgoing link, the sending user whose message opened it: it counts against
    /// that user's [`RelayConfig::max_links_per_sender`] until it closes.
    pub(super) opener: Option<UserId>,
}

impl Relay {
    /// A new link's connection, greeted with this relay's `HELLO`.
    fn open_link_conn(&mut self, side: LinkSide, user: UserId, opener: Option<UserId>) -> ConnId {
        let conn = ConnId(LINK_BIT | self.next_link);
        self.next_link += 1;
        let now = self.now;
        let window = self.config.conn_window.max(self.config.link_window);
        let recv = RecvWindow::new(window, 0);
        // Limits were validated when the relay was made.
        let Ok(session) = Session::new(self.config.limits, recv, now) else {
            return conn;
        };
        let mut state = Conn::new(session, now, self.config.idle_timeout);
        state.link = Some(Link {
            side,
            user: user.clone(),
            opener: opener.clone(),
        });
        // A link with nothing on it closes after the idle timeout (twice that for an
        // incoming one: its sender's relay closes first, see `handle_timeout`).
        let idle = match side {
            LinkSide::Outgoing => self.config.idle_timeout,
            LinkSide::Incoming => self.config.idle_timeout.saturating_mul(2),
        };
        state.idle_at = now + idle;
        self.conns.insert(conn, state);
        self.timers.insert((now + idle, Timer::Idle(conn)));
        match side {
            LinkSide::Outgoing => {
                self.remote.insert(user, conn);
                if let Some(opener) = opener {
                    self.links_opened.entry(opener).or_default().insert(conn);
                }
            }
            LinkSide::Incoming => {
                self.links_in.entry(user).or_default().insert(conn);
                self.incoming_links += 1;
            }
        }
        let hello = self.hello_with(self.config.link_window);
        self.push(conn, Frame::Hello(hello));
        conn
    }

    /// The outgoing link to `user` for a message of `sender`'s, made if there is none;
    /// `None` if `sender` has [`RelayConfig::max_links_per_sender`] links open with a
    /// message on each.
    pub(super) fn outgoing_link(&mut self, user: &UserId, sender: &UserId) -> Option<ConnId> {
        match self.remote.get(user) {
            Some(conn) if self.conns.get(conn).is_some_and(|c| !c.session.is_closed()) => {
                Some(*conn)
            }
            _ => {
                if !self.room_for_link(sender) {
                    return None;
                }
                let opener = Some(sender.clone());
                Some(self.open_link_conn(LinkSide::Outgoing, user.clone(), opener))
            }
        }
    }

    /// Whether `sender` may open one more outgoing link: under its bound, after closing
    /// its links with no message on them if it is at it. (Each outgoing link holds one of
    /// the other relay's `max_links`: a user who writes once to many users elsewhere must
    /// not keep them all.)
    fn room_for_link(&mut self, sender: &UserId) -> bool {
        let cap = self.config.max_links_per_sender;
        let Some(opened) = self.links_opened.get(sender) else {
            return cap > 0;
        };
        if opened.len() < cap {
            return true;
        }
        let idle: Vec<ConnId> = opened
            .iter()
            .copied()
            .filter(|conn| self.conns.get(conn).is_some_and(|c| !c.has_messages()))
            .collect();
        for conn in idle {
            self.shut(
                conn,
                ErrorCode::SOCKETTIMEOUT,
                CloseReason::IdleTimeout,
                true,
            );
        }
        self.links_opened.get(sender).map_or(0, BTreeSet::len) < cap
    }

    /// Another relay opens a link toward `user`, logged in here: the connection the
    /// runtime hands that relay's bytes to. Refused if `user` has no session here
    /// ([`RelayError::Offline`]) or [`RelayConfig::max_links`] incoming links are open
    /// with a message on each ([`RelayError::Links`]): at the bound, the incoming link
    /// with no message on it heard from least recently is closed to make room, so idle
    /// links never keep a busy one out.
    pub fn accept_link(&mut self, now: Instant, user: &UserId) -> Result<ConnId, RelayError> {
        self.tick(now);
        if !self.config.cluster || !self.users.contains_key(user) {
            return Err(RelayError::Offline);
        }
        if self.incoming_links >= self.config.max_links && !self.close_idle_incoming_link() {
            return Err(RelayError::Links);
        }
        Ok(self.open_link_conn(LinkSide::Incoming, user.clone(), None))
    }

    /// Closes the incoming link with no message on it heard from least recently (its
    /// other end closes with it); false if every incoming link has a message on it.
    fn close_idle_incoming_link(&mut self) -> bool {
        let idlest = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.is_link(LinkSide::Incoming) && !c.session.is_closed() && !c.has_messages()
            })
            .min_by_key(|(_, c)| c.session.last_heard())
            .map(|(conn, _)| *conn);
        let Some(conn) = idlest else {
            return false;
        };
        self.shut(
            conn,
            ErrorCode::SOCKETTIMEOUT,
            CloseReason::IdleTimeout,
            true,
        );
        true
    }

    /// The connection whose session takes `user`'s messages on this relay, if any.
    pub fn user_session(&self, user: &UserId) -> Option<ConnId> {
        self.users.get(user).copied()
    }

    /// The identity key `user`'s session here announced in its `HELLO`, if the user is
    /// logged in here and seals. The relay keeps no other key (docs/PROTOCOL.md, "Sealed
    /// messages"); a relay of a cluster answers the others' [`RelayEvent::KeyWanted`]
    /// lookups with it.
    pub fn user_key(&self, user: &UserId) -> Option<wire::IdentityKey> {
        self.users
            .get(user)
            .and_then(|user| self.conns.get(user))
            .and_then(|user| user.session.peer())
            .filter(|h| h.capabilities.contains(wire::Capabilities::SEALED))
            .and_then(|h| h.identity)
    }

    /// `conn` asked for `user`'s key (`KEY_QUERY`): answered from the user's session here;
    /// in a cluster, a user not logged in here is looked up on the other relays
    /// ([`RelayEvent::KeyWanted`]), [`KEY_LOOKUPS`] at once per connection at most (past
    /// them, and for a link, the answer is "no key" at once: the client may ask again).
    pub(super) fn key_query(&mut self, conn: ConnId, user: UserId) {
        let elsewhere = self.config.cluster && !self.users.contains_key(&user);
        if let Some(c) = self
            .conns
            .get_mut(&conn)
            .filter(|c| elsewhere && c.link.is_none() && c.key_lookups.len() < KEY_LOOKUPS)
        {
            c.key_lookups.push(user.clone());
            self.events.push_back(RelayEvent::KeyWanted { conn, user });
            return;
        }
        let key = self.user_key(&user);
        self.push(conn, Frame::Key(wire::Key { user, key }));
    }

    /// The answer to a [`RelayEvent::KeyWanted`]: `user`'s key as the relay the user is
    /// on announced it, or `None` (no relay has the user, it announced no key, or the
    /// cluster could not be asked). Ignored if `conn` did not ask or is gone.
    pub fn answer_key(&mut self, conn: ConnId, user: UserId, key: Option<wire::IdentityKey>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(at) = c.key_lookups.iter().position(|u| *u == user) else {
            return;
        };
        c.key_lookups.swap_remove(at);
        self.push(conn, Frame::Key(wire::Key { user, key }));
    }

    /// What `conn` is if it is a link still open: its side and its user. (A closed link's
    /// last frames may still be given by `poll_output`; they go nowhere.)
    pub fn link(&self, conn: ConnId) -> Option<(LinkSide, &UserId)> {
        let c = self.conns.get(&conn).filter(|c| !c.session.is_closed())?;
        let link = c.link.as_ref()?;
        Some((link.side, &link.user))
    }

    /// An outgoing link could not be made: nobody has its user (`OFFLINE`), or the other
    /// relays could not be asked (`CONNECTIONLOST`). Its messages end with `code`.
    pub fn link_failed(&mut self, conn: ConnId, code: ErrorCode) {
        if self.conns.get(&conn).is_some_and(|c| c.link.is_some()) {
            self.shut(conn, code, CloseReason::TransportLost, false);
        }
    }

    /// A newer login of `user` elsewhere in the cluster: its session here is closed with
    /// `KICKOUT_BY_RELOGIN`, and its incoming links with it.
    pub fn kick_user(&mut self, user: &UserId) {
        if let Some(conn) = self.users.get(user).copied() {
            self.shut(
                conn,
                ErrorCode::KICKOUT_BY_RELOGIN,
                CloseReason::Replaced,
                true,
            );
        }
    }

    /// A link's `HELLO` came: the link speaks for its user from now on. Messages waiting
    /// for an outgoing link move on; an incoming link gets its connection credit.
    pub(super) fn link_greeted(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(link) = c.link.clone() else {
            return;
        };
        if !c.session.link_up(link.user) {
            return;
        }
        match link.side {
            LinkSide::Outgoing => self.admit(conn),
            LinkSide::Incoming => {
                c.session.recv.set_granted(INITIAL_CONN_CREDIT);
                self.promised.add(true, INITIAL_CONN_CREDIT);
                self.grant(conn);
            }
        }
    }

    /// `user`'s session here is gone: the links other relays opened toward it close, so
    /// they look for the user again.
    pub(super) fn user_left(&mut self, user: &UserId) {
        if self.config.cluster {
            self.events
                .push_back(RelayEvent::UserOffline { user: user.clone() });
        }
        let Some(links) = self.links_in.remove(user) else {
            return;
        };
        for link in links {
            self.shut(link, ErrorCode::OFFLINE, CloseReason::Local, true);
        }
    }

    /// A link's connection is over: it no longer stands for its user.
    pub(super) fn link_closed(&mut self, conn: ConnId, link: &Link) {
        match link.side {
            LinkSide::Outgoing => {
                if self.remote.get(&link.user) == Some(&conn) {
                    self.remote.remove(&link.user);
                }
                if let Some(opener) = &link.opener {
                    if let Some(set) = self.links_opened.get_mut(opener) {
                        set.remove(&conn);
                        if set.is_empty() {
                            self.links_opened.remove(opener);
                        }
                    }
                }
            }
            LinkSide::Incoming => {
                self.incoming_links = self.incoming_links.saturating_sub(1);
                if let Some(set) = self.links_in.get_mut(&link.user) {
                    set.remove(&conn);
                    if set.is_empty() {
                        self.links_in.remove(&link.user);
                    }
                }
            }
        }
    }
}
