//! The `peermsg` program across processes: a relay, a listener and senders, as a user
//! would run them, with `--json` read by the test.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{bin, port, read_until, spawn_relay, Killed};

fn start_relay(addr: &str, tokens: Option<&std::path::Path>) -> Killed {
    let mut cmd = bin();
    cmd.args(["relay", "--listen", addr]);
    if let Some(t) = tokens {
        cmd.arg("--tokens").arg(t);
    }
    spawn_relay(cmd)
}

#[test]
fn files_buffers_and_commands_across_processes() {
    let addr = format!("127.0.0.1:{}", port());
    let _relay = start_relay(&addr, None);
    let dir = tempfile::tempdir().unwrap();
    let mut listener = bin()
        .args([
            "listen", "--server", &addr, "--user", "bob", "--json", "--dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("notes.txt");
    std::fs::write(&file, vec![b'n'; 3_000_000]).unwrap();
    let send = |what: &[&str]| {
        bin()
            .args([
                "send", "--server", &addr, "--user", "alice", "--to", "bob", "--json",
            ])
            .args(what)
            .output()
            .unwrap()
    };
    let out = send(&["--cmd", "hi bob"]);
    assert!(out.status.success(), "{out:?}");
    let out = send(&["--file", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "send_result");
    assert_eq!(last["code"], 0);
    let out = send(&["--buffer", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    let seen = read_until(&mut listener, |v| v["event"] == "buffer_received");
    let _ = listener.kill();
    let cmd = seen.iter().find(|v| v["event"] == "cmd_received").unwrap();
    assert_eq!(cmd["from"], "alice");
    assert_eq!(cmd["data"], "hi bob");
    let f = seen.iter().find(|v| v["event"] == "file_received").unwrap();
    assert_eq!(f["org_file_name"], "notes.txt");
    assert_eq!(f["size"], 3_000_000);
    // The file lands under its own name, where a user looks.
    let path = std::path::PathBuf::from(f["path"].as_str().unwrap());
    let dir = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(path, dir.join("notes.txt"));
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&file).unwrap());
    let b = seen
        .iter()
        .find(|v| v["event"] == "buffer_received")
        .unwrap();
    assert_eq!(b["size"], 3_000_000);
    let path = std::path::PathBuf::from(b["path"].as_str().unwrap());
    assert_eq!(path, dir.join("buffer-alice.bin"));
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&file).unwrap());
}

#[test]
fn errors_a_user_can_cause_are_one_line_and_a_failure() {
    let addr = format!("127.0.0.1:{}", port());
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "alice secret\n").unwrap();
    let _relay = start_relay(&addr, Some(tokens.path()));
    let run = |args: &[&str]| bin().args(args).output().unwrap();

    let offline = run(&[
        "send", "--server", &addr, "--user", "alice", "--token", "secret", "--to", "nobody",
        "--cmd", "x", "--json",
    ]);
    assert!(!offline.status.success());
    let last: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&offline.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["code"], 603);

    let bad = run(&[
        "send", "--server", &addr, "--user", "alice", "--token", "wrong", "--to", "bob", "--cmd",
        "x",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("login refused") && err.lines().count() == 1,
        "{err}"
    );

    let dead = format!("127.0.0.1:{}", port());
    let unreachable = run(&[
        "send", "--server", &dead, "--user", "alice", "--to", "bob", "--cmd", "x",
    ]);
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot connect"));

    let missing = run(&[
        "send",
        "--server",
        &addr,
        "--user",
        "alice",
        "--token",
        "secret",
        "--to",
        "bob",
        "--file",
        "/no/such/file",
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read /no/such/file"));

    let unwritable = run(&[
        "listen",
        "--server",
        &addr,
        "--user",
        "alice",
        "--token",
        "secret",
        "--dir",
        "/no/such/dir",
    ]);
    assert!(!unwritable.status.success());
    assert!(String::from_utf8_lossy(&unwritable.stderr).contains("/no/such/dir"));
}
