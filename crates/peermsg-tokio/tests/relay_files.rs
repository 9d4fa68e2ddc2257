//! The relay server at the open-file limit: accepting fails with "too many open files",
//! and the relay must back off and keep serving, not exit. It lowers this process's limit,
//! so it has a process of its own.

mod common;

use std::time::Duration;

use common::*;
use peermsg::client::ClientConfig;
use peermsg_tokio::{connect, ServerConfig};
use rlimit::Resource;
use tokio::net::TcpStream;

fn open_files() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_open_file_limit_the_relay_backs_off_and_serves_on() {
    let config = ServerConfig {
        max_connections: 10_000,
        ..ServerConfig::default()
    };
    let (addr, _stop) = start(config, None).await;
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE).unwrap();
    rlimit::setrlimit(Resource::NOFILE, open_files() + 40, hard).unwrap();
    // Connect until this process has no file left: the connections the kernel completed
    // but the relay cannot accept wait in its backlog while accept fails.
    let mut idle = Vec::new();
    while idle.len() < 1000 {
        match TcpStream::connect(addr).await {
            Ok(s) => idle.push(s),
            Err(_) => break,
        }
    }
    assert!(idle.len() < 1000, "the file limit was never reached");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Files come free: the relay is still there and lets an honest user in.
    idle.clear();
    rlimit::setrlimit(Resource::NOFILE, soft, hard).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (alice, _events) = connect(addr, "alice", b"", ClientConfig::default(), None)
        .await
        .expect("the relay serves on after running out of files");
    drop(alice);
}
