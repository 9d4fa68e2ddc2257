//! Clients that break the rules, written frame by frame against the relay, beside honest
//! clients whose transfers must not notice.

mod support;

use bytes::{Bytes, BytesMut};
use peermsg::client::{ClientConfig, Event};
use peermsg::relay::{ConnId, Relay, RelayConfig, RelayEvent, RelayOutput};
use peermsg::wire::*;
use peermsg::{ErrorCode, Instant};
use support::net::Net;
use support::Sim;
use support::{content, encode, hello, login, result_of, written};

const T: Instant = Instant::ZERO;

/// A relay with `mallory` logged in on connection 0, then `frames` from her.
fn mallory_sends(bytes: &[u8]) -> (Relay, Vec<Frame>, Vec<RelayEvent>) {
    let mut relay = Relay::new(RelayConfig::default()).unwrap();
    let m = ConnId(0);
    relay.open(T, m).unwrap();
    relay.handle_input(T, m, &encode(&[hello(), login("mallory")]));
    relay.accept_login(m).unwrap();
    written(&mut relay, m);
    relay.handle_input(T, m, bytes);
    let frames = written(&mut relay, m);
    let events = std::iter::from_fn(|| relay.poll_event()).collect();
    (relay, frames, events)
}

fn closed_with(bytes: &[u8], code: ErrorCode) {
    let (relay, frames, events) = mallory_sends(bytes);
    assert!(
        matches!(frames.last(), Some(Frame::Close(Close { code: c, .. })) if *c == code),
        "{:?}",
        frames.iter().map(Frame::frame_type).collect::<Vec<_>>()
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, RelayEvent::Closed { code: c, .. } if *c == code)));
    assert_eq!(
        relay.connections(),
        0,
        "its state is gone once the CLOSE is written"
    );
}

fn open(id: u64, to: &str, size: u64) -> Frame {
    Frame::Open(Open {
        id,
        kind: TransferKind::Buffer,
        peer: UserId::new(to).unwrap(),
        size,
        name: Text::new(),
        resume_key: None,
        seal: None,
    })
}

#[test]
fn nothing_but_login_before_login() {
    let mut relay = Relay::new(RelayConfig::default()).unwrap();
    relay.open(T, ConnId(1)).unwrap();
    let cmd = Frame::Cmd(Cmd {
        id: 0,
        peer: UserId::new("bob").unwrap(),
        once: None,
        total_len: 1,
        data: Bytes::from_static(b"x"),
    });
    relay.handle_input(T, ConnId(1), &encode(&[hello(), cmd]));
    let frames = written(&mut relay, ConnId(1));
    assert!(
        matches!(frames.last(), Some(Frame::Close(Close { code, .. })) if *code == ErrorCode::NOT_LOGIN)
    );
    // Not even a HELLO first: closed too.
    relay.open(T, ConnId(2)).unwrap();
    relay.handle_input(T, ConnId(2), &encode(&[login("x")]));
    assert!(
        matches!(written(&mut relay, ConnId(2)).last(), Some(Frame::Close(Close { code, .. })) if *code == ErrorCode::PROTOCOL_VIOLATION)
    );
}

#[test]
fn garbage_and_oversize_declarations_are_closed() {
    closed_with(b"\x00\x00\x00garbage", ErrorCode::PROTOCOL_VIOLATION);
    // A frame declaring 1 GiB of body.
    closed_with(
        &[0x13, 0xc0, 0, 0, 0, 0x40, 0, 0, 0],
        ErrorCode::PROTOCOL_VIOLATION,
    );
    // A buffer over the relay's cap.
    closed_with(
        &encode(&[open(0, "bob", (100 << 20) + 1)]),
        ErrorCode::PROTOCOL_VIOLATION,
    );
}

