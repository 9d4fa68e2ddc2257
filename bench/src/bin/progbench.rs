//! The program as users run it: `peermsg relay`, `peermsg listen --dir` and `peermsg send
//! --file` as three processes moving a file disk to disk, beside, in the same run:
//!
//! - the plainest thing a person could write instead: a copy relay of three processes with
//!   std threads and blocking sockets (the sender reads the file and writes a socket, the
//!   relay copies socket to socket, the receiver writes the file; 256 KiB buffers; no
//!   framing, no checks);
//! - the same copy relay written on tokio (one thread per process, the files through
//!   `tokio::fs`): what the async runtime itself costs, with nothing of peermsg in it;
//! - nats-server when it is installed (`apt-get install nats-server`): the file in 256 KiB
//!   messages, an acknowledgement every 4 MiB and 16 MiB unacknowledged at most, the
//!   receiver writing it to disk.
//!
//! - the program itself sealed end to end (`--e2e`): what sealing costs through it;
//! - the program with TLS on both hops (`relay --tls-self-signed`, its clients at
//!   `tls://` with `--pin`): what TLS costs through it;
//! - the program with its sender replaced by the core's drive loop on one thread with
//!   blocking sockets and file reads (`progbench blocking-send`, no async runtime): what
//!   tokio costs the sender, measured against `peermsg send` in the same round;
//! - the tools a person would pick instead, where installed (each skipped with one line
//!   saying how to install it; `peermsg_bench::peers`): magic-wormhole with its mailbox
//!   server and transit relay on this machine, and iroh's sendme, direct QUIC on loopback.
//!
//! For each: wall time, and CPU seconds of each process (from /proc), medians of the
//! rounds, and the ratios.
//!
//! With nats-server, the same file and a stream of commands also cross two relays of a
//! cluster (`peermsg relay --cluster`, the sender on one, the listener on the other), beside
//! the single relay in the same round: the cluster's cost per byte and per command.
//!
//! ```sh
//! cargo build --release -p peermsg-cli -p peermsg-bench
//! target/release/progbench            # 1 GiB, 5 rounds
//! target/release/progbench 256 3      # 256 MiB, 3 rounds
//! target/release/progbench senders 1024 8  # peermsg send and the blocking sender alone
//! ```
//!
//! The `peermsg` binary is taken from beside this one (build both in one command), or from
//! `PEERMSG_BIN`. With `--rows` it prints its figures for `benchall`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peermsg_bench::nats_file;
use peermsg_bench::peers::{Cost, Sendme, Wormhole};
use peermsg_bench::{children_cpu, cpu_of, free_port, wait_for, Killed, NatsServer, Row};

const BUF: usize = 256 * 1024;

/// The file through `peermsg relay`, `listen --dir` and `send --file`.
fn peermsg(bin: &Path, file: &Path, dir: &Path) -> Cost {
    peermsg_with(bin, file, dir, None)
}

/// The plain program's run (`peermsg`), sealed end to end (`--e2e`) with the keys kept under `keys` (made in the
/// first round, pinned from then on).
fn peermsg_sealed(bin: &Path, file: &Path, dir: &Path, keys: &Path) -> Cost {
    peermsg_with(bin, file, dir, Some(keys))
}

fn peermsg_with(bin: &Path, file: &Path, dir: &Path, keys: Option<&Path>) -> Cost {
    let (relay, addr) = start_relay(bin, &[]);
    let send = sender(bin, &addr, file, keys);
    let cost = listen_and_send(bin, send, &["--server", &addr], dir, keys, || {
        cpu_of(relay.0.id())
    });
    drop(relay);
    cost
}

