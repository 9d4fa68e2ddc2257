//! A client over TCP: one task owns the socket and drives the state machine; the
//! application calls into the state machine through a cloneable handle, under a lock held
//! only for the call, reads events about incoming messages from a bounded channel
//! ([`ClientEvents`]), and awaits each of its sends on its own [`SendHandle`].
//!
//! The task takes an event from the state machine only when the channel has room for it.
//! Taking an event is what confirms a delivery (`RESULT(NOERR)` goes to the sender when a
//! command or buffer is taken), so an application that stops reading its events stops
//! confirming: at most [`EVENT_QUEUE`] events wait for it, its senders' commands and
//! transfers wait for slots and credit, and nothing piles up in between.
//!
//! The results and progress of the application's own sends confirm nothing, so they do
//! not wait for room in that channel: the task takes them ahead of other events
//! ([`Client::poll_send_event`]) and hands each to its send's handle, which holds one
//! result and the latest progress, never a queue.
//!
//! A send is one call on the state machine and a wake-up of the task, so an application
//! that sends many commands at once has them written in one batch. The task follows the
//! drive invariant: after any input (bytes, a wake-up, a file read, a deadline) it writes
//! frames and handles events until neither comes, then waits on all of them at once. File
//! bytes never reach the application as events: files to send are read by offset on the
//! blocking pool while the task goes on, and received files go into a [`FileSink`] that
//! also runs on the blocking pool, fed in order over a bounded queue (the task takes no
//! event while that queue is full), and that reports back when a file is kept: only then
//! is the file confirmed to its sender.

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use peermsg::client::{Client, ClientConfig, Event, ReceiveId, SendId, SendKind};
use peermsg::wire::{Transmit, UserId};
use peermsg::{ActionError, ErrorCode, Instant, SendError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::sink::FileSink;

/// Events waiting for the application, at most.
pub const EVENT_QUEUE: usize = 64;

/// The application's end of a client's events: a bounded channel of [`ClientEvent`]s.
/// Read it: while it is full, the client confirms no delivery and takes no event from the
/// state machine (see [`connect`]).
pub type ClientEvents = mpsc::Receiver<ClientEvent>;

/// What the application hears from a connected client.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// An event of the state machine about incoming messages or the connection. Not file
    /// bytes (they go to the sink), not `FileReceived` (it comes as
    /// [`ClientEvent::FileReceived`] once the sink kept the file), and nothing about the
    /// application's own sends: their progress and results come through their
    /// [`SendHandle`]s.
    Core(Event),
    /// A file arrived whole and verified, and was kept in the sink's directory.
    FileReceived {
        /// The incoming message.
        id: ReceiveId,
        /// The sender.
        from: UserId,
        /// Where it is.
        tmp_file: PathBuf,
        /// The sender's name for it, sanitised.
        org_file_name: String,
        /// Its size.
        size: u64,
    },
}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The server could not be reached (the I/O error is the source).
    #[error("cannot connect")]
    Io(#[from] std::io::Error),
    /// The TLS handshake failed: an untrusted or mismatched certificate, a pin that
    /// differs, or a server that does not speak TLS.
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    /// The login was refused.
    #[error("login refused: {0}")]
    Refused(ErrorCode),
    /// The connection ended before the login was answered.
    #[error("connection closed during login")]
    Closed,
    /// The user id or configuration is not valid.
    #[error("{0}")]
    Invalid(String),
}

/// Why a file send failed before it started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendFileError {
    /// The file could not be opened or measured.
    #[error("cannot read {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The send was refused.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// What the handles and the task share.
struct Shared {
    state: Mutex<State>,
    /// The application queued something for the task to write.
    wake: Notify,
    epoch: tokio::time::Instant,
}

struct State {
    client: Client,
    /// The sends not yet ended, and who waits for them.
    sends: HashMap<SendId, Waiter>,
}

/// The task's end of a [`SendHandle`].
struct Waiter {
    result: oneshot::Sender<ErrorCode>,
    progress: watch::Sender<SendProgress>,
    /// A file being sent, read by offset.
    file: Option<Arc<std::fs::File>>,
}

