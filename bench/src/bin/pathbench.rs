//! The whole path against the machine's limits, in one run:
//! `cargo run --release -p peermsg-bench --bin pathbench` (add `quick` for smaller sizes).
//!
//! a. raw TCP over one loopback hop; b. a baseline relay built on tokio-util's
//! `LengthDelimitedCodec`; c. peermsg through its relay, a buffer and a file; d. command
//! latency while a bulk transfer saturates the same connection; e. commands per second
//! with their results, over loopback and in memory; f. relay RSS with 10,000 idle
//! connections and while a file goes to a reader throttled to 20 MB/s; g. client, relay,
//! client in memory beside memcpy. Each figure is the median of its repeats, with the
//! spread (min-max); ratios are taken between medians of this run. When nats-server is
//! installed (`apt-get install nats-server`), the same buffer, command round trips under
//! bulk and commands per second go through it too, with the `async-nats` client. With
//! `--rows` it prints its figures for `benchall`.

use std::time::{Duration, Instant as StdInstant};

use bytes::{Bytes, BytesMut};
use peermsg::client::{Client, ClientConfig, Event, Output};
use peermsg::relay::{ConnId, Relay, RelayConfig, RelayEvent, RelayOutput};
use peermsg::wire::Limits;
use peermsg::Instant;
use std::sync::Arc;

use peermsg_bench::{NatsServer, Row};
use peermsg_tokio::rustls;
use peermsg_tokio::{connect, serve, serve_with, tls, ClientHandle, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Decoder as _, Encoder as _, LengthDelimitedCodec};

const GIB: u64 = 1 << 30;

/// Bytes a driver gathers from an endpoint before it writes them (the clients' batch).
const BATCH: usize = 256 * 1024;

fn limits() -> Limits {
    Limits {
        max_buffer_size: 2 * GIB,
        ..Limits::default()
    }
}

fn client_config() -> ClientConfig {
    ClientConfig {
        limits: limits(),
        ..ClientConfig::default()
    }
}

fn relay_config() -> ServerConfig {
    ServerConfig {
        relay: RelayConfig {
            limits: limits(),
            ..RelayConfig::default()
        },
        // Every client of the benchmark comes from 127.0.0.1.
        max_connections: 100_000,
        max_connections_per_ip: 100_000,
        ..ServerConfig::default()
    }
}

fn gbps(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / 1e9
}

/// a. Raw TCP: one writer, one reader, 1 MiB writes.
async fn raw_tcp(bytes: u64) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        while got < bytes {
            got += s.read(&mut buf).await.unwrap() as u64;
        }
    });
    let mut s = TcpStream::connect(addr).await.unwrap();
    let chunk = vec![7u8; 1 << 20];
    let start = StdInstant::now();
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&chunk).await.unwrap();
        sent += chunk.len() as u64;
    }
    reader.await.unwrap();
    gbps(bytes, start.elapsed())
}

/// b. A relay a user would write with LengthDelimitedCodec: read frames from A, write
/// them to B, 16 KiB frames. With `keep`, B keeps what it gets in memory allocated for it
/// (as a receiver of a buffer must), else it discards it.
async fn ldc_relay(bytes: u64, keep: bool) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let relay = tokio::spawn(async move {
        let (mut a, _) = listener.accept().await.unwrap();
        let (mut b, _) = listener.accept().await.unwrap();
        let mut codec = LengthDelimitedCodec::builder()
            .max_frame_length(1 << 20)
            .new_codec();
        let mut input = BytesMut::with_capacity(1 << 20);
        let mut out = BytesMut::with_capacity(1 << 20);
        loop {
            if a.read_buf(&mut input).await.unwrap() == 0 {
                return;
            }
            while let Some(frame) = codec.decode(&mut input).unwrap() {
                codec.encode(frame.freeze(), &mut out).unwrap();
            }
            b.write_all(&out).await.unwrap();
            out.clear();
        }
    });
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut codec = LengthDelimitedCodec::builder()
            .max_frame_length(1 << 20)
            .new_codec();
        let mut input = BytesMut::with_capacity(1 << 20);
        let mut kept = Vec::with_capacity(if keep { bytes as usize } else { 0 });
        let mut got = 0u64;
        while got < bytes {
            b.read_buf(&mut input).await.unwrap();
            while let Some(frame) = codec.decode(&mut input).unwrap() {
                got += frame.len() as u64;
                if keep {
                    kept.extend_from_slice(&frame);
                }
            }
        }
        kept
    });
    let payload = Bytes::from(vec![9u8; 16 * 1024 - 8]);
    let mut codec = LengthDelimitedCodec::new();
    let mut out = BytesMut::with_capacity(1 << 20);
    let start = StdInstant::now();
    let mut sent = 0;
    while sent < bytes {
        while out.len() < 1 << 20 && sent < bytes {
            codec.encode(payload.clone(), &mut out).unwrap();
            sent += payload.len() as u64;
        }
        a.write_all(&out).await.unwrap();
        out.clear();
    }
    let kept = reader.await.unwrap();
    let took = start.elapsed();
    // Freeing what was received is the application's business, after the clock.
    drop(kept);
    drop(a);
    relay.abort();
    gbps(bytes, took)
}

