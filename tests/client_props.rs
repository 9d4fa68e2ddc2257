//! Random operation sequences on two clients over a simulated link with random splitting,
//! checked against the rules every send must keep.

mod support;

use std::collections::HashMap;

use bytes::Bytes;
use peermsg::client::{ClientConfig, Event, SendId, SendKind};
use peermsg::ErrorCode;
use proptest::prelude::*;
use support::Sim;
use support::{content, Link};

#[derive(Clone, Debug)]
enum Op {
    Cmd(usize),
    Buffer(usize),
    File(usize),
    /// Cancel the n-th send made so far (by either side).
    Cancel(usize),
    /// Reject the n-th offer received so far.
    Reject(usize),
    /// Move some bytes (a few rounds).
    Run,
    /// The receiving application stops or starts taking events.
    Pause(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..70_000).prop_map(Op::Cmd),
        2 => (0usize..400_000).prop_map(Op::Buffer),
        2 => (0usize..2_000_000).prop_map(Op::File),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => any::<usize>().prop_map(Op::Reject),
        3 => Just(Op::Run),
        1 => any::<bool>().prop_map(Op::Pause),
    ]
}

fn config() -> ClientConfig {
    ClientConfig {
        transfer_window: 64 * 1024,
        conn_window: 256 * 1024,
        max_transfers: 4,
        max_cmds_in_flight: 8,
        progress_step: 16 * 1024,
        ..ClientConfig::default()
    }
}