/// The plain program's run (`peermsg`) with TLS on both hops: the relay serves the
/// self-signed certificate kept in `state` (made in the first round), its clients pin it.
fn peermsg_tls(bin: &Path, file: &Path, dir: &Path, state: &Path) -> Cost {
    let (_, pin) = peermsg_tokio::tls::self_signed_in(state, "localhost").unwrap();
    let state = state.to_str().unwrap();
    let (relay, addr) = start_relay(bin, &["--tls-self-signed", "--tls-state", state]);
    let server = format!("tls://{addr}");
    let mut send = sender(bin, &server, file, None);
    send.args(["--pin", &pin]);
    let relay_args = ["--server", &server, "--pin", &pin];
    let cost = listen_and_send(bin, send, &relay_args, dir, None, || cpu_of(relay.0.id()));
    drop(relay);
    cost
}

/// The same file through `peermsg relay` and `listen`, sent by [`blocking_send`]: the
/// core's drive loop on one thread with blocking std sockets and file reads, in place of
/// `peermsg send` on tokio.
fn peermsg_blocking_sender(bin: &Path, me: &Path, file: &Path, dir: &Path) -> Cost {
    let (relay, addr) = start_relay(bin, &[]);
    let mut send = Command::new(me);
    send.arg("blocking-send").arg(&addr).arg(file);
    let cost = listen_and_send(bin, send, &["--server", &addr], dir, None, || {
        cpu_of(relay.0.id())
    });
    drop(relay);
    cost
}

/// `peermsg send --file` as alice to bob through the relay at `send_at`.
fn sender(bin: &Path, send_at: &str, file: &Path, keys: Option<&Path>) -> Command {
    let mut send = Command::new(bin);
    send.args([
        "send", "--server", send_at, "--user", "alice", "--to", "bob", "--file",
    ])
    .arg(file)
    .args(e2e_args(keys, "alice"));
    send
}

/// Sends `file` as alice to bob through the relay at `addr` with the core's drive loop on
/// this one thread: blocking socket, the file read where the client asks
/// (`Event::FileRead`), no async runtime. Exits 0 once the file is confirmed. Resumable
/// under a key of its own, as `peermsg send` sends every file, so the listener does the
/// same work for both.
fn blocking_send(addr: &str, file: &Path) {
    use peermsg::client::{Client, ClientConfig, Event, Output};
    use std::io::{ErrorKind, Seek, SeekFrom};

    let mut source = std::fs::File::open(file).unwrap();
    let size = source.metadata().unwrap().len();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let epoch = Instant::now();
    let clock = || peermsg::Instant::from_std(epoch, Instant::now());
    let mut client = Client::new(ClientConfig::default(), clock()).unwrap();
    client.login("alice", b"").unwrap();
    let (mut out, mut input) = (bytes::BytesMut::new(), vec![0u8; BUF]);
    loop {
        // The drive invariant: after any input, act on poll_output until it says to wait.
        let deadline = loop {
            out.clear();
            match client.poll_output(&mut out) {
                Output::Transmit(_) => stream.write_all(&out).unwrap(),
                Output::Event(Event::LoginResult { code }) => {
                    assert!(code.is_success(), "login: {code}");
                    let name = file.file_name().unwrap().to_string_lossy();
                    let key = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos()
                        .to_le_bytes();
                    let key = peermsg::wire::ResumeKey(key);
                    client
                        .send_file_resumable(clock(), "bob", &name, size, key, 0)
                        .unwrap();
                }
                Output::Event(Event::FileRead { id, offset, len }) => {
                    // Read into new memory the client keeps, in one read: as `peermsg send`.
                    let mut piece = vec![0; len as usize];
                    source.seek(SeekFrom::Start(offset)).unwrap();
                    source.read_exact(&mut piece).unwrap();
                    client.supply_file_data(id, offset, piece.into()).unwrap();
                }
                Output::Event(Event::SendResult { code, .. }) => {
                    assert!(code.is_success(), "the file: {code}");
                    return;
                }
                Output::Event(_) => {}
                Output::Timeout(at) => break at,
                _ => panic!("the connection ended before the file's result"),
            }
        };
        let wait = (deadline - clock()).max(Duration::from_millis(1));
        stream.set_read_timeout(Some(wait)).unwrap();
        match stream.read(&mut input) {
            Ok(0) => client.handle_disconnect(),
            Ok(n) => client.handle_input(clock(), &input[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                client.handle_timeout(clock())
            }
            Err(_) => client.handle_disconnect(),
        }
    }
}

/// The arguments that seal a user's messages, its keys under `keys`.
fn e2e_args(keys: Option<&Path>, user: &str) -> Vec<std::ffi::OsString> {
    match keys {
        Some(keys) => vec!["--e2e".into(), "--keys".into(), keys.join(user).into()],
        None => Vec::new(),
    }
}

/// A `peermsg relay` on a free port, with `extra` arguments; its address.
fn start_relay(bin: &Path, extra: &[&str]) -> (Killed, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut relay = Command::new(bin)
        .args(["relay", "--listen", &addr])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&mut relay, "relay listening");
    (Killed(relay), addr)
}

