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
//! is the file confirmed to its sender. A file kept whole is the application's even if
//! the connection was lost meanwhile; one cancelled meanwhile is removed.

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use peermsg::client::{Client, ClientConfig, Event, ReceiveId, SendId, SendKind};
use peermsg::wire::{CmdOnce, Digest, ResumeKey, Transmit, UserId};
use peermsg::{ActionError, ErrorCode, Instant, SendError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::sink::{DoneRecord, FileSink, Kept};

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
    /// A file arrived whole and verified, and was kept in the sink's directory. Also when
    /// the connection was lost as it was kept: its sender, once back, is answered "all of
    /// it" and confirmed (a resumable file). A file is never told failed once kept.
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
    /// A resumable file its sender sent again (it never heard of the earlier delivery)
    /// that the application still has, whole and unchanged, where it said it saved it
    /// ([`ClientHandle::file_saved_as`]): confirmed, not kept twice.
    FileAlreadyHeld {
        /// The incoming message.
        id: ReceiveId,
        /// The sender.
        from: UserId,
        /// Where the application has it.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The connection was lost and the client is connecting again (with
    /// [`Reconnect`]): resumable file sends wait, incoming files keep what they have.
    Reconnecting {
        /// Attempts so far since the connection was lost.
        attempt: u32,
        /// Why the last attempt failed, or why the connection ended.
        error: String,
    },
    /// Connected and logged in again; waiting file sends go on from what their receivers
    /// hold.
    Reconnected {
        /// The relay it reached.
        server: String,
    },
}

/// How a client connects again when its connection is lost ([`connect_with`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconnect {
    /// How long the client tries, and how long its file sends wait for a new connection;
    /// after it they fail with `CONNECTIONLOST`. Default 5 minutes.
    pub window: std::time::Duration,
    /// The first wait between attempts; it doubles, with random jitter, up to
    /// `max_backoff`. Default 100 ms.
    pub backoff: std::time::Duration,
    /// The longest wait between attempts. Default 5 s.
    pub max_backoff: std::time::Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            window: crate::RESUME_WINDOW,
            backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(5),
        }
    }
}

/// A relay to connect to ([`connect_with`]).
#[derive(Clone)]
pub enum Server {
    /// Plain TCP to this address (`host:port`).
    Tcp(String),
    /// TLS to this address, the certificate valid for `server_name` under `tls` (the
    /// `tls` feature).
    #[cfg(feature = "tls")]
    Tls {
        /// `host:port`.
        addr: String,
        /// The name the certificate must be valid for.
        server_name: String,
        /// Roots or a pin.
        tls: Arc<rustls::ClientConfig>,
    },
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Server::Tcp(addr) => write!(f, "tcp://{addr}"),
            #[cfg(feature = "tls")]
            Server::Tls { addr, .. } => write!(f, "tls://{addr}"),
        }
    }
}

/// A transport the client task drives: TCP, or TLS over it.
trait Transport: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Transport for T {}

impl Server {
    /// Connects to it (and completes the TLS handshake).
    async fn dial(&self) -> Result<Box<dyn Transport>, ConnectError> {
        match self {
            Server::Tcp(addr) => {
                let stream = TcpStream::connect(addr.as_str()).await?;
                crate::socket::tune(&stream);
                Ok(Box::new(stream))
            }
            #[cfg(feature = "tls")]
            Server::Tls {
                addr,
                server_name,
                tls,
            } => {
                let name = rustls::pki_types::ServerName::try_from(server_name.clone())
                    .map_err(|e| ConnectError::Invalid(format!("{server_name}: {e}")))?;
                let stream = TcpStream::connect(addr.as_str()).await?;
                crate::socket::tune(&stream);
                let stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, stream)
                    .await
                    .map_err(ConnectError::Tls)?;
                Ok(Box::new(stream))
            }
        }
    }
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
    /// The relay closed the connection before the login with a reason of its own (it is
    /// full, or too many connections come from this address).
    #[error("the relay turned the connection away: {code} ({reason})")]
    TurnedAway {
        /// The code of its `CLOSE`.
        code: ErrorCode,
        /// Its reason, as the relay wrote it.
        reason: String,
    },
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
    /// The sends not yet ended, and who waits for them, by their ids in `client`.
    sends: HashMap<SendId, Waiter>,
    /// Resumable file sends whose connection was lost, waiting for the next one.
    pending: Vec<Waiter>,
    /// How the client reconnects; `None`: it does not.
    reconnect: Option<Reconnect>,
    /// The application closed the client: it does not reconnect.
    closing: bool,
    /// A login was accepted once: only then does a lost connection make the client
    /// reconnect (a first connection that fails is the caller's error).
    logged_in: bool,
    /// When waiting sends are tried again on this connection (their receiver's connection
    /// was lost; it may come back).
    retry_at: Option<tokio::time::Instant>,
    /// File sends read at most this many bytes a second, and when the next read may start.
    pace: Option<(u64, tokio::time::Instant)>,
    /// This client's stream of commands with an identity, and their next numbers by
    /// receiver.
    stream: [u8; 16],
    next_seq: HashMap<String, u64>,
    /// Keyed buffers received, or cut off part way.
    buffers: HeldBuffers,
    /// The relay of the current connection, when the client reconnected.
    server: String,
    /// Records of resumable files kept, until the application says where it saved them
    /// ([`ClientHandle::file_saved_as`]); the oldest of more than `DONE_RECORDS` go.
    done_records: std::collections::VecDeque<(ReceiveId, DoneRecord)>,
    /// Where the application saved kept files, for the sink to record.
    saved_at: Vec<(DoneRecord, PathBuf)>,
}

/// Records of kept files waiting for the application's word, at most.
const DONE_RECORDS: usize = 4096;

