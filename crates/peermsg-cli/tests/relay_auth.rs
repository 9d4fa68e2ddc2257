//! Who may log in, through the program: a relay with no authentication refuses to serve an
//! address other machines reach unless told `--open`; tokens minted by `peermsg token`
//! (HMAC, and Ed25519 with keys made by openssl) log in, and a forged one is refused with
//! its code.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, port, spawn_relay};

/// `peermsg token` with these arguments, its token.
fn mint(args: &[&str], key: &Path) -> String {
    let out = bin().arg("token").args(args).arg(key).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A command to `bob` from `user` with `token` through the relay at `addr`.
fn send_as(addr: &str, user: &str, token: &str) -> std::process::Output {
    bin()
        .args(["send", "--server", addr, "--user", user, "--to", "bob"])
        .args(["--cmd", "hi", "--json"])
        .env("PEERMSG_TOKEN", token)
        .output()
        .unwrap()
}

#[test]
fn an_open_relay_serves_loopback_only_unless_told() {
    let addr = format!("0.0.0.0:{}", port());
    let started = Instant::now();
    let out = bin().args(["relay", "--listen", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to run an open relay"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // With --open it runs (and says anyone may log in as anyone).
    let mut open = bin();
    open.args(["relay", "--listen", &addr, "--open"]);
    let _relay = spawn_relay(open);
}

#[test]
fn tokens_minted_by_the_program_log_in_and_forged_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a long random secret of 32 bytes or more\n").unwrap();
    let addr = format!("127.0.0.1:{}", port());
    let mut relay = bin();
    relay
        .args(["relay", "--listen", &addr, "--token-secret-file"])
        .arg(&secret);
    let _relay = spawn_relay(relay);
    // bob listens with a token of his own; alice's token gets her command to him.
    let bob_token = mint(&["--user", "bob", "--ttl", "10m", "--secret-file"], &secret);
    let mut listener = bin()
        .args(["listen", "--server", &addr, "--user", "bob", "--dir"])
        .arg(dir.path())
        .env("PEERMSG_TOKEN", &bob_token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let alice_token = mint(
        &["--user", "alice", "--ttl", "1h", "--secret-file"],
        &secret,
    );
    let out = send_as(&addr, "alice", &alice_token);
    assert!(out.status.success(), "{out:?}");
    // Alice's token does not make mallory alice, nor anyone bob.
    let out = send_as(&addr, "mallory", &alice_token);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOKEN_WRONG_USER"));
    let forged = dir.path().join("guess");
    std::fs::write(&forged, "a guess at the secret, 32 bytes or more").unwrap();
    let out = send_as(
        &addr,
        "alice",
        &mint(&["--user", "alice", "--secret-file"], &forged),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOKEN_BAD_SIGNATURE"));
    let _ = listener.kill();
    let _ = listener.wait();
}

#[test]
fn an_empty_or_short_token_secret_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    for short in ["", "\n", "only 31 bytes, a guessable one\n"] {
        std::fs::write(&secret, short).unwrap();
        let addr = format!("127.0.0.1:{}", port());
        let out = bin()
            .args(["relay", "--listen", &addr, "--token-secret-file"])
            .arg(&secret)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{short:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("at least 32 bytes") && !err.contains("may log in"),
            "{short:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{out:?}");
        // Nor does the program mint a token with it.
        let out = bin()
            .args(["token", "--user", "alice", "--secret-file"])
            .arg(&secret)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32 bytes"));
    }
}

#[test]
fn ed25519_tokens_need_only_the_public_key_at_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("private.pem");
    let public = dir.path().join("public.pem");
    let made = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&private)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: openssl cannot make an Ed25519 key here");
        return;
    }
    let exported = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap();
    assert!(exported.success());
    let addr = format!("127.0.0.1:{}", port());
    let mut relay = bin();
    relay
        .args(["relay", "--listen", &addr, "--token-public-key"])
        .arg(&public)
        .args(["--token-audience", "chat"]);
    let _relay = spawn_relay(relay);
    let token = mint(
        &["--user", "alice", "--audience", "chat", "--private-key"],
        &private,
    );
    // No bob: the login itself is what is checked (OFFLINE means it was accepted).
    let out = send_as(&addr, "alice", &token);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("OFFLINE"));
    let other = mint(&["--user", "alice", "--private-key"], &private);
    let out = send_as(&addr, "alice", &other);
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOKEN_WRONG_AUDIENCE"));
}