/// What was sent, to compare with what arrived.
struct Sent {
    from_a: bool,
    kind: SendKind,
    data: Bytes,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_send_keeps_the_rules(ops in proptest::collection::vec((any::<bool>(), op()), 1..40), seed in any::<u64>(), piece in 1u64..5000) {
        let mut l = Link::direct(config(), seed);
        l.max_piece = piece;
        let mut sent: HashMap<(bool, SendId), Sent> = HashMap::new();
        let mut order: Vec<(bool, SendId)> = Vec::new();
        for (n, (from_a, op)) in ops.into_iter().enumerate() {
            let now = l.now;
            let (side, to) = if from_a { (&mut l.a, "bob") } else { (&mut l.b, "alice") };
            // Contents carry their send's number, so arrivals can be matched to sends.
            let tagged = |len: usize| {
                let mut v = content(len.max(8), n as u64).to_vec();
                v[..8].copy_from_slice(&(n as u64).to_be_bytes());
                Bytes::from(v)
            };
            let made = match op {
                Op::Cmd(len) => {
                    let data = tagged(len.min(64 * 1024));
                    side.client.send_cmd(now, to, data.clone(), n as u64).ok().map(|id| (id, SendKind::Cmd, data))
                }
                Op::Buffer(len) => {
                    let data = tagged(len);
                    side.client.send_buffer(now, to, data.clone(), n as u64).ok().map(|id| (id, SendKind::Buffer, data))
                }
                Op::File(len) => {
                    let data = tagged(len);
                    let name = format!("file-{n}");
                    side.client.send_file(now, to, &name, data.len() as u64, n as u64).ok().map(|id| {
                        side.files.insert(id, data.clone());
                        (id, SendKind::File, data)
                    })
                }
                Op::Cancel(k) => {
                    if let Some(&(a, id)) = order.get(k % order.len().max(1)) {
                        let side = if a { &mut l.a } else { &mut l.b };
                        side.client.cancel_send(id, 0);
                    }
                    None
                }
                Op::Reject(k) => {
                    let side = if from_a { &mut l.a } else { &mut l.b };
                    let offers: Vec<_> = side.events.iter().filter_map(|e| match e {
                        Event::Offer { id, .. } => Some(*id),
                        _ => None,
                    }).collect();
                    if let Some(id) = offers.get(k % offers.len().max(1)) {
                        let _ = side.client.reject(*id, ErrorCode::REJECTED);
                    }
                    None
                }
                Op::Run => {
                    for _ in 0..20 {
                        l.run_until(|_| false);
                    }
                    None
                }
                Op::Pause(reading) => {
                    if from_a { l.a.reading = reading } else { l.b.reading = reading }
                    None
                }
            };
            if let Some((id, kind, data)) = made {
                sent.insert((from_a, id), Sent { from_a, kind, data });
                order.push((from_a, id));
            }
        }
        l.a.reading = true;
        l.b.reading = true;
        l.run();
        if std::env::var_os("PROPS_DEBUG").is_some() {
            let ok = |ev: &Vec<Event>| ev.iter().filter(|e| matches!(e, Event::SendResult { code, .. } if code.is_success())).count();
            let all = |ev: &Vec<Event>| ev.iter().filter(|e| matches!(e, Event::SendResult { .. })).count();
            eprintln!("sends {} ok a {}/{} b {}/{}", order.len(), ok(&l.a.events), all(&l.a.events), ok(&l.b.events), all(&l.b.events));
        }

        for (a, events) in [(true, &l.a.events), (false, &l.b.events)] {
            // Exactly one result per send, nothing about it afterwards, progress monotonic
            // and within the total.
            let mut done: HashMap<SendId, ErrorCode> = HashMap::new();
            let mut last_progress: HashMap<SendId, u64> = HashMap::new();
            for e in events.iter() {
                match e {
                    Event::SendResult { id, code, .. } => {
                        prop_assert!(done.insert(*id, *code).is_none(), "two results for {id}");
                    }
                    Event::Progress { id, sent: s, total, .. } => {
                        prop_assert!(!done.contains_key(id), "progress after result for {id}");
                        prop_assert!(s <= total);
                        let prev = last_progress.insert(*id, *s).unwrap_or(0);
                        prop_assert!(*s > prev || *s == 0, "progress went from {prev} to {s}");
                    }
                    Event::FileRead { id, .. } => prop_assert!(!done.contains_key(id), "read after result"),
                    _ => {}
                }
            }
            let mine: Vec<_> = order.iter().filter(|(x, _)| *x == a).collect();
            prop_assert_eq!(done.len(), mine.len(), "every send has a result");
            // Every successful send arrived byte for byte on the other side.
            let other = if a { &l.b.events } else { &l.a.events };
            let mut files: HashMap<u64, Vec<u8>> = HashMap::new();
            let mut arrived: Vec<Bytes> = Vec::new();
            for e in other.iter() {
                match e {
                    Event::CmdReceived { data, .. } | Event::BufferReceived { data, .. } => arrived.push(data.clone()),
                    Event::FileData { id, offset, data, .. } => {
                        let f = files.entry(id.0).or_default();
                        prop_assert_eq!(*offset as usize, f.len());
                        f.extend_from_slice(data);
                    }
                    Event::FileReceived { id, .. } => arrived.push(Bytes::from(files.remove(&id.0).unwrap_or_default())),
                    _ => {}
                }
            }
            for key in mine {
                let s = &sent[key];
                prop_assert_eq!(s.from_a, a);
                if done[&key.1] == ErrorCode::NOERR {
                    prop_assert!(arrived.contains(&s.data), "{:?} {} confirmed but not delivered", s.kind, key.1);
                }
            }
        }
        // Memory: buffers and commands are held whole by design; beyond them, file bytes
        // in hand stay within the windows.
        let c = config();
        let whole: u64 = sent.values().filter(|s| s.kind != SendKind::File).map(|s| s.data.len() as u64).sum();
        let bound = whole + c.conn_window + c.max_transfers * c.transfer_window + 64 * 1024;
        prop_assert!(l.a.peak_buffered <= bound, "a held {} > {}", l.a.peak_buffered, bound);
        prop_assert!(l.b.peak_buffered <= bound, "b held {} > {}", l.b.peak_buffered, bound);
    }
}