async fn start_relay() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    start_relay_with(None).await
}

/// The relay, speaking TLS if `tls` is given.
async fn start_relay_with(
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let extras = peermsg_tokio::Extras {
        tls,
        ..Default::default()
    };
    tokio::spawn(serve_with(
        listener,
        relay_config(),
        peermsg_tokio::OpenAccess,
        extras,
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

/// A certificate made for the run: the relay's TLS configuration and a client's that pins
/// it.
fn tls_pair() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let (server, pin) = tls::self_signed("localhost").unwrap();
    let trust = tls::Trust::pin(&pin).unwrap();
    (server, tls::client_config(&trust).unwrap())
}

/// alice and bob logged in to the relay at `addr`; bob's events are read and dropped.
async fn alice_and_bob(
    addr: std::net::SocketAddr,
    sink: Option<&std::path::Path>,
) -> (ClientHandle, peermsg_tokio::ClientEvents, ClientHandle) {
    alice_and_bob_with(addr, sink, None).await
}

/// [`alice_and_bob`], over TLS if `tls` is given.
async fn alice_and_bob_with(
    addr: std::net::SocketAddr,
    sink: Option<&std::path::Path>,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> (ClientHandle, peermsg_tokio::ClientEvents, ClientHandle) {
    let login = |user: &'static str, sink: Option<&std::path::Path>| {
        let tls = tls.clone();
        let sink = sink.map(std::path::Path::to_path_buf);
        async move {
            let sink = sink.as_deref();
            match tls {
                None => connect(addr, user, b"", client_config(), sink).await,
                Some(tls) => {
                    peermsg_tokio::connect_tls(
                        addr,
                        "localhost",
                        tls,
                        user,
                        b"",
                        client_config(),
                        sink,
                    )
                    .await
                }
            }
            .unwrap()
        }
    };
    let (alice, a) = login("alice", None).await;
    let (bob, mut b) = login("bob", sink).await;
    tokio::spawn(async move { while b.recv().await.is_some() {} });
    (alice, a, bob)
}

/// c. A buffer or a file of `bytes` through peermsg's relay.
async fn peermsg_transfer(
    bytes: u64,
    file: Option<&std::path::Path>,
    sink: &std::path::Path,
) -> f64 {
    peermsg_transfer_with(bytes, file, sink, false).await
}

/// [`peermsg_transfer`], over TLS if `tls` (a certificate made for the run).
async fn peermsg_transfer_with(
    bytes: u64,
    file: Option<&std::path::Path>,
    sink: &std::path::Path,
    tls: bool,
) -> f64 {
    let (server, client) = match tls {
        true => {
            let (server, client) = tls_pair();
            (Some(server), Some(client))
        }
        false => (None, None),
    };
    let (addr, _stop) = start_relay_with(server).await;
    let (alice, _a, _bob) = alice_and_bob_with(addr, Some(sink), client).await;
    // The application's buffer exists before the send; the receiver's is made by the send.
    let source = Bytes::from(vec![5u8; bytes as usize]);
    let start = StdInstant::now();
    let sending = match file {
        Some(path) => alice.send_file("bob", path, 0).await.unwrap(),
        None => alice.send_buffer("bob", source.clone(), 0).await.unwrap(),
    };
    let code = sending.await;
    assert!(code.is_success(), "{code}");
    let took = start.elapsed();
    // Freeing the application's buffer is the application's business, after the clock.
    drop(source);
    gbps(bytes, took)
}

/// d. Round trips of 64-byte commands (send to confirmed) while a bulk buffer saturates
/// the same connections; returns (p50, p99) in microseconds.
async fn latency_under_load(bulk: u64, samples: usize) -> (f64, f64) {
    let (addr, _stop) = start_relay().await;
    let (alice, _a, _bob) = alice_and_bob(addr, None).await;
    let mut bulk = alice
        .send_buffer("bob", Bytes::from(vec![1u8; bulk as usize]), 0)
        .await
        .unwrap();
    let mut rtts = Vec::new();
    let mut bulk_done = false;
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..samples {
        let start = StdInstant::now();
        alice
            .send_cmd("bob", Bytes::from(vec![3u8; 64]), 0)
            .await
            .unwrap()
            .await;
        rtts.push(start.elapsed().as_secs_f64() * 1e6);
        bulk_done = bulk.try_result().is_some();
        if bulk_done {
            break;
        }
    }
    let n = rtts.len();
    if std::env::var_os("PATHBENCH_TRACE").is_some() {
        let slow: Vec<(usize, u64)> = rtts
            .iter()
            .enumerate()
            .filter(|(_, r)| **r > 2000.0)
            .map(|(i, r)| (i, *r as u64))
            .collect();
        eprintln!("    slow samples (index, us): {slow:?}");
    }
    eprintln!(
        "    ({n} samples, bulk {} when sampling ended)",
        if bulk_done {
            "finished"
        } else {
            "still running"
        }
    );
    percentiles(rtts)
}

/// (p50, p99) of round trips.
fn percentiles(mut rtts: Vec<f64>) -> (f64, f64) {
    rtts.sort_by(|x, y| x.total_cmp(y));
    let n = rtts.len();
    (rtts[n / 2], rtts[(n * 99 / 100).min(n - 1)])
}

/// e. Commands with their results per second over loopback, 64 in flight.
async fn cmds_loopback(n: usize) -> f64 {
    let (addr, _stop) = start_relay().await;
    let (alice, _a, _bob) = alice_and_bob(addr, None).await;
    let start = StdInstant::now();
    let data = Bytes::from(vec![3u8; 64]);
    let mut in_flight = std::collections::VecDeque::new();
    let mut sent = 0;
    while sent < n || !in_flight.is_empty() {
        while in_flight.len() < 64 && sent < n {
            in_flight.push_back(alice.send_cmd("bob", data.clone(), 0).await.unwrap());
            sent += 1;
        }
        // Commands are confirmed in order: the oldest is the next to end.
        if let Some(oldest) = in_flight.pop_front() {
            oldest.await;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The same jobs through nats-server with the `async-nats` client, the broker a user
/// might pick instead: a buffer in 256 KiB messages (NATS has no flow control across the
/// server, so the receiver acknowledges every 4 MiB and the sender keeps at most 16 MiB
/// unacknowledged), and commands as requests with replies.
mod nats {
    use bytes::Bytes;
    use futures::stream::{FuturesOrdered, StreamExt};
    use std::time::Instant;

    const PIECE: usize = 256 * 1024;
    const ACK_EVERY: u64 = 4 << 20;
    const UNACKED: u64 = 16 << 20;

    async fn client(url: &str) -> async_nats::Client {
        let client = async_nats::connect(url).await.unwrap();
        client.flush().await.unwrap();
        client
    }

    /// `bob` keeps a buffer published on `subject` in memory allocated for it, and
    /// acknowledges on `subject.ack`; returns when the subscriptions are in place.
    async fn receive_buffer(
        bob: async_nats::Client,
        subject: &str,
    ) -> tokio::task::JoinHandle<Vec<u8>> {
        let mut data = bob.subscribe(subject.to_string()).await.unwrap();
        bob.flush().await.unwrap();
        let ack = format!("{subject}.ack");
        tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut acked = 0u64;
            while let Some(message) = data.next().await {
                let end = message.payload.is_empty();
                if kept.capacity() == 0 && !end {
                    // The size comes first, as a buffer's does in peermsg.
                    let size = std::str::from_utf8(&message.payload)
                        .unwrap()
                        .parse()
                        .unwrap();
                    kept.reserve_exact(size);
                    continue;
                }
                kept.extend_from_slice(&message.payload);
                let got = kept.len() as u64;
                if end || got - acked >= ACK_EVERY {
                    acked = got;
                    bob.publish(ack.clone(), got.to_string().into())
                        .await
                        .unwrap();
                }
                if end {
                    bob.flush().await.unwrap();
                    return kept;
                }
            }
            kept
        })
    }

    /// `alice` publishes `source` on `subject`, flow-controlled by `bob`'s acks.
    async fn send_buffer(alice: &async_nats::Client, subject: &str, source: &Bytes) {
        let mut acks = alice.subscribe(format!("{subject}.ack")).await.unwrap();
        alice.flush().await.unwrap();
        let mut next_ack = async || -> u64 {
            let message = acks.next().await.expect("the ack subscription lives");
            std::str::from_utf8(&message.payload)
                .unwrap()
                .parse()
                .unwrap()
        };
        let size = source.len() as u64;
        alice
            .publish(subject.to_string(), size.to_string().into())
            .await
            .unwrap();
        let (mut sent, mut acked) = (0u64, 0u64);
        for piece in (0..source.len()).step_by(PIECE) {
            while sent - acked > UNACKED {
                acked = next_ack().await;
            }
            let end = (piece + PIECE).min(source.len());
            alice
                .publish(subject.to_string(), source.slice(piece..end))
                .await
                .unwrap();
            sent = end as u64;
        }
        alice
            .publish(subject.to_string(), Bytes::new())
            .await
            .unwrap();
        alice.flush().await.unwrap();
        while acked < size {
            acked = next_ack().await;
        }
    }

    /// A buffer of `bytes` from one client to another through the server, in GB/s.
    pub async fn bulk(url: &str, bytes: u64) -> f64 {
        let (alice, bob) = (client(url).await, client(url).await);
        let source = Bytes::from(vec![5u8; bytes as usize]);
        let start = Instant::now();
        let receiving = receive_buffer(bob, "bulk").await;
        send_buffer(&alice, "bulk", &source).await;
        let kept = receiving.await.unwrap();
        let took = start.elapsed();
        assert_eq!(kept.len() as u64, bytes);
        drop((kept, source));
        super::gbps(bytes, took)
    }

    /// `bob` answers every request on `subject` with an empty reply.
    async fn answer(bob: async_nats::Client, subject: &str) {
        let mut requests = bob.subscribe(subject.to_string()).await.unwrap();
        bob.flush().await.unwrap();
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                if let Some(reply) = request.reply {
                    let _ = bob.publish(reply, Bytes::new()).await;
                }
            }
        });
    }

    /// Requests of 64 bytes with their replies per second, 64 in flight.
    pub async fn requests(url: &str, n: usize) -> f64 {
        let (alice, bob) = (client(url).await, client(url).await);
        answer(bob, "cmd").await;
        let data = Bytes::from(vec![3u8; 64]);
        let start = Instant::now();
        let mut in_flight = FuturesOrdered::new();
        let mut sent = 0;
        while sent < n || !in_flight.is_empty() {
            while in_flight.len() < 64 && sent < n {
                in_flight.push_back(alice.request("cmd", data.clone()));
                sent += 1;
            }
            in_flight.next().await.unwrap().unwrap();
        }
        n as f64 / start.elapsed().as_secs_f64()
    }

    /// Request round trips while a buffer of `bulk` bytes goes the same way over the same
    /// connections; (p50, p99) in microseconds.
    pub async fn latency_under_load(url: &str, bulk: u64, samples: usize) -> (f64, f64) {
        let (alice, bob) = (client(url).await, client(url).await);
        answer(bob.clone(), "cmd").await;
        let receiving = receive_buffer(bob, "bulk").await;
        let source = Bytes::from(vec![1u8; bulk as usize]);
        let sender = alice.clone();
        let sending = tokio::spawn(async move { send_buffer(&sender, "bulk", &source).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut rtts = Vec::new();
        let data = Bytes::from(vec![3u8; 64]);
        for _ in 0..samples {
            let start = Instant::now();
            alice.request("cmd", data.clone()).await.unwrap();
            rtts.push(start.elapsed().as_secs_f64() * 1e6);
            if sending.is_finished() {
                break;
            }
        }
        sending.await.unwrap();
        drop(receiving.await.unwrap());
        super::percentiles(rtts)
    }
}

/// Client A, a relay and client B in one thread, bytes moved by hand.
struct InMemory {
    a: Client,
    b: Client,
    relay: Relay,
    buf: BytesMut,
}

impl InMemory {
    fn new() -> Self {
        let now = Instant::ZERO;
        let mut m = InMemory {
            a: Client::new(client_config(), now).unwrap(),
            b: Client::new(client_config(), now).unwrap(),
            relay: Relay::new(relay_config().relay).unwrap(),
            buf: BytesMut::with_capacity(1 << 20),
        };
        m.relay.open(now, ConnId(0)).unwrap();
        m.relay.open(now, ConnId(1)).unwrap();
        m.a.login("alice", b"").unwrap();
        m.b.login("bob", b"").unwrap();
        m.pump(|_| {});
        m
    }

    /// Moves everything until quiet, each endpoint driven by its `poll_output`; `on_b`
    /// sees bob's events.
    fn pump(&mut self, mut on_b: impl FnMut(Event)) -> Vec<Event> {
        let now = Instant::ZERO;
        let mut a_events = Vec::new();
        loop {
            let mut busy = false;
            for (client, conn) in [(&mut self.a, ConnId(0)), (&mut self.b, ConnId(1))] {
                loop {
                    // Output accumulates in the sink and goes out a batch at a time, as a
                    // runtime writes: buffers stay small and are reused.
                    match client.poll_output(&mut self.buf) {
                        Output::Transmit(_) if self.buf.len() < BATCH => {}
                        Output::Transmit(_) => {
                            self.relay.handle_input_buf(now, conn, self.buf.split())
                        }
                        Output::Event(e) if conn == ConnId(0) => a_events.push(e),
                        Output::Event(e) => on_b(e),
                        _ => break,
                    }
                    busy = true;
                }
                if !self.buf.is_empty() {
                    self.relay.handle_input_buf(now, conn, self.buf.split());
                }
            }
            loop {
                match self.relay.poll_output(&mut self.buf) {
                    RelayOutput::Transmit(conn, _) => {
                        let to = if conn == ConnId(0) {
                            &mut self.a
                        } else {
                            &mut self.b
                        };
                        to.handle_input_buf(now, self.buf.split());
                    }
                    RelayOutput::Event(RelayEvent::Login { conn, .. }) => {
                        self.relay.accept_login(conn).unwrap()
                    }
                    RelayOutput::Event(_) => {}
                    _ => break,
                }
                busy = true;
            }
            if !busy {
                return a_events;
            }
        }
    }
}

/// e (in memory). Commands with results per second.
fn cmds_in_memory(n: usize) -> f64 {
    let mut m = InMemory::new();
    let data = Bytes::from(vec![3u8; 64]);
    let start = StdInstant::now();
    let mut done = 0;
    let mut sent = 0;
    while done < n {
        while sent < n && sent - done < 256 {
            m.a.send_cmd(Instant::ZERO, "bob", data.clone(), 0).unwrap();
            sent += 1;
        }
        done += m
            .pump(|_| {})
            .iter()
            .filter(|e| matches!(e, Event::SendResult { .. }))
            .count();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// g. A buffer from client to relay to client in memory.
fn buffer_in_memory(bytes: u64) -> f64 {
    let mut m = InMemory::new();
    let data = Bytes::from(vec![6u8; bytes as usize]);
    let start = StdInstant::now();
    m.a.send_buffer(Instant::ZERO, "bob", data.clone(), 0)
        .unwrap();
    let mut got = Bytes::new();
    let events = m.pump(|e| {
        if let Event::BufferReceived { data, .. } = e {
            got = data;
        }
    });
    let took = start.elapsed();
    // Both buffers are the applications' to free, after the clock.
    assert_eq!(got.len() as u64, bytes);
    drop((got, data));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::SendResult { code, .. } if code.is_success())));
    gbps(bytes, took)
}

fn memcpy(bytes: u64) -> f64 {
    let src = vec![1u8; bytes as usize];
    let mut dst = vec![0u8; bytes as usize];
    dst.fill(2); // touch every page first: the copy alone is timed
    let start = StdInstant::now();
    dst.copy_from_slice(&src);
    let took = start.elapsed();
    std::hint::black_box(&dst);
    gbps(bytes, took)
}

/// A copy into memory just allocated, as a receiver's new buffer is: the kernel maps and
/// zeroes each page at its first touch, inside the timed copy.
fn fresh_copy(bytes: u64) -> f64 {
    let src = vec![1u8; bytes as usize];
    let start = StdInstant::now();
    let mut dst = Vec::with_capacity(bytes as usize);
    dst.extend_from_slice(&src);
    let took = start.elapsed();
    std::hint::black_box(&dst);
    gbps(bytes, took)
}

/// Writing `bytes` to a new file in `dir`, 256 KiB per write: the disk side of a file
/// transfer (page cache, at these sizes).
fn file_write(bytes: u64, dir: &std::path::Path) -> f64 {
    use std::io::Write;
    let piece = vec![3u8; 256 * 1024];
    let path = dir.join("baseline.bin");
    let start = StdInstant::now();
    let mut file = std::fs::File::create(&path).unwrap();
    let mut left = bytes as usize;
    while left > 0 {
        let n = left.min(piece.len());
        file.write_all(&piece[..n]).unwrap();
        left -= n;
    }
    drop(file);
    let took = start.elapsed();
    let _ = std::fs::remove_file(&path);
    gbps(bytes, took)
}

fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// f. The relay as its own process (this program, re-run as `relay-child`).
fn spawn_relay_process() -> (std::process::Child, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("relay-child")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().parse().unwrap())
}