/// The task's end of a [`SendHandle`].
struct Waiter {
    /// The id its handle knows it by (its id on the first connection).
    handle: SendId,
    result: oneshot::Sender<ErrorCode>,
    progress: watch::Sender<SendProgress>,
    /// A file being sent, read by offset.
    file: Option<Arc<std::fs::File>>,
    /// What sends it again on a new connection (resumable file sends).
    resend: Option<Resend>,
    /// When its connection was lost, while it waits for a new one.
    lost_at: Option<tokio::time::Instant>,
}

/// A send as it is started again on a new connection: a file, continuing from what its
/// receiver holds, or a command, which its receiver delivers once.
#[derive(Clone, Debug)]
enum Resend {
    File {
        to: String,
        name: String,
        size: u64,
        key: ResumeKey,
        cookie: u64,
    },
    Cmd {
        to: String,
        data: Bytes,
        once: CmdOnce,
        cookie: u64,
    },
    Buffer {
        to: String,
        data: Bytes,
        key: ResumeKey,
        cookie: u64,
    },
}

/// Buffers this client was receiving when a connection was lost (their bytes so far),
/// and buffers it delivered (their size and digest), by sender and resume key, for the
/// resume window: the next attempt goes on from the first, and a repeat of the second is
/// confirmed, not delivered again. At most `HELD_BUFFER_BYTES` held, the oldest dropped.
#[derive(Debug, Default)]
struct HeldBuffers {
    partial: HashMap<(UserId, ResumeKey), (Bytes, tokio::time::Instant)>,
    done: HashMap<(UserId, ResumeKey), (u64, u32, tokio::time::Instant)>,
    /// Keyed buffers arriving, and those that are repeats.
    arriving: HashMap<ReceiveId, (UserId, ResumeKey)>,
    repeats: std::collections::HashSet<ReceiveId>,
}

/// Bytes of partial buffers held at most.
const HELD_BUFFER_BYTES: usize = 256 << 20;

/// Delivered buffers remembered at most.
const DONE_BUFFERS: usize = 4096;

impl HeldBuffers {
    fn expire(&mut self, window: std::time::Duration) {
        let now = tokio::time::Instant::now();
        self.partial
            .retain(|_, (_, at)| now.duration_since(*at) < window);
        self.done
            .retain(|_, (_, _, at)| now.duration_since(*at) < window);
    }

    fn keep_partial(&mut self, from: UserId, key: ResumeKey, data: Bytes) {
        let held: usize = self.partial.values().map(|(b, _)| b.len()).sum();
        let mut room = HELD_BUFFER_BYTES.saturating_sub(held);
        while room < data.len() {
            let oldest = self.partial.iter().min_by_key(|(_, (_, at))| *at);
            let Some(oldest) = oldest.map(|(k, _)| k.clone()) else {
                return; // larger than all the room: not kept
            };
            room += self.partial.remove(&oldest).map_or(0, |(b, _)| b.len());
        }
        self.partial
            .insert((from, key), (data, tokio::time::Instant::now()));
    }

    fn delivered(&mut self, id: ReceiveId, data: &[u8]) {
        if let Some(at) = self.arriving.remove(&id) {
            if self.done.len() >= DONE_BUFFERS {
                let oldest = self.done.iter().min_by_key(|(_, (_, _, at))| *at);
                if let Some(oldest) = oldest.map(|(k, _)| k.clone()) {
                    self.done.remove(&oldest);
                }
            }
            let summary = (
                data.len() as u64,
                crc32c::crc32c(data),
                tokio::time::Instant::now(),
            );
            self.done.insert(at, summary);
        }
    }
}

