//! What sealing costs: buffers from alice to bob through a relay, all three cores in one
//! thread, sealed and plain in alternating rounds of the same run. Prints each kind's
//! throughput, the ratio sealed / plain, and CPU time per GiB.
//!
//! `cargo run --release --example sealed_cost [MiB per round] [rounds]`

use std::time::Instant as Wall;

use bytes::{Bytes, BytesMut};
use peermsg::client::{ClientConfig, Event, Output};
use peermsg::continuity::{Continuity, Policy};
use peermsg::relay::{ConnId, Relay, RelayConfig, RelayEvent, RelayOutput};
use peermsg::seal::Sealing;
use peermsg::{ErrorCode, Instant};

const BUFFER: usize = 4 << 20;

struct World {
    relay: Relay,
    users: [Continuity; 2],
    now: Instant,
}

fn sealing(n: u8) -> Sealing {
    Sealing {
        secret: [n; 32],
        entropy: [n ^ 0x5a; 32],
        pinned: Vec::new(),
        trust_first_use: true,
    }
}

impl World {
    fn new(sealed: bool) -> World {
        let now = Instant::ZERO;
        let config = ClientConfig::default();
        let mut relay = Relay::new(RelayConfig::default()).unwrap();
        let users = ["alice", "bob"].map(|name| {
            let mut user =
                Continuity::new(config, Some(Policy::default()), name, b"", [1; 16], now).unwrap();
            if sealed {
                user.set_sealing(sealing(name.len() as u8));
            }
            user
        });
        for i in 0..2 {
            relay.open(now, ConnId(i)).unwrap();
        }
        let mut world = World { relay, users, now };
        world.run(&mut Vec::new());
        world
    }

    /// Moves bytes until all is quiet; bob's buffers received go to `got`.
    fn run(&mut self, got: &mut Vec<Bytes>) -> Vec<ErrorCode> {
        let mut results = Vec::new();
        loop {
            let mut busy = false;
            for (i, user) in self.users.iter_mut().enumerate() {
                let mut out = BytesMut::new();
                loop {
                    match user.poll_output(&mut out) {
                        Output::Transmit(_) => {}
                        Output::Event(Event::BufferReceived { data, .. }) => got.push(data),
                        Output::Event(Event::SendResult { code, .. }) => results.push(code),
                        Output::Event(_) => {}
                        _ => break,
                    }
                }
                if !out.is_empty() {
                    busy = true;
                    self.relay.handle_input(self.now, ConnId(i as u64), &out);
                }
            }
            loop {
                let mut buf = BytesMut::new();
                match self.relay.poll_output(&mut buf) {
                    RelayOutput::Transmit(conn, _) => {
                        busy = true;
                        self.users[conn.0 as usize].handle_input(self.now, &buf);
                    }
                    RelayOutput::Event(RelayEvent::Login { conn, .. }) => {
                        busy = true;
                        self.relay.accept_login(conn).unwrap();
                    }
                    RelayOutput::Event(_) => busy = true,
                    _ => break,
                }
            }
            if !busy {
                return results;
            }
        }
    }

    /// Sends `n` buffers from alice to bob; the seconds it took.
    fn round(&mut self, data: &Bytes, n: usize) -> f64 {
        let start = Wall::now();
        for _ in 0..n {
            self.users[0]
                .send_buffer(self.now, "bob", data.clone(), 0)
                .unwrap();
        }
        let mut got = Vec::new();
        let mut results = Vec::new();
        while results.len() < n {
            results.extend(self.run(&mut got));
        }
        let secs = start.elapsed().as_secs_f64();
        assert!(
            results.iter().all(|c| *c == ErrorCode::NOERR),
            "{results:?}"
        );
        assert!(
            got.len() == n && got.iter().all(|g| g == data),
            "delivered whole"
        );
        secs
    }
}

fn cpu_seconds() -> f64 {
    // user + system time of this process, from /proc (Linux); 0 elsewhere.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let n = (mib << 20).div_ceil(BUFFER);
    let data: Bytes = (0..BUFFER).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut worlds = [World::new(false), World::new(true)];
    let mut rates = [Vec::new(), Vec::new()];
    let mut cpu = [0.0, 0.0];
    for _ in 0..rounds {
        for (k, world) in worlds.iter_mut().enumerate() {
            let before = cpu_seconds();
            let secs = world.round(&data, n);
            cpu[k] += cpu_seconds() - before;
            rates[k].push((n * BUFFER) as f64 / secs / 1e6);
        }
    }
    let gib = (rounds * n * BUFFER) as f64 / (1u64 << 30) as f64;
    let (plain, sealed) = (median(rates[0].clone()), median(rates[1].clone()));
    println!(
        "{rounds} rounds of {} MiB in {BUFFER}-byte buffers, alice -> relay -> bob, one thread",
        n * 4
    );
    println!("plain : {plain:8.0} MB/s  CPU {:.3} s/GiB", cpu[0] / gib);
    println!("sealed: {sealed:8.0} MB/s  CPU {:.3} s/GiB", cpu[1] / gib);
    println!("sealed / plain: {:.2}", sealed / plain);
}