#[test]
fn ids_not_owned_are_closed() {
    let data = Frame::Data(Data {
        id: 3,
        offset: 0,
        payload: Bytes::from_static(b"x"),
    });
    closed_with(&encode(&[data]), ErrorCode::PROTOCOL_VIOLATION);
    closed_with(
        &encode(&[Frame::Credit(Credit {
            id: 0,
            max_offset: 1,
        })]),
        ErrorCode::PROTOCOL_VIOLATION,
    );
    closed_with(
        &encode(&[Frame::Result(MessageResult {
            id: 0,
            code: ErrorCode::NOERR,
        })]),
        ErrorCode::PROTOCOL_VIOLATION,
    );
    closed_with(&encode(&[open(1, "bob", 1)]), ErrorCode::PROTOCOL_VIOLATION); // skips id 0
}

#[test]
fn data_beyond_credit_is_closed() {
    // bob must exist for the transfer to be routed.
    let mut relay = Relay::new(RelayConfig::default()).unwrap();
    for (i, name) in ["mallory", "bob"].iter().enumerate() {
        relay.open(T, ConnId(i as u64)).unwrap();
        relay.handle_input(T, ConnId(i as u64), &encode(&[hello(), login(name)]));
        relay.accept_login(ConnId(i as u64)).unwrap();
        written(&mut relay, ConnId(i as u64));
    }
    let window = RelayConfig::default().transfer_window;
    let mut frames = vec![open(0, "bob", 10 << 20)];
    let mut offset = 0;
    while offset <= window {
        frames.push(Frame::Data(Data {
            id: 0,
            offset,
            payload: Bytes::from(vec![0; 16_000]),
        }));
        offset += 16_000;
    }
    relay.handle_input(T, ConnId(0), &encode(&frames));
    let out = written(&mut relay, ConnId(0));
    assert!(
        matches!(out.last(), Some(Frame::Close(Close { code, .. })) if *code == ErrorCode::FLOW_CONTROL)
    );
    // bob hears that the transfer is off.
    let to_bob = written(&mut relay, ConnId(1));
    assert!(to_bob.iter().any(
        |f| matches!(f, Frame::Cancel(Cancel { code, .. }) if *code == ErrorCode::CONNECTIONLOST)
    ));
}

#[test]
fn the_source_is_stamped_whatever_the_sender_writes() {
    let mut n = Net::new(
        &["alice", "bob"],
        ClientConfig::default(),
        RelayConfig::default(),
        1,
    );
    // mallory connects raw and sends bob a command; CMD has no source field to forge:
    // its peer field names the target, and the relay writes her own name in its place.
    let m = ConnId(n.nodes.len() as u64 + 100);
    n.relay.open(n.now, m).unwrap();
    let cmd = Frame::Cmd(Cmd {
        id: 0,
        peer: UserId::new("bob").unwrap(),
        once: None,
        total_len: 4,
        data: Bytes::from_static(b"evil"),
    });
    n.relay
        .handle_input(n.now, m, &encode(&[hello(), login("mallory")]));
    n.relay.accept_login(m).unwrap();
    n.relay.handle_input(n.now, m, &encode(&[cmd]));
    n.run();
    let b = &n.nodes[1].side.events;
    assert!(b
        .iter()
        .any(|e| matches!(e, Event::CmdReceived { from, data, .. }
        if from.as_str() == "mallory" && data[..] == b"evil"[..])));
}

#[test]
fn a_hostile_client_does_not_disturb_other_transfers() {
    let mut n = Net::new(
        &["alice", "bob"],
        ClientConfig::default(),
        RelayConfig::default(),
        2,
    );
    let now = n.now;
    let data = content(6 << 20, 1);
    let id = n.nodes[0]
        .side
        .client
        .send_buffer(now, "bob", data.clone(), 0)
        .unwrap();
    assert!(n.run_until(|n| n.nodes[1]
        .side
        .events
        .iter()
        .any(|e| matches!(e, Event::ReceiveProgress { .. }))));
    // mallory logs in as herself, floods bob with garbage frames, and is closed.
    let m = ConnId(77);
    n.relay.open(n.now, m).unwrap();
    n.relay
        .handle_input(n.now, m, &encode(&[hello(), login("mallory")]));
    n.relay.accept_login(m).unwrap();
    let junk = encode(&[
        open(0, "bob", 5),
        Frame::Data(Data {
            id: 0,
            offset: 3,
            payload: Bytes::from_static(b"xx"),
        }),
    ]);
    n.relay.handle_input(n.now, m, &junk);
    n.relay.handle_input(n.now, m, b"\xff\xff\xff\xff");
    n.run();
    assert_eq!(result_of(&n.nodes[0].side.events, id), ErrorCode::NOERR);
    assert!(n.nodes[1]
        .side
        .events
        .iter()
        .any(|e| matches!(e, Event::BufferReceived { data: d, .. } if *d == data)));
    assert!(!n.nodes[1].side.client.is_closed());
}

