//! The continuity layer (`peermsg::continuity`) on the simulator: users whose connections
//! are lost at random points, or whose relay restarts, dial again by the layer's schedule;
//! commands are delivered exactly once and in order, buffers and files go on from what
//! their receivers hold, waiting sends are given up at the window's end. Nothing here
//! re-models the layer: the test only cuts connections and reads what the users saw.

mod support;

use std::time::Duration;

use bytes::Bytes;
use peermsg::client::{Event, SendId};
use peermsg::ErrorCode;
use proptest::prelude::*;
use support::world::{config, policy, World};
use support::{content, Sim};

/// The one result `user` heard of send `id`, if any; panics on two.
fn result(world: &World, user: usize, id: SendId) -> Option<ErrorCode> {
    let codes: Vec<_> = world.users[user]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::SendResult { id: i, code, .. } if *i == id => Some(*code),
            _ => None,
        })
        .collect();
    assert!(codes.len() <= 1, "one result for {id}: {codes:?}");
    codes.first().copied()
}

/// Runs the world, timers and all, until `done` holds (for at most ten minutes of
/// virtual time).
fn settle(world: &mut World, done: impl Fn(&World) -> bool) {
    for _ in 0..6000 {
        if done(world) {
            return;
        }
        world.run_for(Duration::from_millis(100));
    }
}

/// As [`settle`], but stops at the very step at which `done` holds.
fn settle_exactly(world: &mut World, done: impl Fn(&World) -> bool) {
    for _ in 0..100_000 {
        if world.run_until(&done) {
            return;
        }
        match world.next_deadline() {
            Some(at) => world.fire_timers(at.max(world.now)),
            None => return,
        }
    }
}

/// alice sends bob a buffer, and bob's connection is lost part way with bob gone for
/// good (until the test says): the buffer waits.
fn buffer_waiting_for_bob(seed: u64) -> (World, SendId) {
    let mut world = World::new(&["alice", "bob"], config(), policy(), seed);
    let now = world.now;
    let id = world.users[0]
        .cont
        .send_buffer(now, "bob", content(400_000, seed), 0)
        .unwrap();
    world.run_until(|w| w.users[1].bytes_in >= 100_000);
    world.users[1].unreachable = true;
    world.cut(1);
    world.run();
    (world, id)
}

