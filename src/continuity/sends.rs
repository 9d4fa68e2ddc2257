//! A user's sends across connections: the ids the application knows them by (the same on
//! every connection), what sends each again, which wait for a connection or their
//! receiver, and when a waiting send is given up. Every rule about re-sending is here.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use bytes::Bytes;

use crate::client::{Client, SendId, SendKind};
use crate::evict::remove_oldest;
use crate::wire::{CmdOnce, ResumeKey};
use crate::{ErrorCode, Instant, SendError};

/// How a send is started again on a new connection: a command with its identity (its
/// receiver delivers it once), a buffer or a file under its resume key (it goes on from
/// what its receiver holds).
#[derive(Clone, Debug)]
pub(crate) enum Resend {
    Cmd {
        to: String,
        data: Bytes,
        once: CmdOnce,
    },
    Buffer {
        to: String,
        data: Bytes,
        key: ResumeKey,
    },
    File {
        to: String,
        name: String,
        size: u64,
        key: ResumeKey,
    },
}

impl Resend {
    fn to(&self) -> &str {
        match self {
            Resend::Cmd { to, .. } | Resend::Buffer { to, .. } | Resend::File { to, .. } => to,
        }
    }

    /// Starts it on `client` (`again`: a command goes as sent again).
    pub(crate) fn start(
        &self,
        client: &mut Client,
        now: Instant,
        cookie: u64,
        again: bool,
    ) -> Result<SendId, SendError> {
        match self.clone() {
            Resend::Cmd { to, data, once } => {
                let once = CmdOnce {
                    resent: again,
                    ..once
                };
                client.send_cmd_once(now, &to, data, once, cookie)
            }
            Resend::Buffer { to, data, key } => {
                client.send_buffer_resumable(now, &to, data, key, cookie)
            }
            Resend::File {
                to,
                name,
                size,
                key,
            } => client.send_file_resumable(now, &to, &name, size, key, cookie),
        }
    }
}

/// A send as the application made it: its kind and cookie, and the id it was already
/// given if it waited before starting (for its receiver's key).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Made {
    pub(crate) id: Option<SendId>,
    pub(crate) kind: SendKind,
    pub(crate) cookie: u64,
}

/// One send the application knows of, until its result.
#[derive(Debug)]
struct Tracked {
    kind: SendKind,
    cookie: u64,
    /// What sends it again; `None`: it ends with its connection.
    resend: Option<Resend>,
    /// Its id on the current connection, while it is there.
    on_conn: Option<SendId>,
    /// When it was first cut off, and why it waits now, while it waits.
    lost: Option<Instant>,
    waits: Option<ErrorCode>,
}

/// A send that came to an end here (given up, refused again, cancelled while waiting).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ended {
    pub(crate) id: SendId,
    pub(crate) kind: SendKind,
    pub(crate) code: ErrorCode,
    pub(crate) cookie: u64,
}

/// What became of a send whose connection gave its result.
pub(crate) enum Outcome {
    /// Its result: the application hears it.
    Result(SendId),
    /// It waits to go on: since when (its first loss) and why.
    Waits(SendId, Instant, ErrorCode),
    /// Not one of ours (ended meanwhile).
    Unknown,
}

/// The sends of one user, across connections.
#[derive(Debug)]
pub(crate) struct Sends {
    /// Sends go on after a lost connection (a user with a policy). Without, a user has
    /// one connection, and its sends are known by their ids on it: nothing is tracked.
    tracking: bool,
    next: u64,
    tracked: BTreeMap<SendId, Tracked>,
    /// The current connection's send ids, to ours.
    on_conn: BTreeMap<SendId, SendId>,
    /// Sends waiting, in the order they were made (commands keep their order).
    waiting: VecDeque<SendId>,
    /// When waiting sends are next tried on a live connection (their receiver was lost).
    retry_at: Option<Instant>,
    /// Random bytes of this user's, from which its streams and keys are made.
    base: [u8; 16],
    /// A stream of command identities per receiver: its bytes, its last number, and when
    /// it was last used (a count of commands); at most [`Sends::RECEIVERS`].
    streams: BTreeMap<String, ([u8; 16], u64, u64)>,
    /// Streams and buffer keys made.
    made: u64,
    /// Per receiver, the command sent again alone, first of those that waited for it: the
    /// others follow once it is delivered, so none can pass it while the receiver is
    /// still away.
    probes: BTreeMap<String, SendId>,
    /// A probe was delivered: the commands behind it may go now.
    released: bool,
}