#[test]
fn a_client_that_only_writes_is_dropped_when_its_answers_pile_up() {
    let config = RelayConfig {
        receiver_queue: 64,
        max_queued_bytes: 2 * 64 + 4 * 1024,
        limits: Limits {
            max_frame_size: 1024,
            ..Limits::default()
        },
        ..RelayConfig::default()
    };
    let mut relay = Relay::new(config).unwrap();
    let m = ConnId(0);
    relay.open(T, m).unwrap();
    relay.handle_input(T, m, &encode(&[hello(), login("mallory")]));
    relay.accept_login(m).unwrap();
    let pings: Vec<Frame> = (0..2000).map(|nonce| Frame::Ping(Ping { nonce })).collect();
    relay.handle_input(T, m, &encode(&pings));
    let events: Vec<_> = std::iter::from_fn(|| relay.poll_event()).collect();
    assert!(events.iter().any(
        |e| matches!(e, RelayEvent::Closed { code, .. } if *code == ErrorCode::LIMIT_EXCEEDED)
    ));
    assert_eq!(relay.connections(), 0);
    assert_eq!(relay.buffered_bytes(), 0);
}

#[test]
fn an_idle_connection_is_closed_at_its_deadline() {
    let config = RelayConfig {
        login_timeout: std::time::Duration::from_secs(120),
        ..RelayConfig::default()
    };
    let mut relay = Relay::new(config).unwrap();
    relay.open(T, ConnId(0)).unwrap();
    relay
        .open(T + std::time::Duration::from_secs(10), ConnId(1))
        .unwrap();
    assert_eq!(relay.poll_timeout(), Some(T + config.idle_timeout));
    relay.handle_timeout(T + config.idle_timeout);
    let events: Vec<_> = std::iter::from_fn(|| relay.poll_event()).collect();
    assert_eq!(events.len(), 1);
    assert!(matches!(
        events[0],
        RelayEvent::Closed {
            conn: ConnId(0),
            code: ErrorCode::SOCKETTIMEOUT,
            ..
        }
    ));
    // The deadline moved to the other connection.
    assert_eq!(
        relay.poll_timeout(),
        Some(T + std::time::Duration::from_secs(10) + config.idle_timeout)
    );
}

/// A relay with alice on connection 0 and bob on 1; bob grants `bob_window` per transfer.
fn alice_and_bob(bob_window: u64) -> Relay {
    alice_and_bob_with(RelayConfig::default(), bob_window)
}

fn alice_and_bob_with(config: RelayConfig, bob_window: u64) -> Relay {
    let mut relay = Relay::new(config).unwrap();
    let (alice, bob) = (ConnId(0), ConnId(1));
    relay.open(T, alice).unwrap();
    relay.open(T, bob).unwrap();
    let bob_hello = Frame::Hello(Hello::new(
        Role::Client,
        &Limits::default(),
        8,
        8,
        bob_window,
        4 << 20,
    ));
    relay.handle_input(T, alice, &encode(&[hello(), login("alice")]));
    relay.handle_input(T, bob, &encode(&[bob_hello, login("bob")]));
    relay.accept_login(alice).unwrap();
    relay.accept_login(bob).unwrap();
    written(&mut relay, alice);
    written(&mut relay, bob);
    relay
}

