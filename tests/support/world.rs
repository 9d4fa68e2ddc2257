//! Users across connections: each a [`Continuity`] that dials a relay again when its
//! connection is lost, on the [`Sim`] loop's virtual clock. The test cuts a user's
//! connection, restarts the relay or keeps it down; the continuity layer decides the rest
//! (what is sent again, when to dial, when to give up). Each user's application keeps
//! files in a [`FileStore`] and answers file reads from its sources.

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};
use peermsg::client::{ClientConfig, Event, Output, SendId};
use peermsg::continuity::{Continuity, Policy};
use peermsg::relay::{ConnId, Relay, RelayConfig, RelayEvent, RelayOutput};
use peermsg::wire::{Decoder, Frame, Limits};
use peermsg::Instant;

use super::{FileStore, Rng, Sim};

/// One user: its continuity, its relay connection's bytes, and its application.
pub struct User {
    pub name: String,
    pub cont: Continuity,
    /// The relay connection, while the transport lives.
    conn: Option<ConnId>,
    to_relay: VecDeque<Bytes>,
    from_relay: VecDeque<Bytes>,
    /// Every event, in order.
    pub events: Vec<Event>,
    /// Sources of this user's file sends.
    pub files: HashMap<SendId, Bytes>,
    /// Files received.
    pub store: FileStore,
    /// Bytes that reached this user's transport, over every connection.
    pub bytes_in: u64,
    /// Dials at this user's request are not answered (the user's network is down).
    pub unreachable: bool,
    /// Pieces of this user's bytes that may still reach the relay (`None`: any): the
    /// rest wait on the way.
    pub out_budget: Option<u64>,
}

impl User {
    /// Drives the continuity by its `poll_output` until it waits; its bytes go to the
    /// relay only while its transport lives.
    fn drive(&mut self, rng: &mut Rng, max_piece: u64) -> bool {
        let mut any = false;
        let mut out = BytesMut::new();
        loop {
            match self.cont.poll_output(&mut out) {
                Output::Transmit(_) => {}
                Output::Event(event) => self.handle(event),
                _ => break,
            }
            any = true;
        }
        if self.conn.is_some() {
            cut(rng, max_piece, out.freeze(), &mut self.to_relay);
        }
        any
    }

    /// The application: it keeps files and answers file reads.
    fn handle(&mut self, event: Event) {
        if let Some((id, len, digest)) = self.store.on_event(&event) {
            let _ = self.cont.resume_incoming(id, len, digest);
        }
        match &event {
            Event::FileReceived { id, .. } => {
                let _ = self.cont.accept_delivery(*id);
            }
            Event::FileRead { id, offset, len } => {
                if let Some(content) = self.files.get(id) {
                    let (from, to) = (*offset as usize, (*offset + *len) as usize);
                    let piece = content.slice(from..to.min(content.len()));
                    let _ = self.cont.supply_file_data(*id, *offset, piece);
                }
            }
            _ => {}
        }
        self.events.push(event);
    }
}

/// A user's configuration in the world's tests: files and buffers resume.
pub fn config() -> ClientConfig {
    ClientConfig {
        resume_buffers: true,
        ..super::resumable_config()
    }
}

/// The world's tests' policy: a minute to come back.
pub fn policy() -> Policy {
    Policy {
        window: std::time::Duration::from_secs(60),
        ..Policy::default()
    }
}

/// What a hostile relay does to the frames it sends user `i`: the frames that go instead.
pub type Tamper = Box<dyn FnMut(usize, Frame) -> Vec<Frame>>;

/// A relay and users who reconnect to it.
pub struct World {
    pub now: Instant,
    pub relay: Relay,
    relay_config: RelayConfig,
    /// The relay is down: dials fail.
    pub relay_down: bool,
    pub users: Vec<User>,
    by_conn: HashMap<ConnId, usize>,
    next_conn: u64,
    pub rng: Rng,
    pub max_piece: u64,
    /// A relay that changes what it sends (`None`: an honest one).
    pub tamper: Option<Tamper>,
}

impl World {
    /// A relay and one user per name, each logged in.
    pub fn new(names: &[&str], config: ClientConfig, policy: Policy, seed: u64) -> Self {
        Self::with_setup(names, config, policy, seed, |_, _| {})
    }

    /// As [`World::new`], with `setup` given each user's continuity before it connects.
    pub fn with_setup(
        names: &[&str],
        config: ClientConfig,
        policy: Policy,
        seed: u64,
        setup: impl Fn(usize, &mut Continuity),
    ) -> Self {
        let relay_config = RelayConfig::default();
        let mut world = World {
            now: Instant::from_micros(1_000_000),
            relay: Relay::new(relay_config).expect("valid relay config"),
            relay_config,
            relay_down: false,
            users: Vec::new(),
            by_conn: HashMap::new(),
            next_conn: 0,
            rng: Rng::new(seed),
            max_piece: 4000,
            tamper: None,
        };
        for (i, name) in names.iter().enumerate() {
            let mut seed = [0u8; 16];
            seed[..8].copy_from_slice(&world.rng.next().to_le_bytes());
            seed[8..].copy_from_slice(&(i as u64).to_le_bytes());
            let mut cont = Continuity::new(config, Some(policy), name, b"good", seed, world.now)
                .expect("valid user");
            setup(i, &mut cont);
            world.users.push(User {
                name: name.to_string(),
                cont,
                conn: None,
                to_relay: VecDeque::new(),
                from_relay: VecDeque::new(),
                events: Vec::new(),
                files: HashMap::new(),
                store: FileStore::default(),
                bytes_in: 0,
                unreachable: false,
                out_budget: None,
            });
            world.open(i);
        }
        world.run();
        world
    }

