//! The SDK's operations through two clients on a simulated direct link, one scenario for
//! each row of DESIGN.md's table and each code the client produces.

mod support;

use bytes::Bytes;
use peermsg::client::{ClientConfig, Event, SendKind};
use peermsg::{ErrorCode, SendError};
use support::Sim;
use support::{content, result_of, Link};

fn link() -> Link {
    Link::direct(ClientConfig::default(), 7)
}

#[test]
fn command_is_delivered_whole_and_confirmed() {
    let mut l = link();
    let now = l.now;
    let id =
        l.a.client
            .send_cmd(now, "bob", Bytes::from_static(b"hello bob"), 42)
            .unwrap();
    l.run();
    assert!(l
        .b
        .events
        .iter()
        .any(|e| matches!(e, Event::CmdReceived { from, data, .. }
        if from.as_str() == "alice" && data[..] == b"hello bob"[..])));
    assert_eq!(result_of(&l.a.events, id), ErrorCode::NOERR);
    assert!(l.a.events.contains(&Event::SendResult {
        id,
        kind: SendKind::Cmd,
        code: ErrorCode::NOERR,
        cookie: 42
    }));
}

#[test]
fn large_command_is_fragmented_and_reassembled() {
    let mut l = link();
    let data = content(64 * 1024, 1);
    let id = l.a.client.send_cmd(l.now, "bob", data.clone(), 0).unwrap();
    l.run();
    let got: Vec<_> =
        l.b.events
            .iter()
            .filter_map(|e| match e {
                Event::CmdReceived { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect();
    assert_eq!(got, vec![data]);
    assert_eq!(result_of(&l.a.events, id), ErrorCode::NOERR);
}

#[test]
fn commands_arrive_in_order() {
    let mut l = link();
    for i in 0..200u32 {
        l.a.client
            .send_cmd(
                l.now,
                "bob",
                Bytes::from(i.to_be_bytes().to_vec()),
                i.into(),
            )
            .unwrap();
    }
    l.run();
    let got: Vec<u32> =
        l.b.events
            .iter()
            .filter_map(|e| match e {
                Event::CmdReceived { data, .. } => {
                    Some(u32::from_be_bytes(data[..].try_into().unwrap()))
                }
                _ => None,
            })
            .collect();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}

#[test]
fn buffer_arrives_verified_with_progress() {
    let mut l = link();
    let data = content(3 << 20, 2);
    let id =
        l.a.client
            .send_buffer(l.now, "bob", data.clone(), 9)
            .unwrap();
    l.run();
    let received: Vec<_> =
        l.b.events
            .iter()
            .filter_map(|e| match e {
                Event::BufferReceived { data, from, .. } => Some((from.to_string(), data.clone())),
                _ => None,
            })
            .collect();
    assert_eq!(received, vec![("alice".to_string(), data)]);
    assert_eq!(result_of(&l.a.events, id), ErrorCode::NOERR);
    let progress: Vec<(u64, u64)> =
        l.a.events
            .iter()
            .filter_map(|e| match e {
                Event::Progress {
                    id: i,
                    sent,
                    total,
                    cookie,
                } if *i == id => {
                    assert_eq!(*cookie, 9);
                    Some((*sent, *total))
                }
                _ => None,
            })
            .collect();
    assert!(progress.len() >= 3, "{progress:?}");
    assert!(
        progress.windows(2).all(|w| w[0].0 < w[1].0),
        "monotonic: {progress:?}"
    );
    assert_eq!(
        progress.last(),
        Some(&(3 << 20, 3 << 20)),
        "ends with the total"
    );
    // Progress never counts more than the receiver had taken: it precedes the result.
    let result_at =
        l.a.events
            .iter()
            .position(|e| matches!(e, Event::SendResult { .. }))
            .unwrap();
    let last_progress_at =
        l.a.events
            .iter()
            .rposition(|e| matches!(e, Event::Progress { .. }))
            .unwrap();
    assert!(last_progress_at < result_at);
}

#[test]
fn file_is_read_by_offset_and_delivered_by_offset() {
    let mut l = link();
    let data = content(5 << 20 | 123, 3);
    let id =
        l.a.client
            .send_file(l.now, "bob", "photo.jpg", data.len() as u64, 5)
            .unwrap();
    l.a.files.insert(id, data.clone());
    l.run();
    let mut offer = None;
    let mut assembled = Vec::new();
    for e in &l.b.events {
        match e {
            Event::Offer {
                name, size, kind, ..
            } => offer = Some((name.to_string(), *size, *kind)),
            Event::FileData { offset, data, .. } => {
                assert_eq!(*offset as usize, assembled.len(), "in order");
                assembled.extend_from_slice(data);
            }
            _ => {}
        }
    }
    assert_eq!(
        offer,
        Some(("photo.jpg".to_string(), data.len() as u64, SendKind::File))
    );
    assert_eq!(assembled, data);
    assert!(l
        .b
        .events
        .iter()
        .any(|e| matches!(e, Event::FileReceived { size, .. } if *size == data.len() as u64)));
    assert_eq!(result_of(&l.a.events, id), ErrorCode::NOERR);
    // Never more of the file in hand than the window.
    assert!(
        l.a.peak_buffered <= ClientConfig::default().transfer_window,
        "{}",
        l.a.peak_buffered
    );
}

#[test]
fn empty_buffer_and_empty_file() {
    let mut l = link();
    let b =
        l.a.client
            .send_buffer(l.now, "bob", Bytes::new(), 0)
            .unwrap();
    let f = l.a.client.send_file(l.now, "bob", "empty", 0, 0).unwrap();
    l.run();
    assert_eq!(result_of(&l.a.events, b), ErrorCode::NOERR);
    assert_eq!(result_of(&l.a.events, f), ErrorCode::NOERR);
}

#[test]
fn cancel_mid_buffer_tells_the_receiver() {
    let mut l = link();
    l.max_piece = 500;
    let id =
        l.a.client
            .send_buffer(l.now, "bob", content(8 << 20, 4), 1)
            .unwrap();
    // Let part of it through, then cancel.
    let started = |l: &Link| {
        l.b.events
            .iter()
            .any(|e| matches!(e, Event::ReceiveProgress { received, .. } if *received >= 1 << 20))
    };
    assert!(l.run_until(started));
    let code = l.a.client.cancel_send(id, 77);
    assert_eq!(code, ErrorCode::NOERR);
    l.run();
    assert!(l.a.events.contains(&Event::CancelResult {
        id,
        code: ErrorCode::NOERR,
        cookie: 77
    }));
    assert_eq!(result_of(&l.a.events, id), ErrorCode::CANCELLED);
    assert!(l
        .b
        .events
        .iter()
        .any(|e| matches!(e, Event::ReceiveFailed { code, .. } if *code == ErrorCode::CANCELLED)));
    assert!(!l
        .b
        .events
        .iter()
        .any(|e| matches!(e, Event::BufferReceived { .. })));
    // Nothing about the send after its result.
    let result_at =
        l.a.events
            .iter()
            .position(|e| matches!(e, Event::SendResult { .. }))
            .unwrap();
    assert!(!l.a.events[result_at + 1..]
        .iter()
        .any(|e| matches!(e, Event::Progress { .. })));
}

#[test]
fn cancel_of_a_command_or_unknown_or_finished_send_is_transid_invalid() {
    let mut l = link();
    let cmd =
        l.a.client
            .send_cmd(l.now, "bob", Bytes::from_static(b"x"), 0)
            .unwrap();
    assert_eq!(l.a.client.cancel_send(cmd, 1), ErrorCode::TRANSID_INVALID);
    let buf =
        l.a.client
            .send_buffer(l.now, "bob", Bytes::from_static(b"y"), 0)
            .unwrap();
    l.run();
    assert_eq!(
        l.a.client.cancel_send(buf, 2),
        ErrorCode::TRANSID_INVALID,
        "finished"
    );
    assert_eq!(
        l.a.client.cancel_send(peermsg::client::SendId(999), 3),
        ErrorCode::TRANSID_INVALID
    );
    assert!(l.a.events.contains(&Event::CancelResult {
        id: cmd,
        code: ErrorCode::TRANSID_INVALID,
        cookie: 1
    }));
    assert_eq!(
        result_of(&l.a.events, cmd),
        ErrorCode::NOERR,
        "the command still goes"
    );
}

#[test]
fn receiver_rejects_a_file_on_offer() {
    let mut l = link();
    l.b.reading = false; // bob decides on the offer himself
    let id =
        l.a.client
            .send_file(l.now, "bob", "big.iso", 8 << 20, 0)
            .unwrap();
    l.a.files.insert(id, content(8 << 20, 5));
    l.run();
    let offer = l.b.client.poll_event();
    let Some(Event::Offer { id: rid, .. }) = offer else {
        panic!("offer expected, got {offer:?}")
    };
    l.b.client.reject(rid, ErrorCode::REJECTED).unwrap();
    assert_eq!(
        l.b.client.reject(rid, ErrorCode::REJECTED),
        Err(peermsg::ActionError::UnknownId)
    );
    l.b.reading = true;
    l.run();
    assert_eq!(result_of(&l.a.events, id), ErrorCode::REJECTED);
    assert!(!l
        .b
        .events
        .iter()
        .any(|e| matches!(e, Event::FileReceived { .. })));
    // Bob held at most one window of the file while he was deciding.
    assert!(
        l.b.peak_buffered <= ClientConfig::default().transfer_window + 64 * 1024,
        "{}",
        l.b.peak_buffered
    );
}

#[test]
fn receiver_aborts_a_buffer_part_way() {
    let mut l = link();
    l.max_piece = 700;
    let id =
        l.a.client
            .send_buffer(l.now, "bob", content(8 << 20, 8), 0)
            .unwrap();
    let started = |l: &Link| {
        l.b.events
            .iter()
            .any(|e| matches!(e, Event::ReceiveProgress { .. }))
    };
    assert!(l.run_until(started));
    let rid =
        l.b.events
            .iter()
            .find_map(|e| match e {
                Event::Offer { id, .. } => Some(*id),
                _ => None,
            })
            .unwrap();
    l.b.client.reject(rid, ErrorCode::ABORTED).unwrap();
    l.run();
    assert_eq!(result_of(&l.a.events, id), ErrorCode::ABORTED);
    assert!(!l
        .b
        .events
        .iter()
        .any(|e| matches!(e, Event::BufferReceived { .. })));
    assert!(
        !l.a.client.is_closed() && !l.b.client.is_closed(),
        "late DATA is dropped, not an error"
    );
}

#[test]
fn file_source_failure_ends_the_send_with_1103() {
    let mut l = link();
    let id =
        l.a.client
            .send_file(l.now, "bob", "gone.bin", 1 << 20, 0)
            .unwrap();
    l.a.failing_files.push(id);
    l.run();
    assert_eq!(result_of(&l.a.events, id), ErrorCode::SENDFILE_FILEINERROR);
    assert!(l.b.events.iter().any(|e| matches!(e, Event::ReceiveFailed { code, .. } if *code == ErrorCode::SENDFILE_FILEINERROR)));
}

#[test]
fn sends_refused_before_anything_is_queued() {
    let mut l = link();
    let now = l.now;
    let too_big_cmd = Bytes::from(vec![0; 64 * 1024 + 1]);
    let check = |r: Result<_, SendError>, code| assert_eq!(r.map_err(|e| e.code()), Err(code));
    check(
        l.a.client.send_cmd(now, "bob", too_big_cmd, 0),
        ErrorCode::SENDCMD_LARGE,
    );
    check(
        l.a.client.send_cmd(now, "", Bytes::new(), 0),
        ErrorCode::PARAM_ERR,
    );
    check(
        l.a.client.send_cmd(now, "bo\nb", Bytes::new(), 0),
        ErrorCode::PARAM_ERR,
    );
    check(
        l.a.client.send_cmd(now, &"x".repeat(129), Bytes::new(), 0),
        ErrorCode::SENDDATA_TARGETINVALID,
    );
    check(
        l.a.client.send_cmd(now, "carol", Bytes::new(), 0),
        ErrorCode::SENDDATA_TARGETINVALID,
    );
    assert_eq!(l.a.client.pending_sends(), 0);

    let small = ClientConfig {
        limits: peermsg::wire::Limits {
            max_buffer_size: 1000,
            max_file_size: 2000,
            ..Default::default()
        },
        ..ClientConfig::default()
    };
    let mut l = Link::direct(small, 1);
    let now = l.now;
    check(
        l.a.client
            .send_buffer(now, "bob", Bytes::from(vec![0; 1001]), 0),
        ErrorCode::SENDBUFFER_LARGE,
    );
    check(
        l.a.client.send_file(now, "bob", "f", 2001, 0),
        ErrorCode::FILE_SIZE_ERR,
    );
    assert!(l
        .a
        .client
        .send_buffer(now, "bob", Bytes::from(vec![0; 1000]), 0)
        .is_ok());
}

#[test]
fn send_before_login_is_not_login() {
    let mut c =
        peermsg::client::Client::new(ClientConfig::default(), peermsg::Instant::ZERO).unwrap();
    let r = c.send_cmd(peermsg::Instant::ZERO, "bob", Bytes::from_static(b"x"), 0);
    assert_eq!(r.map_err(|e| e.code()), Err(ErrorCode::NOT_LOGIN));
}

#[test]
fn idle_timeout_fails_pending_sends_with_connection_lost() {
    let mut l = link();
    let id =
        l.a.client
            .send_buffer(l.now, "bob", content(1 << 20, 6), 0)
            .unwrap();
    // Bob's side goes silent: drop everything bob would send.
    l.a.client.handle_timeout(l.now);
    let start = l.now;
    let mut now = start;
    while !l.a.client.is_closed() {
        let mut sink = bytes::BytesMut::new();
        l.a.client.poll_transmit(&mut sink);
        now = l.a.client.poll_timeout().expect("a deadline while open");
        l.a.client.handle_timeout(now);
    }
    let events: Vec<_> = std::iter::from_fn(|| l.a.client.poll_event()).collect();
    assert_eq!(result_of(&events, id), ErrorCode::CONNECTIONLOST);
    assert_eq!(now - start, ClientConfig::default().idle_timeout);
    assert!(
        matches!(events.last(), Some(Event::Closed { code, .. }) if *code == ErrorCode::SOCKETTIMEOUT)
    );
}

#[test]
fn keepalive_measures_rtt_and_keeps_the_link() {
    let mut l = link();
    l.run_for(std::time::Duration::from_secs(120));
    assert!(!l.a.client.is_closed() && !l.b.client.is_closed());
    assert_eq!(l.a.client.rtt(), Some(2 * l.latency));
}

#[test]
fn send_timeout_gives_sockettimeout() {
    let config = ClientConfig {
        send_timeout: Some(std::time::Duration::from_millis(50)),
        ..ClientConfig::default()
    };
    let mut l = Link::direct(config, 3);
    l.b.reading = false; // bob never takes the command, so it is never confirmed
    let id =
        l.a.client
            .send_cmd(l.now, "bob", Bytes::from_static(b"late"), 0)
            .unwrap();
    l.run_for(std::time::Duration::from_millis(100));
    assert_eq!(result_of(&l.a.events, id), ErrorCode::SOCKETTIMEOUT);
}

#[test]
fn cancel_at_every_stage() {
    // Waiting: behind the concurrency cap, never opened.
    let config = ClientConfig {
        max_transfers: 1,
        ..ClientConfig::default()
    };
    let mut l = Link::direct(config, 11);
    let first =
        l.a.client
            .send_buffer(l.now, "bob", content(3 << 20, 1), 0)
            .unwrap();
    let waiting =
        l.a.client
            .send_buffer(l.now, "bob", content(1000, 2), 0)
            .unwrap();
    assert_eq!(l.a.client.cancel_send(waiting, 0), ErrorCode::NOERR);
    l.run();
    assert_eq!(result_of(&l.a.events, waiting), ErrorCode::CANCELLED);
    assert_eq!(result_of(&l.a.events, first), ErrorCode::NOERR);
    let offers =
        l.b.events
            .iter()
            .filter(|e| matches!(e, Event::Offer { .. }))
            .count();
    assert_eq!(offers, 1, "the cancelled send never reached bob");

    // Ending: every byte and the END sent, bob has it whole but his application has not
    // taken it: the cancel wins on both ends.
    let mut l = link();
    l.b.reading = false;
    let id =
        l.a.client
            .send_buffer(l.now, "bob", content(1000, 3), 0)
            .unwrap();
    l.run();
    assert_eq!(l.a.client.cancel_send(id, 0), ErrorCode::NOERR);
    l.run();
    l.b.reading = true;
    l.run();
    assert_eq!(result_of(&l.a.events, id), ErrorCode::CANCELLED);
    assert!(!l
        .b
        .events
        .iter()
        .any(|e| matches!(e, Event::BufferReceived { .. })));
    assert!(l
        .b
        .events
        .iter()
        .any(|e| matches!(e, Event::ReceiveFailed { code, .. } if *code == ErrorCode::CANCELLED)));
    assert!(!l.a.client.is_closed() && !l.b.client.is_closed());

    // The same, but bob's application takes it before the cancel reaches him: the
    // delivery wins on both ends.
    let mut l = link();
    l.b.reading = false;
    let id =
        l.a.client
            .send_buffer(l.now, "bob", content(1000, 4), 0)
            .unwrap();
    l.run();
    // Bob's application takes it (its RESULT is queued), then alice cancels.
    let taken = std::iter::from_fn(|| l.b.client.poll_event())
        .any(|e| matches!(e, Event::BufferReceived { .. }));
    assert!(taken);
    assert_eq!(l.a.client.cancel_send(id, 0), ErrorCode::NOERR);
    l.b.reading = true;
    l.run();
    assert_eq!(result_of(&l.a.events, id), ErrorCode::NOERR);
    assert!(!l
        .b
        .events
        .iter()
        .any(|e| matches!(e, Event::ReceiveFailed { .. })));
    assert!(!l.a.client.is_closed() && !l.b.client.is_closed());
}

#[test]
fn queue_full_is_limit_exceeded() {
    let config = ClientConfig {
        max_queued_sends: 3,
        ..ClientConfig::default()
    };
    let mut l = Link::direct(config, 12);
    for _ in 0..3 {
        l.a.client
            .send_cmd(l.now, "bob", Bytes::from_static(b"x"), 0)
            .unwrap();
    }
    let r =
        l.a.client
            .send_cmd(l.now, "bob", Bytes::from_static(b"x"), 0);
    assert_eq!(r.map_err(|e| e.code()), Err(ErrorCode::LIMIT_EXCEEDED));
    l.run();
    assert!(
        l.a.client
            .send_cmd(l.now, "bob", Bytes::from_static(b"x"), 0)
            .is_ok(),
        "room again"
    );
}

#[test]
fn commands_beyond_the_peers_cap_wait_their_turn() {
    let config = ClientConfig {
        max_cmds_in_flight: 2,
        ..ClientConfig::default()
    };
    let mut l = Link::direct(config, 13);
    l.b.reading = false; // bob holds his events: nothing is confirmed
    for i in 0..5u8 {
        l.a.client
            .send_cmd(l.now, "bob", Bytes::from(vec![i]), 0)
            .unwrap();
    }
    l.run();
    let waiting = std::iter::from_fn(|| l.b.client.poll_event()).count();
    assert_eq!(waiting, 2, "only the peer's cap of commands went out");
    l.b.reading = true;
    l.run();
    let got =
        l.b.events
            .iter()
            .filter(|e| matches!(e, Event::CmdReceived { .. }))
            .count();
    assert_eq!(got, 3, "the rest followed as results came back");
    assert_eq!(l.a.client.pending_sends(), 0);
}

#[test]
fn receive_progress_is_monotonic_and_ends_at_the_total() {
    let mut l = link();
    l.a.client
        .send_buffer(l.now, "bob", content(1 << 20, 9), 0)
        .unwrap();
    l.run();
    let seen: Vec<(u64, u64)> =
        l.b.events
            .iter()
            .filter_map(|e| match e {
                Event::ReceiveProgress {
                    received, total, ..
                } => Some((*received, *total)),
                _ => None,
            })
            .collect();
    assert!(seen.len() >= 4, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(seen.last(), Some(&(1 << 20, 1 << 20)));
}

#[test]
fn a_buffer_the_application_confirms_is_delivered_only_when_it_says_so() {
    let config = ClientConfig {
        confirm_buffers: true,
        ..ClientConfig::default()
    };
    let mut l = Link::direct(config, 11);
    let now = l.now;
    let kept =
        l.a.client
            .send_buffer(now, "bob", content(5000, 1), 0)
            .unwrap();
    let lost =
        l.a.client
            .send_buffer(now, "bob", content(7000, 2), 0)
            .unwrap();
    l.run();
    let received: Vec<_> =
        l.b.events
            .iter()
            .filter_map(|e| match e {
                Event::BufferReceived { id, data, .. } => Some((*id, data.len())),
                _ => None,
            })
            .collect();
    assert_eq!(received.len(), 2, "both arrived");
    // Taking the events confirmed nothing.
    assert!(!l
        .a
        .events
        .iter()
        .any(|e| matches!(e, Event::SendResult { .. })));
    let id_of = |len| received.iter().find(|(_, l)| *l == len).unwrap().0;
    assert_eq!(l.b.client.accept_delivery(id_of(5000)), Ok(()));
    assert_eq!(
        l.b.client.fail_delivery(id_of(7000), ErrorCode::NOERR),
        Ok(()),
        "a success given as a failure code is FILE_WRITE_ERR"
    );
    assert_eq!(
        l.b.client.accept_delivery(id_of(5000)),
        Err(peermsg::ActionError::UnknownId),
        "answered once"
    );
    l.run();
    assert_eq!(result_of(&l.a.events, kept), ErrorCode::NOERR);
    assert_eq!(result_of(&l.a.events, lost), ErrorCode::FILE_WRITE_ERR);
}

#[test]
fn without_confirm_buffers_taking_a_buffer_confirms_it_and_accept_is_refused() {
    let mut l = link();
    let now = l.now;
    let id =
        l.a.client
            .send_buffer(now, "bob", content(5000, 1), 0)
            .unwrap();
    l.run();
    let got = l.b.events.iter().find_map(|e| match e {
        Event::BufferReceived { id, .. } => Some(*id),
        _ => None,
    });
    assert_eq!(
        l.b.client.accept_delivery(got.unwrap()),
        Err(peermsg::ActionError::UnknownId)
    );
    assert_eq!(result_of(&l.a.events, id), ErrorCode::NOERR);
}

#[test]
fn results_and_progress_can_be_taken_ahead_of_incoming_messages() {
    let mut l = link();
    // bob's application reads nothing for now.
    l.b.reading = false;
    let now = l.now;
    l.a.client
        .send_cmd(now, "bob", Bytes::from_static(b"to bob"), 0)
        .unwrap();
    l.run();
    let mine =
        l.b.client
            .send_buffer(l.now, "alice", content(300_000, 3), 9)
            .unwrap();
    l.run();
    // bob's queue: alice's command first, then his own buffer's progress and result.
    let mut taken = Vec::new();
    while let Some(event) = l.b.client.poll_send_event() {
        assert_eq!(event.send_id(), Some(mine));
        taken.push(event);
    }
    let sent: Vec<u64> = taken
        .iter()
        .filter_map(|e| match e {
            Event::Progress { sent, .. } => Some(*sent),
            _ => None,
        })
        .collect();
    assert!(sent.windows(2).all(|w| w[0] < w[1]), "in order: {sent:?}");
    assert!(matches!(
        taken.last(),
        Some(Event::SendResult { id, code, .. }) if *id == mine && code.is_success()
    ));
    // The command still waits, unconfirmed, for bob's application.
    assert!(matches!(
        l.b.client.poll_event(),
        Some(Event::CmdReceived { data, .. }) if data[..] == b"to bob"[..]
    ));
    assert_eq!(l.b.client.poll_event(), None, "nothing was taken twice");
}

#[test]
fn poll_output_does_not_say_wait_while_a_file_read_is_asked() {
    // The drive loop stops at Timeout: a file read raised while writing must come out
    // before it, or a send waiting for file bytes would stall with nothing on the wire.
    let mut l = link();
    l.a.reading = false;
    let id = l.a.client.send_file(l.now, "bob", "f", 10_000, 0).unwrap();
    let mut out = bytes::BytesMut::new();
    let mut asked = false;
    loop {
        match l.a.client.poll_output(&mut out) {
            peermsg::client::Output::Event(Event::FileRead { id: r, .. }) if r == id => {
                asked = true
            }
            peermsg::client::Output::Timeout(_) | peermsg::client::Output::Closed => break,
            _ => {}
        }
    }
    assert!(asked, "the read was asked for before the wait");
}
