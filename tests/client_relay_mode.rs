//! A client against a scripted relay: frames are written and read by hand with the wire
//! layer, so the relay's side of every rule can be played, including breaking it.

use bytes::{Bytes, BytesMut};
use peermsg::client::{Client, ClientConfig, Event, ReceiveId, SendKind};
use peermsg::wire::*;
use peermsg::{ErrorCode, Instant};

const T0: Instant = Instant::ZERO;

fn relay_hello(transfer_window: u64, conn_window: u64) -> Frame {
    let limits = Limits::default();
    Frame::Hello(Hello::new(
        Role::Relay,
        &limits,
        64,
        16,
        transfer_window,
        conn_window,
    ))
}

/// Everything the client has to send, decoded.
fn out(c: &mut Client) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    while c.poll_transmit(&mut buf) > 0 {}
    let mut d = Decoder::new(Limits::default()).unwrap();
    let mut frames = Vec::new();
    while let Some(f) = d.decode(&mut buf).expect("client output decodes") {
        frames.push(f);
    }
    assert!(buf.is_empty());
    frames
}

fn feed(c: &mut Client, frames: &[Frame]) {
    let mut buf = BytesMut::new();
    for f in frames {
        f.encode(&mut buf).unwrap();
    }
    c.handle_input(T0, &buf);
}

fn events(c: &mut Client) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// A client logged in to the scripted relay as alice.
fn logged_in(config: ClientConfig, windows: (u64, u64)) -> Client {
    let mut c = Client::new(config, T0).unwrap();
    c.login("alice", b"pw").unwrap();
    let first = out(&mut c);
    assert!(matches!(
        first[0],
        Frame::Hello(Hello {
            role: Role::Client,
            ..
        })
    ));
    assert!(
        matches!(&first[1], Frame::Login(l) if l.user.as_str() == "alice" && &l.token[..] == b"pw")
    );
    feed(
        &mut c,
        &[
            relay_hello(windows.0, windows.1),
            Frame::LoginResult(LoginResult {
                code: ErrorCode::NOERR,
            }),
        ],
    );
    assert_eq!(
        events(&mut c),
        vec![Event::LoginResult {
            code: ErrorCode::NOERR
        }]
    );
    c
}

#[test]
fn receivers_see_the_source_the_relay_stamped() {
    let mut c = logged_in(ClientConfig::default(), (1 << 20, 4 << 20));
    let cmd = Cmd {
        id: 0,
        peer: user("carol"),
        once: None,
        total_len: 2,
        data: Bytes::from_static(b"hi"),
    };
    feed(&mut c, &[Frame::Cmd(cmd)]);
    assert_eq!(
        events(&mut c),
        vec![Event::CmdReceived {
            id: ReceiveId(0),
            from: user("carol"),
            data: Bytes::from_static(b"hi"),
            once: None,
        }]
    );
    // Delivery is confirmed once the application took the event.
    assert_eq!(
        out(&mut c),
        vec![Frame::Result(MessageResult {
            id: 0,
            code: ErrorCode::NOERR
        })]
    );
}

#[test]
fn offline_target_and_lost_receiver_end_the_send() {
    let mut c = logged_in(ClientConfig::default(), (1 << 20, 4 << 20));
    let cmd = c.send_cmd(T0, "dave", Bytes::from_static(b"?"), 1).unwrap();
    let buf = c
        .send_buffer(T0, "erin", Bytes::from(vec![1; 100_000]), 2)
        .unwrap();
    let frames = out(&mut c);
    assert!(matches!(&frames[0], Frame::Cmd(Cmd { id: 0, peer, .. }) if peer.as_str() == "dave"));
    assert!(matches!(
        &frames[1],
        Frame::Open(Open {
            id: 1,
            kind: TransferKind::Buffer,
            size: 100_000,
            ..
        })
    ));
    feed(
        &mut c,
        &[
            Frame::Result(MessageResult {
                id: 0,
                code: ErrorCode::OFFLINE,
            }),
            Frame::Result(MessageResult {
                id: 1,
                code: ErrorCode::CONNECTIONLOST,
            }),
        ],
    );
    let ev = events(&mut c);
    assert!(ev.contains(&Event::SendResult {
        id: cmd,
        kind: SendKind::Cmd,
        code: ErrorCode::OFFLINE,
        cookie: 1
    }));
    assert!(ev.contains(&Event::SendResult {
        id: buf,
        kind: SendKind::Buffer,
        code: ErrorCode::CONNECTIONLOST,
        cookie: 2
    }));
    assert!(
        out(&mut c).is_empty(),
        "nothing more is sent for ended sends"
    );
}

