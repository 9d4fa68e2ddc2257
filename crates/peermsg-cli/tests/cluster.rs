//! Several relays over NATS, as they run: a nats-server and three `peermsg relay --cluster`
//! processes started here, users spread across them (the tokio client), relays killed
//! and the nats-server restarted. They need nats-server (`apt-get install nats-server`):
//! without it each returns at once and one line says so, unless `PEERMSG_REQUIRE_NATS` is
//! set (`.ci/run` installs nats-server and sets it), when they fail.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{bin, get, listen_sealed, port, spawn_relay_at, value, Killed};
use peermsg_tokio::{
    connect, connect_with, ClientConfig, ClientEvent, ClientEvents, ClientHandle, ErrorCode, Event,
    Reconnect, SendHandle, Server,
};

/// Whether nats-server is here to run a test with. Where it is missing the test returns
/// at once and one line (the first time) says so, written past the test harness's
/// capture; with `PEERMSG_REQUIRE_NATS` set, a missing nats-server fails the test.
fn nats_here() -> bool {
    if common::nats_program::nats_server_program().is_some() {
        return true;
    }
    if std::env::var_os("PEERMSG_REQUIRE_NATS").is_some() {
        panic!("nats-server is not installed (PEERMSG_REQUIRE_NATS is set): apt-get install nats-server");
    }
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: the cluster tests (nats-server is not installed: apt-get install nats-server)"
        );
    });
    false
}

fn nats_server_program() -> PathBuf {
    common::nats_program::nats_server_program()
        .expect("nats-server is not installed: apt-get install nats-server")
}

/// A nats-server on a loopback port, which can be stopped and started again there.
struct Nats {
    /// Its port, once it has one (the first start takes a free port of its own).
    port: Option<u16>,
    process: Option<Killed>,
    /// A configuration file, if any (`-c`).
    config: Option<tempfile::NamedTempFile>,
}

impl Nats {
    fn start() -> Nats {
        Nats::start_with("")
    }

    /// A nats-server with `config` (its configuration file's text).
    fn start_with(config: &str) -> Nats {
        let file = (!config.is_empty()).then(|| {
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), config).unwrap();
            file
        });
        let mut nats = Nats {
            port: None,
            process: None,
            config: file,
        };
        nats.up();
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port.expect("started"))
    }

    /// Starts the server: on a port the system picks the first time (`-p -1`, read from
    /// its log, so no test beside this one can take it first), on the same port after.
    fn up(&mut self) {
        let mut cmd = Command::new(nats_server_program());
        if let Some(file) = &self.config {
            cmd.arg("-c").arg(file.path());
        }
        let port = self.port.map_or("-1".to_string(), |p| p.to_string());
        let mut child = cmd
            .args(["-a", "127.0.0.1", "-p", &port])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server starts");
        let log = child.stderr.take().unwrap();
        self.process = Some(Killed(child));
        let (said, heard) = std::sync::mpsc::channel();
        // Its log is read to its end: a server whose stderr closed would die on its
        // next line.
        std::thread::spawn(move || {
            use std::io::BufRead;
            const LISTENING: &str = "Listening for client connections on ";
            for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
                if let Some(at) = line.split(LISTENING).nth(1) {
                    let _ = said.send(at.rsplit(':').next().and_then(|p| p.parse().ok()));
                }
            }
        });
        let port = heard
            .recv_timeout(Duration::from_secs(10))
            .ok()
            .flatten()
            .expect("nats-server did not start");
        self.port = Some(port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn down(&mut self) {
        self.process = None;
    }
}

/// A relay of the cluster, by name, on a port of its own.
fn relay(nats: &Nats, node: &str) -> (Killed, String) {
    relay_with(nats, node, &[])
}

/// [`relay`] with `extra` arguments.
fn relay_with(nats: &Nats, node: &str, extra: &[&str]) -> (Killed, String) {
    let mut cmd = bin();
    let url = nats.url();
    cmd.args([
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--cluster",
        &url,
        "--node",
        node,
    ]);
    cmd.args(extra);
    spawn_relay_at(cmd)
}

struct Cluster {
    nats: Nats,
    relays: Vec<(Killed, String)>,
}

fn cluster(n: usize) -> Cluster {
    let nats = Nats::start();
    let relays = (0..n).map(|i| relay(&nats, &format!("r{i}"))).collect();
    Cluster { nats, relays }
}

