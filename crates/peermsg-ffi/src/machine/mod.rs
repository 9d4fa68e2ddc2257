//! `pm_core_*`: the sans-IO core from C, for firmware and custom transports. The caller
//! owns the transport and the clock: bytes read go in ([`pm_core_handle_input`]), bytes to
//! write come out ([`pm_core_poll_transmit`]), events are polled ([`pm_core_poll_event`]),
//! and the time is given with every call that may act on it, in microseconds since any
//! epoch of the caller's. The rules (commands delivered once, resume, re-sends, giving up)
//! are the core's [`Continuity`]: nothing here decides what the protocol does.

mod event;

#[cfg(doc)]
use crate::pm_identity_of;

use std::ffi::c_char;

use bytes::{Buf, Bytes, BytesMut};
use peermsg::client::{ClientConfig, ReceiveId, SendId, SendKind};
use peermsg::continuity::{Continuity, Policy};
use peermsg::wire::ResumeKey;
use peermsg::{ErrorCode, Instant};

use crate::boundary::{
    bytes, code_arg, guard, key32, object, optional_text, out, status, text, Status,
};
use event::Held;
pub use event::*;

/// One user's protocol state, driven by the caller (`pm_core` in C). Made by
/// [`pm_core_new`], freed by [`pm_core_free`]; not thread-safe (one thread at a time).
pub struct PmCore {
    cont: Continuity,
    /// Bytes the core wrote that the caller has not taken yet.
    unsent: BytesMut,
    /// What the last event's pointers point into, kept until the next call.
    held: Held,
}

fn instant(us: u64) -> Instant {
    Instant::from_micros(us)
}

/// Makes a user's protocol state at `now_us`, logging in as `user` with `token_len` bytes of
/// `token` (NULL when 0) once bytes flow. `seed` is 16 random bytes (command identities
/// and redial jitter). With `reconnect` non-zero, sends survive a lost connection: after
/// [`pm_core_handle_disconnect`], dial when [`pm_core_poll_redial`] says and call
/// [`pm_core_connected`]. On success `*out` is the new state, to free with
/// [`pm_core_free`].
///
/// # Safety
/// Pointers are NULL or valid for their lengths; `seed` points to 16 bytes.
#[no_mangle]
pub unsafe extern "C" fn pm_core_new(
    user: *const c_char,
    token: *const u8,
    token_len: usize,
    seed: *const u8,
    now_us: u64,
    reconnect: i32,
    out_core: *mut *mut PmCore,
) -> i32 {
    guard(|| {
        // SAFETY: the caller's promises, above.
        let (user, token, seed, out_core) = unsafe {
            (
                text(user)?,
                bytes(token, token_len)?,
                bytes(seed, 16)?,
                out(out_core)?,
            )
        };
        let seed: [u8; 16] = seed.try_into().map_err(|_| ErrorCode::PARAM_ERR)?;
        let policy = (reconnect != 0).then(Policy::default);
        let config = ClientConfig {
            resume_buffers: policy.is_some(),
            ..ClientConfig::default()
        };
        let cont = Continuity::new(config, policy, user, token, seed, instant(now_us))
            .map_err(|_| ErrorCode::PARAM_ERR)?;
        *out_core = Box::into_raw(Box::new(PmCore {
            cont,
            unsent: BytesMut::new(),
            held: Held::default(),
        }));
        Ok(())
    })
}

/// Frees a state made by [`pm_core_new`] (NULL is ignored). Close it first
/// ([`pm_core_close`]) and write what [`pm_core_poll_transmit`] gives, for a clean end.
///
/// # Safety
/// `core` is NULL or from [`pm_core_new`], not freed before, not used after.
#[no_mangle]
pub unsafe extern "C" fn pm_core_free(core: *mut PmCore) {
    if !core.is_null() {
        // SAFETY: made by Box::into_raw in pm_core_new, freed once (the caller's promise).
        drop(unsafe { Box::from_raw(core) });
    }
}