#[test]
fn a_command_waits_behind_at_most_one_data_frame() {
    // One frame per poll_transmit call, so the order of frames is visible.
    let config = ClientConfig {
        transmit_batch: 1,
        ..ClientConfig::default()
    };
    let mut c = logged_in(config, (u64::MAX >> 2, u64::MAX >> 2));
    for i in 0..5 {
        c.send_buffer(T0, "bob", Bytes::from(vec![i; 1 << 20]), 0)
            .unwrap();
    }
    let mut frames = Vec::new();
    let mut buf = BytesMut::new();
    for _ in 0..40 {
        c.poll_transmit(&mut buf);
    }
    let cmd = c
        .send_cmd(T0, "bob", Bytes::from_static(b"urgent"), 0)
        .unwrap();
    c.poll_transmit(&mut buf);
    let mut d = Decoder::new(Limits::default()).unwrap();
    while let Some(f) = d.decode(&mut buf).unwrap() {
        frames.push(f);
    }
    assert_eq!(frames.len(), 41);
    assert!(
        frames[..40]
            .iter()
            .filter(|f| matches!(f, Frame::Data(_)))
            .count()
            > 30
    );
    assert!(
        matches!(&frames[40], Frame::Cmd(Cmd { data, .. }) if &data[..] == b"urgent"),
        "{:?}",
        frames[40]
    );
    // Data went round-robin across the transfers.
    let ids: std::collections::BTreeSet<_> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Data(d) => Some(d.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 5);
    let _ = cmd;
}

#[test]
fn data_stops_at_the_credit_and_resumes_with_more() {
    let mut c = logged_in(
        ClientConfig {
            progress_step: 1,
            ..ClientConfig::default()
        },
        (50_000, 1 << 30),
    );
    let id = c
        .send_buffer(T0, "bob", Bytes::from(vec![7; 200_000]), 0)
        .unwrap();
    let sent = |frames: &[Frame]| -> u64 {
        frames
            .iter()
            .map(|f| match f {
                Frame::Data(d) => d.payload.len() as u64,
                _ => 0,
            })
            .sum()
    };
    assert_eq!(sent(&out(&mut c)), 50_000, "exactly the initial window");
    feed(
        &mut c,
        &[Frame::Credit(Credit {
            id: 0,
            max_offset: 120_000,
        })],
    );
    assert_eq!(sent(&out(&mut c)), 70_000);
    // Progress reports what the receiver consumed (credit minus its window), never more
    // than was sent when the credit came.
    assert_eq!(
        events(&mut c),
        vec![Event::Progress {
            id,
            sent: 50_000,
            total: 200_000,
            cookie: 0
        }]
    );
    feed(
        &mut c,
        &[Frame::Credit(Credit {
            id: 0,
            max_offset: 90_000,
        })],
    ); // lower: ignored
    assert!(out(&mut c).is_empty());
}

