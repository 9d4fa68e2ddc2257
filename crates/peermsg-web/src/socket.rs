//! The connection's WebSocket: opened (again, by the core's schedule), its messages handed
//! to the core, its end told to it.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::BytesMut;
use js_sys::Uint8Array;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, MessageEvent, WebSocket};

use crate::driver::{drive, Inner};

/// The connection's WebSocket and the closures it calls.
pub(crate) struct Socket {
    pub(crate) ws: WebSocket,
    pub(crate) opened: bool,
    /// A connection after the first: on opening, the core is told ([`Continuity::connected`]).
    pub(crate) redial: bool,
    pub(crate) _handlers: [Closure<dyn FnMut(JsValue)>; 3],
}

impl Socket {
    /// Detaches the handlers and closes the socket; nothing of it is heard again.
    pub(crate) fn retire(self) -> Socket {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        let _ = self.ws.close();
        self
    }
}

/// Opens a WebSocket to the relay (a connection after the first with `redial`).
pub(crate) fn dial(rc: &Rc<RefCell<Inner>>, redial: bool) -> Result<(), JsValue> {
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
