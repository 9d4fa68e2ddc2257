//! peermsg in a browser: the core's [`Continuity`] driven over the browser's WebSocket,
//! with the seed SDK's calls for JavaScript (`sendCmd`, `sendBuffer`, `sendFile`,
//! `cancelSend`) and its callbacks (`sendCmdRlst`, `sendBufferRlst`, `sendFileRlst`,
//! `sendProgress`, `notifyCmdData`, `notifyBufferData`, `notifyFileData`, ...).
//!
//! This crate is a driver, as thin as the tokio one: every rule (what is a repeat, when
//! to send again, when to give up, flow control, digests) is the core's. It moves bytes
//! between the core and a `WebSocket`, reads files being sent with `Blob.slice`, gathers
//! files being received into `Blob`s (which the browser may keep on disk), and keeps time
//! with `performance.now()` and `setTimeout`. The drive invariant is the core's: after any
//! input (bytes, a timer, a file read, a call), the pump writes and hands out events
//! until the core has nothing more, then one timer is set for what it waits on.
//!
//! ```js
//! import init, { PeerMsg } from "./pkg/peermsg_web.js";
//! await init();
//! const me = new PeerMsg("wss://relay.example/", "alice", "token", {
//!   onState: (state, code) => console.log(state, code),
//!   sendCmdRlst: (id, code, cookie) => console.log("command", id, code),
//!   sendProgress: (id, sent, total, cookie) => bar.value = sent / total,
//!   notifyFileData: (from, file, name) => offerDownload(file, name),
//! });
//! const id = me.sendFile("bob", input.files[0], "my cookie");
//! ```
//!
//! Memory is bounded: at most [`HIGH_WATER`] bytes wait in the WebSocket's buffer (the
//! core keeps the rest of a send as its credit allows, and reads a file only as it is
//! asked); a file received is moved out of the wasm heap into `Blob`s every
//! [`BLOB_STEP`] bytes.

#![warn(missing_docs)]

mod driver;
mod files;
mod socket;
mod source;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};

use bytes::{Bytes, BytesMut};
use js_sys::Uint8Array;
use peermsg::client::{ClientConfig, SendId};
use peermsg::continuity::{Continuity, Policy};
use peermsg::seal::Sealing;
use peermsg::wire::{IdentityKey, ResumeKey, UserId};
use peermsg::{ErrorCode, Instant};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{Blob, File};

use driver::{drive, on_timer, Clock, Inner};
use files::Outgoing;
use socket::dial;

/// Bytes allowed to wait in the WebSocket's send buffer; past it the core keeps what it
/// has until the buffer drains.
pub const HIGH_WATER: u32 = 4 << 20;

/// The largest WebSocket message sent (the relay takes frames of up to 1 MiB).
pub const MAX_MESSAGE: usize = 256 * 1024;

/// Bytes of a file being received kept in the wasm heap before they are moved into a
/// `Blob`.
pub const BLOB_STEP: usize = 8 << 20;

/// The largest read of a file being sent, in bytes.
pub const FILE_READ_SIZE: u64 = 4 << 20;

/// How often a full WebSocket buffer is looked at again, in milliseconds.
const DRAIN_POLL_MS: i32 = 5;

/// Partial files kept for a sender that comes back, at most.
const PARTIALS: usize = 8;

/// Files delivered remembered (by sender and key), so a repeat is confirmed, not
/// delivered twice.
const DELIVERED: usize = 256;

