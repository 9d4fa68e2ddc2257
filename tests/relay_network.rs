//! Clients through the relay on a simulated network.

mod support;

use bytes::Bytes;
use peermsg::client::{ClientConfig, Event, SendId, SendKind};
use peermsg::relay::{RelayConfig, RelayEvent};
use peermsg::ErrorCode;
use support::net::Net;
use support::Sim;
use support::{content, result_of};

fn net(names: &[&str]) -> Net {
    Net::new(names, ClientConfig::default(), RelayConfig::default(), 5)
}

/// alice starts sending bob 8 MiB (content `seed`); the network runs until bob has some.
fn buffer_under_way(n: &mut Net, seed: u64) -> SendId {
    let now = n.now;
    let id = n.nodes[0]
        .side
        .client
        .send_buffer(now, "bob", content(8 << 20, seed), 0)
        .unwrap();
    let some_arrived = |n: &Net| {
        n.nodes[1]
            .side
            .events
            .iter()
            .any(|e| matches!(e, Event::ReceiveProgress { .. }))
    };
    assert!(n.run_until(some_arrived));
    id
}

fn logged_in(net: &Net, i: usize) -> bool {
    net.nodes[i].side.events.contains(&Event::LoginResult {
        code: ErrorCode::NOERR,
    })
}

#[test]
fn commands_buffers_and_files_go_through_stamped_with_the_sender() {
    let mut n = net(&["alice", "bob"]);
    assert!(logged_in(&n, 0) && logged_in(&n, 1));
    let now = n.now;
    let a = &mut n.nodes[0].side;
    let cmd = a
        .client
        .send_cmd(now, "bob", Bytes::from_static(b"hello"), 1)
        .unwrap();
    let buf = a
        .client
        .send_buffer(now, "bob", content(3 << 20, 1), 2)
        .unwrap();
    let file_data = content(5 << 20 | 77, 2);
    let file = a
        .client
        .send_file(now, "bob", "x.bin", file_data.len() as u64, 3)
        .unwrap();
    a.files.insert(file, file_data.clone());
    n.run();
    let a = &n.nodes[0].side.events;
    for id in [cmd, buf, file] {
        assert_eq!(result_of(a, id), ErrorCode::NOERR);
    }
    let b = &n.nodes[1].side.events;
    assert!(b
        .iter()
        .any(|e| matches!(e, Event::CmdReceived { from, data, .. }
        if from.as_str() == "alice" && data[..] == b"hello"[..])));
    assert!(b.iter().any(|e| matches!(e, Event::BufferReceived { from, data, .. } if from.as_str() == "alice" && *data == content(3 << 20, 1))));
    let mut assembled = Vec::new();
    for e in b {
        if let Event::FileData { data, .. } = e {
            assembled.extend_from_slice(data);
        }
    }
    assert_eq!(assembled, file_data);
    // The relay reports each message's end, for its logs.
    let mut ended: Vec<(bool, u64, ErrorCode)> = n
        .relay_events
        .iter()
        .filter_map(|e| match e {
            RelayEvent::MessageEnded {
                from,
                to,
                cmd,
                size,
                code,
            } if from.as_str() == "alice" && to.as_str() == "bob" => Some((*cmd, *size, *code)),
            _ => None,
        })
        .collect();
    ended.sort_by_key(|(_, size, _)| *size);
    let stats = n.relay.stats();
    assert_eq!(
        (stats.connections, stats.logged_in, stats.messages),
        (2, 2, 0)
    );
    assert!(stats.frames_forwarded >= 3, "{stats:?}");
    assert_eq!(stats.held_bytes, 0);
    assert_eq!(
        ended,
        vec![
            (true, 5, ErrorCode::NOERR),
            (false, 3 << 20, ErrorCode::NOERR),
            (false, file_data.len() as u64, ErrorCode::NOERR),
        ]
    );
}