impl Sends {
    pub(crate) fn new(stream: [u8; 16], tracking: bool) -> Self {
        Sends {
            tracking,
            next: 0,
            tracked: BTreeMap::new(),
            on_conn: BTreeMap::new(),
            waiting: VecDeque::new(),
            retry_at: None,
            base: stream,
            streams: BTreeMap::new(),
            made: 0,
            probes: BTreeMap::new(),
            released: false,
        }
    }

    /// Receivers whose streams are kept at most; past it, the one used least recently
    /// goes, and a command to it later starts a new stream.
    pub(crate) const RECEIVERS: usize = 4096;

    /// Sixteen bytes of this user's own, never made before: `tag` tells streams from keys.
    fn fresh(&mut self, tag: u8) -> [u8; 16] {
        self.made += 1;
        let mut bytes = self.base;
        bytes[0] ^= tag;
        for (b, c) in bytes[8..].iter_mut().zip(self.made.to_le_bytes()) {
            *b ^= c;
        }
        bytes
    }

    /// The next command identity to `to`: each receiver's commands are numbered 1, 2, 3 …
    /// in a stream of their own, so a receiver's record of what it delivered is dense.
    pub(crate) fn next_once(&mut self, to: &str) -> CmdOnce {
        if !self.streams.contains_key(to) && self.streams.len() >= Self::RECEIVERS {
            remove_oldest(&mut self.streams, |s| s.2);
        }
        let fresh = match self.streams.contains_key(to) {
            true => None,
            false => Some(self.fresh(0x40)),
        };
        self.made += 1;
        let used = self.made;
        let stream = self
            .streams
            .entry(to.into())
            .or_insert((fresh.unwrap_or_default(), 0, 0));
        stream.1 += 1;
        stream.2 = used;
        CmdOnce {
            stream: stream.0,
            seq: stream.1,
            resent: false,
        }
    }

    /// A resume key of this user's own for a buffer.
    pub(crate) fn next_key(&mut self) -> ResumeKey {
        ResumeKey(self.fresh(0x80))
    }

    /// Starts a send: on `client` now, or, while `queue` (no live connection, or a
    /// command behind others to the same receiver that wait), waiting for its turn.
    pub(crate) fn start(
        &mut self,
        now: Instant,
        made: Made,
        resend: Option<Resend>,
        connected: bool,
        start: impl FnOnce() -> Result<SendId, SendError>,
    ) -> Result<(SendId, Option<ErrorCode>), SendError> {
        // A command may not pass one to the same receiver that waits: it would be
        // delivered first, and the waiting one then taken for a repeat.
        let behind = match &resend {
            Some(Resend::Cmd { to, .. }) if self.probes.contains_key(to) => true,
            Some(r @ Resend::Cmd { .. }) => self.waiting.iter().any(|w| {
                self.tracked
                    .get(w)
                    .and_then(|t| t.resend.as_ref())
                    .is_some_and(|o| matches!(o, Resend::Cmd { .. }) && o.to() == r.to())
            }),
            _ => false,
        };
        if !self.tracking {
            return Ok((start()?, None));
        }
        let queue = resend.is_some() && (!connected || behind);
        let on_conn = match queue {
            true => None,
            false => Some(start()?),
        };
        let Made { id, kind, cookie } = made;
        let id = id.unwrap_or_else(|| self.reserve());
        let waits = queue.then_some(ErrorCode::CONNECTIONLOST);
        if let Some(c) = on_conn {
            self.on_conn.insert(c, id);
        }
        self.tracked.insert(
            id,
            Tracked {
                kind,
                cookie,
                resend,
                on_conn,
                lost: queue.then_some(now),
                waits,
            },
        );
        if queue {
            self.waiting.push_back(id);
        }
        Ok((id, waits))
    }

