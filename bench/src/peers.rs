//! The tools a person would pick instead of `peermsg send` to move a file to another user,
//! run on this machine so that nothing leaves it:
//!
//! - **magic-wormhole** (Debian `magic-wormhole`, with `python3-magic-wormhole-mailbox-server`
//!   and `magic-wormhole-transit-relay`): a mailbox server and a transit relay on loopback
//!   ports, started once per run, then `wormhole send` and `wormhole receive` with a code of
//!   the run's own;
//! - **sendme** (iroh, `cargo install sendme`): `sendme send` imports (hashes) the file and
//!   prints a ticket, `sendme receive` fetches it over direct QUIC on loopback and exports
//!   it; no relay server (`--relay disabled`), the ticket carries the sender's addresses.
//!
//! Each is found or skipped with one line saying how to install it. What a transfer cost
//! is a [`Cost`]: wall time from the sender's start until the receiver has the whole file,
//! and the CPU seconds of sender, relay (mailbox and transit relay) and receiver.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{children_cpu, cpu_of, free_port, Killed};

/// What one transfer cost: wall seconds, and CPU seconds of sender, relay, receiver.
#[derive(Clone, Copy, Debug)]
pub struct Cost {
    /// From the sender's start to the whole file at the receiver.
    pub wall: f64,
    /// The sending process.
    pub sender: f64,
    /// Whatever sits between (a relay, a mailbox and transit relay; 0 for none).
    pub relay: f64,
    /// The receiving process.
    pub receiver: f64,
}

impl Cost {
    /// CPU seconds of every process.
    pub fn cpu(&self) -> f64 {
        self.sender + self.relay + self.receiver
    }
}

