//! A client fed arbitrary operations and arbitrary bytes from its peer, after an optional
//! valid handshake so the deep states are reached: it never panics, reports each send at
//! most once, and holds no more than its limits and windows allow.
#![no_main]

use std::collections::HashSet;

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use peermsg::client::{Client, ClientConfig, Event, ReceiveId, SendId};
use peermsg::wire::{Frame, Hello, Limits, LoginResult, Role};
use peermsg::{ErrorCode, Instant};

#[derive(Arbitrary, Debug)]
enum Op {
    Input(Vec<u8>),
    Frame(Frame),
    Advance(u32),
    Cmd(u16),
    Buffer(u32),
    File(u32),
    Supply(u8, u32),
    ReadFails(u8),
    Cancel(u8),
    Reject(u8, u32),
    Transmit,
    Events,
    Close,
    Disconnect,
}

#[derive(Arbitrary, Debug)]
struct Input {
    handshake: bool,
    ops: Vec<Op>,
}

fn config() -> ClientConfig {
    ClientConfig {
        limits: Limits { max_buffer_size: 1 << 20, max_file_size: 1 << 30, ..Limits::default() },
        max_transfers: 4,
        max_cmds_in_flight: 4,
        transfer_window: 64 * 1024,
        conn_window: 128 * 1024,
        ..ClientConfig::default()
    }
}

fn encode(frames: &[Frame]) -> BytesMut {
    let mut b = BytesMut::new();
    for f in frames {
        let _ = f.encode(&mut b);
    }
    b
}

fuzz_target!(|input: Input| {
    let config = config();
    let mut now = Instant::from_micros(1);
    let mut c = Client::new(config, now).expect("valid config");
    let mut sends: Vec<SendId> = Vec::new();
    let mut offers: Vec<ReceiveId> = Vec::new();
    let mut results: HashSet<SendId> = HashSet::new();
    let mut out = BytesMut::new();
    if input.handshake {
        let _ = c.login("alice", b"t");
        let hello = Hello::new(Role::Relay, &Limits::default(), 8, 8, 100_000, 300_000);
        let ok = Frame::LoginResult(LoginResult { code: ErrorCode::NOERR });
        c.handle_input(now, &encode(&[Frame::Hello(hello), ok]));
    }
    for op in input.ops {
        match op {
            Op::Input(bytes) => c.handle_input(now, &bytes),
            // Whole frames go in as owned buffers: the path that adopts them.
            Op::Frame(f) => c.handle_input_buf(now, encode(&[f])),
            Op::Advance(us) => {
                now = now + std::time::Duration::from_micros(us.into());
                c.handle_timeout(now);
            }
            Op::Cmd(len) => {
                if let Ok(id) = c.send_cmd(now, "bob", Bytes::from(vec![1; len.into()]), 0) {
                    sends.push(id);
                }
            }
            Op::Buffer(len) => {
                if let Ok(id) = c.send_buffer(now, "bob", Bytes::from(vec![2; (len % (2 << 20)) as usize]), 0) {
                    sends.push(id);
                }
            }
            Op::File(size) => {
                if let Ok(id) = c.send_file(now, "bob", "f", size.into(), 0) {
                    sends.push(id);
                }
            }
            Op::Supply(k, len) => {
                if let Some(id) = sends.get(k as usize % sends.len().max(1)) {
                    let offset = 0; // often wrong on purpose: the client must refuse it cleanly
                    let _ = c.supply_file_data(*id, offset, Bytes::from(vec![3; (len % 300_000) as usize]));
                }
            }
            Op::ReadFails(k) => {
                if let Some(id) = sends.get(k as usize % sends.len().max(1)) {
                    let _ = c.file_read_failed(*id);
                }
            }
            Op::Cancel(k) => {
                if let Some(id) = sends.get(k as usize % sends.len().max(1)) {
                    c.cancel_send(*id, 0);
                }
            }
            Op::Reject(k, code) => {
                if let Some(id) = offers.get(k as usize % offers.len().max(1)) {
                    let _ = c.reject(*id, ErrorCode::from_u32(code));
                }
            }
            Op::Transmit => {
                out.clear();
                c.poll_transmit(&mut out);
            }
            Op::Events => {
                while let Some(e) = c.poll_event() {
                    match e {
                        Event::SendResult { id, .. } => assert!(results.insert(id), "two results for {id}"),
                        Event::Offer { id, .. } => offers.push(id),
                        Event::FileRead { id, offset, len } => {
                            let _ = c.supply_file_data(id, offset, Bytes::from(vec![4; len as usize]));
                        }
                        // Kept or not, by the id's parity: both answers, once; a second is refused.
                        Event::FileReceived { id, .. } => {
                            let first = if id.0 % 2 == 0 { c.accept_delivery(id) } else { c.fail_delivery(id, ErrorCode::NOERR) };
                            assert!(first.is_ok());
                            assert!(c.accept_delivery(id).is_err());
                        }
                        _ => {}
                    }
                }
            }
            Op::Close => c.close(),
            Op::Disconnect => c.handle_disconnect(),
        }
        let l = config.limits;
        let bound = config.max_transfers * l.max_buffer_size
            + config.max_cmds_in_flight * l.max_cmd_size
            + config.conn_window
            + 8 * config.transfer_window
            + (1 << 20);
        assert!(c.buffered_bytes() <= bound, "{} > {bound}", c.buffered_bytes());
    }
});
