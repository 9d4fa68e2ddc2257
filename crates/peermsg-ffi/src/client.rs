//! `pm_client_*` and `pm_send_*`: the SDK's calls and callbacks over the tokio client.
//!
//! Threads: a client runs its network on a thread of its own (`peermsg-net`) and makes every
//! callback on one other thread (`peermsg-callbacks`), one at a time, in order. The `pm_*`
//! calls may be made from any thread, callbacks included. A callback that takes long
//! delays the callbacks after it, and once [`PM_CALLBACK_QUEUE`] of them wait, incoming
//! messages are no longer confirmed to their senders (they wait, they are not lost); the
//! network never waits for a callback.

use std::ffi::{c_char, c_void, CString};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ThreadId};

use bytes::Bytes;
use peermsg::client::{ClientConfig, Event, ReceiveId, SendId};
use peermsg::ErrorCode;
use peermsg_tokio::tls::Trust;
use peermsg_tokio::{ClientEvent, ClientEvents, ClientHandle, Reconnect, SendHandle, Server};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use crate::boundary::{bytes, c_string, code_number, guard, object, optional_text, out, text};

/// Callbacks waiting for the callback thread, at most.
pub const PM_CALLBACK_QUEUE: usize = 64;

/// Not connected: before [`pm_login`], after [`pm_logout`], or once reconnecting gave up.
pub const PM_STATE_DISCONNECTED: i32 = 0;
/// Connected and logged in.
pub const PM_STATE_CONNECTED: i32 = 1;
/// The connection was lost; connecting again (sends wait).
pub const PM_STATE_RECONNECTING: i32 = 2;

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
}

// SAFETY: `ctx` is the application's; the header tells it every callback comes on the one
// callback thread, so the application makes `ctx` fit for that.
unsafe impl Send for PmCallbacks {}

impl PmCallbacks {
    const NONE: PmCallbacks = PmCallbacks {
        ctx: std::ptr::null_mut(),
        connection_state: None,
        send_cmd_rlst: None,
        send_buffer_rlst: None,
        send_file_rlst: None,
        send_progress: None,
        notify_cmd_data: None,
        notify_buffer_data: None,
        notify_file_data: None,
    };
}

/// A callback waiting for the callback thread.
enum Callback {
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
}

/// The one result of a send.
struct SendResult {
    id: SendId,
    what: Sent,
    code: ErrorCode,
    cookie: u64,
}

/// What a send carries, as its result callback names it.
enum Sent {
    Cmd,
    Buffer,
    /// The file's path, as the application gave it.
    File(CString),
}

/// A connected client's parts.
struct Connection {
    handle: ClientHandle,
    new_sends: Arc<NewSends>,
    callbacks_thread: JoinHandle<()>,
}

/// Sends started and not watched yet, handed to the task that watches them ([`watch_sends`])
/// in batches: one wake-up for all that came while it was busy, not one task per send.
#[derive(Default)]
struct NewSends {
    list: Mutex<Vec<(SendHandle, Sent, u64)>>,
    /// The connection is over: no more will come.
    closed: AtomicBool,
    wake: tokio::sync::Notify,
}

impl NewSends {
    fn add(&self, sent: SendHandle, what: Sent, cookie: u64) {
        let mut list = lock(&self.list);
        list.push((sent, what, cookie));
        if list.len() == 1 {
            self.wake.notify_one();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }
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
        let connect = ClientHandle::builder(user)
            .config(config)
            .token(token.as_bytes())
            .server(server)
            .files_to(files_dir)
            .reconnect(Reconnect::default())
            .connect();
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
    unsafe {
        send(client, to, cookie, send_id, |handle, to| {
            let data = Bytes::copy_from_slice(bytes(data, len)?);
            Ok(async move {
                let sent = handle.send_cmd(&to, data, cookie).await;
                Ok((sent.map_err(|e| e.code())?, Sent::Cmd))
            })
        })
    }
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
    unsafe {
        send(client, to, cookie, send_id, |handle, to| {
            let data = Bytes::copy_from_slice(bytes(data, len)?);
            Ok(async move {
                let sent = handle.send_buffer(&to, data, cookie).await;
                Ok((sent.map_err(|e| e.code())?, Sent::Buffer))
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
        let code = client
            .runtime
            .block_on(handle.cancel_send(SendId(send_id), cookie));
        if code.is_success() {
            Ok(())
        } else {
            Err(code)
        }
    })
}

/// Watches every send of a connection until each has its result and the connection is
/// over.
async fn watch_sends(new: Arc<NewSends>, queue: mpsc::Sender<Callback>) {
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

/// Hands the client's events to the callback thread, waiting while it is full (so incoming
/// messages wait to be confirmed, as the tokio client's own channel makes them).
async fn forward_events(mut events: ClientEvents, queue: mpsc::Sender<Callback>) {
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
fn run_callbacks(
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
    }
    None
}

/// A lock that a panic elsewhere does not poison for good.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