/// Alice's transfer `id` to bob of `n` DATA frames of 16 KiB less a little.
fn transfer_to_bob(id: u64, n: u64) -> Vec<Frame> {
    let piece = 16 * 1024 - 16;
    let mut frames = vec![Frame::Open(Open {
        id,
        kind: TransferKind::Buffer,
        peer: UserId::new("bob").unwrap(),
        size: n * piece as u64,
        name: Text::new(),
        resume_key: None,
        seal: None,
    })];
    for i in 0..n {
        frames.push(Frame::Data(Data {
            id,
            offset: i * piece as u64,
            payload: Bytes::from(vec![i as u8; piece]),
        }));
    }
    frames
}

/// For each payload the relay writes to bob, whether it is a slice of `read`.
fn payloads_in(relay: &mut Relay, read: &std::ops::Range<usize>) -> Vec<bool> {
    let mut out = Transmit::new();
    while relay.poll_transmit(ConnId(1), &mut out) > 0 {}
    let mut shared = Vec::new();
    while let Some(chunk) = out.pop_chunk() {
        if chunk.len() >= SHARED_PAYLOAD_MIN {
            shared.push(read.contains(&(chunk.as_ptr() as usize)));
        }
    }
    shared
}

fn range_of(b: &BytesMut) -> std::ops::Range<usize> {
    b.as_ptr() as usize..b.as_ptr() as usize + b.len()
}

#[test]
fn data_waiting_for_credit_does_not_keep_the_senders_read_buffer() {
    // 192 KiB to bob in one read buffer (the relay grants alice 256 KiB); bob has
    // granted 64 KiB.
    let mut relay = alice_and_bob(64 * 1024);
    let read = encode(&transfer_to_bob(0, 12));
    let range = range_of(&read);
    relay.handle_input_buf(T, ConnId(0), read);
    // What bob's credit covers goes out as slices of the read buffer.
    let first = payloads_in(&mut relay, &range);
    assert!(
        !first.is_empty() && first.iter().all(|&inside| inside),
        "{first:?}"
    );
    // What had to wait was copied out of it, so the buffer is not kept for it. Bob grants
    // what he consumed plus his window, as often as it takes.
    let mut later = Vec::new();
    while first.len() + later.len() < 12 {
        let consumed = (first.len() + later.len()) as u64 * (16 * 1024 - 16);
        let credit = Frame::Credit(Credit {
            id: 0,
            max_offset: consumed + 64 * 1024,
        });
        relay.handle_input(T, ConnId(1), &encode(&[credit]));
        let more = payloads_in(&mut relay, &range);
        assert!(!more.is_empty());
        later.extend(more);
    }
    assert!(later.iter().all(|&inside| !inside), "{later:?}");
}

#[test]
fn data_queued_behind_an_undrained_socket_does_not_keep_the_read_buffer() {
    // Bob grants plenty, but his runtime takes nothing: past the first batch, what queues
    // for him is copied out of alice's read buffer.
    let mut relay = alice_and_bob(1 << 20);
    let mut frames = transfer_to_bob(0, 15);
    frames.extend(transfer_to_bob(1, 15));
    let read = encode(&frames);
    let range = range_of(&read);
    relay.handle_input_buf(T, ConnId(0), read);
    let shared = payloads_in(&mut relay, &range);
    assert_eq!(shared.len(), 30);
    let batch = RelayConfig::default().transmit_batch / (16 * 1024);
    assert!(shared[..batch].iter().all(|&inside| inside), "{shared:?}");
    assert!(
        shared[batch + 1..].iter().all(|&inside| !inside),
        "{shared:?}"
    );
}

/// Takes everything the relay has to give: none of it is for bob (connection 1).
fn nothing_more_for_bob(relay: &mut Relay, out: &mut Transmit) {
    loop {
        match relay.poll_output(out) {
            RelayOutput::Transmit(conn, _) => {
                assert_ne!(conn, ConnId(1), "bob's transport is gone")
            }
            RelayOutput::Event(_) => {}
            _ => break,
        }
    }
}