#[test]
fn connection_credit_bounds_all_transfers_together() {
    let mut c = logged_in(ClientConfig::default(), (1 << 30, 30_000));
    c.send_buffer(T0, "bob", Bytes::from(vec![1; 100_000]), 0)
        .unwrap();
    c.send_buffer(T0, "bob", Bytes::from(vec![2; 100_000]), 0)
        .unwrap();
    let total = |frames: &[Frame]| -> u64 {
        frames
            .iter()
            .map(|f| match f {
                Frame::Data(d) => d.payload.len() as u64,
                _ => 0,
            })
            .sum()
    };
    assert_eq!(total(&out(&mut c)), 30_000);
    feed(
        &mut c,
        &[Frame::ConnCredit(ConnCredit { max_data: 45_000 })],
    );
    assert_eq!(total(&out(&mut c)), 15_000);
}

#[test]
fn rejected_login_leaves_sends_refused() {
    let mut c = Client::new(ClientConfig::default(), T0).unwrap();
    c.login("alice", b"wrong").unwrap();
    out(&mut c);
    feed(
        &mut c,
        &[
            relay_hello(1, 1),
            Frame::LoginResult(LoginResult {
                code: ErrorCode::LOGIN_REJECTED,
            }),
        ],
    );
    assert_eq!(
        events(&mut c),
        vec![Event::LoginResult {
            code: ErrorCode::LOGIN_REJECTED
        }]
    );
    let r = c.send_cmd(T0, "bob", Bytes::new(), 0);
    assert_eq!(r.map_err(|e| e.code()), Err(ErrorCode::NOT_LOGIN));
}

/// A peer that breaks a rule is closed with a clear code, and every pending send fails
/// with CONNECTIONLOST.
fn assert_closed_by(frames: &[Frame], code: ErrorCode) {
    let mut c = logged_in(
        ClientConfig {
            transfer_window: 1000,
            conn_window: 5000,
            ..ClientConfig::default()
        },
        (1 << 20, 1 << 20),
    );
    let pending = c
        .send_buffer(T0, "bob", Bytes::from(vec![0; 2 << 20]), 0)
        .unwrap();
    out(&mut c);
    feed(&mut c, frames);
    let types: Vec<_> = frames.iter().map(|f| f.frame_type()).collect();
    assert!(c.is_closed(), "{types:?}");
    let sent = out(&mut c);
    assert!(
        matches!(sent.last(), Some(Frame::Close(Close { code: c, .. })) if *c == code),
        "{sent:?}"
    );
    let ev = events(&mut c);
    assert!(ev.contains(&Event::SendResult {
        id: pending,
        kind: SendKind::Buffer,
        code: ErrorCode::CONNECTIONLOST,
        cookie: 0
    }));
    assert!(matches!(ev.last(), Some(Event::Closed { code: c, .. }) if *c == code));
    // Nothing is taken after the close.
    feed(&mut c, &[Frame::Ping(Ping { nonce: 1 })]);
    let (late_out, late_events) = (out(&mut c), events(&mut c));
    assert!(
        late_out.is_empty(),
        "{:?}",
        late_out.iter().map(|f| f.frame_type()).collect::<Vec<_>>()
    );
    assert!(late_events.is_empty(), "{late_events:?}");
}

fn open(id: u64, size: u64) -> Frame {
    Frame::Open(Open {
        id,
        kind: TransferKind::Buffer,
        peer: user("mallory"),
        size,
        name: Text::new(),
        resume_key: None,
        seal: None,
    })
}

fn open_file(id: u64, size: u64) -> Frame {
    Frame::Open(Open {
        id,
        kind: TransferKind::File,
        peer: user("mallory"),
        size,
        name: Text::from("f"),
        resume_key: None,
        seal: None,
    })
}

fn data(id: u64, offset: u64, len: usize) -> Frame {
    Frame::Data(Data {
        id,
        offset,
        payload: Bytes::from(vec![0; len]),
    })
}

