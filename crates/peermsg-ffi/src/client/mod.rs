//! `pm_client_*` and `pm_send_*`: the SDK's calls and callbacks over the tokio client.
//!
//! Threads: a client runs its network on a thread of its own (`peermsg-net`) and makes every
//! callback on one other thread (`peermsg-callbacks`), one at a time, in order. The `pm_*`
//! calls may be made from any thread, callbacks included. A callback that takes long
//! delays the callbacks after it, and once [`PM_CALLBACK_QUEUE`] of them wait, incoming
//! messages are no longer confirmed to their senders (they wait, they are not lost); the
//! network never waits for a callback.

use std::ffi::c_char;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ThreadId};

use peermsg::client::ClientConfig;
use peermsg::seal::Sealing;
use peermsg::wire::{IdentityKey, UserId};
use peermsg::ErrorCode;
use peermsg_tokio::tls::Trust;
use peermsg_tokio::{ClientHandle, Reconnect, Server};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use crate::boundary::{guard, key32, object, optional_text, out, text};

#[cfg(doc)]
use crate::pm_identity_of;

mod callbacks;
mod sends;

pub use callbacks::{PmCallbacks, PM_CALLBACK_QUEUE};
pub use sends::{pm_cancel_send, pm_send_buffer, pm_send_cmd, pm_send_file};

use callbacks::{forward_events, run_callbacks, Callback};
use sends::{watch_sends, NewSends};

/// Not connected: before [`pm_login`], after [`pm_logout`], or once reconnecting gave up.
pub const PM_STATE_DISCONNECTED: i32 = 0;
/// Connected and logged in.
pub const PM_STATE_CONNECTED: i32 = 1;
/// The connection was lost; connecting again (sends wait).
pub const PM_STATE_RECONNECTING: i32 = 2;

/// A connected client's parts.
struct Connection {
    handle: ClientHandle,
    new_sends: Arc<NewSends>,
    callbacks_thread: JoinHandle<()>,
}

/// One user's client (`pm_client` in C): made by [`pm_client_new`], freed by
/// [`pm_client_free`]. Its calls may come from any thread.
pub struct PmClient {
    runtime: Runtime,
    callbacks: Arc<Mutex<PmCallbacks>>,
    connection: Mutex<Option<Connection>>,
    /// The callback thread of the latest connection, which must not free the client.
    callbacks_thread: Mutex<Option<ThreadId>>,
    /// Which relay certificate TLS trusts ([`pm_set_trust`]); `None`: the web's authorities.
    trust: Mutex<Option<Trust>>,
    /// Sealing for the next login ([`pm_set_sealing`], [`pm_pin_key`]).
    sealing: Mutex<Option<Sealing>>,
}

/// Makes a client, not connected yet: set its callbacks ([`pm_set_callbacks`]), then
/// [`pm_login`]. `*out` is the client, to free with [`pm_client_free`].
///
/// # Safety
/// `out_client` is writable.
#[no_mangle]
pub unsafe extern "C" fn pm_client_new(out_client: *mut *mut PmClient) -> i32 {
    guard(|| {
        // SAFETY: the caller's promise.
        let out_client = unsafe { out(out_client)? };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("peermsg-net")
            .enable_all()
            .build()
            .map_err(|_| ErrorCode::UNKNOWERR)?;
        *out_client = Box::into_raw(Box::new(PmClient {
            runtime,
            callbacks: Arc::new(Mutex::new(PmCallbacks::NONE)),
            connection: Mutex::new(None),
            callbacks_thread: Mutex::new(None),
            trust: Mutex::new(None),
            sealing: Mutex::new(None),
        }));
        Ok(())
    })
}

/// Sets the callbacks (copied; any may be NULL), for everything from now on. Set them
/// before [`pm_login`] to hear everything.
///
/// # Safety
/// `client` is a live `pm_client`; `callbacks` points to a `pm_callbacks`.
#[no_mangle]
pub unsafe extern "C" fn pm_set_callbacks(
    client: *mut PmClient,
    callbacks: *const PmCallbacks,
) -> i32 {
    guard(|| {
        // SAFETY: the caller's promises.
        let (client, callbacks) = unsafe { (object(client)?, callbacks.as_ref()) };
        let callbacks = callbacks.ok_or(ErrorCode::PARAM_ERR)?;
        *lock(&client.callbacks) = *callbacks;
        Ok(())
    })
}

