//! TLS through the program: a relay with a certificate made for the run or read from files
//! (reloaded on SIGHUP), clients that trust it by pin or by CA, and clients that must not
//! get through (a wrong pin, an untrusted certificate, plain TCP to a TLS relay).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, port, Killed};

/// A relay started with `args`, and the lines it printed when it started (up to `lines`).
fn relay(args: &[&str], lines: usize) -> (Killed, Vec<String>) {
    let mut child = bin()
        .arg("relay")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut said = Vec::new();
    for _ in 0..lines {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        said.push(line);
    }
    std::thread::spawn(move || for _ in out.lines() {});
    (Killed(child), said)
}

/// The fingerprint a self-signed relay printed for its clients' `--pin`, among `said`.
fn pin_of(said: &[String]) -> String {
    let line = said.iter().find(|l| l.contains("--pin")).expect("the pin");
    line.split_whitespace().last().unwrap().to_string()
}

/// A command from alice to nobody through `server` with `trust` flags: the login is what
/// is checked (OFFLINE, exit status 3, means it went through).
fn send(server: &str, trust: &[&str]) -> std::process::Output {
    bin()
        .args(["send", "--server", server, "--user", "alice", "--to", "bob"])
        .args(trust)
        .args(["--cmd", "hi", "--json", "--timeout", "5"])
        .output()
        .unwrap()
}

fn went_through(out: &std::process::Output) -> bool {
    out.status.code() == Some(3) && String::from_utf8_lossy(&out.stdout).contains("OFFLINE")
}

