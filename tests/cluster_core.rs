//! Relays of a cluster, linked in memory: every relay a [`Net`] with its clients, and the
//! links between relays carried by the test as a runtime would carry them (a user's relay
//! found by the users it reported online; `OFFLINE` when nobody has the user; a newer
//! login elsewhere kicks the older one).

mod support;

use std::collections::HashMap;

use bytes::Bytes;
use peermsg::client::{ClientConfig, Event, SendId};
use peermsg::relay::{ConnId, LinkSide, RelayConfig, RelayEvent};
use peermsg::seal::{identity_of, Sealing};
use peermsg::wire::{IdentityKey, UserId};
use peermsg::ErrorCode;
use support::net::Net;
use support::Sim;
use support::{content, result_of};

struct Cluster {
    relays: Vec<Net>,
    /// Each link's other end: (relay, connection) both ways.
    links: HashMap<(usize, ConnId), (usize, ConnId)>,
    /// Where each user is logged in, as the relays reported it.
    online: HashMap<String, usize>,
    /// Relay events already looked at, per relay.
    seen: Vec<usize>,
    /// Links whose bytes are dropped (a link lost in transit).
    cut: Vec<(usize, ConnId)>,
}

fn clustered() -> RelayConfig {
    RelayConfig {
        cluster: true,
        ..RelayConfig::default()
    }
}

impl Cluster {
    /// One relay per list of user names.
    fn new(users: &[&[&str]], client: ClientConfig) -> Self {
        Cluster::with(users, client, clustered())
    }

    /// [`Cluster::new`] with relays of `relay`.
    fn with(users: &[&[&str]], client: ClientConfig, relay: RelayConfig) -> Self {
        let relays: Vec<Net> = users
            .iter()
            .enumerate()
            .map(|(i, names)| Net::new(names, client, relay, 11 + i as u64))
            .collect();
        let seen = vec![0; relays.len()];
        let mut cluster = Cluster {
            relays,
            links: HashMap::new(),
            online: HashMap::new(),
            seen,
            cut: Vec::new(),
        };
        cluster.run();
        cluster
    }

    fn client(&mut self, relay: usize, user: usize) -> &mut support::Side {
        &mut self.relays[relay].nodes[user].side
    }

    /// What a runtime does with the relays' events: who is where, newer logins kick
    /// older ones, a link lost at one end is lost at the other.
    fn events(&mut self) -> bool {
        let mut busy = false;
        for i in 0..self.relays.len() {
            while self.seen[i] < self.relays[i].relay_events.len() {
                let event = self.relays[i].relay_events[self.seen[i]].clone();
                self.seen[i] += 1;
                busy = true;
                match event {
                    RelayEvent::UserOnline { user } => {
                        if let Some(&old) = self.online.get(user.as_str()) {
                            if old != i {
                                self.relays[old].relay.kick_user(&user);
                            }
                        }
                        self.online.insert(user.to_string(), i);
                    }
                    // A key is looked up where its user is, as NATS would ask there.
                    RelayEvent::KeyWanted { conn, user } => {
                        let key = match self.online.get(user.as_str()) {
                            Some(&j) => self.relays[j].relay.user_key(&user),
                            None => None,
                        };
                        self.relays[i].relay.answer_key(conn, user, key);
                    }
                    RelayEvent::UserOffline { user }
                        if self.online.get(user.as_str()) == Some(&i) =>
                    {
                        self.online.remove(user.as_str());
                    }
                    RelayEvent::Closed {
                        conn,
                        code: ErrorCode::CONNECTIONLOST,
                        ..
                    } => {
                        if let Some((j, peer)) = self.links.remove(&(i, conn)) {
                            self.links.remove(&(j, peer));
                            self.relays[j].relay.handle_disconnect(peer);
                        }
                    }
                    _ => {}
                }
            }
        }
        busy
    }