/// Runs `body` on the core behind `core`, after dropping the last event's text and bytes.
///
/// # Safety
/// `core` is NULL or a live `pm_core`.
unsafe fn with(core: *mut PmCore, body: impl FnOnce(&mut PmCore) -> Status) -> i32 {
    guard(|| {
        // SAFETY: the caller's promise.
        let core = unsafe { object(core)? };
        core.held = Held::default();
        body(core)
    })
}

/// Runs `call` on the core behind `core` at `now_us`: the calls that take the time and
/// cannot fail.
///
/// # Safety
/// `core` is NULL or a live `pm_core`.
unsafe fn at(core: *mut PmCore, now_us: u64, call: impl FnOnce(&mut PmCore, Instant)) -> i32 {
    // SAFETY: the caller's promise.
    unsafe {
        with(core, |c| {
            call(c, instant(now_us));
            Ok(())
        })
    }
}

/// Seals this user's messages end to end (docs/PROTOCOL.md, "Sealed messages"): its
/// identity key is that of `secret` (32 bytes, [`pm_identity_of`]),
/// every command, buffer and file it sends is sealed for its receiver (whose key is asked
/// of the relay unless pinned, [`pm_core_pin_key`]), and everything that comes in must be
/// sealed for it. `entropy` is 32 fresh random bytes (never reused with the same secret).
/// With `trust_first_use` non-zero a peer's key seen for the first time is pinned
/// (`PM_EVENT_PEER_KEY`, `PM_KEY_LEARNED`: keep it). Call it right after [`pm_core_new`],
/// before the first [`pm_core_poll_transmit`].
///
/// # Safety
/// `core` is a live `pm_core`; `secret` and `entropy` point to 32 bytes each.
#[no_mangle]
pub unsafe extern "C" fn pm_core_set_sealing(
    core: *mut PmCore,
    secret: *const u8,
    entropy: *const u8,
    trust_first_use: i32,
) -> i32 {
    // SAFETY: the caller's promises.
    unsafe {
        with(core, |c| {
            c.cont.set_sealing(peermsg::seal::Sealing {
                secret: key32(secret)?,
                entropy: key32(entropy)?,
                pinned: Vec::new(),
                trust_first_use: trust_first_use != 0,
            });
            Ok(())
        })
    }
}

/// Trusts `key` (32 bytes) as `user`'s identity key from now on: a key kept from an
/// earlier `PM_KEY_LEARNED`, or a new one the person checked after `PM_KEY_CHANGED`. Sends
/// waiting for that user's key go.
///
/// # Safety
/// `core` is a live `pm_core`; `user` is NUL-terminated; `key` points to 32 bytes.
#[no_mangle]
pub unsafe extern "C" fn pm_core_pin_key(
    core: *mut PmCore,
    user: *const c_char,
    key: *const u8,
) -> i32 {
    // SAFETY: the caller's promises.
    unsafe {
        with(core, |c| {
            let user = peermsg::wire::UserId::new(text(user)?).map_err(|_| ErrorCode::PARAM_ERR)?;
            c.cont
                .pin_key(user, peermsg::wire::IdentityKey(key32(key)?));
            Ok(())
        })
    }
}

/// Hands the core `len` bytes read from the transport at `now_us`.
///
/// # Safety
/// `core` is a live `pm_core`; `data` is NULL or valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn pm_core_handle_input(
    core: *mut PmCore,
    now_us: u64,
    data: *const u8,
    len: usize,
) -> i32 {
    // SAFETY: the caller's promises.
    unsafe {
        with(core, |c| {
            c.cont.handle_input(instant(now_us), bytes(data, len)?);
            Ok(())
        })
    }
}

/// The transport ended (read end, write error) at `now_us`.
///
/// # Safety
/// `core` is a live `pm_core`.
#[no_mangle]
pub unsafe extern "C" fn pm_core_handle_disconnect(core: *mut PmCore, now_us: u64) -> i32 {
    // SAFETY: the caller's promise.
    unsafe {
        at(core, now_us, |c, now| {
            c.unsent.clear(); // what was unsent belonged to the transport that ended
            c.cont.handle_disconnect(now)
        })
    }
}