async fn relay_rss_idle(n: usize) -> (u64, u64) {
    let (mut child, addr) = spawn_relay_process();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base = rss_of(child.id());
    let mut conns = Vec::new();
    for i in 0..n {
        let (h, e) = connect(
            addr,
            &format!("idle{i}"),
            b"",
            ClientConfig::default(),
            None,
        )
        .await
        .unwrap();
        conns.push((h, e));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = rss_of(child.id());
    let _ = child.kill();
    (base, rss)
}

/// f. A file to a reader whose socket is read at 20 MB/s; the relay's peak RSS.
async fn relay_rss_throttled(bytes: u64, path: &std::path::Path) -> (u64, f64) {
    let (mut child, addr) = spawn_relay_process();
    let (alice, _a) = connect(addr, "alice", b"", client_config(), None)
        .await
        .unwrap();
    // bob: a raw client whose socket is read at 20 MB/s.
    let mut bob = Client::new(client_config(), Instant::ZERO).unwrap();
    bob.login("bob", b"").unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let start = StdInstant::now();
        let mut total = 0u64;
        loop {
            let mut out = BytesMut::new();
            while bob.poll_transmit(&mut out) > 0 {}
            if !out.is_empty() && wr.write_all(&out).await.is_err() {
                return;
            }
            while let Some(e) = bob.poll_event() {
                if let Event::FileReceived { id, .. } = e {
                    let _ = bob.accept_delivery(id);
                }
                if matches!(e, Event::FileReceived { .. } | Event::BufferReceived { .. }) {
                    let mut out = BytesMut::new();
                    while bob.poll_transmit(&mut out) > 0 {}
                    let _ = wr.write_all(&out).await;
                }
            }
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            total += n as u64;
            bob.handle_input(Instant::ZERO, &buf[..n]);
            let due = Duration::from_secs_f64(total as f64 / 20e6);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sending = alice.send_file("bob", path, 0).await.unwrap();
    let pid = child.id();
    let mut peak = rss_of(pid);
    let start = StdInstant::now();
    let mut sampled = StdInstant::now();
    let code = loop {
        let ended = tokio::time::timeout(Duration::from_millis(100), &mut sending).await;
        if sampled.elapsed() >= Duration::from_millis(100) {
            peak = peak.max(rss_of(pid));
            sampled = StdInstant::now();
        }
        if let Ok(code) = ended {
            break code;
        }
    };
    assert!(code.is_success(), "{code}");
    let rate = bytes as f64 / start.elapsed().as_secs_f64() / 1e6;
    reader.abort();
    let _ = child.kill();
    (peak, rate)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if args.get(1).map(String::as_str) == Some("relay-child") {
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            println!("{}", listener.local_addr().unwrap());
            let _ = serve(
                listener,
                relay_config(),
                peermsg_tokio::OpenAccess,
                std::future::pending(),
            )
            .await;
        });
        return;
    }
    // One figure alone, for a profiler.
    match args.get(1).map(String::as_str) {
        Some("g") => {
            for _ in 0..3 {
                println!("g {:.3} GB/s", buffer_in_memory(GIB / 2));
            }
            return;
        }
        Some("e-memory") => {
            for _ in 0..3 {
                println!("e in memory {:.0} cmd/s", cmds_in_memory(1_000_000));
            }
            return;
        }
        Some("e") => {
            for _ in 0..3 {
                let rate = rt.block_on(cmds_loopback(200_000));
                println!("e {rate:.0} cmd/s");
            }
            return;
        }
        Some("c-tls") => {
            let dir = tempfile::tempdir().unwrap();
            for _ in 0..3 {
                for tls in [false, true] {
                    let gbps = rt.block_on(peermsg_transfer_with(GIB / 2, None, dir.path(), tls));
                    println!("c buffer{} {gbps:.3} GB/s", if tls { " TLS" } else { "" });
                }
            }
            return;
        }
        Some("d") => {
            for _ in 0..3 {
                let (p50, p99) = rt.block_on(latency_under_load(GIB / 2, 20_000));
                println!("d p50 {:.3} ms p99 {:.3} ms", p50 / 1000.0, p99 / 1000.0);
            }
            return;
        }
        Some(kind @ ("c-buffer" | "c-file")) => {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("payload.bin");
            if kind == "c-file" {
                std::fs::write(&file, vec![8u8; (GIB / 2) as usize]).unwrap();
            }
            let sink = dir.path().join("sink");
            std::fs::create_dir(&sink).unwrap();
            let path = (kind == "c-file").then_some(file.as_path());
            for _ in 0..3 {
                let gbps = rt.block_on(peermsg_transfer(GIB / 2, path, &sink));
                println!("{kind} {gbps:.3} GB/s");
                for f in std::fs::read_dir(&sink).unwrap() {
                    let _ = std::fs::remove_file(f.unwrap().path());
                }
            }
            return;
        }
        _ => {}
    }
    let quick = args.get(1).map(String::as_str) == Some("quick");
    let size = if quick { GIB / 8 } else { GIB };
    let reps = 3;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, vec![8u8; size as usize]).unwrap();
    let sink = dir.path().join("sink");
    std::fs::create_dir(&sink).unwrap();
    eprintln!("transfer size {} MiB, {reps} repeats each", size >> 20);
    let nats_server = NatsServer::start();
    if nats_server.is_none() {
        eprintln!("{}", peermsg_bench::NATS_MISSING);
    }
    let nats_url = nats_server.as_ref().map(|n| n.url.clone());
    let rows = rt.block_on(async {
        // Each figure's runs, measured by `f` (an async block per run).
        macro_rules! runs {
            ($f:expr) => {{
                let mut xs = Vec::new();
                for _ in 0..reps {
                    xs.push($f);
                }
                xs
            }};
        }
        let a = Row::of(
            "a. raw TCP, one loopback hop",
            "GB/s",
            runs!(raw_tcp(size).await),
        );
        let b = Row::of(
            "b. LengthDelimitedCodec relay, receiver discards",
            "GB/s",
            runs!(ldc_relay(size, false).await),
        );
        let b_keep = Row::of(
            "b. LengthDelimitedCodec relay, receiver keeps the bytes",
            "GB/s",
            runs!(ldc_relay(size, true).await),
        );
        let fresh = Row::of(
            "copy into freshly allocated memory",
            "GB/s",
            runs!(fresh_copy(size)),
        );
        let disk = Row::of(
            "write of a new file in the sink directory",
            "GB/s",
            runs!(file_write(size, &sink)),
        );
        let c_buffer = Row::of(
            "c. peermsg relay, buffer",
            "GB/s",
            runs!(peermsg_transfer(size, None, &sink).await),
        );
        let c_tls = Row::of(
            "c. peermsg relay, buffer, TLS both hops",
            "GB/s",
            runs!(peermsg_transfer_with(size, None, &sink, true).await),
        );
        let c_file = Row::of(
            "c. peermsg relay, file (disk to disk)",
            "GB/s",
            runs!({
                let x = peermsg_transfer(size, Some(&file), &sink).await;
                for f in std::fs::read_dir(&sink).unwrap() {
                    let _ = std::fs::remove_file(f.unwrap().path());
                }
                x
            }),
        );
        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        for _ in 0..reps {
            let (p50, p99) = latency_under_load(size.min(GIB / 2), 2000).await;
            p50s.push(p50 / 1000.0);
            p99s.push(p99 / 1000.0);
        }
        let n = if quick { 20_000 } else { 100_000 };
        let e_loopback = Row::of(
            "e. commands/s with results, loopback",
            "cmd/s",
            runs!(cmds_loopback(n).await),
        );
        let e_memory = Row::of(
            "e. commands/s with results, in memory",
            "cmd/s",
            runs!(cmds_in_memory(n * 5)),
        )
        .target("≥ 1000000 in every run");
        let d_p99 = Row::of("d. command round trip under bulk, p99", "ms", p99s);
        let mut rows = vec![
            a.clone(),
            b.clone(),
            b_keep.clone(),
            fresh.clone(),
            disk.clone(),
            c_buffer.clone().against(&b_keep).target("≥ 1.0×"),
            c_buffer.clone().against(&a),
            c_tls.against(&c_buffer).target("≥ 0.7×"),
            c_file.clone().against(&b_keep),
            c_file.against(&disk),
            Row::of("d. command round trip under bulk, p50", "ms", p50s),
            d_p99.clone().target("≤ 2 ms"),
            e_loopback.clone(),
            e_memory,
        ];
        if let Some(url) = &nats_url {
            let bulk = Row::of(
                "nats-server: buffer in 256 KiB messages",
                "GB/s",
                runs!(nats::bulk(url, size).await),
            );
            let mut p99s = Vec::new();
            for _ in 0..reps {
                let (_, p99) = nats::latency_under_load(url, size.min(GIB / 2), 2000).await;
                p99s.push(p99 / 1000.0);
            }
            let nats_p99 = Row::of(
                "nats-server: request round trip under bulk, p99",
                "ms",
                p99s,
            );
            let requests = Row::of(
                "nats-server: requests/s with replies, 64 in flight",
                "cmd/s",
                runs!(nats::requests(url, n).await),
            );
            rows.push(c_buffer.against(&bulk).target("≥ 1.5×"));
            rows.push(d_p99.against(&nats_p99).target("< 1.0×"));
            rows.push(e_loopback.against(&requests).target("≥ 3×"));
            rows.extend([bulk, nats_p99, requests]);
        }
        let (g, m, fresh_g) = {
            let (mut gs, mut ms, mut fs) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..reps {
                gs.push(buffer_in_memory(size.min(GIB / 2)));
                ms.push(memcpy(size.min(GIB / 2)));
                fs.push(fresh_copy(size.min(GIB / 2)));
            }
            (
                Row::of("g. client, relay, client in memory, buffer", "GB/s", gs),
                Row::of("memcpy, pages touched first", "GB/s", ms),
                Row::of("copy into fresh memory, the size of g", "GB/s", fs),
            )
        };
        rows.push(g.clone().against(&fresh_g).target("≥ 0.8×"));
        rows.push(g.against(&m));
        rows.extend([m, fresh_g]);
        let idle = if quick { 1000 } else { 10_000 };
        let (base, rss) = relay_rss_idle(idle).await;
        let mib = |x: u64| x as f64 / 1048576.0;
        rows.push(Row::of("f. relay RSS, empty", "MiB", vec![mib(base)]));
        rows.push(Row::of(
            format!("f. relay RSS, {idle} idle connections"),
            "MiB",
            vec![mib(rss)],
        ));
        let throttled = if quick { GIB / 16 } else { GIB };
        let small = dir.path().join("throttled.bin");
        std::fs::write(&small, vec![4u8; throttled as usize]).unwrap();
        let (peak, rate) = relay_rss_throttled(throttled, &small).await;
        rows.push(Row::of(
            format!(
                "f. relay peak RSS, {} MiB file to a reader at {rate:.0} MB/s",
                throttled >> 20
            ),
            "MiB",
            vec![mib(peak)],
        ));
        rows
    });
    peermsg_bench::report(&rows);
}
