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

/// A figure of `/proc/<pid>/status` (`VmRSS` in KiB, `Threads`).
fn status_of(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn the_metrics_endpoint_stays_bounded_against_hostile_clients() {
    use std::io::Write;
    let addr = format!("127.0.0.1:{}", port());
    let metrics = format!("127.0.0.1:{}", port());
    let mut relay = bin();
    relay.args(["relay", "--listen", &addr, "--metrics", &metrics]);
    let relay = spawn_relay(relay);
    let pid = relay.0.id();
    assert_eq!(get(&metrics, "/healthz"), "ok\n");
    let rss_before = status_of(pid, "VmRSS");
    // One header line with no end: 64 MiB offered (it grew the relay by as much). The
    // endpoint stops reading and closes the connection once the head is over its bound.
    let mut endless = std::net::TcpStream::connect(&metrics).unwrap();
    endless
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    endless
        .write_all(b"GET /metrics HTTP/1.1\r\nX-Long: ")
        .unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0usize;
    for _ in 0..64 {
        match endless.write_all(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(_) => break,
        }
    }
    let grown = status_of(pid, "VmRSS").saturating_sub(rss_before);
    assert!(
        grown < 16 * 1024,
        "the relay grew by {grown} KiB for a head of {sent} bytes"
    );
    assert!(sent < 64 << 20, "all 64 MiB of one header line were read");
    // 500 connections that send nothing: no thread for each (there was), and once they
    // are past the read time the endpoint answers again.
    let idle: Vec<_> = (0..500)
        .filter_map(|_| std::net::TcpStream::connect(&metrics).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let threads = status_of(pid, "Threads");
    assert!(
        threads < 64,
        "{threads} threads for {} connections",
        idle.len()
    );
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(get(&metrics, "/healthz"), "ok\n");
    assert!(get(&metrics, "/metrics").contains("peermsg_relay_connections"));
    drop(idle);
}
