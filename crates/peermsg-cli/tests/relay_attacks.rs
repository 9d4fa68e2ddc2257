//! `peermsg relay` as an attacker meets it, as separate processes: out of open files, and
//! flooded before login. The relay must stay up, stay small, and keep serving.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{bin, port, spawn_relay, Killed};
use peermsg::wire::{Frame, Hello, Limits, Ping, Role};

/// Starts `peermsg relay` on `addr` with `args`, under `sh -c "ulimit -n FILES"` if given,
/// and waits for it to listen.
fn relay(addr: &str, files: Option<u32>, args: &[&str]) -> Killed {
    let bin = env!("CARGO_BIN_EXE_peermsg");
    let mut line = format!("exec '{bin}' relay --listen {addr}");
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    if let Some(n) = files {
        line = format!("ulimit -n {n} && {line}");
    }
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", &line]);
    spawn_relay(cmd)
}

fn alive(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}

/// A login through the relay works: a command to a user nobody is gives 603 at once.
fn relay_answers(addr: &str) -> bool {
    let out = bin()
        .args([
            "send", "--server", addr, "--user", "probe", "--to", "nobody",
        ])
        .args(["--cmd", "hello", "--json"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("603")
}

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

#[test]
fn the_relay_outlives_its_open_file_limit() {
    let addr = format!("127.0.0.1:{}", port());
    let limits = [
        "--max-connections",
        "10000",
        "--max-connections-per-ip",
        "10000",
    ];
    let mut relay = relay(&addr, Some(256), &limits);
    // More connections than it has files: its accepts fail with EMFILE for a while.
    let idle: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    assert!(idle.len() > 256, "only {} connections", idle.len());
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(&mut relay.0), "the relay exited at its file limit");
    drop(idle);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        relay_answers(&addr),
        "the relay does not serve after files came free"
    );
    assert!(alive(&mut relay.0));
}

#[test]
fn a_flood_before_login_leaves_the_relay_small_and_serving() {
    let addr = format!("127.0.0.1:{}", port());
    let mut relay = relay(&addr, None, &[]);
    let pid = relay.0.id();
    let mut bytes = BytesMut::new();
    let hello = Hello::new(Role::Client, &Limits::default(), 64, 16, 1 << 20, 4 << 20);
    Frame::Hello(hello).encode(&mut bytes).unwrap();
    let hello = bytes.split().freeze();
    for nonce in 0..8192 {
        Frame::Pong(Ping { nonce }).encode(&mut bytes).unwrap();
    }
    let pongs = bytes.freeze();
    let until = Instant::now() + Duration::from_secs(3);
    let flooders: Vec<_> = (0..2)
        .map(|_| {
            let (hello, pongs, addr) = (hello.clone(), pongs.clone(), addr.clone());
            std::thread::spawn(move || {
                let mut sent = 0u64;
                while Instant::now() < until {
                    let Ok(mut s) = TcpStream::connect(&addr) else {
                        continue;
                    };
                    let _ = s.write_all(&hello);
                    while Instant::now() < until && s.write_all(&pongs).is_ok() {
                        sent += pongs.len() as u64;
                    }
                }
                sent
            })
        })
        .collect();
    let mut peak = 0;
    let mut answered = 0;
    while Instant::now() < until {
        peak = peak.max(rss_mib(pid));
        answered += u32::from(relay_answers(&addr));
    }
    let sent: u64 = flooders.into_iter().map(|f| f.join().unwrap()).sum();
    eprintln!(
        "flooders wrote {} MiB; relay peak {peak} MiB; {answered} probes answered",
        sent >> 20
    );
    assert!(alive(&mut relay.0));
    assert!(peak < 64, "the relay grew to {peak} MiB");
    assert!(answered > 0);
}