impl Cluster {
    fn addr(&self, i: usize) -> &str {
        &self.relays[i].1
    }
}

struct User {
    name: String,
    handle: ClientHandle,
    events: ClientEvents,
    /// Where its files go (kept while the user lives).
    _dir: tempfile::TempDir,
}

async fn user_with(addr: &str, name: &str, config: ClientConfig) -> User {
    let dir = tempfile::tempdir().unwrap();
    let (handle, events) = connect(addr, name, b"", config, Some(dir.path()))
        .await
        .unwrap();
    User {
        name: name.to_string(),
        handle,
        events,
        _dir: dir,
    }
}

async fn user(addr: &str, name: &str) -> User {
    user_with(addr, name, ClientConfig::default()).await
}

fn content(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What a user received, by sender.
#[derive(Default)]
struct Received {
    cmds: HashMap<String, Vec<Bytes>>,
    buffers: HashMap<String, Vec<Bytes>>,
    files: HashMap<String, Vec<Vec<u8>>>,
    failed: Vec<ErrorCode>,
    closed: Option<ErrorCode>,
}

/// Sizes, not contents: a failure message stays readable.
impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes = |m: &HashMap<String, Vec<Bytes>>| -> Vec<(String, Vec<usize>)> {
            m.iter()
                .map(|(k, v)| (k.clone(), v.iter().map(Bytes::len).collect()))
                .collect()
        };
        let files: Vec<(String, Vec<usize>)> = self
            .files
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(Vec::len).collect()))
            .collect();
        f.debug_struct("Received")
            .field("cmds", &sizes(&self.cmds))
            .field("buffers", &sizes(&self.buffers))
            .field("files", &files)
            .field("failed", &self.failed)
            .field("closed", &self.closed)
            .finish()
    }
}

impl Received {
    fn take(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Core(Event::CmdReceived { from, data, .. }) => {
                self.cmds.entry(from.to_string()).or_default().push(data)
            }
            ClientEvent::Core(Event::BufferReceived { from, data, .. }) => {
                self.buffers.entry(from.to_string()).or_default().push(data)
            }
            ClientEvent::FileReceived { from, tmp_file, .. } => self
                .files
                .entry(from.to_string())
                .or_default()
                .push(std::fs::read(tmp_file).unwrap()),
            ClientEvent::Core(Event::ReceiveFailed { code, .. }) => self.failed.push(code),
            ClientEvent::Core(Event::Closed { code, .. }) => self.closed = Some(code),
            _ => {}
        }
    }

    fn count(&self) -> usize {
        let n = |m: &HashMap<String, Vec<Bytes>>| m.values().map(Vec::len).sum::<usize>();
        n(&self.cmds) + n(&self.buffers) + self.files.values().map(Vec::len).sum::<usize>()
    }
}

/// Takes `user`'s events until `done` holds (or 60 s pass).
async fn receive_until(
    events: &mut ClientEvents,
    got: &mut Received,
    done: impl Fn(&Received) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done(got) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => got.take(event),
            Ok(None) => break,
            Err(_) => panic!("timed out; got {got:?}"),
        }
    }
}

/// A 32 MiB buffer from `from` to `to`, once its receiver has taken some of it (a
/// receiver that reads nothing holds the rest at its window: it stays under way).
async fn buffer_under_way(from: &User, to: &str, seed: u64) -> SendHandle {
    let send = from
        .handle
        .send_buffer(to, content(32 << 20, seed), 0)
        .await
        .unwrap();
    let mut progress = send.progress();
    tokio::time::timeout(Duration::from_secs(20), async {
        while progress.borrow().sent == 0 {
            progress.changed().await.unwrap();
        }
    })
    .await
    .expect("the send starts");
    send
}

/// `from`'s command to `to`: its result.
async fn command(from: &User, to: &str, data: Bytes) -> ErrorCode {
    from.handle.send_cmd(to, data, 0).await.unwrap().await
}

/// A command from `from` to a user on no relay is answered `OFFLINE` within `limit`.
async fn offline_within(from: &User, limit: Duration) {
    let started = Instant::now();
    assert_eq!(
        command(from, "nobody", Bytes::from_static(b"x")).await,
        ErrorCode::OFFLINE
    );
    assert!(started.elapsed() < limit, "{:?}", started.elapsed());
}

