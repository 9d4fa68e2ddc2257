//! Resumable file transfers (docs/PROTOCOL.md, "Resume"): a transfer cut by a lost
//! connection, of the sender, the receiver or both, continues from what the receiver holds
//! on the next attempt with the same key; a source that changed is never continued; a
//! receiver that keeps nothing gets the whole file again.

mod support;

use bytes::Bytes;
use peermsg::client::{ClientConfig, Event, SendId};
use peermsg::relay::{ConnId, Relay, RelayConfig};
use peermsg::wire::{
    Close, Data, Digest, Frame, Open, ResumeFrom, ResumeKey, Text, TransferKind, UserId,
};
use peermsg::{ErrorCode, Instant};
use proptest::prelude::*;
use support::net::Net;
use support::{content, encode, hello, login, written, FileStore, Sim};

const KEY: ResumeKey = ResumeKey([7; 16]);

fn config() -> ClientConfig {
    support::resumable_config()
}

/// alice and bob on a relay; bob keeps partial files.
fn network(seed: u64) -> Net {
    Net::new(&["alice", "bob"], config(), RelayConfig::default(), seed)
}

/// Node `i` sends `file` to bob under `KEY`.
fn send(net: &mut Net, i: usize, file: &Bytes) -> SendId {
    let now = net.now;
    let side = &mut net.nodes[i].side;
    let id = side
        .client
        .send_file_resumable(now, "bob", "f.bin", file.len() as u64, KEY, 0)
        .expect("send");
    side.files.insert(id, file.clone());
    id
}

/// The result of send `id` on node `i`, if it has one.
fn result(net: &Net, i: usize, id: SendId) -> Option<ErrorCode> {
    net.nodes[i].side.events.iter().find_map(|e| match e {
        Event::SendResult { id: r, code, .. } if *r == id => Some(*code),
        _ => None,
    })
}

/// The offsets node `i`'s send `id` resumed from.
fn resumed(net: &Net, i: usize, id: SendId) -> Vec<u64> {
    net.nodes[i]
        .side
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Resumed { id: r, offset, .. } if *r == id => Some(*offset),
            _ => None,
        })
        .collect()
}

/// Node `i` of user `name` dies; the user connects again, keeping what the old node's
/// application kept (its partial files). Returns the new node.
fn restart(net: &mut Net, i: usize, name: &str) -> usize {
    net.drop_node(i);
    let new = net.connect(name, b"good", config());
    let kept = std::mem::take(&mut net.nodes[i].side.store);
    net.nodes[new].side.store = FileStore {
        keyed: Default::default(),
        repeats: Vec::new(),
        ..kept
    };
    net.run();
    new
}

/// Sends `file` from alice to bob, cutting the attempt when bob has stored each of `cuts`
/// more bytes, killing alice (0), bob (1) or both (2); returns the network, alice's and
/// bob's last nodes, and the offsets each attempt resumed from.
fn cut_and_resume(
    file: &Bytes,
    cuts: &[(u64, u8)],
    record_every: usize,
    seed: u64,
) -> (Net, usize, usize, Vec<u64>) {
    let mut net = network(seed);
    let (mut alice, mut bob) = (0, 1);
    net.nodes[bob].side.store.record_every = record_every;
    let mut offsets = Vec::new();
    let mut cuts = cuts.iter();
    loop {
        let id = send(&mut net, alice, file);
        let stored = net.nodes[bob].side.store.stored_bytes;
        let cut = cuts.next();
        let at = cut.map_or(u64::MAX, |(more, _)| stored + more);
        net.run_until(|n| {
            n.nodes[bob].side.store.stored_bytes >= at || result(n, alice, id).is_some()
        });
        offsets.extend(resumed(&net, alice, id));
        if result(&net, alice, id) == Some(ErrorCode::NOERR) {
            return (net, alice, bob, offsets);
        }
        let Some((_, who)) = cut else {
            panic!("the last attempt ended with {:?}", result(&net, alice, id));
        };
        let sender = alice;
        if *who != 1 {
            alice = restart(&mut net, alice, "alice");
        }
        if *who != 0 {
            bob = restart(&mut net, bob, "bob");
        }
        net.run();
        match result(&net, sender, id) {
            // The receiver's confirmation was out before it died.
            Some(ErrorCode::NOERR) => return (net, alice, bob, offsets),
            code => assert_eq!(code, Some(ErrorCode::CONNECTIONLOST)),
        }
    }
}

