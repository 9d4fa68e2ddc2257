//! What the program tests share: the binary, free ports, children killed on drop.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

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
pub fn spawn_relay(mut cmd: Command) -> Killed {
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("relay listening"), "{first}");
    Killed(child)
}