    /// Carries what relays wrote to their links; an outgoing link's first bytes find its
    /// user's relay.
    fn carry(&mut self) -> bool {
        let mut busy = false;
        for i in 0..self.relays.len() {
            let out = std::mem::take(&mut self.relays[i].link_out);
            for (conn, bytes) in out {
                busy = true;
                if self.cut.contains(&(i, conn)) {
                    continue;
                }
                let now = self.relays[i].now;
                let peer = match self.links.get(&(i, conn)) {
                    Some(peer) => Some(*peer),
                    None => self.open_link(i, conn, now),
                };
                if let Some((j, peer)) = peer {
                    self.relays[j].relay.handle_input(now, peer, &bytes);
                }
            }
        }
        busy
    }

    fn open_link(
        &mut self,
        i: usize,
        conn: ConnId,
        now: peermsg::Instant,
    ) -> Option<(usize, ConnId)> {
        let (side, user) = self.relays[i].relay.link(conn)?;
        if side != LinkSide::Outgoing {
            return None; // an incoming link already closed at its other end
        }
        let user = user.clone();
        let accepted = self
            .online
            .get(user.as_str())
            .filter(|&&j| j != i)
            .and_then(|&j| Some((j, self.relays[j].relay.accept_link(now, &user).ok()?)));
        match accepted {
            Some((j, peer)) => {
                self.links.insert((i, conn), (j, peer));
                self.links.insert((j, peer), (i, conn));
                Some((j, peer))
            }
            None => {
                self.relays[i].relay.link_failed(conn, ErrorCode::OFFLINE);
                None
            }
        }
    }
}

impl Sim for Cluster {
    fn step(&mut self) -> bool {
        let mut busy = false;
        for net in &mut self.relays {
            busy |= net.step();
        }
        busy |= self.events();
        busy |= self.carry();
        busy
    }

    fn now(&self) -> peermsg::Instant {
        self.relays.iter().map(|n| n.now).max().expect("relays")
    }

    fn next_deadline(&self) -> Option<peermsg::Instant> {
        self.relays.iter().filter_map(|n| n.next_deadline()).min()
    }

    fn fire_timers(&mut self, at: peermsg::Instant) {
        for net in &mut self.relays {
            net.fire_timers(at);
        }
    }
}