impl State {
    /// Starts a send with `start` and registers who waits for it, in one step, so its
    /// result cannot come before anyone waits for it.
    fn start(
        &mut self,
        shared: &Arc<Shared>,
        total: u64,
        file: Option<Arc<std::fs::File>>,
        start: impl FnOnce(&mut Client) -> Result<SendId, SendError>,
    ) -> Result<SendHandle, SendError> {
        let id = start(&mut self.client)?;
        let (result_tx, result) = oneshot::channel();
        let (progress_tx, progress) = watch::channel(SendProgress { sent: 0, total });
        self.sends.insert(
            id,
            Waiter {
                result: result_tx,
                progress: progress_tx,
                file,
            },
        );
        Ok(SendHandle {
            id,
            result,
            done: None,
            progress,
            shared: shared.clone(),
        })
    }

    /// Hands an event about one of our sends to its handle (or, for a file read, to the
    /// blocking pool).
    fn tell_sender(&mut self, event: Event, reads: &mpsc::Sender<FileReadDone>) {
        match event {
            Event::FileRead { id, offset, len } => {
                let Some(file) = self.sends.get(&id).and_then(|w| w.file.clone()) else {
                    return;
                };
                let done = reads.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = done.blocking_send((id, offset, read_at(&file, offset, len)));
                });
            }
            Event::Progress {
                id, sent, total, ..
            } => {
                if let Some(waiter) = self.sends.get(&id) {
                    waiter.progress.send_replace(SendProgress { sent, total });
                }
            }
            Event::SendResult { id, code, .. } => {
                tracing::info!(%id, %code, "result");
                if let Some(waiter) = self.sends.remove(&id) {
                    // A dropped handle did not want it.
                    let _ = waiter.result.send(code);
                }
            }
            // `cancel_send` returned it already.
            _ => {}
        }
    }
}

/// How far a buffer or file send has got: bytes the receiver has taken, of `total`
/// (every `progress_step` bytes and at the end; always 0 of 0 for a command).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendProgress {
    /// Bytes the receiver has taken.
    pub sent: u64,
    /// The send's size.
    pub total: u64,
}

/// One send under way, as [`ClientHandle::send_cmd`] and its siblings return it.
/// `.await` it for the send's one result (the SDK's `send*Rlst`): `NOERR` once the
/// receiving application has it, else why not (`CONNECTIONLOST` if the client is gone).
/// Its progress is a [`watch`] channel; it can be cancelled from here.
///
/// Dropping the handle does not cancel the send; its result is then only logged.
///
/// ```no_run
/// # async fn run(alice: peermsg_tokio::ClientHandle) -> Result<(), Box<dyn std::error::Error>> {
/// let send = alice.send_file("bob", "report.pdf".as_ref(), 0).await?;
/// let mut progress = send.progress();
/// tokio::spawn(async move {
///     while progress.changed().await.is_ok() {
///         let p = *progress.borrow();
///         println!("{} of {} bytes", p.sent, p.total);
///     }
/// });
/// let code = send.await;
/// println!("delivered: {}", code.is_success());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SendHandle {
    id: SendId,
    result: oneshot::Receiver<ErrorCode>,
    /// The result, once [`SendHandle::try_result`] took it.
    done: Option<ErrorCode>,
    progress: watch::Receiver<SendProgress>,
    shared: Arc<Shared>,
}

impl SendHandle {
    /// The send's id, as logs and [`ClientHandle::cancel_send`] name it.
    pub fn id(&self) -> SendId {
        self.id
    }

    /// The send's progress: the latest value, and a wake-up when it changes. Ends (its
    /// `changed` fails) once the send has its result.
    pub fn progress(&self) -> watch::Receiver<SendProgress> {
        self.progress.clone()
    }

    /// The result if the send is over, without waiting.
    pub fn try_result(&mut self) -> Option<ErrorCode> {
        if self.done.is_none() {
            self.done = match self.result.try_recv() {
                Ok(code) => Some(code),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some(ErrorCode::CONNECTIONLOST),
            };
        }
        self.done
    }

    /// `cancelSend` for this send: `NOERR` if it was cancelled (its result is then
    /// `CANCELLED`), `TRANSID_INVALID` for a command or a send already over.
    pub fn cancel(&self) -> ErrorCode {
        self.shared.call(|s, _| s.client.cancel_send(self.id, 0))
    }
}

