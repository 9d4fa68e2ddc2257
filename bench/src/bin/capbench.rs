//! A relay's capacity, as an operator would weigh it: many connected users, some sending
//! commands and some sending files at once, through one `peermsg relay` process, against
//! nats-server carrying the same load in the same run.
//!
//! ```sh
//! cargo build --release -p peermsg-cli -p peermsg-bench
//! target/release/capbench                 # 10,000 users, 1,000 sending commands, 100 files, 10 s
//! target/release/capbench quick           # 2,000 users, 200 commands, 20 files, 5 s
//! target/release/capbench files-only      # the same without command senders: files alone
//! ```
//!
//! For each: every user connects and logs in (peermsg: `peermsg_tokio::connect`; NATS: one
//! `async_nats` client each); the server's resident memory per connection is read once all
//! are idle. Then for the run's seconds, each command sender sends 64-byte commands to a
//! user of its own, one at a time, each awaited for its result (NATS: a request and its
//! reply); each file sender sends 4 MiB files to a user of its own, one after the other,
//! each to the receiver's disk with its result (NATS: `peermsg_bench::nats_file`, acknowledged
//! every 4 MiB). Reported: commands/s with results, their p50 and p99 latency, file bytes/s,
//! the server's CPU, its memory per idle connection and at the end of the load. The load
//! itself runs in this process on the same two cores: the same for both servers.
//!
//! The `peermsg` binary is taken from beside this one, or from `PEERMSG_BIN`. With `--rows`
//! it prints its figures for `benchall`. Past the open-file limit it says so and stops.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use peermsg_bench::{cpu_of, free_port, nats_file, report, wait_for, Killed, NatsServer, Row};

/// The load: users connected, how many send commands, how many send files, for how long.
#[derive(Clone, Copy, Debug)]
struct Load {
    users: usize,
    commanders: usize,
    filers: usize,
    seconds: u64,
}

/// Bytes in each file sent.
const FILE_SIZE: usize = 4 << 20;

/// Connections opened at once while users log in.
const CONNECTING: usize = 256;

/// What one server did under the load.
#[derive(Debug, Default)]
struct Outcome {
    /// Resident memory per idle connection, bytes.
    rss_per_conn: f64,
    /// Resident memory at the end of the load, MiB.
    rss_loaded: f64,
    cmds_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    file_bytes_per_s: f64,
    /// The server's CPU seconds per second of load.
    cpu: f64,
    failures: u64,
}

/// Resident memory of process `pid`, bytes (VmRSS).
fn rss(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib * 1024.0)
}

/// This process's limit on open files.
fn open_file_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1024)
}

/// Latencies (µs), the failures, and the file bytes delivered, gathered by the senders.
#[derive(Default)]
struct Tally {
    latencies: Mutex<Vec<u32>>,
    failures: AtomicU64,
    file_bytes: AtomicU64,
}

impl Tally {
    fn outcome(&self, elapsed: f64) -> Outcome {
        let mut l = self.latencies.lock().unwrap().clone();
        l.sort_unstable();
        let at = |q: f64| l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)));
        Outcome {
            cmds_per_s: l.len() as f64 / elapsed,
            p50_ms: at(0.50).map_or(f64::NAN, |&u| u as f64 / 1000.0),
            p99_ms: at(0.99).map_or(f64::NAN, |&u| u as f64 / 1000.0),
            file_bytes_per_s: self.file_bytes.load(Ordering::Relaxed) as f64 / elapsed,
            failures: self.failures.load(Ordering::Relaxed),
            ..Outcome::default()
        }
    }
}

/// The load's measured seconds on the server `pid`: opened once every user is connected
/// (its memory per connection read then), closed when the senders' tasks end.
struct Window {
    pid: u32,
    rss_per_conn: f64,
    tally: Arc<Tally>,
    cpu_before: f64,
    started: Instant,
    until: Instant,
}

