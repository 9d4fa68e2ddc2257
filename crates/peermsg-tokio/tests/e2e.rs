//! A relay and clients over real loopback TCP.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::small_disk::SmallDisk;
use common::{result, results, start};
use peermsg::client::{ClientConfig, Event};
use peermsg::relay::RelayConfig;
use peermsg::ErrorCode;
use peermsg_tokio::{connect, ClientEvent, ClientEvents, ClientHandle, ConnectError, ServerConfig};

async fn relay(tokens: Option<&[(&str, &str)]>) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    relay_with(tokens, RelayConfig::default()).await
}

async fn relay_with(
    tokens: Option<&[(&str, &str)]>,
    config: RelayConfig,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let config = ServerConfig {
        relay: config,
        ..ServerConfig::default()
    };
    start(config, tokens).await
}

/// alice and bob logged in with the default configuration; bob's files go to `sink`.
async fn alice_and_bob(
    addr: SocketAddr,
    sink: Option<&std::path::Path>,
) -> (ClientHandle, ClientEvents, ClientHandle, ClientEvents) {
    let (alice, a) = connect(addr, "alice", b"", ClientConfig::default(), None)
        .await
        .unwrap();
    let (bob, b) = connect(addr, "bob", b"", ClientConfig::default(), sink)
        .await
        .unwrap();
    (alice, a, bob, b)
}

fn fast_timeouts() -> ClientConfig {
    ClientConfig {
        keepalive_interval: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(1),
        ..ClientConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_file_arrives_identical_while_commands_flow() {
    let (addr, _stop) = relay(None).await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, _a_events, _bob, mut b_events) = alice_and_bob(addr, Some(dir.path())).await;
    let src = tempfile::NamedTempFile::new().unwrap();
    let content: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(src.path(), &content).unwrap();
    let file = alice.send_file("bob", src.path(), 1).await.unwrap();
    let mut cmds = Vec::new();
    for i in 0..50u32 {
        cmds.push(
            alice
                .send_cmd("bob", Bytes::from(i.to_string()), 0)
                .await
                .unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Bob's application reads its events as they come (the file goes no faster than it).
    let bob_reads = tokio::spawn(async move {
        let mut got_cmds = 0;
        loop {
            match b_events.recv().await.unwrap() {
                ClientEvent::FileReceived {
                    tmp_file,
                    org_file_name,
                    size,
                    ..
                } => return (tmp_file, org_file_name, size, got_cmds),
                ClientEvent::Core(Event::CmdReceived { .. }) => got_cmds += 1,
                _ => {}
            }
        }
    });
    assert_eq!(result(file).await, ErrorCode::NOERR);
    let (tmp_file, org_file_name, size, got_cmds) = bob_reads.await.unwrap();
    let saved = (tmp_file, org_file_name, size);
    assert_eq!(saved.2, content.len() as u64);
    // The source is a hidden temporary file: it lands visibly (`.tmpX` as `_tmpX`).
    let sent_as = src.path().file_name().unwrap().to_string_lossy();
    assert_eq!(saved.1, peermsg_tokio::sanitize_file_name(&sent_as));
    assert!(
        std::fs::read(&saved.0).unwrap() == content,
        "byte-identical"
    );
    assert!(got_cmds > 0, "commands arrived during the file");
}

#[tokio::test]
async fn cancel_mid_file_leaves_no_temporary_file() {
    let (addr, _stop) = relay(None).await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, _a_events, _bob, mut b_events) = alice_and_bob(addr, Some(dir.path())).await;
    let src = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(src.path(), vec![7u8; 64 << 20]).unwrap();
    let id = alice.send_file("bob", src.path(), 0).await.unwrap();
    // Wait until bob has some of it.
    loop {
        if let Some(ClientEvent::Core(Event::ReceiveProgress { .. })) = b_events.recv().await {
            break;
        }
    }
    assert_eq!(alice.cancel_send(id.id(), 9).await, ErrorCode::NOERR);
    assert_eq!(id.cancel(), ErrorCode::TRANSID_INVALID, "over already");
    assert_eq!(result(id).await, ErrorCode::CANCELLED);
    loop {
        if let Some(ClientEvent::Core(Event::ReceiveFailed { code, .. })) = b_events.recv().await {
            assert_eq!(code, ErrorCode::CANCELLED);
            break;
        }
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temporary file left"
    );
}

#[tokio::test]
async fn offline_target_and_bad_token() {
    let (addr, _stop) = relay(Some(&[("alice", "pw")])).await;
    let (alice, _events) = connect(addr, "alice", b"pw", ClientConfig::default(), None)
        .await
        .unwrap();
    let id = alice
        .send_cmd("nobody", Bytes::from_static(b"?"), 0)
        .await
        .unwrap();
    assert_eq!(result(id).await, ErrorCode::OFFLINE);
    let refused = connect(addr, "alice", b"wrong", ClientConfig::default(), None).await;
    assert!(
        matches!(refused, Err(ConnectError::Refused(code)) if code == ErrorCode::LOGIN_REJECTED),
        "{refused:?}"
    );
    let unknown = connect(addr, "mallory", b"pw", ClientConfig::default(), None).await;
    assert!(matches!(unknown, Err(ConnectError::Refused(_))));
    let unreachable = connect("127.0.0.1:1", "alice", b"pw", ClientConfig::default(), None).await;
    assert!(matches!(unreachable, Err(ConnectError::Io(_))));
}

#[tokio::test]
async fn a_receiver_killed_mid_transfer_gives_the_sender_207() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, _stop) = relay(None).await;
    let (alice, _a_events) = connect(addr, "alice", b"", fast_timeouts(), None)
        .await
        .unwrap();
    // bob: a client whose process dies part way: its socket just closes, no CLOSE frame.
    let mut bob =
        peermsg::client::Client::new(ClientConfig::default(), peermsg::Instant::ZERO).unwrap();
    bob.login("bob", b"").unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = vec![0u8; 65536];
    let mut received = 0usize;
    let mut sent = None;
    loop {
        let mut out = bytes::BytesMut::new();
        while bob.poll_transmit(&mut out) > 0 {}
        wr.write_all(&out).await.unwrap();
        while let Some(e) = bob.poll_event() {
            if matches!(e, Event::LoginResult { .. }) && sent.is_none() {
                sent = Some(
                    alice
                        .send_buffer("bob", Bytes::from(vec![1u8; 80 << 20]), 0)
                        .await
                        .unwrap(),
                );
            }
        }
        let n = rd.read(&mut buf).await.unwrap();
        received += n;
        bob.handle_input(peermsg::Instant::ZERO, &buf[..n]);
        if received > 4 << 20 {
            break;
        }
    }
    let killed = std::time::Instant::now();
    drop((rd, wr, bob));
    assert_eq!(result(sent.unwrap()).await, ErrorCode::CONNECTIONLOST);
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "within the configured timeout"
    );
}