/// Which relay certificates TLS trusts, for the next [`pm_login`]: those signed by an
/// authority in the PEM file `ca_file`, or exactly the one whose SHA-256 fingerprint is
/// `pin` (64 hex digits, colons allowed: what `peermsg relay --tls-self-signed` prints).
/// Either asks for TLS, to a loopback address too. Both NULL: the web's authorities (the
/// default). `PARAM_ERR` for a pin that is not 64 hex digits.
///
/// # Safety
/// `client` is a live `pm_client`; `ca_file` and `pin` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn pm_set_trust(
    client: *mut PmClient,
    ca_file: *const c_char,
    pin: *const c_char,
) -> i32 {
    guard(|| {
        // SAFETY: the caller's promises.
        let (client, ca_file, pin) = unsafe {
            (
                object(client)?,
                optional_text(ca_file)?,
                optional_text(pin)?,
            )
        };
        let trust = match (ca_file, pin) {
            (Some(ca), _) => Some(Trust::CaFile(ca.into())),
            (None, Some(pin)) => Some(Trust::pin(pin).map_err(|_| ErrorCode::PARAM_ERR)?),
            (None, None) => None,
        };
        *lock(&client.trust) = trust;
        Ok(())
    })
}

/// Seals this user's messages end to end from the next [`pm_login`] on (docs/PROTOCOL.md,
/// "Sealed messages"): its identity key is that of `secret` (32 bytes, random, made once
/// and kept private by the application; [`pm_identity_of`] gives
/// the key to show), every command, buffer and file it sends is sealed for its receiver
/// (whose key is asked of the relay unless pinned, [`pm_pin_key`]), and everything that
/// comes in must be sealed for it. With `trust_first_use` non-zero a peer's key seen for
/// the first time is pinned (the `peer_key` callback, `PM_KEY_LEARNED`: keep it). `secret`
/// NULL: no sealing (the default).
///
/// # Safety
/// `client` is a live `pm_client`; `secret` is NULL or points to 32 bytes.
#[no_mangle]
pub unsafe extern "C" fn pm_set_sealing(
    client: *mut PmClient,
    secret: *const u8,
    trust_first_use: i32,
) -> i32 {
    guard(|| {
        // SAFETY: the caller's promises.
        let client = unsafe { object(client)? };
        let sealing = match secret.is_null() {
            true => None,
            // SAFETY: as above.
            false => Some(Sealing {
                secret: unsafe { key32(secret)? },
                // Drawn from the system's random source at login.
                entropy: [0; 32],
                pinned: Vec::new(),
                trust_first_use: trust_first_use != 0,
            }),
        };
        *lock(&client.sealing) = sealing;
        Ok(())
    })
}

/// Trusts `key` (32 bytes) as `user`'s identity key, from the next [`pm_login`] on: a key
/// kept from an earlier `PM_KEY_LEARNED`, or a new one the person checked after
/// `PM_KEY_CHANGED`. After [`pm_set_sealing`] (else `PARAM_ERR`).
///
/// # Safety
/// `client` is a live `pm_client`; `user` is NUL-terminated; `key` points to 32 bytes.
#[no_mangle]
pub unsafe extern "C" fn pm_pin_key(
    client: *mut PmClient,
    user: *const c_char,
    key: *const u8,
) -> i32 {
    guard(|| {
        // SAFETY: the caller's promises.
        let (client, user, key) = unsafe { (object(client)?, text(user)?, key32(key)?) };
        let user = UserId::new(user).map_err(|_| ErrorCode::PARAM_ERR)?;
        let mut sealing = lock(&client.sealing);
        let sealing = sealing.as_mut().ok_or(ErrorCode::PARAM_ERR)?;
        sealing.pinned.retain(|(u, _)| *u != user);
        sealing.pinned.push((user, IdentityKey(key)));
        Ok(())
    })
}

