//! The application's handles: [`ClientHandle`](crate::ClientHandle) for the SDK's calls, and [`SendHandle`](crate::SendHandle)
//! for one send's result and progress.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use peermsg::client::{ReceiveId, SendId, SendKind};
use peermsg::continuity::Continuity;
use peermsg::wire::{ResumeKey, UserId};
use peermsg::{ActionError, ErrorCode, SendError};
use tokio::sync::{oneshot, watch};

use super::keys::new_file_key;
use super::state::Shared;
use super::SendFileError;

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
    /// When it gives up, ending with `CONNECTIONLOST` ([`Reconnect::window`](super::Reconnect::window) after
    /// `since`).
    pub deadline: tokio::time::Instant,
}

/// One send under way, as [`ClientHandle::send_cmd`](crate::ClientHandle::send_cmd) and its siblings return it.
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
    pub(super) fn new(
        id: SendId,
        result: oneshot::Receiver<ErrorCode>,
        progress: watch::Receiver<SendProgress>,
        shared: Arc<Shared>,
    ) -> Self {
        SendHandle {
            id,
            result,
            done: None,
            progress,
            shared,
        }
    }

    /// The send's id, as logs and [`ClientHandle::cancel_send`](crate::ClientHandle::cancel_send) name it.
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
        self.shared.call(|s, _| s.cont.cancel_send(self.id, 0))
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

/// Closes the connection when the last handle goes.
pub(super) struct LastHandle(pub(super) Arc<Shared>);

impl Drop for LastHandle {
    fn drop(&mut self) {
        self.0.call(|s, _| s.cont.close());
    }
}

/// The application's side of a connected client. Cloneable; the connection closes when
/// every handle is dropped or [`ClientHandle::close`](crate::ClientHandle::close) is called.
#[derive(Clone)]
pub struct ClientHandle {
    pub(super) shared: Arc<Shared>,
    pub(super) _last: Arc<LastHandle>,
}

impl std::fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandle").finish_non_exhaustive()
    }
}

impl ClientHandle {
    /// `sendCmd`: the command is queued; `.await` the handle for its result. With
    /// [`Reconnect`](super::Reconnect), a command cut off by a lost connection is sent
    /// again, with an identity its receiver uses to deliver it once.
    pub async fn send_cmd(
        &self,
        to: &str,
        data: Bytes,
        cookie: u64,
    ) -> Result<SendHandle, SendError> {
        let sent = self
            .shared
            .call(|s, now| s.start(&self.shared, 0, None, |c| c.send_cmd(now, to, data, cookie)))?;
        tracing::info!(id = %sent.id, to, "command sent");
        Ok(sent)
    }

    /// `sendBuffer`: the buffer is queued; `.await` the handle for its result. With
    /// [`Reconnect`](super::Reconnect), a buffer cut by a lost connection goes on from
    /// what its receiver kept of it.
    pub async fn send_buffer(
        &self,
        to: &str,
        data: Bytes,
        cookie: u64,
    ) -> Result<SendHandle, SendError> {
        let size = data.len() as u64;
        let sent = self.shared.call(|s, now| {
            s.start(&self.shared, size, None, |c| {
                c.send_buffer(now, to, data, cookie)
            })
        })?;
        tracing::info!(id = %sent.id, to, size, "buffer sent");
        Ok(sent)
    }

    /// `sendFile`: the file at `path`, under its own name; `.await` the handle for its
    /// result. It is resumable under a key of its own: a connection lost part way (with
    /// [`Reconnect`](super::Reconnect)) costs only what the receiver had not recorded.
    pub async fn send_file(
        &self,
        to: &str,
        path: &Path,
        cookie: u64,
    ) -> Result<SendHandle, SendFileError> {
        self.send_file_keyed(to, path, None, cookie).await
    }