#[test]
fn a_transfer_cut_twice_continues_from_what_the_receiver_holds() {
    let file = content(400_000, 1);
    let (net, alice, bob, offsets) = cut_and_resume(&file, &[(100_000, 1), (150_000, 0)], 1, 1);
    let bob_side = &net.nodes[bob].side;
    assert_eq!(bob_side.store.completed, vec![file.to_vec()]);
    // Every byte was stored once: each attempt went on from where the last stopped.
    assert_eq!(bob_side.store.stored_bytes, 400_000);
    assert_eq!(offsets.len(), 2, "two attempts resumed: {offsets:?}");
    assert!(
        offsets[0] >= 100_000 && offsets[1] >= 250_000,
        "{offsets:?}"
    );
    assert!(net.nodes[alice]
        .side
        .events
        .iter()
        .any(|e| matches!(e, Event::Progress { sent, .. } if *sent == 400_000)));
}

#[test]
fn a_receiver_that_keeps_nothing_gets_the_whole_file_again() {
    let file = content(200_000, 2);
    let mut net = network(2);
    let id = send(&mut net, 0, &file);
    net.run_until(|n| n.nodes[1].side.store.stored_bytes >= 50_000);
    let bob = restart(&mut net, 1, "bob");
    net.nodes[bob].side.store.partials.clear(); // a listener whose partials are gone
    net.run();
    assert_eq!(result(&net, 0, id), Some(ErrorCode::CONNECTIONLOST));
    let id = send(&mut net, 0, &file);
    net.run();
    assert_eq!(result(&net, 0, id), Some(ErrorCode::NOERR));
    assert_eq!(resumed(&net, 0, id), Vec::<u64>::new(), "from 0: no resume");
    assert_eq!(net.nodes[bob].side.store.completed, vec![file.to_vec()]);
}

#[test]
fn a_receiver_without_resume_is_sent_the_whole_file() {
    let file = content(100_000, 3);
    let plain = ClientConfig {
        resume_files: false,
        ..config()
    };
    let mut net = Net::new(&["alice"], config(), RelayConfig::default(), 3);
    let bob = net.connect("bob", b"good", plain);
    net.run();
    let id = send(&mut net, 0, &file);
    net.run();
    assert_eq!(result(&net, 0, id), Some(ErrorCode::NOERR));
    let offer_keys: Vec<_> = net.nodes[bob]
        .side
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Offer { resume_key, .. } => Some(*resume_key),
            _ => None,
        })
        .collect();
    assert_eq!(offer_keys, vec![None], "the application is not asked");
}

/// alice sends a file, bob is restarted once he has `cut` bytes; alice then sends it
/// again changed at byte `at`. Returns the network, bob's node, the changed file and the
/// second send.
fn resend_changed(seed: u64, cut: u64, at: usize) -> (Net, usize, Bytes, SendId) {
    let file = content(300_000, seed);
    let mut net = network(seed);
    let id = send(&mut net, 0, &file);
    net.run_until(|n| n.nodes[1].side.store.stored_bytes >= cut);
    let bob = restart(&mut net, 1, "bob");
    assert_eq!(result(&net, 0, id), Some(ErrorCode::CONNECTIONLOST));
    // The same name and size, one byte other.
    let mut changed = file.to_vec();
    changed[at] ^= 0xff;
    let changed = Bytes::from(changed);
    let id = send(&mut net, 0, &changed);
    net.run();
    (net, bob, changed, id)
}

