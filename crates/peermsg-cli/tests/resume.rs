//! Resume through the program: `peermsg send --file` survives a SIGKILL of the listener, of
//! the relay, and of itself (run again), mid-file; the file arrives byte for byte, once,
//! and the bytes sent again after each kill stay within what the listener had not yet
//! recorded (`RECORD_EVERY`) plus what was in flight.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{bin, port, Killed, Lines};

/// The file: 48 MiB, sent at 24 MB/s, so a kill lands mid-file.
const SIZE: usize = 48 << 20;
const RATE: &str = "24M";

/// Bytes a kill may cost again: what the listener had not recorded (4 MiB) and what was
/// in flight (transfer windows of 1 MiB at the relay and at the listener) and buffered.
const RESENT_MAX: u64 = (4 << 20) + (3 << 20);

fn relay(addr: &str) -> Killed {
    let mut child = bin()
        .args(["relay", "--listen", addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("relay listening"), "{first}");
    Killed(child)
}

fn event(v: &serde_json::Value, name: &str) -> bool {
    v["event"] == name
}

/// `peermsg listen` as bob into `dir`, once it is ready.
fn listen(addr: &str, dir: &Path) -> (Killed, Lines) {
    let mut child = bin()
        .args([
            "listen", "--server", addr, "--user", "bob", "--json", "--dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut child);
    lines.until(|v| event(v, "ready"));
    (Killed(child), lines)
}

/// `peermsg send --file` from alice to bob, rate-limited.
fn send(addr: &str, file: &Path) -> (Child, Lines) {
    let mut child = bin()
        .args([
            "send",
            "--server",
            addr,
            "--user",
            "alice",
            "--to",
            "bob",
            "--json",
            "--limit-rate",
            RATE,
            "--file",
        ])
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = Lines::of(&mut child);
    (child, lines)
}

/// A file of `SIZE` bytes no two runs share.
fn source(dir: &Path) -> PathBuf {
    let path = dir.join("big.bin");
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ std::process::id() as u64;
    let bytes: Vec<u8> = (0..SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Bytes a listener may receive between two of its progress lines (one each 100 ms at
/// most), with room for a late line.
const UNSEEN: u64 = 24_000_000 / 10 * 3;

/// The send resumed once, from an offset the listener had reached (`before`, its last
/// progress line before the kill, is at most `UNSEEN` behind what it really had), and
/// what was sent again is within `RESENT_MAX`.
fn resumed_within_bounds(resumed: &[u64], before: u64) {
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    let at = resumed[0];
    assert!(
        at > 0 && at <= before + UNSEEN,
        "resumed at {at}, had {before}"
    );
    assert!(
        before.saturating_sub(at) <= RESENT_MAX,
        "resumed at {at}, had {before}"
    );
}

/// The listener has received at least `at` bytes of the file.
fn received(lines: &mut Lines, at: u64) {
    lines.until(|v| event(v, "receive_progress") && v["received"].as_u64() >= Some(at));
}

/// The bytes last reported received.
fn last_received(lines: &Lines) -> u64 {
    lines
        .seen
        .iter()
        .filter(|v| event(v, "receive_progress"))
        .filter_map(|v| v["received"].as_u64())
        .max()
        .unwrap_or(0)
}

/// The send ends with exit 0; its `resumed` offsets.
fn finishes(mut child: Child, mut lines: Lines) -> Vec<u64> {
    let result = lines.until(|v| event(v, "send_result"));
    assert_eq!(result["code"], 0, "{:?}", lines.seen);
    assert!(child.wait().unwrap().success());
    lines
        .seen
        .iter()
        .filter(|v| event(v, "resumed"))
        .filter_map(|v| v["offset"].as_u64())
        .collect()
}

/// The one file bob has, byte for byte the source; nothing else left in the directory.
fn arrived_once(lines: &mut Lines, dir: &Path, source: &Path) {
    let got = lines.until(|v| event(v, "file_received"));
    let path = PathBuf::from(got["path"].as_str().unwrap());
    assert!(
        std::fs::read(&path).unwrap() == std::fs::read(source).unwrap(),
        "identical"
    );
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // Records of delivered files (for repeats) and partials of other versions stay
        // for the resume window.
        .filter(|n| !n.starts_with(".peermsg-resume-"))
        .collect();
    assert_eq!(names, vec!["big.bin".to_string()], "one file: {names:?}");
}

#[test]
fn a_listener_killed_twice_mid_file_and_started_again_gets_the_rest() {
    let (work, inbox) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = source(work.path());
    let addr = format!("127.0.0.1:{}", port());
    let _relay = relay(&addr);
    let (mut listener, mut heard) = listen(&addr, inbox.path());
    let (sender, said) = send(&addr, &file);
    let mut befores = Vec::new();
    for at in [14 << 20, 30 << 20] {
        received(&mut heard, at);
        drop(listener); // SIGKILL
        befores.push(last_received(&heard));
        (listener, heard) = listen(&addr, inbox.path());
    }
    let resumed = finishes(sender, said);
    assert_eq!(resumed.len(), 2, "{resumed:?}");
    for (at, before) in resumed.iter().zip(befores) {
        resumed_within_bounds(&[*at], before);
    }
    arrived_once(&mut heard, inbox.path(), &file);
    drop(listener);
}

#[test]
fn a_relay_killed_mid_file_and_started_again_costs_little() {
    let (work, inbox) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = source(work.path());
    let addr = format!("127.0.0.1:{}", port());
    let relay_process = relay(&addr);
    let (_listener, mut heard) = listen(&addr, inbox.path());
    let (sender, mut said) = send(&addr, &file);
    received(&mut heard, 20 << 20);
    drop(relay_process);
    let before = last_received(&heard);
    said.until(|v| event(v, "reconnecting"));
    let _relay = relay(&addr);
    resumed_within_bounds(&finishes(sender, said), before);
    heard.until(|v| event(v, "reconnected"));
    arrived_once(&mut heard, inbox.path(), &file);
}

/// A relay, a listener, and a sender killed once the listener has `at` bytes.
struct KilledSender {
    addr: String,
    file: PathBuf,
    inbox: tempfile::TempDir,
    heard: Lines,
    _work: tempfile::TempDir,
    _relay: Killed,
    _listener: Killed,
}

fn killed_sender(at: u64) -> KilledSender {
    let (work, inbox) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = source(work.path());
    let addr = format!("127.0.0.1:{}", port());
    let relay = relay(&addr);
    let (listener, mut heard) = listen(&addr, inbox.path());
    let (mut sender, _) = send(&addr, &file);
    received(&mut heard, at);
    sender.kill().unwrap();
    sender.wait().unwrap();
    heard.until(|v| event(v, "receive_failed"));
    KilledSender {
        addr,
        file,
        inbox,
        heard,
        _work: work,
        _relay: relay,
        _listener: listener,
    }
}

#[test]
fn a_sender_killed_mid_file_and_run_again_continues() {
    let run = killed_sender(20 << 20);
    let (addr, file, inbox, mut heard) = (&run.addr, &run.file, run.inbox.path(), run.heard);
    let before = last_received(&heard);
    let (sender, said) = send(addr, file);
    resumed_within_bounds(&finishes(sender, said), before);
    arrived_once(&mut heard, inbox, file);
    // Sent once more, unchanged, within the window: confirmed, not kept twice, and said so
    // (not as a resume).
    let (mut sender, mut said) = send(addr, file);
    let result = said.until(|v| event(v, "send_result"));
    assert_eq!(result["code"], 0, "{:?}", said.seen);
    assert!(sender.wait().unwrap().success());
    assert!(
        said.seen.iter().any(|v| event(v, "already_delivered")),
        "{:?}",
        said.seen
    );
    assert!(
        !said.seen.iter().any(|v| event(v, "resumed")),
        "{:?}",
        said.seen
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::read_dir(inbox).unwrap().count(),
        2,
        "big.bin and its record"
    );
}

#[test]
fn a_changed_file_is_sent_whole_not_spliced() {
    let run = killed_sender(12 << 20);
    let (addr, file, inbox, mut heard) = (&run.addr, &run.file, run.inbox.path(), run.heard);
    // The file changes (in its first bytes) before it is sent again.
    let mut bytes = std::fs::read(file).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(file, &bytes).unwrap();
    let (sender, said) = send(addr, file);
    assert_eq!(finishes(sender, said), Vec::<u64>::new(), "from 0");
    arrived_once(&mut heard, inbox, file);
}

/// `peermsg send --file` from alice to bob at full speed, to its end; its JSON lines.
fn send_whole(addr: &str, file: &Path) -> Vec<serde_json::Value> {
    let out = bin()
        .args([
            "send", "--server", addr, "--user", "alice", "--to", "bob", "--json", "--file",
        ])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_file_sent_again_after_the_receiver_removed_it_is_delivered_again() {
    let addr = format!("127.0.0.1:{}", port());
    let _relay = relay(&addr);
    let inbox = tempfile::tempdir().unwrap();
    let (_bob, mut lines) = listen(&addr, inbox.path());
    let src = tempfile::tempdir().unwrap();
    let file = source(src.path());
    send_whole(&addr, &file);
    let first = lines.until(|v| event(v, "file_received"));
    let saved = PathBuf::from(first["path"].as_str().unwrap());
    // Sent again unchanged while bob still has it where it was saved: both sides say so,
    // nothing moves, and no second copy is kept.
    let said = send_whole(&addr, &file);
    assert!(
        said.iter().any(|v| event(v, "already_delivered")),
        "{said:?}"
    );
    let again = lines.until(|v| event(v, "already_delivered") || event(v, "file_received"));
    assert!(event(&again, "already_delivered"), "{again}");
    assert_eq!(again["path"], first["path"]);
    // bob moves it away; sent again, it is a new delivery, whole (it was confirmed
    // "delivered" while bob got nothing).
    std::fs::rename(&saved, src.path().join("moved.bin")).unwrap();
    let said = send_whole(&addr, &file);
    assert!(
        !said
            .iter()
            .any(|v| event(v, "already_delivered") || event(v, "resumed")),
        "{said:?}"
    );
    arrived_once(&mut lines, inbox.path(), &file);
}

#[test]
fn a_send_says_it_waits_and_gives_up_when_told() {
    let addr = format!("127.0.0.1:{}", port());
    let _relay = relay(&addr);
    let (work, inbox) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = source(work.path());
    for json in [true, false] {
        let (bob, mut heard) = listen(&addr, inbox.path());
        let mut cmd = bin();
        cmd.args(["send", "--server", &addr, "--user", "alice", "--to", "bob"])
            .args(["--limit-rate", RATE, "--wait", "2", "--file"])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if json {
            cmd.arg("--json");
        }
        let mut sender = cmd.spawn().unwrap();
        received(&mut heard, 4 << 20);
        // bob goes away mid-file and does not come back.
        drop(bob);
        let started = Instant::now();
        let status = sender.wait().unwrap();
        let waited = started.elapsed();
        assert_eq!(status.code(), Some(3), "not delivered");
        assert!(waited < Duration::from_secs(20), "gave up after {waited:?}");
        let mut out = String::new();
        std::io::Read::read_to_string(&mut sender.stdout.take().unwrap(), &mut out).unwrap();
        if json {
            let lines: Vec<serde_json::Value> = out
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let waiting = lines
                .iter()
                .find(|v| event(v, "waiting"))
                .expect("a waiting event");
            let (since, deadline) = (
                waiting["since"].as_f64().unwrap(),
                waiting["deadline"].as_f64().unwrap(),
            );
            assert!((deadline - since - 2.0).abs() < 0.01, "{waiting}");
            assert!(waiting["reason"].is_string(), "{waiting}");
            let result = lines.last().unwrap();
            assert_eq!(result["code_name"], "CONNECTIONLOST", "{out}");
        } else {
            assert!(out.contains("waiting for bob (gone at"), "{out}");
            assert!(out.contains("gave up waiting for bob after 2 s"), "{out}");
            assert!(out.contains("(207 CONNECTIONLOST)"), "{out}");
        }
    }
}
