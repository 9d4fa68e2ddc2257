//! The program as users run it: `peermsg relay`, `peermsg listen --dir` and `peermsg send
//! --file` as three processes moving a file disk to disk, beside the plainest thing a
//! person could write instead, in the same run: a copy relay of three processes with std
//! threads and blocking sockets (the sender reads the file and writes a socket, the relay
//! copies socket to socket, the receiver writes the file; 256 KiB buffers; no framing, no
//! checks). For each: wall time, and CPU seconds of each process (from /proc), medians of
//! the rounds, and the ratios.
//!
//! ```sh
//! cargo build --release -p peermsg-cli -p peermsg-bench
//! target/release/progbench            # 1 GiB, 5 rounds
//! target/release/progbench 256 3      # 256 MiB, 3 rounds
//! ```
//!
//! The `peermsg` binary is taken from beside this one (build both in one command), or from
//! `PEERMSG_BIN`.
//! (NATS as a third peer, as the performance issue asks, is not measured here yet.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BUF: usize = 256 * 1024;

/// CPU seconds a live process has used so far (user and system), from /proc.
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    cpu_fields(&stat, 13)
}

/// CPU seconds this process's waited-for children have used (cutime and cstime).
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    cpu_fields(&stat, 15)
}

/// The two tick counts from field `at` on (fields counted after the command name) of a
/// /proc stat line, in seconds.
fn cpu_fields(stat: &str, at: usize) -> f64 {
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // Fields after the name start at 3 (state); utime is 14, stime 15, cutime 16, cstime 17.
    let index = at - 2;
    let ticks =
        fields.get(index).copied().unwrap_or(0) + fields.get(index + 1).copied().unwrap_or(0);
    ticks as f64 / clock_ticks()
}

/// Clock ticks per second (`getconf CLK_TCK`).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What one path cost: wall seconds, and CPU seconds of sender, relay, receiver.
#[derive(Clone, Copy, Debug)]
struct Cost {
    wall: f64,
    sender: f64,
    relay: f64,
    receiver: f64,
}

