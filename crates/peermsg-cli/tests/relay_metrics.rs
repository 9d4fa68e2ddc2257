//! An operator's view: `peermsg relay --metrics ADDR` serves Prometheus text that parses,
//! whose counters move with traffic, and `/healthz`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use common::{bin, port, spawn_relay};

/// The body of `GET path` at `addr`.
fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The value of `name` (with `labels`, if any) in Prometheus text.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
}

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
