//! The heap a client with `ClientConfig::small()` uses, with a counting allocator: logged
//! in and idle, and with one transfer in each direction under way. Bytes cross the "link"
//! 64 at a time, as a UART would deliver them. Run:
//! `cargo run --release --example small_footprint` (docs/PERFORMANCE.md, "A small device").

#[path = "common/counting.rs"]
mod counting;

use bytes::{Bytes, BytesMut};
use peermsg::client::{Client, ClientConfig, Event, Output, SendId};
use peermsg::wire::{Frame, Hello, LoginResult, Role};
use peermsg::{ErrorCode, Instant};

/// The byte at `offset` of a generated file.
fn byte_at(offset: u64) -> u8 {
    (offset.wrapping_mul(31) >> 3) as u8
}

/// Drives `client` until it waits, answering file reads from the generated file and
/// confirming files it receives; gives what it wrote and the number of file bytes it got.
fn drive(client: &mut Client, file: SendId, out: &mut BytesMut) -> u64 {
    let mut got = 0;
    loop {
        match client.poll_output(out) {
            Output::Transmit(_) => {}
            Output::Event(Event::FileRead { id, offset, len }) if id == file => {
                let piece: Bytes = (offset..offset + len).map(byte_at).collect();
                client
                    .supply_file_data(id, offset, piece)
                    .expect("asked for");
            }
            Output::Event(Event::FileData { offset, data, .. }) => {
                assert!(data.iter().zip(offset..).all(|(b, o)| *b == byte_at(o)));
                got += data.len() as u64;
            }
            Output::Event(Event::FileReceived { id, .. }) => {
                client.accept_delivery(id).expect("verified");
            }
            Output::Event(Event::SendResult { code, .. }) => assert_eq!(code, ErrorCode::NOERR),
            Output::Event(_) => {}
            _ => return got,
        }
    }
}

/// Hands `bytes` to `to`, 64 at a time.
fn deliver(to: &mut Client, now: Instant, bytes: BytesMut) {
    for piece in bytes.chunks(64) {
        to.handle_input(now, piece);
    }
}

fn main() {
    let now = Instant::ZERO;
    let config = ClientConfig::small();

    // One client, logged in to a relay, idle.
    let before = counting::live();
    let mut client = Client::new(config, now).expect("valid");
    client.login("sensor-17", b"token").expect("valid id");
    let relay = Hello::new(Role::Relay, &config.limits, 64, 16, 64 << 10, 64 << 10);
    let answer = LoginResult {
        code: ErrorCode::NOERR,
    };
    let mut wire = BytesMut::new();
    Frame::Hello(relay).encode(&mut wire).expect("encodable");
    Frame::LoginResult(answer)
        .encode(&mut wire)
        .expect("encodable");
    deliver(&mut client, now, wire);
    drive(&mut client, SendId(u64::MAX), &mut BytesMut::new());
    assert!(client.is_logged_in());
    let idle = counting::live() - before;
    drop(client);

    // Two such clients on a direct link, each sending the other a 64 KiB file; measured
    // with both transfers part way, and at the peak of the whole run.
    let size = 64 * 1024;
    let before = counting::live();
    counting::reset_peak();
    let mut a = Client::new(config, now).expect("valid");
    let mut b = Client::new(config, now).expect("valid");
    a.login("a", b"").expect("valid id");
    b.login("b", b"").expect("valid id");
    let (mut a_file, mut b_file) = (SendId(u64::MAX), SendId(u64::MAX));
    let (mut a_got, mut b_got) = (0, 0);
    let mut midway = None;
    for round in 0..100_000 {
        let (mut to_b, mut to_a) = (BytesMut::new(), BytesMut::new());
        a_got += drive(&mut a, a_file, &mut to_b);
        b_got += drive(&mut b, b_file, &mut to_a);
        if round == 0 {
            deliver(&mut b, now, to_b);
            deliver(&mut a, now, to_a);
            let mut settle = (BytesMut::new(), BytesMut::new());
            drive(&mut a, a_file, &mut settle.0);
            drive(&mut b, b_file, &mut settle.1);
            deliver(&mut b, now, settle.0);
            deliver(&mut a, now, settle.1);
            a_file = a.send_file(now, "b", "a.bin", size, 0).expect("sendable");
            b_file = b.send_file(now, "a", "b.bin", size, 0).expect("sendable");
            continue;
        }
        if midway.is_none() && a_got > size / 2 && b_got > size / 2 {
            midway = Some(counting::live() - before);
        }
        if to_a.is_empty() && to_b.is_empty() {
            break;
        }
        deliver(&mut b, now, to_b);
        deliver(&mut a, now, to_a);
    }
    assert_eq!((a_got, b_got), (size, size), "both files arrived whole");
    let midway = midway.expect("a point with both transfers under way");
    let peak = counting::peak() - before;
    println!("ClientConfig::small(), heap in use (counting allocator):");
    println!("  one client, logged in, idle:                 {idle} bytes");
    println!(
        "  one client, a transfer each way under way:   {} bytes (two clients: {midway})",
        midway / 2
    );
    println!(
        "  one client, peak over the two transfers:     {} bytes (two clients: {peak})",
        peak / 2
    );
}
