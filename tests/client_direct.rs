//! A direct link (two clients, no relay) against a scripted peer.

use bytes::{Bytes, BytesMut};
use peermsg::client::{Client, ClientConfig, Event};
use peermsg::wire::*;
use peermsg::{ErrorCode, Instant};

#[test]
fn a_message_for_someone_else_is_refused_and_the_source_is_the_logged_in_peer() {
    let mut c = Client::new(ClientConfig::default(), Instant::ZERO).unwrap();
    c.login("bob", b"t").unwrap();
    let hello = Frame::Hello(Hello::new(
        Role::Client,
        &Limits::default(),
        8,
        8,
        1 << 20,
        1 << 20,
    ));
    let cmd = |id, to: &str| {
        Frame::Cmd(Cmd {
            id,
            peer: UserId::new(to).unwrap(),
            once: None,
            total_len: 1,
            data: Bytes::from_static(b"x"),
        })
    };
    let frames = [
        hello,
        Frame::Login(Login {
            user: UserId::new("alice").unwrap(),
            token: Bytes::new(),
        }),
        Frame::LoginResult(LoginResult {
            code: ErrorCode::NOERR,
        }),
        cmd(0, "carol"),
        cmd(1, "bob"),
    ];
    let mut input = BytesMut::new();
    for f in &frames {
        f.encode(&mut input).unwrap();
    }
    c.handle_input(Instant::ZERO, &input);
    let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
    assert!(events.contains(&Event::PeerLogin {
        user: UserId::new("alice").unwrap()
    }));
    // The source is who the peer logged in as, whatever the frame says.
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::CmdReceived { from, data, .. }
        if from.as_str() == "alice" && data[..] == b"x"[..])));
    let mut out = BytesMut::new();
    while c.poll_transmit(&mut out) > 0 {}
    let mut d = Decoder::new(Limits::default()).unwrap();
    let mut sent = Vec::new();
    while let Some(f) = d.decode(&mut out).unwrap() {
        sent.push(f);
    }
    assert!(sent.contains(&Frame::LoginResult(LoginResult {
        code: ErrorCode::NOERR
    })));
    assert!(sent.contains(&Frame::Result(MessageResult {
        id: 0,
        code: ErrorCode::SENDDATA_TARGETINVALID
    })));
    assert!(sent.contains(&Frame::Result(MessageResult {
        id: 1,
        code: ErrorCode::NOERR
    })));
}
