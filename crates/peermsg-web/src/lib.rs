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

mod source;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};

use bytes::{Bytes, BytesMut};
use js_sys::{Array, Function, Uint8Array};
use peermsg::client::{ClientConfig, Event, ReceiveId, SendId, SendKind};
use peermsg::continuity::{Continuity, Policy};
use peermsg::wire::{Digest, ResumeKey};
use peermsg::{ErrorCode, Instant};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{BinaryType, Blob, File, FilePropertyBag, MessageEvent, WebSocket};

use source::Source;

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
/// `notifyCancelSend(id, from, code)` (an incoming buffer or file ended without arriving).
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
                source: Source::new(size),
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

/// The time as the core takes it: `performance.now()` since the client began.
struct Clock {
    performance: web_sys::Performance,
    epoch: f64,
}

impl Clock {
    fn new() -> Result<Clock, JsError> {
        let performance = web_sys::window()
            .and_then(|w| w.performance())
            .ok_or_else(|| JsError::new("no window.performance"))?;
        let epoch = performance.now();
        Ok(Clock { performance, epoch })
    }

    fn now(&self) -> Instant {
        let ms = (self.performance.now() - self.epoch).max(0.0);
        Instant::from_micros((ms * 1000.0) as u64)
    }

    /// Milliseconds from now to `at`, for `setTimeout`.
    fn ms_until(&self, at: Instant) -> i32 {
        let micros = at.as_micros().saturating_sub(self.now().as_micros());
        i32::try_from(micros.div_ceil(1000)).unwrap_or(i32::MAX)
    }
}

/// The connection's WebSocket and the closures it calls.
struct Socket {
    ws: WebSocket,
    opened: bool,
    /// A connection after the first: on opening, the core is told ([`Continuity::connected`]).
    redial: bool,
    _handlers: [Closure<dyn FnMut(JsValue)>; 3],
}

impl Socket {
    /// Detaches the handlers and closes the socket; nothing of it is heard again.
    fn retire(self) -> Socket {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        let _ = self.ws.close();
        self
    }
}

/// A file being sent: its `Blob`, its name, and what is read of it.
struct Outgoing {
    blob: Blob,
    name: String,
    source: Source,
}

/// A file being received: its bytes so far, in a `Blob` and pieces not yet moved into it.
struct Incoming {
    from: String,
    name: String,
    key: Option<ResumeKey>,
    blob: Blob,
    pieces: Array,
    pieces_len: usize,
    received: u64,
    digest: Digest,
    /// Delivered before to an application whose sender never heard: confirmed, not
    /// delivered again.
    repeat: bool,
}

impl Incoming {
    /// Moves the pieces into the `Blob`.
    fn settle(&mut self) -> Result<(), JsValue> {
        if self.pieces_len == 0 && self.pieces.length() == 0 {
            return Ok(());
        }
        let parts = Array::of1(&self.blob);
        for piece in self.pieces.iter() {
            parts.push(&piece);
        }
        self.blob = Blob::new_with_blob_sequence(&parts)?;
        self.pieces = Array::new();
        self.pieces_len = 0;
        Ok(())
    }
}

/// What is held of a file whose connection was lost: its bytes and their digest, under
/// its sender and key.
struct Partial {
    from: String,
    key: ResumeKey,
    blob: Blob,
    len: u64,
    digest: Digest,
}

/// A callback to make once the state is no longer borrowed (it may call back in).
struct Call {
    function: Function,
    args: Array,
}

/// Everything a [`PeerMsg`] holds.
struct Inner {
    cont: Continuity,
    url: String,
    handlers: JsValue,
    clock: Clock,
    socket: Option<Socket>,
    /// Sockets replaced, dropped on the next dial (not from their own callbacks).
    retired: Vec<Socket>,
    on_timer: Closure<dyn FnMut()>,
    timer: Option<i32>,
    out: BytesMut,
    /// Blocks of files to read, to start once the state is free.
    reads: Vec<(u64, u64, u64)>,
    files_out: HashMap<u64, Outgoing>,
    cookies: HashMap<u64, JsValue>,
    cancels: HashMap<u64, JsValue>,
    files_in: HashMap<u64, Incoming>,
    partials: VecDeque<Partial>,
    delivered: VecDeque<(String, ResumeKey, u64, Digest)>,
    told_login: bool,
}