impl Future for SendHandle {
    type Output = ErrorCode;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ErrorCode> {
        if let Some(code) = self.done {
            return Poll::Ready(code);
        }
        Pin::new(&mut self.result)
            .poll(cx)
            .map(|r| r.unwrap_or(ErrorCode::CONNECTIONLOST))
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    fn now(&self) -> Instant {
        Instant::ZERO + self.epoch.elapsed()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the state machine half-updated: its calls do not
        // panic. Carry on with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state machine, then wakes the task to write what it queued.
    fn call<R>(&self, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        let now = self.now();
        let r = f(&mut self.lock(), now);
        self.wake.notify_one();
        r
    }
}

/// Closes the connection when the last handle goes.
struct LastHandle(Arc<Shared>);

impl Drop for LastHandle {
    fn drop(&mut self) {
        self.0.call(|s, _| s.client.close());
    }
}

/// The application's side of a connected client. Cloneable; the connection closes when
/// every handle is dropped or [`ClientHandle::close`] is called.
#[derive(Clone)]
pub struct ClientHandle {
    shared: Arc<Shared>,
    _last: Arc<LastHandle>,
}

impl std::fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandle").finish_non_exhaustive()
    }
}

/// Connects to a relay at `addr`, logs in, and returns the handle and the event channel
/// once the login is accepted. Incoming files go to `sink_dir` if given (else they are
/// refused with `FILE_WRITE_ERR`).
///
/// Events reach the application through a channel of at most [`EVENT_QUEUE`] events, and
/// the client takes an event from the state machine only when there is room: a command or
/// buffer is confirmed to its sender only once its event is in the channel, and an
/// application that stops reading stops its senders (they wait; they are not refused).
/// Read the channel for as long as the connection lives.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use peermsg::client::{ClientConfig, Event};
/// use peermsg_tokio::{connect, ClientEvent};
///
/// let (bob, mut events) = connect("127.0.0.1:7000", "bob", b"", ClientConfig::default(), None).await?;
/// while let Some(event) = events.recv().await {
///     if let ClientEvent::Core(Event::CmdReceived { from, data, .. }) = event {
///         println!("{from}: {}", String::from_utf8_lossy(&data));
///     }
/// }
/// # drop(bob);
/// # Ok(())
/// # }
/// ```
pub async fn connect(
    addr: impl ToSocketAddrs,
    user: &str,
    token: &[u8],
    config: ClientConfig,
    sink_dir: Option<&Path>,
) -> Result<(ClientHandle, ClientEvents), ConnectError> {
    let (client, sink) = prepare(user, token, config, sink_dir)?;
    let stream = TcpStream::connect(addr).await?;
    crate::socket::tune(&stream);
    start(client, sink, stream).await
}

/// [`connect`] over TLS: the relay's certificate must be valid for `server_name` under
/// `tls` (its roots, or a verifier that pins a certificate), else
/// [`ConnectError::Tls`] says why in one line.
pub async fn connect_tls(
    addr: impl ToSocketAddrs,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
    user: &str,
    token: &[u8],
    config: ClientConfig,
    sink_dir: Option<&Path>,
) -> Result<(ClientHandle, ClientEvents), ConnectError> {
    let (client, sink) = prepare(user, token, config, sink_dir)?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| ConnectError::Invalid(format!("{server_name}: {e}")))?;
    let stream = TcpStream::connect(addr).await?;
    crate::socket::tune(&stream);
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, stream)
        .await
        .map_err(ConnectError::Tls)?;
    start(client, sink, stream).await
}

/// The state machine, logged in, and the sink: checked before anything goes on the
/// network.
fn prepare(
    user: &str,
    token: &[u8],
    config: ClientConfig,
    sink_dir: Option<&Path>,
) -> Result<(Client, Option<FileSink>), ConnectError> {
    let sink = sink_dir.map(FileSink::new).transpose()?;
    let mut client =
        Client::new(config, Instant::ZERO).map_err(|e| ConnectError::Invalid(e.to_string()))?;
    client
        .login(user, token)
        .map_err(|e| ConnectError::Invalid(e.to_string()))?;
    Ok((client, sink))
}

/// Starts the task over `stream` and waits for the login's answer.
async fn start<S>(
    client: Client,
    sink: Option<FileSink>,
    stream: S,
) -> Result<(ClientHandle, ClientEvents), ConnectError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            client,
            sends: HashMap::new(),
        }),
        wake: Notify::new(),
        epoch: tokio::time::Instant::now(),
    });
    let (event_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    tokio::spawn(drive(shared.clone(), stream, event_tx, sink));
    // The first word is the login's.
    loop {
        match events.recv().await {
            Some(ClientEvent::Core(Event::LoginResult { code })) if code.is_success() => break,
            Some(ClientEvent::Core(Event::LoginResult { code })) => {
                return Err(ConnectError::Refused(code))
            }
            Some(ClientEvent::Core(Event::Closed { code, .. })) if !code.is_success() => {
                return Err(ConnectError::Refused(code))
            }
            Some(_) => continue,
            None => return Err(ConnectError::Closed),
        }
    }
    let handle = ClientHandle {
        _last: Arc::new(LastHandle(shared.clone())),
        shared,
    };
    Ok((handle, events))
}

