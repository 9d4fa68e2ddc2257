//! A relay and N clients on a simulated network: each client's bytes reach the relay and
//! back cut at random points; a virtual clock (the [`Sim`] loop's); clients that stop
//! reading or vanish.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use peermsg::client::ClientConfig;
use peermsg::relay::{ConnId, Relay, RelayConfig, RelayEvent, RelayOutput};
use peermsg::Instant;

use super::{Rng, Side, Sim};

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
    /// What the relay wrote to its links (to other relays), for a cluster to carry.
    pub link_out: Vec<(ConnId, Bytes)>,
}

impl Net {
    /// A relay and one client per name, each logged in with the token "good".
    pub fn new(names: &[&str], client: ClientConfig, relay: RelayConfig, seed: u64) -> Self {
        let now = Instant::from_micros(1_000_000);
        let mut net = Net {
            now,
            relay: Relay::new(relay).expect("valid relay config"),
            nodes: Vec::new(),
            relay_events: Vec::new(),
            bad_token: b"bad",
            rng: Rng::new(seed),
            max_piece: 4000,
            relay_peak: 0,
            link_out: Vec::new(),
        };
        for name in names {
            net.connect(name, b"good", client);
        }
        net.run();
        net
    }

    /// Connects and logs in one more client; returns its index.
    pub fn connect(&mut self, name: &str, token: &[u8], config: ClientConfig) -> usize {
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
        n.side.drive(&mut BytesMut::new()); // its last events: every pending send fails
        self.relay.handle_disconnect(ConnId(i as u64));
    }

    fn cut(rng: &mut Rng, max_piece: u64, mut bytes: Bytes, queue: &mut VecDeque<Bytes>) {
        while !bytes.is_empty() {
            let n = (1 + rng.below(max_piece)).min(bytes.len() as u64) as usize;
            queue.push_back(bytes.split_to(n));
        }
    }

    /// Bytes on their way from the relay to node `i`.
    fn in_flight(&self, i: usize) -> usize {
        self.nodes[i].from_relay.iter().map(Bytes::len).sum()
    }
}

impl Sim for Net {
    fn step(&mut self) -> bool {
        let mut busy = false;
        let now = self.now;
        for node in self.nodes.iter_mut().filter(|n| n.up) {
            let mut buf = BytesMut::new();
            if node.side.drive(&mut buf) {
                busy = true;
            }
            if !buf.is_empty() {
                Self::cut(
                    &mut self.rng,
                    self.max_piece,
                    buf.freeze(),
                    &mut node.to_relay,
                );
            }
        }
        // The relay, by its `poll_output`; it writes to a connection while its socket has
        // room (64 KiB in flight), and is told to pause when it has none.
        loop {
            let mut buf = BytesMut::new();
            match self.relay.poll_output(&mut buf) {
                RelayOutput::Transmit(conn, _) if conn.is_link() => {
                    busy = true;
                    self.link_out.push((conn, buf.freeze()));
                }
                RelayOutput::Transmit(conn, _) => {
                    busy = true;
                    let i = conn.0 as usize;
                    // A connection the test drives by hand: its output goes nowhere.
                    if self.nodes.get(i).is_some_and(|n| n.up) {
                        let node = &mut self.nodes[i];
                        Self::cut(
                            &mut self.rng,
                            self.max_piece,
                            buf.freeze(),
                            &mut node.from_relay,
                        );
                        if self.in_flight(i) >= SOCKET_BUFFER {
                            self.relay.pause_writes(conn);
                        }
                    }
                }
                RelayOutput::Event(event) => {
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
                _ => break,
            }
        }
        self.relay_peak = self.relay_peak.max(self.relay.buffered_bytes());
        // Deliver one piece each way per node per step: links of equal speed.
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            if !node.up {
                continue;
            }
            if let Some(piece) = node.to_relay.pop_front() {
                self.relay.handle_input(now, ConnId(i as u64), &piece);
                busy = true;
            }
            if node.receiving {
                if let Some(piece) = node.from_relay.pop_front() {
                    node.side.client.handle_input(now, &piece);
                    busy = true;
                    if self.in_flight(i) < SOCKET_BUFFER {
                        self.relay.resume_writes(ConnId(i as u64));
                    }
                }
            }
        }
        self.now += std::time::Duration::from_micros(100);
        busy
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn next_deadline(&self) -> Option<Instant> {
        let clients = self
            .nodes
            .iter()
            .filter(|n| n.up)
            .filter_map(|n| n.side.client.poll_timeout());
        clients.chain(self.relay.poll_timeout()).min()
    }

    fn fire_timers(&mut self, at: Instant) {
        self.now = self.now.max(at);
        for node in self.nodes.iter_mut().filter(|n| n.up) {
            node.side.client.handle_timeout(self.now);
        }
        self.relay.handle_timeout(self.now);
    }
}