/// The time [`pm_core_poll_timeout`] gave has come (or any later time).
///
/// # Safety
/// `core` is a live `pm_core`.
#[no_mangle]
pub unsafe extern "C" fn pm_core_handle_timeout(core: *mut PmCore, now_us: u64) -> i32 {
    // SAFETY: the caller's promise.
    unsafe { at(core, now_us, |c, now| c.cont.handle_timeout(now)) }
}

/// A new transport is up at `now_us`, after [`pm_core_poll_redial`]: the core logs in again.
///
/// # Safety
/// `core` is a live `pm_core`.
#[no_mangle]
pub unsafe extern "C" fn pm_core_connected(core: *mut PmCore, now_us: u64) -> i32 {
    // SAFETY: the caller's promise.
    unsafe {
        at(core, now_us, |c, now| {
            c.unsent.clear(); // what was unsent belonged to the transport that ended
            c.cont.connected(now)
        })
    }
}

/// Dialling at `now_us` failed; the next attempt waits longer.
///
/// # Safety
/// `core` is a live `pm_core`.
#[no_mangle]
pub unsafe extern "C" fn pm_core_redial_failed(core: *mut PmCore, now_us: u64) -> i32 {
    // SAFETY: the caller's promise.
    unsafe { at(core, now_us, |c, now| c.cont.redial_failed(now)) }
}

/// Copies up to `cap` bytes to write to the transport into `buf`; `*len` says how many (0:
/// nothing to write now). Call until it gives 0.
///
/// # Safety
/// `core` is a live `pm_core`; `buf` is valid for `cap` bytes; `len` is writable.
#[no_mangle]
pub unsafe extern "C" fn pm_core_poll_transmit(
    core: *mut PmCore,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
) -> i32 {
    // SAFETY: the caller's promises.
    unsafe {
        with(core, |c| {
            let len = out(len)?;
            *len = 0;
            if buf.is_null() || cap == 0 {
                return Err(ErrorCode::PARAM_ERR);
            }
            if c.unsent.is_empty() {
                c.cont.poll_transmit(&mut c.unsent);
            }
            let n = c.unsent.len().min(cap);
            // SAFETY: `buf` holds `cap` >= `n` writable bytes (the caller's promise), and
            // cannot overlap the core's own buffer.
            std::ptr::copy_nonoverlapping(c.unsent.as_ptr(), buf, n);
            c.unsent.advance(n);
            *len = n;
            Ok(())
        })
    }
}

/// The next event into `*event` (`kind` `PM_EVENT_NONE` when there is none). Its text and
/// bytes stay valid until the next call on `core`. Taking an event can let frames out:
/// drain [`pm_core_poll_transmit`] after events.
///
/// # Safety
/// `core` is a live `pm_core`; `event` is writable.
#[no_mangle]
pub unsafe extern "C" fn pm_core_poll_event(core: *mut PmCore, event: *mut PmEvent) -> i32 {
    // SAFETY: the caller's promises.
    unsafe {
        with(core, |c| {
            let event = out(event)?;
            *event = match c.cont.poll_event() {
                Some(e) => c.held.describe(e),
                None => PmEvent::NONE,
            };
            Ok(())
        })
    }
}

/// When to call [`pm_core_handle_timeout`] next, in `*at_us` (`PM_NEVER`: no timer).
///
/// # Safety
/// `core` is a live `pm_core`; `at_us` is writable.
#[no_mangle]
pub unsafe extern "C" fn pm_core_poll_timeout(core: *mut PmCore, at_us: *mut u64) -> i32 {
    // SAFETY: the caller's promises.
    unsafe {
        with(core, |c| {
            *out(at_us)? = c.cont.poll_timeout().map_or(PM_NEVER, Instant::as_micros);
            Ok(())
        })
    }
}

/// When to dial again after a lost connection, in `*at_us` (`PM_NEVER`: not now; the
/// connection is live, or the core gave up or was closed).
///
/// # Safety
/// `core` is a live `pm_core`; `at_us` is writable.
#[no_mangle]
pub unsafe extern "C" fn pm_core_poll_redial(core: *mut PmCore, at_us: *mut u64) -> i32 {
    // SAFETY: the caller's promises.
    unsafe {
        with(core, |c| {
            *out(at_us)? = c.cont.poll_redial().map_or(PM_NEVER, Instant::as_micros);
            Ok(())
        })
    }
}

