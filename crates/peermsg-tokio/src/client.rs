//! A client over TCP: one task owns the state machine and the socket; the application
//! talks to it through a cloneable handle (commands in an unbounded channel, each with a
//! one-shot reply) and reads events from a channel.
//!
//! The task follows the drive invariant: after any input (bytes, a command, a deadline) it
//! writes frames and handles events until neither comes, then waits on the socket, the
//! command channel and the next deadline at once. File bytes never reach the application as
//! events: the task reads files it sends from disk by offset, and writes files it receives
//! into a [`FileSink`].

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use peermsg::client::{Client, Config, Event, ReceiveId, SendId, SendKind};
use peermsg::wire::{Transmit, UserId};
use peermsg::{ErrorCode, Instant, SendError};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};

use crate::sink::FileSink;

/// What the application hears from a connected client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// An event of the state machine (all but file bytes and file reads, which the task
    /// handles, and `FileReceived`, which comes as [`ClientEvent::FileReceived`]).
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
pub enum ConnectError {
    /// The server could not be reached.
    #[error("cannot connect: {0}")]
    Io(#[from] std::io::Error),
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

enum Command {
    Send {
        kind: SendKind,
        to: String,
        data: Bytes,
        cookie: u64,
        reply: oneshot::Sender<Result<SendId, SendError>>,
    },
    SendFile {
        to: String,
        name: String,
        file: tokio::fs::File,
        size: u64,
        cookie: u64,
        reply: oneshot::Sender<Result<SendId, SendError>>,
    },
    Cancel {
        id: SendId,
        cookie: u64,
        reply: oneshot::Sender<ErrorCode>,
    },
    Reject {
        id: ReceiveId,
        code: ErrorCode,
    },
    Close,
}

/// The application's side of a connected client. Cloneable; the connection closes when
/// every handle is dropped or [`ClientHandle::close`] is called.
#[derive(Clone, Debug)]
pub struct ClientHandle {
    commands: mpsc::UnboundedSender<Command>,
}

/// Connects to a relay at `addr`, logs in, and returns the handle and the event channel
/// once the login is accepted. Incoming files go to `sink_dir` if given (else they are
/// refused with `FILE_WRITE_ERR`).
pub async fn connect(
    addr: impl ToSocketAddrs,
    user: &str,
    token: &[u8],
    config: Config,
    sink_dir: Option<&Path>,
) -> Result<(ClientHandle, mpsc::UnboundedReceiver<ClientEvent>), ConnectError> {
    let sink = sink_dir.map(FileSink::new).transpose()?;
    let stream = TcpStream::connect(addr).await?;
    crate::socket::tune(&stream);
    let epoch = tokio::time::Instant::now();
    let mut client =
        Client::new(config, Instant::ZERO).map_err(|e| ConnectError::Invalid(e.to_string()))?;
    client
        .login(user, token)
        .map_err(|e| ConnectError::Invalid(e.to_string()))?;
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (event_tx, mut events) = mpsc::unbounded_channel();
    tokio::spawn(drive(client, stream, epoch, command_rx, event_tx, sink));
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
    Ok((ClientHandle { commands }, events))
}

impl ClientHandle {
    async fn send(
        &self,
        kind: SendKind,
        to: &str,
        data: Bytes,
        cookie: u64,
    ) -> Result<SendId, SendError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Send {
            kind,
            to: to.to_string(),
            data,
            cookie,
            reply,
        };
        self.commands.send(command).map_err(|_| SendError::Closed)?;
        answer.await.map_err(|_| SendError::Closed)?
    }

    /// `sendCmd`.
    pub async fn send_cmd(&self, to: &str, data: Bytes, cookie: u64) -> Result<SendId, SendError> {
        self.send(SendKind::Cmd, to, data, cookie).await
    }

    /// `sendBuffer`.
    pub async fn send_buffer(
        &self,
        to: &str,
        data: Bytes,
        cookie: u64,
    ) -> Result<SendId, SendError> {
        self.send(SendKind::Buffer, to, data, cookie).await
    }

    /// `sendFile`: the file at `path`, under its own name.
    pub async fn send_file(
        &self,
        to: &str,
        path: &Path,
        cookie: u64,
    ) -> Result<SendId, SendFileError> {
        let io = |error| SendFileError::Io {
            path: path.to_path_buf(),
            error,
        };
        let file = tokio::fs::File::open(path).await.map_err(io)?;
        let size = file.metadata().await.map_err(io)?.len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (reply, answer) = oneshot::channel();
        let command = Command::SendFile {
            to: to.to_string(),
            name,
            file,
            size,
            cookie,
            reply,
        };
        self.commands.send(command).map_err(|_| SendError::Closed)?;
        Ok(answer.await.map_err(|_| SendError::Closed)??)
    }

    /// `cancelSend`.
    pub async fn cancel_send(&self, id: SendId, cookie: u64) -> ErrorCode {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Cancel { id, cookie, reply })
            .is_err()
        {
            return ErrorCode::CONNECTIONLOST;
        }
        answer.await.unwrap_or(ErrorCode::CONNECTIONLOST)
    }

    /// Refuses an incoming buffer or file.
    pub fn reject(&self, id: ReceiveId, code: ErrorCode) {
        let _ = self.commands.send(Command::Reject { id, code });
    }