    /// User `i` by name.
    pub fn user(&self, name: &str) -> usize {
        self.users
            .iter()
            .position(|u| u.name == name)
            .expect("a user")
    }

    /// A relay connection for user `i`.
    fn open(&mut self, i: usize) {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.relay.open(self.now, conn).expect("fresh id");
        self.by_conn.insert(conn, i);
        self.users[i].conn = Some(conn);
    }

    /// User `i`'s transport dies, at both ends.
    pub fn cut(&mut self, i: usize) {
        let now = self.now;
        let user = &mut self.users[i];
        user.to_relay.clear();
        user.from_relay.clear();
        if let Some(conn) = user.conn.take() {
            self.relay.handle_disconnect(conn);
        }
        user.cont.handle_disconnect(now);
    }

    /// The relay process dies and a new one starts (knowing nothing): every transport is
    /// lost.
    pub fn restart_relay(&mut self) {
        for i in 0..self.users.len() {
            self.cut(i);
        }
        self.relay = Relay::new(self.relay_config).expect("valid relay config");
        self.by_conn.clear();
    }

    /// User `i`, between connections, dials now rather than when its schedule says.
    pub fn dial_now(&mut self, i: usize) {
        let user = &mut self.users[i];
        if user.conn.is_none() && user.cont.poll_redial().is_some() {
            self.dial(i);
        }
    }

    /// User `i` dials: the relay answers unless it, or the user's network, is down.
    fn dial(&mut self, i: usize) {
        let now = self.now;
        match self.relay_down || self.users[i].unreachable {
            true => self.users[i].cont.redial_failed(now),
            false => {
                self.users[i].cont.connected(now);
                self.open(i);
            }
        }
    }

    /// Sends a file of user `i` to `to` under `key`.
    pub fn send_file(&mut self, i: usize, to: &str, file: Bytes, key: u8) -> SendId {
        let now = self.now;
        let user = &mut self.users[i];
        let key = peermsg::wire::ResumeKey([key; 16]);
        let id = user
            .cont
            .send_file(now, to, "f.bin", file.len() as u64, key, 0)
            .expect("sent");
        user.files.insert(id, file);
        id
    }
}

/// The frames of `bytes` (whole frames, as a relay writes them), each replaced by what
/// `change` makes of it.
fn retell(mut bytes: BytesMut, mut change: impl FnMut(Frame) -> Vec<Frame>) -> BytesMut {
    let mut decoder = Decoder::new(Limits::default()).expect("default limits");
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = decoder.decode(&mut bytes) {
        frames.extend(change(frame));
    }
    assert!(bytes.is_empty(), "a relay batch ends with a whole frame");
    super::encode(&frames)
}

fn cut(rng: &mut Rng, max_piece: u64, mut bytes: Bytes, queue: &mut VecDeque<Bytes>) {
    while !bytes.is_empty() {
        let n = (1 + rng.below(max_piece)).min(bytes.len() as u64) as usize;
        queue.push_back(bytes.split_to(n));
    }
}

impl Sim for World {
    fn step(&mut self) -> bool {
        let mut busy = false;
        let now = self.now;
        for i in 0..self.users.len() {
            let user = &mut self.users[i];
            // A connection the client ended itself (idle, closed): the relay hears.
            if user.conn.is_some() && !user.cont.is_connected() && user.to_relay.is_empty() {
                if let Some(conn) = user.conn.take() {
                    self.relay.handle_disconnect(conn);
                }
            }
            busy |= user.drive(&mut self.rng, self.max_piece);
            let user = &mut self.users[i];
            if user.conn.is_none() && user.cont.poll_redial().is_some_and(|at| at <= now) {
                busy = true;
                self.dial(i);
            }
        }
        loop {
            let mut buf = BytesMut::new();
            match self.relay.poll_output(&mut buf) {
                RelayOutput::Transmit(conn, _) => {
                    busy = true;
                    let to = self.by_conn.get(&conn).copied();
                    if let (Some(tamper), Some(i)) = (self.tamper.as_mut(), to) {
                        buf = retell(buf, |frame| tamper(i, frame));
                    }
                    let user = to.map(|i| &mut self.users[i]);
                    if let Some(user) = user.filter(|u| u.conn == Some(conn)) {
                        cut(
                            &mut self.rng,
                            self.max_piece,
                            buf.freeze(),
                            &mut user.from_relay,
                        );
                    }
                }
                RelayOutput::Event(event) => {
                    busy = true;
                    if let RelayEvent::Login { conn, .. } = event {
                        let _ = self.relay.accept_login(conn);
                    }
                }
                _ => break,
            }
        }
        for user in &mut self.users {
            let Some(conn) = user.conn else { continue };
            let may_send = user.out_budget.is_none_or(|n| n > 0);
            if let Some(piece) = may_send.then(|| user.to_relay.pop_front()).flatten() {
                user.out_budget = user.out_budget.map(|n| n - 1);
                self.relay.handle_input(now, conn, &piece);
                busy = true;
            }
            if let Some(piece) = user.from_relay.pop_front() {
                user.bytes_in += piece.len() as u64;
                user.cont.handle_input(now, &piece);
                busy = true;
            }
        }
        self.now += std::time::Duration::from_micros(100);
        busy
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn next_deadline(&self) -> Option<Instant> {
        let users = self.users.iter().filter_map(|u| u.cont.poll_timeout());
        users.chain(self.relay.poll_timeout()).min()
    }

    fn fire_timers(&mut self, at: Instant) {
        self.now = self.now.max(at);
        for user in &mut self.users {
            user.cont.handle_timeout(self.now);
        }
        self.relay.handle_timeout(self.now);
    }
}
