//! A simulated link for the client tests: two endpoints, a virtual clock, latency, and
//! byte streams cut at random points. Everything goes through the public API.
#![allow(dead_code)] // each test file uses a part

pub mod net;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use peermsg::client::{Client, Config, Event, SendId};
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
}

impl Side {
    pub fn new(config: Config, now: Instant) -> Self {
        Side {
            client: Client::new(config, now).expect("valid config"),
            events: Vec::new(),
            files: HashMap::new(),
            failing_files: Vec::new(),
            peak_buffered: 0,
            reading: true,
        }
    }

    /// Takes events, answering file reads from `files`. Returns whether any came.
    pub fn take_events(&mut self) -> bool {
        let mut any = false;
        while self.reading {
            let Some(event) = self.client.poll_event() else {
                break;
            };
            any = true;
            if let Event::FileReceived { id, .. } = &event {
                // The harness keeps every file it is given (in `events`): confirm it.
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
        any
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
    pub fn direct(config: Config, seed: u64) -> Self {
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

    /// Moves bytes, events and time until nothing is left to do but keepalive timers.
    /// Panics if that takes more than a bound of steps (a livelock).
    pub fn run(&mut self) {
        for _ in 0..1_000_000 {
            if !self.step() {
                return;
            }
        }
        panic!("link did not go quiet");
    }

    /// Moves bytes and events one round at a time until `done` holds or all is quiet;
    /// returns whether `done` held.
    pub fn run_until(&mut self, done: impl Fn(&Link) -> bool) -> bool {
        for _ in 0..1_000_000 {
            if done(self) {
                return true;
            }
            if !self.step() {
                return done(self);
            }
        }
        panic!("link did not go quiet");
    }

    /// Advances the virtual clock by `span`, firing timers on the way.
    pub fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        loop {
            self.run();
            let next = [self.a.client.poll_timeout(), self.b.client.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(end);
            if next > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(next);
            self.a.client.handle_timeout(self.now);
            self.b.client.handle_timeout(self.now);
        }
    }

    /// One round: output, events, and the next delivery. `false` when quiet.
    pub fn step(&mut self) -> bool {
        let mut busy = false;
        busy |= Self::transmit(
            &mut self.a,
            &mut self.a_to_b,
            self.now + self.latency,
            &mut self.rng,
            self.max_piece,
        );
        busy |= Self::transmit(
            &mut self.b,
            &mut self.b_to_a,
            self.now + self.latency,
            &mut self.rng,
            self.max_piece,
        );
        busy |= self.a.take_events();
        busy |= self.b.take_events();
        for side in [&mut self.a, &mut self.b] {
            side.peak_buffered = side.peak_buffered.max(side.client.buffered_bytes());
        }
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

    fn transmit(
        side: &mut Side,
        queue: &mut VecDeque<InFlight>,
        at: Instant,
        rng: &mut Rng,
        max_piece: u64,
    ) -> bool {
        let mut buf = BytesMut::new();
        while side.client.poll_transmit(&mut buf) > 0 {}
        if buf.is_empty() {
            return false;
        }
        let mut bytes = buf.freeze();
        while !bytes.is_empty() {
            let n = (1 + rng.below(max_piece)).min(bytes.len() as u64) as usize;
            queue.push_back(InFlight {
                at,
                bytes: bytes.split_to(n),
            });
        }
        true
    }
}

/// The one `SendResult` code of `id` among `events`; panics unless there is exactly one.
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

/// Deterministic content of `len` bytes.
pub fn content(len: usize, seed: u64) -> Bytes {
    let mut rng = Rng::new(seed);
    (0..len)
        .map(|_| rng.next() as u8)
        .collect::<Vec<u8>>()
        .into()
}
