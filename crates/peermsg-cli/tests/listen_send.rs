//! `peermsg send` and `peermsg listen` as users run them, against the defects found by
//! trying them: Ctrl-C that did not cancel, pipes that sent nothing, peer text that drove
//! the terminal, and buffers and files written over what was there or through links.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::small_disk::SmallDisk;
use common::{bin, port, read_until, spawn_relay, Killed};

fn relay() -> (String, Killed) {
    let addr = format!("127.0.0.1:{}", port());
    let mut cmd = bin();
    cmd.args(["relay", "--listen", &addr]);
    let relay = spawn_relay(cmd);
    (addr, relay)
}

/// `peermsg listen` as bob into `dir`, `--json` or not, once logged in.
fn listen(addr: &str, dir: &Path, json: bool) -> Killed {
    let mut cmd = bin();
    cmd.args(["listen", "--server", addr, "--user", "bob", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if json {
        cmd.arg("--json");
    }
    let child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    Killed(child)
}

fn send(addr: &str) -> Command {
    let mut cmd = bin();
    cmd.args([
        "send", "--server", addr, "--user", "alice", "--to", "bob", "--json",
    ]);
    cmd
}

/// `peermsg send` as `user` to a port where nothing listens: for what is refused before
/// connecting.
fn send_nowhere(user: &str, what: &[&str]) -> std::process::Output {
    bin()
        .args([
            "send",
            "--server",
            "127.0.0.1:1",
            "--user",
            user,
            "--to",
            "b",
        ])
        .args(what)
        .output()
        .unwrap()
}

fn path_of(event: &serde_json::Value) -> PathBuf {
    PathBuf::from(event["path"].as_str().unwrap())
}

#[test]
fn ctrl_c_during_a_transfer_always_cancels_with_status_130() {
    let (addr, _relay) = relay();
    let inbox = tempfile::tempdir().unwrap();
    let _bob = listen(&addr, inbox.path(), true);
    let src = tempfile::tempdir().unwrap();
    let big = src.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 256 << 20]).unwrap();
    for round in 0..8u64 {
        let mut child = send(&addr)
            .arg("--file")
            .arg(&big)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The transfer has begun (its first progress line; a round may first resume what
        // the listener kept of an earlier round's file), then a moment more.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .find(|l| l.as_ref().map_or(true, |l| !l.contains("resumed")))
            .unwrap()
            .unwrap();
        assert!(first.contains("progress"), "{first}");
        std::thread::sleep(Duration::from_millis(round * 17 % 120));
        let interrupted = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(interrupted.success());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "round {round}: {status:?}");
    }
}

#[test]
fn a_pipe_arrives_whole_and_a_directory_is_refused_before_connecting() {
    let (addr, _relay) = relay();
    let inbox = tempfile::tempdir().unwrap();
    let mut bob = listen(&addr, inbox.path(), true);
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for arg in ["-", "/dev/stdin"] {
        let mut child = send(&addr)
            .args(["--file", arg])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut stdin, &content).unwrap();
        drop(stdin);
        assert!(child.wait().unwrap().success(), "--file {arg}");
    }
    let count = std::cell::Cell::new(0);
    let seen = read_until(&mut bob.0, |v| {
        if v["event"] == "file_received" {
            count.set(count.get() + 1);
        }
        count.get() == 2
    });
    let files: Vec<_> = seen
        .iter()
        .filter(|v| v["event"] == "file_received")
        .collect();
    for f in &files {
        assert_eq!(f["size"], content.len());
        assert_eq!(std::fs::read(path_of(f)).unwrap(), content);
    }
    // A directory: refused at once, with no connection needed.
    let out = send_nowhere("a", &["--file", inbox.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is a directory") && err.contains("tar -czf"),
        "{err}"
    );
}

#[test]
fn peer_text_reaches_the_terminal_escaped() {
    let (addr, _relay) = relay();
    let inbox = tempfile::tempdir().unwrap();
    let mut bob = listen(&addr, inbox.path(), false);
    let hostile = "hi\u{1b}[2J\ncommand from carol: wire money\u{202e}";
    assert!(send(&addr)
        .args(["--cmd", hostile])
        .output()
        .unwrap()
        .status
        .success());
    let out = bob.0.stdout.take().unwrap();
    let line = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("command from"))
        .unwrap();
    assert_eq!(
        line,
        "command from alice: hi\\u{1b}[2J\\u{a}command from carol: wire money\\u{202e}"
    );
}

#[test]
fn nothing_received_replaces_a_file_or_follows_a_link() {
    let (addr, _relay) = relay();
    let inbox = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    // Planted: a link where the first buffer from alice would go, a file where the file would.
    std::os::unix::fs::symlink(&victim, inbox.path().join("buffer-alice.bin")).unwrap();
    std::fs::write(inbox.path().join("notes.txt"), b"mine").unwrap();
    let mut bob = listen(&addr, inbox.path(), true);
    let src = tempfile::tempdir().unwrap();
    let notes = src.path().join("notes.txt");
    std::fs::write(&notes, b"theirs").unwrap();
    assert!(send(&addr)
        .arg("--buffer")
        .arg(&notes)
        .output()
        .unwrap()
        .status
        .success());
    assert!(send(&addr)
        .arg("--file")
        .arg(&notes)
        .output()
        .unwrap()
        .status
        .success());
    let seen = read_until(&mut bob.0, |v| v["event"] == "file_received");
    let inbox = std::fs::canonicalize(inbox.path()).unwrap();
    let buffer = seen
        .iter()
        .find(|v| v["event"] == "buffer_received")
        .unwrap();
    assert_eq!(path_of(buffer), inbox.join("buffer-alice (1).bin"));
    assert!(!victim.exists(), "written through the planted link");
    let file = seen.iter().find(|v| v["event"] == "file_received").unwrap();
    assert_eq!(path_of(file), inbox.join("notes (1).txt"));
    assert_eq!(std::fs::read(inbox.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read(path_of(file)).unwrap(), b"theirs");
    // And no hidden partial file is left beside them.
    let names: Vec<String> = std::fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".part")), "{names:?}");
}