#[tokio::test]
async fn hostile_file_names_land_inside_the_directory() {
    let (addr, _stop) = relay(None).await;
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("in");
    std::fs::create_dir(&inner).unwrap();
    // A raw client that names its files as it likes.
    let mut raw =
        peermsg::client::Client::new(ClientConfig::default(), peermsg::Instant::ZERO).unwrap();
    raw.login("mallory", b"").unwrap();
    let (_bob, mut b_events) = connect(addr, "bob", b"", ClientConfig::default(), Some(&inner))
        .await
        .unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let names = ["../../x", "/etc/passwd", "a\\b", "ctl\u{1}\n", "", ".."];
    let files: Vec<Bytes> = names
        .iter()
        .map(|n| Bytes::from(format!("content of {n:?}")))
        .collect();
    let handle = tokio::spawn(drive_raw(
        raw,
        stream,
        names.iter().map(|s| s.to_string()).collect(),
        files.clone(),
    ));
    let mut saved = Vec::new();
    while saved.len() < names.len() {
        match tokio::time::timeout(Duration::from_secs(20), b_events.recv())
            .await
            .unwrap()
        {
            Some(ClientEvent::FileReceived {
                tmp_file,
                org_file_name,
                ..
            }) => saved.push((tmp_file, org_file_name)),
            Some(_) => {}
            None => panic!("bob's connection ended"),
        }
    }
    handle.abort();
    for (path, name) in &saved {
        assert_eq!(path.parent(), Some(inner.as_path()), "{path:?}");
        assert!(
            !name.contains(['/', '\\'])
                && name != ".."
                && !name.is_empty()
                && !name.chars().any(char::is_control),
            "{name:?}"
        );
        let body = std::fs::read(path).unwrap();
        assert!(files.iter().any(|f| f[..] == body[..]));
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing written beside the directory"
    );
}