/// `peermsg listen --dir` on the relay `relay_args` name (`--server`, and `--pin` for a
/// TLS relay), then `send` (a sender of the file as alice to bob, [`sender`] or
/// [`blocking_send`]): its cost, with the relays' CPU from `relays_cpu` (read before they
/// stop). The received file is removed.
fn listen_and_send(
    bin: &Path,
    mut send: Command,
    relay_args: &[&str],
    dir: &Path,
    keys: Option<&Path>,
    relays_cpu: impl Fn() -> f64,
) -> Cost {
    let mut listen = Command::new(bin)
        .args(["listen", "--user", "bob", "--json"])
        .args(relay_args)
        .arg("--dir")
        .arg(dir)
        .args(e2e_args(keys, "bob"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&mut listen, "ready");
    let listen = Killed(listen);
    let before = children_cpu();
    let started = Instant::now();
    let sent = send
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    assert!(sent.success(), "the file was delivered");
    let cost = Cost {
        wall,
        sender: children_cpu() - before,
        relay: relays_cpu(),
        receiver: cpu_of(listen.0.id()),
    };
    drop(listen);
    for f in std::fs::read_dir(dir).unwrap() {
        let _ = std::fs::remove_file(f.unwrap().path());
    }
    cost
}

/// The file from `peermsg send` on one relay of a cluster to `peermsg listen` on another;
/// the relays' CPU is summed in `relay`, nats-server's included (and given apart).
fn cluster_file(bin: &Path, file: &Path, dir: &Path) -> Option<(Cost, f64)> {
    let nats = NatsServer::start()?;
    let (r1, a1) = start_relay(bin, &["--cluster", &nats.url, "--node", "b1"]);
    let (r2, a2) = start_relay(bin, &["--cluster", &nats.url, "--node", "b2"]);
    let broker = || cpu_of(nats.process.0.id());
    let send = sender(bin, &a1, file, None);
    let cost = listen_and_send(bin, send, &["--server", &a2], dir, None, || {
        cpu_of(r1.0.id()) + cpu_of(r2.0.id()) + broker()
    });
    Some((cost, broker()))
}

/// Commands a second from a client on the relay at `from` to one on the relay at `to`
/// (the same relay, or two of a cluster), 64 in flight, each awaited for its result.
fn cmd_rate(from: &str, to: &str, n: usize) -> f64 {
    use peermsg_tokio::{connect, ClientConfig};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = ClientConfig::default();
        let (_cat, mut events) = connect(to, "cat", b"", config, None).await.unwrap();
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        let (ann, _ann_events) = connect(from, "ann", b"", config, None).await.unwrap();
        let data = bytes::Bytes::from_static(&[7u8; 64]);
        let started = Instant::now();
        let mut in_flight = std::collections::VecDeque::new();
        for _ in 0..n {
            if in_flight.len() == 64 {
                let send: peermsg_tokio::SendHandle = in_flight.pop_front().unwrap();
                assert!(send.await.is_success());
            }
            in_flight.push_back(ann.send_cmd("cat", data.clone(), 0).await.unwrap());
        }
        for send in in_flight {
            assert!(send.await.is_success());
        }
        n as f64 / started.elapsed().as_secs_f64()
    })
}