#[test]
fn hostile_peers_are_closed() {
    let v = ErrorCode::PROTOCOL_VIOLATION;
    assert_closed_by(&[relay_hello(1, 1)], v); // a second HELLO
    assert_closed_by(&[open(1, 10)], v); // id out of order
    assert_closed_by(&[data(0, 0, 5)], v); // data for a message never opened
    assert_closed_by(&[open(0, 10), data(0, 5, 5)], v); // a gap
    assert_closed_by(&[open(0, 10), data(0, 0, 11)], v); // past the declared size
    assert_closed_by(
        &[open_file(0, 10_000), data(0, 0, 1001)],
        ErrorCode::FLOW_CONTROL,
    );
    assert_closed_by(
        &[
            open_file(0, 9000),
            data(0, 0, 1000),
            open_file(1, 9000),
            data(1, 0, 1000),
            open_file(2, 9000),
            data(2, 0, 1000),
            open_file(3, 9000),
            data(3, 0, 1000),
            open_file(4, 9000),
            data(4, 0, 1000),
            open_file(5, 9000),
            data(5, 0, 1000),
        ],
        ErrorCode::FLOW_CONTROL,
    ); // six windows of 1000 against a connection window of 5000, none of it taken yet
    assert_closed_by(
        &[Frame::Result(MessageResult {
            id: 9,
            code: ErrorCode::NOERR,
        })],
        v,
    ); // never sent
    assert_closed_by(
        &[Frame::Credit(Credit {
            id: 5,
            max_offset: 1,
        })],
        v,
    );
    assert_closed_by(
        &[Frame::Result(MessageResult {
            id: 0,
            code: ErrorCode::NOERR,
        })],
        v,
    ); // before the data
    assert_closed_by(
        &[Frame::Login(Login {
            user: user("x"),
            token: Bytes::new(),
        })],
        v,
    );
}

#[test]
fn garbage_bytes_close_with_protocol_violation() {
    let mut c = logged_in(ClientConfig::default(), (1, 1));
    c.handle_input(T0, b"GET / HTTP/1.1\r\n\r\n");
    assert!(c.is_closed());
    assert!(
        matches!(out(&mut c).last(), Some(Frame::Close(Close { code, .. })) if *code == ErrorCode::PROTOCOL_VIOLATION)
    );
}

#[test]
fn a_bad_digest_or_size_fails_only_that_message() {
    let mut c = logged_in(ClientConfig::default(), (1 << 20, 1 << 20));
    let end = |id, size, crc| {
        Frame::End(End {
            id,
            size,
            digest: Digest::Crc32c(crc),
        })
    };
    feed(&mut c, &[open(0, 3), data(0, 0, 3), end(0, 3, 0xdead_beef)]);
    feed(&mut c, &[open(1, 3), data(1, 0, 2), end(1, 3, 0)]);
    assert!(!c.is_closed());
    let sent = out(&mut c);
    assert!(sent.contains(&Frame::Result(MessageResult {
        id: 0,
        code: ErrorCode::DIGEST_MISMATCH
    })));
    assert!(sent.contains(&Frame::Result(MessageResult {
        id: 1,
        code: ErrorCode::SIZE_MISMATCH
    })));
    let ev = events(&mut c);
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Event::ReceiveFailed { .. }))
            .count(),
        2
    );
    assert!(!ev.iter().any(|e| matches!(e, Event::BufferReceived { .. })));
}

#[test]
fn sender_cancel_and_late_frames_are_dropped_quietly() {
    let mut c = logged_in(ClientConfig::default(), (1 << 20, 1 << 20));
    feed(
        &mut c,
        &[
            open(0, 100),
            data(0, 0, 10),
            Frame::Cancel(Cancel {
                id: 0,
                code: ErrorCode::CANCELLED,
            }),
            data(0, 10, 10),
        ],
    );
    assert!(!c.is_closed());
    let ev = events(&mut c);
    assert!(ev.contains(&Event::ReceiveFailed {
        id: peermsg::client::ReceiveId(0),
        from: user("mallory"),
        code: ErrorCode::CANCELLED
    }));
}

