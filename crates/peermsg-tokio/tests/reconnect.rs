//! A client that reconnects (`connect_with` and `Reconnect`): commands in flight when the
//! relay goes away are sent again when it is back, and each is delivered exactly once, in
//! order; a relogin elsewhere ends the session for good.

use std::time::Duration;

use bytes::Bytes;
use peermsg_tokio::{
    connect_with, serve, ClientConfig, ClientEvent, Event, OpenAccess, Reconnect, SendError,
    Server, ServerConfig,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A relay on `addr` until the returned sender is used (it tells its clients SHUTDOWN).
async fn relay_on(addr: std::net::SocketAddr) -> oneshot::Sender<()> {
    let listener = loop {
        // The port was just released by the relay before: bind again until it is free.
        match TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        ServerConfig::default(),
        OpenAccess,
        async move {
            let _ = stopped.await;
        },
    ));
    stop
}

/// A loopback address free a moment ago.
async fn free_addr() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

fn quick() -> Reconnect {
    Reconnect {
        window: Duration::from_secs(30),
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(50),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_in_flight_when_the_relay_restarts_arrive_exactly_once_in_order() {
    let addr = free_addr().await;
    let stop = relay_on(addr).await;
    let servers = [Server::Tcp(addr.to_string())];
    let config = ClientConfig::default();
    let (_bob, mut bob_events) = connect_with(&servers, "bob", b"", config, None, Some(quick()))
        .await
        .unwrap();
    let (alice, _alice_events) = connect_with(&servers, "alice", b"", config, None, Some(quick()))
        .await
        .unwrap();
    const N: u32 = 4000;
    let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    // Whether bob is connected: a command sent while he is away is rightly OFFLINE, so new
    // commands wait for him (those in flight at the loss are the client's to carry).
    let bob_up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let bob_seen = bob_up.clone();
    tokio::spawn(async move {
        use std::sync::atomic::Ordering::SeqCst;
        while let Some(event) = bob_events.recv().await {
            match event {
                ClientEvent::Core(Event::CmdReceived { data, .. }) => {
                    let n = u32::from_be_bytes(data[..4].try_into().unwrap());
                    let _ = got_tx.send(n);
                }
                ClientEvent::Reconnecting { .. } => bob_seen.store(false, SeqCst),
                ClientEvent::Reconnected { .. } => bob_seen.store(true, SeqCst),
                _ => {}
            }
        }
    });
    let sender = tokio::spawn(async move {
        let mut in_flight = std::collections::VecDeque::new();
        let mut codes = Vec::new();
        for n in 0..N {
            while !bob_up.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let data = Bytes::copy_from_slice(&n.to_be_bytes());
            let sent = loop {
                match alice.send_cmd("bob", data.clone(), 0).await {
                    Ok(sent) => break sent,
                    // No connection at this moment: the command was not sent; try again.
                    Err(SendError::Closed | SendError::NotLoggedIn) => {
                        tokio::time::sleep(Duration::from_millis(10)).await
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            in_flight.push_back(sent);
            if in_flight.len() >= 64 {
                codes.push(in_flight.pop_front().unwrap().await);
            }
        }
        for sent in in_flight {
            codes.push(sent.await);
        }
        (alice, codes)
    });
    let mut received = Vec::new();
    while received.len() < (N / 3) as usize {
        received.push(got.recv().await.unwrap());
    }
    // The relay goes away with commands under way, and comes back.
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let _stop = relay_on(addr).await;
    let (_alice, codes) = tokio::time::timeout(Duration::from_secs(60), sender)
        .await
        .expect("every command has its result")
        .unwrap();
    assert!(codes.iter().all(|c| c.is_success()), "{codes:?}");
    while received.len() < N as usize {
        let n = tokio::time::timeout(Duration::from_secs(10), got.recv())
            .await
            .expect("all of them")
            .unwrap();
        received.push(n);
    }
    // Nothing more comes: no repeat was delivered.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), got.recv())
            .await
            .is_err(),
        "a command delivered twice"
    );
    assert_eq!(received, (0..N).collect::<Vec<_>>(), "each once, in order");
}

#[tokio::test]
async fn a_session_replaced_by_a_relogin_does_not_come_back() {
    let addr = free_addr().await;
    let _stop = relay_on(addr).await;
    let servers = [Server::Tcp(addr.to_string())];
    let config = ClientConfig::default();
    let (_first, mut first_events) =
        connect_with(&servers, "bob", b"", config, None, Some(quick()))
            .await
            .unwrap();
    let (_second, _) = connect_with(&servers, "bob", b"", config, None, Some(quick()))
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match first_events.recv().await {
                Some(ClientEvent::Core(Event::Closed { code, .. })) => return code,
                Some(ClientEvent::Reconnecting { .. }) => panic!("it must not reconnect"),
                Some(_) => continue,
                None => panic!("no Closed"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed, peermsg_tokio::ErrorCode::KICKOUT_BY_RELOGIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffer_cut_by_a_relay_restart_goes_on_from_what_the_receiver_kept() {
    let addr = free_addr().await;
    let stop = relay_on(addr).await;
    let servers = [Server::Tcp(addr.to_string())];
    // Small windows: the buffer moves in steps the test can cut between.
    let config = ClientConfig {
        transfer_window: 256 << 10,
        conn_window: 512 << 10,
        ..ClientConfig::default()
    };
    let (_bob, mut bob_events) = connect_with(&servers, "bob", b"", config, None, Some(quick()))
        .await
        .unwrap();
    let (alice, _alice_events) = connect_with(&servers, "alice", b"", config, None, Some(quick()))
        .await
        .unwrap();
    // bob's application reads its events all along (it must: an unread channel stops
    // its client), telling the test how far the buffer got and what was delivered.
    let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = bob_events.recv().await {
            let _ = heard_tx.send(event);
        }
    });
    let buffer: Bytes = (0..64u32 << 20)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let sent = alice.send_buffer("bob", buffer.clone(), 0).await.unwrap();
    let progress = sent.progress();
    // Cut when bob has a quarter of it.
    loop {
        match heard.recv().await.unwrap() {
            ClientEvent::Core(Event::ReceiveProgress { received, .. }) if received >= 16 << 20 => {
                break
            }
            _ => {}
        }
    }
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let _stop = relay_on(addr).await;
    let code = tokio::time::timeout(Duration::from_secs(30), sent)
        .await
        .unwrap();
    assert!(code.is_success(), "{code}");
    let resumed_at = progress.borrow().resumed_at;
    assert!(
        resumed_at.is_some_and(|at| at >= 16 << 20),
        "{resumed_at:?}"
    );
    let mut delivered = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(500), heard.recv()).await
    {
        if let ClientEvent::Core(Event::BufferReceived { data, .. }) = event {
            delivered.push(data);
        }
    }
    assert_eq!(delivered.len(), 1, "once");
    assert!(delivered[0] == buffer, "whole");
}

/// A proxy on a free address to `relay`: what the client sends goes through as it is; of
/// what the relay sends, the first `cuts` connections end right after an `END` frame (the
/// file's last bytes and the loss of the connection arrive together).
async fn proxy_cutting_after_end(relay: std::net::SocketAddr, cuts: usize) -> std::net::SocketAddr {
    use peermsg::wire::{Decoder, Frame, Limits};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut cut = 0;
        loop {
            let (client, _) = listener.accept().await.unwrap();
            let upstream = tokio::net::TcpStream::connect(relay).await.unwrap();
            let (mut client_rd, mut client_wr) = client.into_split();
            let (mut relay_rd, mut relay_wr) = upstream.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_rd, &mut relay_wr).await;
            });
            let cutting = cut < cuts;
            cut += 1;
            tokio::spawn(async move {
                let mut decoder = Decoder::new(Limits::default()).unwrap();
                let mut pending = bytes::BytesMut::new();
                let mut read = [0u8; 64 << 10];
                loop {
                    let n = match relay_rd.read(&mut read).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if !cutting {
                        if client_wr.write_all(&read[..n]).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    // Whole frames go on; after an END nothing more does.
                    pending.extend_from_slice(&read[..n]);
                    loop {
                        let before = pending.clone();
                        match decoder.decode(&mut pending).unwrap() {
                            None => break,
                            Some(frame) => {
                                let len = before.len() - pending.len();
                                client_wr.write_all(&before[..len]).await.unwrap();
                                if matches!(frame, Frame::End(_)) {
                                    // Dropping both halves closes the client's socket.
                                    return;
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_end_comes_with_the_loss_of_the_connection_is_delivered_once() {
    let addr = free_addr().await;
    let _stop = relay_on(addr).await;
    const ROUNDS: usize = 4;
    let proxy = proxy_cutting_after_end(addr, ROUNDS).await;
    let dir = tempfile::tempdir().unwrap();
    let config = ClientConfig::default();
    let (_bob, mut bob_events) = connect_with(
        &[Server::Tcp(proxy.to_string())],
        "bob",
        b"",
        config,
        Some(dir.path()),
        Some(quick()),
    )
    .await
    .unwrap();
    let servers = [Server::Tcp(addr.to_string())];
    let (alice, _alice_events) = connect_with(&servers, "alice", b"", config, None, Some(quick()))
        .await
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    for round in 0..ROUNDS {
        let data: Vec<u8> = (0..(1u32 << 20) + round as u32)
            .map(|i| (i.wrapping_mul(31) >> 3) as u8 ^ round as u8)
            .collect();
        let path = files.path().join(format!("f{round}.bin"));
        std::fs::write(&path, &data).unwrap();
        let sent = alice.send_file("bob", &path, 0).await.unwrap();
        // bob's connection is lost with the file's END: the sender comes back, hears that
        // bob has it all, and is confirmed; bob's application gets the file, once.
        let code = tokio::time::timeout(Duration::from_secs(30), sent)
            .await
            .unwrap();
        assert_eq!(code, peermsg_tokio::ErrorCode::NOERR, "round {round}");
        let mut received = Vec::new();
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(1000), bob_events.recv()).await
        {
            match event {
                ClientEvent::FileReceived { tmp_file, .. } => {
                    received.push(std::fs::read(&tmp_file).unwrap());
                    std::fs::remove_file(&tmp_file).unwrap();
                }
                ClientEvent::Core(Event::ReceiveFailed { code, .. }) => {
                    panic!("round {round}: the application was told {code}")
                }
                _ => {}
            }
        }
        assert_eq!(received.len(), 1, "round {round}: files received");
        assert!(received[0] == data, "round {round}: its bytes");
    }
}
