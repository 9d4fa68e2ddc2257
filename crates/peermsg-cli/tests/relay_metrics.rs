//! An operator's view: `peermsg relay --metrics ADDR` serves Prometheus text that parses,
//! whose counters move with traffic, and `/healthz`.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{bin, get, port, spawn_relay, value};

#[test]
fn metrics_parse_and_move_with_traffic() {
    let addr = format!("127.0.0.1:{}", port());
    let metrics = format!("127.0.0.1:{}", port());
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "alice a\nbob b\n").unwrap();
    let mut relay = bin();
    relay
        .args([
            "relay",
            "--listen",
            &addr,
            "--metrics",
            &metrics,
            "--tokens",
        ])
        .arg(tokens.path());
    let _relay = spawn_relay(relay);
    assert_eq!(get(&metrics, "/healthz"), "ok\n");
    let before = get(&metrics, "/metrics");
    assert_eq!(value(&before, "peermsg_relay_logins_total", &[]), 0.0);
    let dir = tempfile::tempdir().unwrap();
    let mut bob = bin()
        .args(["listen", "--server", &addr, "--user", "bob", "--dir"])
        .arg(dir.path())
        .env("PEERMSG_TOKEN", "b")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let send = |user: &str, token: &str| {
        bin()
            .args(["send", "--server", &addr, "--user", user, "--to", "bob"])
            .args(["--cmd", "hello"])
            .env("PEERMSG_TOKEN", token)
            .output()
            .unwrap()
    };
    assert!(send("alice", "a").status.success());
    assert!(!send("alice", "wrong").status.success());
    std::thread::sleep(Duration::from_millis(200));
    let after = get(&metrics, "/metrics");
    assert_eq!(value(&after, "peermsg_relay_logins_total", &[]), 2.0);
    assert_eq!(
        value(
            &after,
            "peermsg_relay_logins_refused_total",
            &[("code", "LOGIN_REJECTED")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "peermsg_relay_messages_ended_total",
            &[("kind", "command"), ("code", "NOERR")]
        ),
        1.0
    );
    assert!(value(&after, "peermsg_relay_received_bytes_total", &[]) > 0.0);
    assert!(value(&after, "peermsg_relay_sent_bytes_total", &[]) > 0.0);
    assert!(value(&after, "peermsg_relay_frames_forwarded_total", &[]) >= 1.0);
    assert_eq!(value(&after, "peermsg_relay_sessions", &[]), 1.0, "bob");
    assert!(value(&after, "peermsg_relay_held_budget_bytes", &[]) > 0.0);
    let _ = bob.kill();
    let _ = bob.wait();
}