#[test]
fn a_peer_without_version_1_is_refused() {
    let mut c = Client::new(ClientConfig::default(), T0).unwrap();
    out(&mut c);
    let mut hello = relay_hello(1, 1);
    if let Frame::Hello(h) = &mut hello {
        h.capabilities = Capabilities(0);
    }
    feed(&mut c, &[hello]);
    assert!(c.is_closed());
    assert!(
        matches!(out(&mut c).last(), Some(Frame::Close(Close { code, .. })) if *code == ErrorCode::UNSUPPORTED_VERSION)
    );
}

#[test]
fn kicked_out_by_a_newer_login() {
    let mut c = logged_in(ClientConfig::default(), (1 << 20, 1 << 20));
    let id = c.send_cmd(T0, "bob", Bytes::from_static(b"x"), 0).unwrap();
    out(&mut c);
    let reason = Text::from_static("logged in elsewhere");
    feed(
        &mut c,
        &[Frame::Close(Close {
            code: ErrorCode::KICKOUT_BY_RELOGIN,
            reason: reason.clone(),
        })],
    );
    let ev = events(&mut c);
    // The pending send names the cause, not a lost connection.
    assert!(ev.contains(&Event::SendResult {
        id,
        kind: SendKind::Cmd,
        code: ErrorCode::KICKOUT_BY_RELOGIN,
        cookie: 0
    }));
    assert_eq!(
        ev.last(),
        Some(&Event::Closed {
            code: ErrorCode::KICKOUT_BY_RELOGIN,
            reason: peermsg::CloseReason::Peer(reason)
        })
    );
    assert!(out(&mut c).is_empty(), "no CLOSE answers a CLOSE");
}

#[test]
fn messages_over_our_caps_are_refused_one_by_one() {
    let config = ClientConfig {
        max_transfers: 1,
        max_cmds_in_flight: 1,
        ..ClientConfig::default()
    };
    let mut c = logged_in(config, (1 << 20, 1 << 20));
    let cmd = |id| {
        Frame::Cmd(Cmd {
            id,
            peer: user("carol"),
            once: None,
            total_len: 1,
            data: Bytes::from_static(b"x"),
        })
    };
    feed(&mut c, &[open(0, 10), open(1, 10), cmd(2), cmd(3)]);
    assert!(!c.is_closed());
    let sent = out(&mut c);
    assert!(sent.contains(&Frame::Result(MessageResult {
        id: 1,
        code: ErrorCode::LIMIT_EXCEEDED
    })));
    assert!(sent.contains(&Frame::Result(MessageResult {
        id: 3,
        code: ErrorCode::LIMIT_EXCEEDED
    })));
    assert!(!sent
        .iter()
        .any(|f| matches!(f, Frame::Result(MessageResult { id: 0 | 2, .. }))));
}

/// A command from `from` with identity (`stream`, `seq`), as the relay delivers it.
fn cmd_once(id: u64, from: &str, stream: u32, seq: u64, resent: bool) -> Frame {
    let mut s = [0u8; 16];
    s[..4].copy_from_slice(&stream.to_be_bytes());
    Frame::Cmd(Cmd {
        id,
        peer: user(from),
        once: Some(CmdOnce {
            stream: s,
            seq,
            resent,
        }),
        total_len: 2,
        data: Bytes::from_static(b"go"),
    })
}

/// `old`'s connection is lost; the client of the next one, logged in, inherits from it.
fn reconnected(old: &mut Client) -> Client {
    old.handle_disconnect();
    let mut new = logged_in(ClientConfig::default(), (1 << 20, 4 << 20));
    new.carry_from(old);
    out(&mut new);
    new
}

/// Commands delivered to the application among the events now.
fn cmds_received(c: &mut Client) -> usize {
    events(c)
        .iter()
        .filter(|e| matches!(e, Event::CmdReceived { .. }))
        .count()
}