impl ClientHandle {
    /// `sendCmd`: the command is queued; `.await` the handle for its result.
    pub async fn send_cmd(
        &self,
        to: &str,
        data: Bytes,
        cookie: u64,
    ) -> Result<SendHandle, SendError> {
        self.send_memory("command", Client::send_cmd, to, data, cookie)
    }

    /// `sendBuffer`: the buffer is queued; `.await` the handle for its result.
    pub async fn send_buffer(
        &self,
        to: &str,
        data: Bytes,
        cookie: u64,
    ) -> Result<SendHandle, SendError> {
        self.send_memory("buffer", Client::send_buffer, to, data, cookie)
    }

    /// A command or buffer through `send` of the state machine, logged as `what`.
    fn send_memory(
        &self,
        what: &'static str,
        send: fn(&mut Client, Instant, &str, Bytes, u64) -> Result<SendId, SendError>,
        to: &str,
        data: Bytes,
        cookie: u64,
    ) -> Result<SendHandle, SendError> {
        let size = data.len();
        let total = if what == "command" { 0 } else { size as u64 };
        let sent = self.shared.call(|s, now| {
            s.start(&self.shared, total, None, |c| {
                send(c, now, to, data, cookie)
            })
        })?;
        tracing::info!(id = %sent.id, to, size, what, "sent");
        Ok(sent)
    }

    /// `sendFile`: the file at `path`, under its own name; `.await` the handle for its
    /// result.
    pub async fn send_file(
        &self,
        to: &str,
        path: &Path,
        cookie: u64,
    ) -> Result<SendHandle, SendFileError> {
        let io = |error| SendFileError::Io {
            path: path.to_path_buf(),
            error,
        };
        let file = tokio::fs::File::open(path).await.map_err(io)?;
        let size = file.metadata().await.map_err(io)?.len();
        let file = Arc::new(file.into_std().await);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sent = self.shared.call(|s, now| {
            s.start(&self.shared, size, Some(file), |c| {
                c.send_file(now, to, &name, size, cookie)
            })
        })?;
        tracing::info!(id = %sent.id, to, size, file = %path.display(), "file sent");
        Ok(sent)
    }

    /// `cancelSend` (also [`SendHandle::cancel`]).
    pub async fn cancel_send(&self, id: SendId, cookie: u64) -> ErrorCode {
        self.shared.call(|s, _| s.client.cancel_send(id, cookie))
    }

    /// Refuses an incoming buffer or file.
    pub fn reject(&self, id: ReceiveId, code: ErrorCode) {
        self.shared.call(|s, _| {
            let _ = s.client.reject(id, code);
        });
    }

    /// Confirms a buffer received with [`ClientConfig::confirm_buffers`] once the application
    /// has kept it: its sender's result is `NOERR`. (Files are confirmed by the client
    /// itself, once its sink kept them.)
    pub fn accept_buffer(&self, id: ReceiveId) -> Result<(), ActionError> {
        self.answer_buffer(id, |c| c.accept_delivery(id))
    }

    /// Refuses a buffer received with [`ClientConfig::confirm_buffers`] that the application
    /// could not keep: its sender's result is `code` (`FILE_WRITE_ERR` for a success).
    pub fn fail_buffer(&self, id: ReceiveId, code: ErrorCode) -> Result<(), ActionError> {
        self.answer_buffer(id, |c| c.fail_delivery(id, code))
    }

    /// `answer` for incoming buffer `id`; never for a file, which the client answers itself.
    fn answer_buffer(
        &self,
        id: ReceiveId,
        answer: impl FnOnce(&mut Client) -> Result<(), ActionError>,
    ) -> Result<(), ActionError> {
        self.shared.call(|s, _| match s.client.incoming_kind(id) {
            Some(SendKind::Buffer) => answer(&mut s.client),
            _ => Err(ActionError::UnknownId),
        })
    }