impl Inner {
    /// The drive loop: bytes to the socket as far as its buffer has room, events to the
    /// application, until the core has nothing more; then the timer for what it waits on.
    /// Gives the callbacks to make.
    fn pump(&mut self) -> Vec<Call> {
        let mut calls = Vec::new();
        let blocked = loop {
            let (sent, full) = self.transmit();
            let mut events = false;
            while let Some(event) = self.cont.poll_event() {
                events = true;
                self.on_event(event, &mut calls);
            }
            if !sent && !events {
                break full;
            }
        };
        self.set_timer(blocked);
        calls
    }

    /// Writes what the core has, while the socket's buffer has room: (anything written,
    /// the buffer is full).
    fn transmit(&mut self) -> (bool, bool) {
        let Some(socket) = self.socket.as_ref().filter(|s| s.opened) else {
            return (false, false);
        };
        let mut sent = false;
        let mut full = false;
        loop {
            if socket.ws.buffered_amount() >= HIGH_WATER {
                full = true;
                break;
            }
            if self.cont.poll_transmit(&mut self.out) == 0 {
                break;
            }
            while !self.out.is_empty() {
                let message = self.out.split_to(self.out.len().min(MAX_MESSAGE));
                if socket.ws.send_with_u8_array(&message).is_err() {
                    // The socket is closing: its close event tells the core.
                    self.out.clear();
                    return (sent, false);
                }
                sent = true;
            }
        }
        (sent, full)
    }

    /// One timer: the core's next deadline, its next dial, or a look at a full buffer.
    fn set_timer(&mut self, blocked: bool) {
        let Some(window) = web_sys::window() else {
            return;
        };
        if let Some(handle) = self.timer.take() {
            window.clear_timeout_with_handle(handle);
        }
        let redial = match self.socket {
            None => self.cont.poll_redial(),
            Some(_) => None,
        };
        let at = [self.cont.poll_timeout(), redial]
            .into_iter()
            .flatten()
            .min();
        let mut ms = at.map(|at| self.clock.ms_until(at));
        if blocked {
            ms = Some(ms.map_or(DRAIN_POLL_MS, |ms| ms.min(DRAIN_POLL_MS)));
        }
        if let Some(ms) = ms {
            self.timer = window
                .set_timeout_with_callback_and_timeout_and_arguments_0(
                    self.on_timer.as_ref().unchecked_ref(),
                    ms,
                )
                .ok();
        }
    }

    /// The callback `name` of the handlers with `args`, if the application gave it.
    fn call(&self, calls: &mut Vec<Call>, name: &str, args: &[JsValue]) {
        let function = js_sys::Reflect::get(&self.handlers, &JsValue::from_str(name))
            .ok()
            .and_then(|f| f.dyn_into::<Function>().ok());
        if let Some(function) = function {
            calls.push(Call {
                function,
                args: args.iter().collect(),
            });
        }
    }