    /// A new id of ours, for a send that starts later (it waits for its receiver's key).
    pub(crate) fn reserve(&mut self) -> SendId {
        let id = SendId(self.next);
        self.next += 1;
        id
    }

    /// Sends are known by ids of ours from now on, even without re-sending (sealed sends
    /// wait for keys under them). Before any send.
    pub(crate) fn track(&mut self) {
        self.tracking = true;
    }

    /// Our id of the current connection's send `id`.
    pub(crate) fn ours(&self, id: SendId) -> Option<SendId> {
        match self.tracking {
            true => self.on_conn.get(&id).copied(),
            false => Some(id),
        }
    }

    /// What our send `id` is, while it is tracked.
    pub(crate) fn kind(&self, id: SendId) -> Option<SendKind> {
        self.tracked.get(&id).map(|t| t.kind)
    }

    /// The bytes of our buffer send `id` as it is sent again (sealed, if sealing is on).
    pub(crate) fn buffer_len(&self, id: SendId) -> Option<u64> {
        match &self.tracked.get(&id)?.resend {
            Some(Resend::Buffer { data, .. }) => Some(data.len() as u64),
            _ => None,
        }
    }

    /// The current connection's id of our send `id`, while it is there.
    pub(crate) fn on_conn(&self, id: SendId) -> Option<SendId> {
        match self.tracking {
            true => self.tracked.get(&id).and_then(|t| t.on_conn),
            false => Some(id),
        }
    }

    /// The connection's send `id` ended with `code`. A send with a way to go again that
    /// was cut off waits (`may_wait`: the client will be back), else it ends.
    pub(crate) fn result(
        &mut self,
        now: Instant,
        id: SendId,
        code: ErrorCode,
        may_wait: bool,
    ) -> Outcome {
        if !self.tracking {
            return Outcome::Result(id);
        }
        let Some(ours) = self.on_conn.remove(&id) else {
            return Outcome::Unknown;
        };
        let Some(t) = self.tracked.get_mut(&ours) else {
            return Outcome::Unknown;
        };
        t.on_conn = None;
        let waits = may_wait && t.resend.is_some() && cut_off(code, t.lost.is_some());
        if let Some(Resend::Cmd { to, .. }) = &t.resend {
            if self.probes.get(to) == Some(&ours) {
                // Delivered (or ended otherwise): the commands behind it go.
                self.probes.remove(to);
                self.released |= !waits;
            }
        }
        if waits {
            let since = *t.lost.get_or_insert(now);
            t.waits = Some(code);
            // In the order they were made, whatever order their results came in.
            let at = self
                .waiting
                .iter()
                .position(|w| *w > ours)
                .unwrap_or(self.waiting.len());
            self.waiting.insert(at, ours);
            return Outcome::Waits(ours, since, code);
        }
        self.tracked.remove(&ours);
        Outcome::Result(ours)
    }

    /// Sends waiting, tried again later on this connection.
    pub(crate) fn retry_later(&mut self, at: Instant) {
        if !self.waiting.is_empty() {
            self.retry_at.get_or_insert(at);
        }
    }