/// Commands a second through one relay and across two of a cluster, in one run.
fn cmd_rates(bin: &Path, n: usize) -> Option<(f64, f64)> {
    let nats = NatsServer::start()?;
    let (_r1, a1) = start_relay(bin, &["--cluster", &nats.url, "--node", "c1"]);
    let (_r2, a2) = start_relay(bin, &["--cluster", &nats.url, "--node", "c2"]);
    let one = cmd_rate(&a1, &a1, n);
    let across = cmd_rate(&a1, &a2, n);
    Some((one, across))
}

/// The file through a copy relay: three processes of this program, in `flavor` (`copy`
/// for std threads and blocking sockets, `tokio` for the same on tokio).
fn copy(me: &Path, flavor: &str, file: &Path, dir: &Path) -> Cost {
    let port = free_port().to_string();
    let mut relay = Command::new(me)
        .args([&format!("{flavor}-relay"), &port])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&mut relay, "listening");
    let relay = Killed(relay);
    let out = dir.join("copy.bin");
    let mut receiver = Command::new(me)
        .args([&format!("{flavor}-receive"), &port])
        .arg(&out)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&mut receiver, "connected");
    let before = children_cpu();
    let started = Instant::now();
    let sent = Command::new(me)
        .args([&format!("{flavor}-send"), &port])
        .arg(file)
        .status()
        .unwrap();
    assert!(sent.success());
    // Done when the receiver has written the last byte and exited.
    let received = receiver.wait().unwrap();
    let wall = started.elapsed().as_secs_f64();
    assert!(received.success());
    // The sender's and the receiver's CPU come together (both waited for here); taken
    // before the relay is reaped, which would add its CPU to the children's.
    let cost = Cost {
        wall,
        sender: children_cpu() - before,
        relay: cpu_of(relay.0.id()),
        receiver: 0.0,
    };
    drop(relay);
    let _ = std::fs::remove_file(&out);
    cost
}

/// The file through nats-server: this program's `nats-send` and `nats-receive`.
fn nats(me: &Path, file: &Path, dir: &Path) -> Option<Cost> {
    let server = NatsServer::start()?;
    let out = dir.join("nats.bin");
    let mut receiver = Command::new(me)
        .args(["nats-receive", &server.url])
        .arg(&out)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&mut receiver, "subscribed");
    let before = children_cpu();
    let started = Instant::now();
    let sent = Command::new(me)
        .args(["nats-send", &server.url])
        .arg(file)
        .status()
        .unwrap();
    // The sender ends when the receiver has acknowledged the last byte.
    let wall = started.elapsed().as_secs_f64();
    assert!(sent.success());
    assert!(receiver.wait().unwrap().success());
    let size = std::fs::metadata(file).unwrap().len();
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        size,
        "NATS delivered it all"
    );
    let _ = std::fs::remove_file(&out);
    Some(Cost {
        wall,
        sender: children_cpu() - before,
        relay: cpu_of(server.process.0.id()),
        receiver: 0.0,
    })
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

/// A one-thread tokio runtime, as the program runs its tasks.
fn one_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn tokio_relay(port: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    one_thread().block_on(async {
        let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        println!("listening");
        std::io::stdout().flush().unwrap();
        let (mut to, _) = listener.accept().await.unwrap();
        let (mut from, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; BUF];
        loop {
            let n = from.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            to.write_all(&buf[..n]).await.unwrap();
        }
        to.shutdown().await.unwrap();
        std::future::pending::<()>().await;
    });
}

fn tokio_receive(port: &str, out: &Path) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    one_thread().block_on(async {
        let mut from = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        println!("connected");
        std::io::stdout().flush().unwrap();
        let mut file = tokio::fs::File::create(out).await.unwrap();
        let mut buf = vec![0u8; BUF];
        loop {
            let n = from.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).await.unwrap();
        }
        file.flush().await.unwrap();
    });
}