/// One user in a browser, connected to a relay over WebSocket: the SDK's calls, and its
/// callbacks on the `handlers` object given to the constructor.
///
/// Callbacks (each optional; ids are numbers, codes are the SDK's numbers, see
/// [`error_name`], `errorName` in JavaScript):
/// `onState(state, code)` with `"connected"`, `"reconnecting"` or `"closed"`;
/// `onLogin(code)`; `sendCmdRlst(id, code, cookie)`; `sendBufferRlst(id, code, cookie)`;
/// `sendFileRlst(id, name, code, cookie)`; `sendProgress(id, sent, total, cookie)`;
/// `sendWaiting(id, code)` (a send cut off, waiting for the connection or its receiver);
/// `sendResumed(id, offset, cookie)`; `cancelSendRlst(id, code, cookie)`;
/// `notifyCmdData(from, bytes)`; `notifyBufferData(from, bytes)`;
/// `notifyFileOffer(id, from, name, size)`; `receiveProgress(id, received, total)`;
/// `notifyFileData(from, file, name)` (a `File`, kept by the browser);
/// `notifyCancelSend(id, from, code)` (an incoming buffer or file ended without arriving);
/// with sealing, `onPeerKey(user, key, status)` (`key` a 32-byte `Uint8Array` or `null`,
/// `status` `"pinned"`, `"learned"`: keep it and pin it next time, `"changed"`: refused,
/// tell the person, or `"unknown"`) and `onRefused(from, kind, code)` (an incoming message
/// refused before it was delivered: not sealed, an untrusted key, or altered).
///
/// Sealing end to end (docs/PROTOCOL.md, "Sealed messages"): give `handlers.sealing =
/// { secret, trustFirstUse, pinned }`: `secret` the user's 32-byte secret (a `Uint8Array`
/// from `crypto.getRandomValues`, kept by the application; [`identity_of`] gives its key),
/// `trustFirstUse` (default `true`) and `pinned`, an object of user ids to their 32-byte
/// keys. Every command, buffer and file is then sealed for its receiver, and everything
/// that comes in must be sealed for this user: the relay routes what it cannot read.
#[wasm_bindgen]
pub struct PeerMsg {
    inner: Rc<RefCell<Inner>>,
}

#[wasm_bindgen]
impl PeerMsg {
    /// Connects to the relay at `url` (`ws://` or `wss://`) and logs in as `user` with
    /// `token`. The outcome comes to `onLogin` and `onState`; a lost connection is dialled
    /// again and what was under way goes on.
    #[wasm_bindgen(constructor)]
    pub fn new(url: &str, user: &str, token: &str, handlers: JsValue) -> Result<PeerMsg, JsError> {
        let clock = Clock::new()?;
        let mut seed = [0u8; 16];
        random(&mut seed)?;
        let config = ClientConfig {
            resume_files: true,
            resume_buffers: true,
            // Each read of a file is a round trip to the browser's blob store: fewer,
            // larger reads (up to the receiver's credit) keep the link busy.
            file_read_size: FILE_READ_SIZE,
            ..ClientConfig::default()
        };
        let cont = Continuity::new(
            config,
            Some(Policy::default()),
            user,
            token.as_bytes(),
            seed,
            clock.now(),
        )
        .map_err(|e| JsError::new(&e.to_string()))?;
        let mut cont = cont;
        if let Some(sealing) = sealing_of(&handlers)? {
            cont.set_sealing(sealing);
        }
        let inner = Rc::new_cyclic(|me: &Weak<RefCell<Inner>>| {
            let weak = me.clone();
            let on_timer = Closure::<dyn FnMut()>::new(move || {
                if let Some(rc) = weak.upgrade() {
                    on_timer(&rc);
                }
            });
            RefCell::new(Inner {
                cont,
                url: url.into(),
                handlers,
                clock,
                socket: None,
                retired: Vec::new(),
                on_timer,
                timer: None,
                out: BytesMut::new(),
                reads: Vec::new(),
                files_out: HashMap::new(),
                cookies: HashMap::new(),
                cancels: HashMap::new(),
                files_in: HashMap::new(),
                partials: VecDeque::new(),
                delivered: VecDeque::new(),
                told_login: false,
            })
        });
        dial(&inner, false).map_err(js_error)?;
        Ok(PeerMsg { inner })
    }

    /// `sendCmd`: sends `data` (a string, sent as UTF-8, or a `Uint8Array`) to `to`. Its
    /// result comes to `sendCmdRlst` with `cookie`. Gives the send's id.
    #[wasm_bindgen(js_name = sendCmd)]
    pub fn send_cmd(&self, to: &str, data: JsValue, cookie: JsValue) -> Result<f64, JsError> {
        let data = bytes_of(&data)?;
        self.start(cookie, |inner, now| inner.cont.send_cmd(now, to, data, 0))
    }

