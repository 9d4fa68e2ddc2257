//! A relay of a cluster fed arbitrary connections, bytes, frames, login answers and closes,
//! and links to other relays (opened, fed, failed, users kicked): it never panics and holds
//! no more than its windows and its budget allow.
#![no_main]

use arbitrary::Arbitrary;
use bytes::{Buf, BytesMut};
use libfuzzer_sys::fuzz_target;
use peermsg::relay::{ConnId, Relay, RelayConfig, RelayEvent, LINK_BIT};
use peermsg::wire::{Frame, Hello, Limits, Login, Role, Transmit, UserId};
use peermsg::{ErrorCode, Instant};

#[derive(Arbitrary, Debug)]
enum Op {
    Open(u8),
    /// A HELLO and LOGIN as one of four users, answered with accept.
    Join(u8, u8),
    Bytes(u8, Vec<u8>),
    Frame(u8, Frame),
    Disconnect(u8),
    Advance(u32),
    Write(u8),
    Reject(u8, u32),
    /// Another relay opens a link toward one of the four users.
    AcceptLink(u8),
    /// Bytes, a frame, a write, a failure or a lost transport on one of the first 16
    /// links (outgoing ones are made by messages to users not logged in).
    LinkBytes(u8, Vec<u8>),
    LinkFrame(u8, Frame),
    LinkWrite(u8),
    LinkFailed(u8, u32),
    LinkLost(u8),
    /// A login of one of the four users elsewhere.
    Kick(u8),
}

fn link(n: u8) -> ConnId {
    ConnId(LINK_BIT | u64::from(n % 16))
}

fn user(n: u8) -> UserId {
    UserId::new(["ann", "ben", "cat", "dan"][usize::from(n % 4)]).expect("valid")
}

fn encode(frames: &[Frame]) -> BytesMut {
    let mut b = BytesMut::new();
    for f in frames {
        let _ = f.encode(&mut b);
    }
    b
}

fuzz_target!(|ops: Vec<Op>| {
    // A small budget, so that holding grants back and paying them is exercised too.
    let config = RelayConfig { max_held_bytes: 1 << 20, cluster: true, ..RelayConfig::default() };
    let mut relay = Relay::new(config).expect("valid config");
    let mut now = Instant::from_micros(1);
    let mut open = 0u64;
    for op in ops {
        match op {
            Op::Open(c) => {
                if relay.open(now, ConnId(c.into())).is_ok() {
                    open += 1;
                }
            }
            Op::Join(c, user) => {
                let conn = ConnId(c.into());
                let _ = relay.open(now, conn);
                let hello = Frame::Hello(Hello::new(Role::Client, &Limits::default(), 8, 8, 1 << 17, 1 << 18));
                let login = Frame::Login(Login { user: self::user(user), token: Default::default() });
                relay.handle_input(now, conn, &encode(&[hello, login]));
            }
            Op::Bytes(c, bytes) => relay.handle_input(now, ConnId(c.into()), &bytes),
            // Whole frames go in as owned buffers: the path that adopts them.
            Op::Frame(c, frame) => relay.handle_input_buf(now, ConnId(c.into()), encode(&[frame])),
            Op::Disconnect(c) => relay.handle_disconnect(ConnId(c.into())),
            Op::Advance(us) => {
                now = now + std::time::Duration::from_micros(us.into());
                relay.handle_timeout(now);
            }
            Op::Write(c) => {
                // The vectored sink must hold what the copying sink would have written.
                let mut out = Transmit::new();
                let n = relay.poll_transmit(ConnId(c.into()), &mut out);
                assert_eq!(n, out.remaining());
            }
            Op::Reject(c, code) => {
                let _ = relay.reject_login(ConnId(c.into()), ErrorCode::from_u32(code));
            }
            Op::AcceptLink(u) => {
                if let Ok(conn) = relay.accept_link(now, &user(u)) {
                    assert!(conn.0 & LINK_BIT != 0);
                }
            }
            Op::LinkBytes(n, bytes) => relay.handle_input(now, link(n), &bytes),
            Op::LinkFrame(n, frame) => relay.handle_input_buf(now, link(n), encode(&[frame])),
            Op::LinkWrite(n) => {
                let mut out = Transmit::new();
                let written = relay.poll_transmit(link(n), &mut out);
                assert_eq!(written, out.remaining());
            }
            Op::LinkFailed(n, code) => relay.link_failed(link(n), ErrorCode::from_u32(code)),
            Op::LinkLost(n) => relay.handle_disconnect(link(n)),
            Op::Kick(u) => relay.kick_user(&user(u)),
        }
        while let Some(event) = relay.poll_event() {
            if let RelayEvent::Login { conn, .. } = event {
                let _ = relay.accept_login(conn);
            }
        }
        // What the relay holds: per sender at most its connection window, per receiver what
        // the receivers granted (at most 256 connections here, each granting 2^18).
        // Links (up to 256 more here) may take a window of `link_window` each way.
        let window = config.conn_window.max(config.link_window);
        let bound = 512 * (window + (1 << 18) + 2 * (1 << 14)) ;
        assert!(relay.buffered_bytes() <= bound, "{} > {bound}", relay.buffered_bytes());
        // Message bytes held: within the budget but for 64 KiB per sender, and counted
        // right (never more than all that is buffered).
        let held = relay.held_bytes();
        assert!(held <= config.max_held_bytes + 512 * peermsg::relay::INITIAL_CONN_CREDIT, "{held}");
        assert!(held <= relay.buffered_bytes(), "{held} > {}", relay.buffered_bytes());
    }
    let _ = open;
});