fn tokio_send(port: &str, path: &Path) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    one_thread().block_on(async {
        let mut to = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        let mut file = tokio::fs::File::open(path).await.unwrap();
        let mut buf = vec![0u8; BUF];
        loop {
            let n = file.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            to.write_all(&buf[..n]).await.unwrap();
        }
    });
}

// The file's subjects; its protocol is `peermsg_bench::nats_file` (NATS itself has no flow
// control across the server).
const NATS_DATA: &str = "bench.file";
const NATS_ACK: &str = "bench.file.ack";

fn nats_receive(url: &str, out: &Path) {
    one_thread().block_on(async {
        let nats = async_nats::connect(url).await.unwrap();
        let mut data = nats.subscribe(NATS_DATA).await.unwrap();
        nats.flush().await.unwrap();
        println!("subscribed");
        std::io::stdout().flush().unwrap();
        let mut file = std::fs::File::create(out).unwrap();
        nats_file::receive(&nats, &mut data, NATS_ACK, &mut file).await;
    });
}

fn nats_send(url: &str, path: &Path) {
    one_thread().block_on(async {
        let nats = async_nats::connect(url).await.unwrap();
        let mut acks = nats.subscribe(NATS_ACK).await.unwrap();
        nats.flush().await.unwrap();
        let file = std::fs::File::open(path).unwrap();
        nats_file::send(&nats, NATS_DATA, &mut acks, file).await;
    });
}

