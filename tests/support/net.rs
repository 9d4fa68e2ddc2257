//! A relay and N clients on a simulated network: each client's bytes reach the relay and
//! back cut at random points; a virtual clock; clients that stop reading or vanish.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use peermsg::client::Config;
use peermsg::relay::{ConnId, Relay, RelayConfig, RelayEvent};
use peermsg::Instant;

use super::{Rng, Side};

/// One client's end of the network.
pub struct Node {
    pub side: Side,
    pub name: String,
    to_relay: VecDeque<Bytes>,
    from_relay: VecDeque<Bytes>,
    /// Still connected.
    pub up: bool,
    /// The runtime reads its socket (false: a reader so slow its socket fills).
    pub receiving: bool,
}

/// Bytes a connection's socket holds toward a client before the relay must wait.
const SOCKET_BUFFER: usize = 64 * 1024;

pub struct Net {
    /// Connections the relay named writable that have not been drained yet.
    writable: std::collections::BTreeSet<ConnId>,
    pub now: Instant,
    pub relay: Relay,
    pub nodes: Vec<Node>,
    pub relay_events: Vec<RelayEvent>,
    /// Logins with this token are refused.
    pub bad_token: &'static [u8],
    pub rng: Rng,
    pub max_piece: u64,
    /// Largest `buffered_bytes` the relay reported.
    pub relay_peak: u64,
}

impl Net {
    /// A relay and one client per name, each logged in with the token "good".
    pub fn new(names: &[&str], client: Config, relay: RelayConfig, seed: u64) -> Self {
        let now = Instant::from_micros(1_000_000);
        let mut net = Net {
            writable: std::collections::BTreeSet::new(),
            now,
            relay: Relay::new(relay).expect("valid relay config"),
            nodes: Vec::new(),
            relay_events: Vec::new(),
            bad_token: b"bad",
            rng: Rng::new(seed),
            max_piece: 4000,
            relay_peak: 0,
        };
        for name in names {
            net.connect(name, b"good", client);
        }
        net.run();
        net
    }

    /// Connects and logs in one more client; returns its index.
    pub fn connect(&mut self, name: &str, token: &[u8], config: Config) -> usize {
        let i = self.nodes.len();
        self.relay
            .open(self.now, ConnId(i as u64))
            .expect("fresh id");
        let mut side = Side::new(config, self.now);
        side.client.login(name, token).expect("valid name");
        self.nodes.push(Node {
            side,
            name: name.to_string(),
            to_relay: VecDeque::new(),
            from_relay: VecDeque::new(),
            up: true,
            receiving: true,
        });
        i
    }

    /// Node `i`'s transport dies: both ends are told.
    pub fn drop_node(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.up = false;
        n.to_relay.clear();
        n.from_relay.clear();
        n.side.client.handle_disconnect();
        n.side.take_events(); // its last events: every pending send fails
        self.relay.handle_disconnect(ConnId(i as u64));
    }

    pub fn run(&mut self) {
        for _ in 0..1_000_000 {
            if !self.step() {
                return;
            }
        }
        panic!("network did not go quiet");
    }

    pub fn run_until(&mut self, done: impl Fn(&Net) -> bool) -> bool {
        for _ in 0..1_000_000 {
            if done(self) {
                return true;
            }
            if !self.step() {
                return done(self);
            }
        }
        panic!("network did not go quiet");
    }

    fn cut(rng: &mut Rng, max_piece: u64, mut bytes: Bytes, queue: &mut VecDeque<Bytes>) {
        while !bytes.is_empty() {
            let n = (1 + rng.below(max_piece)).min(bytes.len() as u64) as usize;
            queue.push_back(bytes.split_to(n));
        }
    }

    pub fn step(&mut self) -> bool {
        let mut busy = false;
        let now = self.now;
        for node in self.nodes.iter_mut().filter(|n| n.up) {
            let mut buf = BytesMut::new();
            while node.side.client.poll_transmit(&mut buf) > 0 {}
            if !buf.is_empty() {
                busy = true;
                Self::cut(
                    &mut self.rng,
                    self.max_piece,
                    buf.freeze(),
                    &mut node.to_relay,
                );
            }
            busy |= node.side.take_events();
            node.side.peak_buffered = node
                .side
                .peak_buffered
                .max(node.side.client.buffered_bytes());
        }
        // The relay writes to a connection while its socket has room (64 KiB in flight).
        while let Some(conn) = self.relay.poll_writable() {
            self.writable.insert(conn);
        }
        let ready: Vec<ConnId> = self.writable.iter().copied().collect();
        for conn in ready {
            let Some(node) = self.nodes.get_mut(conn.0 as usize) else {
                // A connection the test drives by hand: its output goes nowhere.
                self.writable.remove(&conn);
                self.relay.poll_transmit(conn, &mut BytesMut::new());
                continue;
            };
            let in_flight: usize = node.from_relay.iter().map(Bytes::len).sum();
            if node.up && in_flight >= SOCKET_BUFFER {
                continue;
            }
            self.writable.remove(&conn);
            let mut buf = BytesMut::new();
            self.relay.poll_transmit(conn, &mut buf);
            if node.up && !buf.is_empty() {
                busy = true;
                Self::cut(
                    &mut self.rng,
                    self.max_piece,
                    buf.freeze(),
                    &mut node.from_relay,
                );
            }
        }
        while let Some(event) = self.relay.poll_event() {
            busy = true;
            if let RelayEvent::Login { conn, token, .. } = &event {
                // A test driving a connection by hand may have answered already.
                let _answered = if &token[..] == self.bad_token {
                    self.relay
                        .reject_login(*conn, peermsg::ErrorCode::LOGIN_REJECTED)
                } else {
                    self.relay.accept_login(*conn)
                };
            }
            self.relay_events.push(event);
        }
        self.relay_peak = self.relay_peak.max(self.relay.buffered_bytes());
        // Deliver one piece each way per node per step: links of equal speed.
        for (i, node) in self.nodes.iter_mut().enumerate().filter(|(_, n)| n.up) {
            if let Some(piece) = node.to_relay.pop_front() {
                self.relay.handle_input(now, ConnId(i as u64), &piece);
                busy = true;
            }
            if node.receiving {
                if let Some(piece) = node.from_relay.pop_front() {
                    node.side.client.handle_input(now, &piece);
                    busy = true;
                }
            }
        }
        self.now += std::time::Duration::from_micros(100);
        busy
    }
}