    /// `sendBuffer`: sends `data` (a `Uint8Array` or a string) to `to`, with progress to
    /// `sendProgress` and its result to `sendBufferRlst`. Gives the send's id.
    #[wasm_bindgen(js_name = sendBuffer)]
    pub fn send_buffer(&self, to: &str, data: JsValue, cookie: JsValue) -> Result<f64, JsError> {
        let data = bytes_of(&data)?;
        self.start(cookie, |inner, now| {
            inner.cont.send_buffer(now, to, data, 0)
        })
    }

    /// `sendFile`: sends `file` (a `File`, or a `Blob` with `name`) to `to`; its bytes are
    /// read as the receiver takes them. Progress to `sendProgress`, the result to
    /// `sendFileRlst`. Gives the send's id.
    #[wasm_bindgen(js_name = sendFile)]
    pub fn send_file(
        &self,
        to: &str,
        file: Blob,
        name: Option<String>,
        cookie: JsValue,
    ) -> Result<f64, JsError> {
        let name = name
            .or_else(|| file.dyn_ref::<File>().map(File::name))
            .unwrap_or_else(|| "file".into());
        let size = file.size() as u64;
        let mut key = [0u8; 16];
        random(&mut key)?;
        let id = self.start(cookie, |inner, now| {
            inner
                .cont
                .send_file(now, to, &name, size, ResumeKey(key), 0)
        })?;
        self.inner.borrow_mut().files_out.insert(
            id as u64,
            Outgoing {
                source: source::Source::new(size),
                blob: file,
                name,
            },
        );
        Ok(id)
    }

    /// `cancelSend`: cancels a buffer or file send. Its outcome comes to `cancelSendRlst`
    /// with `cookie`; the send's own result follows (`CANCELLED`).
    #[wasm_bindgen(js_name = cancelSend)]
    pub fn cancel_send(&self, id: f64, cookie: JsValue) -> u32 {
        let code = {
            let mut inner = self.inner.borrow_mut();
            inner.cancels.insert(id as u64, cookie);
            inner.cont.cancel_send(SendId(id as u64), 0)
        };
        drive(&self.inner);
        code.as_u32()
    }

    /// Logs out and closes the connection; sends under way end.
    pub fn close(&self) {
        self.inner.borrow_mut().cont.close();
        drive(&self.inner);
        let mut inner = self.inner.borrow_mut();
        if let Some(socket) = inner.socket.take() {
            socket.retire();
        }
    }

    /// Trusts `key` (a 32-byte `Uint8Array`) as `user`'s identity key from now on: one
    /// kept from an earlier `"learned"`, or a new one the person checked after
    /// `"changed"`. Sends waiting for that user's key go.
    #[wasm_bindgen(js_name = pinKey)]
    pub fn pin_key(&self, user: &str, key: &Uint8Array) -> Result<(), JsError> {
        let user = UserId::new(user).map_err(|e| JsError::new(&e.to_string()))?;
        let key = IdentityKey(key32(key, "a key")?);
        self.inner.borrow_mut().cont.pin_key(user, key);
        drive(&self.inner);
        Ok(())
    }

    /// `true` while connected and logged in.
    #[wasm_bindgen(js_name = isLoggedIn)]
    pub fn is_logged_in(&self) -> bool {
        self.inner.borrow().cont.is_logged_in()
    }

    fn start(
        &self,
        cookie: JsValue,
        send: impl FnOnce(&mut Inner, Instant) -> Result<SendId, peermsg::SendError>,
    ) -> Result<f64, JsError> {
        let id = {
            let mut inner = self.inner.borrow_mut();
            let now = inner.clock.now();
            let id = send(&mut inner, now).map_err(|e| JsError::new(&e.to_string()))?;
            inner.cookies.insert(id.0, cookie);
            id
        };
        drive(&self.inner);
        Ok(id.0 as f64)
    }
}