    fn on_event(&mut self, event: Event, calls: &mut Vec<Call>) {
        let num = |n: u64| JsValue::from_f64(n as f64);
        let code_of = |code: ErrorCode| JsValue::from(code.as_u32());
        match event {
            Event::LoginResult { code } => {
                self.call(calls, "onLogin", &[code_of(code)]);
                if code == ErrorCode::NOERR && !self.told_login {
                    self.told_login = true;
                    self.call(calls, "onState", &["connected".into(), code_of(code)]);
                }
            }
            Event::Reconnected => self.call(
                calls,
                "onState",
                &["connected".into(), code_of(ErrorCode::NOERR)],
            ),
            Event::Closed { code, .. } => {
                let state = match self.cont.poll_redial() {
                    Some(_) => "reconnecting",
                    None => "closed",
                };
                self.call(calls, "onState", &[state.into(), code_of(code)]);
            }
            Event::SendResult { id, kind, code, .. } => {
                let cookie = self.cookies.remove(&id.0).unwrap_or(JsValue::UNDEFINED);
                match kind {
                    SendKind::Cmd => {
                        self.call(calls, "sendCmdRlst", &[num(id.0), code_of(code), cookie])
                    }
                    SendKind::Buffer => {
                        self.call(calls, "sendBufferRlst", &[num(id.0), code_of(code), cookie])
                    }
                    SendKind::File => {
                        let name = self.files_out.remove(&id.0).map(|s| s.name);
                        let name = JsValue::from(name.unwrap_or_default());
                        self.call(
                            calls,
                            "sendFileRlst",
                            &[num(id.0), name, code_of(code), cookie],
                        )
                    }
                }
            }
            Event::Progress {
                id, sent, total, ..
            } => {
                let cookie = self
                    .cookies
                    .get(&id.0)
                    .cloned()
                    .unwrap_or(JsValue::UNDEFINED);
                self.call(
                    calls,
                    "sendProgress",
                    &[num(id.0), num(sent), num(total), cookie],
                );
            }
            Event::CancelResult { id, code, .. } => {
                let cookie = self.cancels.remove(&id.0).unwrap_or(JsValue::UNDEFINED);
                self.call(calls, "cancelSendRlst", &[num(id.0), code_of(code), cookie]);
            }
            Event::SendWaiting { id, code, .. } => {
                self.call(calls, "sendWaiting", &[num(id.0), code_of(code)])
            }
            Event::Resumed { id, offset, .. } => {
                let cookie = self
                    .cookies
                    .get(&id.0)
                    .cloned()
                    .unwrap_or(JsValue::UNDEFINED);
                self.call(calls, "sendResumed", &[num(id.0), num(offset), cookie]);
            }
            Event::FileRead { id, offset, len } => self.file_read(id, offset, len),
            Event::CmdReceived { from, data, .. } => {
                let data = Uint8Array::from(&data[..]);
                self.call(calls, "notifyCmdData", &[from.as_str().into(), data.into()]);
            }
            Event::BufferReceived { from, data, .. } => {
                let data = Uint8Array::from(&data[..]);
                self.call(
                    calls,
                    "notifyBufferData",
                    &[from.as_str().into(), data.into()],
                );
            }
            Event::ReceiveProgress {
                id,
                received,
                total,
            } => self.call(
                calls,
                "receiveProgress",
                &[num(id.0), num(received), num(total)],
            ),
            Event::Offer {
                id,
                from,
                kind: SendKind::File,
                name,
                size,
                resume_key,
            } => {
                self.offer(id, from.as_str(), name.as_str(), resume_key);
                let args = [
                    num(id.0),
                    from.as_str().into(),
                    name.as_str().into(),
                    num(size),
                ];
                self.call(calls, "notifyFileOffer", &args);
            }
            Event::FileData {
                id,
                offset,
                data,
                digest,
            } => self.file_data(id, offset, &data, digest),
            Event::FileReceived { id, from, size } => {
                self.file_received(id, size, calls, from.as_str())
            }
            Event::ReceiveFailed { id, from, code } => {
                self.receive_failed(id, code);
                if !code.is_cut_off() {
                    let args = [num(id.0), from.as_str().into(), code_of(code)];
                    self.call(calls, "notifyCancelSend", &args);
                }
            }
            _ => {}
        }
    }

    /// The core asks for bytes of a file being sent: given now if read ahead already;
    /// the next block is read if one should be.
    fn file_read(&mut self, id: SendId, offset: u64, len: u64) {
        let Some(Outgoing { source, .. }) = self.files_out.get_mut(&id.0) else {
            let _ = self.cont.file_read_failed(id);
            return;
        };
        let ready = source.ask(offset, len);
        if let Some((at, block)) = source.next_read() {
            self.reads.push((id.0, at, block));
        }
        if let Some(bytes) = ready {
            let _ = self.cont.supply_file_data(id, offset, bytes);
        }
    }

    /// A block of a file being sent was read (or could not be).
    fn block_read(&mut self, id: SendId, at: u64, read: Option<Bytes>) {
        let Some(Outgoing { source, .. }) = self.files_out.get_mut(&id.0) else {
            return;
        };
        let Some(bytes) = read else {
            source.read_failed();
            let _ = self.cont.file_read_failed(id);
            return;
        };
        let ready = source.arrived(at, bytes);
        if let Some((at, block)) = source.next_read() {
            self.reads.push((id.0, at, block));
        }
        if let Some((offset, bytes)) = ready {
            let _ = self.cont.supply_file_data(id, offset, bytes);
        }
    }

