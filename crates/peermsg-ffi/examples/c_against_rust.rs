//! What a call across the C interface costs: commands/s sent from C (the example program,
//! `c/example.c --commands`, over `libpeermsg_ffi.so`) against the same from Rust (this
//! program run again as a sender, over the tokio client), each a process of its own,
//! through one relay to one receiver, in the same run, alternated. Each measures from its
//! first send to its last result, after its login, 256 commands in flight.
//!
//! Run: `cargo run --release -p peermsg-ffi --example c_against_rust [COMMANDS] [ROUNDS]`
//! (needs a C compiler).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use peermsg_tokio::{serve, ClientHandle, OpenAccess, Server, ServerConfig};

/// Commands in flight at a time, as the C program keeps them.
const WINDOW: usize = 256;

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--send") {
        // The Rust sender: --send N RELAY USER PEER, as the C program takes them.
        let a: Vec<String> = args.skip(1).collect();
        let [n, relay, user, _peer] = &a[..] else {
            panic!("--send N RELAY USER PEER");
        };
        let n: usize = n.parse().expect("N");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let rate = runtime.block_on(commands_from_rust(relay, user, n));
        println!(
            "commands: {n} in {:.3} s: {rate:.0}/s, 0 failed",
            n as f64 / rate
        );
        return;
    }
    let n: usize = args
        .next()
        .map_or(100_000, |a| a.parse().expect("COMMANDS"));
    let rounds: usize = args.next().map_or(3, |a| a.parse().expect("ROUNDS"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let program = compile();

    let relay = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let config = ServerConfig::default();
        tokio::spawn(serve(listener, config, OpenAccess, std::future::pending()));
        addr
    });
    // The receiver reads every event, so it confirms every command.
    let (_bob, mut events) = runtime.block_on(connect(&relay, "bob"));
    runtime.spawn(async move { while events.recv().await.is_some() {} });

    let (mut from_c, mut from_rust) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let c = commands_from(&program, &relay, &format!("c{round}"), n);
        let myself = std::env::current_exe().unwrap();
        let mut rust = Command::new(myself);
        rust.arg("--send");
        let rust = commands_from_process(rust, &relay, &format!("rust{round}"), n);
        println!("round {round}: from C {c:.0}/s, from Rust {rust:.0}/s");
        from_c.push(c);
        from_rust.push(rust);
    }
    let (c, rust) = (median(&mut from_c), median(&mut from_rust));
    println!(
        "median of {rounds} rounds, {n} commands each: from C {c:.0}/s, from Rust {rust:.0}/s: C/Rust {:.2}",
        c / rust
    );
}

async fn connect(relay: &str, user: &str) -> (ClientHandle, peermsg_tokio::ClientEvents) {
    ClientHandle::builder(user)
        .server(Server::Tcp(relay.into()))
        .connect()
        .await
        .unwrap()
}

/// Commands/s of the C program, as it measures them.
fn commands_from(program: &Path, relay: &str, user: &str, n: usize) -> f64 {
    let mut c = Command::new(program);
    c.arg("--commands");
    commands_from_process(c, relay, user, n)
}

/// Commands/s of a sending process, as it prints them.
fn commands_from_process(mut sender: Command, relay: &str, user: &str, n: usize) -> f64 {
    let out = sender
        .args([&n.to_string(), relay, user, "bob"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("commands:")).unwrap();
    // "commands: N in X s: Y/s, 0 failed"
    let rate = line.split(": ").nth(2).unwrap().split("/s").next().unwrap();
    rate.parse().unwrap()
}

/// The same from Rust: `WINDOW` in flight, from the first send to the last result.
async fn commands_from_rust(relay: &str, user: &str, n: usize) -> f64 {
    let (alice, _events) = connect(relay, user).await;
    let start = Instant::now();
    let mut in_flight = VecDeque::with_capacity(WINDOW);
    for i in 0..n {
        if in_flight.len() == WINDOW {
            let sent: peermsg_tokio::SendHandle = in_flight.pop_front().unwrap();
            assert!(sent.await.is_success());
        }
        in_flight.push_back(
            alice
                .send_cmd("bob", "ping".into(), i as u64)
                .await
                .unwrap(),
        );
    }
    for sent in in_flight {
        assert!(sent.await.is_success());
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Compiles `c/example.c` against the library beside this program's build.
fn compile() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().unwrap().parent().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = lib.join("c-example");
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-O2", "-std=c11", "-D_GNU_SOURCE"])
        .arg(dir.join("c/example.c"))
        .arg("-I")
        .arg(dir.join("include"))
        .arg(format!("-L{}", lib.display()))
        .arg("-lpeermsg_ffi")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lpthread", "-o"])
        .arg(&out)
        .status()
        .expect("a C compiler (cc)");
    assert!(status.success(), "compiling c/example.c failed");
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