#[test]
fn a_source_that_changed_before_the_offset_is_never_continued() {
    let (mut net, bob, changed, id) = resend_changed(4, 120_000, 10);
    assert_eq!(result(&net, 0, id), Some(ErrorCode::DIGEST_MISMATCH));
    assert!(resumed(&net, 0, id).is_empty());
    assert!(
        net.nodes[bob].side.store.partials.is_empty(),
        "the receiver dropped its bytes"
    );
    assert!(net.nodes[bob].side.store.completed.is_empty());
    // Sent again, it starts over and arrives as it is now.
    let id = send(&mut net, 0, &changed);
    net.run();
    assert_eq!(result(&net, 0, id), Some(ErrorCode::NOERR));
    assert_eq!(net.nodes[bob].side.store.completed, vec![changed.to_vec()]);
}

#[test]
fn a_source_that_changed_only_past_the_offset_arrives_as_it_is_now() {
    let (net, bob, changed, id) = resend_changed(5, 60_000, 299_000);
    assert_eq!(result(&net, 0, id), Some(ErrorCode::NOERR));
    assert_eq!(resumed(&net, 0, id).len(), 1);
    assert_eq!(net.nodes[bob].side.store.completed, vec![changed.to_vec()]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Cut at random points, killing the sender, the receiver or both, with partials
    /// recorded at some granularity: the file arrives once, whole and verified (a sender
    /// that never heard of its delivery sends it again, and the receiver knows it whole),
    /// and each cut costs at most the unrecorded bytes again.
    #[test]
    fn cuts_at_random_points_cost_at_most_what_was_not_recorded(
        len in 1usize..300_000,
        cuts in prop::collection::vec((1u64..120_000, 0u8..3), 1..5),
        record_every in prop::sample::select(vec![1usize, 4096, 65_536]),
        seed in any::<u64>(),
    ) {
        let file = content(len, seed);
        let (net, _alice, bob, _) = cut_and_resume(&file, &cuts, record_every, seed);
        let side = &net.nodes[bob].side;
        prop_assert_eq!(side.store.completed.len(), 1, "one file completed");
        prop_assert!(side.store.completed[0] == file, "the file as sent");
        let again = side.store.stored_bytes - len as u64;
        prop_assert!(
            again <= (cuts.len() * (record_every - 1)) as u64,
            "{} bytes stored again over {} cuts",
            again,
            cuts.len()
        );
    }
}

#[test]
fn a_file_delivered_to_a_sender_that_never_heard_is_not_delivered_twice() {
    let file = content(37_386, 6);
    let mut net = network(6);
    let id = send(&mut net, 0, &file);
    // bob has all of it and confirms; alice dies before the confirmation reaches her.
    net.run_until(|n| n.nodes[1].side.store.completed.len() == 1);
    let alice = restart(&mut net, 0, "alice");
    assert_eq!(result(&net, 0, id), Some(ErrorCode::CONNECTIONLOST));
    let id = send(&mut net, alice, &file);
    net.run();
    assert_eq!(result(&net, alice, id), Some(ErrorCode::NOERR));
    assert_eq!(resumed(&net, alice, id), vec![37_386], "resumed at its end");
    assert_eq!(net.nodes[1].side.store.completed.len(), 1, "kept once");
    assert_eq!(net.nodes[1].side.store.stored_bytes, 37_386);
}

/// A relay with `mallory` (connection 0) and `bob` (1) logged in, both announcing resume;
/// mallory has opened a file to bob under a key, and bob has it.
fn relay_with_a_keyed_open() -> Relay {
    let mut relay = Relay::new(RelayConfig::default()).unwrap();
    for (i, user) in ["mallory", "bob"].into_iter().enumerate() {
        relay.open(Instant::ZERO, ConnId(i as u64)).unwrap();
        relay.handle_input(
            Instant::ZERO,
            ConnId(i as u64),
            &encode(&[hello(), login(user)]),
        );
        relay.accept_login(ConnId(i as u64)).unwrap();
        written(&mut relay, ConnId(i as u64));
    }
    let open = Frame::Open(Open {
        id: 0,
        kind: TransferKind::File,
        peer: UserId::new("bob").unwrap(),
        size: 100,
        name: Text::from("f"),
        resume_key: Some(KEY),
        seal: None,
    });
    relay.handle_input(Instant::ZERO, ConnId(0), &encode(&[open]));
    let to_bob = written(&mut relay, ConnId(1));
    assert!(
        matches!(
            &to_bob[..],
            [Frame::Open(Open {
                resume_key: Some(KEY),
                seal: None,
                ..
            })]
        ),
        "{to_bob:?}"
    );
    relay
}

fn closed_for_violation(frames: &[Frame]) -> bool {
    matches!(frames.last(), Some(Frame::Close(Close { code, .. })) if *code == ErrorCode::PROTOCOL_VIOLATION)
}

#[test]
fn data_before_the_receivers_answer_closes_the_sender() {
    let mut relay = relay_with_a_keyed_open();
    let data = Frame::Data(Data {
        id: 0,
        offset: 0,
        payload: Bytes::from_static(b"early"),
    });
    relay.handle_input(Instant::ZERO, ConnId(0), &encode(&[data]));
    assert!(closed_for_violation(&written(&mut relay, ConnId(0))));
}

#[test]
fn a_resume_answer_not_asked_for_or_past_the_size_closes_the_receiver() {
    let answer = |offset| {
        Frame::ResumeFrom(ResumeFrom {
            id: 0,
            offset,
            digest: Digest::Crc32c(0),
        })
    };
    // Past the declared size.
    let mut relay = relay_with_a_keyed_open();
    relay.handle_input(Instant::ZERO, ConnId(1), &encode(&[answer(101)]));
    assert!(closed_for_violation(&written(&mut relay, ConnId(1))));
    // Twice: the first goes to the sender with its id, the second closes.
    let mut relay = relay_with_a_keyed_open();
    relay.handle_input(Instant::ZERO, ConnId(1), &encode(&[answer(40)]));
    let to_mallory = written(&mut relay, ConnId(0));
    assert!(
        matches!(
            &to_mallory[..],
            [Frame::ResumeFrom(ResumeFrom {
                id: 0,
                offset: 40,
                ..
            })]
        ),
        "{to_mallory:?}"
    );
    relay.handle_input(Instant::ZERO, ConnId(1), &encode(&[answer(40)]));
    assert!(closed_for_violation(&written(&mut relay, ConnId(1))));
}

#[test]
fn a_buffer_cut_by_a_lost_connection_goes_on_from_what_the_receiver_kept() {
    let buffer = content(300_000, 9);
    let keeps = ClientConfig {
        resume_buffers: true,
        ..config()
    };
    let mut net = Net::new(&["alice"], keeps, RelayConfig::default(), 9);
    let bob = net.connect("bob", b"good", keeps);
    net.run();
    let now = net.now;
    let id = net.nodes[0]
        .side
        .client
        .send_buffer_resumable(now, "bob", buffer.clone(), KEY, 0)
        .unwrap();
    let received = |n: &Net, node: usize| {
        n.nodes[node]
            .side
            .events
            .iter()
            .filter_map(|e| match e {
                Event::ReceiveProgress { received, .. } => Some(*received),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    };
    net.run_until(|n| received(n, bob) >= 100_000);
    net.drop_node(bob);
    let held = net.nodes[bob].side.buffer_partials.clone();
    assert_eq!(held.len(), 1, "its bytes so far were handed over");
    let kept = held.values().next().unwrap().len() as u64;
    assert!(kept >= 100_000);
    let bob = net.connect("bob", b"good", keeps);
    net.nodes[bob].side.buffer_partials = held;
    net.run();
    assert_eq!(result(&net, 0, id), Some(ErrorCode::CONNECTIONLOST));
    let now = net.now;
    let id = net.nodes[0]
        .side
        .client
        .send_buffer_resumable(now, "bob", buffer.clone(), KEY, 0)
        .unwrap();
    net.run();
    assert_eq!(result(&net, 0, id), Some(ErrorCode::NOERR));
    assert_eq!(resumed(&net, 0, id), vec![kept]);
    let delivered: Vec<_> = net.nodes[bob]
        .side
        .events
        .iter()
        .filter_map(|e| match e {
            Event::BufferReceived { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect();
    assert!(delivered == vec![buffer], "the buffer, whole");
}
