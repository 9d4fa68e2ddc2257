//! What the program tests share: the binary, free ports, children killed on drop.
#![allow(dead_code)] // each test file uses its own part

use std::net::TcpListener;
use std::process::{Child, Command};

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
