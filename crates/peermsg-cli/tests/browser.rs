//! The web client in a real browser: headless Chromium, driven through ChromeDriver,
//! loads the page a `peermsg relay --ws-listen --web` process serves, and two users in two
//! browsers, and users of the program, send each other commands and files: progress,
//! cancel, a relay killed and started again in the middle of a file; and, sealed end to
//! end, a browser and the program exchange commands and a file the relay cannot read. A
//! screenshot of the page is kept in `target/browser/page.png`.
//!
//! It needs `chromium`, `chromedriver`, the wasm32 target and `wasm-bindgen` (the page is
//! built by `crates/peermsg-web/build.sh`); without them it returns at once and one line
//! says so, unless `PEERMSG_REQUIRE_BROWSER` is set (`.ci/run` installs them and sets it),
//! when it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, contains, listen_sealed, port, recording_proxy, spawn_relay, Killed};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use sha2::{Digest, Sha256};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether everything the test needs is here: if not, says so once (or fails, with
/// `PEERMSG_REQUIRE_BROWSER`).
fn browser_here() -> bool {
    let mut missing: Vec<&str> = ["chromium", "chromedriver", "wasm-bindgen"]
        .into_iter()
        .filter(|program| {
            Command::new(program)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .collect();
    let wasm_std = Command::new("rustc")
        .args([
            "--print",
            "target-libdir",
            "--target",
            "wasm32-unknown-unknown",
        ])
        .output()
        .ok()
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if !wasm_std.is_some_and(|dir| dir.is_dir()) {
        missing.push("the wasm32-unknown-unknown target");
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{} not installed (apt-get install chromium chromium-driver; cargo install \
         wasm-bindgen-cli --version 0.2.130; rustup target add wasm32-unknown-unknown)",
        missing.join(", ")
    );
    if std::env::var_os("PEERMSG_REQUIRE_BROWSER").is_some() {
        panic!("{why} and PEERMSG_REQUIRE_BROWSER is set");
    }
    // Past the test harness's capture, so `cargo test` shows it.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: the browser tests ({why})");
    false
}

/// Builds the page's wasm (in a target directory of its own: the one of this test run is
/// locked while it runs); the folder to serve.
fn build_web() -> PathBuf {
    let root = workspace();
    let status = Command::new("bash")
        .arg(root.join("crates/peermsg-web/build.sh"))
        .env("CARGO_TARGET_DIR", root.join("target/web"))
        .status()
        .unwrap();
    assert!(status.success(), "crates/peermsg-web/build.sh failed");
    root.join("crates/peermsg-web/www")
}

struct Relay {
    tcp: String,
    ws: String,
    web: PathBuf,
}

impl Relay {
    /// A relay's addresses on free ports, serving the page built here.
    fn new() -> Relay {
        Relay {
            tcp: format!("127.0.0.1:{}", port()),
            ws: format!("127.0.0.1:{}", port()),
            web: build_web(),
        }
    }

    fn start(&self) -> Killed {
        let mut cmd = bin();
        cmd.args([
            "relay",
            "--listen",
            &self.tcp,
            "--ws-listen",
            &self.ws,
            "--web",
        ])
        .arg(&self.web);
        spawn_relay(cmd)
    }
}

/// ChromeDriver on a free port, and a way to open browsers through it.
struct Driver {
    _process: Killed,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let port = port();
        let process = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver {
            _process: Killed(process),
            url,
        }
    }

    /// A headless Chromium with the page of `relay`, logged in as `user`.
    async fn browser(&self, relay: &Relay, user: &str, to: &str) -> Client {
        self.browser_with(relay, user, to, "").await
    }

    /// [`Driver::browser`] with `more` added to the page's query (`&e2e`).
    async fn browser_with(&self, relay: &Relay, user: &str, to: &str, more: &str) -> Client {
        let mut caps = serde_json::map::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1100,1000"],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a browser session");
        let page = format!("http://{}/?user={user}&to={to}&login{more}", relay.ws);
        client.goto(&page).await.unwrap();
        wait_for(
            &client,
            "connected",
            "return document.getElementById('state').textContent === 'connected'",
        )
        .await;
        client
    }
}

