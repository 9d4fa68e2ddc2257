//! What the program tests share: the binary, free ports, children killed on drop.
#![allow(dead_code)] // each test file uses its own part

#[path = "../../../peermsg-tokio/tests/common/small_disk.rs"]
pub mod small_disk;

#[path = "../../../../bench/src/nats_program.rs"]
pub mod nats_program;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_peermsg"))
}

/// A free loopback port.
pub fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns a relay from `cmd` (its stdout is read here) and waits until it listens.
pub fn spawn_relay(cmd: Command) -> Killed {
    spawn_relay_at(cmd).0
}

/// [`spawn_relay`], with the address the relay says it listens on (give it port 0: a port
/// picked before the relay binds it may be taken meanwhile by a test running beside it).
pub fn spawn_relay_at(mut cmd: Command) -> (Killed, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .strip_prefix("relay listening on ")
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("not a relay's first line: {first}"))
        .to_string();
    (Killed(child), addr)
}

/// Reads JSON lines from a child until `done` says so or time runs out: all it read.
pub fn read_until(
    child: &mut Child,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let mut lines = Lines::of(child);
    lines.until(done);
    lines.seen
}

/// The body of `GET path` at `addr`.
pub fn get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
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
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
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

/// JSON lines of a child's stdout, read on a thread.
pub struct Lines {
    rx: mpsc::Receiver<serde_json::Value>,
    /// Every line read so far.
    pub seen: Vec<serde_json::Value>,
}

impl Lines {
    pub fn of(child: &mut Child) -> Lines {
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Reads until a line satisfies `done`; returns it.
    pub fn until(&mut self, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(v) = self.rx.recv_timeout(Duration::from_millis(50)) {
                self.seen.push(v.clone());
                if done(&v) {
                    return v;
                }
            }
        }
        panic!("timed out; saw {:?}", self.seen);
    }
}

/// A TCP proxy to `relay` on a thread of its own, keeping a copy of every byte.
pub fn recording_proxy(relay: &str) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log = Arc::new(Mutex::new(Vec::new()));
    let tap = log.clone();
    let relay = relay.to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let Ok(server) = TcpStream::connect(&relay) else {
                continue;
            };
            for (from, to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let tap = tap.clone();
                std::thread::spawn(move || pipe(from, to, tap));
            }
        }
    });
    (addr, log)
}

fn pipe(mut from: TcpStream, mut to: TcpStream, log: Arc<Mutex<Vec<u8>>>) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        log.lock().unwrap().extend_from_slice(&buf[..n]);
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Whether `needle` appears in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `peermsg listen --e2e --json` as `user` at `addr`, its keys in `keys`, files into `dir`,
/// once it is ready; the lines it prints.
pub fn listen_sealed(
    addr: &str,
    user: &str,
    dir: &std::path::Path,
    keys: &std::path::Path,
) -> (Killed, Lines) {
    let mut child = bin()
        .args([
            "listen", "--json", "--e2e", "--server", addr, "--user", user,
        ])
        .arg("--dir")
        .arg(dir)
        .arg("--keys")
        .arg(keys)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut child);
    lines.until(|v| v["event"] == "ready");
    (Killed(child), lines)
}
