//! The callbacks: what the application gave ([`PmCallbacks`]), what waits for the callback
//! thread ([`Callback`]), the client's events turned into callbacks ([`forward_events`]),
//! and the thread that makes them ([`run_callbacks`]).

use std::ffi::{c_char, c_void, CString};
use std::sync::Mutex;

use bytes::Bytes;
use peermsg::client::{Event, ReceiveId, SendId};
use peermsg::ErrorCode;
use peermsg_tokio::{ClientEvent, ClientEvents, ClientHandle};
use tokio::sync::mpsc;

use super::sends::{SendResult, Sent};
use super::{lock, PM_STATE_CONNECTED, PM_STATE_DISCONNECTED, PM_STATE_RECONNECTING};
use crate::boundary::{c_string, code_number};

/// Callbacks waiting for the callback thread, at most.
pub const PM_CALLBACK_QUEUE: usize = 64;

/// The application's callbacks (`pm_callbacks` in C): the SDK's seven and the connection's
/// state. Any may be NULL. Each gets `ctx` first. Strings and bytes passed to a callback
/// are valid only during the call: copy what you keep.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PmCallbacks {
    /// Passed to every callback as is.
    pub ctx: *mut c_void,
    /// The connection's state changed: `PM_STATE_*`, and why (`NOERR`, or the code that
    /// ended the connection).
    pub connection_state: Option<unsafe extern "C" fn(ctx: *mut c_void, state: i32, code: i32)>,
    /// `sendCmdRlst`: command `send_id` ended with `code` (`NOERR` once the receiving
    /// application has it).
    pub send_cmd_rlst:
        Option<unsafe extern "C" fn(ctx: *mut c_void, send_id: u64, code: i32, cookie: u64)>,
    /// `sendBufferRlst`: buffer `send_id` ended with `code`.
    pub send_buffer_rlst:
        Option<unsafe extern "C" fn(ctx: *mut c_void, send_id: u64, code: i32, cookie: u64)>,
    /// `sendFileRlst`: file `send_id` (`file_name`, as given to `pm_send_file`) ended with
    /// `code`.
    pub send_file_rlst: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            send_id: u64,
            file_name: *const c_char,
            code: i32,
            cookie: u64,
        ),
    >,
    /// `sendProgress`: `sent` bytes of `total` of buffer or file `send_id` are taken by its
    /// receiver (it never goes back, across reconnects too).
    pub send_progress: Option<
        unsafe extern "C" fn(ctx: *mut c_void, send_id: u64, sent: u64, total: u64, cookie: u64),
    >,
    /// `notifyCmdData`: a command from `from`.
    pub notify_cmd_data: Option<
        unsafe extern "C" fn(ctx: *mut c_void, from: *const c_char, data: *const u8, len: usize),
    >,
    /// `notifyBufferData`: a buffer from `from`. Its sender is told `NOERR` once this
    /// returns.
    pub notify_buffer_data: Option<
        unsafe extern "C" fn(ctx: *mut c_void, from: *const c_char, data: *const u8, len: usize),
    >,
    /// `notifyFileData`: a file from `from`, whole and verified, at `tmp_file` (the
    /// application's now: move or delete it), sent as `org_file_name` (sanitised).
    pub notify_file_data: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            from: *const c_char,
            tmp_file: *const c_char,
            org_file_name: *const c_char,
        ),
    >,
    /// With sealing on (`pm_set_sealing`): what became of user `user`'s identity key, `key`
    /// (32 bytes; NULL if the user has none), `status` a `PM_KEY_*`. Keep a
    /// `PM_KEY_LEARNED` key and pin it next time (`pm_pin_key`); tell the person of a
    /// `PM_KEY_CHANGED` one.
    pub peer_key: Option<
        unsafe extern "C" fn(ctx: *mut c_void, user: *const c_char, key: *const u8, status: u64),
    >,
}

// SAFETY: `ctx` is the application's; the header tells it every callback comes on the one
// callback thread, so the application makes `ctx` fit for that.
unsafe impl Send for PmCallbacks {}

impl PmCallbacks {
    pub(super) const NONE: PmCallbacks = PmCallbacks {
        ctx: std::ptr::null_mut(),
        connection_state: None,
        send_cmd_rlst: None,
        send_buffer_rlst: None,
        send_file_rlst: None,
        send_progress: None,
        notify_cmd_data: None,
        notify_buffer_data: None,
        notify_file_data: None,
        peer_key: None,
    };
}

/// A callback waiting for the callback thread.
pub(super) enum Callback {
    State(i32, ErrorCode),
    /// Results of sends, in the order they came.
    Results(Vec<SendResult>),
    Progress {
        id: SendId,
        sent: u64,
        total: u64,
        cookie: u64,
    },
    Cmd(CString, Bytes),
    /// A buffer, confirmed to its sender once its callback returned.
    Buffer(ReceiveId, CString, Bytes),
    File {
        from: CString,
        tmp_file: CString,
        name: CString,
    },
    PeerKey(CString, Option<[u8; 32]>, u64),
}

