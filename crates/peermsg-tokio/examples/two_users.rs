//! A relay and two users over loopback TCP: alice sends bob a command and a file, bob
//! reads his events, alice awaits her results. `cargo run -p peermsg-tokio --example two_users`

use peermsg_tokio::{connect, serve, ClientEvent, Config, ErrorCode, Event, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(
        listener,
        ServerConfig::default(),
        None,
        std::future::pending(),
    ));

    // bob keeps files in a directory of his; he must read his events for anything to arrive.
    let inbox = tempfile::tempdir()?;
    let (_bob, mut bob_events) =
        connect(addr, "bob", b"", Config::default(), Some(inbox.path())).await?;
    let bob = tokio::spawn(async move {
        while let Some(event) = bob_events.recv().await {
            match event {
                ClientEvent::Core(Event::CmdReceived { from, data }) => {
                    println!("bob: {from} says {}", String::from_utf8_lossy(&data));
                }
                ClientEvent::FileReceived {
                    from,
                    org_file_name,
                    size,
                    tmp_file,
                    ..
                } => {
                    println!(
                        "bob: {org_file_name} ({size} bytes) from {from}, kept at {}",
                        tmp_file.display()
                    );
                    return;
                }
                _ => {}
            }
        }
    });

    let (alice, mut alice_events) = connect(addr, "alice", b"", Config::default(), None).await?;
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), vec![7u8; 1 << 20])?;
    let sends = [
        alice.send_cmd("bob", "hello".into(), 0).await?,
        alice.send_file("bob", file.path(), 0).await?,
    ];
    let mut done = 0;
    while done < sends.len() {
        if let Some(ClientEvent::Core(Event::SendResult { id, code, .. })) =
            alice_events.recv().await
        {
            println!("alice: {id}: {code}");
            assert_eq!(code, ErrorCode::NOERR);
            done += 1;
        }
    }
    bob.await?;
    Ok(())
}