fn received_cmds(side: &support::Side) -> Vec<(String, Bytes)> {
    side.events
        .iter()
        .filter_map(|e| match e {
            Event::CmdReceived { from, data, .. } => Some((from.to_string(), data.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn every_pair_across_three_relays_exchanges_commands_buffers_and_files() {
    let users: &[&[&str]] = &[&["ann", "ben"], &["cat"], &["dan"]];
    let mut c = Cluster::new(users, ClientConfig::default());
    let at = [(0, 0), (0, 1), (1, 0), (2, 0)];
    let names = ["ann", "ben", "cat", "dan"];
    let mut sends: Vec<(usize, SendId, usize)> = Vec::new();
    for (s, &(sr, su)) in at.iter().enumerate() {
        for (r, name) in names.iter().enumerate() {
            if r == s {
                continue;
            }
            let now = c.relays[sr].now;
            let seed = (s * 10 + r) as u64;
            let side = c.client(sr, su);
            let cmd = format!("{}->{}", names[s], name);
            let id = side
                .client
                .send_cmd(now, name, Bytes::from(cmd), 0)
                .unwrap();
            sends.push((s, id, r));
            let id = side
                .client
                .send_buffer(now, name, content(300_000 + r * 1000, seed), 0)
                .unwrap();
            sends.push((s, id, r));
            let file = content(700_000 + s * 77, seed + 100);
            let id = side
                .client
                .send_file(now, name, "f.bin", file.len() as u64, 0)
                .unwrap();
            side.files.insert(id, file);
            sends.push((s, id, r));
        }
    }
    c.run();
    for (s, id, _) in &sends {
        let (sr, su) = at[*s];
        assert_eq!(
            result_of(&c.relays[sr].nodes[su].side.events, *id),
            ErrorCode::NOERR
        );
    }
    for (r, &(rr, ru)) in at.iter().enumerate() {
        let side = &c.relays[rr].nodes[ru].side;
        let mut cmds = received_cmds(side);
        cmds.sort();
        let mut want: Vec<(String, Bytes)> = (0..4)
            .filter(|&s| s != r)
            .map(|s| {
                (
                    names[s].to_string(),
                    Bytes::from(format!("{}->{}", names[s], names[r])),
                )
            })
            .collect();
        want.sort();
        assert_eq!(cmds, want, "commands at {}", names[r]);
        for s in (0..4).filter(|&s| s != r) {
            let seed = (s * 10 + r) as u64;
            assert!(side.events.iter().any(|e| matches!(e,
                Event::BufferReceived { from, data, .. }
                    if from.as_str() == names[s] && *data == content(300_000 + r * 1000, seed))));
        }
        let files = side
            .events
            .iter()
            .filter(|e| matches!(e, Event::FileReceived { .. }))
            .count();
        assert_eq!(files, 3, "files at {}", names[r]);
    }
    // Links carry messages: some relays hold links now, and none closed a peer.
    let violations = c.relays.iter().flat_map(|n| &n.relay_events).any(
        |e| matches!(e, RelayEvent::Closed { code, .. } if *code == ErrorCode::PROTOCOL_VIOLATION),
    );
    assert!(!violations);
}

#[test]
fn a_user_on_no_relay_is_offline_at_once() {
    let mut c = Cluster::new(&[&["ann"], &["cat"]], ClientConfig::default());
    assert_eq!(command(&mut c, "nobody", b"x"), ErrorCode::OFFLINE);
}

#[test]
fn commands_from_one_sender_arrive_in_order_within_the_receivers_caps() {
    let receiver = ClientConfig {
        max_cmds_in_flight: 2,
        ..ClientConfig::default()
    };
    let mut c = Cluster::new(&[&["ann", "ben"], &[]], ClientConfig::default());
    c.relays[1].connect("cat", b"good", receiver);
    c.run();
    // cat reads nothing for a while: commands wait at its relay, none refused.
    c.client(1, 0).reading = false;
    let mut ids = Vec::new();
    for i in 0..40 {
        for s in 0..2 {
            let now = c.relays[0].now;
            let id = c
                .client(0, s)
                .client
                .send_cmd(now, "cat", Bytes::from(format!("{s}:{i:03}")), 0)
                .unwrap();
            ids.push((s, id));
        }
    }
    c.run_for(std::time::Duration::from_secs(5));
    assert!(received_cmds(c.client(1, 0)).is_empty());
    c.client(1, 0).reading = true;
    c.run();
    for (s, id) in ids {
        assert_eq!(result_of(&c.client(0, s).events, id), ErrorCode::NOERR);
    }
    let got = received_cmds(c.client(1, 0));
    assert_eq!(got.len(), 80);
    for s in ["0", "1"] {
        let from = if s == "0" { "ann" } else { "ben" };
        let mine: Vec<Bytes> = got
            .iter()
            .filter(|(f, _)| f == from)
            .map(|(_, d)| d.clone())
            .collect();
        let want: Vec<Bytes> = (0..40)
            .map(|i| Bytes::from(format!("{s}:{i:03}")))
            .collect();
        assert_eq!(mine, want);
    }
}

/// ann (relay 0, the first user) sends `to` a command; its result.
fn command(c: &mut Cluster, to: &str, data: &'static [u8]) -> ErrorCode {
    command_from(c, 0, to, data)
}

/// The user `user` of relay 0 sends `to` a command; its result.
fn command_from(c: &mut Cluster, user: usize, to: &str, data: &'static [u8]) -> ErrorCode {
    let now = c.relays[0].now;
    let id = c
        .client(0, user)
        .client
        .send_cmd(now, to, Bytes::from_static(data), 0)
        .unwrap();
    c.run();
    result_of(&c.client(0, user).events, id)
}

/// ann (relay 0) starts sending cat (relay 1) 16 MiB; runs until cat has some.
fn buffer_under_way(c: &mut Cluster, seed: u64) -> SendId {
    let now = c.relays[0].now;
    let id = c
        .client(0, 0)
        .client
        .send_buffer(now, "cat", content(16 << 20, seed), 0)
        .unwrap();
    let started = |c: &Cluster| {
        c.relays[1].nodes[0]
            .side
            .events
            .iter()
            .any(|e| matches!(e, Event::ReceiveProgress { .. }))
    };
    assert!(c.run_until(started));
    id
}

#[test]
fn a_cancel_crosses_relays_both_ways() {
    let mut c = Cluster::new(&[&["ann"], &["cat"]], ClientConfig::default());
    let id = buffer_under_way(&mut c, 3);
    let code = c.client(0, 0).client.cancel_send(id, 0);
    assert_eq!(code, ErrorCode::NOERR);
    c.run();
    assert_eq!(result_of(&c.client(0, 0).events, id), ErrorCode::CANCELLED);
    assert!(c
        .client(1, 0)
        .events
        .iter()
        .any(|e| matches!(e, Event::ReceiveFailed { code, .. } if *code == ErrorCode::CANCELLED)));
}

#[test]
fn a_login_on_another_relay_replaces_the_old_session() {
    let mut c = Cluster::new(&[&["ann", "cat"], &[]], ClientConfig::default());
    let cat2 = c.relays[1].connect("cat", b"good", ClientConfig::default());
    c.run();
    let kicked =
        c.client(0, 1).events.iter().any(
            |e| matches!(e, Event::Closed { code, .. } if *code == ErrorCode::KICKOUT_BY_RELOGIN),
        );
    assert!(kicked, "{:?}", c.client(0, 1).events);
    assert_eq!(command(&mut c, "cat", b"here?"), ErrorCode::NOERR);
    assert_eq!(received_cmds(c.client(1, cat2)).len(), 1);
}

#[test]
fn a_link_lost_mid_transfer_ends_its_messages_at_both_ends() {
    let mut c = Cluster::new(&[&["ann"], &["cat"]], ClientConfig::default());
    let id = buffer_under_way(&mut c, 4);
    // The runtime at relay 0 loses its link: it says so, and the other end hears it.
    let (&(i, link), _) = c.links.iter().find(|((i, _), _)| *i == 0).expect("a link");
    c.cut.push((i, link));
    c.relays[i].relay.handle_disconnect(link);
    c.run();
    assert_eq!(
        result_of(&c.client(0, 0).events, id),
        ErrorCode::CONNECTIONLOST
    );
    assert!(c.client(1, 0).events.iter().any(
        |e| matches!(e, Event::ReceiveFailed { code, .. } if *code == ErrorCode::CONNECTIONLOST)
    ));
    // A new message finds the user again.
    assert_eq!(command(&mut c, "cat", b"again"), ErrorCode::NOERR);
}

#[test]
fn a_receiver_leaving_closes_the_links_to_it() {
    let mut c = Cluster::new(&[&["ann"], &["cat"]], ClientConfig::default());
    assert_eq!(command(&mut c, "cat", b"one"), ErrorCode::NOERR);
    c.relays[1].drop_node(0);
    c.run();
    assert_eq!(command(&mut c, "cat", b"two"), ErrorCode::OFFLINE);
}

#[test]
fn what_other_relays_may_send_one_relay_stays_in_its_link_budget() {
    // Six receivers on relay 1 that stop reading their sockets, six senders on relay 0
    // sending them 4 MiB each: relay 1's links may have at most max_link_bytes and 64 KiB
    // each promised, and everything arrives once the receivers read again. (A sender's
    // relay uses the last bytes of its credit, cutting a frame if it must: the far relay
    // grants more only once it is used, and once deadlocked here.)
    let relay = RelayConfig {
        max_link_bytes: 512 * 1024,
        ..clustered()
    };
    let senders = ["s0", "s1", "s2", "s3", "s4", "s5"];
    let receivers = ["r0", "r1", "r2", "r3", "r4", "r5"];
    let mut c = Cluster::with(&[&senders, &receivers], ClientConfig::default(), relay);
    for node in &mut c.relays[1].nodes {
        node.receiving = false;
    }
    let mut sends = Vec::new();
    for (i, to) in receivers.iter().enumerate() {
        let now = c.relays[0].now;
        let id = c
            .client(0, i)
            .client
            .send_buffer(now, to, content(4 << 20, i as u64), 0)
            .unwrap();
        sends.push((i, id));
    }
    let peak = std::cell::Cell::new(0u64);
    let links = std::cell::Cell::new(0usize);
    c.run_until(|c| {
        let stats = c.relays[1].relay.stats();
        peak.set(peak.get().max(stats.link_credit));
        links.set(links.get().max(stats.links));
        false
    });
    let bound = relay.max_link_bytes + links.get() as u64 * peermsg::relay::INITIAL_CONN_CREDIT;
    assert_eq!(links.get(), 6);
    assert!(
        peak.get() > 0 && peak.get() <= bound,
        "{} > {bound}",
        peak.get()
    );
    for i in 0..receivers.len() {
        c.relays[1].nodes[i].receiving = true;
    }
    c.run();
    for (i, id) in sends {
        assert_eq!(result_of(&c.client(0, i).events, id), ErrorCode::NOERR);
        let got = c.relays[1].nodes[i].side.events.iter().any(|e| {
            matches!(e, Event::BufferReceived { data, .. } if *data == content(4 << 20, i as u64))
        });
        assert!(got, "buffer {i}");
    }
    // At rest the links keep what they were granted, within the same bound.
    assert!(c.relays[1].relay.stats().link_credit <= bound);
}

#[test]
fn transfers_of_any_size_finish_through_a_tight_link_budget() {
    // The sender's relay uses the last bytes of a link's credit by cutting a frame; the
    // rest must go on when the far relay grants more, whatever the sizes.
    let relay = RelayConfig {
        max_link_bytes: 64 * 1024,
        ..clustered()
    };
    for (i, size) in [(1u64 << 20) + 77, 3 << 20, 700_001, 65_537]
        .into_iter()
        .enumerate()
    {
        let mut c = Cluster::with(&[&["ann"], &["cat"]], ClientConfig::default(), relay);
        let now = c.relays[0].now;
        let data = content(size as usize, i as u64);
        let side = c.client(0, 0);
        let file = side.client.send_file(now, "cat", "f.bin", size, 0).unwrap();
        side.files.insert(file, data.clone());
        let buffer = side
            .client
            .send_buffer(now, "cat", data.clone(), 0)
            .unwrap();
        c.run_for(std::time::Duration::from_secs(1));
        for id in [file, buffer] {
            assert_eq!(
                result_of(&c.client(0, 0).events, id),
                ErrorCode::NOERR,
                "size {size}"
            );
        }
    }
}

#[test]
fn idle_links_close_at_both_ends_and_a_new_message_finds_its_user_again() {
    let mut c = Cluster::new(&[&["ann"], &["cat"]], ClientConfig::default());
    assert_eq!(command(&mut c, "cat", b"one"), ErrorCode::NOERR);
    assert_eq!(c.relays[0].relay.stats().links, 1);
    assert_eq!(c.relays[1].relay.stats().links, 1);
    // The sender's relay closes its link after the idle timeout (60 s); its CLOSE ends
    // the other end.
    c.run_for(std::time::Duration::from_secs(61));
    assert_eq!(c.relays[0].relay.stats().links, 0);
    assert_eq!(c.relays[1].relay.stats().links, 0);
    assert_eq!(command(&mut c, "cat", b"two"), ErrorCode::NOERR);
    assert_eq!(received_cmds(c.client(1, 0)).len(), 2);
}

#[test]
fn an_incoming_link_its_sender_forgot_closes_after_twice_the_idle_timeout() {
    let mut c = Cluster::new(&[&["ann"], &["cat"]], ClientConfig::default());
    assert_eq!(command(&mut c, "cat", b"one"), ErrorCode::NOERR);
    // The sender's relay loses the link without a word reaching the other end.
    let (&(i, link), _) = c.links.iter().find(|((i, _), _)| *i == 0).expect("a link");
    c.cut.push((i, link));
    c.links.clear();
    c.relays[0].relay.handle_disconnect(link);
    c.run_for(std::time::Duration::from_secs(100));
    assert_eq!(c.relays[1].relay.stats().links, 1, "not before 120 s");
    c.run_for(std::time::Duration::from_secs(21));
    assert_eq!(c.relays[1].relay.stats().links, 0);
}

#[test]
fn one_user_writing_to_many_users_elsewhere_cannot_fill_the_links_between_relays() {
    let many: Vec<String> = (0..200).map(|n| format!("u{n:03}")).collect();
    let mut far: Vec<&str> = vec!["cat"];
    far.extend(many.iter().map(String::as_str));
    let mut c = Cluster::new(&[&["ann", "ben"], &far], ClientConfig::default());
    // ann writes once to each of 200 users on the other relay, one after another (which
    // held 128 links there, its max_links, for a minute, and every other send between
    // the two relays failed with LIMIT_EXCEEDED).
    for to in &many {
        assert_eq!(command(&mut c, to, b"hi"), ErrorCode::NOERR, "to {to}");
        let links = c.relays[1].relay.stats().links;
        assert!(links <= 8, "{links} links held for ann's idle messages");
    }
    // ben still reaches cat.
    assert_eq!(
        command_from(&mut c, 1, "cat", b"still here"),
        ErrorCode::NOERR
    );
}

#[test]
fn a_sender_with_a_message_on_each_of_its_links_opens_no_more() {
    let mut c = Cluster::new(
        &[
            &["ann"],
            &["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"],
        ],
        ClientConfig::default(),
    );
    // Nine commands to nine users elsewhere reach ann's relay together: the first eight
    // each open a link and wait on it; the ninth finds ann at her bound, with no link
    // idle, and is refused.
    let now = c.relays[0].now;
    let ids: Vec<SendId> = (0..9)
        .map(|n| {
            let to = format!("u{n}");
            c.client(0, 0)
                .client
                .send_cmd(now, &to, Bytes::from_static(b"hi"), 0)
                .unwrap()
        })
        .collect();
    c.run();
    let results: Vec<ErrorCode> = ids
        .iter()
        .map(|id| result_of(&c.client(0, 0).events, *id))
        .collect();
    assert_eq!(&results[..8], &[ErrorCode::NOERR; 8]);
    assert_eq!(results[8], ErrorCode::LIMIT_EXCEEDED);
    // Once they are answered her links are idle: a new user elsewhere is reached, an idle
    // link of hers closed for it.
    assert_eq!(command(&mut c, "u8", b"again"), ErrorCode::NOERR);
    assert!(c.relays[0].relay.stats().links <= 8);
}

#[test]
fn idle_links_make_room_for_a_new_one_at_a_relays_bound() {
    let relay = RelayConfig {
        max_links: 4,
        ..clustered()
    };
    let far: &[&str] = &["u0", "u1", "u2", "u3", "cat"];
    let mut c = Cluster::with(&[&["ann", "ben"], far], ClientConfig::default(), relay);
    // ann's four commands leave four idle links at the far relay, its bound.
    for to in ["u0", "u1", "u2", "u3"] {
        assert_eq!(command(&mut c, to, b"hi"), ErrorCode::NOERR);
    }
    assert_eq!(c.relays[1].relay.stats().links, 4);
    // ben's command to cat needs a fifth: the idlest goes for it (the far relay refused
    // it, BUSY, until the idle links timed out a minute later).
    assert_eq!(command_from(&mut c, 1, "cat", b"room?"), ErrorCode::NOERR);
    assert_eq!(c.relays[1].relay.stats().links, 4);
    // And the user whose link went is reached again.
    assert_eq!(command(&mut c, "u0", b"again"), ErrorCode::NOERR);
}

/// User `n`'s sealing, trusting keys on first use.
fn sealing(n: u8) -> Sealing {
    Sealing {
        secret: [n; 32],
        entropy: [n.wrapping_mul(31); 32],
        pinned: Vec::new(),
        trust_first_use: true,
    }
}

/// `name` logs in on `relay`, sealing as user `n` if given.
fn join(c: &mut Cluster, relay: usize, name: &str, n: Option<u8>) {
    let net = &mut c.relays[relay];
    let i = net.connect(name, b"good", ClientConfig::default());
    if let Some(n) = n {
        net.nodes[i].side.client.set_sealing(sealing(n));
    }
}

/// The keys `user` on `relay` was told, in order.
fn keys_told(c: &mut Cluster, relay: usize, user: usize) -> Vec<(String, Option<IdentityKey>)> {
    c.client(relay, user)
        .events
        .iter()
        .filter_map(|e| match e {
            Event::PeerKey { user, key, .. } => Some((user.to_string(), *key)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_users_key_is_found_on_the_relay_it_is_logged_in_on() {
    let mut c = Cluster::new(&[&[], &[]], ClientConfig::default());
    join(&mut c, 0, "ann", Some(1));
    join(&mut c, 1, "cat", Some(3));
    join(&mut c, 1, "dan", Some(4));
    join(&mut c, 1, "eve", None);
    c.run();
    for who in ["cat", "eve", "nobody"] {
        c.client(0, 0).client.query_key(UserId::new(who).unwrap());
    }
    c.run();
    // cat's key as cat's own HELLO announced it; eve seals nothing, nobody is nowhere.
    assert_eq!(
        keys_told(&mut c, 0, 0),
        vec![
            ("cat".to_string(), Some(identity_of(&[3; 32]))),
            ("eve".to_string(), None),
            ("nobody".to_string(), None),
        ]
    );
    // A user here is answered here, without asking the cluster.
    let asked = |c: &Cluster, relay: usize| {
        c.relays[relay]
            .relay_events
            .iter()
            .filter(|e| matches!(e, RelayEvent::KeyWanted { .. }))
            .count()
    };
    c.client(1, 1).client.query_key(UserId::new("cat").unwrap());
    c.run();
    assert_eq!(asked(&c, 1), 0);
    assert_eq!(
        keys_told(&mut c, 1, 1),
        vec![("cat".to_string(), Some(identity_of(&[3; 32])))]
    );
    assert_eq!(asked(&c, 0), 3);
}

#[test]
fn a_client_has_a_bounded_number_of_keys_looked_up_elsewhere_at_once() {
    let mut net = Net::new(&[], ClientConfig::default(), clustered(), 5);
    net.connect("ann", b"good", ClientConfig::default());
    net.nodes[0].side.client.set_sealing(sealing(1));
    net.run();
    for i in 0..12 {
        net.nodes[0]
            .side
            .client
            .query_key(UserId::new(&format!("u{i}")).unwrap());
    }
    net.run();
    let wanted: Vec<(ConnId, String)> = net
        .relay_events
        .iter()
        .filter_map(|e| match e {
            RelayEvent::KeyWanted { conn, user } => Some((*conn, user.to_string())),
            _ => None,
        })
        .collect();
    // Eight are looked up; the rest are answered "no key" at once.
    assert_eq!(wanted.len(), 8);
    let told = |net: &Net| {
        net.nodes[0]
            .side
            .events
            .iter()
            .filter(|e| matches!(e, Event::PeerKey { .. }))
            .count()
    };
    assert_eq!(told(&net), 4);
    // An answer nobody asked for goes nowhere; each asked one is answered once.
    let key = Some(identity_of(&[9; 32]));
    net.relay
        .answer_key(ConnId(0), UserId::new("u11").unwrap(), key);
    net.run();
    assert_eq!(told(&net), 4);
    for (conn, user) in &wanted {
        net.relay
            .answer_key(*conn, UserId::new(user.as_str()).unwrap(), key);
        net.relay
            .answer_key(*conn, UserId::new(user.as_str()).unwrap(), key);
    }
    net.run();
    assert_eq!(told(&net), 12);
    // With room again, the next query is looked up.
    net.nodes[0]
        .side
        .client
        .query_key(UserId::new("u12").unwrap());
    net.run();
    let wanted_now = net
        .relay_events
        .iter()
        .filter(|e| matches!(e, RelayEvent::KeyWanted { .. }))
        .count();
    assert_eq!(wanted_now, 9);
}
