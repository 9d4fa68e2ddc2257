//! The drive loop of a [`PeerMsg`](crate::PeerMsg): the state it holds ([`Inner`]), the
//! pump that writes and hands out events until the core has nothing more, the one timer,
//! the clock, and the callbacks, made once the state is free.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use bytes::BytesMut;
use js_sys::{Array, Function, Uint8Array};
use peermsg::client::{Event, SendKind};
use peermsg::continuity::Continuity;
use peermsg::seal::KeyStatus;
use peermsg::wire::{Digest, ResumeKey};
use peermsg::{ErrorCode, Instant};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::files::{read_file, Incoming, Outgoing, Partial};
use crate::socket::{dial, Socket};
use crate::{DRAIN_POLL_MS, HIGH_WATER, MAX_MESSAGE};

/// The time as the core takes it: `performance.now()` since the client began.
pub(crate) struct Clock {
    pub(crate) performance: web_sys::Performance,
    pub(crate) epoch: f64,
}

impl Clock {
    pub(crate) fn new() -> Result<Clock, JsError> {
        let performance = web_sys::window()
            .and_then(|w| w.performance())
            .ok_or_else(|| JsError::new("no window.performance"))?;
        let epoch = performance.now();
        Ok(Clock { performance, epoch })
    }

    pub(crate) fn now(&self) -> Instant {
        let ms = (self.performance.now() - self.epoch).max(0.0);
        Instant::from_micros((ms * 1000.0) as u64)
    }

    /// Milliseconds from now to `at`, for `setTimeout`.
    pub(crate) fn ms_until(&self, at: Instant) -> i32 {
        let micros = at.as_micros().saturating_sub(self.now().as_micros());
        i32::try_from(micros.div_ceil(1000)).unwrap_or(i32::MAX)
    }
}

/// A callback to make once the state is no longer borrowed (it may call back in).
pub(crate) struct Call {
    pub(crate) function: Function,
    pub(crate) args: Array,
}

/// Everything a [`PeerMsg`] holds.
pub(crate) struct Inner {
    pub(crate) cont: Continuity,
    pub(crate) url: String,
    pub(crate) handlers: JsValue,
    pub(crate) clock: Clock,
    pub(crate) socket: Option<Socket>,
    /// Sockets replaced, dropped on the next dial (not from their own callbacks).
    pub(crate) retired: Vec<Socket>,
    pub(crate) on_timer: Closure<dyn FnMut()>,
    pub(crate) timer: Option<i32>,
    pub(crate) out: BytesMut,
    /// Blocks of files to read, to start once the state is free.
    pub(crate) reads: Vec<(u64, u64, u64)>,
    pub(crate) files_out: HashMap<u64, Outgoing>,
    pub(crate) cookies: HashMap<u64, JsValue>,
    pub(crate) cancels: HashMap<u64, JsValue>,
    pub(crate) files_in: HashMap<u64, Incoming>,
    pub(crate) partials: VecDeque<Partial>,
    pub(crate) delivered: VecDeque<(String, ResumeKey, u64, Digest)>,
    pub(crate) told_login: bool,
}

impl Inner {
    /// The drive loop: bytes to the socket as far as its buffer has room, events to the
    /// application, until the core has nothing more; then the timer for what it waits on.
    /// Gives the callbacks to make.
    pub(crate) fn pump(&mut self) -> Vec<Call> {
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
    pub(crate) fn transmit(&mut self) -> (bool, bool) {
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
    pub(crate) fn set_timer(&mut self, blocked: bool) {
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
    pub(crate) fn call(&self, calls: &mut Vec<Call>, name: &str, args: &[JsValue]) {
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

    pub(crate) fn on_event(&mut self, event: Event, calls: &mut Vec<Call>) {
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
            Event::PeerKey { user, key, status } => {
                let key = key.map_or(JsValue::NULL, |k| Uint8Array::from(&k.0[..]).into());
                let status = match status {
                    None => "pinned",
                    Some(KeyStatus::Learned) => "learned",
                    Some(KeyStatus::Changed { .. }) => "changed",
                    Some(_) => "unknown",
                };
                self.call(
                    calls,
                    "onPeerKey",
                    &[user.as_str().into(), key, status.into()],
                );
            }
            Event::Refused { from, kind, code } => {
                let kind = match kind {
                    SendKind::Cmd => "command",
                    SendKind::Buffer => "buffer",
                    SendKind::File => "file",
                };
                let args = [from.as_str().into(), kind.into(), code_of(code)];
                self.call(calls, "onRefused", &args);
            }
            _ => {}
        }
    }
}

/// Drives the core after an input: writes, events, callbacks (made with the state free,
/// so they may call in), file reads started.
pub(crate) fn drive(rc: &Rc<RefCell<Inner>>) {
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
pub(crate) fn on_timer(rc: &Rc<RefCell<Inner>>) {
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