    /// Closes the connection; pending sends fail with `CONNECTIONLOST`.
    pub fn close(&self) {
        self.shared.call(|s, _| s.client.close());
    }
}

/// Room made in the read buffer before each read.
const READ_SIZE: usize = 256 * 1024;

/// A file read done on the blocking pool.
type FileReadDone = (SendId, u64, std::io::Result<Bytes>);

/// What the task asks of the file sink, which runs on the blocking pool: file writes
/// never stall the connection's task.
enum SinkOp {
    Begin(ReceiveId, String),
    Write(ReceiveId, Bytes),
    /// All of the file was written and verified: keep it (flush, sync, persist).
    Arrived(ReceiveId, String, UserId, u64),
    /// The file failed: remove what was written, then say so.
    Abandon(ReceiveId),
}

/// What the sink tells the task back.
enum SinkDone {
    /// The file could not be begun or written: it is abandoned; the task refuses it.
    Failed(ReceiveId, std::io::Error),
    /// A file kept (or not), with its sender and size.
    Kept(
        ReceiveId,
        UserId,
        u64,
        std::io::Result<crate::sink::SavedFile>,
    ),
    /// A failed file's partial bytes are gone.
    Abandoned(ReceiveId),
}

/// Requests queued for the sink at most: with 16 KiB frames, 4 MiB of file data.
const SINK_QUEUE: usize = 256;

/// The sink's loop: it does what the task asks, in order, and reports failures and kept
/// files.
fn run_sink(mut sink: FileSink, mut ops: mpsc::Receiver<SinkOp>, done: mpsc::Sender<SinkDone>) {
    while let Some(op) = ops.blocking_recv() {
        let report = match op {
            SinkOp::Begin(id, name) => sink.begin(id, &name).err().map(|e| SinkDone::Failed(id, e)),
            SinkOp::Write(id, data) => match sink.write(id, &data) {
                Ok(()) => None,
                Err(e) => {
                    sink.abandon(id);
                    Some(SinkDone::Failed(id, e))
                }
            },
            SinkOp::Arrived(id, name, from, size) => {
                let saved = match sink.arrived(id, &name) {
                    Some(file) => file.keep(),
                    None => Err(std::io::Error::other("the file could not be written")),
                };
                Some(SinkDone::Kept(id, from, size, saved))
            }
            SinkOp::Abandon(id) => {
                sink.abandon(id);
                Some(SinkDone::Abandoned(id))
            }
        };
        if let Some(report) = report {
            if done.blocking_send(report).is_err() {
                return;
            }
        }
    }
}

