//! Events of the core as C reads them: `PM_EVENT_*` kinds and [`PmEvent`], plain data whose
//! text and bytes the core holds ([`Held`]) until the next call.

use std::ffi::{c_char, CString};

use bytes::Bytes;
use peermsg::client::{Event, SendKind};
use peermsg::ErrorCode;

use crate::boundary::c_string;
// The calls the kinds' docs name.
#[cfg(doc)]
use super::{
    pm_core_accept_delivery, pm_core_fail_delivery, pm_core_file_read_failed, pm_core_poll_event,
    pm_core_poll_redial, pm_core_reject, pm_core_supply_file_data,
};

/// No event: [`pm_core_poll_event`] found nothing to tell.
pub const PM_EVENT_NONE: i32 = 0;
/// The relay (or the peer) answered the login: `code`.
pub const PM_EVENT_LOGIN_RESULT: i32 = 1;
/// On a direct link, the peer logged in as `from`.
pub const PM_EVENT_PEER_LOGIN: i32 = 2;
/// The one result of send `id` (`send_kind`): `code` (`NOERR` once the receiving
/// application has it), `cookie`.
pub const PM_EVENT_SEND_RESULT: i32 = 3;
/// Send `id` progressed: `offset` bytes of `total` taken by the receiver; `cookie`.
pub const PM_EVENT_PROGRESS: i32 = 4;
/// The answer to a cancel of send `id`: `code`, the cancel's `cookie`.
pub const PM_EVENT_CANCEL_RESULT: i32 = 5;
/// File send `id` needs `total` bytes from `offset`: answer with
/// [`pm_core_supply_file_data`] or [`pm_core_file_read_failed`].
pub const PM_EVENT_FILE_READ: i32 = 6;
/// File or buffer send `id` goes on from `offset` (what its receiver held); `cookie`.
pub const PM_EVENT_RESUMED: i32 = 7;
/// A command from `from`: `data`, `data_len`. Taking the event confirms it.
pub const PM_EVENT_CMD_RECEIVED: i32 = 8;
/// A buffer or file (`send_kind`) named `name` of `total` bytes comes from `from` as
/// incoming message `id`; [`pm_core_reject`] refuses it.
pub const PM_EVENT_OFFER: i32 = 9;
/// A buffer from `from`, whole and verified: `data`, `data_len`. Taking it confirms it.
pub const PM_EVENT_BUFFER_RECEIVED: i32 = 10;
/// Bytes of incoming file `id`: `data_len` bytes at `offset`, in order.
pub const PM_EVENT_FILE_DATA: i32 = 11;
/// Incoming file `id` from `from` is whole and verified (`total` bytes): once it is kept,
/// [`pm_core_accept_delivery`] tells its sender; [`pm_core_fail_delivery`] if it could not be.
pub const PM_EVENT_FILE_RECEIVED: i32 = 12;
/// Incoming message `id`: `offset` bytes of `total` received.
pub const PM_EVENT_RECEIVE_PROGRESS: i32 = 13;
/// Incoming message `id` from `from` ended without completing: `code` (`CANCELLED` if its
/// sender cancelled it). Discard what was received of it.
pub const PM_EVENT_RECEIVE_FAILED: i32 = 14;
/// Send `id` was cut off (`code`: `CONNECTIONLOST` or `OFFLINE`) and waits to go on, from
/// `offset` (µs) until `total` (µs), when it is given up.
pub const PM_EVENT_SEND_WAITING: i32 = 15;
/// Connected and logged in again after a lost connection; waiting sends go on.
pub const PM_EVENT_RECONNECTED: i32 = 16;
/// The connection is over (`code`; `NOERR` for a normal close). With reconnecting on,
/// [`pm_core_poll_redial`] says whether and when to dial again.
pub const PM_EVENT_CLOSED: i32 = 17;
/// What became of user `from`'s identity key: `offset` is a `PM_KEY_*`; `data` is the key
/// (32 bytes), or NULL if the user has none (it does not seal, or its relay does not know
/// it).
pub const PM_EVENT_PEER_KEY: i32 = 18;
/// An incoming message (`send_kind`) from `from` was refused before the application saw it:
/// `code` is `SEAL_REQUIRED`, `PEER_KEY_CHANGED`, `NO_PEER_KEY` or `SEAL_BROKEN` (its
/// sender's result says the same).
pub const PM_EVENT_REFUSED: i32 = 19;
/// An event this version of the header does not name; ignore it.
pub const PM_EVENT_OTHER: i32 = 99;