    /// When waiting sends are next tried on a live connection.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at.filter(|_| !self.waiting.is_empty())
    }

    /// The waiting sends start again on `client`, in the order they were made; those it
    /// refuses end.
    pub(crate) fn resubmit(&mut self, client: &mut Client, now: Instant) -> Vec<Ended> {
        self.retry_at = None;
        self.released = false;
        let mut ended = Vec::new();
        for ours in core::mem::take(&mut self.waiting) {
            let Some(t) = self.tracked.get_mut(&ours) else {
                continue;
            };
            let Some(resend) = &t.resend else {
                continue;
            };
            // One command per receiver goes first, alone; the rest wait for it.
            if let Resend::Cmd { to, .. } = resend {
                if self.probes.contains_key(to) {
                    self.waiting.push_back(ours);
                    continue;
                }
                self.probes.insert(to.clone(), ours);
            }
            match resend.start(client, now, t.cookie, true) {
                Ok(c) => {
                    t.on_conn = Some(c);
                    t.waits = None;
                    self.on_conn.insert(c, ours);
                }
                Err(error) => {
                    if let Resend::Cmd { to, .. } = resend {
                        self.probes.remove(to);
                    }
                    let (kind, cookie) = (t.kind, t.cookie);
                    self.tracked.remove(&ours);
                    ended.push(Ended {
                        id: ours,
                        kind,
                        code: error.code(),
                        cookie,
                    });
                }
            }
        }
        ended
    }

    /// A command sent alone ahead of others was delivered: those behind it may go
    /// (once). The caller re-sends the waiting ones at once.
    pub(crate) fn take_released(&mut self) -> bool {
        core::mem::take(&mut self.released)
    }

    /// Waiting sends first lost `window` or longer before `now` (every one, for `None`)
    /// are given up: they end with `CONNECTIONLOST`.
    pub(crate) fn give_up(&mut self, now: Instant, window: Option<Duration>) -> Vec<Ended> {
        let mut ended = Vec::new();
        let tracked = &mut self.tracked;
        self.waiting.retain(|ours| {
            let due = match (window, tracked.get(ours).and_then(|t| t.lost)) {
                (Some(window), Some(lost)) => now >= lost + window,
                _ => true,
            };
            if due {
                if let Some(t) = tracked.remove(ours) {
                    ended.push(Ended {
                        id: *ours,
                        kind: t.kind,
                        code: ErrorCode::CONNECTIONLOST,
                        cookie: t.cookie,
                    });
                }
            }
            !due
        });
        ended
    }

    /// The earliest time a waiting send is given up, with `window`.
    pub(crate) fn next_give_up(&self, window: Duration) -> Option<Instant> {
        self.waiting
            .iter()
            .filter_map(|w| self.tracked.get(w).and_then(|t| t.lost))
            .min()
            .map(|lost| lost + window)
    }

    /// Takes waiting send `id` out (cancelled): `None` if it does not wait.
    pub(crate) fn cancel_waiting(&mut self, id: SendId) -> Option<Ended> {
        let at = self.waiting.iter().position(|w| *w == id)?;
        self.waiting.remove(at);
        let t = self.tracked.remove(&id)?;
        Some(Ended {
            id,
            kind: t.kind,
            code: ErrorCode::CANCELLED,
            cookie: t.cookie,
        })
    }

    /// Sends on the connection that was lost are no longer on any.
    pub(crate) fn connection_over(&mut self) {
        self.on_conn.clear();
        self.probes.clear();
        for t in self.tracked.values_mut() {
            t.on_conn = None;
        }
    }

    /// Sends that wait.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

/// A send whose result says this was cut off, and may go on: its connection, or its
/// receiver's, was lost (`CONNECTIONLOST`), or, tried again after such a loss, its
/// receiver is not back yet (`OFFLINE`). A send's own deadline (`SOCKETTIMEOUT` with
/// [`ClientConfig::send_timeout`](crate::client::ClientConfig::send_timeout)) is its end.
fn cut_off(code: ErrorCode, lost_before: bool) -> bool {
    code == ErrorCode::CONNECTIONLOST || code == ErrorCode::OFFLINE && lost_before
}