/// The task: the socket, the files, and the drive loop.
async fn drive<S>(
    shared: Arc<Shared>,
    stream: S,
    events: mpsc::Sender<ClientEvent>,
    sink: Option<FileSink>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    // Incoming files in the sink: their names and senders.
    let mut names: HashMap<ReceiveId, (String, UserId)> = HashMap::new();
    // The file sink on the blocking pool: requests go in order over a bounded channel,
    // failures and kept files come back.
    let (sink_done_tx, mut sink_done) = mpsc::channel::<SinkDone>(64);
    let mut sink = sink.map(|sink| {
        let (ops_tx, ops) = mpsc::channel::<SinkOp>(SINK_QUEUE);
        tokio::task::spawn_blocking(move || run_sink(sink, ops, sink_done_tx));
        ops_tx
    });
    // Failures of incoming files, told to the application once the sink has removed
    // their partial bytes (so when it hears, nothing is left behind).
    let mut failing: HashMap<ReceiveId, ClientEvent> = HashMap::new();
    // The sink's queue was full when the task last looked.
    let mut sink_full = false;
    // At most one read per file being sent is outstanding; a full channel makes the
    // blocking reader wait, not the task.
    let (reads_tx, mut reads) = mpsc::channel::<FileReadDone>(64);
    // Events the task made itself (a file kept, or not), waiting for room in the
    // application's channel; at most one per incoming transfer.
    let mut own: std::collections::VecDeque<ClientEvent> = std::collections::VecDeque::new();
    // Reads land in one buffer and are handed over without a copy; writes are vectored, so
    // payloads go from the application's `Bytes` to the socket without a copy either.
    let mut input = BytesMut::new();
    let mut out = Transmit::new();
    // The application's channel was full when the task last looked.
    let mut full = false;
    loop {
        loop {
            let written = shared.lock().client.poll_transmit(&mut out);
            if written > 0 && wr.write_all_buf(&mut out).await.is_err() {
                out.clear();
                shared.lock().client.handle_disconnect();
            }
            // Events about our own sends go to their handles, whatever the application's
            // channel holds.
            let mut any = false;
            {
                let mut s = shared.lock();
                while let Some(event) = s.client.poll_send_event() {
                    any = true;
                    s.tell_sender(event, &reads_tx);
                }
            }
            // Other events, each taken only with room for it in the application's channel
            // (an application that has gone away has its events dropped).
            while !own.is_empty() {
                match events.try_reserve() {
                    Ok(room) => room.send(own.pop_front().expect("not empty")),
                    Err(mpsc::error::TrySendError::Full(())) => break,
                    Err(mpsc::error::TrySendError::Closed(())) => own.clear(),
                }
            }
            loop {
                let room = match events.try_reserve() {
                    Ok(room) => Some(room),
                    Err(mpsc::error::TrySendError::Full(())) => {
                        full = true;
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(())) => None,
                };
                // The next event may be file data: the sink must have room for it too.
                let sink_room = match sink.as_ref().map(mpsc::Sender::try_reserve) {
                    Some(Ok(room)) => Some(room),
                    Some(Err(mpsc::error::TrySendError::Full(()))) => {
                        sink_full = true;
                        break;
                    }
                    Some(Err(mpsc::error::TrySendError::Closed(()))) | None => None,
                };
                let Some(event) = shared.lock().client.poll_event() else {
                    break;
                };
                any = true;
                if event.send_id().is_some() {
                    shared.lock().tell_sender(event, &reads_tx);
                    continue;
                }
                let ctx = Taker {
                    shared: &shared,
                    sink: sink_room,
                    names: &mut names,
                    failing: &mut failing,
                };
                if let (Some(app), Some(room)) = (handle_event(ctx, event), room) {
                    room.send(app);
                }
            }
            if written == 0 && !any {
                break;
            }
        }
        let deadline = {
            let s = shared.lock();
            if s.client.is_closed() {
                None
            } else {
                Some(s.client.poll_timeout().unwrap_or(Instant::ZERO))
            }
        };
        let Some(deadline) = deadline else {
            // Every send had its result; any waiter left hears `CONNECTIONLOST`.
            shared.lock().sends.clear();
            let _ = wr.shutdown().await;
            // The sink finishes what it was asked (its failures removed), then the
            // application hears the rest, if it still reads.
            drop(sink.take());
            while let Some(done) = sink_done.recv().await {
                if let SinkDone::Abandoned(id) = done {
                    own.extend(failing.remove(&id));
                }
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                for event in own.drain(..) {
                    let _ = events.send(event).await;
                }
            })
            .await;
            return;
        };
        let wake = shared.epoch + (deadline - Instant::ZERO);
        input.reserve(READ_SIZE);
        tokio::select! {
            read = rd.read_buf(&mut input) => {
                let now = shared.now();
                let mut s = shared.lock();
                match read {
                    Ok(0) | Err(_) => s.client.handle_disconnect(),
                    Ok(_) => s.client.handle_input_buf(now, input.split()),
                }
            }
            _ = shared.wake.notified() => {}
            room = events.reserve(), if full => {
                // The application took an event: there is room to take the next.
                drop(room);
                full = false;
            }
            room = async { sink.as_ref()?.reserve().await.ok() }, if sink_full => {
                drop(room);
                sink_full = false;
            }
            Some(done) = sink_done.recv() => match done {
                SinkDone::Abandoned(id) => own.extend(failing.remove(&id)),
                SinkDone::Failed(id, error) => {
                    tracing::warn!(%id, %error, "cannot write an incoming file");
                    // Refused (the sender's result is 1402); the application hears of it
                    // too, unless the file ended otherwise meanwhile.
                    let code = ErrorCode::FILE_WRITE_ERR;
                    let refused = shared.lock().client.reject(id, code).is_ok();
                    if let (Some((_, from)), true) = (names.remove(&id), refused) {
                        own.push_back(ClientEvent::Core(Event::ReceiveFailed { id, from, code }));
                    }
                }
                // Confirmed to the sender only now that the file is in its place.
                SinkDone::Kept(id, from, size, saved) => {
                    let mut s = shared.lock();
                    match saved {
                        // Cancelled (or the connection lost) while the sink kept it: the
                        // application has heard `ReceiveFailed`, the sender the same; the
                        // file goes.
                        Ok(saved) if s.client.accept_delivery(id).is_err() => {
                            tracing::info!(%id, %from, "file cancelled as it was kept; removed");
                            let path = saved.tmp_file;
                            tokio::task::spawn_blocking(move || std::fs::remove_file(path));
                        }
                        Ok(saved) => {
                            tracing::info!(%id, %from, size, path = %saved.tmp_file.display(), "file received");
                            own.push_back(ClientEvent::FileReceived {
                                id,
                                from,
                                tmp_file: saved.tmp_file,
                                org_file_name: saved.org_file_name,
                                size,
                            });
                        }
                        Err(error) => {
                            tracing::warn!(%id, %error, "cannot keep an incoming file");
                            let code = ErrorCode::FILE_WRITE_ERR;
                            let _ = s.client.fail_delivery(id, code);
                            own.push_back(ClientEvent::Core(Event::ReceiveFailed { id, from, code }));
                        }
                    }
                }
            },
            Some((id, offset, piece)) = reads.recv() => {
                let mut s = shared.lock();
                match piece {
                    Ok(piece) => {
                        let _ = s.client.supply_file_data(id, offset, piece);
                    }
                    Err(error) => {
                        tracing::warn!(%id, %error, "file source failed");
                        let _ = s.client.file_read_failed(id);
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = shared.now();
                shared.lock().client.handle_timeout(now);
            }
        }
    }
}

/// What handling an event may touch.
struct Taker<'a> {
    shared: &'a Shared,
    /// Room for one request to the file sink, if there is a sink.
    sink: Option<mpsc::Permit<'a, SinkOp>>,
    names: &'a mut HashMap<ReceiveId, (String, UserId)>,
    failing: &'a mut HashMap<ReceiveId, ClientEvent>,
}