#[test]
fn a_self_signed_relay_is_reached_by_its_pin_only() {
    let addr = format!("127.0.0.1:{}", port());
    let (_relay, said) = relay(&["--listen", &addr, "--tls-self-signed"], 3);
    let pin = &pin_of(&said);
    let server = format!("tls://{addr}");
    let out = send(&server, &["--pin", pin]);
    assert!(went_through(&out), "{out:?}");
    // The pin with its last digit changed: one that ends in 0 was itself before.
    let last = if pin.ends_with('0') { "1" } else { "0" };
    let wrong = format!("{}{last}", &pin[..63]);
    let out = send(&server, &["--pin", &wrong]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pin"), "one clear line: {err}");
    // Trusting the web's authorities, the self-signed certificate is refused.
    let out = send(&server, &[]);
    assert_eq!(out.status.code(), Some(1));
    // Plain TCP to a TLS relay fails cleanly and fast.
    let started = Instant::now();
    let out = send(&format!("tcp://{addr}"), &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A certificate for localhost made by openssl in `dir`, as `name.pem` and `name.key`.
fn certificate(dir: &Path, name: &str) -> bool {
    Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        // A leaf, trusted as itself (not an authority).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.pem")))
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A relay speaking TLS with `dir`'s `relay.pem` and `relay.key`, made from its `first`
/// pair; its port.
fn relay_with_files(dir: &Path) -> (Killed, u16) {
    let (cert, key) = (dir.join("relay.pem"), dir.join("relay.key"));
    std::fs::copy(dir.join("first.pem"), &cert).unwrap();
    std::fs::copy(dir.join("first.key"), &key).unwrap();
    let port = port();
    let listen = format!("127.0.0.1:{port}");
    let (relay, _) = relay(
        &[
            "--listen",
            &listen,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        3,
    );
    (relay, port)
}

/// SIGHUP to `relay`, and time for it to read its files again.
fn hang_up(relay: &Killed) {
    let hup = Command::new("kill")
        .args(["-HUP", &relay.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn a_relay_with_certificate_files_is_trusted_by_its_ca_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    if !certificate(dir.path(), "first") || !certificate(dir.path(), "second") {
        eprintln!("skipped: openssl cannot make certificates here");
        return;
    }
    let (cert, key) = (dir.path().join("relay.pem"), dir.path().join("relay.key"));
    let (relay, port) = relay_with_files(dir.path());
    let server = format!("tls://localhost:{port}");
    let ca = |name: &str| dir.path().join(format!("{name}.pem"));
    let (first, second) = (ca("first"), ca("second"));
    let trusting = |pem: &Path| went_through(&send(&server, &["--ca", pem.to_str().unwrap()]));
    assert!(trusting(&first));
    assert!(!trusting(&second));
    // New files and a SIGHUP: new connections get the new certificate.
    std::fs::copy(dir.path().join("second.pem"), &cert).unwrap();
    std::fs::copy(dir.path().join("second.key"), &key).unwrap();
    hang_up(&relay);
    assert!(trusting(&second));
    assert!(!trusting(&first));
}

#[test]
fn a_certificate_and_a_key_that_do_not_match_are_refused_at_start_and_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    if !certificate(dir.path(), "first") || !certificate(dir.path(), "second") {
        eprintln!("skipped: openssl cannot make certificates here");
        return;
    }
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    // first's certificate with second's key: refused at once, in one line.
    let listen = format!("127.0.0.1:{}", port());
    let out = bin()
        .args([
            "relay",
            "--listen",
            &listen,
            "--tls-cert",
            &file("first.pem"),
        ])
        .args(["--tls-key", &file("second.key")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not belong to the certificate"), "{err}");
    // A matching pair runs; a mismatched pair on SIGHUP is refused and the old one stays.
    let (relay, port) = relay_with_files(dir.path());
    let server = format!("tls://localhost:{port}");
    let trusting = || went_through(&send(&server, &["--ca", &file("first.pem")]));
    assert!(trusting());
    std::fs::copy(dir.path().join("second.key"), dir.path().join("relay.key")).unwrap();
    hang_up(&relay);
    assert!(trusting(), "the old pair stays");
}

#[test]
fn a_self_signed_relay_keeps_its_pin_across_a_restart_with_tls_state() {
    let state = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", port());
    let args = [
        "--listen",
        &listen,
        "--tls-self-signed",
        "--tls-state",
        state.path().to_str().unwrap(),
    ];
    let (first, said) = relay(&args, 3);
    let pin = pin_of(&said);
    drop(first);
    let (_again, said) = relay(&args, 3);
    assert_eq!(pin_of(&said), pin, "the same certificate after a restart");
    // A pin means TLS, on a bare loopback address too (it meant plain TCP, and failed).
    let out = send(&listen, &["--pin", &pin]);
    assert!(went_through(&out), "{out:?}");
}

/// A file from alice to bob through a self-signed TLS relay started with `extra`: what bob
/// keeps.
fn file_through_tls_relay(extra: &[&str], payload: &[u8]) -> Vec<u8> {
    let listen = format!("127.0.0.1:{}", port());
    let mut args = vec!["--listen", &listen, "--tls-self-signed"];
    args.extend_from_slice(extra);
    let (_relay, said) = relay(&args, 3);
    let pin = &pin_of(&said);
    let server = format!("tls://{listen}");
    let (inbox, src) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut bob = bin()
        .args(["listen", "--server", &server, "--pin", pin, "--user", "bob"])
        .args(["--json", "--dir"])
        .arg(inbox.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = common::Lines::of(&mut bob);
    let _bob = Killed(bob);
    lines.until(|v| v["event"] == "ready");
    let file = src.path().join("payload.bin");
    std::fs::write(&file, payload).unwrap();
    let out = bin()
        .args(["send", "--server", &server, "--pin", pin, "--user", "alice"])
        .args(["--to", "bob", "--file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let kept = lines.until(|v| v["event"] == "file_received");
    std::fs::read(kept["path"].as_str().unwrap()).unwrap()
}

#[test]
fn a_tls_relay_carries_a_file_whole_on_one_thread_and_on_several() {
    // Larger than a read, a TLS record and a transfer window: many of each.
    let payload: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert!(file_through_tls_relay(&[], &payload) == payload);
    assert!(file_through_tls_relay(&["--threads", "2"], &payload) == payload);
    // No thread at all is refused before it starts, in one line.
    let out = bin()
        .args(["relay", "--listen", "127.0.0.1:0", "--threads", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--threads"), "{err}");
}