/// The SDK's name and meaning of an error code, such as
/// `"0 NOERR: success"` or `"207 CONNECTIONLOST: ..."`.
#[wasm_bindgen(js_name = errorName)]
pub fn error_name(code: u32) -> String {
    ErrorCode::from(code).to_string()
}

/// The identity key (a 32-byte `Uint8Array`) of `secret` (32 bytes): what peers pin, and
/// what a person compares.
#[wasm_bindgen(js_name = identityOf)]
pub fn identity_of(secret: &Uint8Array) -> Result<Uint8Array, JsError> {
    let key = peermsg::seal::identity_of(&key32(secret, "a secret")?);
    Ok(Uint8Array::from(&key.0[..]))
}

/// 32 bytes from JavaScript, or why not.
fn key32(bytes: &Uint8Array, what: &str) -> Result<[u8; 32], JsError> {
    <[u8; 32]>::try_from(bytes.to_vec())
        .map_err(|v| JsError::new(&format!("{what} is 32 bytes, not {}", v.len())))
}

/// The sealing `handlers.sealing` asks for, if any: its secret, its pins, whether keys
/// are trusted on first use; the generator seeded from `crypto.getRandomValues`.
fn sealing_of(handlers: &JsValue) -> Result<Option<Sealing>, JsError> {
    let get = |target: &JsValue, key: &str| js_sys::Reflect::get(target, &key.into()).ok();
    let Some(options) = get(handlers, "sealing").filter(|v| v.is_object()) else {
        return Ok(None);
    };
    let secret = get(&options, "secret")
        .and_then(|v| v.dyn_into::<Uint8Array>().ok())
        .ok_or_else(|| JsError::new("sealing.secret must be a Uint8Array of 32 bytes"))?;
    let mut entropy = [0u8; 32];
    random(&mut entropy)?;
    let mut pinned = Vec::new();
    if let Some(pins) = get(&options, "pinned").filter(|v| v.is_object()) {
        for user in js_sys::Object::keys(pins.unchecked_ref::<js_sys::Object>()).iter() {
            let name = user.as_string().unwrap_or_default();
            let key = get(&pins, &name)
                .and_then(|v| v.dyn_into::<Uint8Array>().ok())
                .ok_or_else(|| JsError::new("sealing.pinned maps user ids to Uint8Arrays"))?;
            let user = UserId::new(&name).map_err(|e| JsError::new(&e.to_string()))?;
            pinned.push((user, IdentityKey(key32(&key, "a pinned key")?)));
        }
    }
    Ok(Some(Sealing {
        secret: key32(&secret, "sealing.secret")?,
        entropy,
        pinned,
        trust_first_use: get(&options, "trustFirstUse").and_then(|v| v.as_bool()) != Some(false),
    }))
}

/// A command's or buffer's bytes: a string as UTF-8, or a `Uint8Array` (or any
/// `ArrayBuffer` view).
fn bytes_of(data: &JsValue) -> Result<Bytes, JsError> {
    if let Some(text) = data.as_string() {
        return Ok(Bytes::from(text.into_bytes()));
    }
    if data.is_instance_of::<Uint8Array>() || data.is_instance_of::<js_sys::ArrayBuffer>() {
        return Ok(Bytes::from(Uint8Array::new(data).to_vec()));
    }
    Err(JsError::new(
        "data must be a string, a Uint8Array or an ArrayBuffer",
    ))
}

/// Random bytes from the browser's `crypto.getRandomValues`.
fn random(out: &mut [u8]) -> Result<(), JsError> {
    web_sys::window()
        .and_then(|w| w.crypto().ok())
        .and_then(|c| c.get_random_values_with_u8_array(out).ok())
        .map(|_| ())
        .ok_or_else(|| JsError::new("no crypto.getRandomValues"))
}

fn js_error(e: JsValue) -> JsError {
    JsError::new(&e.as_string().unwrap_or_else(|| format!("{e:?}")))
}
