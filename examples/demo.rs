//! Two users on a direct link, in memory: alice sends bob a command, a buffer and a file
//! with progress, starts a second file and cancels it part way, and every result is
//! printed. Bytes cross the "link" in pieces of at most 1,500 bytes.
//!
//! Run: `cargo run --example demo`

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use peermsg::client::{Client, ClientConfig, Event, Output, SendId};
use peermsg::Instant;

/// Moves bytes both ways until neither side has anything to say (each driven by its
/// `poll_output`), delivering them in pieces of 1,500 bytes; returns the events.
fn pump(
    a: &mut Client,
    b: &mut Client,
    now: Instant,
    files: &HashMap<SendId, Bytes>,
) -> (Vec<Event>, Vec<Event>) {
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    loop {
        let (mut to_b, mut to_a) = (BytesMut::new(), BytesMut::new());
        drive(a, &mut to_b, &mut ea, files);
        drive(b, &mut to_a, &mut eb, files);
        if to_a.is_empty() && to_b.is_empty() {
            return (ea, eb);
        }
        for (to, bytes) in [(&mut *b, to_b), (&mut *a, to_a)] {
            for piece in bytes.chunks(1500) {
                to.handle_input(now, piece);
            }
        }
    }
}

/// One side's application: drives its client until it waits, collecting what it writes in
/// `out` and its events in `events`.
fn drive(
    client: &mut Client,
    out: &mut BytesMut,
    events: &mut Vec<Event>,
    files: &HashMap<SendId, Bytes>,
) {
    loop {
        let event = match client.poll_output(out) {
            Output::Transmit(_) => continue,
            Output::Event(event) => event,
            _ => return,
        };
        if let Event::FileRead { id, offset, len } = event {
            // The application's file source: here, bytes in memory.
            let file = &files[&id];
            let piece = file.slice(offset as usize..(offset + len) as usize);
            client
                .supply_file_data(id, offset, piece)
                .expect("asked for");
        }
        if let Event::FileReceived { id, .. } = event {
            // The application's file sink: here, the bytes are only counted. It has kept
            // the file, so it confirms it.
            client.accept_delivery(id).expect("a verified file");
        }
        events.push(event);
    }
}

fn show(who: &str, events: &[Event]) {
    for e in events {
        match e {
            Event::FileData { .. } | Event::FileRead { .. } => {} // too many to print
            Event::Progress {
                id, sent, total, ..
            } => {
                println!(
                    "{who:>6}: progress {id} {:>3}% ({sent}/{total})",
                    sent * 100 / total.max(&1)
                )
            }
            Event::ReceiveProgress {
                id,
                received,
                total,
            } => {
                println!(
                    "{who:>6}: receiving {id} {:>3}% ({received}/{total})",
                    received * 100 / total.max(&1)
                )
            }
            Event::CmdReceived { from, data, .. } => {
                println!(
                    "{who:>6}: command from {from}: {:?}",
                    String::from_utf8_lossy(data)
                )
            }
            Event::BufferReceived { from, data, .. } => {
                println!("{who:>6}: buffer from {from}: {} bytes", data.len())
            }
            other => println!("{who:>6}: {other:?}"),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let now = Instant::ZERO;
    let config = ClientConfig {
        progress_step: 512 * 1024,
        ..ClientConfig::default()
    };
    let mut alice = Client::new(config, now)?;
    let mut bob = Client::new(config, now)?;
    alice.login("alice", b"secret-a")?;
    bob.login("bob", b"secret-b")?;
    let mut files = HashMap::new();
    let (ea, eb) = pump(&mut alice, &mut bob, now, &files);
    show("alice", &ea);
    show("bob", &eb);

    println!("\n-- a command, a buffer of 2 MiB and a file of 3 MiB --");
    alice.send_cmd(now, "bob", Bytes::from_static(b"hello, bob"), 1)?;
    alice.send_buffer(now, "bob", Bytes::from(vec![7u8; 2 << 20]), 2)?;
    let file: Bytes = (0..3u32 << 20)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let id = alice.send_file(now, "bob", "report.pdf", file.len() as u64, 3)?;
    files.insert(id, file);
    let (ea, eb) = pump(&mut alice, &mut bob, now, &files);
    show("alice", &ea);
    show("bob", &eb);

    println!("\n-- a file of 8 MiB, cancelled after the first pieces --");
    let big: Bytes = vec![1u8; 8 << 20].into();
    let id = alice.send_file(now, "bob", "movie.mkv", big.len() as u64, 4)?;
    files.insert(id, big);
    // Let only alice's first burst through, then cancel.
    let mut buf = BytesMut::new();
    while alice.poll_transmit(&mut buf) > 0 {
        while let Some(Event::FileRead { id, offset, len }) = alice.poll_event() {
            alice.supply_file_data(
                id,
                offset,
                files[&id].slice(offset as usize..(offset + len) as usize),
            )?;
        }
    }
    bob.handle_input(now, &buf);
    let code = alice.cancel_send(id, 99);
    println!("cancel_send({id}) -> {code}");
    let (ea, eb) = pump(&mut alice, &mut bob, now, &files);
    show("alice", &ea);
    show("bob", &eb);
    Ok(())
}