#[test]
fn offline_target_gets_603_at_once() {
    let mut n = net(&["alice"]);
    let now = n.now;
    let id = n.nodes[0]
        .side
        .client
        .send_cmd(now, "nobody", Bytes::from_static(b"?"), 0)
        .unwrap();
    let buf = n.nodes[0]
        .side
        .client
        .send_buffer(now, "nobody", content(1 << 20, 3), 0)
        .unwrap();
    n.run();
    assert_eq!(result_of(&n.nodes[0].side.events, id), ErrorCode::OFFLINE);
    assert_eq!(result_of(&n.nodes[0].side.events, buf), ErrorCode::OFFLINE);
}

#[test]
fn receiver_dropping_mid_transfer_gives_the_sender_207() {
    let mut n = net(&["alice", "bob"]);
    let id = buffer_under_way(&mut n, 4);
    n.drop_node(1);
    n.run();
    assert_eq!(
        result_of(&n.nodes[0].side.events, id),
        ErrorCode::CONNECTIONLOST
    );
    assert!(
        !n.nodes[0].side.client.is_closed(),
        "alice's own connection is fine"
    );
}

#[test]
fn sender_dropping_mid_transfer_tells_the_receiver() {
    let mut n = net(&["alice", "bob"]);
    buffer_under_way(&mut n, 5);
    n.drop_node(0);
    n.run();
    let b = &n.nodes[1].side.events;
    assert!(b.iter().any(|e| matches!(e, Event::ReceiveFailed { from, code, .. } if from.as_str() == "alice" && *code == ErrorCode::CONNECTIONLOST)));
    assert!(!b.iter().any(|e| matches!(e, Event::BufferReceived { .. })));
}

#[test]
fn cancel_and_reject_pass_through() {
    let mut n = net(&["alice", "bob"]);
    let id = buffer_under_way(&mut n, 6);
    assert_eq!(n.nodes[0].side.client.cancel_send(id, 5), ErrorCode::NOERR);
    n.run();
    assert_eq!(result_of(&n.nodes[0].side.events, id), ErrorCode::CANCELLED);
    assert!(n.nodes[1]
        .side
        .events
        .iter()
        .any(|e| matches!(e, Event::ReceiveFailed { code, .. } if *code == ErrorCode::CANCELLED)));

    // bob refuses alice's next file on its offer
    n.nodes[1].side.reading = false;
    let data = content(4 << 20, 7);
    let now = n.now;
    let id = n.nodes[0]
        .side
        .client
        .send_file(now, "bob", "f", data.len() as u64, 0)
        .unwrap();
    n.nodes[0].side.files.insert(id, data);
    n.run();
    n.nodes[1].side.reading = true;
    let offer = loop {
        match n.nodes[1].side.client.poll_event() {
            Some(Event::Offer {
                id,
                kind: SendKind::File,
                ..
            }) => break id,
            Some(_) => continue,
            None => panic!("no offer"),
        }
    };
    n.nodes[1]
        .side
        .client
        .reject(offer, ErrorCode::REJECTED)
        .unwrap();
    n.run();
    assert_eq!(result_of(&n.nodes[0].side.events, id), ErrorCode::REJECTED);
}

#[test]
fn a_second_login_replaces_the_first() {
    let mut n = net(&["alice", "bob"]);
    n.connect("bob", b"good", ClientConfig::default());
    n.run();
    assert!(n.nodes[1].side.events.iter().any(
        |e| matches!(e, Event::Closed { code, .. } if *code == ErrorCode::KICKOUT_BY_RELOGIN)
    ));
    assert!(logged_in(&n, 2));
    let now = n.now;
    let id = n.nodes[0]
        .side
        .client
        .send_cmd(now, "bob", Bytes::from_static(b"to the new bob"), 0)
        .unwrap();
    n.run();
    assert_eq!(result_of(&n.nodes[0].side.events, id), ErrorCode::NOERR);
    assert!(n.nodes[2]
        .side
        .events
        .iter()
        .any(|e| matches!(e, Event::CmdReceived { .. })));
}