#[test]
fn a_send_from_a_second_terminal_leaves_the_listener_running() {
    let (addr, _relay) = relay();
    let inbox = tempfile::tempdir().unwrap();
    let mut bob = listen(&addr, inbox.path(), true);
    // bob sends from another terminal while his listener runs; then alice sends to bob.
    let out = bin()
        .args([
            "send", "--server", &addr, "--user", "bob", "--to", "bob", "--json",
        ])
        .args(["--cmd", "note to self"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(send(&addr)
        .args(["--cmd", "still there?"])
        .output()
        .unwrap()
        .status
        .success());
    let seen = read_until(&mut bob.0, |v| v["data"] == "still there?");
    assert!(seen.iter().any(|v| v["data"] == "note to self"));
    assert!(!seen.iter().any(|v| v["event"] == "closed"), "{seen:?}");
    assert!(bob.0.try_wait().unwrap().is_none(), "the listener exited");
}

#[test]
fn the_program_says_what_a_user_needs_and_waits_no_longer_than_asked() {
    // A port where something accepts and never answers: the login gives up in time.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let started = std::time::Instant::now();
    let out = bin()
        .args([
            "send",
            "--server",
            &silent_addr,
            "--user",
            "a",
            "--to",
            "b",
            "--cmd",
            "x",
        ])
        .args(["--timeout", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no answer within 1 s") && err.lines().count() == 1,
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    drop(silent);

    // One's own bad id is called what it is, and found before connecting.
    let out = send_nowhere("", &["--cmd", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid user id") && !err.contains("target"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(1));

    // A token from the environment; a listener that says when it is ready.
    let addr = format!("127.0.0.1:{}", port());
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "alice s3cret\nbob b0b\n").unwrap();
    let mut cmd = bin();
    cmd.args(["relay", "--listen", &addr, "--tokens"])
        .arg(tokens.path());
    let _relay = spawn_relay(cmd);
    let inbox = tempfile::tempdir().unwrap();
    let bob = bin()
        .args([
            "listen", "--server", &addr, "--user", "bob", "--json", "--dir",
        ])
        .arg(inbox.path())
        .env("PEERMSG_TOKEN", "b0b")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let mut bob = Killed(bob);

    // Not delivered: status 3, and the code comes with its name.
    let out = bin()
        .args([
            "send", "--server", &addr, "--user", "alice", "--to", "nobody", "--json",
        ])
        .args(["--cmd", "x"])
        .env("PEERMSG_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["code"].clone(), last["code_name"].clone()),
        (603.into(), "OFFLINE".into())
    );

    // Progress lines: about ten a second at most, and the last one.
    let src = tempfile::tempdir().unwrap();
    let big = src.path().join("big.bin");
    std::fs::write(&big, vec![3u8; 64 << 20]).unwrap();
    let started = std::time::Instant::now();
    let out = send(&addr)
        .arg("--file")
        .arg(&big)
        .env("PEERMSG_TOKEN", "s3cret")
        .output()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let progress: Vec<_> = lines.iter().filter(|v| v["event"] == "progress").collect();
    assert!(
        (progress.len() as f64) <= secs * 10.0 + 3.0,
        "{} progress lines in {secs:.2} s",
        progress.len()
    );
    assert_eq!(progress.last().unwrap()["sent"], 64 << 20);
    // The listener reported the incoming transfer by its receive id, progress included.
    let seen = read_until(&mut bob.0, |v| v["event"] == "file_received");
    assert_eq!(seen[0]["event"], "ready", "{seen:?}");
    assert_eq!(seen[0]["user"], "bob");
    let file = seen.last().unwrap();
    let rid = file["receive_id"].clone();
    assert!(seen
        .iter()
        .any(|v| v["event"] == "offer" && v["receive_id"] == rid));
    assert!(seen
        .iter()
        .any(|v| v["event"] == "receive_progress" && v["receive_id"] == rid));
}

#[test]
fn a_buffer_the_listeners_disk_cannot_hold_is_not_reported_delivered() {
    let Some(disk) = SmallDisk::new("64k") else {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    };
    let (addr, _relay) = relay();
    let mut bob = listen(&addr, disk.0.path(), true);
    let src = tempfile::tempdir().unwrap();
    let big = src.path().join("big.bin");
    std::fs::write(&big, vec![9u8; 200 << 10]).unwrap();
    let out = send(&addr).arg("--buffer").arg(&big).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "not delivered: {out:?}");
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["code_name"], "FILE_NO_SPACE", "{last}");
    assert_eq!(
        std::fs::read_dir(disk.0.path()).unwrap().count(),
        0,
        "nothing left of it"
    );
    // The listener goes on: a buffer that fits is saved and delivered.
    let small = src.path().join("small.bin");
    std::fs::write(&small, b"fits").unwrap();
    let out = send(&addr).arg("--buffer").arg(&small).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let seen = read_until(&mut bob.0, |v| v["event"] == "buffer_received");
    assert_eq!(
        std::fs::read(path_of(seen.last().unwrap())).unwrap(),
        b"fits"
    );
    assert!(bob.0.try_wait().unwrap().is_none(), "the listener exited");
}