/// The commands `user` was given, in order.
fn commands(world: &World, user: usize) -> Vec<Bytes> {
    world.users[user]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::CmdReceived { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect()
}

/// The buffers `user` was given, in order.
fn buffers(world: &World, user: usize) -> Vec<Bytes> {
    world.users[user]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::BufferReceived { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect()
}

/// What a break in the test's schedule does.
#[derive(Clone, Copy, Debug)]
enum Break {
    CutSender,
    CutReceiver,
    RestartRelay,
}

fn breaks() -> impl Strategy<Value = Break> {
    prop_oneof![
        Just(Break::CutSender),
        Just(Break::CutReceiver),
        Just(Break::RestartRelay)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Commands sent while connections are lost at random points (the sender's, the
    /// receiver's, the relay's) reach their receiver once each, in the order they were
    /// sent, and every one is confirmed.
    #[test]
    fn commands_are_delivered_once_and_in_order_across_lost_connections(
        seed in any::<u64>(),
        plan in proptest::collection::vec((0u64..400, proptest::option::of(breaks())), 1..40),
    ) {
        let mut world = World::new(&["alice", "bob"], config(), policy(), seed);
        world.max_piece = 1 + seed % 300;
        let (alice, bob) = (0, 1);
        let mut sent = Vec::new();
        let mut may_miss = std::collections::HashSet::new();
        for (k, (steps, brk)) in plan.iter().enumerate() {
            // Sent while bob is there (one sent to a user who is away is refused with
            // OFFLINE, as it should be); anything may break while it is on its way.
            settle(&mut world, |w| w.users.iter().all(|u| u.cont.is_logged_in()));
            let data = Bytes::from(format!("command {k}"));
            let now = world.now;
            let id = world.users[alice].cont.send_cmd(now, "bob", data.clone(), k as u64);
            sent.push((id.expect("queued"), data));
            for _ in 0..*steps {
                world.step();
            }
            if matches!(brk, Some(Break::CutReceiver | Break::RestartRelay)) {
                // Commands still on their way may reach the relay while bob is away.
                let open = sent.iter().filter(|(id, _)| result(&world, alice, *id).is_none());
                may_miss.extend(open.map(|(id, _)| *id));
            }
            match brk {
                Some(Break::CutSender) => world.cut(alice),
                Some(Break::CutReceiver) => world.cut(bob),
                Some(Break::RestartRelay) => world.restart_relay(),
                None => {}
            }
        }
        settle(&mut world, |w| sent.iter().all(|(id, _)| result(w, alice, *id).is_some()));
        world.run_for(Duration::from_secs(20));
        // Each is delivered, except one that first reached the relay while bob was away:
        // that one is refused with OFFLINE (a user who is not there), and not delivered.
        let mut expected = Vec::new();
        for (id, data) in &sent {
            match result(&world, alice, *id) {
                Some(ErrorCode::NOERR) => expected.push(data.clone()),
                Some(ErrorCode::OFFLINE) if may_miss.contains(id) => {}
                other => prop_assert!(false, "{} ended with {:?}", id, other),
            }
        }
        // Each once; in the order sent, unless bob's connection was lost with several
        // on their way (one sent again may then come after later ones).
        let got = commands(&world, bob);
        let receiver_lost = plan.iter().any(|(_, b)| matches!(b, Some(Break::CutReceiver | Break::RestartRelay)));
        if receiver_lost {
            let (mut got, mut expected) = (got, expected);
            got.sort();
            expected.sort();
            prop_assert_eq!(got, expected);
        } else {
            prop_assert_eq!(got, expected);
        }
    }

    /// A buffer cut at a random point, once or several times, is delivered once and whole,
    /// and confirmed.
    #[test]
    fn a_buffer_cut_off_is_delivered_once_and_whole(
        seed in any::<u64>(),
        cuts in proptest::collection::vec((1u64..3000, breaks()), 1..4),
    ) {
        let mut world = World::new(&["alice", "bob"], config(), policy(), seed);
        let buffer = content(400_000, seed);
        let now = world.now;
        let id = world.users[0].cont.send_buffer(now, "bob", buffer.clone(), 0).unwrap();
        for (steps, brk) in cuts {
            for _ in 0..steps {
                world.step();
            }
            match brk {
                Break::CutSender => world.cut(0),
                Break::CutReceiver => world.cut(1),
                Break::RestartRelay => world.restart_relay(),
            }
        }
        settle(&mut world, |w| result(w, 0, id).is_some());
        world.run_for(Duration::from_secs(20));
        prop_assert_eq!(result(&world, 0, id), Some(ErrorCode::NOERR));
        let got = buffers(&world, 1);
        prop_assert_eq!(got.len(), 1, "delivered once");
        prop_assert!(got[0] == buffer, "whole");
    }
}

/// bob's connection is lost when he has part of a buffer: the next attempt goes on from
/// what he had, so far fewer bytes than two buffers reach him.
#[test]
fn a_buffer_goes_on_from_what_its_receiver_kept() {
    let mut world = World::new(&["alice", "bob"], config(), policy(), 3);
    let buffer = content(1 << 20, 3);
    let now = world.now;
    let id = world.users[0]
        .cont
        .send_buffer(now, "bob", buffer.clone(), 0)
        .unwrap();
    world.run_until(|w| w.users[1].bytes_in >= 600_000);
    world.cut(1);
    settle(&mut world, |w| result(w, 0, id).is_some());
    assert_eq!(result(&world, 0, id), Some(ErrorCode::NOERR));
    assert!(buffers(&world, 1) == vec![buffer], "delivered once, whole");
    let moved = world.users[1].bytes_in;
    assert!(
        moved < (1 << 20) + 600_000,
        "{moved} bytes reached bob: the second attempt sent the whole buffer again"
    );
    let waited = world.users[0]
        .events
        .iter()
        .any(|e| matches!(e, Event::SendWaiting { id: i, code: ErrorCode::CONNECTIONLOST, .. } if *i == id));
    assert!(waited, "alice heard that the buffer waits");
}

/// alice's connection is lost after bob took the buffer but before she heard: she sends
/// it again, and bob confirms it without taking it twice.
#[test]
fn a_buffer_delivered_before_its_sender_heard_is_not_delivered_twice() {
    let mut world = World::new(&["alice", "bob"], config(), policy(), 4);
    let buffer = content(200_000, 4);
    let now = world.now;
    let id = world.users[0]
        .cont
        .send_buffer(now, "bob", buffer.clone(), 0)
        .unwrap();
    world.run_until(|w| !buffers(w, 1).is_empty());
    world.cut(0);
    settle(&mut world, |w| result(w, 0, id).is_some());
    world.run_for(Duration::from_secs(5));
    assert_eq!(result(&world, 0, id), Some(ErrorCode::NOERR));
    assert_eq!(buffers(&world, 1).len(), 1, "delivered once");
}

/// The same for a command: taken by bob, alice cut before its result; sent again, it is
/// confirmed, not delivered twice.
#[test]
fn a_command_delivered_before_its_sender_heard_is_not_delivered_twice() {
    let mut world = World::new(&["alice", "bob"], config(), policy(), 5);
    let now = world.now;
    let id = world.users[0]
        .cont
        .send_cmd(now, "bob", Bytes::from_static(b"once"), 0)
        .unwrap();
    world.run_until(|w| !commands(w, 1).is_empty());
    world.cut(0);
    settle(&mut world, |w| result(w, 0, id).is_some());
    assert_eq!(result(&world, 0, id), Some(ErrorCode::NOERR));
    assert_eq!(commands(&world, 1), vec![Bytes::from_static(b"once")]);
}

/// A command waiting for its receiver (cut off on its way), and one sent after it to the
/// same receiver while it waits: bob gets both, in order (the second waits behind the
/// first, which would otherwise be taken for a repeat).
#[test]
fn a_command_sent_while_another_to_the_same_receiver_waits_keeps_its_place() {
    let mut world = World::new(&["alice", "bob"], config(), policy(), 6);
    let now = world.now;
    let first = world.users[0]
        .cont
        .send_cmd(now, "bob", Bytes::from_static(b"1"), 0)
        .unwrap();
    // bob's connection goes as the command reaches the relay: cut off on its way.
    world.step();
    world.step();
    world.users[1].unreachable = true;
    world.cut(1);
    world.run_for(Duration::from_secs(1));
    assert_eq!(result(&world, 0, first), None, "the first waits");
    world.users[1].unreachable = false;
    settle(&mut world, |w| w.users[1].cont.is_logged_in());
    let now = world.now;
    let second = world.users[0]
        .cont
        .send_cmd(now, "bob", Bytes::from_static(b"2"), 0)
        .unwrap();
    settle(&mut world, |w| {
        result(w, 0, second).is_some() && result(w, 0, first).is_some()
    });
    assert_eq!(result(&world, 0, first), Some(ErrorCode::NOERR));
    assert_eq!(result(&world, 0, second), Some(ErrorCode::NOERR));
    assert_eq!(
        commands(&world, 1),
        vec![Bytes::from_static(b"1"), Bytes::from_static(b"2")]
    );
}

/// A file cut by a relay restart goes on from what bob's store holds, and arrives whole.
#[test]
fn a_file_resumes_across_a_relay_restart() {
    let mut world = World::new(&["alice", "bob"], config(), policy(), 7);
    let file = content(2 << 20, 7);
    let id = world.send_file(0, "bob", file.clone(), 9);
    world.run_until(|w| w.users[1].store.stored_bytes >= 1 << 20);
    world.restart_relay();
    settle(&mut world, |w| result(w, 0, id).is_some());
    assert_eq!(result(&world, 0, id), Some(ErrorCode::NOERR));
    assert!(
        world.users[1].store.completed == vec![file.to_vec()],
        "whole, once"
    );
    let stored = world.users[1].store.stored_bytes;
    assert!(stored < 3 << 20, "{stored} bytes stored: it started over");
    let resumed = world.users[0].events.iter().any(
        |e| matches!(e, Event::Resumed { id: i, offset, .. } if *i == id && *offset >= 1 << 20),
    );
    assert!(resumed, "it went on from bob's bytes");
}

/// bob never comes back: alice's buffer waits, said so, and is given up with
/// `CONNECTIONLOST` when the window ends, not before.
#[test]
fn a_send_whose_receiver_never_comes_back_is_given_up_at_the_window() {
    let (mut world, id) = buffer_waiting_for_bob(8);
    world.run_for(Duration::from_secs(58));
    assert_eq!(
        result(&world, 0, id),
        None,
        "still waiting within the window"
    );
    let deadline = world.users[0].events.iter().find_map(|e| match e {
        Event::SendWaiting {
            id: i, deadline, ..
        } if *i == id => Some(*deadline),
        _ => None,
    });
    assert!(deadline.is_some(), "alice heard it waits");
    world.run_for(Duration::from_secs(3));
    assert_eq!(result(&world, 0, id), Some(ErrorCode::CONNECTIONLOST));
    assert!(world.now >= deadline.unwrap());
}

/// The relay stays down longer than the window: alice stops dialling, her waiting sends
/// end, and she hears that the connection is over.
#[test]
fn a_relay_down_past_the_window_ends_the_user() {
    let mut world = World::new(&["alice", "bob"], config(), policy(), 9);
    world.relay_down = true;
    world.restart_relay();
    let now = world.now;
    let id = world.users[0]
        .cont
        .send_cmd(now, "bob", Bytes::from_static(b"x"), 0)
        .unwrap();
    world.run_for(Duration::from_secs(30));
    assert!(
        world.users[0].cont.redial_attempts() > 3,
        "it kept dialling"
    );
    assert_eq!(result(&world, 0, id), None, "made while away, it waits");
    world.run_for(Duration::from_secs(31));
    assert_eq!(result(&world, 0, id), Some(ErrorCode::CONNECTIONLOST));
    assert_eq!(world.users[0].cont.poll_redial(), None, "no more dialling");
    let closed = world.users[0]
        .events
        .iter()
        .filter(|e| matches!(e, Event::Closed { .. }))
        .count();
    assert_eq!(closed, 1, "one end, told once");
}

/// A waiting send cancelled ends at once with `CANCELLED`, and is not sent again.
#[test]
fn a_waiting_send_cancelled_ends_and_is_not_sent_again() {
    let (mut world, id) = buffer_waiting_for_bob(10);
    world.run_for(Duration::from_secs(1));
    assert_eq!(result(&world, 0, id), None);
    assert_eq!(world.users[0].cont.cancel_send(id, 0), ErrorCode::NOERR);
    world.run();
    assert_eq!(result(&world, 0, id), Some(ErrorCode::CANCELLED));
    world.users[1].unreachable = false;
    world.run_for(Duration::from_secs(5));
    assert!(buffers(&world, 1).is_empty(), "not sent again");
}

/// The relay restarts with commands waiting; alice is back before bob, and bob comes back
/// just after alice's first command sent again was refused as offline, while the others
/// are on their way: the first command goes alone until bob has it, so every one arrives,
/// once, in order (sent together, the later ones would reach bob first).
#[test]
fn commands_waiting_for_a_receiver_go_in_order_when_it_comes_back() {
    let mut world = World::new(&["alice", "bob"], config(), policy(), 12);
    let now = world.now;
    let sent: Vec<Bytes> = (0..8)
        .map(|k| Bytes::from(format!("command {k}")))
        .collect();
    let ids: Vec<SendId> = sent
        .iter()
        .map(|d| {
            world.users[0]
                .cont
                .send_cmd(now, "bob", d.clone(), 0)
                .unwrap()
        })
        .collect();
    world.users[1].unreachable = true;
    world.restart_relay();
    // Bytes go one at a time, and only alice's first command (sent again) reaches the
    // relay, and is refused.
    world.max_piece = 1;
    settle_exactly(&mut world, |w| w.users[0].cont.is_logged_in());
    world.users[0].out_budget = Some(0);
    let refused = |w: &World| {
        w.users[0].events.iter().any(|e| {
            matches!(e, Event::SendWaiting { id, code: ErrorCode::OFFLINE, .. } if *id == ids[0])
        })
    };
    for _ in 0..1000 {
        world.users[0].out_budget = Some(1);
        world.run();

        if refused(&world) {
            break;
        }
    }
    assert!(refused(&world), "the first was tried while bob was away");

    world.users[0].out_budget = Some(0);
    // bob is back, then the rest of alice's bytes go.
    world.users[1].unreachable = false;
    world.dial_now(1);
    settle(&mut world, |w| w.users[1].cont.is_logged_in());

    world.users[0].out_budget = None;
    settle(&mut world, |w| {
        ids.iter().all(|id| result(w, 0, *id).is_some())
    });

    for id in &ids {
        assert_eq!(result(&world, 0, *id), Some(ErrorCode::NOERR));
    }
    assert_eq!(commands(&world, 1), sent);
}