/// Hands the client's events to the callback thread, waiting while it is full (so incoming
/// messages wait to be confirmed, as the tokio client's own channel makes them).
pub(super) async fn forward_events(mut events: ClientEvents, queue: mpsc::Sender<Callback>) {
    let mut closed = ErrorCode::CONNECTIONLOST;
    while let Some(event) = events.recv().await {
        let callback = match event {
            ClientEvent::Core(Event::CmdReceived { from, data, .. }) => {
                Callback::Cmd(c_string(from.as_str()), data)
            }
            ClientEvent::Core(Event::BufferReceived { id, from, data }) => {
                Callback::Buffer(id, c_string(from.as_str()), data)
            }
            ClientEvent::FileReceived {
                from,
                tmp_file,
                org_file_name,
                ..
            } => Callback::File {
                from: c_string(from.as_str()),
                tmp_file: c_string(&tmp_file.to_string_lossy()),
                name: c_string(&org_file_name),
            },
            ClientEvent::Core(Event::PeerKey { user, key, status }) => Callback::PeerKey(
                c_string(user.as_str()),
                key.map(|k| k.0),
                crate::sealing::key_status(status),
            ),
            ClientEvent::Reconnecting { .. } => {
                Callback::State(PM_STATE_RECONNECTING, ErrorCode::CONNECTIONLOST)
            }
            ClientEvent::Reconnected { .. } => {
                Callback::State(PM_STATE_CONNECTED, ErrorCode::NOERR)
            }
            ClientEvent::Core(Event::Closed { code, .. }) => {
                closed = code;
                continue;
            }
            _ => continue,
        };
        if queue.send(callback).await.is_err() {
            return;
        }
    }
    let _ = queue
        .send(Callback::State(PM_STATE_DISCONNECTED, closed))
        .await;
}

/// The callback thread: makes each callback in turn, until every sender is gone, and
/// confirms each buffer once the application has had it.
pub(super) fn run_callbacks(
    mut queue: mpsc::Receiver<Callback>,
    callbacks: &Mutex<PmCallbacks>,
    client: &ClientHandle,
) {
    while let Some(callback) = queue.blocking_recv() {
        let c = *lock(callbacks);
        // SAFETY: the application's callbacks, with the arguments the header promises them;
        // every pointer lives until the call returns.
        if let Some(buffer) = unsafe { call(&c, callback) } {
            // Unknown once its connection is gone: its sender sends it again.
            let _ = client.accept_buffer(buffer);
        }
    }
}

/// Makes one callback; the incoming buffer it handed over, if it was one.
///
/// # Safety
/// `c` holds the application's callbacks, as `pm_set_callbacks` took them.
unsafe fn call(c: &PmCallbacks, callback: Callback) -> Option<ReceiveId> {
    let ctx = c.ctx;
    // SAFETY: (all below) the application's functions, with live arguments.
    match callback {
        Callback::State(state, code) => {
            if let Some(f) = c.connection_state {
                unsafe { f(ctx, state, code_number(code)) }
            }
        }
        Callback::Results(results) => {
            for r in results {
                let code = code_number(r.code);
                match (
                    &r.what,
                    c.send_cmd_rlst,
                    c.send_buffer_rlst,
                    c.send_file_rlst,
                ) {
                    (Sent::Cmd, Some(f), _, _) | (Sent::Buffer, _, Some(f), _) => unsafe {
                        f(ctx, r.id.0, code, r.cookie)
                    },
                    (Sent::File(name), _, _, Some(f)) => unsafe {
                        f(ctx, r.id.0, name.as_ptr(), code, r.cookie)
                    },
                    _ => {}
                }
            }
        }
        Callback::Progress {
            id,
            sent,
            total,
            cookie,
        } => {
            if let Some(f) = c.send_progress {
                unsafe { f(ctx, id.0, sent, total, cookie) }
            }
        }
        Callback::Cmd(from, data) => {
            if let Some(f) = c.notify_cmd_data {
                unsafe { f(ctx, from.as_ptr(), data.as_ptr(), data.len()) }
            }
        }
        Callback::Buffer(id, from, data) => {
            if let Some(f) = c.notify_buffer_data {
                unsafe { f(ctx, from.as_ptr(), data.as_ptr(), data.len()) }
            }
            return Some(id);
        }
        Callback::File {
            from,
            tmp_file,
            name,
        } => {
            if let Some(f) = c.notify_file_data {
                unsafe { f(ctx, from.as_ptr(), tmp_file.as_ptr(), name.as_ptr()) }
            }
        }
        Callback::PeerKey(user, key, status) => {
            if let Some(f) = c.peer_key {
                let key = key.as_ref().map_or(std::ptr::null(), |k| k.as_ptr());
                unsafe { f(ctx, user.as_ptr(), key, status) }
            }
        }
    }
    None
}