impl Window {
    /// After a second of rest, `base` being the server's memory before the users came.
    async fn open(pid: u32, base: f64, load: &Load) -> Window {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_per_conn = (rss(pid) - base) / load.users as f64;
        let started = Instant::now();
        Window {
            pid,
            rss_per_conn,
            tally: Arc::new(Tally::default()),
            cpu_before: cpu_of(pid),
            started,
            until: started + Duration::from_secs(load.seconds),
        }
    }

    /// Waits for `tasks` and gives what the server did meanwhile.
    async fn close(self, tasks: Vec<tokio::task::JoinHandle<()>>) -> Outcome {
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        let mut outcome = self.tally.outcome(elapsed);
        outcome.cpu = (cpu_of(self.pid) - self.cpu_before) / elapsed;
        outcome.rss_loaded = rss(self.pid) / (1 << 20) as f64;
        outcome.rss_per_conn = self.rss_per_conn;
        outcome
    }
}

/// Who sends to whom: command sender `i` to user `users/2 + i`, file sender `i` (users
/// `commanders + i`) to user `users/2 + commanders + i`.
fn command_pair(load: &Load, i: usize) -> (usize, usize) {
    (i, load.users / 2 + i)
}

fn file_pair(load: &Load, i: usize) -> (usize, usize) {
    (load.commanders + i, load.users / 2 + load.commanders + i)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The load through `peermsg relay`.
fn peermsg(bin: &Path, load: &Load, file: &Path, inbox: &Path) -> Outcome {
    use peermsg_tokio::{connect, ClientConfig, ClientEvent, ClientHandle};
    let addr = format!("127.0.0.1:{}", free_port());
    let cap = (load.users + 1000).to_string();
    let mut relay = std::process::Command::new(bin)
        .args(["relay", "--listen", &addr, "--max-connections", &cap])
        .args(["--max-connections-per-ip", &cap])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("peermsg relay starts");
    wait_for(&mut relay, "relay listening");
    let relay = Killed(relay);
    let pid = relay.0.id();
    let rt = runtime();
    rt.block_on(async {
        let base = rss(pid);
        let receivers_of_files: Vec<usize> =
            (0..load.filers).map(|i| file_pair(load, i).1).collect();
        let clients: Vec<ClientHandle> = futures::stream::iter(0..load.users)
            .map(|i| {
                let dir = receivers_of_files
                    .contains(&i)
                    .then(|| inbox.join(format!("u{i}")));
                let addr = addr.clone();
                async move {
                    if let Some(dir) = &dir {
                        std::fs::create_dir_all(dir).unwrap();
                    }
                    let config = ClientConfig::default();
                    let (handle, mut events) =
                        connect(&addr, &format!("u{i}"), b"", config, dir.as_deref())
                            .await
                            .unwrap_or_else(|e| panic!("user {i} connects: {e}"));
                    // Events are taken as they come (a command is confirmed once taken); a
                    // file kept is removed at once.
                    tokio::spawn(async move {
                        while let Some(event) = events.recv().await {
                            if let ClientEvent::FileReceived { tmp_file, .. } = event {
                                let _ = std::fs::remove_file(tmp_file);
                            }
                        }
                    });
                    handle
                }
            })
            .buffered(CONNECTING)
            .collect()
            .await;
        let window = Window::open(pid, base, load).await;
        let (tally, until) = (window.tally.clone(), window.until);
        let mut tasks = Vec::new();
        for i in 0..load.commanders {
            let (from, to) = command_pair(load, i);
            let (client, tally) = (clients[from].clone(), tally.clone());
            tasks.push(tokio::spawn(async move {
                let to = format!("u{to}");
                let data = Bytes::from_static(&[7u8; 64]);
                while Instant::now() < until {
                    let sent = Instant::now();
                    let code = match client.send_cmd(&to, data.clone(), 0).await {
                        Ok(handle) => handle.await,
                        Err(_) => peermsg::ErrorCode::SENDFAIL,
                    };
                    match code.is_success() {
                        true => tally
                            .latencies
                            .lock()
                            .unwrap()
                            .push(sent.elapsed().as_micros() as u32),
                        false => _ = tally.failures.fetch_add(1, Ordering::Relaxed),
                    }
                }
            }));
        }
        for i in 0..load.filers {
            let (from, to) = file_pair(load, i);
            let (client, tally, file) = (clients[from].clone(), tally.clone(), file.to_path_buf());
            tasks.push(tokio::spawn(async move {
                let to = format!("u{to}");
                let mut n = 0u64;
                while Instant::now() < until {
                    n += 1;
                    // A key of its own each time: a repeat of a file kept is only confirmed.
                    let mut key = [0u8; 16];
                    key[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    key[8..].copy_from_slice(&n.to_be_bytes());
                    let key = peermsg::wire::ResumeKey(key);
                    let code = match client.send_file_with_key(&to, &file, key, 0).await {
                        Ok(handle) => handle.await,
                        Err(_) => peermsg::ErrorCode::SENDFAIL,
                    };
                    match code.is_success() {
                        true => {
                            _ = tally
                                .file_bytes
                                .fetch_add(FILE_SIZE as u64, Ordering::Relaxed)
                        }
                        false => _ = tally.failures.fetch_add(1, Ordering::Relaxed),
                    }
                }
            }));
        }
        let outcome = window.close(tasks).await;
        drop(clients);
        outcome
    })
}

/// The same load through nats-server: commands as requests answered by their receiver,
/// files by `nats_file`.
fn nats(load: &Load, file: &Path, inbox: &Path) -> Option<Outcome> {
    let server = NatsServer::start()?;
    let pid = server.process.0.id();
    let rt = runtime();
    Some(rt.block_on(async {
        let base = rss(pid);
        let url = server.url.clone();
        let clients: Vec<async_nats::Client> = futures::stream::iter(0..load.users)
            .map(|i| {
                let url = url.clone();
                async move {
                    async_nats::ConnectOptions::new()
                        .name(format!("u{i}"))
                        .connect(url.as_str())
                        .await
                        .unwrap_or_else(|e| panic!("user {i} connects to NATS: {e}"))
                }
            })
            .buffered(CONNECTING)
            .collect()
            .await;
        // Receivers: commands answered as they come; files written to disk and removed.
        for i in 0..load.commanders {
            let to = command_pair(load, i).1;
            let client = clients[to].clone();
            let mut requests = client.subscribe(format!("cmd.{to}")).await.unwrap();
            tokio::spawn(async move {
                while let Some(request) = requests.next().await {
                    if let Some(reply) = request.reply {
                        let _ = client.publish(reply, Bytes::new()).await;
                    }
                }
            });
        }
        for i in 0..load.filers {
            let to = file_pair(load, i).1;
            let client = clients[to].clone();
            let mut data = client.subscribe(format!("file.{to}")).await.unwrap();
            let path = inbox.join(format!("nats-{to}"));
            tokio::spawn(async move {
                loop {
                    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
                    let ack = format!("ack.{to}");
                    if nats_file::receive(&client, &mut data, &ack, &mut out)
                        .await
                        .is_none()
                    {
                        return;
                    }
                    let _ = std::fs::remove_file(&path);
                }
            });
        }
        for c in &clients {
            c.flush().await.unwrap();
        }
        let window = Window::open(pid, base, load).await;
        let (tally, until) = (window.tally.clone(), window.until);
        let mut tasks = Vec::new();
        for i in 0..load.commanders {
            let (from, to) = command_pair(load, i);
            let (client, tally) = (clients[from].clone(), tally.clone());
            tasks.push(tokio::spawn(async move {
                let subject = format!("cmd.{to}");
                let data = Bytes::from_static(&[7u8; 64]);
                while Instant::now() < until {
                    let sent = Instant::now();
                    match client.request(subject.clone(), data.clone()).await {
                        Ok(_) => tally
                            .latencies
                            .lock()
                            .unwrap()
                            .push(sent.elapsed().as_micros() as u32),
                        Err(_) => _ = tally.failures.fetch_add(1, Ordering::Relaxed),
                    }
                }
            }));
        }
        for i in 0..load.filers {
            let (from, to) = file_pair(load, i);
            let (client, tally, file) = (clients[from].clone(), tally.clone(), file.to_path_buf());
            tasks.push(tokio::spawn(async move {
                let mut acks = client.subscribe(format!("ack.{to}")).await.unwrap();
                client.flush().await.unwrap();
                let data = format!("file.{to}");
                while Instant::now() < until {
                    let source = std::fs::File::open(&file).unwrap();
                    let sent = nats_file::send(&client, &data, &mut acks, source).await;
                    tally.file_bytes.fetch_add(sent, Ordering::Relaxed);
                }
            }));
        }
        let outcome = window.close(tasks).await;
        drop(clients);
        outcome
    }))
}

/// A figure of an [`Outcome`]: its name, unit, value and target.
type Figure = (
    &'static str,
    &'static str,
    fn(&Outcome) -> f64,
    &'static str,
);

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let mut load = match quick {
        true => Load {
            users: 2000,
            commanders: 200,
            filers: 20,
            seconds: 5,
        },
        false => Load {
            users: 10_000,
            commanders: 1000,
            filers: 100,
            seconds: 10,
        },
    };
    // Files alone: what the file figure is when no command takes the cores.
    if std::env::args().any(|a| a == "files-only") {
        load.commanders = 0;
    }
    // Each process holds one socket per user, and a little more.
    let limit = open_file_limit();
    if load.users + 256 > limit {
        eprintln!(
            "{} open files allowed (ulimit -n): {} users cannot connect; raise the limit",
            limit, load.users
        );
        std::process::exit(2);
    }
    let me = std::env::current_exe().unwrap();
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
    // Files sent and kept live in memory (/dev/shm where there is one): the disk is not
    // what is measured.
    let shm = Path::new("/dev/shm");
    let dir = match shm.is_dir() {
        true => tempfile::tempdir_in(shm),
        false => tempfile::tempdir(),
    }
    .unwrap();
    let file = dir.path().join("file.bin");
    let content: Vec<u8> = (0..FILE_SIZE).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&file, content).unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    load.filers = load.filers.min(load.users / 2 - load.commanders);
    eprintln!(
        "{} users, {} sending commands and {} sending {} MiB files, {} s",
        load.users,
        load.commanders,
        load.filers,
        FILE_SIZE >> 20,
        load.seconds
    );
    let ours = peermsg(&bin, &load, &file, &inbox);
    eprintln!("  peermsg relay: {ours:?}");
    let theirs = nats(&load, &file, &inbox);
    match &theirs {
        Some(n) => eprintln!("  nats-server:   {n:?}"),
        None => eprintln!("{}", peermsg_bench::NATS_MISSING),
    }
    let row = |name: &str, unit: &str, v: f64| Row::of(name.to_string(), unit, vec![v]);
    let mut rows = Vec::new();
    let figures: [Figure; 7] = [
        ("commands with results", "cmd/s", |o| o.cmds_per_s, "≥ 3×"),
        ("command latency p50", "ms", |o| o.p50_ms, ""),
        ("command latency p99", "ms", |o| o.p99_ms, ""),
        (
            "file bytes delivered",
            "MB/s",
            |o| o.file_bytes_per_s / 1e6,
            "",
        ),
        ("server CPU", "CPU s/s", |o| o.cpu, ""),
        (
            "server memory per idle connection",
            "KiB",
            |o| o.rss_per_conn / 1024.0,
            "",
        ),
        ("server memory under the load", "MiB", |o| o.rss_loaded, ""),
    ];
    let users = load.users;
    for (name, unit, value, target) in figures {
        let ours_row = row(
            &format!("capacity ({users} users): relay, {name}"),
            unit,
            value(&ours),
        );
        match &theirs {
            Some(n) => {
                let base = row(
                    &format!("capacity ({users} users): nats-server, {name}"),
                    unit,
                    value(n),
                );
                rows.push(ours_row.against(&base).target(target));
                rows.push(base);
            }
            None => rows.push(ours_row),
        }
    }
    rows.push(row(
        &format!("capacity ({users} users): relay, sends that failed"),
        "sends",
        ours.failures as f64,
    ));
    report(&rows);
}