    /// A file is offered: it goes on from what is held of it (a part kept from a lost
    /// connection, or all of it when it was delivered before), or begins.
    fn offer(&mut self, id: ReceiveId, from: &str, name: &str, key: Option<ResumeKey>) {
        let mut incoming = Incoming {
            from: from.into(),
            name: name.into(),
            key,
            blob: Blob::new().unwrap_or_else(|_| unreachable_blob()),
            pieces: Array::new(),
            pieces_len: 0,
            received: 0,
            digest: Digest::OF_NOTHING,
            repeat: false,
        };
        if let Some(key) = key {
            if let Some(&(_, _, size, digest)) = self
                .delivered
                .iter()
                .find(|(f, k, _, _)| f == from && *k == key)
            {
                incoming.repeat = true;
                incoming.received = size;
                incoming.digest = digest;
            } else if let Some(at) = self
                .partials
                .iter()
                .position(|p| p.from == from && p.key == key)
            {
                let partial = self.partials.remove(at).expect("found");
                incoming.blob = partial.blob;
                incoming.received = partial.len;
                incoming.digest = partial.digest;
            }
            let (offset, digest) = (incoming.received, incoming.digest);
            if self.cont.resume_incoming(id, offset, digest).is_err() {
                // Held more than the file is (another file under the same key): anew.
                incoming = Incoming {
                    blob: Blob::new().unwrap_or_else(|_| unreachable_blob()),
                    received: 0,
                    digest: Digest::OF_NOTHING,
                    repeat: false,
                    ..incoming
                };
                let _ = self.cont.resume_incoming(id, 0, Digest::OF_NOTHING);
            }
        }
        self.files_in.insert(id.0, incoming);
    }

    fn file_data(&mut self, id: ReceiveId, offset: u64, data: &[u8], digest: Digest) {
        let Some(incoming) = self.files_in.get_mut(&id.0) else {
            return;
        };
        if offset != incoming.received {
            return; // the core hands bytes in order; nothing else can come
        }
        incoming.pieces.push(&Uint8Array::from(data));
        incoming.pieces_len += data.len();
        incoming.received += data.len() as u64;
        incoming.digest = digest;
        if incoming.pieces_len >= BLOB_STEP && incoming.settle().is_err() {
            let _ = self.cont.fail_delivery(id, ErrorCode::FILE_WRITE_ERR);
        }
    }

    /// A file arrived whole and verified: kept as a `File`, confirmed, and handed to the
    /// application (once: a repeat is only confirmed).
    fn file_received(&mut self, id: ReceiveId, size: u64, calls: &mut Vec<Call>, from: &str) {
        let Some(mut incoming) = self.files_in.remove(&id.0) else {
            let _ = self.cont.fail_delivery(id, ErrorCode::FILE_WRITE_ERR);
            return;
        };
        if incoming.repeat {
            let _ = self.cont.accept_delivery(id);
            return;
        }
        let file = incoming.settle().and_then(|_| {
            let options = FilePropertyBag::new();
            File::new_with_blob_sequence_and_options(
                &Array::of1(&incoming.blob),
                &incoming.name,
                &options,
            )
        });
        let Ok(file) = file else {
            let _ = self.cont.fail_delivery(id, ErrorCode::FILE_WRITE_ERR);
            return;
        };
        let _ = self.cont.accept_delivery(id);
        if let Some(key) = incoming.key {
            if self.delivered.len() >= DELIVERED {
                self.delivered.pop_front();
            }
            self.delivered
                .push_back((incoming.from.clone(), key, size, incoming.digest));
        }
        let args = [from.into(), file.into(), incoming.name.as_str().into()];
        self.call(calls, "notifyFileData", &args);
    }

    /// A file ended without arriving: cut off, what came of it is kept for its sender's
    /// return; else dropped.
    fn receive_failed(&mut self, id: ReceiveId, code: ErrorCode) {
        let Some(mut incoming) = self.files_in.remove(&id.0) else {
            return;
        };
        let Some(key) = incoming
            .key
            .filter(|_| code.is_cut_off() && !incoming.repeat)
        else {
            return;
        };
        if incoming.settle().is_err() {
            return;
        }
        if self.partials.len() >= PARTIALS {
            self.partials.pop_front();
        }
        self.partials.push_back(Partial {
            from: incoming.from,
            key,
            blob: incoming.blob,
            len: incoming.received,
            digest: incoming.digest,
        });
    }
}

/// `Blob::new` fails only where there is no `Blob`; this crate runs where there is.
fn unreachable_blob() -> Blob {
    wasm_bindgen::throw_str("this browser has no Blob")
}

/// Drives the core after an input: writes, events, callbacks (made with the state free,
/// so they may call in), file reads started.
fn drive(rc: &Rc<RefCell<Inner>>) {
    let (calls, reads) = {
        let mut inner = rc.borrow_mut();
        let calls = inner.pump();
        (calls, std::mem::take(&mut inner.reads))
    };
    for (id, offset, len) in reads {
        read_file(rc, id, offset, len);
    }
    for call in calls {
        if let Err(error) = call.function.apply(&JsValue::NULL, &call.args) {
            web_sys::console::error_2(&"peermsg: a callback threw".into(), &error);
        }
    }
}