fn main() {
    let mut args: Vec<String> = std::env::args().filter(|a| a != "--rows").collect();
    // `senders`: the two senders alone, alternated, each round: a quicker, closer look.
    let senders_only = args.get(1).is_some_and(|a| a == "senders");
    if senders_only {
        args.remove(1);
    }
    let arg = |i: usize| args.get(i).map(String::as_str);
    let path = |i: usize| Path::new(arg(i).unwrap());
    match arg(1) {
        Some("copy-relay") => return copy_relay(arg(2).unwrap()),
        Some("copy-receive") => return copy_receive(arg(2).unwrap(), path(3)),
        Some("copy-send") => return copy_send(arg(2).unwrap(), path(3)),
        Some("tokio-relay") => return tokio_relay(arg(2).unwrap()),
        Some("tokio-receive") => return tokio_receive(arg(2).unwrap(), path(3)),
        Some("tokio-send") => return tokio_send(arg(2).unwrap(), path(3)),
        Some("nats-receive") => return nats_receive(arg(2).unwrap(), path(3)),
        Some("nats-send") => return nats_send(arg(2).unwrap(), path(3)),
        Some("blocking-send") => return blocking_send(arg(2).unwrap(), path(3)),
        _ => {}
    }
    let mib: u64 = arg(1).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let rounds: usize = arg(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let me = std::env::current_exe().unwrap();
    // PEERMSG_BIN measures another build (an older one, say) against the same baselines.
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
    let with_nats = peermsg_bench::nats_server_program().is_some();
    if !with_nats && !senders_only {
        eprintln!("{}", peermsg_bench::NATS_MISSING);
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
    eprintln!("{mib} MiB file, disk to disk, {rounds} rounds, the paths alternated");
    let (mut ours, mut plain, mut on_tokio, mut broker) = (vec![], vec![], vec![], vec![]);
    let (mut sealed, mut blocking, mut over_tls) = (vec![], vec![], vec![]);
    let keys = dir.path().join("keys");
    let tls_state = dir.path().join("tls");
    let mut wormhole = (!senders_only)
        .then(|| Wormhole::start(dir.path()))
        .flatten();
    let sendme = (!senders_only).then(Sendme::find).flatten();
    let (mut by_wormhole, mut by_sendme) = (vec![], vec![]);
    let (mut clustered, mut cmds_one, mut cmds_across) = (vec![], vec![], vec![]);
    let mut cluster_broker = vec![];
    let show = |name: &str, c: &Cost| {
        eprintln!(
            "  {name:<8} {:.2} s, CPU {:.2} s (send {:.2}, relay {:.2}, receive {:.2})",
            c.wall,
            c.cpu(),
            c.sender,
            c.relay,
            c.receiver
        )
    };
    for round in 0..rounds {
        eprintln!("round {round}");
        let p = peermsg(&bin, &file, &inbox);
        show("peermsg", &p);
        ours.push(p);
        let b = peermsg_blocking_sender(&bin, &me, &file, &inbox);
        show("blocking", &b);
        blocking.push(b);
        if senders_only {
            continue;
        }
        let e = peermsg_sealed(&bin, &file, &inbox, &keys);
        show("--e2e", &e);
        sealed.push(e);
        let t = peermsg_tls(&bin, &file, &inbox, &tls_state);
        show("TLS", &t);
        over_tls.push(t);
        let c = copy(&me, "copy", &file, &inbox);
        show("copy", &c);
        plain.push(c);
        if let Some(w) = wormhole.as_mut() {
            let w = w.transfer(&file, &inbox);
            show("wormhole", &w);
            by_wormhole.push(w);
        }
        if let Some(s) = &sendme {
            let s = s.transfer(&file, &inbox);
            show("sendme", &s);
            by_sendme.push(s);
        }
        let t = copy(&me, "tokio", &file, &inbox);
        show("tokio", &t);
        on_tokio.push(t);
        if let Some(n) = with_nats.then(|| nats(&me, &file, &inbox)).flatten() {
            show("nats", &n);
            broker.push(n);
        }
        if let Some((c, broker)) = with_nats
            .then(|| cluster_file(&bin, &file, &inbox))
            .flatten()
        {
            show("cluster", &c);
            clustered.push(c);
            cluster_broker.push(broker);
        }
        if let Some((one, across)) = with_nats.then(|| cmd_rates(&bin, 20_000)).flatten() {
            eprintln!("  commands: {one:.0}/s through one relay, {across:.0}/s across two");
            cmds_one.push(one);
            cmds_across.push(across);
        }
    }
    let per_gib = 1024.0 / mib as f64;
    let gbps = (mib << 20) as f64 / 1e9;
    let wall = |name: &str, xs: &[Cost]| Row::of(name, "s", xs.iter().map(|c| c.wall).collect());
    let cpu = |name: &str, xs: &[Cost], f: fn(&Cost) -> f64| {
        Row::of(
            name,
            "CPU s/GiB",
            xs.iter().map(|c| f(c) * per_gib).collect(),
        )
    };
    let rate =
        |name: &str, xs: &[Cost]| Row::of(name, "GB/s", xs.iter().map(|c| gbps / c.wall).collect());
    let sender_rows = [
        wall(
            "program, the sender on one thread with blocking sockets (core drive loop), wall",
            &blocking,
        )
        .against(&wall("the program (peermsg send on tokio), wall", &ours)),
        cpu(
            "the sender on one thread with blocking sockets, CPU",
            &blocking,
            |c| c.sender,
        )
        .against(&cpu("peermsg send (tokio), CPU", &ours, |c| c.sender)),
    ];
    if senders_only {
        return peermsg_bench::report(&sender_rows);
    }
    let copy_wall = wall("plain copy relay (std threads), wall", &plain);
    let copy_cpu = cpu("plain copy relay, CPU of all three", &plain, Cost::cpu);
    let tokio_wall = wall("copy relay on tokio, wall", &on_tokio);
    let tokio_cpu = cpu(
        "copy relay on tokio, CPU of all three",
        &on_tokio,
        Cost::cpu,
    );
    let mut rows = vec![
        wall("program: peermsg send, relay, listen; wall", &ours)
            .against(&copy_wall)
            .target("≤ 1.25×"),
        cpu("program: CPU of all three", &ours, Cost::cpu)
            .against(&copy_cpu)
            .target("≤ 1.5×"),
        cpu("program: CPU of peermsg send", &ours, |c| c.sender),
        cpu("program: CPU of peermsg relay", &ours, |c| c.relay),
        cpu("program: CPU of peermsg listen", &ours, |c| c.receiver),
        wall("program --e2e (sealed end to end), wall", &sealed)
            .against(&wall("the program, wall", &ours))
            .target("≤ 1.25× (throughput ≥ 0.8)"),
        cpu("program --e2e: CPU of all three", &sealed, Cost::cpu).against(&cpu(
            "the program: CPU of all three",
            &ours,
            Cost::cpu,
        )),
        cpu("program --e2e: CPU of peermsg send", &sealed, |c| c.sender),
        cpu("program --e2e: CPU of peermsg listen", &sealed, |c| {
            c.receiver
        }),
        rate("program, TLS both hops, file", &over_tls)
            .against(&rate("the program, plain TCP, file", &ours))
            .target("≥ 0.7×"),
        cpu(
            "program, TLS both hops: CPU of all three",
            &over_tls,
            Cost::cpu,
        )
        .against(&cpu("the program: CPU of all three", &ours, Cost::cpu)),
        wall("program against the copy relay on tokio, wall", &ours).against(&tokio_wall),
        cpu(
            "program against the copy relay on tokio, CPU",
            &ours,
            Cost::cpu,
        )
        .against(&tokio_cpu),
    ];
    rows.extend(sender_rows);
    rows.extend([
        tokio_wall.against(&copy_wall),
        tokio_cpu.against(&copy_cpu),
        copy_wall,
        copy_cpu,
    ]);
    for (name, runs, target) in [
        ("sendme (iroh, direct QUIC)", &by_sendme, "≥ 1.5×"),
        (
            "magic-wormhole (local mailbox and transit relay)",
            &by_wormhole,
            "≥ 5×",
        ),
    ] {
        if runs.is_empty() {
            continue;
        }
        let theirs = rate(&format!("{name}, file"), runs);
        rows.push(
            rate(&format!("program against {name}, file"), &ours)
                .against(&theirs)
                .target(target),
        );
        rows.push(theirs);
        rows.push(cpu(
            &format!("{name}: CPU of all its processes"),
            runs,
            Cost::cpu,
        ));
        rows.push(
            cpu(
                &format!("program: CPU of all three, against {name}"),
                &ours,
                Cost::cpu,
            )
            .against(&cpu(&format!("{name}: CPU"), runs, Cost::cpu)),
        );
    }
    if !broker.is_empty() {
        let nats_rate = rate("nats-server, file in 256 KiB messages", &broker);
        rows.push(
            rate("program against nats-server, file", &ours)
                .against(&nats_rate)
                .target("≥ 1.5×"),
        );
        rows.push(nats_rate);
        rows.push(cpu(
            "nats-server path, CPU of all three",
            &broker,
            Cost::cpu,
        ));
    }
    if !clustered.is_empty() {
        let one = rate("program through one relay, file", &ours);
        rows.push(rate("cluster: file across two relays over NATS", &clustered).against(&one));
        rows.push(
            rate("cluster against nats-server alone, file", &clustered)
                .against(&rate("nats-server, file in 256 KiB messages", &broker)),
        );
        rows.push(Row::of(
            "cluster: CPU of its nats-server",
            "CPU s/GiB",
            cluster_broker.iter().map(|b| b * per_gib).collect(),
        ));
        rows.push(
            cpu(
                "cluster: CPU of all five (two relays, nats-server)",
                &clustered,
                Cost::cpu,
            )
            .against(&cpu("program: CPU of all three", &ours, Cost::cpu)),
        );
        rows.push(one);
        let one = Row::of(
            "commands through one relay (64 in flight)",
            "cmd/s",
            cmds_one,
        );
        rows.push(
            Row::of("cluster: commands across two relays", "cmd/s", cmds_across).against(&one),
        );
        rows.push(one);
    }
    peermsg_bench::report(&rows);
}
