//! The drive loop with plain blocking sockets and std threads, no async runtime: alice
//! connects to bob over TCP on loopback (a direct link, no relay), sends a command and a
//! file, and closes once both are confirmed.
//!
//! Run: `cargo run --example blocking_tcp`

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use peermsg::client::{Client, ClientConfig, Event, Output};
use peermsg::Instant;

/// Drives `client` over `stream` until the connection is over. `on_event` sees every event
/// and may act on the client.
fn drive(
    mut client: Client,
    mut stream: TcpStream,
    mut on_event: impl FnMut(&mut Client, Instant, Event),
) -> std::io::Result<()> {
    let epoch = std::time::Instant::now();
    let clock = || Instant::from_std(epoch, std::time::Instant::now());
    let mut out = BytesMut::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // The drive invariant: after any input, act on `poll_output` until it says to wait,
        // then wait for bytes or that deadline, whichever comes first.
        let deadline = loop {
            out.clear();
            match client.poll_output(&mut out) {
                Output::Transmit(_) => stream.write_all(&out)?,
                Output::Event(event) => on_event(&mut client, clock(), event),
                Output::Timeout(at) => break at,
                // Over, and everything written.
                _ => return Ok(()),
            }
        };
        let now = clock();
        let wait = (deadline - now).max(Duration::from_millis(1));
        stream.set_read_timeout(Some(wait))?;
        match stream.read(&mut buf) {
            Ok(0) => client.handle_disconnect(),
            Ok(n) => client.handle_input(clock(), &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                client.handle_timeout(clock())
            }
            Err(_) => client.handle_disconnect(),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let config = ClientConfig::default();

    let bob = thread::spawn(move || -> std::io::Result<()> {
        let (stream, _) = listener.accept()?;
        let mut client = Client::new(config, Instant::ZERO).expect("valid config");
        client.login("bob", b"b").expect("valid user id");
        let mut received = 0u64;
        drive(client, stream, |client, _, event| match event {
            Event::CmdReceived { from, data, .. } => {
                println!(
                    "bob: command from {from}: {}",
                    String::from_utf8_lossy(&data)
                )
            }
            Event::Offer {
                from, name, size, ..
            } => println!("bob: {from} offers {name} ({size} bytes)"),
            Event::FileData { data, .. } => received += data.len() as u64,
            Event::FileReceived { id, from, size } => {
                // Bob counted the bytes; keeping them is his to do, then he confirms.
                let _ = client.accept_delivery(id);
                println!("bob: file from {from} complete, {size} bytes, digest verified ({received} seen)")
            }
            Event::Closed { code, .. } => println!("bob: connection closed ({code})"),
            _ => {}
        })
    });

    let file: Bytes = (0..20u32 << 20)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<_>>()
        .into();
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut client = Client::new(config, Instant::ZERO)?;
    client.login("alice", b"a")?;
    let mut pending = 2;
    drive(client, stream, |client, now, event| match event {
        Event::LoginResult { code } if code.is_success() => {
            client
                .send_cmd(now, "bob", Bytes::from_static(b"a file is coming"), 1)
                .expect("logged in");
            client
                .send_file(now, "bob", "data.bin", file.len() as u64, 2)
                .expect("logged in");
        }
        Event::FileRead { id, offset, len } => {
            let piece = file.slice(offset as usize..(offset + len) as usize);
            client
                .supply_file_data(id, offset, piece)
                .expect("asked for");
        }
        Event::Progress { sent, total, .. } => println!("alice: {}%", sent * 100 / total),
        Event::SendResult { id, kind, code, .. } => {
            println!("alice: {kind:?} {id}: {code}");
            pending -= 1;
            if pending == 0 {
                client.close();
            }
        }
        _ => {}
    })?;
    bob.join().expect("bob's thread")?;
    Ok(())
}