/// Connects to the relay at `server` and logs in as `user` with `token` (NULL: none),
/// waiting for the answer: `NOERR`, or why not. `server` is `tls://host:port`,
/// `tcp://host:port`, or `host:port`: TLS unless it is a loopback address (or
/// [`pm_set_trust`] asked for TLS); TLS trusts the web's authorities unless
/// [`pm_set_trust`] said otherwise. A certificate that is not trusted is `CONNECTIONLOST`;
/// an address that cannot be read, `PARAM_ERR`. Lost connections are made
/// again (sends wait, commands are delivered once, buffers and files go on from what their
/// receivers hold) for up to 5 minutes. Incoming files are kept in `files_dir` (NULL: a
/// `peermsg` folder in the system's temporary folder).
///
/// # Safety
/// `client` is a live `pm_client`; strings are NUL-terminated (or NULL where allowed).
#[no_mangle]
pub unsafe extern "C" fn pm_login(
    client: *mut PmClient,
    server: *const c_char,
    user: *const c_char,
    token: *const c_char,
    files_dir: *const c_char,
) -> i32 {
    guard(|| {
        // SAFETY: the caller's promises.
        let (client, server, user, token, files_dir) = unsafe {
            (
                object(client)?,
                text(server)?,
                text(user)?,
                optional_text(token)?.unwrap_or(""),
                optional_text(files_dir)?,
            )
        };
        let mut connection = lock(&client.connection);
        if connection.is_some() {
            return Err(ErrorCode::PARAM_ERR); // logged in already
        }
        let files_dir =
            files_dir.map_or_else(|| std::env::temp_dir().join("peermsg"), PathBuf::from);
        std::fs::create_dir_all(&files_dir).map_err(|_| ErrorCode::FILE_OPERATION_ERR)?;
        // A buffer is confirmed to its sender once notify_buffer_data returned, not before.
        let config = ClientConfig {
            confirm_buffers: true,
            ..ClientConfig::default()
        };
        let server = Server::from_address(server, lock(&client.trust).as_ref())
            .map_err(|_| ErrorCode::PARAM_ERR)?;
        let mut builder = ClientHandle::builder(user)
            .config(config)
            .token(token.as_bytes())
            .server(server)
            .files_to(files_dir)
            .reconnect(Reconnect::default());
        if let Some(sealing) = lock(&client.sealing).clone() {
            builder = builder.sealing(sealing);
        }
        let connect = builder.connect();
        let (handle, events) = client.runtime.block_on(connect).map_err(connect_code)?;
        let (queue, callbacks) = mpsc::channel(PM_CALLBACK_QUEUE);
        let told = Arc::clone(&client.callbacks);
        let confirms = handle.clone();
        let callbacks_thread = std::thread::Builder::new()
            .name("peermsg-callbacks".into())
            .spawn(move || run_callbacks(callbacks, &told, &confirms))
            .map_err(|_| ErrorCode::UNKNOWERR)?;
        *lock(&client.callbacks_thread) = Some(callbacks_thread.thread().id());
        let _ = queue.try_send(Callback::State(PM_STATE_CONNECTED, ErrorCode::NOERR));
        client.runtime.spawn(forward_events(events, queue.clone()));
        let new_sends = Arc::new(NewSends::default());
        client
            .runtime
            .spawn(watch_sends(Arc::clone(&new_sends), queue));
        *connection = Some(Connection {
            handle,
            new_sends,
            callbacks_thread,
        });
        Ok(())
    })
}

/// The SDK's number for why connecting failed.
fn connect_code(error: peermsg_tokio::ConnectError) -> ErrorCode {
    use peermsg_tokio::ConnectError as E;
    match error {
        E::Refused(code) | E::TurnedAway { code, .. } => code,
        E::Invalid(_) => ErrorCode::PARAM_ERR,
        E::Io(_) | E::Tls(_) | E::Closed => ErrorCode::CONNECTIONLOST,
        _ => ErrorCode::UNKNOWERR,
    }
}

/// Closes the connection: pending sends end with `CONNECTIONLOST`, and
/// `connection_state` says `PM_STATE_DISCONNECTED`. The client may log in again after.
///
/// # Safety
/// `client` is a live `pm_client`.
#[no_mangle]
pub unsafe extern "C" fn pm_logout(client: *mut PmClient) -> i32 {
    guard(|| {
        // SAFETY: the caller's promise.
        let client = unsafe { object(client)? };
        let connection = lock(&client.connection).take();
        if let Some(c) = connection {
            c.handle.close();
            c.new_sends.close();
            // The callback thread ends once every result and event before the close is told.
            drop(c.handle);
            if !on_callbacks_thread(client) {
                let _ = c.callbacks_thread.join();
            }
        }
        Ok(())
    })
}

/// Closes the connection and frees the client (NULL is ignored). Callbacks still waiting are
/// made before it returns, so `ctx` must live until then. Not from a callback (that is
/// `PARAM_ERR`, and nothing is freed).
///
/// # Safety
/// `client` is NULL or a live `pm_client`, not used after.
#[no_mangle]
pub unsafe extern "C" fn pm_client_free(client: *mut PmClient) -> i32 {
    guard(|| {
        if client.is_null() {
            return Ok(());
        }
        // SAFETY: the caller's promise.
        if on_callbacks_thread(unsafe { object(client)? }) {
            return Err(ErrorCode::PARAM_ERR);
        }
        // SAFETY: as above.
        unsafe { pm_logout(client) };
        // SAFETY: made by Box::into_raw in pm_client_new, freed once (the caller's promise).
        let client = unsafe { Box::from_raw(client) };
        client
            .runtime
            .shutdown_timeout(std::time::Duration::from_secs(1));
        Ok(())
    })
}

fn on_callbacks_thread(client: &PmClient) -> bool {
    *lock(&client.callbacks_thread) == Some(std::thread::current().id())
}

/// A lock that a panic elsewhere does not poison for good.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
