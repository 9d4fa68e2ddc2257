//! The test simulators: [`Link`], two clients on a direct link, and [`net::Net`], a relay
//! and N clients. Both run on one loop ([`Sim`]): a virtual clock that jumps to the next
//! delivery or the earliest deadline of any endpoint, whose timers then fire, and byte
//! streams cut at random points. Every endpoint is driven by its `poll_output`. Everything
//! goes through the public API.
#![allow(dead_code)] // each test file uses a part

pub mod net;
pub mod world;

use peermsg::client::Output;
use peermsg::wire::Frame;

/// The frames, encoded one after another.
pub fn encode(frames: &[Frame]) -> BytesMut {
    let mut b = BytesMut::new();
    for f in frames {
        f.encode(&mut b).expect("encodable");
    }
    b
}

/// What every simulator does: move bytes and events a round at a time, and let time pass.
/// The loops over it are written once, here.
pub trait Sim {
    /// One round at the current time: output, events, and what is due for delivery.
    /// `false` when nothing moved and nothing is on its way.
    fn step(&mut self) -> bool;
    fn now(&self) -> Instant;
    /// The earliest deadline of any endpoint.
    fn next_deadline(&self) -> Option<Instant>;
    /// Moves the clock to `at` and fires every endpoint's timers due by then.
    fn fire_timers(&mut self, at: Instant);

    /// Moves bytes and events until nothing is left to do but wait for timers. Panics if
    /// that takes more than a bound of steps (a livelock).
    fn run(&mut self) {
        for _ in 0..1_000_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the simulation did not go quiet");
    }

    /// Moves bytes and events one round at a time until `done` holds or all is quiet;
    /// returns whether `done` held.
    fn run_until(&mut self, done: impl Fn(&Self) -> bool) -> bool
    where
        Self: Sized,
    {
        for _ in 0..1_000_000 {
            if done(self) {
                return true;
            }
            if !self.step() {
                return done(self);
            }
        }
        panic!("the simulation did not go quiet");
    }

    /// Advances the virtual clock by `span`, jumping from deadline to deadline and firing
    /// the timers of every endpoint on the way.
    fn run_for(&mut self, span: Duration) {
        let end = self.now() + span;
        loop {
            self.run();
            match self.next_deadline() {
                Some(next) if next <= end => self.fire_timers(next.max(self.now())),
                _ => {
                    self.fire_timers(end.max(self.now()));
                    return;
                }
            }
        }
    }
}

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use peermsg::client::{Client, ClientConfig, Event, ReceiveId, SendId, SendKind};
use peermsg::relay::{ConnId, Relay};
use peermsg::wire::{Decoder, Digest, Hello, Limits, Login, ResumeKey, Role, UserId};
use peermsg::ErrorCode;
use peermsg::Instant;

/// A small deterministic generator (xorshift), so failures replay from their seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One endpoint with what the test needs beside it.
pub struct Side {
    pub client: Client,
    /// Every event, in order.
    pub events: Vec<Event>,
    /// File contents of this side's file sends, served on `FileRead`.
    pub files: HashMap<SendId, Bytes>,
    /// Sends whose file reads fail.
    pub failing_files: Vec<SendId>,
    /// Largest `buffered_bytes` seen.
    pub peak_buffered: u64,
    /// Take events as they come (true) or leave them (false: a slow application).
    pub reading: bool,
    /// A resuming receiver's store of files.
    pub store: FileStore,
    /// What a resuming receiver holds of buffers cut by a lost connection.
    pub buffer_partials: HashMap<(UserId, ResumeKey), Bytes>,
}

impl Side {
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        Side {
            client: Client::new(config, now).expect("valid config"),
            events: Vec::new(),
            files: HashMap::new(),
            failing_files: Vec::new(),
            peak_buffered: 0,
            reading: true,
            store: FileStore::default(),
            buffer_partials: HashMap::new(),
        }
    }

    /// Drives the client by its `poll_output` until it waits, appending what it writes to
    /// `out`; an application that is not reading only lets frames out. Returns whether
    /// anything came.
    pub fn drive(&mut self, out: &mut BytesMut) -> bool {
        let mut any = false;
        if !self.reading {
            while self.client.poll_transmit(out) > 0 {
                any = true;
            }
        }
        while self.reading {
            match self.client.poll_output(out) {
                Output::Transmit(_) => {}
                Output::Event(event) => self.handle(event),
                _ => break,
            }
            any = true;
        }
        self.peak_buffered = self.peak_buffered.max(self.client.buffered_bytes());
        any
    }

    /// The application's part: it keeps every file it is given (in `events`) and answers
    /// file reads from `files`.
    fn handle(&mut self, event: Event) {
        self.keep_partials(&event);
        if let Event::FileReceived { id, .. } = &event {
            assert_eq!(self.client.accept_delivery(*id), Ok(()));
        }
        if let Event::FileRead { id, offset, len } = &event {
            // A send cancelled since it asked is gone: UnknownId is the right answer.
            let answer = if self.failing_files.contains(id) {
                self.client.file_read_failed(*id)
            } else if let Some(content) = self.files.get(id) {
                let (from, to) = (*offset as usize, (*offset + *len) as usize);
                let piece = content.slice(from..to.min(content.len()));
                self.client.supply_file_data(*id, *offset, piece)
            } else {
                Ok(())
            };
            assert!(
                matches!(answer, Ok(()) | Err(peermsg::ActionError::UnknownId)),
                "{answer:?}"
            );
        }
        self.events.push(event);
    }
}