#[test]
fn a_lost_transport_gets_no_more_frames_and_its_queue_is_released() {
    // Bob's runtime takes nothing, then his transport is lost with frames queued for it:
    // the relay gives no more of them to write (the runtime has no transport to write
    // them to), and the bytes they held are released.
    let mut relay = alice_and_bob(1 << 20);
    relay.pause_writes(ConnId(1));
    relay.handle_input(T, ConnId(0), &encode(&transfer_to_bob(0, 15)));
    assert!(relay.held_bytes() > 0, "frames wait for bob");
    relay.handle_disconnect(ConnId(1));
    let mut out = Transmit::new();
    nothing_more_for_bob(&mut relay, &mut out);
    assert_eq!(relay.poll_transmit(ConnId(1), &mut out), 0);
    assert_eq!(relay.held_bytes(), 0, "what waited for bob is released");

    // The same with bob's runtime writing, its transport lost (a write failed) while
    // frames were queued: none of them is given to write.
    let mut relay = alice_and_bob(1 << 20);
    relay.handle_input(T, ConnId(0), &encode(&transfer_to_bob(0, 15)));
    relay.handle_disconnect(ConnId(1));
    nothing_more_for_bob(&mut relay, &mut out);
    assert_eq!(relay.held_bytes(), 0);
}

#[test]
fn new_messages_reach_a_receiver_in_the_order_of_their_ids() {
    // Bob grants 64 KiB of connection credit: alice's buffer takes it all, so her command
    // after it waits for more. The transfer she opens next carries no payload, and must
    // still not overtake the command: a receiver takes new message ids in order only.
    let mut relay = Relay::new(RelayConfig::default()).unwrap();
    let (alice, bob) = (ConnId(0), ConnId(1));
    relay.open(T, alice).unwrap();
    relay.open(T, bob).unwrap();
    // Exactly two of the buffer's DATA frames (16,368 bytes each).
    let window = 2 * (16 * 1024 - 16);
    let bob_hello = Hello::new(Role::Client, &Limits::default(), 8, 8, 64 * 1024, window);
    relay.handle_input(T, alice, &encode(&[hello(), login("alice")]));
    relay.handle_input(T, bob, &encode(&[Frame::Hello(bob_hello), login("bob")]));
    relay.accept_login(alice).unwrap();
    relay.accept_login(bob).unwrap();
    written(&mut relay, alice);
    written(&mut relay, bob);
    let mut frames = transfer_to_bob(0, 8);
    frames.push(Frame::Cmd(Cmd {
        id: 1,
        peer: UserId::new("bob").unwrap(),
        once: None,
        total_len: 100,
        data: Bytes::from(vec![7u8; 100]),
    }));
    frames.push(open(2, "bob", 10));
    relay.handle_input(T, alice, &encode(&frames));
    let mut to_bob = written(&mut relay, bob);
    // Bob takes what comes and grants his window again, until the rest has come (the
    // buffer's data stops at his transfer window, so credit is left for the others).
    for _ in 0..8 {
        let consumed: u64 = to_bob
            .iter()
            .map(|f| f.payload().map_or(0, |p| p.len() as u64))
            .sum();
        let more = Frame::ConnCredit(ConnCredit {
            max_data: consumed + window,
        });
        relay.handle_input(T, bob, &encode(&[more]));
        to_bob.extend(written(&mut relay, bob));
    }
    let new_ids: Vec<u64> = to_bob
        .iter()
        .filter_map(|f| match f {
            Frame::Open(o) => Some(o.id),
            Frame::Cmd(c) => Some(c.id),
            _ => None,
        })
        .collect();
    assert_eq!(new_ids.len(), 3, "{new_ids:?}");
    assert!(new_ids.windows(2).all(|w| w[0] < w[1]), "{new_ids:?}");
}

/// What the relay wrote to alice and to bob, and its events.
fn drain_both(relay: &mut Relay) -> (Vec<Frame>, Vec<Frame>, Vec<RelayEvent>) {
    let alice = written(relay, ConnId(0));
    let bob = written(relay, ConnId(1));
    (
        alice,
        bob,
        std::iter::from_fn(|| relay.poll_event()).collect(),
    )
}

fn closed(events: &[RelayEvent], conn: ConnId, code: ErrorCode) -> bool {
    events.iter().any(
        |e| matches!(e, RelayEvent::Closed { conn: c, code: k, .. } if *c == conn && *k == code),
    )
}