/// A command (`sendCmd`), in [`PmEvent::send_kind`].
pub const PM_SEND_CMD: i32 = 0;
/// A buffer (`sendBuffer`).
pub const PM_SEND_BUFFER: i32 = 1;
/// A file (`sendFile`).
pub const PM_SEND_FILE: i32 = 2;

/// A time that never comes: no timer is due.
pub const PM_NEVER: u64 = u64::MAX;

/// One event of the core, as plain data. Which fields mean something depends on `kind`
/// (see the `PM_EVENT_*` constants); the others are 0 or NULL. `from`, `name` and `data`
/// belong to the core and stay valid until the next call on the same `pm_core`.
#[repr(C)]
#[derive(Debug)]
pub struct PmEvent {
    /// `PM_EVENT_*`.
    pub kind: i32,
    /// An error code (`NOERR` is 0).
    pub code: i32,
    /// `PM_SEND_*`, for results and offers.
    pub send_kind: i32,
    /// The send id (events about our sends) or the incoming message's id.
    pub id: u64,
    /// The cookie given with the send or cancel.
    pub cookie: u64,
    /// Bytes done, an offset, or a time (µs), as the kind says.
    pub offset: u64,
    /// A size, a length, or a time (µs), as the kind says.
    pub total: u64,
    /// The sender (or the peer), NUL-terminated; NULL when the kind has none.
    pub from: *const c_char,
    /// A file name, NUL-terminated; NULL when the kind has none.
    pub name: *const c_char,
    /// Payload bytes; NULL when the kind has none.
    pub data: *const u8,
    /// How many bytes `data` holds.
    pub data_len: usize,
}

impl PmEvent {
    pub(super) const NONE: PmEvent = PmEvent {
        kind: PM_EVENT_NONE,
        code: 0,
        send_kind: 0,
        id: 0,
        cookie: 0,
        offset: 0,
        total: 0,
        from: std::ptr::null(),
        name: std::ptr::null(),
        data: std::ptr::null(),
        data_len: 0,
    };
}

/// The last event's text and bytes.
#[derive(Default)]
pub(super) struct Held {
    from: Option<CString>,
    name: Option<CString>,
    data: Bytes,
}

fn code(code: ErrorCode) -> i32 {
    crate::boundary::code_number(code)
}

fn send_kind(kind: SendKind) -> i32 {
    match kind {
        SendKind::Cmd => PM_SEND_CMD,
        SendKind::Buffer => PM_SEND_BUFFER,
        _ => PM_SEND_FILE,
    }
}