/// Handles what the task handles itself; gives back what the application should see.
fn handle_event(cx: Taker<'_>, event: Event) -> Option<ClientEvent> {
    match event {
        Event::Offer {
            id,
            kind: SendKind::File,
            ref name,
            ref from,
            ..
        } => {
            let Some(sink) = cx.sink else {
                tracing::warn!(%id, "an incoming file and no directory for it");
                let _ = cx
                    .shared
                    .lock()
                    .client
                    .reject(id, ErrorCode::FILE_WRITE_ERR);
                return None;
            };
            // A failure to begin comes back as `SinkDone::Failed` and refuses the file.
            sink.send(SinkOp::Begin(id, name.to_string()));
            cx.names.insert(id, (name.to_string(), from.clone()));
            Some(ClientEvent::Core(event))
        }
        Event::FileData { id, data, .. } => {
            if let Some(sink) = cx.sink {
                sink.send(SinkOp::Write(id, data));
            }
            None
        }
        Event::FileReceived { id, from, size } => {
            // Kept by the sink (flush, sync, persist); the sender hears when it is done.
            let name = cx
                .names
                .remove(&id)
                .map(|(name, _)| name)
                .unwrap_or_default();
            match cx.sink {
                Some(sink) => sink.send(SinkOp::Arrived(id, name, from, size)),
                None => {
                    let _ = cx
                        .shared
                        .lock()
                        .client
                        .fail_delivery(id, ErrorCode::FILE_WRITE_ERR);
                }
            }
            None
        }
        Event::ReceiveFailed { id, .. } => match (cx.names.remove(&id), cx.sink) {
            // A file in the sink: the application hears once its bytes are removed.
            (Some(_), Some(sink)) => {
                sink.send(SinkOp::Abandon(id));
                cx.failing.insert(id, ClientEvent::Core(event));
                None
            }
            _ => Some(ClientEvent::Core(event)),
        },
        Event::CmdReceived {
            id,
            ref from,
            ref data,
        } => {
            tracing::info!(%id, %from, size = data.len(), "command received");
            Some(ClientEvent::Core(event))
        }
        Event::BufferReceived {
            id,
            ref from,
            ref data,
        } => {
            tracing::info!(%id, %from, size = data.len(), "buffer received");
            Some(ClientEvent::Core(event))
        }
        other => Some(ClientEvent::Core(other)),
    }
}

/// `len` bytes of `file` from `offset`, read into memory that is not zeroed first.
fn read_at(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<Bytes> {
    let mut reader = file;
    reader.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len as usize);
    reader.take(len).read_to_end(&mut buf)?;
    if (buf.len() as u64) < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Bytes::from(buf))
}