#[test]
fn a_receiver_that_grants_itself_more_than_its_windows_is_closed() {
    // Transfer credit: bob has been sent 64 KiB and may grant at most that plus his window.
    let mut relay = alice_and_bob(64 * 1024);
    relay.handle_input(T, ConnId(0), &encode(&transfer_to_bob(0, 8)));
    drain_both(&mut relay);
    let lie = Frame::Credit(Credit {
        id: 0,
        max_offset: 1 << 30,
    });
    relay.handle_input(T, ConnId(1), &encode(&[lie]));
    let (alice, bob, events) = drain_both(&mut relay);
    assert!(
        closed(&events, ConnId(1), ErrorCode::FLOW_CONTROL),
        "{events:?}"
    );
    assert!(matches!(bob.last(), Some(Frame::Close(_))));
    assert!(alice.contains(&Frame::Result(MessageResult {
        id: 0,
        code: ErrorCode::CONNECTIONLOST
    })));

    // Connection credit: the same rule against bob's announced conn_window (4 MiB).
    let mut relay = alice_and_bob(64 * 1024);
    let lie = Frame::ConnCredit(ConnCredit {
        max_data: (4 << 20) + 1,
    });
    relay.handle_input(T, ConnId(1), &encode(&[lie]));
    let (_, _, events) = drain_both(&mut relay);
    assert!(
        closed(&events, ConnId(1), ErrorCode::FLOW_CONTROL),
        "{events:?}"
    );

    // An honest grant at the edge is fine.
    let mut relay = alice_and_bob(64 * 1024);
    let fair = Frame::ConnCredit(ConnCredit { max_data: 4 << 20 });
    relay.handle_input(T, ConnId(1), &encode(&[fair]));
    let (_, _, events) = drain_both(&mut relay);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, RelayEvent::Closed { .. })),
        "{events:?}"
    );
}

#[test]
fn a_connection_that_does_not_log_in_is_closed_at_the_login_deadline() {
    let config = RelayConfig::default();
    let mut relay = Relay::new(config).unwrap();
    let m = ConnId(0);
    relay.open(T, m).unwrap();
    relay.handle_input(T, m, &encode(&[hello()]));
    // Whole frames every two seconds, as a slow-loris would: they do not buy time.
    let mut at = T;
    let mut events = Vec::new();
    while events.is_empty() {
        at += std::time::Duration::from_secs(2);
        relay.handle_input(at, m, &encode(&[Frame::Ping(Ping { nonce: 1 })]));
        if relay.poll_timeout().is_some_and(|t| t <= at) {
            relay.handle_timeout(at);
        }
        written(&mut relay, m);
        events.extend(std::iter::from_fn(|| relay.poll_event()));
        assert!(at <= T + config.login_timeout, "still open at {at:?}");
    }
    assert_eq!(at, T + config.login_timeout);
    assert!(closed(&events, m, ErrorCode::SOCKETTIMEOUT), "{events:?}");
    assert_eq!(relay.connections(), 0);
}

#[test]
fn bytes_that_never_make_a_whole_frame_do_not_keep_a_connection_alive() {
    let config = RelayConfig::default();
    let mut relay = alice_and_bob_with(config, 1 << 20);
    // Alice writes a command one byte every 30 s, never finishing it.
    let bytes = encode(&[Frame::Cmd(Cmd {
        id: 0,
        peer: UserId::new("bob").unwrap(),
        once: None,
        total_len: 100,
        data: Bytes::from(vec![7; 100]),
    })]);
    let mut at = T;
    let mut events = Vec::new();
    for b in bytes.iter().take(10) {
        at += std::time::Duration::from_secs(30);
        relay.handle_input(at, ConnId(0), &[*b]);
        relay.handle_timeout(at);
        events.extend(std::iter::from_fn(|| relay.poll_event()));
        if closed(&events, ConnId(0), ErrorCode::SOCKETTIMEOUT) {
            break;
        }
    }
    assert!(
        closed(&events, ConnId(0), ErrorCode::SOCKETTIMEOUT),
        "{events:?}"
    );
    assert_eq!(at, T + config.idle_timeout);
}