    /// [`ClientHandle::send_file`](crate::ClientHandle::send_file) under `key`: a program that sends the same file again
    /// after it was itself restarted gives the same key ([`file_resume_key`](super::file_resume_key)), and the
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
        let key = key.unwrap_or_else(|| new_file_key(path, size));
        let sent = self.shared.call(|s, now| {
            s.start(&self.shared, size, Some(file), |c| {
                c.send_file(now, to, &name, size, key, cookie)
            })
        })?;
        tracing::info!(id = %sent.id, to, size, file = %path.display(), "file sent");
        Ok(sent)
    }

    /// `cancelSend` (also [`SendHandle::cancel`]) of the send [`SendHandle::id`] names.
    pub async fn cancel_send(&self, id: SendId, cookie: u64) -> ErrorCode {
        self.shared.call(|s, _| s.cont.cancel_send(id, cookie))
    }

    /// The application moved the file of [`ClientEvent::FileReceived`](crate::ClientEvent::FileReceived) `id` to `path`:
    /// if its sender sends it again (it never heard of this delivery), it is confirmed
    /// without being sent or kept twice, and told as [`ClientEvent::FileAlreadyHeld`](crate::ClientEvent::FileAlreadyHeld),
    /// but only while `path` holds that very file. A file not told of is received again
    /// whole.
    pub fn file_saved_as(&self, id: ReceiveId, path: &Path) {
        self.shared.call(|s, _| s.saved_as(id, path.to_path_buf()));
    }

    /// Takes messages only from `senders` (`None`: from anyone): others are refused with
    /// `REJECTED` as they arrive, on this connection and the next ones
    /// ([`Client::accept_only_from`](peermsg::client::Client::accept_only_from)). Messages that came before the call are not looked
    /// at again.
    pub fn accept_only_from(&self, senders: Option<std::collections::BTreeSet<UserId>>) {
        self.shared.call(|s, _| s.cont.accept_only_from(senders));
    }

    /// Refuses an incoming buffer or file.
    pub fn reject(&self, id: ReceiveId, code: ErrorCode) {
        self.shared.call(|s, _| {
            let _ = s.cont.reject(id, code);
        });
    }

    /// Confirms a buffer received with [`ClientConfig::confirm_buffers`](peermsg::client::ClientConfig::confirm_buffers) once the application
    /// has kept it: its sender's result is `NOERR`. (Files are confirmed by the client
    /// itself, once its sink kept them.)
    pub fn accept_buffer(&self, id: ReceiveId) -> Result<(), ActionError> {
        self.answer_buffer(id, |c| c.accept_delivery(id))
    }

    /// Refuses a buffer received with [`ClientConfig::confirm_buffers`](peermsg::client::ClientConfig::confirm_buffers) that the application
    /// could not keep: its sender's result is `code` (`FILE_WRITE_ERR` for a success).
    pub fn fail_buffer(&self, id: ReceiveId, code: ErrorCode) -> Result<(), ActionError> {
        self.answer_buffer(id, |c| c.fail_delivery(id, code))
    }

    /// `answer` for incoming buffer `id`; never for a file, which the client answers itself.
    fn answer_buffer(
        &self,
        id: ReceiveId,
        answer: impl FnOnce(&mut Continuity) -> Result<(), ActionError>,
    ) -> Result<(), ActionError> {
        self.shared.call(|s, _| match s.cont.incoming_kind(id) {
            Some(SendKind::Buffer) => answer(&mut s.cont),
            _ => Err(ActionError::UnknownId),
        })
    }

    /// Limits how fast files are sent: at most `bytes_per_sec` read from files a second
    /// (`None`: as fast as the path allows).
    pub fn set_file_rate(&self, bytes_per_sec: Option<u64>) {
        self.shared.call(|s, now| s.set_pace(bytes_per_sec, now));
    }

    /// Closes the connection; pending sends fail with `CONNECTIONLOST`.
    pub fn close(&self) {
        self.shared.call(|s, _| s.cont.close());
    }
}
