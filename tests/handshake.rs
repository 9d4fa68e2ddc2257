//! The handshake rules (docs/PROTOCOL.md, "Handshake"), stated once and held by both kinds
//! of endpoint: the first frame is a `HELLO` with version 1 and CRC-32C, from a role the
//! endpoint talks to, and no second `HELLO` follows. Each broken rule closes with its own
//! violation, whoever receives it.

mod support;

use bytes::Bytes;
use peermsg::client::{Client, ClientConfig, Event};
use peermsg::relay::{ConnId, Relay, RelayConfig, RelayEvent};
use peermsg::wire::{Capabilities, Frame, Hello, Limits, Login, LoginResult, Role, UserId};
use peermsg::{CloseReason, ErrorCode, Instant, Violation};
use support::encode;

const T: Instant = Instant::ZERO;

fn hello(role: Role) -> Hello {
    Hello::new(role, &Limits::default(), 8, 8, 1 << 20, 1 << 20)
}

fn without_crc(role: Role) -> Hello {
    Hello {
        capabilities: Capabilities(0),
        ..hello(role)
    }
}

fn old_version(role: Role) -> Hello {
    Hello {
        version: 0,
        ..hello(role)
    }
}

fn login() -> Frame {
    Frame::Login(Login {
        user: UserId::new("mallory").unwrap(),
        token: Bytes::new(),
    })
}

/// How a relay ends a connection that opens with `frames` (logged in after the first
/// two if `log_in`).
fn relay_closes(frames: &[Frame], log_in: bool) -> (ErrorCode, CloseReason) {
    let mut relay = Relay::new(RelayConfig::default()).unwrap();
    let conn = ConnId(0);
    relay.open(T, conn).unwrap();
    let (first, rest) = frames.split_at(if log_in { 2 } else { 0 });
    relay.handle_input(T, conn, &encode(first));
    if log_in {
        relay.accept_login(conn).unwrap();
    }
    relay.handle_input(T, conn, &encode(rest));
    std::iter::from_fn(|| relay.poll_event())
        .find_map(|e| match e {
            RelayEvent::Closed { code, reason, .. } => Some((code, reason)),
            _ => None,
        })
        .expect("closed")
}

/// How a client ends a connection whose peer opens with `frames`.
fn client_closes(frames: &[Frame]) -> (ErrorCode, CloseReason) {
    let mut client = Client::new(ClientConfig::default(), T).unwrap();
    client.login("alice", b"").unwrap();
    client.handle_input(T, &encode(frames));
    std::iter::from_fn(|| client.poll_event())
        .find_map(|e| match e {
            Event::Closed { code, reason } => Some((code, reason)),
            _ => None,
        })
        .expect("closed")
}

fn violation(v: Violation) -> (ErrorCode, CloseReason) {
    (v.code(), CloseReason::Violation(v))
}

#[test]
fn a_relay_holds_the_handshake_rules() {
    let client = || Frame::Hello(hello(Role::Client));
    let cases = [
        (vec![login()], false, Violation::FirstFrameNotHello),
        (vec![client(), client()], false, Violation::SecondHello),
        (
            vec![client(), login(), client()],
            true,
            Violation::SecondHello,
        ),
        (
            vec![Frame::Hello(without_crc(Role::Client))],
            false,
            Violation::UnsupportedVersion,
        ),
        (
            vec![Frame::Hello(old_version(Role::Client))],
            false,
            Violation::UnsupportedVersion,
        ),
        (
            vec![Frame::Hello(hello(Role::Relay))],
            false,
            Violation::NotAClient,
        ),
        (
            vec![client(), login(), login()],
            true,
            Violation::SecondLogin,
        ),
    ];
    for (frames, log_in, v) in cases {
        assert_eq!(relay_closes(&frames, log_in), violation(v.clone()), "{v:?}");
    }
    assert_eq!(
        violation(Violation::UnsupportedVersion).0,
        ErrorCode::UNSUPPORTED_VERSION
    );
}

#[test]
fn a_client_holds_the_same_rules() {
    let relay = || Frame::Hello(hello(Role::Relay));
    let answer = Frame::LoginResult(LoginResult {
        code: ErrorCode::NOERR,
    });
    let cases = [
        (vec![answer.clone()], Violation::FirstFrameNotHello),
        (vec![relay(), relay()], Violation::SecondHello),
        (vec![relay(), answer, relay()], Violation::SecondHello),
        (
            vec![Frame::Hello(without_crc(Role::Relay))],
            Violation::UnsupportedVersion,
        ),
        (
            vec![Frame::Hello(old_version(Role::Relay))],
            Violation::UnsupportedVersion,
        ),
        (vec![relay(), login()], Violation::LoginFromRelay),
    ];
    for (frames, v) in cases {
        assert_eq!(client_closes(&frames), violation(v.clone()), "{v:?}");
    }
}

#[test]
fn the_close_says_who_closed() {
    // A peer's CLOSE is the peer's, with its code and reason; our own close is local.
    let mut client = Client::new(ClientConfig::default(), T).unwrap();
    let close = Frame::Close(peermsg::wire::Close {
        code: ErrorCode::SHUTDOWN,
        reason: "maintenance".into(),
    });
    client.handle_input(T, &encode(&[Frame::Hello(hello(Role::Relay)), close]));
    let closed = std::iter::from_fn(|| client.poll_event()).last();
    assert_eq!(
        closed,
        Some(Event::Closed {
            code: ErrorCode::SHUTDOWN,
            reason: CloseReason::Peer("maintenance".into())
        })
    );
    let mut client = Client::new(ClientConfig::default(), T).unwrap();
    client.close();
    let closed = std::iter::from_fn(|| client.poll_event()).last();
    assert_eq!(
        closed,
        Some(Event::Closed {
            code: ErrorCode::NOERR,
            reason: CloseReason::Local
        })
    );
    let mut client = Client::new(ClientConfig::default(), T).unwrap();
    client.handle_disconnect();
    let closed = std::iter::from_fn(|| client.poll_event()).last();
    assert!(matches!(
        closed,
        Some(Event::Closed {
            reason: CloseReason::TransportLost,
            ..
        })
    ));
}
