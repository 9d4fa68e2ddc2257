//! Many senders, one receiver, through the relay: the receiver's announced caps hold, every
//! send succeeds, and what the relay holds for a receiver that does not read is bounded in
//! bytes while its senders wait.

mod support;

use bytes::Bytes;
use peermsg::client::{ClientConfig, Event, SendId};
use peermsg::relay::RelayConfig;
use peermsg::ErrorCode;
use support::net::Net;
use support::Sim;
use support::{content, result_of};

/// A relay with bob (his own config) and `senders` more users, all logged in.
fn fan_in(bob: ClientConfig, senders: usize, relay: RelayConfig) -> Net {
    let mut n = Net::new(&["bob"], bob, relay, 11);
    for i in 0..senders {
        n.connect(&format!("s{i}"), b"good", ClientConfig::default());
    }
    n.run();
    n
}

/// Results of `sends` (by sender node) that have come.
fn results(n: &Net, sends: &[(usize, SendId)]) -> Vec<ErrorCode> {
    sends
        .iter()
        .filter_map(|(i, id)| {
            n.nodes[*i].side.events.iter().find_map(|e| match e {
                Event::SendResult { id: s, code, .. } if s == id => Some(*code),
                _ => None,
            })
        })
        .collect()
}

#[test]
fn many_senders_to_a_receiver_with_caps_of_one_all_succeed_in_order() {
    let bob = ClientConfig {
        max_cmds_in_flight: 1,
        max_transfers: 1,
        ..ClientConfig::default()
    };
    let mut n = fan_in(bob, 12, RelayConfig::default());
    let mut sends = Vec::new();
    for i in 1..=12 {
        let now = n.now;
        let client = &mut n.nodes[i].side.client;
        for k in 0..3u8 {
            let cmd = Bytes::from(format!("s{}:{k}", i - 1));
            sends.push((i, client.send_cmd(now, "bob", cmd, 0).unwrap()));
        }
        let buffer = content(100_000, i as u64);
        sends.push((i, client.send_buffer(now, "bob", buffer, 0).unwrap()));
    }
    n.run();
    for (i, id) in &sends {
        assert_eq!(result_of(&n.nodes[*i].side.events, *id), ErrorCode::NOERR);
    }
    // Each sender's commands arrived in the order sent.
    for i in 0..12 {
        let from = format!("s{i}");
        let got: Vec<Bytes> = n.nodes[0]
            .side
            .events
            .iter()
            .filter_map(|e| match e {
                Event::CmdReceived { from: f, data, .. } if f.as_str() == from => {
                    Some(data.clone())
                }
                _ => None,
            })
            .collect();
        let want: Vec<Bytes> = (0..3).map(|k| Bytes::from(format!("{from}:{k}"))).collect();
        assert_eq!(got, want);
    }
    assert_eq!(n.relay.held_bytes(), 0);
}

#[test]
fn commands_to_a_receiver_that_does_not_read_wait_in_bounded_memory() {
    let relay = RelayConfig::default();
    let mut n = fan_in(ClientConfig::default(), 10, relay);
    n.nodes[0].receiving = false;
    let mut sends = Vec::new();
    for i in 1..=10 {
        let now = n.now;
        for k in 0..64u64 {
            let cmd = content(60 * 1024, k);
            let id = n.nodes[i].side.client.send_cmd(now, "bob", cmd, 0);
            sends.push((i, id.unwrap()));
        }
    }
    n.run();
    // 37.5 MiB offered; the relay holds at most each sender's connection window, and
    // nobody was refused: the senders wait.
    let bound = 10 * relay.conn_window + 64 * 1024;
    assert!(
        n.relay_peak <= bound,
        "relay held {} > {bound}",
        n.relay_peak
    );
    assert!(results(&n, &sends).is_empty(), "{:?}", results(&n, &sends));
    n.nodes[0].receiving = true;
    n.run();
    let codes = results(&n, &sends);
    assert_eq!(codes.len(), sends.len());
    assert!(codes.iter().all(|c| *c == ErrorCode::NOERR), "{codes:?}");
    assert_eq!(n.relay.held_bytes(), 0);
}

#[test]
fn past_the_global_budget_senders_wait_and_nothing_is_refused() {
    let relay = RelayConfig {
        max_held_bytes: 2 << 20,
        ..RelayConfig::default()
    };
    let mut n = fan_in(ClientConfig::default(), 10, relay);
    n.nodes[0].receiving = false;
    let mut sends = Vec::new();
    for i in 1..=10 {
        let now = n.now;
        let buffer = content(4 << 20, i as u64);
        let id = n.nodes[i].side.client.send_buffer(now, "bob", buffer, 0);
        sends.push((i, id.unwrap()));
    }
    n.run();
    // Each sender's windows alone would let 10 MiB in; the budget keeps it to 2 MiB plus
    // the 64 KiB every sender may always have outstanding.
    let bound = relay.max_held_bytes + 10 * 64 * 1024 + 64 * 1024;
    assert!(
        n.relay_peak <= bound,
        "relay held {} > {bound}",
        n.relay_peak
    );
    assert!(results(&n, &sends).is_empty());
    n.nodes[0].receiving = true;
    n.run();
    let codes = results(&n, &sends);
    assert!(
        codes.len() == sends.len() && codes.iter().all(|c| *c == ErrorCode::NOERR),
        "{codes:?}"
    );
    assert_eq!(n.relay.held_bytes(), 0);
}