#[test]
fn a_refused_login_gets_its_code() {
    let mut n = net(&["alice"]);
    let i = n.connect("mallory", b"bad", ClientConfig::default());
    n.run();
    assert!(n.nodes[i].side.events.contains(&Event::LoginResult {
        code: ErrorCode::LOGIN_REJECTED
    }));
    assert!(n.nodes[i].side.client.is_closed());
    assert!(n.relay_events.iter().any(
        |e| matches!(e, RelayEvent::Closed { code, .. } if *code == ErrorCode::LOGIN_REJECTED)
    ));
}

#[test]
fn a_slow_reader_makes_the_sender_wait_and_the_relay_does_not_grow() {
    let relay = RelayConfig::default();
    let mut n = Net::new(
        &["alice", "bob", "carol", "dave"],
        ClientConfig::default(),
        relay,
        9,
    );
    // Bob's application takes nothing for now, and his runtime stops reading the socket.
    n.nodes[1].side.reading = false;
    n.nodes[1].receiving = false;
    let now = n.now;
    let big = content(64 << 20, 8);
    let id = n.nodes[0]
        .side
        .client
        .send_file(now, "bob", "big", big.len() as u64, 0)
        .unwrap();
    n.nodes[0].side.files.insert(id, big.clone());
    // Meanwhile another pair talks freely.
    let other = n.nodes[2]
        .side
        .client
        .send_buffer(now, "dave", content(4 << 20, 9), 0)
        .unwrap();
    n.run();
    assert_eq!(
        result_of(&n.nodes[2].side.events, other),
        ErrorCode::NOERR,
        "one busy pair does not starve the others"
    );
    assert!(
        !n.nodes[0]
            .side
            .events
            .iter()
            .any(|e| matches!(e, Event::SendResult { .. })),
        "alice waits"
    );
    let stalled_peak = n.relay_peak;
    // Bob reads again: the file completes.
    n.nodes[1].side.reading = true;
    n.nodes[1].receiving = true;
    n.run();
    assert_eq!(result_of(&n.nodes[0].side.events, id), ErrorCode::NOERR);
    // The relay never held more than its windows plus a frame per connection.
    let bound = relay.transfer_window + relay.conn_window + 4 * 16 * 1024;
    assert!(
        n.relay_peak <= bound,
        "relay held {} > {bound} (stalled {stalled_peak})",
        n.relay_peak
    );
    assert!(n.nodes[1].side.peak_buffered <= ClientConfig::default().conn_window + 64 * 1024);
}

