//! `peermsg send/listen --e2e` as people run them, through a proxy in front of the relay
//! that records every byte either way: the command, the buffer, the file and its name
//! arrive, and none of them is in what the relay saw; keys are shown, kept on first use,
//! and a changed one is refused loudly.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{bin, contains, listen_sealed, port, recording_proxy, spawn_relay, Killed};

/// A `peermsg relay` on a free port, and its address.
fn relay() -> (String, Killed) {
    let addr = format!("127.0.0.1:{}", port());
    let mut cmd = bin();
    cmd.args(["relay", "--listen", &addr]);
    (addr.clone(), spawn_relay(cmd))
}

/// `peermsg send --e2e` as alice to bob, keys in `keys`.
fn send(addr: &str, keys: &Path, what: &[&str]) -> Output {
    bin()
        .args([
            "send", "--e2e", "--server", addr, "--user", "alice", "--to", "bob",
        ])
        .arg("--keys")
        .arg(keys)
        .args(["--wait", "10"])
        .args(what)
        .output()
        .unwrap()
}

#[test]
fn a_command_a_buffer_and_a_file_go_sealed_and_the_relay_reads_none_of_them() {
    let (relay_addr, _relay) = relay();
    let (addr, seen) = recording_proxy(&relay_addr);
    let (alice_keys, bob_keys, inbox, src) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (_bob, mut bob) = listen_sealed(&addr, "bob", inbox.path(), bob_keys.path());

    let command = "launch-code-4711-do-not-share";
    let out = send(&addr, alice_keys.path(), &["--cmd", command]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // alice was shown her key, and told bob's was learned and kept.
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("end to end: your key is"), "{said}");
    assert!(
        said.contains("bob's key is") && said.contains("trusted on first use"),
        "{said}"
    );
    let got = bob.until(|v| v["event"] == "cmd_received");
    assert_eq!(got["data"], command, "{got}");
    let learned = bob
        .seen
        .iter()
        .any(|v| v["event"] == "peer_key" && v["user"] == "alice" && v["status"] == "learned");
    assert!(learned, "{:?}", bob.seen);

    let buffer = src.path().join("buffer.bin");
    let mut bytes = vec![0u8; 200_000];
    bytes[150_000..150_024].copy_from_slice(b"BUFFER-PLAINTEXT-MARKER!");
    std::fs::write(&buffer, &bytes).unwrap();
    let out = send(
        &addr,
        alice_keys.path(),
        &["--buffer", buffer.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bob.until(|v| v["event"] == "buffer_received");

    let name = "acquisition-plan-secret.txt";
    let file = src.path().join(name);
    let mut bytes = vec![0u8; 3_000_000];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i * 13 % 251) as u8;
    }
    bytes[2_500_000..2_500_022].copy_from_slice(b"FILE-PLAINTEXT-MARKER!");
    std::fs::write(&file, &bytes).unwrap();
    let out = send(
        &addr,
        alice_keys.path(),
        &["--file", file.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = bob.until(|v| v["event"] == "file_received");
    assert_eq!(got["org_file_name"], name);
    let kept = std::fs::read(got["path"].as_str().unwrap()).unwrap();
    assert!(kept == bytes, "the file whole");

    // Both kept the other's key, one line each.
    for (keys, peer) in [(&alice_keys, "bob "), (&bob_keys, "alice ")] {
        let known = std::fs::read_to_string(keys.path().join("known_peers")).unwrap();
        assert_eq!(
            known.lines().filter(|l| l.starts_with(peer)).count(),
            1,
            "{known}"
        );
    }

    let seen = seen.lock().unwrap();
    assert!(seen.len() > 3_000_000, "the proxy saw the traffic");
    assert!(
        !contains(&seen, command.as_bytes()),
        "the command's plaintext"
    );
    assert!(
        !contains(&seen, b"BUFFER-PLAINTEXT-MARKER"),
        "the buffer's plaintext"
    );
    assert!(
        !contains(&seen, b"FILE-PLAINTEXT-MARKER"),
        "the file's plaintext"
    );
    assert!(
        !contains(&seen, &bytes[1_000_000..1_000_040]),
        "the file's plaintext"
    );
    assert!(!contains(&seen, name.as_bytes()), "the file's name");
    assert!(!contains(&seen, b"acquisition"), "part of the file's name");
}

#[test]
fn a_changed_key_is_refused_loudly_and_the_clear_is_refused() {
    let (relay_addr, _relay) = relay();
    let (alice_keys, bob_keys, inbox) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (bob_process, mut bob) = listen_sealed(&relay_addr, "bob", inbox.path(), bob_keys.path());
    let out = send(&relay_addr, alice_keys.path(), &["--cmd", "first"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bob.until(|v| v["event"] == "cmd_received");

    // alice's key is replaced (a new machine, or someone else): bob refuses her, loudly.
    std::fs::remove_file(alice_keys.path().join("identity")).unwrap();
    let out = send(&relay_addr, alice_keys.path(), &["--cmd", "second"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("PEER_KEY_CHANGED"), "{said}");
    let changed = bob.until(|v| v["event"] == "peer_key" && v["status"] == "changed");
    assert_eq!(changed["user"], "alice");
    assert!(
        !bob.seen.iter().any(|v| v["data"] == "second"),
        "not delivered"
    );

    // carol does not seal: bob refuses her command, and says so.
    let out = bin()
        .args([
            "send",
            "--server",
            &relay_addr,
            "--user",
            "carol",
            "--to",
            "bob",
        ])
        .args(["--cmd", "in the clear", "--wait", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("SEAL_REQUIRED"));
    let refused = bob.until(|v| v["event"] == "refused" && v["from"] == "carol");
    assert_eq!(refused["code_name"], "SEAL_REQUIRED");

    // bob makes a new key: alice, who kept his old one, is not delivered, and is told
    // loudly that his key changed.
    drop(bob_process);
    // (A new machine: no key of his, none of others.)
    std::fs::remove_file(bob_keys.path().join("identity")).unwrap();
    std::fs::remove_file(bob_keys.path().join("known_peers")).unwrap();
    let (_bob, _) = listen_sealed(&relay_addr, "bob", inbox.path(), bob_keys.path());
    let out = send(&relay_addr, alice_keys.path(), &["--cmd", "third"]);
    assert!(!out.status.success());
    let result = String::from_utf8_lossy(&out.stdout);
    assert!(result.contains("SEAL_BROKEN"), "{result}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("bob's key has CHANGED"), "{said}");
    let alice_refused = bob.seen.iter().any(|v| {
        v["event"] == "refused" && v["from"] == "alice" && v["code_name"] == "PEER_KEY_CHANGED"
    });
    assert!(alice_refused, "{:?}", bob.seen);
    std::thread::sleep(Duration::from_millis(100));
}