/// Sends `data` from `from` to `to` as a command until it is delivered, within `limit`;
/// every failure on the way must be one of `expected`.
async fn deliver_retrying(
    from: &User,
    to: &str,
    data: &'static [u8],
    limit: Duration,
    expected: &[ErrorCode],
) {
    let deadline = Instant::now() + limit;
    loop {
        let code = command(from, to, Bytes::from_static(data)).await;
        if code == ErrorCode::NOERR {
            return;
        }
        assert!(expected.contains(&code), "{code}");
        assert!(
            Instant::now() < deadline,
            "not delivered within {limit:?}: {code}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pair_across_three_relays_exchanges_commands_buffers_and_files() {
    if !nats_here() {
        return;
    }
    let c = cluster(3);
    let names = ["ann", "ben", "cat", "dan", "eve", "fay"];
    let mut users = Vec::new();
    for (i, name) in names.iter().enumerate() {
        users.push(user(c.addr(i % 3), name).await);
    }
    let files = tempfile::tempdir().unwrap();
    let mut sends = Vec::new();
    for (s, from) in users.iter().enumerate() {
        for (r, to) in names.iter().enumerate() {
            if s == r {
                continue;
            }
            let seed = (s * 10 + r) as u64;
            let h = &from.handle;
            let cmd = Bytes::from(format!("{}->{to}", from.name));
            sends.push(h.send_cmd(to, cmd, 0).await.unwrap());
            let buffer = content(200_000 + r, seed);
            sends.push(h.send_buffer(to, buffer, 0).await.unwrap());
            let file = write_file(
                files.path(),
                &format!("{s}-{r}.bin"),
                &content(1 << 20, seed + 50),
            );
            sends.push(h.send_file(to, &file, 0).await.unwrap());
        }
    }
    // Receivers read while the senders wait.
    let mut received = Vec::new();
    for u in users.iter_mut() {
        let mut got = Received::default();
        receive_until(&mut u.events, &mut got, |g| g.count() == 15).await;
        received.push(got);
    }
    for send in sends {
        assert_eq!(send.await, ErrorCode::NOERR);
    }
    for (r, got) in received.iter().enumerate() {
        for (s, from) in names.iter().enumerate() {
            if s == r {
                continue;
            }
            let seed = (s * 10 + r) as u64;
            let want = Bytes::from(format!("{from}->{}", names[r]));
            assert_eq!(got.cmds[*from], vec![want], "{from} to {}", names[r]);
            assert_eq!(got.buffers[*from], vec![content(200_000 + r, seed)]);
            assert_eq!(got.files[*from], vec![content(1 << 20, seed + 50).to_vec()]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_far_larger_than_the_servers_max_payload_cross() {
    if !nats_here() {
        return;
    }
    // 4 KiB messages at most: every frame of a file spans many.
    let nats = Nats::start_with("max_payload: 4096\n");
    let relays: Vec<_> = ["p0", "p1"].iter().map(|n| relay(&nats, n)).collect();
    let ann = user(&relays[0].1, "ann").await;
    let mut cat = user(&relays[1].1, "cat").await;
    let files = tempfile::tempdir().unwrap();
    let file = write_file(files.path(), "big.bin", &content(3 << 20, 7));
    let cmd = content(60_000, 8);
    let sends = [
        ann.handle.send_cmd("cat", cmd.clone(), 0).await.unwrap(),
        ann.handle
            .send_buffer("cat", content(2 << 20, 9), 0)
            .await
            .unwrap(),
        ann.handle.send_file("cat", &file, 0).await.unwrap(),
    ];
    let mut got = Received::default();
    receive_until(&mut cat.events, &mut got, |g| g.count() == 3).await;
    for send in sends {
        assert_eq!(send.await, ErrorCode::NOERR);
    }
    assert_eq!(got.cmds["ann"], vec![cmd]);
    assert_eq!(got.buffers["ann"], vec![content(2 << 20, 9)]);
    assert_eq!(got.files["ann"], vec![content(3 << 20, 7).to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_on_two_clustered_nats_servers_find_users_right_after_login() {
    if !nats_here() {
        return;
    }
    let (route_a, route_b) = (port(), port());
    let conf = |me: u16, other: u16| {
        format!("cluster {{\n  name: pm\n  listen: 127.0.0.1:{me}\n  routes: [nats://127.0.0.1:{other}]\n}}\n")
    };
    let a = Nats::start_with(&conf(route_a, route_b));
    let b = Nats::start_with(&conf(route_b, route_a));
    let (_r0, at_a) = relay(&a, "on-a");
    let (_r1, at_b) = relay(&b, "on-b");
    let ann = user(&at_a, "ann").await;
    let _cat = user(&at_b, "cat").await;
    // The servers' route forms within moments.
    deliver_retrying(
        &ann,
        "cat",
        b"first",
        Duration::from_secs(10),
        &[ErrorCode::OFFLINE],
    )
    .await;
    // Each user logged in on the other server is found at once.
    for i in 0..20 {
        let name = format!("u{i}");
        let _u = user(&at_b, &name).await;
        assert_eq!(
            command(&ann, &name, Bytes::from_static(b"hi")).await,
            ErrorCode::NOERR,
            "{name}"
        );
    }
    // Nobody has this one: still 603 within the moment the servers are given (300 ms).
    offline_within(&ann, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_on_no_relay_is_offline_at_once() {
    if !nats_here() {
        return;
    }
    let c = cluster(2);
    let ann = user(c.addr(0), "ann").await;
    // NATS's "no responders", not a timeout (the search timeout is 2 s).
    offline_within(&ann, Duration::from_millis(1500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_crosses_relays() {
    if !nats_here() {
        return;
    }
    let c = cluster(2);
    let ann = user(c.addr(0), "ann").await;
    // cat takes nothing: the buffer stops at its window, under way.
    let mut cat = user(c.addr(1), "cat").await;
    let send = buffer_under_way(&ann, "cat", 1).await;
    assert_eq!(send.cancel(), ErrorCode::NOERR);
    let code = tokio::time::timeout(Duration::from_secs(20), send)
        .await
        .unwrap();
    assert_eq!(code, ErrorCode::CANCELLED);
    let mut got = Received::default();
    receive_until(&mut cat.events, &mut got, |g| !g.failed.is_empty()).await;
    assert_eq!(got.failed, vec![ErrorCode::CANCELLED]);
    assert!(got.buffers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_at_its_caps_takes_senders_on_other_relays_in_order() {
    if !nats_here() {
        return;
    }
    let c = cluster(3);
    let narrow = ClientConfig {
        max_cmds_in_flight: 2,
        max_transfers: 1,
        ..ClientConfig::default()
    };
    let mut cat = user_with(c.addr(0), "cat", narrow).await;
    let senders = [user(c.addr(1), "ann").await, user(c.addr(2), "ben").await];
    let mut sends = Vec::new();
    for i in 0..60 {
        for s in &senders {
            let data = Bytes::from(format!("{}:{i:03}", s.name));
            sends.push(s.handle.send_cmd("cat", data, 0).await.unwrap());
        }
    }
    for s in &senders {
        for i in 0..3 {
            sends.push(
                s.handle
                    .send_buffer("cat", content(300_000, i), 0)
                    .await
                    .unwrap(),
            );
        }
    }
    // cat reads only now: everything waited within its caps, nothing was refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut got = Received::default();
    receive_until(&mut cat.events, &mut got, |g| g.count() == 126).await;
    for send in sends {
        assert_eq!(send.await, ErrorCode::NOERR);
    }
    for s in &senders {
        let want: Vec<Bytes> = (0..60)
            .map(|i| Bytes::from(format!("{}:{i:03}", s.name)))
            .collect();
        assert_eq!(got.cmds[&s.name], want, "order from {}", s.name);
        assert_eq!(got.buffers[&s.name].len(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_another_relay_replaces_the_old_session() {
    if !nats_here() {
        return;
    }
    let c = cluster(3);
    let mut old = user(c.addr(0), "cat").await;
    let ann = user(c.addr(2), "ann").await;
    assert_eq!(
        command(&ann, "cat", Bytes::from_static(b"one")).await,
        ErrorCode::NOERR
    );
    let mut new = user(c.addr(1), "cat").await;
    let mut got_old = Received::default();
    receive_until(&mut old.events, &mut got_old, |g| g.closed.is_some()).await;
    assert_eq!(got_old.closed, Some(ErrorCode::KICKOUT_BY_RELOGIN));
    // A link to the old relay may still be closing: a sender hears CONNECTIONLOST and
    // tries again; nothing reaches the old session.
    let lost = [ErrorCode::CONNECTIONLOST];
    deliver_retrying(&ann, "cat", b"two", Duration::from_secs(2), &lost).await;
    let mut got_new = Received::default();
    receive_until(&mut new.events, &mut got_new, |g| g.count() == 1).await;
    assert_eq!(got_new.cmds["ann"], vec![Bytes::from_static(b"two")]);
    assert_eq!(got_old.cmds["ann"], vec![Bytes::from_static(b"one")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_to_a_killed_relay_get_their_results_within_seconds() {
    if !nats_here() {
        return;
    }
    let mut c = cluster(2);
    let ann = user(c.addr(0), "ann").await;
    // cat reads nothing: the buffer stays under way until its relay dies.
    let _cat = user(c.addr(1), "cat").await;
    let send = buffer_under_way(&ann, "cat", 2).await;
    let killed = Instant::now();
    c.relays[1].0 .0.kill().unwrap();
    let code = tokio::time::timeout(Duration::from_secs(10), send)
        .await
        .expect("a result within 10 s");
    assert_eq!(code, ErrorCode::CONNECTIONLOST);
    // Heartbeats every 500 ms, dead after 2.5 s: within 3 s and a margin.
    eprintln!("the sender heard after {:?}", killed.elapsed());
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    // cat is offline everywhere now.
    assert_eq!(
        command(&ann, "cat", Bytes::from_static(b"x")).await,
        ErrorCode::OFFLINE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_from_a_killed_relay_hear_within_seconds() {
    if !nats_here() {
        return;
    }
    let mut c = cluster(2);
    let ann = user(c.addr(0), "ann").await;
    let mut cat = user(c.addr(1), "cat").await;
    let _send = buffer_under_way(&ann, "cat", 5).await;
    let killed = Instant::now();
    c.relays[0].0 .0.kill().unwrap();
    let mut got = Received::default();
    receive_until(&mut cat.events, &mut got, |g| !g.failed.is_empty()).await;
    eprintln!("the receiver heard after {:?}", killed.elapsed());
    assert_eq!(got.failed, vec![ErrorCode::CONNECTIONLOST]);
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    assert!(got.buffers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_moves_to_another_relay_when_its_relay_dies() {
    if !nats_here() {
        return;
    }
    let mut c = cluster(3);
    let ann = user(c.addr(0), "ann").await;
    let servers = [Server::Tcp(c.addr(1).into()), Server::Tcp(c.addr(2).into())];
    let dir = tempfile::tempdir().unwrap();
    let reconnect = Reconnect {
        backoff: Duration::from_millis(50),
        ..Reconnect::default()
    };
    let (_cat, mut cat_events) = connect_with(
        &servers,
        "cat",
        b"",
        ClientConfig::default(),
        Some(dir.path()),
        Some(reconnect),
    )
    .await
    .unwrap();
    assert_eq!(
        command(&ann, "cat", Bytes::from_static(b"one")).await,
        ErrorCode::NOERR
    );
    c.relays[1].0 .0.kill().unwrap();
    // cat logs in on the third relay; ann's commands find it there.
    let gone = [ErrorCode::OFFLINE, ErrorCode::CONNECTIONLOST];
    deliver_retrying(&ann, "cat", b"two", Duration::from_secs(20), &gone).await;
    let mut got = Received::default();
    receive_until(&mut cat_events, &mut got, |g| {
        g.cmds.get("ann").is_some_and(|c| c.len() == 2)
    })
    .await;
    assert_eq!(
        got.cmds["ann"],
        vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_survives_a_restart_of_the_nats_server() {
    if !nats_here() {
        return;
    }
    let mut c = cluster(2);
    let ann = user(c.addr(0), "ann").await;
    let mut cat = user(c.addr(1), "cat").await;
    assert_eq!(
        command(&ann, "cat", Bytes::from_static(b"before")).await,
        ErrorCode::NOERR
    );
    // A buffer under way when NATS goes: it ends with a result, never silently.
    let cut = buffer_under_way(&ann, "cat", 3).await;
    c.nats.down();
    let code = tokio::time::timeout(Duration::from_secs(10), cut)
        .await
        .expect("a result within 10 s");
    assert_eq!(code, ErrorCode::CONNECTIONLOST);
    c.nats.up();
    // Both relays reconnect and subscribe again; a command goes through once they have.
    let away = [ErrorCode::OFFLINE, ErrorCode::CONNECTIONLOST];
    deliver_retrying(&ann, "cat", b"after", Duration::from_secs(30), &away).await;
    let mut got = Received::default();
    receive_until(&mut cat.events, &mut got, |g| {
        g.cmds.get("ann").is_some_and(|c| c.len() == 2)
    })
    .await;
    assert_eq!(
        got.cmds["ann"],
        vec![Bytes::from_static(b"before"), Bytes::from_static(b"after")]
    );
    assert!(got.buffers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_relays_metrics_count_its_nats_traffic_links_and_searches() {
    if !nats_here() {
        return;
    }
    let nats = Nats::start();
    let mut relays = Vec::new();
    for node in ["m0", "m1"] {
        let metrics = format!("127.0.0.1:{}", port());
        let (relay, addr) = relay_with(&nats, node, &["--metrics", &metrics]);
        relays.push((relay, addr, metrics));
    }
    let ann = user(&relays[0].1, "ann").await;
    let mut cat = user(&relays[1].1, "cat").await;
    for data in [&b"one"[..], b"two"] {
        assert_eq!(
            command(&ann, "cat", Bytes::copy_from_slice(data)).await,
            ErrorCode::NOERR
        );
    }
    assert_eq!(
        command(&ann, "nobody", Bytes::from_static(b"x")).await,
        ErrorCode::OFFLINE
    );
    let mut got = Received::default();
    receive_until(&mut cat.events, &mut got, |g| g.count() == 2).await;
    // Gauges follow each heartbeat (500 ms).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let sender = get(&relays[0].2, "/metrics");
    let receiver = get(&relays[1].2, "/metrics");
    let searched = |what| {
        value(
            &sender,
            "peermsg_relay_user_searches_total",
            &[("what", what)],
        )
    };
    // One link carried both commands: one search found cat, one found nobody.
    assert_eq!(searched("found"), 1.0);
    assert_eq!(searched("offline"), 1.0);
    // The receiving relay's grant to its one incoming link: at least its first 64 KiB,
    // within the budget (8 MiB and 64 KiB per link).
    let credit = value(&receiver, "peermsg_relay_link_credit_bytes", &[]);
    assert!(
        (65536.0..=8.0 * 1048576.0 + 65536.0).contains(&credit),
        "{credit}"
    );
    for text in [&sender, &receiver] {
        assert_eq!(value(text, "peermsg_relay_links", &[]), 1.0);
        assert_eq!(value(text, "peermsg_relay_peer_relays", &[]), 1.0);
        for what in ["in", "out"] {
            assert!(value(text, "peermsg_relay_nats_messages_total", &[("what", what)]) >= 2.0);
            assert!(value(text, "peermsg_relay_nats_bytes_total", &[("what", what)]) > 0.0);
        }
    }
}

#[test]
fn sealed_messages_cross_relays_to_a_user_whose_key_is_on_another_relay() {
    if !nats_here() {
        return;
    }
    let c = cluster(2);
    let (alice_keys, bob_keys, inbox, src) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (_bob, mut bob) = listen_sealed(c.addr(1), "bob", inbox.path(), bob_keys.path());
    // alice, on the other relay, has no key of bob's: her relay asks bob's.
    let send = |what: &[&str]| {
        let out = bin()
            .args(["send", "--e2e", "--server", c.addr(0), "--user", "alice"])
            .args(["--to", "bob", "--wait", "10", "--keys"])
            .arg(alice_keys.path())
            .args(what)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{said}");
        said
    };
    let said = send(&["--cmd", "across"]);
    assert!(
        said.contains("bob's key is") && said.contains("trusted on first use"),
        "{said}"
    );
    assert_eq!(
        bob.until(|v| v["event"] == "cmd_received")["data"],
        "across"
    );
    let file = src.path().join("notes.bin");
    let bytes = content(300_000, 5);
    std::fs::write(&file, &bytes).unwrap();
    send(&["--file", file.to_str().unwrap()]);
    let got = bob.until(|v| v["event"] == "file_received");
    assert_eq!(got["org_file_name"], "notes.bin", "{got}");
    let kept = std::fs::read(got["path"].as_str().unwrap()).unwrap();
    assert!(kept == bytes, "the file arrived altered");
}

#[test]
fn a_relay_name_a_subject_cannot_carry_is_refused() {
    let out = bin()
        .args([
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--cluster",
            "nats://127.0.0.1:1",
            "--node",
            "a.b",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a relay's name"), "{err}");
}
