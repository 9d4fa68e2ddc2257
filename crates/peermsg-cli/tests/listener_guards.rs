//! What a hostile sender or a hostile machine cannot do to `peermsg listen`: a file size
//! limit does not end it nor leave a cut buffer under a final name, names with
//! bidirectional controls are cleaned, command bytes that are not text are given whole,
//! and a connection the relay turns away says why.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use common::{bin, port, spawn_relay, Killed, Lines};

/// A listener and its JSON lines, read as they come.
struct Listener {
    process: Killed,
    lines: Lines,
}

impl Listener {
    fn of(mut child: std::process::Child) -> Listener {
        let lines = Lines::of(&mut child);
        Listener {
            process: Killed(child),
            lines,
        }
    }

    /// The first line from now on that `done` says so of.
    fn until(&mut self, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        self.lines.until(done)
    }
}

fn relay(extra: &[&str]) -> (String, Killed) {
    let addr = format!("127.0.0.1:{}", port());
    let mut cmd = bin();
    cmd.args(["relay", "--listen", &addr]).args(extra);
    (addr.clone(), spawn_relay(cmd))
}

/// `peermsg listen --json` as bob into `dir`, started through `sh -c` with `prelude`
/// first (a `ulimit`, say).
fn listen_after(prelude: &str, addr: &str, dir: &Path) -> Listener {
    let line =
        format!("{prelude} exec \"$0\" listen --server {addr} --user bob --json --dir \"$1\"",);
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(line)
        .arg(env!("CARGO_BIN_EXE_peermsg"))
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut bob = Listener::of(child);
    bob.until(|v| v["event"] == "ready");
    bob
}

fn send(addr: &str, what: &[&str]) -> std::process::Output {
    bin()
        .args([
            "send", "--server", addr, "--user", "alice", "--to", "bob", "--json",
        ])
        .args(what)
        .output()
        .unwrap()
}