/// `sendCmd`: `len` bytes of `data` to user `to`, with `cookie` echoed in its result; the
/// send's id in `*send_id`.
///
/// # Safety
/// `core` is a live `pm_core`; `to` a NUL-terminated string; `data` valid for `len` bytes;
/// `send_id` writable.
#[no_mangle]
pub unsafe extern "C" fn pm_core_send_cmd(
    core: *mut PmCore,
    now_us: u64,
    to: *const c_char,
    data: *const u8,
    len: usize,
    cookie: u64,
    send_id: *mut u64,
) -> i32 {
    // SAFETY: the caller's promises.
    unsafe { send_data(core, now_us, to, data, len, cookie, send_id, SendKind::Cmd) }
}

/// `sendBuffer`: as [`pm_core_send_cmd`], for a buffer (with progress, cancel, resume).
///
/// # Safety
/// As [`pm_core_send_cmd`].
#[no_mangle]
pub unsafe extern "C" fn pm_core_send_buffer(
    core: *mut PmCore,
    now_us: u64,
    to: *const c_char,
    data: *const u8,
    len: usize,
    cookie: u64,
    send_id: *mut u64,
) -> i32 {
    // SAFETY: the caller's promises.
    unsafe {
        send_data(
            core,
            now_us,
            to,
            data,
            len,
            cookie,
            send_id,
            SendKind::Buffer,
        )
    }
}

/// A command or a buffer (`kind`): `len` bytes of `data`, copied.
///
/// # Safety
/// As [`pm_core_send_cmd`].
#[allow(clippy::too_many_arguments)] // the C call's arguments, and which call
unsafe fn send_data(
    core: *mut PmCore,
    now_us: u64,
    to: *const c_char,
    data: *const u8,
    len: usize,
    cookie: u64,
    send_id: *mut u64,
    kind: SendKind,
) -> i32 {
    // SAFETY: the caller's promises.
    unsafe {
        with(core, |c| {
            let (to, data, send_id) = (text(to)?, bytes(data, len)?, out(send_id)?);
            let (now, data) = (instant(now_us), Bytes::copy_from_slice(data));
            let id = match kind {
                SendKind::Buffer => c.cont.send_buffer(now, to, data, cookie),
                _ => c.cont.send_cmd(now, to, data, cookie),
            };
            *send_id = id.map_err(|e| e.code())?.0;
            Ok(())
        })
    }
}

/// `sendFile`: a file of `size` bytes named `name` (NULL: no name) to `to`. Its bytes are
/// asked for with `PM_EVENT_FILE_READ`. `key` is 16 bytes naming this file for resume
/// (the same file sent again gives the same key).
///
/// # Safety
/// `core` is a live `pm_core`; `to` (and `name` unless NULL) NUL-terminated strings; `key`
/// 16 readable bytes; `send_id` writable.
#[no_mangle]
pub unsafe extern "C" fn pm_core_send_file(
    core: *mut PmCore,
    now_us: u64,
    to: *const c_char,
    name: *const c_char,
    size: u64,
    key: *const u8,
    cookie: u64,
    send_id: *mut u64,
) -> i32 {
    // SAFETY: the caller's promises.
    unsafe {
        with(core, |c| {
            let (to, name, key, send_id) = (
                text(to)?,
                optional_text(name)?.unwrap_or(""),
                bytes(key, 16)?,
                out(send_id)?,
            );
            let key = ResumeKey(key.try_into().map_err(|_| ErrorCode::PARAM_ERR)?);
            let id = c
                .cont
                .send_file(instant(now_us), to, name, size, key, cookie);
            *send_id = id.map_err(|e| e.code())?.0;
            Ok(())
        })
    }
}

