//! Measures the relay's heap per idle connection and per transfer in progress, with a
//! counting allocator. Run: `cargo run --release --example relay_memory`
//! (docs/PERFORMANCE.md records the figures).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use peermsg::relay::{ConnId, Relay, RelayConfig, RelayEvent};
use peermsg::wire::{Frame, Hello, Limits, Login, Open, Role, Text, TransferKind, UserId};
use peermsg::Instant;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn encode(frames: &[Frame]) -> BytesMut {
    let mut b = BytesMut::new();
    for f in frames {
        f.encode(&mut b).expect("encodes");
    }
    b
}

/// Drains every connection's output and answers logins.
fn settle(relay: &mut Relay) {
    while let Some(event) = relay.poll_event() {
        if let RelayEvent::Login { conn, .. } = event {
            relay.accept_login(conn).expect("pending");
        }
    }
    let mut sink = BytesMut::new();
    while let Some(conn) = relay.poll_writable() {
        sink.clear();
        relay.poll_transmit(conn, &mut sink);
    }
}

fn main() {
    const CONNS: u64 = 10_000;
    let now = Instant::ZERO;
    let mut relay = Relay::new(RelayConfig::default()).expect("valid config");
    let before = live();
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
    let idle = live() - before;
    println!(
        "{CONNS} idle logged-in connections: {idle} bytes, {} bytes each",
        idle as u64 / CONNS
    );

    // Half the users open a transfer to the other half; the OPEN is forwarded, no data yet.
    let before = live();
    let transfers = CONNS / 2;
    for i in 0..transfers {
        let open = Frame::Open(Open {
            id: 0,
            kind: TransferKind::File,
            peer: UserId::new(&format!("user{:05}", i + transfers)).expect("valid"),
            size: 1 << 30,
            name: Text::from("data.bin"),
        });
        relay.handle_input(now, ConnId(i), &encode(&[open]));
        settle(&mut relay);
    }
    let active = live() - before;
    println!(
        "{transfers} transfers in progress: {active} bytes, {} bytes each",
        active as u64 / transfers
    );
    println!("relay buffered_bytes: {}", relay.buffered_bytes());
}