#[test]
fn a_file_size_limit_fails_one_buffer_and_the_listener_goes_on() {
    let (addr, _relay) = relay(&[]);
    let inbox = tempfile::tempdir().unwrap();
    // Files of at most 64 blocks (32 or 64 KiB): a 1 MiB buffer passes it.
    let mut bob = listen_after("ulimit -f 64 &&", &addr, inbox.path());
    let src = tempfile::tempdir().unwrap();
    let big = src.path().join("big.bin");
    std::fs::write(&big, vec![5u8; 1 << 20]).unwrap();
    let out = send(&addr, &["--buffer", big.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "not delivered: {out:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        bob.process.0.try_wait().unwrap().is_none(),
        "SIGXFSZ ended the listener"
    );
    // No name holds a cut copy of it.
    let names: Vec<String> = std::fs::read_dir(inbox.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "left under a final name: {names:?}");
    // The listener still takes what fits.
    let out = send(&addr, &["--cmd", "still there?"]);
    assert!(out.status.success(), "{out:?}");
    let seen = bob.until(|v| v["event"] == "cmd_received");
    assert_eq!(seen["data"], "still there?");
}

#[test]
fn bidirectional_controls_never_reach_a_saved_name() {
    let (addr, _relay) = relay(&[]);
    let inbox = tempfile::tempdir().unwrap();
    let mut bob = listen_after("", &addr, inbox.path());
    let src = tempfile::tempdir().unwrap();
    // Shown as "invoice-exe.pdf" by a terminal or file manager that honours the override.
    let name = "invoice-\u{202e}fdp.exe";
    std::fs::write(src.path().join(name), b"MZ").unwrap();
    let out = send(&addr, &["--file", src.path().join(name).to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let seen = bob.until(|v| v["event"] == "file_received");
    let path = seen["path"].as_str().unwrap().to_string();
    assert!(!path.contains('\u{202e}'), "saved as {path:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"MZ");
}

#[test]
fn a_command_that_is_not_text_reaches_json_whole_in_base64() {
    let (addr, _relay) = relay(&[]);
    let inbox = tempfile::tempdir().unwrap();
    let mut bob = listen_after("", &addr, inbox.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let code = runtime.block_on(async {
        let config = peermsg::client::ClientConfig::default();
        let (alice, _events) = peermsg_tokio::connect(&addr, "alice", b"", config, None)
            .await
            .unwrap();
        let data = Bytes::from_static(&[0xff, 0xfe, b'h', b'i']);
        alice.send_cmd("bob", data, 0).await.unwrap().await
    });
    assert!(code.is_success(), "{code}");
    let cmd = bob.until(|v| v["event"] == "cmd_received");
    assert_eq!(cmd["data_base64"], "//5oaQ==", "{cmd}");
    assert!(cmd.get("data").is_none(), "characters replaced: {cmd}");
}

#[test]
fn a_connection_over_the_per_address_cap_says_the_relays_reason() {
    let (addr, _relay) = relay(&["--max-connections-per-ip", "1"]);
    let inbox = tempfile::tempdir().unwrap();
    let _bob = listen_after("", &addr, inbox.path());
    let out = send(&addr, &["--cmd", "hi"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("too many connections from your address") && err.contains("9008"),
        "{err}"
    );
}

/// The code name of a send's JSON result.
fn result_name(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).unwrap_or_default();
    v["code_name"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_listener_takes_only_from_whom_it_names_and_up_to_the_size_it_names() {
    let (addr, _relay) = relay(&[]);
    let inbox = tempfile::tempdir().unwrap();
    let mut bob = listen_after("", &addr, inbox.path());
    drop(bob);
    // Started again choosing: only carol, files and buffers up to 1 MB.
    let line = format!(
        "exec \"$0\" listen --server {addr} --user bob --json --from carol,dave --max-size 1M --dir \"$1\""
    );
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(line)
        .arg(env!("CARGO_BIN_EXE_peermsg"))
        .arg(inbox.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    bob = Listener::of(child);
    bob.until(|v| v["event"] == "ready");
    let from = |user: &str, what: &[&str]| {
        bin()
            .args([
                "send", "--server", &addr, "--user", user, "--to", "bob", "--json",
            ])
            .args(what)
            .output()
            .unwrap()
    };
    let out = from("alice", &["--cmd", "let me in"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(result_name(&out), "REJECTED");
    let out = from("carol", &["--cmd", "hi"]);
    assert!(out.status.success(), "{out:?}");
    let seen = bob.until(|v| v["event"] == "cmd_received");
    assert_eq!(seen["from"], "carol");
    let heard = &bob.lines.seen;
    assert!(!heard.iter().any(|v| v["from"] == "alice"), "{heard:?}");
    let src = tempfile::tempdir().unwrap();
    let big = src.path().join("big.bin");
    std::fs::write(&big, vec![1u8; 2_000_000]).unwrap();
    let out = from("carol", &["--file", big.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(result_name(&out), "FILE_SIZE_ERR");
    let out = from("carol", &["--buffer", big.to_str().unwrap()]);
    assert_eq!(result_name(&out), "SENDBUFFER_LARGE");
    assert_eq!(
        std::fs::read_dir(inbox.path()).unwrap().count(),
        0,
        "no byte came"
    );
}

#[test]
fn hidden_names_land_visibly_and_standard_input_takes_the_name_given() {
    let (addr, _relay) = relay(&[]);
    let inbox = tempfile::tempdir().unwrap();
    let mut bob = listen_after("", &addr, inbox.path());
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join(".profile"), b"PATH=evil").unwrap();
    let out = send(
        &addr,
        &["--file", src.path().join(".profile").to_str().unwrap()],
    );
    assert!(out.status.success(), "{out:?}");
    let got = bob.until(|v| v["event"] == "file_received");
    let path = got["path"].as_str().unwrap().to_string();
    assert!(path.ends_with("/_profile"), "{path}");
    // Standard input, named.
    let mut child = bin()
        .args(["send", "--server", &addr, "--user", "alice", "--to", "bob"])
        .args(["--file", "-", "--name", "report.txt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"numbers").unwrap();
    assert!(child.wait().unwrap().success());
    let last = bob.until(|v| v["event"] == "file_received");
    assert_eq!(last["org_file_name"], "report.txt");
    assert_eq!(
        std::fs::read(last["path"].as_str().unwrap()).unwrap(),
        b"numbers"
    );
}
