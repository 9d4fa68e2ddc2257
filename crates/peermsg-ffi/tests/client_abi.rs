//! The SDK's calls as C makes them (called here through the same `extern "C"` functions):
//! what bad arguments give, what each callback is told, and the thread rules.

mod support;

use std::ffi::{c_char, c_void, CStr};
use std::ptr::{null, null_mut};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use peermsg::client::Event;
use peermsg_ffi::client::*;
use peermsg_ffi::*;
use peermsg_tokio::ClientEvent;

/// What the callbacks heard, one line each.
#[derive(Default)]
struct Heard {
    lines: Mutex<Vec<String>>,
    client: Mutex<usize>,
    /// While set, the buffer callback does not return.
    hold_buffers: std::sync::atomic::AtomicBool,
}

impl Heard {
    fn push(ctx: *mut c_void, line: String) {
        // SAFETY: ctx is the test's `Heard`, alive for the whole test.
        let heard = unsafe { &*(ctx as *const Heard) };
        heard.lines.lock().unwrap().push(line);
    }

    fn wait_for(&self, line: &str) {
        let until = Instant::now() + Duration::from_secs(10);
        while !self.lines.lock().unwrap().iter().any(|l| l == line) {
            assert!(
                Instant::now() < until,
                "no '{line}' in {:?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

unsafe fn text(p: *const c_char) -> String {
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

unsafe extern "C" fn state(ctx: *mut c_void, state: i32, code: i32) {
    Heard::push(ctx, format!("state {state} {code}"));
}

unsafe extern "C" fn cmd_rlst(ctx: *mut c_void, id: u64, code: i32, cookie: u64) {
    Heard::push(ctx, format!("cmd_rlst {id} {code} {cookie}"));
}

unsafe extern "C" fn notify_cmd(
    ctx: *mut c_void,
    from: *const c_char,
    data: *const u8,
    len: usize,
) {
    let data = unsafe { std::slice::from_raw_parts(data, len) };
    let from = unsafe { text(from) };
    Heard::push(
        ctx,
        format!("cmd from {from}: {}", String::from_utf8_lossy(data)),
    );
    if data == b"free yourself" {
        // SAFETY: the client the test stored; freeing it from a callback must be refused.
        let client = unsafe { &*(ctx as *const Heard) }
            .client
            .lock()
            .unwrap()
            .to_owned();
        let code = unsafe { pm_client_free(client as *mut PmClient) };
        Heard::push(ctx, format!("free from a callback: {code}"));
    }
}

unsafe extern "C" fn notify_buffer(
    ctx: *mut c_void,
    from: *const c_char,
    _data: *const u8,
    len: usize,
) {
    let from = unsafe { text(from) };
    Heard::push(ctx, format!("buffer from {from}: {len} bytes"));
    // SAFETY: ctx is the test's `Heard`.
    let heard = unsafe { &*(ctx as *const Heard) };
    while heard
        .hold_buffers
        .load(std::sync::atomic::Ordering::Acquire)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn callbacks(heard: &Heard) -> PmCallbacks {
    PmCallbacks {
        ctx: heard as *const Heard as *mut c_void,
        connection_state: Some(state),
        send_cmd_rlst: Some(cmd_rlst),
        send_buffer_rlst: None,
        send_file_rlst: None,
        send_progress: None,
        notify_cmd_data: Some(notify_cmd),
        notify_buffer_data: Some(notify_buffer),
        notify_file_data: None,
        peer_key: Some(peer_key),
    }
}

unsafe extern "C" fn peer_key(ctx: *mut c_void, user: *const c_char, key: *const u8, status: u64) {
    let user = unsafe { text(user) };
    let key = match key.is_null() {
        true => "none".to_string(),
        false => unsafe { std::slice::from_raw_parts(key, 32) }
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    };
    Heard::push(ctx, format!("peer_key {user} {key} {status}"));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn bad_arguments_give_error_numbers_not_crashes() {
    unsafe {
        assert_eq!(pm_client_new(null_mut()), PM_PARAM_ERR);
        let mut client = null_mut();
        assert_eq!(pm_client_new(&mut client), PM_NOERR);
        let mut id = 0u64;
        // Before login.
        assert_eq!(
            pm_send_cmd(client, c"bob".as_ptr(), b"x".as_ptr(), 1, 0, &mut id),
            PM_NOT_LOGIN
        );
        assert_eq!(pm_cancel_send(client, 1, 0), PM_NOT_LOGIN);
        assert_eq!(pm_set_callbacks(client, null()), PM_PARAM_ERR);
        assert_eq!(pm_set_callbacks(null_mut(), null()), PM_PARAM_ERR);
        let not_utf8 = c"\xc3\x28".as_ptr();
        assert_eq!(
            pm_login(client, null(), c"a".as_ptr(), null(), null()),
            PM_PARAM_ERR
        );
        assert_eq!(
            pm_login(client, c"127.0.0.1:1".as_ptr(), not_utf8, null(), null()),
            PM_PARAM_ERR
        );
        // Nobody listens there.
        assert_eq!(
            pm_login(
                client,
                c"127.0.0.1:1".as_ptr(),
                c"alice".as_ptr(),
                null(),
                null()
            ),
            PM_CONNECTIONLOST
        );
        assert_eq!(
            pm_login(
                client,
                c"127.0.0.1:1".as_ptr(),
                c"".as_ptr(),
                null(),
                null()
            ),
            PM_PARAM_ERR
        );

        let runtime = tokio::runtime::Runtime::new().unwrap();
        let relay = support::relay(&runtime);
        let relay = std::ffi::CString::new(relay).unwrap();
        let inbox = tempfile::tempdir().unwrap();
        let dir = std::ffi::CString::new(inbox.path().to_str().unwrap()).unwrap();
        assert_eq!(
            pm_login(
                client,
                relay.as_ptr(),
                c"alice".as_ptr(),
                null(),
                dir.as_ptr()
            ),
            PM_NOERR
        );
        assert_eq!(
            pm_login(
                client,
                relay.as_ptr(),
                c"alice".as_ptr(),
                null(),
                dir.as_ptr()
            ),
            PM_PARAM_ERR,
            "logged in already"
        );
        assert_eq!(
            pm_send_cmd(client, not_utf8, b"x".as_ptr(), 1, 0, &mut id),
            PM_PARAM_ERR
        );
        assert_eq!(
            pm_send_cmd(client, null(), b"x".as_ptr(), 1, 0, &mut id),
            PM_PARAM_ERR
        );
        assert_eq!(
            pm_send_cmd(client, c"bob".as_ptr(), null(), 1, 0, &mut id),
            PM_PARAM_ERR
        );
        assert_eq!(
            pm_send_cmd(client, c"bob".as_ptr(), b"x".as_ptr(), 1, 0, null_mut()),
            PM_PARAM_ERR
        );
        assert_eq!(
            pm_send_buffer(client, c"".as_ptr(), b"x".as_ptr(), 1, 0, &mut id),
            PM_PARAM_ERR
        );
        assert_eq!(
            pm_send_file(
                client,
                c"bob".as_ptr(),
                c"/no/such/file".as_ptr(),
                0,
                &mut id
            ),
            PM_FILE_NOT_EXIST
        );
        assert_eq!(
            pm_send_file(client, c"bob".as_ptr(), not_utf8, 0, &mut id),
            PM_PARAM_ERR
        );
        assert_eq!(pm_cancel_send(client, 12345, 0), PM_TRANSID_INVALID);
        assert_eq!(pm_cancel_send(null_mut(), 12345, 0), PM_PARAM_ERR);
        assert_eq!(pm_logout(client), PM_NOERR);
        assert_eq!(
            pm_send_cmd(client, c"bob".as_ptr(), b"x".as_ptr(), 1, 0, &mut id),
            PM_NOT_LOGIN
        );
        assert_eq!(pm_client_free(client), PM_NOERR);
        assert_eq!(pm_client_free(null_mut()), PM_NOERR);
    }
}

#[test]
fn callbacks_tell_results_messages_and_the_connection_on_their_own_thread() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let relay = support::relay(&runtime);
    let inbox = tempfile::tempdir().unwrap();
    let (bob, mut bob_events) = support::rust_user(&runtime, &relay, "bob", inbox.path());
    let heard = Heard::default();
    unsafe {
        let mut client = null_mut();
        assert_eq!(pm_client_new(&mut client), PM_NOERR);
        *heard.client.lock().unwrap() = client as usize;
        assert_eq!(pm_set_callbacks(client, &callbacks(&heard)), PM_NOERR);
        let relay = std::ffi::CString::new(relay).unwrap();
        assert_eq!(
            pm_login(
                client,
                relay.as_ptr(),
                c"alice".as_ptr(),
                c"".as_ptr(),
                null()
            ),
            PM_NOERR
        );
        heard.wait_for(&format!("state {PM_STATE_CONNECTED} 0"));

        // A command to bob: its result with its cookie, once bob has it.
        let mut id = 0;
        assert_eq!(
            pm_send_cmd(client, c"bob".as_ptr(), b"hi bob".as_ptr(), 6, 77, &mut id),
            PM_NOERR
        );
        let got = runtime.block_on(async {
            loop {
                if let Some(ClientEvent::Core(Event::CmdReceived { from, data, .. })) =
                    bob_events.recv().await
                {
                    break (from, data);
                }
            }
        });
        assert_eq!((got.0.as_str(), &got.1[..]), ("alice", &b"hi bob"[..]));
        heard.wait_for(&format!("cmd_rlst {id} 0 77"));

        // Bob's command to alice reaches notify_cmd_data.
        runtime.block_on(async {
            bob.send_cmd("alice", "hi alice".into(), 0)
                .await
                .unwrap()
                .await
        });
        heard.wait_for("cmd from bob: hi alice");

        // A buffer is confirmed to its sender only once its callback returned.
        heard
            .hold_buffers
            .store(true, std::sync::atomic::Ordering::Release);
        let mut sent = runtime
            .block_on(bob.send_buffer("alice", vec![7u8; 100_000].into(), 0))
            .unwrap();
        heard.wait_for("buffer from bob: 100000 bytes");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(sent.try_result(), None, "confirmed while its callback runs");
        heard
            .hold_buffers
            .store(false, std::sync::atomic::Ordering::Release);
        assert_eq!(runtime.block_on(sent), peermsg::ErrorCode::NOERR);

        // A callback may not free its client: refused, and the client goes on.
        let sent = runtime.block_on(async {
            bob.send_cmd("alice", "free yourself".into(), 0)
                .await
                .unwrap()
                .await
        });
        assert!(sent.is_success());
        heard.wait_for(&format!("free from a callback: {PM_PARAM_ERR}"));
        assert_eq!(
            pm_send_cmd(client, c"bob".as_ptr(), b"still".as_ptr(), 5, 78, &mut id),
            PM_NOERR
        );
        heard.wait_for(&format!("cmd_rlst {id} 0 78"));

        assert_eq!(pm_logout(client), PM_NOERR);
        heard.wait_for(&format!("state {PM_STATE_DISCONNECTED} 0"));
        assert_eq!(pm_client_free(client), PM_NOERR);
    }
}

#[test]
fn a_tls_relay_is_reached_by_its_pin() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (tls, pin) = peermsg_tokio::tls::self_signed("relay.test").unwrap();
    let extras = peermsg_tokio::Extras {
        tls: Some(tls),
        ..peermsg_tokio::Extras::default()
    };
    let (relay, _stop) = support::relay_with(&runtime, "127.0.0.1:0", extras);
    let addr = std::ffi::CString::new(relay.clone()).unwrap();
    let tls_addr = std::ffi::CString::new(format!("tls://{relay}")).unwrap();
    let pin_c = std::ffi::CString::new(pin.clone()).unwrap();
    // The pin with its last digit changed (to 1 if it is 0, else to 0).
    let last = if pin.ends_with('0') { "1" } else { "0" };
    let wrong = std::ffi::CString::new(format!("{}{last}", &pin[..pin.len() - 1])).unwrap();
    unsafe {
        let mut client = null_mut();
        assert_eq!(pm_client_new(&mut client), PM_NOERR);
        let login = |server: &std::ffi::CString| {
            pm_login(client, server.as_ptr(), c"alice".as_ptr(), null(), null())
        };
        // A loopback address is plain TCP unless TLS is asked for: a TLS relay turns it
        // away, saying why.
        assert_eq!(login(&addr), PM_PROTOCOL_VIOLATION);
        // The web's authorities do not know a self-signed certificate.
        assert_eq!(login(&tls_addr), PM_CONNECTIONLOST);
        assert_eq!(
            pm_set_trust(client, null(), c"not a pin".as_ptr()),
            PM_PARAM_ERR
        );
        assert_eq!(pm_set_trust(client, null(), wrong.as_ptr()), PM_NOERR);
        assert_eq!(login(&addr), PM_CONNECTIONLOST, "a wrong pin");
        assert_eq!(pm_set_trust(client, null(), pin_c.as_ptr()), PM_NOERR);
        assert_eq!(
            login(&c"tcp://127.0.0.1:1".into()),
            PM_PARAM_ERR,
            "tcp:// with a pin"
        );
        assert_eq!(login(&c"no port".into()), PM_PARAM_ERR);
        assert_eq!(login(&addr), PM_NOERR, "the pin");

        // Bob over TLS too; a command goes through.
        let trust = peermsg_tokio::tls::Trust::pin(&pin).unwrap();
        let server = peermsg_tokio::Server::from_address(&relay, Some(&trust)).unwrap();
        let (_bob, mut events) = runtime.block_on(async {
            peermsg_tokio::ClientHandle::builder("bob")
                .server(server)
                .connect()
                .await
                .unwrap()
        });
        let mut id = 0;
        assert_eq!(
            pm_send_cmd(client, c"bob".as_ptr(), b"over tls".as_ptr(), 8, 0, &mut id),
            PM_NOERR
        );
        let data = runtime.block_on(async {
            loop {
                if let Some(ClientEvent::Core(Event::CmdReceived { data, .. })) =
                    events.recv().await
                {
                    break data;
                }
            }
        });
        assert_eq!(&data[..], b"over tls");
        assert_eq!(pm_client_free(client), PM_NOERR);
    }
}

#[test]
fn a_relay_that_goes_and_comes_back_is_told_as_the_connection_state() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let start = |addr: &str| support::relay_with(&runtime, addr, peermsg_tokio::Extras::default());
    let (relay, stop) = start("127.0.0.1:0");
    let heard = Heard::default();
    unsafe {
        let mut client = null_mut();
        assert_eq!(pm_client_new(&mut client), PM_NOERR);
        assert_eq!(pm_set_callbacks(client, &callbacks(&heard)), PM_NOERR);
        let server = std::ffi::CString::new(relay.clone()).unwrap();
        assert_eq!(
            pm_login(client, server.as_ptr(), c"alice".as_ptr(), null(), null()),
            PM_NOERR
        );
        heard.wait_for(&format!("state {PM_STATE_CONNECTED} 0"));

        // The relay stops: the client says it is connecting again.
        stop.send(()).unwrap();
        heard.wait_for(&format!(
            "state {PM_STATE_RECONNECTING} {PM_CONNECTIONLOST}"
        ));
        // A command sent meanwhile waits for the next connection.
        let mut id = 0;
        assert_eq!(
            pm_send_cmd(client, c"bob".as_ptr(), b"later".as_ptr(), 5, 9, &mut id),
            PM_NOERR
        );

        // Back on the same address: connected again, and the command goes to bob.
        let (_relay, _stop) = start(&relay);
        let inbox = tempfile::tempdir().unwrap();
        let (_bob, mut events) = support::rust_user(&runtime, &relay, "bob", inbox.path());
        let lines = || heard.lines.lock().unwrap().clone();
        let until = Instant::now() + Duration::from_secs(20);
        while lines()
            .iter()
            .filter(|l| **l == format!("state {PM_STATE_CONNECTED} 0"))
            .count()
            < 2
        {
            assert!(Instant::now() < until, "not connected again: {:?}", lines());
            std::thread::sleep(Duration::from_millis(10));
        }
        let data = runtime.block_on(async {
            loop {
                if let Some(ClientEvent::Core(Event::CmdReceived { data, .. })) =
                    events.recv().await
                {
                    break data;
                }
            }
        });
        assert_eq!(&data[..], b"later");
        heard.wait_for(&format!("cmd_rlst {id} 0 9"));
        assert_eq!(pm_client_free(client), PM_NOERR);
    }
}

#[test]
fn a_sealing_client_seals_to_its_peers_and_refuses_what_is_not_sealed() {
    use peermsg::seal::{identity_of, Sealing};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let relay = support::relay(&runtime);
    let inbox = tempfile::tempdir().unwrap();
    // bob, on the tokio client, seals and trusts keys on first use.
    let bob_secret = [2u8; 32];
    let (bob, mut bob_events) = runtime.block_on(async {
        peermsg_tokio::ClientHandle::builder("bob")
            .server(peermsg_tokio::Server::Tcp(relay.clone()))
            .files_to(inbox.path())
            .sealing(Sealing {
                secret: bob_secret,
                entropy: [0; 32],
                pinned: Vec::new(),
                trust_first_use: true,
            })
            .connect()
            .await
            .unwrap()
    });
    let (carol, _carol_events) = support::rust_user(&runtime, &relay, "carol", inbox.path());
    let heard = Heard::default();
    let alice_secret = [1u8; 32];
    unsafe {
        let mut key = [0u8; 32];
        assert_eq!(pm_identity_of(alice_secret.as_ptr(), &mut key), PM_NOERR);
        assert_eq!(key, identity_of(&alice_secret).0);
        assert_eq!(pm_identity_of(null(), &mut key), PM_PARAM_ERR);

        let mut client = null_mut();
        assert_eq!(pm_client_new(&mut client), PM_NOERR);
        assert_eq!(pm_set_callbacks(client, &callbacks(&heard)), PM_NOERR);
        // Pinning needs sealing on.
        assert_eq!(
            pm_pin_key(client, c"bob".as_ptr(), key.as_ptr()),
            PM_PARAM_ERR
        );
        assert_eq!(pm_set_sealing(client, alice_secret.as_ptr(), 1), PM_NOERR);
        let relay = std::ffi::CString::new(relay.clone()).unwrap();
        assert_eq!(
            pm_login(client, relay.as_ptr(), c"alice".as_ptr(), null(), null()),
            PM_NOERR
        );
        heard.wait_for(&format!("state {PM_STATE_CONNECTED} 0"));

        // alice's command reaches bob, who takes only sealed messages; bob's key is learned.
        let mut id = 0;
        let sent = pm_send_cmd(
            client,
            c"bob".as_ptr(),
            b"sealed hi".as_ptr(),
            9,
            5,
            &mut id,
        );
        assert_eq!(sent, PM_NOERR);
        heard.wait_for(&format!("cmd_rlst {id} 0 5"));
        let bob_key = hex(&identity_of(&bob_secret).0);
        heard.wait_for(&format!("peer_key bob {bob_key} {PM_KEY_LEARNED}"));
        let got = runtime.block_on(async {
            loop {
                if let Some(ClientEvent::Core(Event::CmdReceived { data, .. })) =
                    bob_events.recv().await
                {
                    break data;
                }
            }
        });
        assert_eq!(&got[..], b"sealed hi");

        // bob's sealed answer opens; carol's plain command is refused.
        let answer = runtime
            .block_on(async { bob.send_cmd("alice", "back".into(), 0).await.unwrap().await });
        assert!(answer.is_success(), "{answer}");
        heard.wait_for("cmd from bob: back");
        let plain = runtime.block_on(async {
            carol
                .send_cmd("alice", "clear".into(), 0)
                .await
                .unwrap()
                .await
        });
        assert_eq!(plain, peermsg::ErrorCode::SEAL_REQUIRED);
        assert!(!heard
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("clear")));
        assert_eq!(pm_client_free(client), PM_NOERR);

        // A client that pinned another key for bob seals to it: bob cannot open it
        // (SEAL_BROKEN), and the key bob really has is told as changed, not trusted.
        let heard = Heard::default();
        let mut client = null_mut();
        assert_eq!(pm_client_new(&mut client), PM_NOERR);
        assert_eq!(pm_set_callbacks(client, &callbacks(&heard)), PM_NOERR);
        assert_eq!(pm_set_sealing(client, [3u8; 32].as_ptr(), 1), PM_NOERR);
        let wrong = identity_of(&[9u8; 32]).0;
        assert_eq!(
            pm_pin_key(client, c"bob".as_ptr(), wrong.as_ptr()),
            PM_NOERR
        );
        assert_eq!(
            pm_login(client, relay.as_ptr(), c"dave".as_ptr(), null(), null()),
            PM_NOERR
        );
        let sent = pm_send_cmd(client, c"bob".as_ptr(), b"x".as_ptr(), 1, 6, &mut id);
        assert_eq!(sent, PM_NOERR);
        heard.wait_for(&format!("cmd_rlst {id} {PM_SEAL_BROKEN} 6"));
        heard.wait_for(&format!("peer_key bob {bob_key} {PM_KEY_CHANGED}"));
        assert_eq!(pm_client_free(client), PM_NOERR);
    }
}
