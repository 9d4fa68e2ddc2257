//! The SDK's sends from C: `pm_send_cmd`, `pm_send_buffer`, `pm_send_file`,
//! `pm_cancel_send`, and the one task per connection that watches every send
//! ([`watch_sends`]) and hands results to the callback thread in batches.

use std::ffi::{c_char, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use peermsg::client::SendId;
use peermsg::ErrorCode;
use peermsg_tokio::{ClientHandle, SendHandle};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use super::callbacks::Callback;
use super::{lock, PmClient};
use crate::boundary::{bytes, c_string, guard, object, out, status, text};

/// The one result of a send.
pub(super) struct SendResult {
    pub(super) id: SendId,
    pub(super) what: Sent,
    pub(super) code: ErrorCode,
    pub(super) cookie: u64,
}

/// What a send carries, as its result callback names it.
pub(super) enum Sent {
    Cmd,
    Buffer,
    /// The file's path, as the application gave it.
    File(CString),
}

/// Sends started and not watched yet, handed to the task that watches them ([`watch_sends`])
/// in batches: one wake-up for all that came while it was busy, not one task per send.
#[derive(Default)]
pub(super) struct NewSends {
    list: Mutex<Vec<(SendHandle, Sent, u64)>>,
    /// The connection is over: no more will come.
    closed: AtomicBool,
    wake: tokio::sync::Notify,
}

impl NewSends {
    pub(super) fn add(&self, sent: SendHandle, what: Sent, cookie: u64) {
        let mut list = lock(&self.list);
        list.push((sent, what, cookie));
        if list.len() == 1 {
            self.wake.notify_one();
        }
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// `sendCmd`: `len` bytes of `data` to user `to`; `*send_id` names the send in its
/// `send_cmd_rlst`, which comes once (no progress, no cancel).
///
/// # Safety
/// `client` is a live `pm_client`; `to` NUL-terminated; `data` valid for `len` bytes;
/// `send_id` writable.
#[no_mangle]
pub unsafe extern "C" fn pm_send_cmd(
    client: *mut PmClient,
    to: *const c_char,
    data: *const u8,
    len: usize,
    cookie: u64,
    send_id: *mut u64,
) -> i32 {
    // SAFETY: the caller's promises.
    unsafe { send_data(client, to, data, len, cookie, send_id, Sent::Cmd) }
}

/// `sendBuffer`: as [`pm_send_cmd`], for a buffer: `send_progress` as its receiver takes
/// it, then `send_buffer_rlst`; [`pm_cancel_send`] stops it.
///
/// # Safety
/// As [`pm_send_cmd`].
#[no_mangle]
pub unsafe extern "C" fn pm_send_buffer(
    client: *mut PmClient,
    to: *const c_char,
    data: *const u8,
    len: usize,
    cookie: u64,
    send_id: *mut u64,
) -> i32 {
    // SAFETY: the caller's promises.
    unsafe { send_data(client, to, data, len, cookie, send_id, Sent::Buffer) }
}

/// A command or a buffer (`what`): `len` bytes of `data`, copied.
///
/// # Safety
/// As [`pm_send_cmd`].
unsafe fn send_data(
    client: *mut PmClient,
    to: *const c_char,
    data: *const u8,
    len: usize,
    cookie: u64,
    send_id: *mut u64,
    what: Sent,
) -> i32 {
    // SAFETY: the caller's promises.
    unsafe {
        send(client, to, cookie, send_id, |handle, to| {
            let data = Bytes::copy_from_slice(bytes(data, len)?);
            Ok(async move {
                let sent = match what {
                    Sent::Buffer => handle.send_buffer(&to, data, cookie).await,
                    _ => handle.send_cmd(&to, data, cookie).await,
                };
                Ok((sent.map_err(|e| e.code())?, what))
            })
        })
    }
}

/// `sendFile`: the file at `path` to `to`, under its own name: `send_progress`, then
/// `send_file_rlst`. `FILE_NOT_EXIST` or `FILE_READ_ERR` if it cannot be opened.
///
/// # Safety
/// As [`pm_send_cmd`], with `path` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn pm_send_file(
    client: *mut PmClient,
    to: *const c_char,
    path: *const c_char,
    cookie: u64,
    send_id: *mut u64,
) -> i32 {
    // SAFETY: the caller's promises.
    unsafe {
        send(client, to, cookie, send_id, |handle, to| {
            let path = text(path)?;
            Ok(async move {
                let sent = handle.send_file(&to, path.as_ref(), cookie).await;
                let sent = sent.map_err(|e| match e {
                    peermsg_tokio::SendFileError::Io { error, .. }
                        if error.kind() == std::io::ErrorKind::NotFound =>
                    {
                        ErrorCode::FILE_NOT_EXIST
                    }
                    peermsg_tokio::SendFileError::Io { .. } => ErrorCode::FILE_READ_ERR,
                    peermsg_tokio::SendFileError::Send(e) => e.code(),
                    _ => ErrorCode::UNKNOWERR,
                })?;
                Ok((sent, Sent::File(c_string(path))))
            })
        })
    }
}

/// A send started: its handle, and what it carries.
type Started = (SendHandle, Sent);

/// A send: checks the arguments, starts it with `start` on the connection, hands its
/// progress and result to the callback thread.
///
/// # Safety
/// `client` is NULL or a live `pm_client`; `to` NULL or NUL-terminated; `send_id` NULL or
/// writable.
unsafe fn send<F, Fut>(
    client: *mut PmClient,
    to: *const c_char,
    cookie: u64,
    send_id: *mut u64,
    start: F,
) -> i32
where
    F: FnOnce(ClientHandle, String) -> Result<Fut, ErrorCode>,
    Fut: std::future::Future<Output = Result<Started, ErrorCode>>,
{
    guard(|| {
        // SAFETY: the caller's promises.
        let (client, to, send_id) = unsafe { (object(client)?, text(to)?, out(send_id)?) };
        let (handle, new_sends) = {
            let connection = lock(&client.connection);
            let c = connection.as_ref().ok_or(ErrorCode::NOT_LOGIN)?;
            (c.handle.clone(), Arc::clone(&c.new_sends))
        };
        let started = start(handle, to.to_owned())?;
        let (sent, what) = now_or_block(&client.runtime, started)?;
        *send_id = sent.id().0;
        new_sends.add(sent, what, cookie);
        Ok(())
    })
}

/// The output of `future`: at once if it is ready on its first poll (a command or buffer is
/// one call on the state machine), else waited for on the runtime (a file is opened on its
/// blocking pool). Entering the runtime costs more than the call itself.
fn now_or_block<F: std::future::Future>(runtime: &Runtime, future: F) -> F::Output {
    let _runtime = runtime.enter();
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => runtime.block_on(future),
    }
}

/// `cancelSend`: `NOERR` if send `send_id` is cancelled (its result callback then says
/// `CANCELLED`), `TRANSID_INVALID` for a command or a send already over.
///
/// # Safety
/// `client` is a live `pm_client`.
#[no_mangle]
pub unsafe extern "C" fn pm_cancel_send(client: *mut PmClient, send_id: u64, cookie: u64) -> i32 {
    guard(|| {
        // SAFETY: the caller's promise.
        let client = unsafe { object(client)? };
        let handle = lock(&client.connection)
            .as_ref()
            .map(|c| c.handle.clone())
            .ok_or(ErrorCode::NOT_LOGIN)?;
        status(now_or_block(
            &client.runtime,
            handle.cancel_send(SendId(send_id), cookie),
        ))
    })
}

/// Watches every send of a connection until each has its result and the connection is
/// over.
pub(super) async fn watch_sends(new: Arc<NewSends>, queue: mpsc::Sender<Callback>) {
    use futures::{FutureExt, StreamExt};
    let mut watched = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            () = new.wake.notified() => {
                let added = std::mem::take(&mut *lock(&new.list));
                for (sent, what, cookie) in added {
                    watched.push(watch_send(sent, what, cookie, &queue));
                }
            }
            Some(result) = watched.next(), if !watched.is_empty() => {
                // Every result ready now goes in one hand-over: one wake-up of the callback
                // thread for a batch, not one for each.
                let mut results = vec![result];
                while let Some(Some(result)) = watched.next().now_or_never() {
                    results.push(result);
                }
                if queue.send(Callback::Results(results)).await.is_err() {
                    return;
                }
            }
        }
        if watched.is_empty() && new.closed.load(Ordering::Acquire) && lock(&new.list).is_empty() {
            return;
        }
    }
}

/// Hands one send's progress to the callback thread, and gives its result. Progress is the
/// latest value when the thread has room (it never queues more than one per send).
async fn watch_send(
    mut sent: SendHandle,
    what: Sent,
    cookie: u64,
    queue: &mpsc::Sender<Callback>,
) -> SendResult {
    let id = sent.id();
    let mut progress = sent.progress();
    // A command has no progress (the SDK's rule).
    let mut counts = !matches!(what, Sent::Cmd);
    let code = loop {
        tokio::select! {
            biased;
            changed = progress.changed(), if counts => {
                if changed.is_err() {
                    counts = false;
                    continue;
                }
                let p = *progress.borrow_and_update();
                let told = Callback::Progress { id, sent: p.sent, total: p.total, cookie };
                if queue.send(told).await.is_err() {
                    counts = false;
                }
            }
            code = &mut sent => break code,
        }
    };
    SendResult {
        id,
        what,
        code,
        cookie,
    }
}