/// The timer fired: a dial that is due, the core's deadlines, a full buffer looked at.
fn on_timer(rc: &Rc<RefCell<Inner>>) {
    let dial_now = {
        let mut inner = rc.borrow_mut();
        inner.timer = None;
        let now = inner.clock.now();
        inner.cont.handle_timeout(now);
        inner.socket.is_none() && inner.cont.poll_redial().is_some_and(|at| at <= now)
    };
    if dial_now && dial(rc, true).is_err() {
        let mut inner = rc.borrow_mut();
        let now = inner.clock.now();
        inner.cont.redial_failed(now);
    }
    drive(rc);
}

/// Opens a WebSocket to the relay (a connection after the first with `redial`).
fn dial(rc: &Rc<RefCell<Inner>>, redial: bool) -> Result<(), JsValue> {
    let url = {
        let mut inner = rc.borrow_mut();
        inner.retired.clear();
        inner.url.clone()
    };
    let ws = WebSocket::new(&url)?;
    ws.set_binary_type(BinaryType::Arraybuffer);
    let weak = Rc::downgrade(rc);
    let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_: JsValue| {
        let Some(rc) = weak.upgrade() else { return };
        {
            let mut inner = rc.borrow_mut();
            let now = inner.clock.now();
            let Some(socket) = inner.socket.as_mut() else {
                return;
            };
            socket.opened = true;
            if socket.redial {
                inner.cont.connected(now);
            }
        }
        drive(&rc);
    });
    let weak = Rc::downgrade(rc);
    let on_message = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
        let Some(rc) = weak.upgrade() else { return };
        let Ok(event) = event.dyn_into::<MessageEvent>() else {
            return;
        };
        let data = Uint8Array::new(&event.data());
        {
            let mut inner = rc.borrow_mut();
            let now = inner.clock.now();
            let mut bytes = BytesMut::zeroed(data.length() as usize);
            data.copy_to(&mut bytes);
            inner.cont.handle_input_buf(now, bytes);
        }
        drive(&rc);
    });
    let weak = Rc::downgrade(rc);
    let on_lost = Closure::<dyn FnMut(JsValue)>::new(move |_: JsValue| {
        let Some(rc) = weak.upgrade() else { return };
        {
            let mut inner = rc.borrow_mut();
            let now = inner.clock.now();
            let Some(socket) = inner.socket.take() else {
                return;
            };
            let (opened, redial) = (socket.opened, socket.redial);
            // Dropped later: this closure is one of its own.
            let socket = socket.retire();
            inner.retired.push(socket);
            match (opened, redial) {
                (false, true) => inner.cont.redial_failed(now),
                _ => inner.cont.handle_disconnect(now),
            }
        }
        drive(&rc);
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_lost.as_ref().unchecked_ref()));
    ws.set_onerror(Some(on_lost.as_ref().unchecked_ref()));
    rc.borrow_mut().socket = Some(Socket {
        ws,
        opened: false,
        redial,
        _handlers: [on_open, on_message, on_lost],
    });
    Ok(())
}

/// Reads a block of send `id`'s file (`Blob.slice`, `arrayBuffer`) and hands it to its
/// [`Source`].
fn read_file(rc: &Rc<RefCell<Inner>>, id: u64, offset: u64, len: u64) {
    let slice = match rc.borrow().files_out.get(&id) {
        Some(outgoing) => outgoing
            .blob
            .slice_with_f64_and_f64(offset as f64, (offset + len) as f64),
        None => return,
    };
    let weak = Rc::downgrade(rc);
    wasm_bindgen_futures::spawn_local(async move {
        let read = match slice {
            Ok(slice) => JsFuture::from(slice.array_buffer()).await,
            Err(e) => Err(e),
        };
        let Some(rc) = weak.upgrade() else { return };
        // Shorter than asked: the file changed meanwhile, and cannot be sent as it was.
        let bytes = read
            .ok()
            .map(|buffer| Uint8Array::new(&buffer).to_vec())
            .filter(|bytes| bytes.len() as u64 == len)
            .map(Bytes::from);
        rc.borrow_mut().block_read(SendId(id), offset, bytes);
        drive(&rc);
    });
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