#[test]
fn a_forwarded_message_that_stops_moving_fails_on_both_ends() {
    let config = RelayConfig {
        idle_timeout: std::time::Duration::from_secs(3600),
        ..RelayConfig::default()
    };
    let limit = config.progress_timeout.unwrap();
    let mut relay = alice_and_bob_with(config, 64 * 1024);
    relay.handle_input(T, ConnId(0), &encode(&transfer_to_bob(0, 8)));
    relay.handle_input(T, ConnId(0), &encode(&transfer_to_bob(1, 8)[..1]));
    drain_both(&mut relay);
    // Transfer 0 waits on bob's credit. At 2/3 of the limit he grants a little, which
    // counts as progress.
    let later = T + limit * 2 / 3;
    let grant = Frame::Credit(Credit {
        id: 0,
        max_offset: 64 * 1024 + 1,
    });
    relay.handle_input(later, ConnId(1), &encode(&[grant]));
    relay.handle_timeout(T + limit);
    let (alice, _, _) = drain_both(&mut relay);
    assert!(
        !alice
            .iter()
            .any(|f| matches!(f, Frame::Result(r) if r.id == 0)),
        "{alice:?}"
    );
    // Transfer 1 (an OPEN only) has not moved since T: it ends now on both sides.
    assert!(alice.contains(&Frame::Result(MessageResult {
        id: 1,
        code: ErrorCode::SOCKETTIMEOUT
    })));
    // Transfer 0 stalls from `later` on.
    relay.handle_timeout(later + limit);
    let (alice, bob, events) = drain_both(&mut relay);
    assert!(alice.contains(&Frame::Result(MessageResult {
        id: 0,
        code: ErrorCode::SOCKETTIMEOUT
    })));
    assert!(bob.contains(&Frame::Cancel(Cancel {
        id: 0,
        code: ErrorCode::SOCKETTIMEOUT
    })));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, RelayEvent::Closed { .. })),
        "nobody is closed: {events:?}"
    );
    assert_eq!(relay.held_bytes(), 0);
}

#[test]
fn a_flood_before_login_is_closed() {
    let config = RelayConfig::default();
    let mut relay = Relay::new(config).unwrap();
    let m = ConnId(0);
    relay.open(T, m).unwrap();
    let mut frames = vec![hello()];
    frames.extend((0..1000).map(|nonce| Frame::Pong(Ping { nonce })));
    relay.handle_input(T, m, &encode(&frames));
    let out = written(&mut relay, m);
    assert!(
        matches!(out.last(), Some(Frame::Close(c)) if c.code == ErrorCode::LIMIT_EXCEEDED),
        "{out:?}"
    );
    // A login that takes its time with a few pings is fine.
    let mut relay = Relay::new(config).unwrap();
    relay.open(T, m).unwrap();
    let mut frames = vec![hello()];
    frames.extend(
        (0..config.max_frames_before_login as u64 - 2).map(|nonce| Frame::Ping(Ping { nonce })),
    );
    frames.push(login("alice"));
    relay.handle_input(T, m, &encode(&frames));
    relay.accept_login(m).unwrap();
    relay.handle_input(T, m, &encode(&[Frame::Ping(Ping { nonce: 9 })]));
    let out = written(&mut relay, m);
    assert!(!out.iter().any(|f| matches!(f, Frame::Close(_))), "{out:?}");
}

#[test]
fn queue_bounds_that_would_close_honest_receivers_are_refused() {
    use peermsg::relay::RelayError;
    let config = RelayConfig::default();
    let zero = RelayConfig {
        receiver_queue: 0,
        ..config
    };
    assert_eq!(Relay::new(zero).err(), Some(RelayError::Queues));
    let tight = RelayConfig {
        max_queued_bytes: 2 * config.receiver_queue,
        ..config
    };
    assert_eq!(Relay::new(tight).err(), Some(RelayError::Queues));
}