    /// Closes the connection; pending sends fail with `CONNECTIONLOST`.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

/// Room made in the read buffer before each read.
const READ_SIZE: usize = 256 * 1024;

/// The task: the state machine, the socket, the files.
async fn drive(
    mut client: Client,
    stream: TcpStream,
    epoch: tokio::time::Instant,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<ClientEvent>,
    mut sink: Option<FileSink>,
) {
    let clock = move || Instant::ZERO + epoch.elapsed();
    let (mut rd, mut wr) = stream.into_split();
    let mut files: HashMap<SendId, tokio::fs::File> = HashMap::new();
    let mut names: HashMap<ReceiveId, String> = HashMap::new();
    // Reads land in one buffer and are handed over without a copy; writes are vectored, so
    // payloads go from the application's `Bytes` to the socket without a copy either.
    let mut input = BytesMut::new();
    let mut out = Transmit::new();
    let mut commands_open = true;
    loop {
        loop {
            let written = client.poll_transmit(&mut out);
            if written > 0 && wr.write_all_buf(&mut out).await.is_err() {
                out.clear();
                client.handle_disconnect();
            }
            let mut any = false;
            while let Some(event) = client.poll_event() {
                any = true;
                if let Some(app) =
                    handle_event(&mut client, event, &mut files, &mut sink, &mut names).await
                {
                    let _ = events.send(app);
                }
            }
            if written == 0 && !any {
                break;
            }
        }
        if client.is_closed() {
            let _ = wr.shutdown().await;
            return;
        }
        let deadline = client.poll_timeout().unwrap_or(clock());
        let wake = epoch + (deadline - Instant::ZERO);
        input.reserve(READ_SIZE);
        tokio::select! {
            read = rd.read_buf(&mut input) => match read {
                Ok(0) | Err(_) => client.handle_disconnect(),
                Ok(_) => client.handle_input_buf(clock(), input.split()),
            },
            command = commands.recv(), if commands_open => match command {
                Some(command) => apply(&mut client, clock(), command, &mut files),
                None => {
                    commands_open = false;
                    client.close();
                }
            },
            _ = tokio::time::sleep_until(wake) => client.handle_timeout(clock()),
        }
    }
}

fn apply(
    client: &mut Client,
    now: Instant,
    command: Command,
    files: &mut HashMap<SendId, tokio::fs::File>,
) {
    match command {
        Command::Send {
            kind,
            to,
            data,
            cookie,
            reply,
        } => {
            let sent = match kind {
                SendKind::Cmd => client.send_cmd(now, &to, data, cookie),
                _ => client.send_buffer(now, &to, data, cookie),
            };
            let _ = reply.send(sent);
        }
        Command::SendFile {
            to,
            name,
            file,
            size,
            cookie,
            reply,
        } => {
            let sent = client.send_file(now, &to, &name, size, cookie);
            if let Ok(id) = sent {
                files.insert(id, file);
            }
            let _ = reply.send(sent);
        }
        Command::Cancel { id, cookie, reply } => {
            let _ = reply.send(client.cancel_send(id, cookie));
        }
        Command::Reject { id, code } => {
            let _ = client.reject(id, code);
        }
        Command::Close => client.close(),
    }
}

/// Handles what the task handles itself; gives back what the application should see.
async fn handle_event(
    client: &mut Client,
    event: Event,
    files: &mut HashMap<SendId, tokio::fs::File>,
    sink: &mut Option<FileSink>,
    names: &mut HashMap<ReceiveId, String>,
) -> Option<ClientEvent> {
    match event {
        Event::FileRead { id, offset, len } => {
            let piece = match files.get_mut(&id) {
                Some(file) => read_at(file, offset, len).await,
                None => return None,
            };
            match piece {
                Ok(piece) => {
                    let _ = client.supply_file_data(id, offset, piece);
                }
                Err(error) => {
                    tracing::warn!(%id, %error, "file source failed");
                    let _ = client.file_read_failed(id);
                }
            }
            None
        }
        Event::Offer {
            id,
            kind: SendKind::File,
            ref name,
            ..
        } => {
            let began = match sink.as_mut() {
                Some(sink) => sink.begin(id, name.as_str()),
                None => Err(std::io::Error::other("no directory for incoming files")),
            };
            if let Err(error) = began {
                tracing::warn!(%id, %error, "cannot take an incoming file");
                let _ = client.reject(id, ErrorCode::FILE_WRITE_ERR);
                return None;
            }
            names.insert(id, name.to_string());
            Some(ClientEvent::Core(event))
        }
        Event::FileData { id, data, .. } => {
            if let Some(s) = sink.as_mut() {
                if let Err(error) = s.write(id, &data) {
                    tracing::warn!(%id, %error, "cannot write an incoming file");
                    s.abandon(id);
                    let _ = client.reject(id, ErrorCode::FILE_WRITE_ERR);
                }
            }
            None
        }
        Event::FileReceived { id, from, size } => {
            let name = names.remove(&id).unwrap_or_default();
            let saved = sink.as_mut().map(|s| s.finish(id, &name));
            match saved {
                Some(Ok(Some(saved))) => Some(ClientEvent::FileReceived {
                    id,
                    from,
                    tmp_file: saved.tmp_file,
                    org_file_name: saved.org_file_name,
                    size,
                }),
                _ => None,
            }
        }
        Event::ReceiveFailed { id, .. } => {
            names.remove(&id);
            if let Some(s) = sink.as_mut() {
                s.abandon(id);
            }
            Some(ClientEvent::Core(event))
        }
        Event::SendResult { id, .. } => {
            files.remove(&id);
            Some(ClientEvent::Core(event))
        }
        other => Some(ClientEvent::Core(other)),
    }
}

async fn read_at(file: &mut tokio::fs::File, offset: u64, len: u64) -> std::io::Result<Bytes> {
    file.seek(SeekFrom::Start(offset)).await?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact(&mut buf).await?;
    Ok(Bytes::from(buf))
}