impl Cost {
    fn cpu(&self) -> f64 {
        self.sender + self.relay + self.receiver
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `child` prints a line containing `word`.
fn wait_for(child: &mut Child, word: &str) {
    let out = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(out).lines();
    for line in lines.by_ref() {
        if line.map(|l| l.contains(word)).unwrap_or(false) {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
}

/// The file through `peermsg relay`, `listen --dir` and `send --file`.
fn peermsg(bin: &Path, file: &Path, dir: &Path) -> Cost {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut relay = Command::new(bin)
        .args(["relay", "--listen", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&mut relay, "relay listening");
    let relay = Killed(relay);
    let mut listen = Command::new(bin)
        .args([
            "listen", "--server", &addr, "--user", "bob", "--json", "--dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&mut listen, "ready");
    let listen = Killed(listen);
    let before = children_cpu();
    let started = Instant::now();
    let sent = Command::new(bin)
        .args([
            "send", "--server", &addr, "--user", "alice", "--to", "bob", "--file",
        ])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    assert!(sent.success(), "the file was delivered");
    let cost = Cost {
        wall,
        sender: children_cpu() - before,
        relay: cpu_of(relay.0.id()),
        receiver: cpu_of(listen.0.id()),
    };
    drop((relay, listen));
    for f in std::fs::read_dir(dir).unwrap() {
        let _ = std::fs::remove_file(f.unwrap().path());
    }
    cost
}

/// The file through the copy relay: three processes of this program.
fn copy(me: &Path, file: &Path, dir: &Path) -> Cost {
    let port = free_port();
    let mut relay = Command::new(me)
        .args(["copy-relay", &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&mut relay, "listening");
    let relay = Killed(relay);
    let out = dir.join("copy.bin");
    let mut receiver = Command::new(me)
        .args(["copy-receive", &port.to_string()])
        .arg(&out)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&mut receiver, "connected");
    let before = children_cpu();
    let started = Instant::now();
    let sent = Command::new(me)
        .args(["copy-send", &port.to_string()])
        .arg(file)
        .status()
        .unwrap();
    assert!(sent.success());
    // Done when the receiver has written the last byte and exited.
    let received = receiver.wait().unwrap();
    let wall = started.elapsed().as_secs_f64();
    assert!(received.success());
    let children = children_cpu() - before;
    let relay_cpu = cpu_of(relay.0.id());
    drop(relay);
    let _ = std::fs::remove_file(&out);
    // The sender's and receiver's CPU come together (both waited for here): split evenly
    // would be a guess, so the receiver's is what is left after the sender's own run.
    Cost {
        wall,
        sender: children,
        relay: relay_cpu,
        receiver: 0.0,
    }
}

fn copy_relay(port: &str) {
    let listener = TcpListener::bind(format!("127.0.0.1:{port}")).unwrap();
    println!("listening");
    std::io::stdout().flush().unwrap();
    // The receiver connects first, then the sender.
    let (mut to, _) = listener.accept().unwrap();
    let (mut from, _) = listener.accept().unwrap();
    let mut buf = vec![0u8; BUF];
    loop {
        let n = from.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).unwrap();
    }
    to.shutdown(std::net::Shutdown::Write).unwrap();
    // Wait to be killed (the harness reads its CPU first).
    std::thread::sleep(Duration::from_secs(3600));
}

fn copy_receive(port: &str, out: &Path) {
    let mut from = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    println!("connected");
    std::io::stdout().flush().unwrap();
    let mut file = std::fs::File::create(out).unwrap();
    let mut buf = vec![0u8; BUF];
    loop {
        let n = from.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).unwrap();
    }
    file.flush().unwrap();
}

fn copy_send(port: &str, path: &Path) {
    let mut to = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    let mut file = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; BUF];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).unwrap();
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match arg(1) {
        Some("copy-relay") => return copy_relay(arg(2).unwrap()),
        Some("copy-receive") => return copy_receive(arg(2).unwrap(), Path::new(arg(3).unwrap())),
        Some("copy-send") => return copy_send(arg(2).unwrap(), Path::new(arg(3).unwrap())),
        _ => {}
    }
    let mib: u64 = arg(1).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let rounds: usize = arg(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let me = std::env::current_exe().unwrap();
    // PEERMSG_BIN measures another build (an older one, say) against the same copy relay.
    let bin: PathBuf = std::env::var_os("PEERMSG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| me.with_file_name("peermsg"));
    if !bin.exists() {
        eprintln!(
            "no {} beside this program: build both with `cargo build --release -p peermsg-cli -p peermsg-bench`",
            bin.display()
        );
        std::process::exit(2);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.bin");
    {
        let mut f = std::fs::File::create(&file).unwrap();
        let chunk: Vec<u8> = (0..BUF).map(|i| (i * 31 % 251) as u8).collect();
        for _ in 0..(mib << 20) / BUF as u64 {
            f.write_all(&chunk).unwrap();
        }
    }
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    println!("{mib} MiB file, disk to disk, {rounds} rounds, alternated\n");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let p = peermsg(&bin, &file, &inbox);
        let c = copy(&me, &file, &inbox);
        println!(
            "round {round}: peermsg {:.2} s (cpu {:.2}: send {:.2}, relay {:.2}, listen {:.2}); copy relay {:.2} s (cpu {:.2}: send+receive {:.2}, relay {:.2})",
            p.wall, p.cpu(), p.sender, p.relay, p.receiver, c.wall, c.cpu(), c.sender, c.relay
        );
        ours.push(p);
        theirs.push(c);
    }
    let per_gib = 1024.0 / mib as f64;
    let med = |xs: &[Cost], f: fn(&Cost) -> f64| median(xs.iter().map(f).collect());
    let (pw, cw) = (med(&ours, |c| c.wall), med(&theirs, |c| c.wall));
    let (pc, cc) = (med(&ours, Cost::cpu), med(&theirs, Cost::cpu));
    println!("\nmedians              wall s    CPU s/GiB (all three processes)");
    println!("peermsg program      {pw:7.2}    {:7.2}", pc * per_gib);
    println!("plain copy relay     {cw:7.2}    {:7.2}", cc * per_gib);
    println!("ratio                {:7.2}    {:7.2}", pw / cw, pc / cc);
    println!(
        "peermsg by process (CPU s/GiB): send {:.2}, relay {:.2}, listen {:.2}",
        med(&ours, |c| c.sender) * per_gib,
        med(&ours, |c| c.relay) * per_gib,
        med(&ours, |c| c.receiver) * per_gib
    );
}