impl State {
    /// Starts a send with `start` and registers who waits for it, in one step, so its
    /// result cannot come before anyone waits for it.
    fn start(
        &mut self,
        shared: &Arc<Shared>,
        total: u64,
        file: Option<Arc<std::fs::File>>,
        resend: Option<Resend>,
        start: impl FnOnce(&mut Client) -> Result<SendId, SendError>,
    ) -> Result<SendHandle, SendError> {
        let id = start(&mut self.client)?;
        let (result_tx, result) = oneshot::channel();
        let (progress_tx, progress) = watch::channel(SendProgress {
            total,
            ..SendProgress::default()
        });
        self.sends.insert(
            id,
            Waiter {
                handle: id,
                result: result_tx,
                progress: progress_tx,
                file,
                resend,
                lost_at: None,
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

    /// Starts the waiting file sends again on the new connection: each continues from what
    /// its receiver holds.
    fn resubmit(&mut self, now: Instant) {
        self.retry_at = None;
        for waiter in std::mem::take(&mut self.pending) {
            let c = &mut self.client;
            let sent = match waiter.resend.clone() {
                Some(Resend::File {
                    to,
                    name,
                    size,
                    key,
                    cookie,
                }) => c.send_file_resumable(now, &to, &name, size, key, cookie),
                Some(Resend::Cmd {
                    to,
                    data,
                    once,
                    cookie,
                }) => {
                    let once = CmdOnce {
                        resent: true,
                        ..once
                    };
                    c.send_cmd_once(now, &to, data, once, cookie)
                }
                Some(Resend::Buffer {
                    to,
                    data,
                    key,
                    cookie,
                }) => c.send_buffer_resumable(now, &to, data, key, cookie),
                None => continue,
            };
            match sent {
                Ok(id) => {
                    self.sends.insert(id, waiter);
                }
                Err(error) => {
                    let _ = waiter.result.send(error.code());
                }
            }
        }
    }

    /// Waiting sends lost longer than `window` ago (all of them for `None`) end with
    /// `CONNECTIONLOST`.
    fn fail_pending(&mut self, window: Option<std::time::Duration>) {
        let now = tokio::time::Instant::now();
        let (expired, kept) =
            std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|w: &Waiter| match (window, w.lost_at) {
                    (Some(window), Some(at)) => now >= at + window,
                    _ => window.is_none(),
                });
        self.pending = kept;
        for waiter in expired {
            let _ = waiter.result.send(ErrorCode::CONNECTIONLOST);
        }
    }

    /// `cancelSend` of the send its handle knows as `handle`: on the connection, or
    /// waiting for one (then it ends at once with `CANCELLED`).
    fn cancel(&mut self, handle: SendId, cookie: u64) -> ErrorCode {
        let current = self
            .sends
            .iter()
            .find(|(_, w)| w.handle == handle)
            .map(|(id, _)| *id);
        if let Some(id) = current {
            return self.client.cancel_send(id, cookie);
        }
        match self.pending.iter().position(|w| w.handle == handle) {
            Some(at) => {
                let _ = self.pending.remove(at).result.send(ErrorCode::CANCELLED);
                ErrorCode::NOERR
            }
            None => ErrorCode::TRANSID_INVALID,
        }
    }

    /// The application closes the client: no reconnecting, waiting sends end.
    fn close(&mut self) {
        self.closing = true;
        self.client.close();
        self.fail_pending(None);
    }

    /// Hands an event about one of our sends to its handle (or, for a file read, to the
    /// blocking pool).
    fn tell_sender(&mut self, event: Event, reads: &mpsc::Sender<FileReadDone>) {
        match event {
            Event::FileRead { id, offset, len } => {
                let Some(file) = self.sends.get(&id).and_then(|w| w.file.clone()) else {
                    return;
                };
                // With a rate limit, each read starts when the bytes before it are due;
                // re-reading what the receiver holds, to check a resume, is not paced.
                let checking = self.client.is_checking_resume(id);
                let start = self
                    .pace
                    .as_mut()
                    .filter(|_| !checking)
                    .map(|(rate, next)| {
                        let start = (*next).max(tokio::time::Instant::now());
                        *next =
                            start + std::time::Duration::from_secs_f64(len as f64 / *rate as f64);
                        start
                    });
                let done = reads.clone();
                tokio::task::spawn_blocking(move || {
                    if let Some(start) = start {
                        std::thread::sleep(
                            start.saturating_duration_since(tokio::time::Instant::now()),
                        );
                    }
                    let _ = done.blocking_send((id, offset, read_at(&file, offset, len)));
                });
            }
            Event::Progress {
                id, sent, total, ..
            } => {
                if let Some(waiter) = self.sends.get(&id) {
                    // Never backwards: a resumed send may restart below what its receiver
                    // had taken (it recorded less than it took).
                    waiter.progress.send_modify(|p| {
                        (p.sent, p.total) = (p.sent.max(sent), total);
                        p.waiting = None;
                    });
                }
            }
            Event::Resumed { id, offset, .. } => {
                if let Some(waiter) = self.sends.get(&id) {
                    tracing::info!(id = %waiter.handle, offset, "resumed");
                    waiter.progress.send_modify(|p| {
                        p.resumed_at = Some(offset);
                        p.sent = p.sent.max(offset);
                        p.waiting = None;
                    });
                }
            }
            Event::SendResult { id, code, .. } => {
                let Some(mut waiter) = self.sends.remove(&id) else {
                    return;
                };
                // Lost with our connection or the receiver's: it waits for either to come
                // back. A receiver not back yet when it is tried again is offline.
                let interrupted = code == ErrorCode::CONNECTIONLOST
                    || code == ErrorCode::OFFLINE && waiter.lost_at.is_some();
                let waits = interrupted
                    && waiter.resend.is_some()
                    && self.reconnect.is_some()
                    && !self.closing;
                if waits {
                    tracing::info!(id = %waiter.handle, %code, "interrupted; the send waits to go on");
                    let now = tokio::time::Instant::now();
                    let since = *waiter.lost_at.get_or_insert(now);
                    let window = self
                        .reconnect
                        .as_ref()
                        .map_or(crate::RESUME_WINDOW, |r| r.window);
                    waiter.progress.send_modify(|p| {
                        p.waiting = Some(Waiting {
                            reason: code,
                            since,
                            deadline: since + window,
                        });
                    });
                    self.pending.push(waiter);
                    self.retry_at.get_or_insert(now + RETRY);
                    self.fail_pending(self.reconnect.as_ref().map(|r| r.window));
                } else {
                    tracing::info!(id = %waiter.handle, %code, "result");
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
/// (every `progress_step` bytes and at the end; always 0 of 0 for a command). It never
/// goes backwards, across reconnects too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendProgress {
    /// Bytes the receiver has taken.
    pub sent: u64,
    /// The send's size.
    pub total: u64,
    /// Where the receiver's bytes ended when the send last resumed after a lost
    /// connection (it continued from there), if it did.
    pub resumed_at: Option<u64>,
    /// Set while the send waits for its receiver or the relay to come back (its
    /// connection or theirs was lost): since when, why, and when it gives up.
    pub waiting: Option<Waiting>,
}

/// A send waiting to go on after a lost connection (see [`SendProgress::waiting`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// Why: `CONNECTIONLOST` (this client's connection, or the receiver's), or `OFFLINE`
    /// (the receiver was not back when it was tried again).
    pub reason: ErrorCode,
    /// When the send was interrupted.
    pub since: tokio::time::Instant,
    /// When it gives up, ending with `CONNECTIONLOST` ([`Reconnect::window`] after
    /// `since`).
    pub deadline: tokio::time::Instant,
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
        self.shared.call(|s, _| s.cancel(self.id, 0))
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
        self.0.call(|s, _| s.close());
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
/// refused with `FILE_WRITE_ERR`). It does not reconnect; [`connect_with`] does.
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
    start(client, sink, Box::new(stream), None).await
}

/// [`connect`] over TLS: the relay's certificate must be valid for `server_name` under
/// `tls` (its roots, or a verifier that pins a certificate), else
/// [`ConnectError::Tls`] says why in one line. (The `tls` feature.)
#[cfg(feature = "tls")]
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
    start(client, sink, Box::new(stream), None).await
}

/// [`connect`] to the first of `servers` that answers, and, with `reconnect`, again to the
/// first that answers whenever the connection is lost: the client logs in again, its
/// resumable file sends (every [`ClientHandle::send_file`]) go on from what their
/// receivers hold, and incoming files from what the sink holds. The application hears
/// [`ClientEvent::Reconnecting`] and [`ClientEvent::Reconnected`]; if no server answers
/// within the window, waiting sends end with `CONNECTIONLOST` and the events end with
/// `Closed`. Commands in flight when a connection is lost are sent again, and delivered
/// once, in order (they carry an identity their receiver checks); buffers go on from what
/// their receivers kept in memory. Sends made while there is no connection fail with
/// `Closed`.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use peermsg::client::ClientConfig;
/// use peermsg_tokio::{connect_with, Reconnect, Server};
///
/// let servers = [Server::Tcp("10.0.0.1:7000".into()), Server::Tcp("10.0.0.2:7000".into())];
/// let (alice, _events) = connect_with(
///     &servers, "alice", b"", ClientConfig::default(), None, Some(Reconnect::default()),
/// ).await?;
/// let code = alice.send_file("bob", "big.iso".as_ref(), 0).await?.await;
/// println!("{code}");
/// # Ok(())
/// # }
/// ```
pub async fn connect_with(
    servers: &[Server],
    user: &str,
    token: &[u8],
    config: ClientConfig,
    sink_dir: Option<&Path>,
    reconnect: Option<Reconnect>,
) -> Result<(ClientHandle, ClientEvents), ConnectError> {
    // Buffers cut by a lost connection are kept in memory, to go on when it is back.
    let config = ClientConfig {
        resume_buffers: reconnect.is_some(),
        resume_window: reconnect
            .as_ref()
            .map_or(crate::RESUME_WINDOW, |r| r.window),
        ..config
    };
    let (client, sink) = prepare(user, token, config, sink_dir)?;
    let (stream, _) = dial_any(servers).await?;
    let redial = reconnect.map(|reconnect| Redial {
        servers: servers.to_vec(),
        reconnect,
        user: user.to_string(),
        token: token.to_vec(),
        config: ClientConfig {
            resume_files: sink.is_some(),
            ..config
        },
        sink_dir: sink_dir.map(Path::to_path_buf),
    });
    start(client, sink, stream, redial).await
}

/// The first of `servers` that answers, and its name; else the last one's error.
async fn dial_any(servers: &[Server]) -> Result<(Box<dyn Transport>, String), ConnectError> {
    let mut last = ConnectError::Invalid("no relay address".to_string());
    for server in servers {
        match server.dial().await {
            Ok(stream) => return Ok((stream, format!("{server:?}"))),
            Err(error) => {
                tracing::debug!(?server, %error, "cannot connect");
                last = error;
            }
        }
    }
    Err(last)
}

/// What a client needs to connect again.
struct Redial {
    servers: Vec<Server>,
    reconnect: Reconnect,
    user: String,
    token: Vec<u8>,
    config: ClientConfig,
    sink_dir: Option<PathBuf>,
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
    // The sink keeps partial files: resumable files resume from what it holds.
    let config = ClientConfig {
        resume_files: sink.is_some(),
        ..config
    };
    let mut client =
        Client::new(config, Instant::ZERO).map_err(|e| ConnectError::Invalid(e.to_string()))?;
    client
        .login(user, token)
        .map_err(|e| ConnectError::Invalid(e.to_string()))?;
    Ok((client, sink))
}

/// Clients made in this process: part of each one's command stream, so no two share it.
static CLIENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Starts the task over `stream` and waits for the login's answer.
async fn start(
    client: Client,
    sink: Option<FileSink>,
    stream: Box<dyn Transport>,
    redial: Option<Redial>,
) -> Result<(ClientHandle, ClientEvents), ConnectError> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            client,
            sends: HashMap::new(),
            pending: Vec::new(),
            reconnect: redial.as_ref().map(|r| r.reconnect.clone()),
            closing: false,
            logged_in: false,
            retry_at: None,
            pace: None,
            stream: key_of(&[
                &CLIENTS
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    .to_le_bytes(),
                &std::process::id().to_le_bytes(),
                &std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos()
                    .to_le_bytes(),
            ])
            .0,
            next_seq: HashMap::new(),
            buffers: HeldBuffers::default(),
            server: String::new(),
            done_records: std::collections::VecDeque::new(),
            saved_at: Vec::new(),
        }),
        wake: Notify::new(),
        epoch: tokio::time::Instant::now(),
    });
    let (event_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    tokio::spawn(supervise(shared.clone(), stream, event_tx, sink, redial));
    // The first word is the login's.
    loop {
        match events.recv().await {
            Some(ClientEvent::Core(Event::LoginResult { code })) if code.is_success() => break,
            Some(ClientEvent::Core(Event::LoginResult { code })) => {
                return Err(ConnectError::Refused(code))
            }
            Some(ClientEvent::Core(Event::Closed {
                code,
                reason: peermsg::CloseReason::Peer(reason),
            })) if !code.is_success() && !reason.is_empty() => {
                return Err(ConnectError::TurnedAway {
                    code,
                    reason: reason.as_str().to_string(),
                })
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

/// The client's life: one connection after another (with [`Reconnect`]), each driven by
/// [`drive`] until it ends.
async fn supervise(
    shared: Arc<Shared>,
    mut stream: Box<dyn Transport>,
    events: mpsc::Sender<ClientEvent>,
    mut sink: Option<FileSink>,
    redial: Option<Redial>,
) {
    loop {
        drive(shared.clone(), stream, events.clone(), sink.take()).await;
        let Some(redial) = redial.as_ref().filter(|_| shared.lock().logged_in) else {
            return;
        };
        let window = redial.reconnect.window;
        let lost = tokio::time::Instant::now();
        let mut wait = redial.reconnect.backoff;
        let (mut attempt, mut error) = (0, "connection lost".to_string());
        let found = loop {
            if shared.lock().closing {
                return;
            }
            attempt += 1;
            // Informational: dropped if the application's channel is full.
            let _ = events.try_send(ClientEvent::Reconnecting {
                attempt,
                error: error.clone(),
            });
            tokio::time::sleep(jitter(wait)).await;
            wait = (wait * 2).min(redial.reconnect.max_backoff);
            shared.lock().fail_pending(Some(window));
            if lost.elapsed() >= window {
                break None;
            }
            match dial_any(&redial.servers).await {
                Ok(found) => break Some(found),
                Err(e) => error = e.to_string(),
            }
        };
        let Some((next, server)) = found else {
            tracing::warn!("no relay answered within the resume window");
            shared.lock().fail_pending(None);
            let _ = events
                .send(ClientEvent::Core(Event::Closed {
                    code: ErrorCode::CONNECTIONLOST,
                    reason: peermsg::CloseReason::TransportLost,
                }))
                .await;
            return;
        };
        let client = Client::new(redial.config, shared.now())
            .map(|mut c| c.login(&redial.user, &redial.token).map(|()| c));
        let Ok(Ok(mut client)) = client else {
            return; // checked at the first connection
        };
        {
            let mut s = shared.lock();
            client.carry_from(&mut s.client);
            s.client = client;
            s.server = server;
        }
        sink = redial.sink_dir.as_deref().and_then(|dir| {
            FileSink::new(dir)
                .map_err(|error| tracing::warn!(%error, "the file sink cannot be opened"))
                .ok()
        });
        stream = next;
    }
}

/// `wait`, less a random part of up to half of it, so that many clients cut off at once
/// do not all come back at once.
fn jitter(wait: std::time::Duration) -> std::time::Duration {
    let noise = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    wait / 2 + wait.mul_f64(f64::from(noise % 1000) / 2000.0)
}

impl ClientHandle {
    /// `sendCmd`: the command is queued; `.await` the handle for its result.
    pub async fn send_cmd(
        &self,
        to: &str,
        data: Bytes,
        cookie: u64,
    ) -> Result<SendHandle, SendError> {
        // With reconnecting, a command in flight at a lost connection is sent again, with
        // an identity its receiver uses to deliver it once.
        let sent = self.shared.call(|s, now| {
            if s.reconnect.is_none() {
                return s.start(&self.shared, 0, None, None, |c| {
                    c.send_cmd(now, to, data, cookie)
                });
            }
            let seq = s.next_seq.entry(to.to_string()).or_insert(0);
            *seq += 1;
            let once = CmdOnce {
                stream: s.stream,
                seq: *seq,
                resent: false,
            };
            let resend = Resend::Cmd {
                to: to.to_string(),
                data: data.clone(),
                once,
                cookie,
            };
            s.start(&self.shared, 0, None, Some(resend), |c| {
                c.send_cmd_once(now, to, data, once, cookie)
            })
        })?;
        tracing::info!(id = %sent.id, to, "command sent");
        Ok(sent)
    }

    /// `sendBuffer`: the buffer is queued; `.await` the handle for its result. With
    /// [`Reconnect`], a buffer cut by a lost connection goes on from what its receiver kept
    /// of it.
    pub async fn send_buffer(
        &self,
        to: &str,
        data: Bytes,
        cookie: u64,
    ) -> Result<SendHandle, SendError> {
        let size = data.len() as u64;
        let sent = self.shared.call(|s, now| {
            if s.reconnect.is_none() {
                return s.start(&self.shared, size, None, None, |c| {
                    c.send_buffer(now, to, data, cookie)
                });
            }
            let key = key_of(&[
                &s.stream,
                to.as_bytes(),
                &size.to_le_bytes(),
                &s.next_seq.values().sum::<u64>().to_le_bytes(),
                &std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos()
                    .to_le_bytes(),
            ]);
            let resend = Resend::Buffer {
                to: to.to_string(),
                data: data.clone(),
                key,
                cookie,
            };
            s.start(&self.shared, size, None, Some(resend), |c| {
                c.send_buffer_resumable(now, to, data, key, cookie)
            })
        })?;
        tracing::info!(id = %sent.id, to, size, "buffer sent");
        Ok(sent)
    }

    /// `sendFile`: the file at `path`, under its own name; `.await` the handle for its
    /// result. It is resumable under a key of its own: a connection lost part way (with
    /// [`Reconnect`]) costs only what the receiver had not recorded.
    pub async fn send_file(
        &self,
        to: &str,
        path: &Path,
        cookie: u64,
    ) -> Result<SendHandle, SendFileError> {
        self.send_file_keyed(to, path, None, cookie).await
    }

    /// [`ClientHandle::send_file`] under `key`: a program that sends the same file again
    /// after it was itself restarted gives the same key ([`file_resume_key`]), and the
    /// receiver continues from what it holds.
    pub async fn send_file_with_key(
        &self,
        to: &str,
        path: &Path,
        key: ResumeKey,
        cookie: u64,
    ) -> Result<SendHandle, SendFileError> {
        self.send_file_keyed(to, path, Some(key), cookie).await
    }

    async fn send_file_keyed(
        &self,
        to: &str,
        path: &Path,
        key: Option<ResumeKey>,
        cookie: u64,
    ) -> Result<SendHandle, SendFileError> {
        let io = |error| SendFileError::Io {
            path: path.to_path_buf(),
            error,
        };
        let file = tokio::fs::File::open(path).await.map_err(io)?;
        let meta = file.metadata().await.map_err(io)?;
        let size = meta.len();
        let file = Arc::new(file.into_std().await);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A key of this send's own: unique, kept while this process lives.
        let key = key.unwrap_or_else(|| {
            let nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            key_of(&[
                path.as_os_str().as_encoded_bytes(),
                &size.to_le_bytes(),
                &std::process::id().to_le_bytes(),
                &nonce.to_le_bytes(),
            ])
        });
        let resend = Resend::File {
            to: to.to_string(),
            name: name.clone(),
            size,
            key,
            cookie,
        };
        let sent = self.shared.call(|s, now| {
            s.start(&self.shared, size, Some(file), Some(resend), |c| {
                c.send_file_resumable(now, to, &name, size, key, cookie)
            })
        })?;
        tracing::info!(id = %sent.id, to, size, file = %path.display(), "file sent");
        Ok(sent)
    }

    /// `cancelSend` (also [`SendHandle::cancel`]) of the send [`SendHandle::id`] names.
    pub async fn cancel_send(&self, id: SendId, cookie: u64) -> ErrorCode {
        self.shared.call(|s, _| s.cancel(id, cookie))
    }

    /// The application moved the file of [`ClientEvent::FileReceived`] `id` to `path`:
    /// if its sender sends it again (it never heard of this delivery), it is confirmed
    /// without being sent or kept twice, and told as [`ClientEvent::FileAlreadyHeld`],
    /// but only while `path` holds that very file. A file not told of is received again
    /// whole.
    pub fn file_saved_as(&self, id: ReceiveId, path: &Path) {
        self.shared.call(|s, _| {
            let at = s.done_records.iter().position(|(r, _)| *r == id);
            if let Some((_, record)) = at.and_then(|at| s.done_records.remove(at)) {
                s.saved_at.push((record, path.to_path_buf()));
            }
        });
    }

    /// Takes messages only from `senders` (`None`: from anyone): others are refused with
    /// `REJECTED` as they arrive, on this connection and the next ones
    /// ([`Client::accept_only_from`]). Messages that came before the call are not looked
    /// at again.
    pub fn accept_only_from(&self, senders: Option<std::collections::BTreeSet<UserId>>) {
        self.shared.call(|s, _| s.client.accept_only_from(senders));
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

    /// Limits how fast files are sent: at most `bytes_per_sec` read from files a second
    /// (`None`: as fast as the path allows).
    pub fn set_file_rate(&self, bytes_per_sec: Option<u64>) {
        self.shared.call(|s, _| {
            s.pace = bytes_per_sec
                .filter(|r| *r > 0)
                .map(|rate| (rate, tokio::time::Instant::now()));
        });
    }

    /// Closes the connection; pending sends fail with `CONNECTIONLOST`.
    pub fn close(&self) {
        self.shared.call(|s, _| s.close());
    }
}

/// How long after a receiver's connection was lost a waiting send is tried again.
const RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Room made in the read buffer before each read.
const READ_SIZE: usize = 256 * 1024;

/// A file read done on the blocking pool.
type FileReadDone = (SendId, u64, std::io::Result<Bytes>);

/// What the task asks of the file sink, which runs on the blocking pool: file writes
/// never stall the connection's task.
enum SinkOp {
    Begin(ReceiveId, String, u64),
    /// A resumable file: its partial file is opened, and where it ends comes back.
    BeginResumable(ReceiveId, UserId, ResumeKey, String, u64),
    /// File bytes, and the digest of the file up to their end.
    Write(ReceiveId, Bytes, Digest),
    /// All of the file was written and verified: keep it (flush, sync, persist).
    Arrived(ReceiveId, String, UserId, u64),
    /// The file failed: remove what was written, then say so.
    Abandon(ReceiveId),
    /// The connection was lost under the file: a resumable file's bytes are recorded for
    /// the next attempt (any other is removed), then it is said.
    Suspend(ReceiveId),
    /// The application saved a kept file there.
    SavedAt(DoneRecord, PathBuf),
}

/// What the sink tells the task back.
enum SinkDone {
    /// The file could not be begun or written: it is abandoned; the task refuses it.
    Failed(ReceiveId, std::io::Error),
    /// A resumable file's partial file is open: it holds this many bytes, with this digest.
    Resume(ReceiveId, u64, Digest),
    /// A file kept (or held already), with its sender and size.
    Kept(ReceiveId, UserId, u64, std::io::Result<Kept>),
    /// A failed file's partial bytes are gone.
    Abandoned(ReceiveId),
}

/// How often an idle sink lets kept partial files past the resume window go.
const SINK_TIDY_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Requests queued for the sink at most: with 16 KiB frames, 4 MiB of file data.
const SINK_QUEUE: usize = 256;

/// The sink's loop: it does what the task asks, in order, and reports failures and kept
/// files.
fn run_sink(mut sink: FileSink, mut ops: mpsc::Receiver<SinkOp>, done: mpsc::Sender<SinkDone>) {
    let runtime = tokio::runtime::Handle::current();
    loop {
        // Kept partial files expire while the listener waits, not only at its next file.
        let next = runtime.block_on(tokio::time::timeout(SINK_TIDY_EVERY, ops.recv()));
        let op = match next {
            Ok(Some(op)) => op,
            Ok(None) => break,
            Err(_) => {
                sink.expire_kept();
                continue;
            }
        };
        let report = match op {
            SinkOp::Begin(id, name, size) => sink
                .begin(id, &name, size)
                .err()
                .map(|e| SinkDone::Failed(id, e)),
            SinkOp::BeginResumable(id, from, key, name, size) => {
                Some(match sink.begin_resumable(id, &from, key, &name, size) {
                    Ok((offset, digest)) => SinkDone::Resume(id, offset, digest),
                    Err(e) => SinkDone::Failed(id, e),
                })
            }
            SinkOp::Write(id, data, digest) => match sink.write_digested(id, &data, Some(digest)) {
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
            SinkOp::Suspend(id) => {
                sink.suspend(id);
                Some(SinkDone::Abandoned(id))
            }
            SinkOp::SavedAt(record, path) => {
                if let Err(error) = sink.saved_at(record, &path) {
                    tracing::warn!(%error, path = %path.display(), "cannot record where a file was saved; a repeat of it will be received again");
                }
                None
            }
        };
        if let Some(report) = report {
            if done.blocking_send(report).is_err() {
                return;
            }
        }
    }
}

/// One connection: the socket, the files, and the drive loop, until the connection ends.
async fn drive(
    shared: Arc<Shared>,
    stream: Box<dyn Transport>,
    events: mpsc::Sender<ClientEvent>,
    sink: Option<FileSink>,
) {
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
    // Files the sink is keeping, whole and verified, with what the core said of each
    // meanwhile (a lost connection, a cancel): the application hears once it is kept.
    let mut keeping: HashMap<ReceiveId, Option<Event>> = HashMap::new();
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
            // Where the application saved kept files, for the sink to record.
            let saved_at = std::mem::take(&mut shared.lock().saved_at);
            for (record, path) in saved_at {
                if let Some(sink) = &sink {
                    if let Err(mpsc::error::TrySendError::Full(op)) =
                        sink.try_send(SinkOp::SavedAt(record, path))
                    {
                        // Told again on the next turn, once the sink has room.
                        if let SinkOp::SavedAt(record, path) = op {
                            shared.lock().saved_at.push((record, path));
                        }
                        sink_full = true;
                    }
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
                    keeping: &mut keeping,
                };
                if let (Some(app), Some(room)) = (handle_event(ctx, event), room) {
                    room.send(app);
                }
            }
            if written == 0 && !any {
                break;
            }
        }
        // The next deadline, and when waiting sends are tried again on this connection
        // (only while it lives and is logged in).
        let (deadline, retry) = {
            let s = shared.lock();
            let retry = s.retry_at.filter(|_| s.client.is_logged_in());
            match s.client.is_closed() {
                true => (None, None),
                false => (
                    Some(s.client.poll_timeout().unwrap_or(Instant::ZERO)),
                    retry,
                ),
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
                match done {
                    SinkDone::Abandoned(id) => own.extend(failing.remove(&id)),
                    // A file kept after the connection was lost is the application's too.
                    SinkDone::Kept(id, from, size, saved) => {
                        let state = &mut shared.lock();
                        own.extend(kept(state, &mut keeping, id, from, size, saved));
                    }
                    SinkDone::Failed(..) | SinkDone::Resume(..) => {}
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
                SinkDone::Resume(id, offset, digest) => {
                    // (A file that ended meanwhile is gone: nothing to answer.)
                    let _ = shared.lock().client.resume_incoming(id, offset, digest);
                }
                SinkDone::Failed(id, error) => {
                    tracing::warn!(%id, %error, "cannot write an incoming file");
                    // Refused (the sender's result is 1402); the application hears of it
                    // too, unless the file ended otherwise meanwhile.
                    let code = crate::write_error_code(&error);
                    let refused = shared.lock().client.reject(id, code).is_ok();
                    if let (Some((_, from)), true) = (names.remove(&id), refused) {
                        own.push_back(ClientEvent::Core(Event::ReceiveFailed { id, from, code }));
                    }
                }
                SinkDone::Kept(id, from, size, saved) => {
                    let state = &mut shared.lock();
                    own.extend(kept(state, &mut keeping, id, from, size, saved));
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
            _ = tokio::time::sleep_until(retry.unwrap_or(wake)), if retry.is_some() => {
                let now = shared.now();
                let mut s = shared.lock();
                let window = s.reconnect.as_ref().map(|r| r.window);
                s.fail_pending(window);
                s.resubmit(now);
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
    keeping: &'a mut HashMap<ReceiveId, Option<Event>>,
}

/// A file the sink kept (or failed to): confirmed to its sender only now that it is in
/// its place, and what the application hears of it. A file kept whole is the
/// application's even if its connection was lost meanwhile: its sender, back, is answered
/// "all of it" and confirmed without sending it again. One cancelled meanwhile goes.
fn kept(
    state: &mut State,
    keeping: &mut HashMap<ReceiveId, Option<Event>>,
    id: ReceiveId,
    from: UserId,
    size: u64,
    saved: std::io::Result<Kept>,
) -> Option<ClientEvent> {
    // What the core said of the file while it was kept (its sender has heard the same).
    let ended = keeping.remove(&id).flatten();
    let given_up = match &ended {
        Some(Event::ReceiveFailed { code, .. }) => !code.is_cut_off(),
        _ => false,
    };
    let client = &mut state.client;
    match saved {
        // Delivered by an earlier attempt whose sender never heard, and still where the
        // application saved it: confirmed, not kept twice, and said.
        Ok(Kept::Already(path)) => {
            tracing::info!(%id, %from, path = %path.display(), "file received again; the application has it");
            let _ = client.accept_delivery(id);
            Some(ClientEvent::FileAlreadyHeld {
                id,
                from,
                path,
                size,
            })
        }
        Ok(Kept::Saved(saved)) if given_up => {
            tracing::info!(%id, %from, "file cancelled as it was kept; removed");
            tokio::task::spawn_blocking(move || saved.discard());
            ended.map(ClientEvent::Core)
        }
        Ok(Kept::Saved(saved)) => {
            if client.accept_delivery(id).is_err() {
                tracing::info!(%id, %from, "file kept as its connection was lost; confirmed when its sender is back");
            }
            tracing::info!(%id, %from, size, path = %saved.tmp_file.display(), "file received");
            if let Some(record) = saved.done_record() {
                if state.done_records.len() >= DONE_RECORDS {
                    state.done_records.pop_front();
                }
                state.done_records.push_back((id, record));
            }
            Some(ClientEvent::FileReceived {
                id,
                from,
                tmp_file: saved.tmp_file,
                org_file_name: saved.org_file_name,
                size,
            })
        }
        Err(error) => {
            tracing::warn!(%id, %error, "cannot keep an incoming file");
            let code = crate::write_error_code(&error);
            let _ = client.fail_delivery(id, code);
            // One failure for the application: the core's, if it spoke first.
            Some(ClientEvent::Core(ended.unwrap_or(Event::ReceiveFailed {
                id,
                from,
                code,
            })))
        }
    }
}

/// Handles what the task handles itself; gives back what the application should see.
fn handle_event(cx: Taker<'_>, event: Event) -> Option<ClientEvent> {
    match event {
        Event::Offer {
            id,
            kind: SendKind::File,
            ref name,
            ref from,
            size,
            resume_key,
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
            sink.send(match resume_key {
                Some(key) => SinkOp::BeginResumable(id, from.clone(), key, name.to_string(), size),
                None => SinkOp::Begin(id, name.to_string(), size),
            });
            cx.names.insert(id, (name.to_string(), from.clone()));
            Some(ClientEvent::Core(event))
        }
        Event::FileData {
            id, data, digest, ..
        } => {
            if let Some(sink) = cx.sink {
                sink.send(SinkOp::Write(id, data, digest));
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
                Some(sink) => {
                    sink.send(SinkOp::Arrived(id, name, from, size));
                    cx.keeping.insert(id, None);
                }
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
        // A file being kept: the application hears when it is (`kept`).
        Event::ReceiveFailed { id, .. } if cx.keeping.contains_key(&id) => {
            cx.keeping.insert(id, Some(event));
            None
        }
        Event::ReceiveFailed { id, code, .. } => match (cx.names.remove(&id), cx.sink) {
            // A file in the sink: the application hears once its bytes are removed (or, for
            // a lost connection, recorded for the next attempt).
            (Some(_), Some(sink)) => {
                sink.send(match code.is_cut_off() {
                    true => SinkOp::Suspend(id),
                    false => SinkOp::Abandon(id),
                });
                cx.failing.insert(id, ClientEvent::Core(event));
                None
            }
            _ => Some(ClientEvent::Core(event)),
        },
        Event::Offer {
            id,
            kind: SendKind::Buffer,
            ref from,
            size,
            resume_key: Some(key),
            ..
        } => {
            // What was kept of it (cut by a lost connection) goes back to the state
            // machine; one delivered before is answered whole and not delivered again.
            let mut s = cx.shared.lock();
            let window = s
                .reconnect
                .as_ref()
                .map_or(crate::RESUME_WINDOW, |r| r.window);
            s.buffers.expire(window);
            let at = (from.clone(), key);
            let done = s.buffers.done.get(&at).filter(|d| d.0 == size).copied();
            let held = s.buffers.partial.remove(&at).map(|(b, _)| b);
            s.buffers.arriving.insert(id, at);
            let answer = match done {
                Some((size, crc, _)) => {
                    s.buffers.repeats.insert(id);
                    s.client.resume_incoming(id, size, Digest::Crc32c(crc))
                }
                None => s
                    .client
                    .resume_incoming_buffer(id, held.unwrap_or_default()),
            };
            if let Err(error) = answer {
                tracing::debug!(%id, %error, "buffer not resumed");
            }
            Some(ClientEvent::Core(event))
        }
        Event::ReceiveSuspended {
            id,
            ref from,
            key,
            ref data,
        } => {
            let mut s = cx.shared.lock();
            s.buffers.arriving.remove(&id);
            s.buffers.keep_partial(from.clone(), key, data.clone());
            tracing::info!(%id, %from, kept = data.len(), "buffer cut off; kept for the next attempt");
            Some(ClientEvent::Core(Event::ReceiveFailed {
                id,
                from: from.clone(),
                code: ErrorCode::CONNECTIONLOST,
            }))
        }
        Event::BufferReceived { id, .. } if cx.shared.lock().buffers.repeats.remove(&id) => {
            // Delivered before; its sender never heard. Confirmed now, not delivered again
            // (taking it confirmed it, unless the application confirms buffers itself).
            let mut s = cx.shared.lock();
            s.buffers.arriving.remove(&id);
            let _ = s.client.accept_delivery(id);
            tracing::info!(%id, "buffer received again; dropped");
            None
        }
        Event::CmdReceived {
            id,
            ref from,
            ref data,
            ..
        } => {
            tracing::info!(%id, %from, size = data.len(), "command received");
            Some(ClientEvent::Core(event))
        }
        Event::BufferReceived {
            id,
            ref from,
            ref data,
        } => {
            cx.shared.lock().buffers.delivered(id, data);
            tracing::info!(%id, %from, size = data.len(), "buffer received");
            Some(ClientEvent::Core(event))
        }
        Event::LoginResult { code } => {
            let mut s = cx.shared.lock();
            if !code.is_success() {
                // Refused: the client does not try again.
                s.closing = true;
                s.fail_pending(None);
                return Some(ClientEvent::Core(event));
            }
            if !s.logged_in {
                s.logged_in = true;
                return Some(ClientEvent::Core(event));
            }
            let now = cx.shared.now();
            s.resubmit(now);
            tracing::info!(server = %s.server, "reconnected");
            Some(ClientEvent::Reconnected {
                server: s.server.clone(),
            })
        }
        // A lost connection the client will replace is not the end; a session replaced by
        // a newer login of the same user elsewhere is (it would only replace that one).
        Event::Closed { code, .. } => {
            let mut s = cx.shared.lock();
            if code == ErrorCode::KICKOUT_BY_RELOGIN {
                s.closing = true;
                s.fail_pending(None);
            }
            match s.reconnect.is_some() && s.logged_in && !s.closing {
                true => None,
                false => Some(ClientEvent::Core(event)),
            }
        }
        other => Some(ClientEvent::Core(other)),
    }
}

/// A resume key from these parts (the first 16 bytes of their SHA-256).
fn key_of(parts: &[&[u8]]) -> ResumeKey {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    let mut key = [0u8; 16];
    key.copy_from_slice(&hash.finalize()[..16]);
    ResumeKey(key)
}

/// The resume key of the file at `path` sent to `to`, the same every time while the file
/// is unchanged: from its canonical path, size and modification time. With it
/// ([`ClientHandle::send_file_with_key`]) a sender that was restarted continues where its
/// receiver's bytes end; a file changed since gets another key and starts over. (The
/// receiver also knows a file it kept already: the same unchanged file sent again to the
/// same user within the resume window is confirmed, not kept twice.)
pub fn file_resume_key(path: &Path, to: &str) -> std::io::Result<ResumeKey> {
    let canonical = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&canonical)?;
    let modified = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    Ok(key_of(&[
        canonical.as_os_str().as_encoded_bytes(),
        &meta.len().to_le_bytes(),
        &modified.to_le_bytes(),
        to.as_bytes(),
    ]))
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