/// Drives a raw client that sends files named `names` to bob.
async fn drive_raw(
    mut c: peermsg::client::Client,
    stream: tokio::net::TcpStream,
    names: Vec<String>,
    files: Vec<Bytes>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut rd, mut wr) = stream.into_split();
    let mut content = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let now = peermsg::Instant::ZERO;
    let mut started = false;
    loop {
        let mut out = bytes::BytesMut::new();
        while c.poll_transmit(&mut out) > 0 {}
        wr.write_all(&out).await.unwrap();
        while let Some(e) = c.poll_event() {
            match e {
                Event::LoginResult { .. } if !started => {
                    started = true;
                    for (n, f) in names.iter().zip(&files) {
                        let id = c.send_file(now, "bob", n, f.len() as u64, 0).unwrap();
                        content.insert(id, f.clone());
                    }
                }
                Event::FileRead { id, offset, len } => {
                    let f: &Bytes = &content[&id];
                    c.supply_file_data(
                        id,
                        offset,
                        f.slice(offset as usize..(offset + len) as usize),
                    )
                    .unwrap();
                }
                _ => {}
            }
        }
        let mut out = bytes::BytesMut::new();
        if c.poll_transmit(&mut out) > 0 {
            wr.write_all(&out).await.unwrap();
            continue;
        }
        let n = rd.read(&mut buf).await.unwrap();
        if n == 0 {
            return;
        }
        c.handle_input(now, &buf[..n]);
    }
}

#[tokio::test]
async fn shutdown_tells_every_client() {
    let (addr, stop) = relay(None).await;
    let (_alice, mut events) = connect(addr, "alice", b"", ClientConfig::default(), None)
        .await
        .unwrap();
    stop.send(()).unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Some(ClientEvent::Core(Event::Closed { code, .. })) => return code,
                Some(_) => continue,
                None => return ErrorCode::UNKNOWERR,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed, ErrorCode::SHUTDOWN);
}

#[tokio::test]
async fn many_commands_sent_at_once_all_arrive_and_the_last_handle_closes() {
    let (addr, _stop) = relay(None).await;
    let (alice, mut a_events, bob, mut b_events) = alice_and_bob(addr, None).await;
    // A burst from two clones of the handle, interleaved: every command arrives, each
    // sender's in its order, and each gets its result.
    let other = alice.clone();
    let mut ids = Vec::new();
    for i in 0..60u32 {
        let from = if i % 2 == 0 { &alice } else { &other };
        let id = from
            .send_cmd("bob", Bytes::from(i.to_be_bytes().to_vec()), u64::from(i))
            .await
            .unwrap();
        ids.push(id);
    }
    for id in ids {
        assert_eq!(result(id).await, ErrorCode::NOERR);
    }
    let mut got = Vec::new();
    while got.len() < 60 {
        if let Some(ClientEvent::Core(Event::CmdReceived { data, .. })) = b_events.recv().await {
            got.push(u32::from_be_bytes(data[..].try_into().unwrap()));
        }
    }
    assert_eq!(got, (0..60).collect::<Vec<_>>());
    // Dropping one clone keeps the connection; dropping the last closes it.
    drop(other);
    let id = alice
        .send_cmd("bob", Bytes::from_static(b"still"), 0)
        .await
        .unwrap();
    assert_eq!(result(id).await, ErrorCode::NOERR);
    drop(alice);
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = a_events.recv().await {
            if let ClientEvent::Core(Event::Closed { .. }) = event {
                return true;
            }
        }
        false
    })
    .await
    .expect("closed in time");
    assert!(closed, "the client reports its close");
    assert!(
        tokio::time::timeout(Duration::from_secs(10), a_events.recv())
            .await
            .expect("channel ends in time")
            .is_none(),
        "the task ends"
    );
    drop(bob);
}