impl Side {
    /// The resuming receiver's part: a keyed buffer resumes from what was handed over
    /// when it was cut off; files go through the store.
    fn keep_partials(&mut self, event: &Event) {
        match event {
            Event::Offer {
                id,
                from,
                kind: SendKind::Buffer,
                resume_key: Some(key),
                ..
            } => {
                let held = self
                    .buffer_partials
                    .remove(&(from.clone(), *key))
                    .unwrap_or_default();
                assert_eq!(self.client.resume_incoming_buffer(*id, held), Ok(()));
            }
            Event::ReceiveSuspended {
                from, key, data, ..
            } => {
                self.buffer_partials
                    .insert((from.clone(), *key), data.clone());
            }
            _ => {
                if let Some((id, len, digest)) = self.store.on_event(event) {
                    assert_eq!(self.client.resume_incoming(id, len, digest), Ok(()));
                }
            }
        }
    }
}

/// A resuming receiver's files, as a runtime keeps them on disk: what it holds of each by
/// sender and resume key; a keyed offer resumes from it, its bytes are appended, a
/// completed file leaves it, and a broken attempt keeps what was recorded (cut off) or
/// nothing (anything else).
#[derive(Debug)]
pub struct FileStore {
    pub partials: HashMap<(UserId, ResumeKey), Vec<u8>>,
    /// Which incoming files write to which partial.
    pub keyed: HashMap<ReceiveId, (UserId, ResumeKey)>,
    /// Of a partial whose attempt broke, only whole multiples of this many bytes stay
    /// (what a sink has recorded durably); 1 keeps every byte.
    pub record_every: usize,
    /// Files completed through the store, in order.
    pub completed: Vec<Vec<u8>>,
    /// Keys of completed files: offered again (their sender never heard), they resume at
    /// their end and are not kept twice.
    pub done: HashMap<(UserId, ResumeKey), (u64, u32)>,
    /// Incoming files that are such repeats.
    pub repeats: Vec<ReceiveId>,
    /// File bytes the store was given, over every attempt.
    pub stored_bytes: u64,
}

impl Default for FileStore {
    fn default() -> Self {
        FileStore {
            partials: HashMap::new(),
            keyed: HashMap::new(),
            record_every: 1,
            completed: Vec::new(),
            done: HashMap::new(),
            repeats: Vec::new(),
            stored_bytes: 0,
        }
    }
}

impl FileStore {
    /// Follows `event`; for a keyed file offer, gives where it resumes (the answer to
    /// `resume_incoming`).
    pub fn on_event(&mut self, event: &Event) -> Option<(ReceiveId, u64, Digest)> {
        match event {
            Event::Offer {
                id,
                from,
                kind: SendKind::File,
                resume_key: Some(key),
                ..
            } => {
                let at = (from.clone(), *key);
                let (len, crc) = match self.done.get(&at) {
                    Some(whole) => {
                        self.repeats.push(*id);
                        *whole
                    }
                    None => {
                        let held = self.partials.entry(at.clone()).or_default();
                        (held.len() as u64, crc32c::crc32c(held))
                    }
                };
                self.keyed.insert(*id, at);
                return Some((*id, len, Digest::Crc32c(crc)));
            }
            Event::FileData {
                id,
                offset,
                data,
                digest,
            } => {
                if let Some(at) = self.keyed.get(id) {
                    let held = self.partials.get_mut(at).expect("kept");
                    assert_eq!(*offset, held.len() as u64, "file bytes in order");
                    held.extend_from_slice(data);
                    // The digest the event carries is that of the whole file so far.
                    assert_eq!(*digest, Digest::Crc32c(crc32c::crc32c(held)));
                    self.stored_bytes += data.len() as u64;
                }
            }
            Event::FileReceived { id, .. } => {
                if let Some(at) = self.keyed.remove(id) {
                    if !self.repeats.contains(id) {
                        let whole = self.partials.remove(&at).expect("kept");
                        let summary = (whole.len() as u64, crc32c::crc32c(&whole));
                        self.done.insert(at, summary);
                        self.completed.push(whole);
                    }
                }
            }
            Event::ReceiveFailed { id, code, .. } => {
                if let Some(at) = self.keyed.remove(id).filter(|_| !self.repeats.contains(id)) {
                    if *code == ErrorCode::CONNECTIONLOST || *code == ErrorCode::SOCKETTIMEOUT {
                        let held = self.partials.get_mut(&at).expect("kept");
                        held.truncate(held.len() / self.record_every * self.record_every);
                    } else {
                        self.partials.remove(&at);
                    }
                }
            }
            _ => {}
        }
        None
    }
}

