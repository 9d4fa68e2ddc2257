//! Measures the relay's heap per idle connection and per transfer in progress, with a
//! counting allocator. Run: `cargo run --release --example relay_memory`
//! (docs/PERFORMANCE.md records the figures).

#[path = "common/counting.rs"]
mod counting;

use bytes::BytesMut;
use peermsg::relay::{ConnId, Relay, RelayConfig, RelayEvent, RelayOutput};
use peermsg::wire::{Frame, Hello, Limits, Login, Open, Role, Text, TransferKind, UserId};
use peermsg::Instant;

fn encode(frames: &[Frame]) -> BytesMut {
    let mut b = BytesMut::new();
    for f in frames {
        f.encode(&mut b).expect("encodes");
    }
    b
}

/// Drives the relay by its `poll_output` until it waits: output dropped, logins accepted.
fn settle(relay: &mut Relay) {
    let mut sink = BytesMut::new();
    loop {
        sink.clear();
        match relay.poll_output(&mut sink) {
            RelayOutput::Transmit(..) => {}
            RelayOutput::Event(RelayEvent::Login { conn, .. }) => {
                relay.accept_login(conn).expect("pending")
            }
            RelayOutput::Event(_) => {}
            _ => return,
        }
    }
}

fn main() {
    const CONNS: u64 = 10_000;
    let now = Instant::ZERO;
    let mut relay = Relay::new(RelayConfig::default()).expect("valid config");
    let before = counting::live();
    for i in 0..CONNS {
        let conn = ConnId(i);
        relay.open(now, conn).expect("fresh id");
        let hello = Frame::Hello(Hello::new(
            Role::Client,
            &Limits::default(),
            64,
            16,
            1 << 20,
            4 << 20,
        ));
        let user = UserId::new(&format!("user{i:05}")).expect("valid");
        relay.handle_input(
            now,
            conn,
            &encode(&[
                hello,
                Frame::Login(Login {
                    user,
                    token: Default::default(),
                }),
            ]),
        );
        settle(&mut relay);
    }
    let idle = counting::live() - before;
    println!(
        "{CONNS} idle logged-in connections: {idle} bytes, {} bytes each",
        idle as u64 / CONNS
    );

    // Half the users open a transfer to the other half; the OPEN is forwarded, no data yet.
    let before = counting::live();
    let transfers = CONNS / 2;
    for i in 0..transfers {
        let open = Frame::Open(Open {
            id: 0,
            kind: TransferKind::File,
            peer: UserId::new(&format!("user{:05}", i + transfers)).expect("valid"),
            size: 1 << 30,
            name: Text::from("data.bin"),
            resume_key: None,
            seal: None,
        });
        relay.handle_input(now, ConnId(i), &encode(&[open]));
        settle(&mut relay);
    }
    let active = counting::live() - before;
    println!(
        "{transfers} transfers in progress: {active} bytes, {} bytes each",
        active as u64 / transfers
    );
    println!("relay buffered_bytes: {}", relay.buffered_bytes());
}