#[tokio::test]
async fn a_slow_reader_gets_every_byte_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Windows larger than the kernel's socket buffers, so that the relay's socket toward
    // a stalled reader fills.
    let wide = RelayConfig {
        transfer_window: 24 << 20,
        conn_window: 32 << 20,
        ..RelayConfig::default()
    };
    let (addr, _stop) = relay_with(None, wide).await;
    let (alice, _a_events) = connect(addr, "alice", b"", ClientConfig::default(), None)
        .await
        .unwrap();
    // bob has a small socket buffer, reads 16 KiB at a time with pauses, and grants more
    // than the socket holds: the relay's socket toward him fills, so much of what it
    // writes goes through partial writes and flush tasks.
    let config = ClientConfig {
        transfer_window: 24 << 20,
        conn_window: 32 << 20,
        ..ClientConfig::default()
    };
    let mut bob = peermsg::client::Client::new(config, peermsg::Instant::ZERO).unwrap();
    bob.login("bob", b"").unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let data: Bytes = (0..16u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent = None;
    let mut got = None;
    let mut cmds = Vec::new();
    let mut reads = 0u64;
    loop {
        let mut out = bytes::BytesMut::new();
        while bob.poll_transmit(&mut out) > 0 {}
        wr.write_all(&out).await.unwrap();
        while let Some(e) = bob.poll_event() {
            match e {
                Event::LoginResult { .. } if sent.is_none() => {
                    let id = alice.send_buffer("bob", data.clone(), 0).await.unwrap();
                    for i in 0..20u8 {
                        alice
                            .send_cmd("bob", Bytes::from(vec![i]), 0)
                            .await
                            .unwrap();
                    }
                    sent = Some(id);
                }
                Event::BufferReceived { data, .. } => got = Some(data),
                Event::CmdReceived { data, .. } => cmds.push(data[0]),
                _ => {}
            }
        }
        let mut out = bytes::BytesMut::new();
        if bob.poll_transmit(&mut out) > 0 {
            wr.write_all(&out).await.unwrap();
        }
        if got.is_some() && cmds.len() == 20 {
            break;
        }
        let n = rd.read(&mut buf).await.unwrap();
        assert!(n > 0, "relay closed");
        bob.handle_input(peermsg::Instant::ZERO, &buf[..n]);
        reads += 1;
        if reads % 8 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if reads == 100 {
            // A long stall: the relay's socket toward bob fills up.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    assert!(got.unwrap() == data, "the buffer arrived intact");
    assert_eq!(cmds, (0..20).collect::<Vec<u8>>());
    assert_eq!(result(sent.unwrap()).await, ErrorCode::NOERR);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_does_not_read_its_events_confirms_nothing_more_and_its_sender_waits() {
    let (addr, _stop) = relay(None).await;
    let (alice, _a_events, _bob, mut b_events) = alice_and_bob(addr, None).await;
    let mut ids = Vec::new();
    for k in 0..300u32 {
        let cmd = Bytes::from(k.to_string());
        ids.push(alice.send_cmd("bob", cmd, 0).await.unwrap());
    }
    // Bob's application reads nothing for a while: only what fits in his channel is
    // confirmed, and alice is told of nothing more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut confirmed = 0;
    for id in &mut ids {
        if let Some(code) = id.try_result() {
            assert_eq!(code, ErrorCode::NOERR);
            confirmed += 1;
        }
    }
    assert!(
        confirmed <= peermsg_tokio::EVENT_QUEUE,
        "{confirmed} confirmed while bob read nothing"
    );
    // Once he reads, every command arrives, in order, and is confirmed.
    let mut got = Vec::new();
    while got.len() < ids.len() {
        let event = tokio::time::timeout(Duration::from_secs(30), b_events.recv())
            .await
            .expect("bob's events in time")
            .expect("bob connected");
        if let ClientEvent::Core(Event::CmdReceived { data, .. }) = event {
            got.push(data);
        }
    }
    let want: Vec<Bytes> = (0..300u32).map(|k| Bytes::from(k.to_string())).collect();
    assert_eq!(got, want);
    let rest = results(ids).await;
    assert!(rest.iter().all(|c| *c == ErrorCode::NOERR), "{rest:?}");
}

/// Alice sends bob a file of `size` bytes onto a 64 KiB disk of his. Gives alice's result,
/// what bob's application heard (`Some(code)` for a failure), and what is left on the
/// disk; `None` where no small disk can be mounted.
async fn file_onto_a_small_disk(size: usize) -> Option<(ErrorCode, Option<ErrorCode>, usize)> {
    let Some(disk) = SmallDisk::new("64k") else {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return None;
    };
    let (addr, _stop) = relay(None).await;
    let (alice, _a_events, _bob, mut b_events) = alice_and_bob(addr, Some(disk.0.path())).await;
    let src = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(src.path(), vec![1u8; size]).unwrap();
    let id = alice.send_file("bob", src.path(), 0).await.unwrap();
    let bob_saw = tokio::spawn(async move {
        loop {
            match b_events.recv().await {
                Some(ClientEvent::Core(Event::ReceiveFailed { code, .. })) => return Some(code),
                Some(ClientEvent::FileReceived { .. }) | None => return None,
                Some(_) => {}
            }
        }
    });
    let alice_got = result(id).await;
    let bob_got = tokio::time::timeout(Duration::from_secs(10), bob_saw)
        .await
        .expect("bob hears in time")
        .unwrap();
    let left = std::fs::read_dir(disk.0.path()).unwrap().count();
    Some((alice_got, bob_got, left))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_the_receivers_disk_cannot_hold_is_not_reported_delivered() {
    // 200 KiB: small enough to sit in the sink's write buffer until the end (where the
    // disk said no only when the file was kept); refused at its offer now.
    if let Some(outcome) = file_onto_a_small_disk(200 * 1024).await {
        let code = ErrorCode::FILE_NO_SPACE;
        assert_eq!(outcome, (code, Some(code), 0), "(alice, bob, files left)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_larger_than_the_free_space_fails_on_both_ends_and_leaves_nothing() {
    // 2 MiB onto 64 KiB: refused at its offer (the sink's writes failed part way). A disk
    // that fills as the bytes come: tests/kept_partials.rs.
    if let Some(outcome) = file_onto_a_small_disk(2 << 20).await {
        let code = ErrorCode::FILE_NO_SPACE;
        assert_eq!(outcome, (code, Some(code), 0), "(alice, bob, files left)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_send_gets_its_result_and_progress_on_its_handle_whatever_the_event_channel_holds() {
    let (addr, _stop) = relay(None).await;
    let (alice, _a_events, bob, mut b_events) = alice_and_bob(addr, None).await;
    // bob fills alice's event channel: she does not read it.
    let mut to_alice = Vec::new();
    for k in 0..100u32 {
        let cmd = Bytes::from(k.to_string());
        to_alice.push(bob.send_cmd("alice", cmd, 0).await.unwrap());
    }
    tokio::spawn(async move { while b_events.recv().await.is_some() {} });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Her own sends still end, each on its handle, with progress up to the whole.
    let data = Bytes::from(vec![4u8; 3 << 20]);
    let buffer = alice.send_buffer("bob", data, 0).await.unwrap();
    let cmd = alice
        .send_cmd("bob", Bytes::from_static(b"hi"), 0)
        .await
        .unwrap();
    let mut progress = buffer.progress();
    let watcher = tokio::spawn(async move {
        let mut seen = vec![progress.borrow_and_update().sent];
        while progress.changed().await.is_ok() {
            seen.push(progress.borrow_and_update().sent);
        }
        seen
    });
    assert_eq!(result(buffer).await, ErrorCode::NOERR);
    assert_eq!(result(cmd).await, ErrorCode::NOERR);
    let seen = watcher.await.unwrap();
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(*seen.last().unwrap(), 3 << 20, "{seen:?}");
    // And bob's commands wait for alice's application: none beyond her channel's room
    // was confirmed.
    let mut confirmed = 0;
    for send in &mut to_alice {
        confirmed += usize::from(send.try_result().is_some());
    }
    assert!(confirmed <= peermsg_tokio::EVENT_QUEUE, "{confirmed}");
}