/// Runs `script` in the page until it returns true, within a minute.
async fn wait_for(client: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let value = client.execute(script, vec![]).await.unwrap();
        if value == json!(true) {
            return;
        }
        if Instant::now() > deadline {
            let log = text(client, "return document.getElementById('log').innerText").await;
            panic!("{what}: not within a minute; the page's log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text(client: &Client, script: &str) -> String {
    match client.execute(script, vec![]).await.unwrap() {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// The newest send's status in the page: its data attributes.
async fn newest_send(client: &Client, attribute: &str) -> String {
    text(
        client,
        &format!("const li = document.querySelector('#sends li'); return li ? (li.dataset.{attribute} ?? '') : ''"),
    )
    .await
}

async fn choose_file(client: &Client, path: &Path) {
    let input = client.find(Locator::Id("file")).await.unwrap();
    input.send_keys(path.to_str().unwrap()).await.unwrap();
}

async fn click(client: &Client, id: &str) {
    client
        .find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A file of `size` bytes that are not all alike; its path and SHA-256.
fn make_file(dir: &Path, name: &str, size: usize) -> (PathBuf, String) {
    let mut content = vec![0u8; size];
    let mut x = 0x9e37_79b9_u32;
    for b in content.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let path = dir.join(name);
    std::fs::write(&path, &content).unwrap();
    (path, sha256(&content))
}

/// `peermsg listen` as `user` through `relay`, saving into `dir`.
fn listen(relay: &Relay, user: &str, dir: &Path) -> Killed {
    let mut listen = bin();
    listen
        .args(["listen", "--server", &relay.tcp, "--user", user, "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Killed(listen.spawn().unwrap())
}

/// Waits until the page has a received file with `sha`.
async fn received_file(client: &Client, sha: &str) {
    let script = format!(
        "return [...document.querySelectorAll('#received li[data-kind=file]')].some(li => li.dataset.sha256 === '{sha}')"
    );
    wait_for(client, "the file received whole", &script).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_and_the_program_exchange_commands_and_files_through_a_relay() {
    if !browser_here() {
        return;
    }
    let relay = Relay::new();
    let mut relay_process = relay.start();
    let driver = Driver::start().await;
    let alice = driver.browser(&relay, "alice", "bob").await;
    let bob = driver.browser(&relay, "bob", "alice").await;
    let dir = tempfile::tempdir().unwrap();

    // A command, shown to bob, delivered to alice.
    click(&alice, "send-cmd").await;
    wait_for(&bob, "the command", "return [...document.querySelectorAll('#received li[data-kind=command]')].some(li => li.textContent.includes('hello'))").await;
    wait_for(
        &alice,
        "the command's result",
        "return document.querySelector('#sends li')?.dataset.code === '0'",
    )
    .await;

    // A 50 MiB file, chosen in the page, with progress on the way.
    let (file, sha) = make_file(dir.path(), "fifty.bin", 50 << 20);
    choose_file(&alice, &file).await;
    click(&alice, "send-file").await;
    let mut seen = std::collections::BTreeSet::new();
    while newest_send(&alice, "code").await.is_empty() {
        if let Ok(sent) = newest_send(&alice, "sent").await.parse::<u64>() {
            seen.insert(sent);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(newest_send(&alice, "code").await, "0");
    received_file(&bob, &sha).await;
    let between = seen.iter().filter(|s| **s > 0 && **s < 50 << 20).count();
    assert!(between >= 1, "progress seen on the way: {seen:?}");
    let shot = alice.screenshot().await.unwrap();
    let artifacts = workspace().join("target/browser");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("page.png"), shot).unwrap();

    // Cancelled as it begins: CANCELLED, and bob gets nothing of it.
    choose_file(&alice, &file).await;
    alice
        .execute(
            "document.getElementById('send-file').click(); \
             document.querySelector('#sends li .cancel').click();",
            vec![],
        )
        .await
        .unwrap();
    wait_for(
        &alice,
        "the cancel's result",
        "return document.querySelector('#sends li')?.dataset.code !== undefined",
    )
    .await;
    let cancelled = newest_send(&alice, "code").await;
    assert_eq!(
        cancelled,
        peermsg::ErrorCode::CANCELLED.as_u32().to_string()
    );

    // The program to a browser, and a browser to the program.
    let (small, small_sha) = make_file(dir.path(), "from-cli.bin", 3 << 20);
    let out = bin()
        .args([
            "send", "--server", &relay.tcp, "--user", "carol", "--to", "bob", "--file",
        ])
        .arg(&small)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    received_file(&bob, &small_sha).await;
    let inbox = tempfile::tempdir().unwrap();
    let _dave = listen(&relay, "dave", inbox.path());
    tokio::time::sleep(Duration::from_millis(500)).await;
    alice
        .execute("document.getElementById('to').value = 'dave'", vec![])
        .await
        .unwrap();
    choose_file(&alice, &small).await;
    click(&alice, "send-file").await;
    wait_for(
        &alice,
        "the file to the program",
        "return document.querySelector('#sends li')?.dataset.code === '0'",
    )
    .await;
    let saved = std::fs::read(inbox.path().join("from-cli.bin")).unwrap();
    assert_eq!(sha256(&saved), small_sha);

    // The relay killed in the middle of a file and started again: the browser dials
    // again and the file goes on from what bob holds.
    alice
        .execute("document.getElementById('to').value = 'bob'", vec![])
        .await
        .unwrap();
    let (big, big_sha) = make_file(dir.path(), "big.bin", 200 << 20);
    choose_file(&alice, &big).await;
    click(&alice, "send-file").await;
    wait_for(&bob, "a part of the big file", "const r = document.getElementById('state').dataset.receiving; if (!r) return false; const [got, total] = r.split('/').map(Number); return total === 209715200 && got > 20 * 1048576").await;
    drop(relay_process);
    tokio::time::sleep(Duration::from_secs(1)).await;
    relay_process = relay.start();
    wait_for(
        &alice,
        "the big file's result",
        "return document.querySelector('#sends li')?.dataset.code !== undefined",
    )
    .await;
    assert_eq!(newest_send(&alice, "code").await, "0");
    let resumed: u64 = newest_send(&alice, "resumedAt")
        .await
        .parse()
        .expect("resumed");
    assert!(resumed > 0, "resumed at {resumed}");
    received_file(&bob, &big_sha).await;
    drop(relay_process);

    let _ = alice.close().await;
    let _ = bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealing_browser_and_the_program_exchange_what_the_relay_cannot_read() {
    if !browser_here() {
        return;
    }
    let relay = Relay::new();
    let _relay = relay.start();
    // The program's users reach the relay through a proxy that keeps every byte.
    let (proxy, seen) = recording_proxy(&relay.tcp);
    let (keys, inbox, dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (_bob, mut bob) = listen_sealed(&proxy, "bob", inbox.path(), &keys.path().join("bob"));
    let driver = Driver::start().await;
    let alice = driver.browser_with(&relay, "alice", "bob", "&e2e").await;

    // The browser's command and file reach the program, sealed; each learns the other's key.
    let command = "browser-secret-7f3a9c-sealed";
    let set = format!("document.getElementById('cmd').value = '{command}'");
    alice.execute(&set, vec![]).await.unwrap();
    click(&alice, "send-cmd").await;
    let got = bob.until(|v| v["event"] == "cmd_received");
    assert_eq!(got["data"], command, "{got}");
    wait_for(
        &alice,
        "the command's result",
        "return document.querySelector('#sends li')?.dataset.code === '0'",
    )
    .await;
    wait_for(
        &alice,
        "bob's key learned",
        "return document.getElementById('state').dataset.key_bob === 'learned'",
    )
    .await;
    let (file, sha) = make_file(dir.path(), "sealed.bin", 3 << 20);
    let content = std::fs::read(&file).unwrap();
    choose_file(&alice, &file).await;
    click(&alice, "send-file").await;
    let got = bob.until(|v| v["event"] == "file_received");
    let kept = std::fs::read(got["path"].as_str().unwrap()).unwrap();
    assert_eq!(sha256(&kept), sha);
    assert_eq!(got["org_file_name"], "sealed.bin", "{got}");

    // The program's sealed command and file to the browser.
    let back = "program-secret-51c0de-sealed";
    let (small, small_sha) = make_file(dir.path(), "back.bin", 1 << 20);
    for what in [vec!["--cmd", back], vec!["--file", small.to_str().unwrap()]] {
        let out = bin()
            .args([
                "send", "--e2e", "--server", &proxy, "--user", "carol", "--to", "alice",
            ])
            .arg("--keys")
            .arg(keys.path().join("carol"))
            .args(what)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{said}");
    }
    let shown = format!("return [...document.querySelectorAll('#received li[data-kind=command]')].some(li => li.textContent.includes('{back}'))");
    wait_for(&alice, "the program's sealed command", &shown).await;
    received_file(&alice, &small_sha).await;

    // What crossed between the relay and the program: none of it in the clear.
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > (4 << 20), "{} bytes crossed", seen.len());
    assert!(!contains(&seen, command.as_bytes()));
    assert!(!contains(&seen, back.as_bytes()));
    assert!(!contains(&seen, b"sealed.bin"));
    assert!(!contains(&seen, &content[1 << 20..(1 << 20) + 64]));
    let _ = alice.close().await;
}

/// A measurement, not a check: a 256 MiB file (new each round) from a browser to `peermsg listen`, against
/// the same file from `peermsg send`, through one relay, alternated three times. Run:
/// `cargo test --release -p peermsg-cli --test browser -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (PERFORMANCE.md): run with --release -- --ignored --nocapture"]
async fn measure_a_file_from_a_browser_against_one_from_the_program() {
    if !browser_here() {
        return;
    }
    let relay = Relay::new();
    let _relay = relay.start();
    let driver = Driver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let size = 256usize << 20;
    let inbox = tempfile::tempdir().unwrap();
    let _dave = listen(&relay, "dave", inbox.path());
    let alice = driver.browser(&relay, "alice", "dave").await;
    let mib = (size >> 20) as f64;
    let (mut browser, mut program) = (Vec::new(), Vec::new());
    for round in 0..3 {
        // A new file each time: the program's keys would find one delivered before.
        let (file, _) = make_file(dir.path(), &format!("measure-{round}.bin"), size);
        let started = Instant::now();
        let out = bin()
            .args([
                "send", "--server", &relay.tcp, "--user", "carol", "--to", "dave", "--file",
            ])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success());
        program.push(mib / started.elapsed().as_secs_f64());

        choose_file(&alice, &file).await;
        let started = Instant::now();
        click(&alice, "send-file").await;
        wait_for(
            &alice,
            "the file's result",
            "return document.querySelector('#sends li')?.dataset.code !== undefined",
        )
        .await;
        browser.push(mib / started.elapsed().as_secs_f64());
        assert_eq!(newest_send(&alice, "code").await, "0");
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (b, p) = (median(&mut browser), median(&mut program));
    println!("256 MiB to peermsg listen: browser {b:.0} MiB/s, peermsg send {p:.0} MiB/s, browser/program {:.2}", b / p);
    println!("  browser runs {browser:.0?}, program runs {program:.0?}");
}
