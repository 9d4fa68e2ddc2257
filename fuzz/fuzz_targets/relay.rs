//! A relay fed arbitrary connections, bytes, frames, login answers and closes: it never
//! panics and holds no more than its windows and its budget allow.
#![no_main]

use arbitrary::Arbitrary;
use bytes::{Buf, BytesMut};
use libfuzzer_sys::fuzz_target;
use peermsg::relay::{ConnId, Relay, RelayConfig, RelayEvent};
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
    let config = RelayConfig { max_held_bytes: 1 << 20, ..RelayConfig::default() };
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
                let name = ["ann", "ben", "cat", "dan"][usize::from(user % 4)];
                let login = Frame::Login(Login { user: UserId::new(name).expect("valid"), token: Default::default() });
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
        }
        while let Some(event) = relay.poll_event() {
            if let RelayEvent::Login { conn, .. } = event {
                let _ = relay.accept_login(conn);
            }
        }
        // What the relay holds: per sender at most its connection window, per receiver what
        // the receivers granted (at most 256 connections here, each granting 2^18).
        let bound = 256 * (config.conn_window + (1 << 18) + 2 * (1 << 14)) ;
        assert!(relay.buffered_bytes() <= bound, "{} > {bound}", relay.buffered_bytes());
        // Message bytes held: within the budget but for 64 KiB per sender, and counted
        // right (never more than all that is buffered).
        let held = relay.held_bytes();
        assert!(held <= config.max_held_bytes + 256 * peermsg::relay::INITIAL_CONN_CREDIT, "{held}");
        assert!(held <= relay.buffered_bytes(), "{held} > {}", relay.buffered_bytes());
    }
    let _ = open;
});
