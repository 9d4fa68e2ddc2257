//! Cancel against delivery, in random interleavings: the sender cancels at a random moment
//! while the receiver's application starts taking (and, for files and self-confirmed
//! buffers, accepting) at other random moments, on a direct link and through a relay. The
//! sender's one result and the receiver's one outcome always agree (docs/PROTOCOL.md,
//! "Cancel").

mod support;

use peermsg::client::{ClientConfig, Event, ReceiveId, SendId};
use peermsg::relay::RelayConfig;
use peermsg::ErrorCode;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use support::net::Net;
use support::Sim;
use support::{content, result_of, Link, Side};

/// Two clients joined one way or the other.
trait World: Sim {
    fn alice(&mut self) -> &mut Side;
    fn bob(&mut self) -> &mut Side;
}

impl World for Link {
    fn alice(&mut self) -> &mut Side {
        &mut self.a
    }
    fn bob(&mut self) -> &mut Side {
        &mut self.b
    }
}

impl World for Net {
    fn alice(&mut self) -> &mut Side {
        &mut self.nodes[0].side
    }
    fn bob(&mut self) -> &mut Side {
        &mut self.nodes[1].side
    }
}

#[derive(Clone, Debug)]
struct Plan {
    size: usize,
    file: bool,
    /// Buffers are confirmed by bob's application (`confirm_buffers`), not by taking.
    confirm: bool,
    cancel_at: usize,
    take_at: usize,
    accept_at: usize,
    seed: u64,
}

/// What bob's application saw of the message.
#[derive(Debug, Default)]
struct Bob {
    delivered: u32,
    failed: Vec<ErrorCode>,
    /// Taken, waiting for the application's word.
    to_accept: Vec<ReceiveId>,
}

impl Bob {
    /// Bob's application at step `i`: it reads from `take_at` on and answers from
    /// `accept_at` on.
    fn act(&mut self, side: &mut Side, plan: &Plan, i: usize) {
        if i >= plan.take_at {
            while let Some(event) = side.client.poll_event() {
                match event {
                    Event::BufferReceived { id, .. } if plan.confirm => self.to_accept.push(id),
                    Event::BufferReceived { .. } => self.delivered += 1,
                    Event::FileReceived { id, .. } => self.to_accept.push(id),
                    Event::ReceiveFailed { code, .. } => self.failed.push(code),
                    _ => {}
                }
            }
        }
        if i >= plan.accept_at {
            for id in self.to_accept.drain(..) {
                // Refused only if the cancel came first (a `ReceiveFailed` says so).
                if side.client.accept_delivery(id).is_ok() {
                    self.delivered += 1;
                }
            }
        }
    }
}

/// Runs `plan` in `world`: alice sends bob a buffer or file and cancels at her step.
fn race(mut world: impl World, plan: &Plan) -> (ErrorCode, ErrorCode, Bob) {
    world.bob().reading = false;
    let data = content(plan.size, plan.seed);
    let now = world.now();
    let alice = world.alice();
    let id: SendId = if plan.file {
        let id = alice
            .client
            .send_file(now, "bob", "f.bin", data.len() as u64, 0)
            .unwrap();
        alice.files.insert(id, data);
        id
    } else {
        alice.client.send_buffer(now, "bob", data, 0).unwrap()
    };
    let mut bob = Bob::default();
    let mut cancel = ErrorCode::TRANSID_INVALID;
    let mut i = 0;
    loop {
        if i == plan.cancel_at {
            cancel = world.alice().client.cancel_send(id, 0);
        }
        bob.act(world.bob(), plan, i);
        let busy = world.step();
        i += 1;
        let all_acted = i > plan.cancel_at && i > plan.take_at && i > plan.accept_at;
        if !busy && all_acted {
            break;
        }
        assert!(i < 200_000, "no end in sight");
    }
    let result = result_of(&world.alice().events, id);
    (result, cancel, bob)
}

/// The one rule: both ends report the same outcome.
fn check(result: ErrorCode, cancel: ErrorCode, bob: &Bob) {
    assert!(
        bob.delivered <= 1 && bob.failed.len() <= 1,
        "one outcome: {bob:?}"
    );
    assert!(
        bob.delivered == 0 || bob.failed.is_empty(),
        "delivered and failed: {bob:?}"
    );
    match result {
        ErrorCode::NOERR => assert_eq!(bob.delivered, 1, "success not delivered: {bob:?}"),
        ErrorCode::CANCELLED => {
            assert_eq!(cancel, ErrorCode::NOERR, "cancelled without a cancel");
            assert_eq!(bob.delivered, 0, "cancelled but delivered: {bob:?}");
            assert!(
                bob.failed.iter().all(|c| *c == ErrorCode::CANCELLED),
                "{bob:?}"
            );
        }
        other => panic!("unexpected result {other}: {bob:?}"),
    }
}

fn plans() -> impl Strategy<Value = Plan> {
    (
        0usize..100_000,
        any::<bool>(),
        any::<bool>(),
        0usize..120,
        0usize..120,
        0usize..120,
        any::<u64>(),
    )
        .prop_map(
            |(size, file, confirm, cancel_at, take_at, accept_at, seed)| Plan {
                size,
                file,
                confirm,
                cancel_at,
                take_at,
                accept_at: accept_at.max(take_at),
                seed,
            },
        )
}

fn config(plan: &Plan) -> ClientConfig {
    ClientConfig {
        confirm_buffers: plan.confirm,
        ..ClientConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn direct_link_ends_agree(plan in plans()) {
        let (result, cancel, bob) = race(Link::direct(config(&plan), plan.seed), &plan);
        check(result, cancel, &bob);
    }

    #[test]
    fn relay_ends_agree(plan in plans()) {
        let net = Net::new(&["alice", "bob"], config(&plan), RelayConfig::default(), plan.seed);
        let (result, cancel, bob) = race(net, &plan);
        check(result, cancel, &bob);
    }
}

/// The plans above do reach both outcomes of a cancel that was accepted: the delivery
/// first (`NOERR`) and the cancel first (`CANCELLED`, bob told), on both kinds of link.
#[test]
fn random_plans_reach_both_outcomes() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = [[0u32; 2]; 2];
    for _ in 0..200 {
        let plan = plans().new_tree(&mut runner).unwrap().current();
        for (relayed, outcomes) in seen.iter_mut().enumerate() {
            let (result, cancel, bob) = if relayed == 1 {
                let net = Net::new(
                    &["alice", "bob"],
                    config(&plan),
                    RelayConfig::default(),
                    plan.seed,
                );
                race(net, &plan)
            } else {
                race(Link::direct(config(&plan), plan.seed), &plan)
            };
            check(result, cancel, &bob);
            if cancel == ErrorCode::NOERR && result == ErrorCode::NOERR {
                outcomes[0] += 1;
            }
            if result == ErrorCode::CANCELLED && !bob.failed.is_empty() {
                outcomes[1] += 1;
            }
        }
    }
    assert!(seen.iter().flatten().all(|n| *n > 0), "{seen:?}");
}