/// A whole transfer to bob (two pieces and `END`), forwarded, that bob has not answered.
fn whole_transfer_to_bob(config: RelayConfig) -> Relay {
    let mut relay = alice_and_bob_with(config, 1 << 20);
    let mut frames = transfer_to_bob(0, 2);
    frames.push(Frame::End(End {
        id: 0,
        size: 2 * (16 * 1024 - 16),
        digest: Digest::Crc32c(0),
    }));
    relay.handle_input(T, ConnId(0), &encode(&frames));
    let (_, bob, _) = drain_both(&mut relay);
    assert!(bob.iter().any(|f| matches!(f, Frame::End(_))), "{bob:?}");
    relay
}

#[test]
fn a_whole_message_is_not_timed_out_behind_the_receivers_back() {
    let config = RelayConfig {
        idle_timeout: std::time::Duration::from_secs(3600),
        ..RelayConfig::default()
    };
    let limit = config.progress_timeout.unwrap();
    // Bob may have delivered it: he is asked, and his word (the delivery came first) is
    // alice's result.
    let mut relay = whole_transfer_to_bob(config);
    relay.handle_timeout(T + limit);
    let (alice, bob, _) = drain_both(&mut relay);
    assert!(alice.is_empty(), "{alice:?}");
    let asked = Frame::Cancel(Cancel {
        id: 0,
        code: ErrorCode::SOCKETTIMEOUT,
    });
    assert_eq!(bob, vec![asked.clone()]);
    let delivered = Frame::Result(MessageResult {
        id: 0,
        code: ErrorCode::NOERR,
    });
    relay.handle_input(
        T + limit,
        ConnId(1),
        &encode(std::slice::from_ref(&delivered)),
    );
    let (alice, _, _) = drain_both(&mut relay);
    assert_eq!(alice, vec![delivered]);
    // A bob that never answers: the relay ends it after one more timeout.
    let mut relay = whole_transfer_to_bob(config);
    relay.handle_timeout(T + limit);
    drain_both(&mut relay);
    relay.handle_timeout(T + limit * 2);
    let (alice, _, _) = drain_both(&mut relay);
    assert_eq!(
        alice,
        vec![Frame::Result(MessageResult {
            id: 0,
            code: ErrorCode::SOCKETTIMEOUT
        })]
    );
    assert_eq!(relay.held_bytes(), 0);
}

#[test]
fn a_cancel_after_end_is_the_receivers_to_decide() {
    let mut relay = whole_transfer_to_bob(RelayConfig::default());
    let cancel = Frame::Cancel(Cancel {
        id: 0,
        code: ErrorCode::CANCELLED,
    });
    relay.handle_input(T, ConnId(0), &encode(std::slice::from_ref(&cancel)));
    let (alice, bob, _) = drain_both(&mut relay);
    assert!(alice.is_empty(), "alice waits for bob's word: {alice:?}");
    assert_eq!(bob, vec![cancel]);
    let answer = Frame::Result(MessageResult {
        id: 0,
        code: ErrorCode::CANCELLED,
    });
    relay.handle_input(T, ConnId(1), &encode(std::slice::from_ref(&answer)));
    let (alice, _, _) = drain_both(&mut relay);
    assert_eq!(alice, vec![answer]);
}

/// PROTOCOL.md, "Timeouts": `HELLO` does not count; every frame after it until the login
/// is accepted does, 64 at most; the 65th closes the connection.
#[test]
fn the_frames_before_login_are_counted_after_hello() {
    let config = RelayConfig::default();
    let mut relay = Relay::new(config).unwrap();
    let m = ConnId(0);
    relay.open(T, m).unwrap();
    let mut frames = vec![hello()];
    frames.extend((0..64).map(|nonce| Frame::Ping(Ping { nonce })));
    relay.handle_input(T, m, &encode(&frames));
    let out = written(&mut relay, m);
    assert!(!out.iter().any(|f| matches!(f, Frame::Close(_))), "{out:?}");
    relay.handle_input(T, m, &encode(&[login("alice")]));
    let out = written(&mut relay, m);
    assert!(
        matches!(out.last(), Some(Frame::Close(c)) if c.code == ErrorCode::LIMIT_EXCEEDED),
        "{out:?}"
    );
}
