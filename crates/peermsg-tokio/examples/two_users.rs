//! A relay and two users over loopback TCP: alice sends bob a command and a file, bob
//! reads his events, alice awaits her sends. `cargo run -p peermsg-tokio --example two_users`

use peermsg_tokio::{
    connect, serve, ClientConfig, ClientEvent, ErrorCode, Event, OpenAccess, ServerConfig,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(
        listener,
        ServerConfig::default(),
        OpenAccess,
        std::future::pending(),
    ));

    // bob keeps files in a directory of his; he must read his events for anything to arrive.
    let inbox = tempfile::tempdir()?;
    let (_bob, mut bob_events) = connect(
        addr,
        "bob",
        b"",
        ClientConfig::default(),
        Some(inbox.path()),
    )
    .await?;
    let bob = tokio::spawn(async move {
        while let Some(event) = bob_events.recv().await {
            match event {
                ClientEvent::Core(Event::CmdReceived { from, data, .. }) => {
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

    // alice reads no events here (nobody sends her anything): each send's result comes on
    // its own handle.
    let (alice, _alice_events) = connect(addr, "alice", b"", ClientConfig::default(), None).await?;
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), vec![7u8; 1 << 20])?;
    let hello = alice.send_cmd("bob", "hello".into(), 0).await?;
    let report = alice.send_file("bob", file.path(), 0).await?;
    let mut progress = report.progress();
    tokio::spawn(async move {
        while progress.changed().await.is_ok() {
            let p = *progress.borrow();
            println!("alice: file {} of {} bytes taken", p.sent, p.total);
        }
    });
    for (what, send) in [("command", hello), ("file", report)] {
        let code = send.await;
        println!("alice: {what}: {code}");
        assert_eq!(code, ErrorCode::NOERR);
    }
    bob.await?;
    Ok(())
}