/// The codes of the `RESULT`s in `frames`, by message id.
fn results(frames: &[Frame]) -> Vec<(u64, ErrorCode)> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Result(r) => Some((r.id, r.code)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_command_is_delivered_once_across_connections_whatever_other_senders_do() {
    let mut old = logged_in(ClientConfig::default(), (1 << 20, 4 << 20));
    out(&mut old);
    feed(&mut old, &[cmd_once(0, "carol", 7, 1, false)]);
    assert!(matches!(&events(&mut old)[..], [Event::CmdReceived { .. }]));
    assert_eq!(results(&out(&mut old)), [(0, ErrorCode::NOERR)]);
    // Mallory opens 5,000 streams toward this receiver (the old table held 4,096 in all,
    // the oldest forgotten first).
    for n in 0..5000u32 {
        feed(
            &mut old,
            &[cmd_once(1 + u64::from(n), "mallory", n, 1, false)],
        );
        assert_eq!(events(&mut old).len(), 1);
        out(&mut old);
    }
    // The connection is lost; carol did not hear of her result, and sends it again on
    // the new connection. It is confirmed, and not delivered twice.
    let mut new = reconnected(&mut old);
    feed(&mut new, &[cmd_once(0, "carol", 7, 1, true)]);
    assert_eq!(cmds_received(&mut new), 0, "delivered twice");
    assert_eq!(results(&out(&mut new)), [(0, ErrorCode::NOERR)]);
    // Mallory's own first streams were forgotten to stay in bounds: a repeat of one is
    // refused with its code rather than delivered twice; a new command goes through.
    feed(
        &mut new,
        &[
            cmd_once(1, "mallory", 0, 1, true),
            cmd_once(2, "mallory", 0, 2, false),
        ],
    );
    let got = events(&mut new);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(matches!(
        &got[0],
        Event::CmdReceived {
            id: ReceiveId(2),
            ..
        }
    ));
    assert_eq!(
        results(&out(&mut new)),
        [(1, ErrorCode::REPEAT_FORGOTTEN), (2, ErrorCode::NOERR)]
    );
}

/// PROTOCOL.md, "Resume": a transfer's credit starts at the peer's `transfer_window`
/// counted from byte 0, resumed or not; `RESUME_FROM` grants nothing more. A `CREDIT` before
/// `RESUME_FROM` is taken as any grant (not a violation) but moves no byte before it.
#[test]
fn credit_around_resume_from() {
    const WINDOW: u64 = 64 * 1024;
    let mut c = logged_in(ClientConfig::default(), (WINDOW, 4 << 20));
    out(&mut c);
    let data_end = |sent: &[Frame], id: u64| {
        sent.iter()
            .filter_map(|f| match f {
                Frame::Data(d) if d.id == id => Some((d.offset, d.offset + d.payload.len() as u64)),
                _ => None,
            })
            .fold(None, |acc: Option<(u64, u64)>, (a, b)| {
                Some(acc.map_or((a, b), |(x, y)| (x.min(a), y.max(b))))
            })
    };
    let open_id = |sent: &[Frame]| {
        sent.iter()
            .find_map(|f| match f {
                Frame::Open(o) if o.resume_key.is_some() => Some(o.id),
                _ => None,
            })
            .expect("an OPEN with a resume key")
    };
    let data = Bytes::from(vec![3u8; 300_000]);
    c.send_buffer_resumable(T0, "bob", data, ResumeKey([9; 16]), 0)
        .unwrap();
    let id = open_id(&out(&mut c));
    // A CREDIT before RESUME_FROM: no DATA yet, the connection stays open.
    feed(
        &mut c,
        &[Frame::Credit(Credit {
            id,
            max_offset: 200_000,
        })],
    );
    let sent = out(&mut c);
    assert_eq!(data_end(&sent, id), None);
    assert!(!sent.iter().any(|f| matches!(f, Frame::Close(_))));
    // RESUME_FROM at 0: the credit granted before it counts.
    let resume = |id, offset, digest| Frame::ResumeFrom(ResumeFrom { id, offset, digest });
    feed(&mut c, &[resume(id, 0, Digest::Crc32c(0))]);
    assert_eq!(data_end(&out(&mut c), id), Some((0, 200_000)));

    // Resumed at 100,000 with no CREDIT: the initial credit (64 KiB from byte 0) is
    // below the offset, so nothing moves until the receiver's CREDIT.
    let data = Bytes::from(vec![4u8; 300_000]);
    c.send_buffer_resumable(T0, "bob", data.clone(), ResumeKey([8; 16]), 0)
        .unwrap();
    let id = open_id(&out(&mut c));
    let digest = Digest::Crc32c(crc32c::crc32c(&data[..100_000]));
    feed(&mut c, &[resume(id, 100_000, digest)]);
    assert_eq!(data_end(&out(&mut c), id), None);
    feed(
        &mut c,
        &[Frame::Credit(Credit {
            id,
            max_offset: 100_000 + WINDOW,
        })],
    );
    assert_eq!(
        data_end(&out(&mut c), id),
        Some((100_000, 100_000 + WINDOW))
    );
}

#[test]
fn a_command_lost_with_its_connection_before_it_was_taken_is_delivered_when_sent_again() {
    let mut old = logged_in(ClientConfig::default(), (1 << 20, 4 << 20));
    out(&mut old);
    // It arrives whole, but the connection is lost before the application takes it (its
    // event goes with the old client, and no RESULT went out).
    feed(&mut old, &[cmd_once(0, "carol", 7, 1, false)]);
    let mut new = reconnected(&mut old);
    feed(&mut new, &[cmd_once(0, "carol", 7, 1, true)]);
    assert_eq!(
        cmds_received(&mut new),
        1,
        "confirmed as a repeat, never delivered"
    );
    assert_eq!(results(&out(&mut new)), [(0, ErrorCode::NOERR)]);
}

/// While a resumed file send re-reads its own bytes below the receiver's offset, the
/// client says so, so that a driver does not pace those reads like bytes that go out.
#[test]
fn a_resume_check_is_told_apart_from_sending() {
    let mut c = logged_in(ClientConfig::default(), (1 << 20, 4 << 20));
    out(&mut c);
    let file = vec![6u8; 200_000];
    let id = c
        .send_file_resumable(T0, "bob", "f.bin", 200_000, ResumeKey([4; 16]), 0)
        .unwrap();
    let wire = out(&mut c)
        .iter()
        .find_map(|f| match f {
            Frame::Open(o) => Some(o.id),
            _ => None,
        })
        .expect("an OPEN");
    assert!(!c.is_checking_resume(id));
    let digest = Digest::Crc32c(crc32c::crc32c(&file[..150_000]));
    feed(
        &mut c,
        &[Frame::ResumeFrom(ResumeFrom {
            id: wire,
            offset: 150_000,
            digest,
        })],
    );
    assert!(c.is_checking_resume(id));
    // Its reads below the offset are the check; once they are in, it sends.
    let mut checked = 0;
    loop {
        out(&mut c);
        let reads: Vec<(u64, u64)> = events(&mut c)
            .into_iter()
            .filter_map(|e| match e {
                Event::FileRead { offset, len, .. } => Some((offset, len)),
                _ => None,
            })
            .collect();
        let Some(&(offset, len)) = reads.first() else {
            break;
        };
        if offset >= 150_000 {
            break; // reading what goes out now
        }
        assert!(c.is_checking_resume(id), "{offset}");
        checked += len;
        let piece = Bytes::copy_from_slice(&file[offset as usize..(offset + len) as usize]);
        c.supply_file_data(id, offset, piece).unwrap();
    }
    assert_eq!(checked, 150_000);
    assert!(!c.is_checking_resume(id));
}
