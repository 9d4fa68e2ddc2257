//! Random operations across several clients through one relay: every send gets exactly one
//! result, nothing reaches a user it was not addressed to, receivers see the real sender,
//! and what the relay holds stays within its bound at every step.

mod support;

use bytes::Bytes;
use peermsg::client::{ClientConfig, Event, SendId, SendKind};
use peermsg::relay::RelayConfig;
use peermsg::ErrorCode;
use proptest::prelude::*;
use support::net::Net;
use support::Sim;

const USERS: [&str; 4] = ["ann", "ben", "cat", "dan"];

#[derive(Clone, Debug)]
enum Op {
    /// From user, to user (a name of USERS or "ghost"), size, kind 0 cmd / 1 buffer / 2 file.
    Send(usize, usize, usize, u8),
    Cancel(usize, usize),
    Drop(usize),
    Run,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..4, 0usize..5, 0usize..600_000, 0u8..3).prop_map(|(f, t, s, k)| Op::Send(f, t, s, k)),
        1 => (0usize..4, any::<usize>()).prop_map(|(f, n)| Op::Cancel(f, n)),
        1 => (0usize..4).prop_map(Op::Drop),
        3 => Just(Op::Run),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn the_relay_keeps_the_rules(ops in proptest::collection::vec(op(), 1..30), seed in any::<u64>(), piece in 1u64..6000) {
        let relay_config = RelayConfig { transfer_window: 64 * 1024, conn_window: 192 * 1024, ..RelayConfig::default() };
        let client = ClientConfig { transfer_window: 128 * 1024, conn_window: 256 * 1024, ..ClientConfig::default() };
        let mut n = Net::new(&USERS, client, relay_config, seed);
        n.max_piece = piece;
        let mut sends: Vec<(usize, SendId, usize, Bytes)> = Vec::new();
        let mut bound_violation = None;
        for (k, op) in ops.into_iter().enumerate() {
            let now = n.now;
            match op {
                Op::Send(from, to, size, kind) => {
                    if !n.nodes[from].up { continue; }
                    let to_name = USERS.get(to).copied().unwrap_or("ghost");
                    // Content names sender, receiver and op, so a misdelivery shows.
                    let tag = format!("{}>{}#{k};", USERS[from], to_name);
                    let mut v = tag.clone().into_bytes();
                    v.resize(size.max(tag.len()), b'.');
                    if kind == 0 { v.truncate(60_000.max(tag.len())); }
                    let data = Bytes::from(v);
                    let side = &mut n.nodes[from].side;
                    let sent = match kind {
                        0 => side.client.send_cmd(now, to_name, data.clone(), k as u64),
                        1 => side.client.send_buffer(now, to_name, data.clone(), k as u64),
                        _ => side.client.send_file(now, to_name, &tag, data.len() as u64, k as u64).inspect(|id| {
                            side.files.insert(*id, data.clone());
                        }),
                    };
                    if let Ok(id) = sent {
                        sends.push((from, id, to, data));
                    }
                }
                Op::Cancel(from, which) => {
                    let mine: Vec<_> = sends.iter().filter(|s| s.0 == from).collect();
                    if let Some(s) = mine.get(which % mine.len().max(1)) {
                        n.nodes[from].side.client.cancel_send(s.1, 0);
                    }
                }
                Op::Drop(i) => {
                    if n.nodes[i].up { n.drop_node(i); }
                }
                Op::Run => {
                    for _ in 0..30 {
                        n.run_until(|_| false);
                    }
                }
            }
            let bound = relay_config.conn_window * 4 + 4 * client.transfer_window * 2 + 4 * 64 * 1024;
            if n.relay_peak > bound && bound_violation.is_none() {
                bound_violation = Some(n.relay_peak);
            }
        }
        n.run();
        prop_assert_eq!(bound_violation, None, "relay held more than its bound");
        // Quiet: every message ended, and the relay's running count of what it holds agrees.
        prop_assert_eq!(n.relay.held_bytes(), 0, "held bytes left over");
        if std::env::var_os("PROPS_DEBUG").is_some() {
            let ok = n.nodes.iter().flat_map(|x| &x.side.events).filter(|e| matches!(e, Event::SendResult { code, .. } if code.is_success())).count();
            eprintln!("sends {} ok {ok} relay peak {}", sends.len(), n.relay_peak);
        }

        // Exactly one result for every send of a connected sender (a dropped one has its
        // results from its own client, CONNECTIONLOST).
        for (from, id, to, data) in &sends {
            let events = &n.nodes[*from].side.events;
            let codes: Vec<ErrorCode> = events.iter().filter_map(|e| match e {
                Event::SendResult { id: i, code, .. } if i == id => Some(*code),
                _ => None,
            }).collect();
            prop_assert_eq!(codes.len(), 1, "results for {} of {}: {:?}", id, USERS[*from], codes);
            if *to >= USERS.len() {
                let ok = [ErrorCode::OFFLINE, ErrorCode::CANCELLED, ErrorCode::CONNECTIONLOST];
                prop_assert!(ok.contains(&codes[0]), "to a ghost: {}", codes[0]);
            }
            if codes[0] == ErrorCode::NOERR {
                let got = n.nodes[*to].side.events.iter().any(|e| match e {
                    Event::CmdReceived { data: d, .. } | Event::BufferReceived { data: d, .. } => d == data,
                    Event::Offer { name, kind: SendKind::File, .. } => data.starts_with(name.as_bytes()),
                    _ => false,
                });
                prop_assert!(got, "confirmed but not received");
            }
        }
        // Nothing reached anyone it was not addressed to, and the sender is the real one.
        for (j, node) in n.nodes.iter().enumerate() {
            for e in &node.side.events {
                let (from, head) = match e {
                    Event::CmdReceived { from, data, .. } | Event::BufferReceived { from, data, .. } => (from, data.clone()),
                    Event::Offer { from, name, kind: SendKind::File, .. } => (from, Bytes::copy_from_slice(name.as_bytes())),
                    _ => continue,
                };
                let head = String::from_utf8_lossy(&head[..head.len().min(40)]).to_string();
                let expected = format!("{}>{}#", from, USERS[j]);
                prop_assert!(head.starts_with(&expected), "{} got {:?} claiming {}", USERS[j], head, from);
            }
        }
    }
}