#[test]
fn a_thousand_clients_through_one_relay() {
    let names: Vec<String> = (0..1000).map(|i| format!("user{i:04}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut n = Net::new(&refs, ClientConfig::default(), RelayConfig::default(), 3);
    assert!((0..1000).all(|i| logged_in(&n, i)));
    let now = n.now;
    let mut sends = Vec::new();
    for i in 0..1000 {
        let to = &names[(i * 7 + 1) % 1000];
        let data = Bytes::from(format!("{i} -> {to}"));
        sends.push(
            n.nodes[i]
                .side
                .client
                .send_cmd(now, to, data, i as u64)
                .unwrap(),
        );
    }
    // A few connections drop while the commands are in flight.
    for i in [13, 500, 999] {
        n.drop_node(i);
    }
    n.run();
    for (i, id) in sends.iter().enumerate() {
        if [13, 500, 999].contains(&i) {
            continue;
        }
        let code = result_of(&n.nodes[i].side.events, *id);
        let to = (i * 7 + 1) % 1000;
        let expected = if [13, 500, 999].contains(&to) {
            vec![ErrorCode::OFFLINE, ErrorCode::CONNECTIONLOST]
        } else {
            vec![ErrorCode::NOERR]
        };
        assert!(expected.contains(&code), "{i} -> {to}: {code}");
    }
    // Every command reached exactly the user it was addressed to, from the real sender.
    for (j, node) in n.nodes.iter().enumerate().filter(|(_, n)| n.up) {
        for e in &node.side.events {
            if let Event::CmdReceived { from, data, .. } = e {
                let text = String::from_utf8(data.to_vec()).unwrap();
                assert_eq!(
                    text,
                    format!(
                        "{} -> {}",
                        from.as_str()
                            .trim_start_matches("user")
                            .parse::<usize>()
                            .unwrap(),
                        names[j]
                    )
                );
            }
        }
    }
}

#[test]
fn the_relay_cuts_frames_to_the_receivers_size_and_respects_its_caps() {
    let mut n = net(&["alice"]);
    let small = ClientConfig {
        limits: peermsg::wire::Limits {
            max_frame_size: 1024,
            max_buffer_size: 1 << 20,
            ..Default::default()
        },
        ..ClientConfig::default()
    };
    let b = n.connect("serial", b"good", small);
    n.run();
    assert!(logged_in(&n, b));
    let now = n.now;
    let data = content(700_000, 4);
    let cmd = content(60_000, 5);
    let a = &mut n.nodes[0].side.client;
    let buf = a.send_buffer(now, "serial", data.clone(), 0).unwrap();
    let too_big = a
        .send_buffer(now, "serial", content((1 << 20) + 1, 6), 0)
        .unwrap();
    let c = a.send_cmd(now, "serial", cmd.clone(), 0).unwrap();
    n.run();
    let ev = &n.nodes[0].side.events;
    assert_eq!(result_of(ev, buf), ErrorCode::NOERR);
    assert_eq!(result_of(ev, c), ErrorCode::NOERR);
    assert_eq!(result_of(ev, too_big), ErrorCode::SENDBUFFER_LARGE);
    let got = &n.nodes[b].side.events;
    assert!(got
        .iter()
        .any(|e| matches!(e, Event::BufferReceived { data: d, .. } if *d == data)));
    assert!(got
        .iter()
        .any(|e| matches!(e, Event::CmdReceived { data: d, .. } if *d == cmd)));
    assert!(!n.nodes[b].side.client.is_closed());
}

#[test]
fn progress_through_the_relay_is_what_the_receiver_consumed() {
    let mut n = net(&["alice", "bob"]);
    n.nodes[1].side.reading = false; // bob takes file bytes only when the test says
    let now = n.now;
    let data = content(16 << 20, 11);
    let id = n.nodes[0]
        .side
        .client
        .send_file(now, "bob", "f", data.len() as u64, 0)
        .unwrap();
    n.nodes[0].side.files.insert(id, data);
    n.run();
    let mut consumed = 0u64;
    for _ in 0..3 {
        // bob's application takes about 300 KB of the file.
        let mut taken = 0;
        while taken < 300_000 {
            match n.nodes[1].side.client.poll_event() {
                Some(Event::FileData { data, .. }) => taken += data.len() as u64,
                Some(_) => {}
                None => break,
            }
        }
        consumed += taken;
        n.run();
        let reported = n.nodes[0]
            .side
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Progress { sent, .. } => Some(*sent),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        assert!(
            reported <= consumed,
            "alice told {reported} while bob consumed {consumed}"
        );
        assert!(
            reported + 2 * 64 * 1024 >= consumed,
            "progress lags by more than a grant step: {reported} vs {consumed}"
        );
    }
}

#[test]
fn a_command_overtakes_transfer_data_the_relay_holds() {
    let windows = ClientConfig {
        transfer_window: 4 << 20,
        conn_window: 8 << 20,
        ..ClientConfig::default()
    };
    let relay = RelayConfig {
        transfer_window: 4 << 20,
        conn_window: 8 << 20,
        ..RelayConfig::default()
    };
    let mut n = Net::new(&["alice", "bob"], windows, relay, 5);
    // Bob's socket fills: what bob granted waits in the relay's queue for him.
    n.nodes[1].receiving = false;
    let now = n.now;
    let bulk = n.nodes[0]
        .side
        .client
        .send_buffer(now, "bob", content(8 << 20, 3), 0)
        .unwrap();
    n.run();
    let queued = n.relay.buffered_bytes();
    assert!(queued >= 512 * 1024, "only {queued} bytes queued for bob");
    let now = n.now;
    let cmd = n.nodes[0]
        .side
        .client
        .send_cmd(now, "bob", Bytes::from_static(b"urgent"), 0)
        .unwrap();
    n.run();
    n.nodes[1].receiving = true;
    n.run();
    assert_eq!(result_of(&n.nodes[0].side.events, cmd), ErrorCode::NOERR);
    assert_eq!(result_of(&n.nodes[0].side.events, bulk), ErrorCode::NOERR);
    // Bob got the command after at most what was already in his socket, not after the
    // data queued ahead of it in the relay.
    let events = &n.nodes[1].side.events;
    let at = events
        .iter()
        .position(|e| matches!(e, Event::CmdReceived { .. }))
        .expect("command delivered");
    let before = events[..at]
        .iter()
        .filter_map(|e| match e {
            Event::ReceiveProgress { received, .. } => Some(*received),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    assert!(
        before + 256 * 1024 <= queued,
        "{before} bytes of data came before the command; {queued} were queued in the relay"
    );
}

#[test]
fn a_send_only_login_sits_beside_the_users_session() {
    let mut n = net(&["alice", "bob"]);
    let send_only = ClientConfig {
        send_only: true,
        ..ClientConfig::default()
    };
    // A second bob that only sends: the first is not kicked, and still gets bob's mail.
    let second = n.connect("bob", b"good", send_only);
    n.run();
    assert!(logged_in(&n, 1) && logged_in(&n, second));
    assert!(!n.nodes[1]
        .side
        .events
        .iter()
        .any(|e| matches!(e, Event::Closed { .. })));
    let now = n.now;
    let to_bob = n.nodes[0]
        .side
        .client
        .send_cmd(now, "bob", Bytes::from_static(b"for bob"), 0)
        .unwrap();
    let from_second = n.nodes[second]
        .side
        .client
        .send_cmd(
            now,
            "alice",
            Bytes::from_static(b"from bob's other terminal"),
            0,
        )
        .unwrap();
    n.run();
    assert_eq!(result_of(&n.nodes[0].side.events, to_bob), ErrorCode::NOERR);
    assert_eq!(
        result_of(&n.nodes[second].side.events, from_second),
        ErrorCode::NOERR
    );
    let got = |i: usize, what: &[u8]| {
        n.nodes[i]
            .side
            .events
            .iter()
            .any(|e| matches!(e, Event::CmdReceived { data, .. } if &data[..] == what))
    };
    assert!(got(1, b"for bob") && !got(second, b"for bob"));
    assert!(got(0, b"from bob's other terminal"));
}

#[test]
fn the_relays_timers_fire_in_the_simulation() {
    // bob's application stops reading mid-transfer (his client still answers pings): the
    // relay's progress timeout ends the transfer on both sides, through real clients.
    let mut n = net(&["alice", "bob"]);
    n.nodes[1].side.reading = false;
    let now = n.now;
    let id = n.nodes[0]
        .side
        .client
        .send_buffer(now, "bob", content(8 << 20, 9), 0)
        .unwrap();
    n.run();
    assert!(n.nodes[0]
        .side
        .events
        .iter()
        .all(|e| !matches!(e, Event::SendResult { .. })));
    n.run_for(std::time::Duration::from_secs(61));
    assert_eq!(
        result_of(&n.nodes[0].side.events, id),
        ErrorCode::SOCKETTIMEOUT
    );
    n.nodes[1].side.reading = true;
    n.run();
    assert!(n.nodes[1].side.events.iter().any(
        |e| matches!(e, Event::ReceiveFailed { code, .. } if *code == ErrorCode::SOCKETTIMEOUT)
    ));
    assert!(!n.nodes[0].side.client.is_closed() && !n.nodes[1].side.client.is_closed());
}