impl Held {
    /// `event` as C reads it; its text and bytes are held here until the next call.
    pub(super) fn describe(&mut self, event: Event) -> PmEvent {
        // What the last event held was let go when this call began (`with`).
        let mut e = PmEvent::NONE;
        let held = self;
        match event {
            Event::LoginResult { code: c } => {
                e.kind = PM_EVENT_LOGIN_RESULT;
                e.code = code(c);
            }
            Event::PeerLogin { user } => {
                e.kind = PM_EVENT_PEER_LOGIN;
                held.from = Some(c_string(user.as_str()));
            }
            Event::SendResult {
                id,
                kind,
                code: c,
                cookie,
            } => {
                (e.kind, e.id, e.code, e.cookie) = (PM_EVENT_SEND_RESULT, id.0, code(c), cookie);
                e.send_kind = send_kind(kind);
            }
            Event::Progress {
                id,
                sent,
                total,
                cookie,
            } => {
                (e.kind, e.id, e.offset, e.total, e.cookie) =
                    (PM_EVENT_PROGRESS, id.0, sent, total, cookie)
            }
            Event::CancelResult {
                id,
                code: c,
                cookie,
            } => (e.kind, e.id, e.code, e.cookie) = (PM_EVENT_CANCEL_RESULT, id.0, code(c), cookie),
            Event::FileRead { id, offset, len } => {
                (e.kind, e.id, e.offset, e.total) = (PM_EVENT_FILE_READ, id.0, offset, len)
            }
            Event::Resumed { id, offset, cookie } => {
                (e.kind, e.id, e.offset, e.cookie) = (PM_EVENT_RESUMED, id.0, offset, cookie)
            }
            Event::CmdReceived { id, from, data, .. } => {
                (e.kind, e.id) = (PM_EVENT_CMD_RECEIVED, id.0);
                held.from = Some(c_string(from.as_str()));
                held.data = data;
            }
            Event::Offer {
                id,
                from,
                kind,
                name,
                size,
                ..
            } => {
                (e.kind, e.id, e.total) = (PM_EVENT_OFFER, id.0, size);
                e.send_kind = send_kind(kind);
                held.from = Some(c_string(from.as_str()));
                held.name = Some(c_string(name.as_str()));
            }
            Event::BufferReceived { id, from, data } => {
                (e.kind, e.id) = (PM_EVENT_BUFFER_RECEIVED, id.0);
                held.from = Some(c_string(from.as_str()));
                held.data = data;
            }
            Event::FileData {
                id, offset, data, ..
            } => {
                (e.kind, e.id, e.offset) = (PM_EVENT_FILE_DATA, id.0, offset);
                held.data = data;
            }
            Event::FileReceived { id, from, size } => {
                (e.kind, e.id, e.total) = (PM_EVENT_FILE_RECEIVED, id.0, size);
                held.from = Some(c_string(from.as_str()));
            }
            Event::ReceiveProgress {
                id,
                received,
                total,
            } => {
                (e.kind, e.id, e.offset, e.total) =
                    (PM_EVENT_RECEIVE_PROGRESS, id.0, received, total)
            }
            Event::ReceiveFailed { id, from, code: c } => {
                (e.kind, e.id, e.code) = (PM_EVENT_RECEIVE_FAILED, id.0, code(c));
                held.from = Some(c_string(from.as_str()));
            }
            Event::SendWaiting {
                id,
                code: c,
                since,
                deadline,
            } => {
                (e.kind, e.id, e.code) = (PM_EVENT_SEND_WAITING, id.0, code(c));
                (e.offset, e.total) = (since.as_micros(), deadline.as_micros());
            }
            Event::PeerKey { user, key, status } => {
                (e.kind, e.offset) = (PM_EVENT_PEER_KEY, crate::sealing::key_status(status));
                held.from = Some(c_string(user.as_str()));
                held.data = key.map_or_else(Bytes::new, |k| Bytes::copy_from_slice(&k.0));
            }
            Event::Refused {
                from,
                kind,
                code: c,
            } => {
                (e.kind, e.code) = (PM_EVENT_REFUSED, code(c));
                e.send_kind = send_kind(kind);
                held.from = Some(c_string(from.as_str()));
            }
            Event::Reconnected => e.kind = PM_EVENT_RECONNECTED,
            Event::Closed { code: c, .. } => (e.kind, e.code) = (PM_EVENT_CLOSED, code(c)),
            _ => e.kind = PM_EVENT_OTHER,
        }
        e.from = held.from.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        e.name = held.name.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        if !held.data.is_empty() {
            (e.data, e.data_len) = (held.data.as_ptr(), held.data.len());
        }
        e
    }
}
