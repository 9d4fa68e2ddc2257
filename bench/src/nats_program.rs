//! Where nats-server is (the benchmarks and the program's cluster tests both start it).

use std::path::PathBuf;

/// The nats-server program, from `PATH` or Debian's /usr/sbin.
pub fn nats_server_program() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}