/// Bytes on their way, arriving at a time.
struct InFlight {
    at: Instant,
    bytes: Bytes,
}

/// Two clients joined by a simulated link.
pub struct Link {
    pub now: Instant,
    pub a: Side,
    pub b: Side,
    a_to_b: VecDeque<InFlight>,
    b_to_a: VecDeque<InFlight>,
    pub latency: Duration,
    /// Largest piece the link delivers at once; pieces are cut at random below it.
    pub max_piece: u64,
    pub rng: Rng,
}

impl Link {
    /// Two clients on a direct link, `alice` and `bob`, logged in to each other.
    pub fn direct(config: ClientConfig, seed: u64) -> Self {
        let now = Instant::from_micros(1_000_000);
        let mut link = Link {
            now,
            a: Side::new(config, now),
            b: Side::new(config, now),
            a_to_b: VecDeque::new(),
            b_to_a: VecDeque::new(),
            latency: Duration::from_millis(5),
            max_piece: 3000,
            rng: Rng::new(seed),
        };
        link.a.client.login("alice", b"a-token").expect("login");
        link.b.client.login("bob", b"b-token").expect("login");
        link.run();
        assert!(
            link.a.client.is_logged_in() && link.b.client.is_logged_in(),
            "direct login"
        );
        link
    }

    /// Cuts `bytes` into pieces below `max_piece`, arriving at `at`.
    fn send(&mut self, a_to_b: bool, bytes: BytesMut) {
        let at = self.now + self.latency;
        let mut bytes = bytes.freeze();
        while !bytes.is_empty() {
            let n = (1 + self.rng.below(self.max_piece)).min(bytes.len() as u64) as usize;
            let piece = InFlight {
                at,
                bytes: bytes.split_to(n),
            };
            match a_to_b {
                true => self.a_to_b.push_back(piece),
                false => self.b_to_a.push_back(piece),
            }
        }
    }
}

impl Sim for Link {
    /// Output and events of both sides, then the next delivery (the clock moves to it).
    fn step(&mut self) -> bool {
        let mut busy = false;
        let mut out = BytesMut::new();
        busy |= self.a.drive(&mut out);
        self.send(true, out.split());
        busy |= self.b.drive(&mut out);
        self.send(false, out);
        let next = [self.a_to_b.front(), self.b_to_a.front()]
            .into_iter()
            .flatten()
            .map(|f| f.at)
            .min();
        if let Some(at) = next {
            self.now = self.now.max(at);
            // Deliver everything due, oldest first on each direction.
            while self.a_to_b.front().is_some_and(|f| f.at <= self.now) {
                let f = self.a_to_b.pop_front().expect("checked");
                self.b.client.handle_input(self.now, &f.bytes);
            }
            while self.b_to_a.front().is_some_and(|f| f.at <= self.now) {
                let f = self.b_to_a.pop_front().expect("checked");
                self.a.client.handle_input(self.now, &f.bytes);
            }
            busy = true;
        }
        busy
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn next_deadline(&self) -> Option<Instant> {
        [self.a.client.poll_timeout(), self.b.client.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    fn fire_timers(&mut self, at: Instant) {
        self.now = self.now.max(at);
        self.a.client.handle_timeout(self.now);
        self.b.client.handle_timeout(self.now);
    }
}

/// The one `MessageResult` code of `id` among `events`; panics unless there is exactly one.
pub fn result_of(events: &[Event], id: SendId) -> peermsg::ErrorCode {
    let codes: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::SendResult { id: i, code, .. } if *i == id => Some(*code),
            _ => None,
        })
        .collect();
    assert_eq!(codes.len(), 1, "exactly one result for {id}: {events:#?}");
    codes[0]
}

/// A client's `HELLO` with the default limits, 8 commands and transfers in flight, 1 MiB
/// windows.
pub fn hello() -> Frame {
    Frame::Hello(Hello::new(
        Role::Client,
        &Limits::default(),
        8,
        8,
        1 << 20,
        1 << 20,
    ))
}

/// A `LOGIN` of `user` with an empty token.
pub fn login(user: &str) -> Frame {
    Frame::Login(Login {
        user: UserId::new(user).unwrap(),
        token: Bytes::new(),
    })
}

/// Frames the relay wrote to `conn`.
pub fn written(relay: &mut Relay, conn: ConnId) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    while relay.poll_transmit(conn, &mut buf) > 0 {}
    let mut d = Decoder::new(Limits::default()).unwrap();
    let mut out = Vec::new();
    while let Ok(Some(f)) = d.decode(&mut buf) {
        out.push(f);
    }
    out
}

/// Deterministic content of `len` bytes.
pub fn content(len: usize, seed: u64) -> Bytes {
    let mut rng = Rng::new(seed);
    (0..len)
        .map(|_| rng.next() as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A client that resumes files, with windows small enough that a transfer spans many
/// frames and grants.
pub fn resumable_config() -> ClientConfig {
    ClientConfig {
        transfer_window: 64 * 1024,
        conn_window: 128 * 1024,
        file_read_size: 16 * 1024,
        resume_files: true,
        ..ClientConfig::default()
    }
}