/// The Python with the magic-wormhole servers (Debian's).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// A program on the PATH, or `None`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Waits until something listens on loopback `port`, within 20 s.
fn listening(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// magic-wormhole on this machine: its mailbox server and transit relay.
pub struct Wormhole {
    wormhole: PathBuf,
    mailbox: Killed,
    transit: Killed,
    relay_url: String,
    transit_helper: String,
    /// Codes used so far (each transfer has its own).
    codes: u32,
}

/// What to print when magic-wormhole is missing.
pub const WORMHOLE_MISSING: &str = "magic-wormhole not found: its figures are skipped (install it: apt-get install magic-wormhole python3-magic-wormhole-mailbox-server magic-wormhole-transit-relay)";

impl Wormhole {
    /// Starts the mailbox server and the transit relay on loopback ports; `None` (with the
    /// reason printed) if magic-wormhole or its servers are not installed.
    pub fn start(dir: &Path) -> Option<Wormhole> {
        let servers = Command::new(SYSTEM_PYTHON)
            .args([
                "-c",
                "import wormhole_mailbox_server, wormhole_transit_relay",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let Some(wormhole) = on_path("wormhole").filter(|_| servers) else {
            eprintln!("{WORMHOLE_MISSING}");
            return None;
        };
        let (mailbox_port, transit_port) = (free_port(), free_port());
        let twisted = |args: &[String]| -> Option<Killed> {
            let child = Command::new(SYSTEM_PYTHON)
                .args(["-m", "twisted"])
                .args(args)
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            Some(Killed(child))
        };
        let mailbox = twisted(&[
            "wormhole-mailbox".into(),
            format!("--port=tcp:{mailbox_port}:interface=127.0.0.1"),
            format!("--channel-db={}", dir.join("mailbox.sqlite").display()),
        ])?;
        let transit = twisted(&[
            "transitrelay".into(),
            format!("--port=tcp:{transit_port}:interface=127.0.0.1"),
        ])?;
        if !listening(mailbox_port) || !listening(transit_port) {
            eprintln!("magic-wormhole's servers did not start: its figures are skipped");
            return None;
        }
        Some(Wormhole {
            wormhole,
            mailbox,
            transit,
            relay_url: format!("ws://127.0.0.1:{mailbox_port}/v1"),
            transit_helper: format!("tcp:127.0.0.1:{transit_port}"),
            codes: 0,
        })
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.wormhole);
        cmd.args(["--relay-url", &self.relay_url, "--transit-helper"])
            .arg(&self.transit_helper)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// `file` from `wormhole send` to `wormhole receive` into `dir` (removed after).
    pub fn transfer(&mut self, file: &Path, dir: &Path) -> Cost {
        self.codes += 1;
        let code = format!("{}-peermsg-bench", self.codes);
        let servers = || cpu_of(self.mailbox.0.id()) + cpu_of(self.transit.0.id());
        let servers_before = servers();
        let before = children_cpu();
        let started = Instant::now();
        let mut send = self.command();
        let mut send = send
            .args(["send", "--hide-progress", "--code", &code])
            .arg(file)
            .spawn()
            .expect("wormhole send starts");
        let out = dir.join("from-wormhole");
        let received = self
            .command()
            .args(["receive", "--hide-progress", "--accept-file", "-o"])
            .arg(&out)
            .arg(&code)
            .status()
            .expect("wormhole receive runs");
        let wall = started.elapsed().as_secs_f64();
        assert!(received.success(), "wormhole receive failed");
        let receiver = children_cpu() - before;
        assert!(
            send.wait().expect("wormhole send ends").success(),
            "wormhole send failed"
        );
        let sender = children_cpu() - before - receiver;
        check_same(file, &out);
        Cost {
            wall,
            sender,
            relay: servers() - servers_before,
            receiver,
        }
    }
}

/// What to print when sendme is missing.
pub const SENDME_MISSING: &str =
    "sendme not found: its figures are skipped (install it: cargo install sendme)";

/// sendme (iroh): found on the PATH, in `~/.cargo/bin`, or at `SENDME`.
pub struct Sendme {
    program: PathBuf,
}

impl Sendme {
    /// `None` (with the reason printed) if sendme is not installed.
    pub fn find() -> Option<Sendme> {
        let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/sendme"));
        let program = std::env::var_os("SENDME")
            .map(PathBuf::from)
            .or_else(|| on_path("sendme"))
            .or(home)
            .filter(|p| p.is_file());
        match program {
            Some(program) => Some(Sendme { program }),
            None => {
                eprintln!("{SENDME_MISSING}");
                None
            }
        }
    }

    /// `file` from `sendme send` to `sendme receive` in `dir` (removed after). The sender
    /// serves until it is stopped: its CPU is read once the receiver has the file.
    pub fn transfer(&self, file: &Path, dir: &Path) -> Cost {
        use std::io::{BufRead, BufReader};
        let work = dir.join("sendme");
        std::fs::create_dir_all(&work).unwrap();
        let started = Instant::now();
        // No relay server (none is reachable from here): the ticket carries the sender's
        // addresses, and the receiver dials them.
        let mut send = Command::new(&self.program)
            .args([
                "send",
                "--relay",
                "disabled",
                "--ticket-type",
                "addresses",
                "--no-progress",
            ])
            .arg(file)
            .current_dir(&work)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sendme send starts");
        // The ticket is printed as `sendme receive <ticket>`, on stdout or stderr.
        let (tx, rx) = std::sync::mpsc::channel();
        for out in [
            Box::new(send.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(send.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(ticket) = line.split("sendme receive ").nth(1) {
                        let _ = tx.send(ticket.trim().to_string());
                    }
                }
            });
        }
        let send = Killed(send);
        let ticket = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("sendme send printed a ticket");
        let into = dir.join("sendme-in");
        std::fs::create_dir_all(&into).unwrap();
        let before = children_cpu();
        let received = Command::new(&self.program)
            .args(["receive", "--relay", "disabled", "--no-progress", &ticket])
            .current_dir(&into)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("sendme receive runs");
        let wall = started.elapsed().as_secs_f64();
        assert!(received.success(), "sendme receive failed");
        let receiver = children_cpu() - before;
        let sender = cpu_of(send.0.id());
        drop(send);
        let name = file.file_name().unwrap();
        check_same(file, &into.join(name));
        let _ = std::fs::remove_dir_all(&work);
        let _ = std::fs::remove_dir_all(&into);
        Cost {
            wall,
            sender,
            relay: 0.0,
            receiver,
        }
    }
}

/// The received file is the sent one (same size, same first and last MiB), then removed.
fn check_same(sent: &Path, received: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let size = std::fs::metadata(sent).unwrap().len();
    let got = std::fs::metadata(received)
        .unwrap_or_else(|e| panic!("{}: {e}", received.display()))
        .len();
    assert_eq!(got, size, "{} arrived whole", received.display());
    let part = |path: &Path, at: u64| {
        let mut f = std::fs::File::open(path).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        let mut buf = vec![0u8; (1 << 20).min(size as usize)];
        f.read_exact(&mut buf).unwrap();
        buf
    };
    let last = size.saturating_sub(1 << 20);
    assert!(part(sent, 0) == part(received, 0) && part(sent, last) == part(received, last));
    let _ = std::fs::remove_file(received);
}