/// The bytes a `PM_EVENT_FILE_READ` asked for: exactly its length, from its offset.
///
/// # Safety
/// `core` is a live `pm_core`; `data` valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn pm_core_supply_file_data(
    core: *mut PmCore,
    send_id: u64,
    offset: u64,
    data: *const u8,
    len: usize,
) -> i32 {
    // SAFETY: the caller's promises.
    unsafe {
        with(core, |c| {
            let data = Bytes::copy_from_slice(bytes(data, len)?);
            c.cont
                .supply_file_data(SendId(send_id), offset, data)
                .map_err(|e| e.code())
        })
    }
}

/// A `PM_EVENT_FILE_READ` could not be answered: the send ends with
/// `SENDFILE_FILEINERROR`.
///
/// # Safety
/// `core` is a live `pm_core`.
#[no_mangle]
pub unsafe extern "C" fn pm_core_file_read_failed(core: *mut PmCore, send_id: u64) -> i32 {
    // SAFETY: the caller's promise.
    unsafe {
        with(core, |c| {
            c.cont
                .file_read_failed(SendId(send_id))
                .map_err(|e| e.code())
        })
    }
}

/// `cancelSend`: returns `NOERR` if send `send_id` is cancelled (its result is then
/// `CANCELLED`), `TRANSID_INVALID` for a command or a send already over.
///
/// # Safety
/// `core` is a live `pm_core`.
#[no_mangle]
pub unsafe extern "C" fn pm_core_cancel_send(core: *mut PmCore, send_id: u64, cookie: u64) -> i32 {
    // SAFETY: the caller's promise.
    unsafe {
        with(core, |c| {
            status(c.cont.cancel_send(SendId(send_id), cookie))
        })
    }
}

/// Refuses incoming buffer or file `id` (after `PM_EVENT_OFFER`) with `code`.
///
/// # Safety
/// `core` is a live `pm_core`.
#[no_mangle]
pub unsafe extern "C" fn pm_core_reject(core: *mut PmCore, id: u64, code: i32) -> i32 {
    // SAFETY: the caller's promise.
    unsafe {
        with(core, |c| {
            let code = code_arg(code)?;
            c.cont.reject(ReceiveId(id), code).map_err(|e| e.code())
        })
    }
}

/// Incoming file `id` (`PM_EVENT_FILE_RECEIVED`) is kept: its sender's result is `NOERR`.
///
/// # Safety
/// `core` is a live `pm_core`.
#[no_mangle]
pub unsafe extern "C" fn pm_core_accept_delivery(core: *mut PmCore, id: u64) -> i32 {
    // SAFETY: the caller's promise.
    unsafe {
        with(core, |c| {
            c.cont.accept_delivery(ReceiveId(id)).map_err(|e| e.code())
        })
    }
}

/// Incoming file `id` could not be kept: its sender's result is `code` (`FILE_WRITE_ERR`
/// if `code` is `NOERR`).
///
/// # Safety
/// `core` is a live `pm_core`.
#[no_mangle]
pub unsafe extern "C" fn pm_core_fail_delivery(core: *mut PmCore, id: u64, code: i32) -> i32 {
    // SAFETY: the caller's promise.
    unsafe {
        with(core, |c| {
            let code = code_arg(code)?;
            c.cont
                .fail_delivery(ReceiveId(id), code)
                .map_err(|e| e.code())
        })
    }
}

/// Closes the connection for good: pending sends end with `CONNECTIONLOST`; write what
/// [`pm_core_poll_transmit`] still gives, then `PM_EVENT_CLOSED` comes.
///
/// # Safety
/// `core` is a live `pm_core`.
#[no_mangle]
pub unsafe extern "C" fn pm_core_close(core: *mut PmCore) -> i32 {
    // SAFETY: the caller's promise.
    unsafe {
        with(core, |c| {
            c.cont.close();
            Ok(())
        })
    }
}

/// 1 while the connection is live and logged in, else 0 (also for NULL).
///
/// # Safety
/// `core` is NULL or a live `pm_core`.
#[no_mangle]
pub unsafe extern "C" fn pm_core_is_logged_in(core: *const PmCore) -> i32 {
    // SAFETY: the caller's promise.
    let core = unsafe { core.as_ref() };
    i32::from(core.is_some_and(|c| c.cont.is_logged_in()))
}
