//! Sealed messages between users through a relay that cannot read them, and through
//! one that attacks them: keys swapped, bytes altered, messages moved, replayed or cut
//! short. Each attack ends with a clear code at both ends; nothing altered is delivered.

mod support;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use peermsg::client::{Event, SendId, SendKind};
use peermsg::seal::{identity_of, KeyStatus, Sealing};
use peermsg::wire::{Cmd, Data, End, Frame, IdentityKey, UserId};
use peermsg::ErrorCode;
use support::world::{config, policy, World};
use support::{content, Sim};

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

fn key_of(n: u8) -> IdentityKey {
    identity_of(&[n; 32])
}

/// User `n`'s sealing: secret `[n; 32]`, the pins given, trusting first use or not.
fn sealing(n: u8, pinned: &[(&str, u8)], first_use: bool) -> Sealing {
    Sealing {
        secret: [n; 32],
        entropy: [n.wrapping_mul(31); 32],
        pinned: pinned.iter().map(|(u, k)| (user(u), key_of(*k))).collect(),
        trust_first_use: first_use,
    }
}

/// alice (1) and bob (2), both sealing and trusting keys on first use.
fn sealed_world(seed: u64) -> World {
    World::with_setup(&["alice", "bob"], config(), policy(), seed, |i, c| {
        c.set_sealing(sealing(i as u8 + 1, &[], true))
    })
}

fn result(world: &World, user: usize, id: SendId) -> Option<ErrorCode> {
    world.users[user].events.iter().find_map(|e| match e {
        Event::SendResult { id: i, code, .. } if *i == id => Some(*code),
        _ => None,
    })
}

fn settle(world: &mut World, done: impl Fn(&World) -> bool) {
    for _ in 0..600 {
        if done(world) {
            return;
        }
        world.run_for(Duration::from_millis(100));
    }
}

fn send(world: &mut World, from: usize, kind: SendKind, data: &[u8]) -> SendId {
    let now = world.now;
    let data = Bytes::copy_from_slice(data);
    let cont = &mut world.users[from].cont;
    match kind {
        SendKind::Cmd => cont.send_cmd(now, "bob", data, 0),
        SendKind::Buffer => cont.send_buffer(now, "bob", data, 0),
        SendKind::File => return world.send_file(from, "bob", data, 7),
    }
    .expect("sent")
}

/// What user `who` was delivered: commands, buffers, then the files its application kept.
fn received(world: &World, who: usize) -> Vec<Bytes> {
    let user = &world.users[who];
    let messages = user.events.iter().filter_map(|e| match e {
        Event::CmdReceived { data, .. } | Event::BufferReceived { data, .. } => Some(data.clone()),
        _ => None,
    });
    let files = user.store.completed.iter().map(|f| Bytes::from(f.clone()));
    messages.chain(files).collect()
}

fn refused(world: &World, who: usize) -> Vec<ErrorCode> {
    world.users[who]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Refused { code, .. } => Some(*code),
            _ => None,
        })
        .collect()
}

/// Every payload byte the relay sent anyone.
fn recorder(world: &mut World) -> Rc<RefCell<Vec<u8>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let log = seen.clone();
    world.tamper = Some(Box::new(move |_, frame| {
        if let Some(payload) = frame.payload() {
            log.borrow_mut().extend_from_slice(payload);
        }
        if let Frame::Open(open) = &frame {
            log.borrow_mut().extend_from_slice(open.name.as_bytes());
        }
        // A digest's value, as 4 bytes with a mark before them (see `end_digests`).
        if let Frame::End(End {
            digest: peermsg::wire::Digest::Crc32c(crc),
            ..
        }) = &frame
        {
            log.borrow_mut().extend_from_slice(b"END-DIGEST:");
            log.borrow_mut().extend_from_slice(&crc.to_be_bytes());
        }
        vec![frame]
    }));
    seen
}

