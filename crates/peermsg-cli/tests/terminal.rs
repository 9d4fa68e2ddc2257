//! What a person sees on a terminal: `peermsg demo` and `listen` run on a pseudo-terminal
//! (`script`), their output rendered as a screen (`vt100`), and the lines on it checked:
//! every line stays (a bar's redraw took some away), no bar is left behind, results are
//! said in words before their code, nothing says "success" while cancelling, and a file
//! cut off then finished is never told "failed".

mod common;

use std::process::{Command, Stdio};

use common::{bin, port, spawn_relay};

/// `shell` run on a pseudo-terminal of 200 rows and 160 columns; the screen it leaves, as
/// text, or `None` where `script` is missing.
fn on_a_terminal(shell: &str) -> Option<String> {
    let line = format!("stty rows 200 cols 160; {shell}");
    let out = Command::new("script")
        .args(["-qfec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let mut screen = vt100::Parser::new(200, 160, 0);
    screen.process(&out.stdout);
    Some(screen.screen().contents())
}

fn program() -> &'static str {
    env!("CARGO_BIN_EXE_peermsg")
}

/// No bar left on the screen: none of its marks.
fn no_bar_left(screen: &str) {
    for line in screen.lines() {
        assert!(
            !line.contains("0 B/0 B") && !line.contains('█') && !line.contains('░'),
            "a bar left behind: {line:?}\n{screen}"
        );
    }
}

#[test]
fn the_demo_reads_as_a_person_expects() {
    let Some(screen) = on_a_terminal(&format!("exec {} demo", program())) else {
        eprintln!("skipped: script (util-linux) is not installed");
        return;
    };
    for line in [
        "bob: command from alice: hello from alice",
        "alice: command: delivered (0 NOERR)",
        "bob: alice is sending a buffer (8388608 bytes)",
        "alice: buffer of 8 MiB: delivered (0 NOERR)",
        "bob: alice is sending report.pdf (25165824 bytes)",
        "bob: file from alice: report.pdf (25165824 bytes) saved as",
        "alice: file of 24 MiB: delivered (0 NOERR)",
        "alice cancels the 256 MiB file at",
        "alice: file of 256 MiB: cancelled (9000 CANCELLED)",
        "bob: alice cancelled a transfer",
    ] {
        assert!(screen.contains(line), "missing {line:?}:\n{screen}");
    }
    assert!(!screen.contains("success"), "{screen}");
    no_bar_left(&screen);
}

#[test]
fn a_listener_on_a_terminal_keeps_every_line_and_no_bar() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: script (util-linux) is not installed");
        return;
    }
    let addr = format!("127.0.0.1:{}", port());
    let mut relay = bin();
    relay.args(["relay", "--listen", &addr]);
    let _relay = spawn_relay(relay);
    let inbox = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let big = src.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 30 << 20]).unwrap();
    let notes = src.path().join("notes.txt");
    std::fs::write(&notes, b"some notes").unwrap();
    // bob listens on the terminal while alice sends two files and a command, then he
    // is stopped.
    // alice's first send of big.bin is killed part way; run again, it goes on.
    let sends = format!(
        "sleep 0.5; P={p}; $P send --server {addr} --user alice --to bob --limit-rate 10M --file {big} >/dev/null 2>&1 & S=$!; \
         sleep 1.5; kill -9 $S; sleep 0.5; \
         $P send --server {addr} --user alice --to bob --file {big} >/dev/null 2>&1; \
         $P send --server {addr} --user alice --to bob --file {notes} >/dev/null 2>&1; \
         $P send --server {addr} --user alice --to bob --cmd hi >/dev/null 2>&1; sleep 0.5; kill $L",
        p = program(),
        big = big.display(),
        notes = notes.display(),
    );
    let shell = format!(
        "{p} listen --server {addr} --user bob --dir {dir} & L=$!; ({sends}) & wait $L",
        p = program(),
        dir = inbox.path().display(),
    );
    let screen = on_a_terminal(&shell).unwrap();
    for line in [
        "bob logged in at",
        "alice is sending big.bin (31457280 bytes)",
        "file from alice: big.bin (31457280 bytes) saved as",
        "alice is sending notes.txt (10 bytes)",
        "file from alice: notes.txt (10 bytes) saved as",
        "command from alice: hi",
        "a transfer from alice was cut off at",
    ] {
        assert!(screen.contains(line), "missing {line:?}:\n{screen}");
    }
    // Cut off, then saved: never told "failed" for the one file.
    assert!(!screen.contains("failed"), "{screen}");
    no_bar_left(&screen);
}