/// The `END` digests a recorder saw.
fn end_digests(seen: &[u8]) -> Vec<u32> {
    let mark = b"END-DIGEST:";
    (0..seen.len().saturating_sub(mark.len() + 3))
        .filter(|&i| &seen[i..i + mark.len()] == mark)
        .map(|i| {
            let at = i + mark.len();
            u32::from_be_bytes(seen[at..at + 4].try_into().unwrap())
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn sealed_commands_and_buffers_arrive_and_the_relay_reads_none() {
    let mut world = sealed_world(1);
    let seen = recorder(&mut world);
    let secret_cmd = b"attack at dawn, the password is swordfish".to_vec();
    let mut secret_buf = content(300_000, 5).to_vec();
    secret_buf[1000..1020].copy_from_slice(b"BUFFER-PLAINTEXT-TAG");
    let cmd = send(&mut world, 0, SendKind::Cmd, &secret_cmd);
    let buf = send(&mut world, 0, SendKind::Buffer, &secret_buf);
    settle(&mut world, |w| {
        result(w, 0, cmd).is_some() && result(w, 0, buf).is_some()
    });
    assert_eq!(result(&world, 0, cmd), Some(ErrorCode::NOERR));
    assert_eq!(result(&world, 0, buf), Some(ErrorCode::NOERR));
    assert_eq!(
        received(&world, 1),
        vec![
            Bytes::from(secret_cmd.clone()),
            Bytes::from(secret_buf.clone())
        ]
    );
    // Each learned the other's key on first use, and was told to keep it.
    let learned = |who: usize, of: &str, key: IdentityKey| {
        world.users[who].events.iter().any(|e| {
            matches!(e, Event::PeerKey { user: u, key: Some(k), status: Some(KeyStatus::Learned) }
                if u.as_str() == of && *k == key)
        })
    };
    assert!(learned(0, "bob", key_of(2)), "alice pinned bob's key");
    assert!(learned(1, "alice", key_of(1)), "bob pinned alice's key");
    // The buffer's progress is told in the application's bytes, to its length.
    let progress: Vec<(u64, u64)> = world.users[0]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Progress {
                id, sent, total, ..
            } if *id == buf => Some((*sent, *total)),
            _ => None,
        })
        .collect();
    let length = secret_buf.len() as u64;
    assert!(!progress.is_empty());
    assert!(progress
        .iter()
        .all(|&(sent, total)| total == length && sent <= length));
    assert_eq!(progress.last(), Some(&(length, length)));
    // The relay carried every byte of both, and none of their plaintext.
    let seen = seen.borrow();
    assert!(seen.len() > secret_buf.len());
    assert!(!contains(&seen, &secret_cmd[..16]));
    assert!(!contains(&seen, b"BUFFER-PLAINTEXT-TAG"));
    assert!(!contains(&seen, &secret_buf[50_000..50_016]));
}

#[test]
fn a_relay_that_answers_with_its_own_key_is_refused_where_keys_are_not_trusted_on_sight() {
    // alice does not trust keys on first use; the relay swaps bob's key for its own.
    let mut world = World::with_setup(&["alice", "bob"], config(), policy(), 2, |i, c| {
        let first_use = i == 1;
        c.set_sealing(sealing(i as u8 + 1, &[], first_use))
    });
    world.tamper = Some(Box::new(|_, frame| match frame {
        Frame::Key(mut key) => {
            key.key = Some(key_of(66));
            vec![Frame::Key(key)]
        }
        other => vec![other],
    }));
    let id = send(&mut world, 0, SendKind::Cmd, b"hello");
    settle(&mut world, |w| result(w, 0, id).is_some());
    assert_eq!(result(&world, 0, id), Some(ErrorCode::NO_PEER_KEY));
    assert!(
        world.users[0].events.iter().any(|e| matches!(e,
        Event::PeerKey { key: Some(k), status: Some(KeyStatus::Unknown), .. } if *k == key_of(66)))
    );
    assert!(received(&world, 1).is_empty());
}

#[test]
fn a_message_stamped_with_another_sender_is_refused_as_a_changed_key() {
    // bob pinned alice's key and trusts no other on sight. mallory seals a command to bob
    // under her own key; the relay stamps it as alice's.
    let mut world = World::with_setup(
        &["alice", "bob", "mallory"],
        config(),
        policy(),
        3,
        |i, c| {
            let (n, pins, first_use): (u8, &[(&str, u8)], bool) = match i {
                0 => (1, &[("bob", 2)], false),
                1 => (2, &[("alice", 1)], false),
                _ => (66, &[], true),
            };
            c.set_sealing(sealing(n, pins, first_use))
        },
    );
    world.tamper = Some(Box::new(|_, frame| match frame {
        Frame::Cmd(cmd) if cmd.peer.as_str() == "mallory" => vec![Frame::Cmd(Cmd {
            peer: user("alice"),
            ..cmd
        })],
        other => vec![other],
    }));
    let now = world.now;
    let id = world.users[2]
        .cont
        .send_cmd(now, "bob", Bytes::from_static(b"transfer all funds"), 0)
        .unwrap();
    settle(&mut world, |w| result(w, 2, id).is_some());
    assert_eq!(result(&world, 2, id), Some(ErrorCode::PEER_KEY_CHANGED));
    assert_eq!(refused(&world, 1), vec![ErrorCode::PEER_KEY_CHANGED]);
    assert!(world.users[1].events.iter().any(|e| matches!(e,
        Event::PeerKey { user: u, key: Some(k), status: Some(KeyStatus::Changed { pinned }) }
            if u.as_str() == "alice" && *k == key_of(66) && *pinned == key_of(1))));
    assert!(received(&world, 1).is_empty());
}

/// Runs one attack on what the relay forwards to bob and checks its outcome.
fn attacked(
    kind: SendKind,
    len: usize,
    attack: impl FnMut(Frame) -> Vec<Frame> + 'static,
) -> (Option<ErrorCode>, Vec<ErrorCode>, Vec<Bytes>) {
    let mut world = sealed_world(4);
    let mut attack = attack;
    world.tamper = Some(Box::new(move |to, frame| match to {
        1 => attack(frame),
        _ => vec![frame],
    }));
    let id = send(&mut world, 0, kind, &content(len, 9));
    settle(&mut world, |w| result(w, 0, id).is_some());
    (
        result(&world, 0, id),
        refused(&world, 1),
        received(&world, 1),
    )
}

/// The attack's outcome: the sender's result and the receiver's refusal say `code`, and
/// nothing was delivered.
fn refused_at_both_ends(
    (result, refused, got): (Option<ErrorCode>, Vec<ErrorCode>, Vec<Bytes>),
    code: ErrorCode,
) {
    assert_eq!(result, Some(code));
    assert_eq!(refused, vec![code]);
    assert!(got.is_empty());
}

#[test]
fn an_altered_command_is_refused_at_both_ends() {
    let (code, refused, got) = attacked(SendKind::Cmd, 200, |frame| match frame {
        Frame::Cmd(mut cmd) => {
            let mut data = cmd.data.to_vec();
            data[150] ^= 0x20;
            cmd.data = data.into();
            vec![Frame::Cmd(cmd)]
        }
        other => vec![other],
    });
    refused_at_both_ends((code, refused, got), ErrorCode::SEAL_BROKEN);
}

#[test]
fn a_command_cut_short_is_refused() {
    let (code, refused, got) = attacked(SendKind::Cmd, 200, |frame| match frame {
        Frame::Cmd(mut cmd) => {
            cmd.data.truncate(cmd.data.len() - 20);
            cmd.total_len -= 20;
            vec![Frame::Cmd(cmd)]
        }
        other => vec![other],
    });
    refused_at_both_ends((code, refused, got), ErrorCode::SEAL_BROKEN);
}

#[test]
fn a_command_given_another_identity_is_refused() {
    // A replay made to look new: the same sealed bytes under another number.
    let (code, refused, got) = attacked(SendKind::Cmd, 200, |frame| match frame {
        Frame::Cmd(mut cmd) => {
            if let Some(once) = cmd.once.as_mut() {
                once.seq += 1;
            }
            vec![Frame::Cmd(cmd)]
        }
        other => vec![other],
    });
    refused_at_both_ends((code, refused, got), ErrorCode::SEAL_BROKEN);
}

#[test]
fn a_replayed_command_is_not_delivered_twice() {
    // The relay sends bob each command twice, the second as a new message.
    let (code, refused, got) = attacked(SendKind::Cmd, 200, |frame| match frame {
        Frame::Cmd(cmd) => {
            let again = Cmd {
                id: cmd.id + 1000,
                ..cmd.clone()
            };
            vec![Frame::Cmd(cmd), Frame::Cmd(again)]
        }
        other => vec![other],
    });
    assert_eq!(code, Some(ErrorCode::NOERR));
    assert!(refused.is_empty());
    assert_eq!(got.len(), 1, "delivered once");
    assert_eq!(got[0], content(200, 9));
}

#[test]
fn a_buffer_with_its_pieces_swapped_is_refused_even_with_its_digest_made_good() {
    // The second and third DATA frames to bob trade payloads; the END's CRC is made to
    // match what bob then holds (a CRC guards against accidents, not against a relay).
    // DATA frames seen, the second one held back, and the bytes bob was sent.
    type Swap = (usize, Option<Data>, Vec<u8>);
    let held: Rc<RefCell<Swap>> = Rc::default();
    let (code, refused, got) = attacked(SendKind::Buffer, 100_000, move |frame| {
        let mut state = held.borrow_mut();
        let (count, second, bytes) = &mut *state;
        let out = match frame {
            Frame::Data(d) => {
                *count += 1;
                match (*count, second.take()) {
                    (2, _) => {
                        *second = Some(d);
                        return vec![];
                    }
                    (3, Some(b)) => {
                        assert_eq!(b.payload.len(), d.payload.len(), "pieces of one size");
                        let one = Data {
                            payload: d.payload.clone(),
                            ..b.clone()
                        };
                        let two = Data {
                            payload: b.payload,
                            ..d
                        };
                        vec![Frame::Data(one), Frame::Data(two)]
                    }
                    _ => vec![Frame::Data(d)],
                }
            }
            Frame::End(end) => {
                let crc = crc32c::crc32c(bytes);
                let digest = peermsg::wire::Digest::Crc32c(crc);
                vec![Frame::End(End { digest, ..end })]
            }
            other => vec![other],
        };
        for f in &out {
            if let Frame::Data(d) = f {
                bytes.extend_from_slice(&d.payload);
            }
        }
        out
    });
    refused_at_both_ends((code, refused, got), ErrorCode::SEAL_BROKEN);
}

#[test]
fn an_unsealed_message_to_a_sealing_user_is_refused_and_a_sealed_one_needs_a_key() {
    // alice seals, bob does not (he has no key); carol does not seal, and sends to
    // alice.
    let mut world = World::with_setup(&["alice", "bob", "carol"], config(), policy(), 5, |i, c| {
        if i == 0 {
            c.set_sealing(sealing(1, &[], true))
        }
    });
    let to_bob = send(&mut world, 0, SendKind::Cmd, b"for bob");
    let now = world.now;
    let to_alice = world.users[2]
        .cont
        .send_cmd(now, "alice", Bytes::from_static(b"plain words"), 0)
        .unwrap();
    settle(&mut world, |w| {
        result(w, 0, to_bob).is_some() && result(w, 2, to_alice).is_some()
    });
    assert_eq!(result(&world, 0, to_bob), Some(ErrorCode::NO_PEER_KEY));
    assert_eq!(result(&world, 2, to_alice), Some(ErrorCode::SEAL_REQUIRED));
    assert_eq!(refused(&world, 0), vec![ErrorCode::SEAL_REQUIRED]);
    assert!(received(&world, 0).is_empty() && received(&world, 1).is_empty());
    // Files alike: a plain one to a sealer refused, a sealed one to a user with no key
    // never sent.
    let plain_file = world.send_file(2, "alice", content(1000, 1), 3);
    let sealed_file = world.send_file(0, "bob", content(1000, 2), 4);
    settle(&mut world, |w| {
        result(w, 2, plain_file).is_some() && result(w, 0, sealed_file).is_some()
    });
    assert_eq!(
        result(&world, 2, plain_file),
        Some(ErrorCode::SEAL_REQUIRED)
    );
    assert_eq!(result(&world, 0, sealed_file), Some(ErrorCode::NO_PEER_KEY));
    assert_eq!(
        refused(&world, 0),
        vec![ErrorCode::SEAL_REQUIRED, ErrorCode::SEAL_REQUIRED]
    );
    assert!(world.users[0].store.completed.is_empty());
    assert!(world.users[1].store.completed.is_empty());
}

/// Every file `who`'s application was offered: its name and size.
fn offers(world: &World, who: usize) -> Vec<(String, u64)> {
    world.users[who]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Offer {
                kind: SendKind::File,
                name,
                size,
                ..
            } => Some((name.to_string(), *size)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_sealed_file_and_its_name_arrive_and_the_relay_reads_neither() {
    let mut world = sealed_world(11);
    let seen = recorder(&mut world);
    let mut file = content(300_000, 3).to_vec();
    file[200_000..200_016].copy_from_slice(b"FILE-PLAINTEXT-X");
    let name = "quarterly-secret-plans.pdf";
    let now = world.now;
    let key = peermsg::wire::ResumeKey([5; 16]);
    let id = world.users[0]
        .cont
        .send_file(now, "bob", name, file.len() as u64, key, 0)
        .expect("sent");
    world.users[0].files.insert(id, Bytes::from(file.clone()));
    settle(&mut world, |w| result(w, 0, id).is_some());
    assert_eq!(result(&world, 0, id), Some(ErrorCode::NOERR));
    assert_eq!(world.users[1].store.completed, vec![file.clone()]);
    // The receiver's application saw the name and the plain size; progress counted plain
    // bytes at both ends.
    assert_eq!(
        offers(&world, 1),
        vec![(name.to_string(), file.len() as u64)]
    );
    let last_progress = world.users[0].events.iter().rev().find_map(|e| match e {
        Event::Progress { sent, total, .. } => Some((*sent, *total)),
        _ => None,
    });
    let size = file.len() as u64;
    assert_eq!(last_progress, Some((size, size)));
    let seen = seen.borrow();
    assert!(
        !contains(&seen, b"FILE-PLAINTEXT-X"),
        "the file's plaintext"
    );
    assert!(!contains(&seen, name.as_bytes()), "the file's name");
    assert!(!contains(&seen, &file[..64]), "the file's first bytes");
    // Its END carried a digest, and not the plain one (it is masked).
    let ends = end_digests(&seen);
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_ne!(ends[0], crc32c::crc32c(&file), "the END digest is masked");
}

#[test]
fn a_sealed_file_altered_reordered_or_cut_is_refused_at_both_ends() {
    // A byte of the second record altered.
    let hit = Rc::new(RefCell::new(false));
    let done = hit.clone();
    let altered = attacked(SendKind::File, 200_000, move |frame| match frame {
        Frame::Data(mut d) if (d.offset..d.offset + d.payload.len() as u64).contains(&70_000) => {
            let mut payload = d.payload.to_vec();
            payload[(70_000 - d.offset) as usize] ^= 1;
            d.payload = payload.into();
            *done.borrow_mut() = true;
            vec![Frame::Data(d)]
        }
        other => vec![other],
    });
    assert!(*hit.borrow(), "the attack happened");
    refused_at_both_ends(altered, ErrorCode::SEAL_BROKEN);
    // The first record replayed whole in place of the second, at the second's offsets:
    // the same key sealed both, so only their numbers tell them apart.
    const RECORD_WIRE: usize = 65_536 + 16;
    let first: Rc<RefCell<Vec<u8>>> = Rc::default();
    let replayed = Rc::new(RefCell::new(0usize));
    let count = replayed.clone();
    let moved = attacked(SendKind::File, 200_000, move |frame| match frame {
        Frame::Data(mut d) => {
            let mut first = first.borrow_mut();
            let mut payload = d.payload.to_vec();
            for (i, byte) in payload.iter_mut().enumerate() {
                let at = d.offset as usize + i;
                if at < RECORD_WIRE {
                    first.push(*byte);
                } else if at < 2 * RECORD_WIRE {
                    *byte = first[at - RECORD_WIRE];
                    *count.borrow_mut() += 1;
                }
            }
            d.payload = payload.into();
            vec![Frame::Data(d)]
        }
        other => vec![other],
    });
    assert_eq!(*replayed.borrow(), RECORD_WIRE, "the attack happened");
    refused_at_both_ends(moved, ErrorCode::SEAL_BROKEN);
    // Cut to its first record: the OPEN's size changed, and the END's to match.
    let cut = attacked(SendKind::File, 200_000, |frame| match frame {
        Frame::Open(mut open) => {
            open.size = 65_552;
            vec![Frame::Open(open)]
        }
        Frame::Data(d) if d.offset >= 65_552 => vec![],
        Frame::End(mut end) => {
            end.size = 65_552;
            vec![Frame::End(end)]
        }
        other => vec![other],
    });
    refused_at_both_ends(cut, ErrorCode::SEAL_BROKEN);
}

/// Runs the world step by step until `done`, the clock moving when it is quiet.
fn until(world: &mut World, done: impl Fn(&World) -> bool) {
    for _ in 0..60_000 {
        if world.run_until(&done) {
            return;
        }
        world.run_for(Duration::from_millis(1));
    }
    panic!("never came to pass");
}

#[test]
fn sealed_files_resume_across_lost_connections_whole_and_once() {
    for seed in 0..4u64 {
        let mut world = sealed_world(200 + seed);
        let file = content(2_000_000, seed);
        let id = world.send_file(0, "bob", file.clone(), 9);
        // Cut the sender or the receiver as bytes flow (mid-record, most likely).
        let first = 300_000 + seed * 123_457;
        until(&mut world, |w| w.users[1].store.stored_bytes >= first);
        world.cut((seed % 2) as usize);
        settle(&mut world, |w| result(w, 0, id).is_some());
        assert_eq!(result(&world, 0, id), Some(ErrorCode::NOERR), "seed {seed}");
        assert_eq!(
            world.users[1].store.completed,
            vec![file.to_vec()],
            "seed {seed}: whole, once"
        );
        // Each attempt went on from the records bob held, not from the start.
        let resumed: Vec<u64> = world.users[0]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Resumed { offset, .. } => Some(*offset),
                _ => None,
            })
            .collect();
        assert_eq!(resumed.len(), 1, "seed {seed}: {resumed:?}");
        assert!(
            resumed
                .iter()
                .all(|o| *o >= first / 2 && *o % peermsg::seal::RECORD == 0),
            "seed {seed}: {resumed:?}"
        );
        let stored = world.users[1].store.stored_bytes;
        assert!(stored < 2_400_000, "seed {seed}: {stored} bytes stored");
    }
}

#[test]
fn a_message_sealed_to_a_receivers_old_key_is_refused_and_the_new_key_told() {
    // alice holds a key for bob that is not his (the one he had before he made a new one).
    let mut world = World::with_setup(&["alice", "bob"], config(), policy(), 12, |i, c| {
        let pinned: &[(&str, u8)] = if i == 0 { &[("bob", 9)] } else { &[] };
        c.set_sealing(sealing(i as u8 + 1, pinned, true))
    });
    let id = send(&mut world, 0, SendKind::Cmd, b"for the old bob");
    settle(&mut world, |w| {
        result(w, 0, id).is_some()
            && w.users[0].events.iter().any(|e| {
                matches!(
                    e,
                    Event::PeerKey {
                        status: Some(KeyStatus::Changed { .. }),
                        ..
                    }
                )
            })
    });
    assert_eq!(result(&world, 0, id), Some(ErrorCode::SEAL_BROKEN));
    assert!(received(&world, 1).is_empty());
    // alice hears bob's key now is his real one, not the one she pinned; it is not
    // trusted until she pins it.
    let told = world.users[0].events.iter().find_map(|e| match e {
        Event::PeerKey {
            user,
            key: Some(key),
            status: Some(KeyStatus::Changed { pinned }),
        } if user.as_str() == "bob" => Some((*key, *pinned)),
        _ => None,
    });
    assert_eq!(told, Some((key_of(2), key_of(9))));
}
