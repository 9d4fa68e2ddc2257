//! The user endpoint: sends, receives, results, progress, cancel, flow control and timers,
//! as a sans-IO state machine.
//!
//! The drive contract is the crate's (see the crate documentation): feed bytes with
//! [`Client::handle_input`], time with [`Client::handle_timeout`], call user commands, and
//! after any of them drain [`Client::poll_transmit`], [`Client::poll_event`] and
//! [`Client::poll_timeout`].
//!
//! Where things live: the send lifecycle in `outgoing.rs`, the receive lifecycle in
//! `incoming.rs`, every frame's handling in `Client::handle_frame`, the output order in
//! `Client::next_frame`, and what bounds memory in [`ClientConfig`].

mod config;
mod event;
mod incoming;
mod lifecycle;
mod outgoing;
mod seen;
mod sends;

pub use config::{ClientConfig, ConfigError};
pub(crate) use event::{poll_output, Endpoint};
pub use event::{Event, Output, ReceiveId, SendId, SendKind};
pub use seen::{SeenCmds, Verdict};

use alloc::boxed::Box;
use alloc::collections::{BTreeSet, VecDeque};
use bytes::{Bytes, BytesMut};
use core::time::Duration;

use crate::conn::{self, credit::RecvWindow, ids::IdSpace, CloseReason, Session, Violation};
use crate::digest::RunningDigest;
use crate::error::{ActionError, SendError};
use crate::seal::file::{self as sealed_file, Cipher, FileSeal, Masked};
use crate::seal::{Binding, KeyStatus, Refused, Seal, Sealing};
use crate::wire::credit_step;
use crate::wire::{
    self, Capabilities, Close, Cmd, CmdCont, CmdOnce, ConnCredit, Credit, Data, Digest, End, Frame,
    FrameSink, Hello, IdentityKey, Key, KeyQuery, Login, LoginResult, MessageId, MessageResult,
    Open, Ping, ResumeFrom, ResumeKey, Role, Text, TransferKind, UserId,
};
use crate::{ErrorCode, Instant};

use sends::{queue_ready, start_waiting, Sends};

use incoming::{Incoming, SealedArrival};
use lifecycle::{send_step, Next, Phase, ReceiveInput, SendInput};
use outgoing::{Outgoing, Resume, SealedSource, Source};

/// Our login, as far as it has gone.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LoginState {
    None,
    Pending(UserId),
    Accepted(UserId),
}

impl LoginState {
    /// The user we log in as, once a login is under way.
    fn user(&self) -> Option<&UserId> {
        match self {
            LoginState::Accepted(me) | LoginState::Pending(me) => Some(me),
            LoginState::None => None,
        }
    }
}

/// What to do when the application takes an event.
#[derive(Clone, Copy, Debug)]
enum OnTake {
    Nothing,
    /// The message is delivered: send `RESULT(NOERR)` and forget it.
    Deliver(MessageId),
    /// File bytes were handed over: count them consumed.
    Consume(MessageId, u64),
    /// A sealed file's record was handed over: count its wire bytes consumed (their
    /// connection credit was given back as they came).
    ConsumeRecord(MessageId, u64),
}

/// One end of a connection: a user who sends and receives commands, buffers and files.
///
/// See the [crate documentation](crate) for the drive loop and a complete example.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    /// The connection: input, the peer's state, connection credit both ways.
    session: Session,
    login: LoginState,

    /// Our sends, and the order they go out in.
    sends: Sends,

    // Messages coming to us.
    incoming: IdSpace<Box<Incoming>>,
    cmds_arriving: u64,
    transfers_arriving: u64,

    // Output.
    control: VecDeque<Frame>,
    events: VecDeque<(Event, OnTake)>,

    // Timers.
    ping: Option<(u64, Instant)>,
    next_nonce: u64,
    rtt: Option<Duration>,
    /// Commands with an identity delivered, for exactly once across connections.
    seen: SeenCmds,
    /// The only users whose messages are taken, if the application named them.
    senders: Option<BTreeSet<UserId>>,
    /// Why the connection ended, once it did.
    closed_with: Option<ErrorCode>,
    /// Sealed messages: our identity, the keys we trust, the sessions (carried across
    /// connections). `None`: messages go and come as they are.
    seal: Option<Box<Seal>>,
    /// Keys heard in `KEY` answers, for the [`Continuity`](crate::continuity::Continuity)
    /// whose sends wait for them (as many as it asked for).
    keys_heard: VecDeque<(UserId, Option<IdentityKey>, Option<KeyStatus>)>,
    /// Users whose keys were asked for and not answered yet: a `KEY` of anyone else is
    /// dropped, so what is heard is bounded by what was asked.
    keys_asked: BTreeSet<UserId>,
}

impl Client {
    /// A client at the start of a connection, at time `now`. Its `HELLO` is the first
    /// thing [`Client::poll_transmit`] gives out.
    pub fn new(config: ClientConfig, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        // Our HELLO grants the whole connection window at once.
        let recv = RecvWindow::new(config.conn_window, config.conn_window);
        let mut client = Client {
            config,
            session: Session::new(config.limits, recv, now)?,
            login: LoginState::None,
            sends: Sends::default(),
            incoming: IdSpace::new(),
            cmds_arriving: 0,
            transfers_arriving: 0,
            control: VecDeque::new(),
            events: VecDeque::new(),
            ping: None,
            next_nonce: 0,
            rtt: None,
            seen: SeenCmds::new(config.resume_window),
            senders: None,
            closed_with: None,
            seal: None,
            keys_heard: VecDeque::new(),
            keys_asked: BTreeSet::new(),
        };
        client.control.push_back(Frame::Hello(client.hello()));
        Ok(client)
    }

    fn hello(&self) -> Hello {
        let c = &self.config;
        let mut hello = Hello::new(
            Role::Client,
            &c.limits,
            c.max_cmds_in_flight,
            c.max_transfers,
            c.transfer_window,
            c.conn_window,
        );
        if c.send_only {
            hello.capabilities = Capabilities(hello.capabilities.0 | Capabilities::SEND_ONLY.0);
        }
        if let Some(seal) = &self.seal {
            hello.capabilities = Capabilities(hello.capabilities.0 | Capabilities::SEALED.0);
            hello.identity = Some(seal.identity());
        }
        hello
    }

    /// The `HELLO` not sent yet says what this client is now.
    fn reannounce(&mut self) {
        // A sealed file is handed over a whole record at a time: its sender must have
        // room for the record arriving while the one before waits for the application.
        if self.seal.is_some() {
            let least = 2 * sealed_file::RECORD_WIRE;
            self.config.transfer_window = self.config.transfer_window.max(least);
        }
        let hello = self.hello();
        for frame in &mut self.control {
            if let Frame::Hello(h) = frame {
                *h = hello.clone();
            }
        }
    }

    // ----- Sealed messages -----------------------------------------------------------

    /// Seals messages between users from now on ([`crate::seal`]): this client's `HELLO`
    /// announces its identity key, and every command, buffer and file that comes in must
    /// be sealed for it by a sender whose key it trusts (else it is refused,
    /// [`Event::Refused`]). Files sent are sealed here, each attempt under a key of its
    /// own, to a receiver whose key is pinned (`NO_PEER_KEY` if none is). Call it before
    /// the first [`Client::poll_transmit`]. Sealing commands and buffers is a
    /// [`Continuity`](crate::continuity::Continuity)'s: it seals each send once, so that
    /// one sent again is the same bytes.
    pub fn set_sealing(&mut self, sealing: Sealing) {
        self.seal = Some(Box::new(Seal::new(sealing)));
        self.reannounce();
    }

    /// Our identity key, if sealing is on.
    pub fn identity(&self) -> Option<IdentityKey> {
        self.seal.as_ref().map(|s| s.identity())
    }

    /// The application trusts `key` for `user` from now on: a changed key the person
    /// accepted, or one it checked by its fingerprint.
    pub fn pin_key(&mut self, user: UserId, key: IdentityKey) {
        if let Some(seal) = &mut self.seal {
            seal.pin(user, key);
        }
    }

    /// Asks for `user`'s identity key; the answer comes as [`Event::PeerKey`].
    pub fn query_key(&mut self, user: UserId) {
        if self.keys_asked.insert(user.clone()) {
            self.queue(Frame::KeyQuery(KeyQuery { user }));
        }
    }

    /// The key pinned for `user`.
    pub(crate) fn pinned_key(&self, user: &UserId) -> Option<IdentityKey> {
        self.seal.as_ref().and_then(|s| s.pinned(user))
    }

    /// `plain` sealed for `to` (whose key must be pinned), bound to what it is.
    pub(crate) fn seal(
        &mut self,
        user: &UserId,
        to: &UserId,
        binding: Binding,
        plain: &[u8],
    ) -> Result<Bytes, ErrorCode> {
        let seal = self.seal.as_mut().ok_or(ErrorCode::NO_PEER_KEY)?;
        seal.seal(user, to, binding, plain)
    }

    /// The next key heard in a `KEY` answer.
    pub(crate) fn take_key_heard(
        &mut self,
    ) -> Option<(UserId, Option<IdentityKey>, Option<KeyStatus>)> {
        self.keys_heard.pop_front()
    }

    /// `true` if the peer answers `KEY_QUERY`.
    pub(crate) fn peer_has_keys(&self) -> bool {
        self.session
            .peer()
            .is_some_and(|p| p.capabilities.contains(Capabilities::SEALED))
    }

    /// `true` if sealing is on.
    pub fn is_sealing(&self) -> bool {
        self.seal.is_some()
    }

    /// A `KEY` came: the key is weighed against what is pinned, and the application hears.
    fn on_key(&mut self, key: Key) {
        let Some(seal) = &mut self.seal else {
            return;
        };
        if !self.keys_asked.remove(&key.user) {
            return;
        }
        let status = key.key.and_then(|k| seal.hear(&key.user, k));
        self.keys_heard
            .push_back((key.user.clone(), key.key, status));
        self.push_event(Event::PeerKey {
            user: key.user,
            key: key.key,
            status,
        });
    }

    /// Incoming message `id`'s bytes opened, if sealing is on; `None` if it was refused
    /// (its sender told why, and the application).
    fn open_incoming(&mut self, id: MessageId, binding: Binding) -> Option<Bytes> {
        let msg = self.incoming.get_mut(id)?;
        // Taken whole, not split: a split shares the buffer through one more allocation,
        // while a whole buffer filled to its capacity (as a command or a buffer announced
        // with its size is) becomes `Bytes` without one.
        let data = core::mem::take(&mut msg.data).freeze();
        let Some(seal) = &mut self.seal else {
            return Some(data);
        };
        let me = self.login.user()?.clone();
        let (from, kind) = (msg.from.clone(), msg.kind);
        let opened = seal.open(&me, &from, binding, &data);
        match self.opened(from, kind, opened) {
            Ok(plain) => Some(plain),
            Err(code) => {
                self.fail_incoming(id, code);
                None
            }
        }
    }

    /// What opening a message `from` gave: its plaintext, with a key learned told to the
    /// application; or, refused, the code for its sender, the application told why.
    fn opened(
        &mut self,
        from: UserId,
        kind: SendKind,
        opened: Result<(Bytes, Option<IdentityKey>), Refused>,
    ) -> Result<Bytes, ErrorCode> {
        match opened {
            Ok((plain, learned)) => {
                if let Some(key) = learned {
                    self.push_event(Event::PeerKey {
                        user: from,
                        key: Some(key),
                        status: Some(KeyStatus::Learned),
                    });
                }
                Ok(plain)
            }
            Err(refused) => {
                if let Some((key, status)) = refused.key {
                    self.push_event(Event::PeerKey {
                        user: from.clone(),
                        key: Some(key),
                        status: Some(status),
                    });
                }
                let code = refused.code;
                self.push_event(Event::Refused { from, kind, code });
                Err(code)
            }
        }
    }

    /// A sealed file's header (`OPEN`'s `seal`) opened: its seal, plain size, name and
    /// resume key, checked against the `OPEN`'s. `Err` is the code to refuse it with.
    fn open_file_header(
        &mut self,
        from: &UserId,
        open: &Open,
    ) -> Result<(SealedArrival, sealed_file::Header), ErrorCode> {
        let me = self.login.user().ok_or(ErrorCode::NO_PEER_KEY)?.clone();
        let (Some(seal), Some(sealed)) = (&mut self.seal, &open.seal) else {
            return Err(ErrorCode::NO_PEER_KEY);
        };
        let opened = seal.open(&me, from, Binding::File, sealed);
        let plain = self.opened(from.clone(), SendKind::File, opened)?;
        let header = sealed_file::Header::read(&plain)
            .filter(|h| sealed_file::wire_size(h.size) == open.size)
            .filter(|h| open.resume_key.is_none() || open.resume_key == h.resume_key)
            .filter(|_| open.name.is_empty())
            .filter(|h| h.name.len() as u64 <= self.config.limits.max_file_name_len);
        let Some(header) = header else {
            let code = ErrorCode::SEAL_BROKEN;
            self.push_event(Event::Refused {
                from: from.clone(),
                kind: SendKind::File,
                code,
            });
            return Err(code);
        };
        let arrival = SealedArrival {
            file: FileSeal::new(&header),
            record: BytesMut::new(),
            number: 0,
        };
        Ok((arrival, header))
    }

    // ----- User commands -------------------------------------------------------------

    /// Logs in as `user` with `token`. The answer comes as [`Event::LoginResult`].
    pub fn login(&mut self, user: &str, token: &[u8]) -> Result<(), SendError> {
        if self.session.is_closed() {
            return Err(SendError::Closed);
        }
        // Our own id: a mistake in it is not a target's.
        let user = self.user_id(user).map_err(|e| match e {
            SendError::InvalidTarget(e) => SendError::InvalidUser(e),
            other => other,
        })?;
        let token = Bytes::copy_from_slice(token);
        self.queue(Frame::Login(Login {
            user: user.clone(),
            token,
        }));
        self.login = LoginState::Pending(user);
        Ok(())
    }

    /// Sends `data` to user `to` as a command (`sendCmd`). Returns the send's id at once;
    /// its one [`Event::SendResult`] carries `cookie`.
    pub fn send_cmd(
        &mut self,
        now: Instant,
        to: &str,
        data: Bytes,
        cookie: u64,
    ) -> Result<SendId, SendError> {
        self.send_memory(now, SendKind::Cmd, to, data, cookie)
    }

    /// [`Client::send_cmd`] with an identity across connections: an application that
    /// sends a command again after a lost connection (it had no result) gives the same
    /// `once` with `resent` set, and the receiver confirms a repeat without delivering it
    /// again, or refuses it with `REPEAT_FORGOTTEN` if it can no longer tell
    /// (docs/PROTOCOL.md, "Commands exactly once").
    pub fn send_cmd_once(
        &mut self,
        now: Instant,
        to: &str,
        data: Bytes,
        once: CmdOnce,
        cookie: u64,
    ) -> Result<SendId, SendError> {
        let id = self.send_memory(now, SendKind::Cmd, to, data, cookie)?;
        self.mark(id, |send| send.once = Some(once));
        Ok(id)
    }

    /// Sends `data` to user `to` as a buffer (`sendBuffer`): cut into frames, with progress,
    /// cancellable.
    pub fn send_buffer(
        &mut self,
        now: Instant,
        to: &str,
        data: Bytes,
        cookie: u64,
    ) -> Result<SendId, SendError> {
        self.send_memory(now, SendKind::Buffer, to, data, cookie)
    }

    /// [`Client::send_buffer`], resumable under `key` (one per buffer, the same on every
    /// attempt): a receiver that keeps what it got of it from an earlier attempt continues
    /// from there, after the client has checked those bytes against `data`.
    pub fn send_buffer_resumable(
        &mut self,
        now: Instant,
        to: &str,
        data: Bytes,
        key: ResumeKey,
        cookie: u64,
    ) -> Result<SendId, SendError> {
        let id = self.send_memory(now, SendKind::Buffer, to, data, cookie)?;
        self.mark(id, |send| send.resume_key = Some(key));
        Ok(id)
    }

    /// Sets what a send carries across connections (its identity or resume key), before
    /// any frame of it goes out.
    fn mark(&mut self, id: SendId, set: impl FnOnce(&mut Outgoing)) {
        if let Some(send) = self.sends.outgoing.get_mut(id) {
            set(send);
        }
    }

    /// A command or buffer: checked against its cap, then queued.
    fn send_memory(
        &mut self,
        now: Instant,
        kind: SendKind,
        to: &str,
        data: Bytes,
        cookie: u64,
    ) -> Result<SendId, SendError> {
        let to = self.check_target(to)?;
        let limits = self.config.limits;
        let size = data.len() as u64;
        if kind == SendKind::Cmd {
            let max = self.cap(limits.max_cmd_size, |h| h.max_cmd_size);
            if size > max {
                return Err(SendError::CmdTooLarge { size, max });
            }
        } else {
            let max = self.cap(limits.max_buffer_size, |h| h.max_buffer_size);
            if size > max {
                return Err(SendError::BufferTooLarge { size, max });
            }
        }
        let send = Outgoing::new(kind, cookie, to, Text::new(), size, Source::Memory(data));
        self.enqueue(now, send)
    }

    /// Sends a file of `size` bytes, named `name` for the receiver, to user `to`
    /// (`sendFile`). The client asks for its bytes with [`Event::FileRead`], never more at
    /// once than the transfer's credit.
    pub fn send_file(
        &mut self,
        now: Instant,
        to: &str,
        name: &str,
        size: u64,
        cookie: u64,
    ) -> Result<SendId, SendError> {
        self.file_send(now, to, name, size, None, cookie)
    }

    /// [`Client::send_file`], resumable: `key` names this transfer end to end, the same on
    /// every attempt (derive it from what identifies the source, so another version of the
    /// file gets another key). A receiver that holds bytes of it from an earlier attempt
    /// under `key` states where they end; the client re-reads its own source up to there
    /// ([`Event::FileRead`]) and continues only if the digests match, with
    /// [`Event::Resumed`]; if they differ the send ends with `DIGEST_MISMATCH` and the
    /// receiver drops its bytes. Toward a peer without resume it is a plain file send.
    pub fn send_file_resumable(
        &mut self,
        now: Instant,
        to: &str,
        name: &str,
        size: u64,
        key: ResumeKey,
        cookie: u64,
    ) -> Result<SendId, SendError> {
        self.file_send(now, to, name, size, Some(key), cookie)
    }

    fn file_send(
        &mut self,
        now: Instant,
        to: &str,
        name: &str,
        size: u64,
        resume_key: Option<ResumeKey>,
        cookie: u64,
    ) -> Result<SendId, SendError> {
        let to = self.check_target(to)?;
        let max = self.cap(self.config.limits.max_file_size, |h| h.max_file_size);
        // A sealed file's records are what the receiver's limit counts.
        let wire_size = match self.seal {
            Some(_) => sealed_file::wire_size(size),
            None => size,
        };
        if wire_size > max {
            return Err(SendError::FileTooLarge { size, max });
        }
        let name_max = match self.seal {
            Some(_) => self
                .config
                .limits
                .max_file_name_len
                .min(sealed_file::NAME_MAX),
            None => self.config.limits.max_file_name_len,
        };
        if name.len() as u64 > name_max {
            return Err(SendError::FileNameTooLong {
                len: name.len() as u64,
                max: name_max,
            });
        }
        let sealed = self.seal_file(&to, name, size, resume_key)?;
        let resume_key = match sealed {
            Some(_) => resume_key.map(sealed_file::resume_key),
            None => resume_key,
        };
        let source = Source::File {
            offset: 0,
            piece: Bytes::new(),
            reading: false,
        };
        let name = match sealed {
            Some(_) => Text::new(), // in the seal only
            None => Text::from(name),
        };
        let mut send = Outgoing::new(SendKind::File, cookie, to, name, wire_size, source);
        send.resume_key = resume_key;
        send.sealed = sealed;
        self.enqueue(now, send)
    }

    /// A file to `to` sealed for this attempt, if sealing is on: a fresh key, and the
    /// header that carries it, its size, resume key and name, sealed for the receiver.
    fn seal_file(
        &mut self,
        to: &UserId,
        name: &str,
        size: u64,
        resume_key: Option<ResumeKey>,
    ) -> Result<Option<Box<SealedSource>>, SendError> {
        let me = self.login.user().ok_or(SendError::NotLoggedIn)?.clone();
        let Some(seal) = &mut self.seal else {
            return Ok(None);
        };
        let header = sealed_file::Header {
            cipher: Cipher::for_records(),
            key: seal.file_key(),
            size,
            resume_key: resume_key.map(sealed_file::resume_key),
            name: Text::from(name),
        };
        let file = FileSeal::new(&header);
        let header = seal
            .seal(&me, to, Binding::File, &header.to_bytes())
            .map_err(SendError::Sealing)?;
        Ok(Some(Box::new(SealedSource {
            file,
            header,
            sealed_to: 0,
            pending: BytesMut::new(),
        })))
    }

    /// Hands over bytes an [`Event::FileRead`] asked for: from its `offset`, at least one
    /// byte and at most its `len` (more may be accepted when credit has grown since).
    pub fn supply_file_data(
        &mut self,
        id: SendId,
        offset: u64,
        data: Bytes,
    ) -> Result<(), ActionError> {
        let send = self
            .sends
            .outgoing
            .get_mut(id)
            .ok_or(ActionError::UnknownId)?;
        let (expected_offset, expected_len) = send.wanted();
        let Source::File {
            offset: at,
            piece,
            reading,
        } = &mut send.source
        else {
            return Err(ActionError::UnknownId);
        };
        let len = data.len() as u64;
        if !*reading || offset != expected_offset || len == 0 || len > expected_len.max(1) {
            return Err(ActionError::UnexpectedFileData {
                offset,
                len,
                expected_offset,
                expected_len,
            });
        }
        *reading = false;
        match &mut send.sealed {
            // A sealed file's bytes go out as sealed records (its own source read again to
            // check a resume is plain: it is only digested).
            Some(sealed) if matches!(send.resume, Resume::Settled) => {
                if let Some(d) = send.digest.as_mut() {
                    d.update(&data);
                }
                if let Some((wire_at, records)) = seal_read(sealed, data) {
                    (*at, *piece) = (wire_at, records);
                }
                // Else less than a record so far: asked for the rest.
            }
            _ => (*at, *piece) = (offset, data),
        }
        self.sends.make_ready(id);
        Ok(())
    }

    /// Reports that the file of send `id` could not be read: the send ends with
    /// `SENDFILE_FILEINERROR` (1103) and the receiver is told.
    pub fn file_read_failed(&mut self, id: SendId) -> Result<(), ActionError> {
        match self.sends.outgoing.get(id) {
            Some(send) if send.kind == SendKind::File => {
                self.abandon(id, ErrorCode::SENDFILE_FILEINERROR);
                Ok(())
            }
            _ => Err(ActionError::UnknownId),
        }
    }

    /// Cancels a buffer or file send (`cancelSend`). Emits [`Event::CancelResult`] with
    /// `cookie`: `NOERR`, or `TRANSID_INVALID` for a command or an unknown or finished
    /// send. Returns the same code.
    ///
    /// Before the send's last byte went out, the send ends at once with `CANCELLED`. After
    /// it (the receiver may already have the whole message), the cancel is a request: the
    /// send's result is the receiver's answer, `CANCELLED` if the cancel reached it before
    /// it delivered the message, `NOERR` if the delivery came first. Either way both ends
    /// agree (docs/PROTOCOL.md, "Cancel").
    pub fn cancel_send(&mut self, id: SendId, cookie: u64) -> ErrorCode {
        let (phase, step) = match self.sends.outgoing.get(id) {
            Some(send) if send.kind != SendKind::Cmd => {
                (Some(send.phase), send_step(send.phase, SendInput::Cancel))
            }
            _ => (None, None),
        };
        let code = match step {
            Some(_) => ErrorCode::NOERR,
            None => ErrorCode::TRANSID_INVALID,
        };
        self.push_event(Event::CancelResult { id, code, cookie });
        match (step, phase) {
            (Some(Next::Done), _) => self.abandon(id, ErrorCode::CANCELLED),
            (Some(Next::To(Phase::Cancelling)), Some(Phase::Ending)) => self.ask_cancel(id),
            // Asked already: the receiver's answer is on its way.
            _ => {}
        }
        code
    }

    /// Cancels a send whose last byte went out: `CANCEL` goes to the receiver, which
    /// decides (its `RESULT` ends the send).
    fn ask_cancel(&mut self, id: SendId) {
        let Some(send) = self.sends.outgoing.get_mut(id) else {
            return;
        };
        send.advance(SendInput::Cancel);
        if let Some(wire_id) = send.wire_id {
            self.queue(Frame::Cancel(wire::Cancel {
                id: wire_id,
                code: ErrorCode::CANCELLED,
            }));
        }
    }

    /// Refuses an incoming buffer or file, before or during its arrival. The sender's
    /// result carries `code` (for example `REJECTED` or `ABORTED`); nothing more about the
    /// message is reported here.
    pub fn reject(&mut self, id: ReceiveId, code: ErrorCode) -> Result<(), ActionError> {
        self.answer(id, code, |msg| {
            msg.kind != SendKind::Cmd && msg.allows(ReceiveInput::Reject)
        })
    }

    /// The application has a received file where it keeps it (written, flushed, in its
    /// place): the sender's result is `NOERR`. A file is confirmed only this way, never by
    /// taking [`Event::FileReceived`], so a file the application could not keep is never
    /// reported delivered. So is a buffer, with [`ClientConfig::confirm_buffers`].
    pub fn accept_delivery(&mut self, id: ReceiveId) -> Result<(), ActionError> {
        self.settle(id, ErrorCode::NOERR)
    }

    /// The application could not keep a received file, or a buffer with
    /// [`ClientConfig::confirm_buffers`] (a full disk, say): the sender's result is `code`, or
    /// `FILE_WRITE_ERR` if `code` is a success.
    pub fn fail_delivery(&mut self, id: ReceiveId, code: ErrorCode) -> Result<(), ActionError> {
        let code = if code.is_success() {
            ErrorCode::FILE_WRITE_ERR
        } else {
            code
        };
        self.settle(id, code)
    }

    /// The answer to an [`Event::Offer`] that carried a resume key (with
    /// [`ClientConfig::resume_files`]): the application holds bytes `0..offset` of this
    /// file from an earlier attempt (0 for none), whose digest is `digest`
    /// ([`Digest::Crc32c`] of those bytes; of no bytes, 0). The file goes on from
    /// `offset`: its [`Event::FileData`] start there, and the digest checked at its end
    /// covers the whole file. The sender checks `digest` against its own source first.
    /// A buffer (with [`ClientConfig::resume_buffers`]) is answered this way only whole, with
    /// its size and digest, when the application has it already: it is then delivered with
    /// no bytes, for the application to confirm and drop; else with
    /// [`Client::resume_incoming_buffer`].
    pub fn resume_incoming(
        &mut self,
        id: ReceiveId,
        offset: u64,
        digest: Digest,
    ) -> Result<(), ActionError> {
        // A buffer may be answered this way only whole: delivered already to an
        // application whose sender never heard (no byte of it comes again).
        self.resume_at(id, offset, digest, |kind, size| {
            kind == SendKind::File || kind == SendKind::Buffer && offset == size
        })
    }

    /// The answer to an [`Event::Offer`] of a buffer that carried a resume key (with
    /// [`ClientConfig::resume_buffers`]): `held` is what the application kept of it from
    /// an earlier attempt ([`Event::ReceiveSuspended`]; empty for none). The buffer goes on
    /// from there and is delivered whole. `held` may also be the whole buffer, delivered
    /// already to an application whose sender never heard: then no byte comes again.
    pub fn resume_incoming_buffer(
        &mut self,
        id: ReceiveId,
        held: Bytes,
    ) -> Result<(), ActionError> {
        let mut digest = RunningDigest::new();
        digest.update(&held);
        let offset = held.len() as u64;
        self.resume_at(id, offset, digest.value(), |kind, _| {
            kind == SendKind::Buffer
        })?;
        if let Some(msg) = self.incoming.get_mut(id.0) {
            msg.data.extend_from_slice(&held);
        }
        Ok(())
    }

    /// Incoming transfer `id`, of a kind `kind_ok` allows, goes on from `offset`.
    fn resume_at(
        &mut self,
        id: ReceiveId,
        offset: u64,
        digest: Digest,
        kind_ok: impl Fn(SendKind, u64) -> bool,
    ) -> Result<(), ActionError> {
        let window = self.config.transfer_window;
        let msg = self
            .incoming
            .get_mut(id.0)
            .filter(|m| m.awaiting_resume && kind_ok(m.kind, m.size()))
            .ok_or(ActionError::UnknownId)?;
        // A sealed file goes on from a record's start, counted on the wire; held bytes
        // that end elsewhere cannot be continued, and it starts over.
        let (offset, digest, wire_digest) = match &mut msg.sealed {
            Some(s) if offset > s.file.size() => {
                let size = s.file.size();
                return Err(ActionError::ResumeBeyondSize { offset, size });
            }
            Some(s) => {
                let (plain, digest) = match sealed_file::wire_at(offset, s.file.size()) {
                    Some(_) => (offset, digest),
                    None => (0, Digest::OF_NOTHING),
                };
                s.number = plain / sealed_file::RECORD;
                let wire = sealed_file::wire_at(plain, s.file.size()).unwrap_or(0);
                (wire, digest, s.file.mask(digest, Masked::Resume))
            }
            None => (offset, digest, digest),
        };
        let size = msg.size();
        if msg.arrival.resume_at(offset).is_err() {
            return Err(ActionError::ResumeBeyondSize { offset, size });
        }
        msg.awaiting_resume = false;
        msg.digest = Some(RunningDigest::resume(digest));
        (msg.consumed, msg.reported) = (offset, offset);
        let grant = offset.saturating_add(window);
        let raise = grant > msg.granted;
        msg.granted = msg.granted.max(grant);
        self.queue(Frame::ResumeFrom(ResumeFrom {
            id: id.0,
            offset,
            digest: wire_digest,
        }));
        if raise {
            self.queue(Frame::Credit(Credit {
                id: id.0,
                max_offset: grant,
            }));
        }
        Ok(())
    }

    /// Ends a file (or a buffer the application confirms) that arrived verified and waits
    /// for the application's word.
    fn settle(&mut self, id: ReceiveId, code: ErrorCode) -> Result<(), ActionError> {
        let buffers = self.config.confirm_buffers;
        self.answer(id, code, |msg| {
            msg.allows(ReceiveInput::Answer)
                && (msg.kind == SendKind::File || msg.kind == SendKind::Buffer && buffers)
        })
    }

    /// The application's answer to incoming message `id`, if `may` allows one where the
    /// message stands: its sender's result is `code`, and the message is over here.
    fn answer(
        &mut self,
        id: ReceiveId,
        code: ErrorCode,
        may: impl Fn(&Incoming) -> bool,
    ) -> Result<(), ActionError> {
        if !self.incoming.get(id.0).is_some_and(|m| may(m)) {
            return Err(ActionError::UnknownId);
        }
        self.queue(Frame::Result(MessageResult { id: id.0, code }));
        self.drop_incoming(id.0);
        Ok(())
    }

    /// Closes the connection: a `CLOSE` goes out, every pending send fails with
    /// `CONNECTIONLOST` and incoming messages are dropped.
    pub fn close(&mut self) {
        self.shut(ErrorCode::NOERR, CloseReason::Local, true);
    }

    // ----- Inputs --------------------------------------------------------------------

    /// Bytes as the transport delivered them, split anywhere; they are copied.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        self.session.push_slice(bytes);
        self.decode_input(now);
    }

    /// Like [`Client::handle_input`], but takes the runtime's buffer: payloads are handed
    /// on as slices of it, not copied (see [`wire::Inbox`]).
    pub fn handle_input_buf(&mut self, now: Instant, bytes: BytesMut) {
        self.session.push_owned(bytes);
        self.decode_input(now);
    }

    fn decode_input(&mut self, now: Instant) {
        // A client talks to a relay, or to another client on a direct link.
        let any_role = |_: Role| true;
        loop {
            let frame = match self.session.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return self.violation(Violation::Decode(e)),
            };
            match self.session.admit(now, &frame, any_role) {
                Ok(false) => self.handle_frame(now, frame),
                Ok(true) => {}
                Err(violation) => return self.violation(violation),
            }
        }
    }

    /// What this client, made for a new connection, inherits of `old`, the client of the
    /// connection that was lost: the commands it delivered, so that one its sender sends
    /// again is confirmed and not delivered twice ([`SeenCmds`]). Call it before feeding
    /// the new connection's bytes.
    pub fn carry_from(&mut self, old: &mut Client) {
        self.seen = core::mem::take(&mut old.seen);
        self.senders = old.senders.take();
        if old.seal.is_some() {
            self.seal = old.seal.take();
            self.reannounce();
        }
    }

    /// Takes messages only from `senders` (`None`: from anyone, the default): a command,
    /// buffer or file from anyone else is refused as it arrives with `REJECTED`, before
    /// any of its bytes are taken, and the application hears nothing of it.
    pub fn accept_only_from(&mut self, senders: Option<BTreeSet<UserId>>) {
        self.senders = senders;
    }

    /// The passing of time: keepalive, idle timeout and send timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.session.is_closed() {
            return;
        }
        if now >= self.session.last_heard() + self.config.idle_timeout {
            self.shut(ErrorCode::SOCKETTIMEOUT, CloseReason::IdleTimeout, true);
            return;
        }
        if self.ping.is_none() && now >= self.session.last_heard() + self.config.keepalive_interval
        {
            let nonce = self.next_nonce;
            self.next_nonce += 1;
            self.ping = Some((nonce, now));
            self.queue(Frame::Ping(Ping { nonce }));
        }
        while let Some(&(deadline, id)) = self.sends.deadlines.first() {
            if deadline > now {
                break;
            }
            self.sends.deadlines.pop_first();
            self.abandon(id, ErrorCode::SOCKETTIMEOUT);
        }
    }

    /// The transport went away: pending sends fail with `CONNECTIONLOST`, incoming
    /// messages are dropped.
    pub fn handle_disconnect(&mut self) {
        self.shut(ErrorCode::CONNECTIONLOST, CloseReason::TransportLost, false);
    }

    // ----- Outputs -------------------------------------------------------------------

    /// Appends frames ready to go to `out`, up to `ClientConfig::transmit_batch` bytes (always
    /// at least one frame if any is ready), and returns the number of bytes appended.
    /// Control frames go first, then commands, then transfer frames round-robin.
    ///
    /// `out` is a `BytesMut` (every byte copied into one buffer) or a [`wire::Transmit`]
    /// (payloads shared with the application's data, for vectored writes).
    pub fn poll_transmit<S: FrameSink + ?Sized>(&mut self, out: &mut S) -> usize {
        match conn::transmit(out, self.config.transmit_batch, || self.next_frame()) {
            Ok(written) => written,
            Err(written) => {
                // Only values over 2^62 fail, and sends are checked against smaller caps.
                debug_assert!(false, "a frame of ours could not be encoded");
                self.shut(ErrorCode::UNKNOWERR, CloseReason::Unencodable, false);
                written
            }
        }
    }

    /// The next event, if any. Taking an event can let frames out (a delivery's `RESULT`,
    /// credit for consumed file bytes): drain [`Client::poll_transmit`] after events.
    pub fn poll_event(&mut self) -> Option<Event> {
        let (event, on_take) = self.events.pop_front()?;
        match on_take {
            OnTake::Nothing => {}
            OnTake::Deliver(wire_id) => {
                let taken = self
                    .incoming
                    .get(wire_id)
                    .filter(|m| m.allows(ReceiveInput::Take));
                if let Some(msg) = taken {
                    // The application has it: from now on a repeat is not delivered.
                    if let Some(once) = msg.once {
                        let (from, now) = (msg.from.clone(), self.session.last_heard());
                        self.seen.delivered(now, &from, once);
                    }
                    self.queue(Frame::Result(MessageResult {
                        id: wire_id,
                        code: ErrorCode::NOERR,
                    }));
                    self.drop_incoming(wire_id);
                }
            }
            OnTake::Consume(wire_id, len) => self.consume(wire_id, len),
            OnTake::ConsumeRecord(wire_id, len) => self.consume_transfer(wire_id, len),
        }
        Some(event)
    }

    /// The next event about one of our own sends (see [`Event::send_id`]), taken ahead of
    /// any event about incoming messages or the connection; in order among themselves.
    /// Taking one confirms nothing and lets no frame out, so a runtime can hand results and
    /// progress to whoever waits for them while the application is not reading its other
    /// events (whose taking is what confirms deliveries). [`Client::poll_event`] returns
    /// the same events in the order they came, for runtimes that keep one queue.
    pub fn poll_send_event(&mut self) -> Option<Event> {
        let at = self
            .events
            .iter()
            .position(|(e, _)| e.send_id().is_some())?;
        self.events.remove(at).map(|(event, _)| event)
    }

    /// The drive loop in one call: an event, else bytes to write (appended to `out`), else
    /// the time to wait for. Call it after any input until it gives [`Output::Timeout`] (or
    /// [`Output::Closed`]); nothing can then be pending, so it cannot be called in a wrong
    /// order. `out` may gather the bytes of several calls: write them before waiting. (The finer calls below, `poll_transmit`, `poll_event` and `poll_timeout`,
    /// are what it is made of, for runtimes that must take events only when they have room
    /// for them.)
    pub fn poll_output<S: FrameSink + ?Sized>(&mut self, out: &mut S) -> Output {
        event::poll_output(self, out)
    }

    /// When [`Client::handle_timeout`] should next be called, or `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.session.is_closed() {
            return None;
        }
        let idle = self.session.last_heard() + self.config.idle_timeout;
        let keepalive = match self.ping {
            None => self.session.last_heard() + self.config.keepalive_interval,
            Some(_) => Instant::MAX,
        };
        let send = self
            .sends
            .deadlines
            .first()
            .map_or(Instant::MAX, |(t, _)| *t);
        Some(idle.min(keepalive).min(send))
    }

    // ----- State ---------------------------------------------------------------------

    /// `true` once the connection is over; the runtime closes the transport after the last
    /// `poll_transmit`.
    pub fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    /// Why the connection ended (`NOERR` for a normal close), once it did: the code of its
    /// [`Event::Closed`], known before that event is taken.
    pub fn close_code(&self) -> Option<ErrorCode> {
        self.closed_with
    }

    /// `true` once our login was accepted.
    pub fn is_logged_in(&self) -> bool {
        matches!(self.login, LoginState::Accepted(_))
    }

    /// The last round-trip time measured by `PING`/`PONG`.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// What incoming message `id` carries, while it is arriving or waits for the
    /// application's answer; `None` once it is over.
    pub fn incoming_kind(&self, id: ReceiveId) -> Option<SendKind> {
        self.incoming.get(id.0).map(|msg| msg.kind)
    }

    /// Whether send `id` is reading its own file again to check a resume: the
    /// [`Event::FileRead`]s it asks for now re-read bytes its receiver holds already, and
    /// need not be paced like bytes that go out.
    pub fn is_checking_resume(&self, id: SendId) -> bool {
        self.sends
            .outgoing
            .get(id)
            .is_some_and(|send| matches!(send.resume, Resume::Checking { .. }))
    }

    /// Sends not yet finished.
    pub fn pending_sends(&self) -> usize {
        self.sends.outgoing.len()
    }

    /// Bytes the client holds on its own account: partial incoming commands and buffers,
    /// file bytes supplied but not sent, file bytes in events not yet taken, and received
    /// bytes not yet decoded. It stays within the configured windows and caps, whatever the
    /// peer does. (Computed by a walk over the messages in progress.)
    pub fn buffered_bytes(&self) -> u64 {
        let incoming: u64 = self.incoming.values().map(|m| m.data.len() as u64).sum();
        let outgoing: u64 = self.sends.outgoing.values().map(|s| s.held()).sum();
        let events: u64 = self
            .events
            .iter()
            .map(|(e, _)| match e {
                Event::FileData { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum();
        incoming + outgoing + events + self.session.input_len() as u64
    }

    // ----- Internals: sends ----------------------------------------------------------

    /// The lower of our own cap and the peer's.
    fn cap(&self, own: u64, peer: impl Fn(&Hello) -> u64) -> u64 {
        self.session.peer().map_or(own, |p| own.min(peer(p)))
    }

    /// A user id as the user gave it, checked against the rules and our length limit.
    fn user_id(&self, id: &str) -> Result<UserId, SendError> {
        let id = UserId::new(id).map_err(SendError::InvalidTarget)?;
        let (len, max) = (id.len() as u64, self.config.limits.max_user_id_len);
        if len > max {
            return Err(SendError::TargetTooLong { len, max });
        }
        Ok(id)
    }

    fn check_target(&self, to: &str) -> Result<UserId, SendError> {
        if self.session.is_closed() {
            return Err(SendError::Closed);
        }
        let LoginState::Accepted(_) = self.login else {
            return Err(SendError::NotLoggedIn);
        };
        let to = self.user_id(to)?;
        if let Some(hello) = self.session.peer() {
            if hello.role == Role::Client && self.session.user() != Some(&to) {
                return Err(SendError::NotThePeer);
            }
        }
        Ok(to)
    }

    fn enqueue(&mut self, now: Instant, send: Outgoing) -> Result<SendId, SendError> {
        if self.sends.waiting() >= self.config.max_queued_sends {
            return Err(SendError::QueueFull);
        }
        let deadline = self.config.send_timeout.map(|timeout| now + timeout);
        Ok(self.sends.enqueue(send, deadline))
    }

    /// Ends a send of ours before its `RESULT`: the peer is told with `CANCEL` if it knows
    /// the send, and the result carries `code`.
    fn abandon(&mut self, id: SendId, code: ErrorCode) {
        let told = |s: &Outgoing| s.phase == Phase::Cancelling;
        if let Some(wire_id) = self
            .sends
            .outgoing
            .get(id)
            .filter(|s| !told(s))
            .and_then(|s| s.wire_id)
        {
            self.queue(Frame::Cancel(wire::Cancel { id: wire_id, code }));
        }
        self.finish_send(id, code);
    }

    /// The one place a send ends: it is forgotten and its one result event emitted.
    fn finish_send(&mut self, id: SendId, code: ErrorCode) {
        let Some(send) = self.sends.outgoing.remove(id) else {
            return;
        };
        // A sealed message its receiver could not open may have been sealed to a key the
        // receiver no longer has: its key is asked again, and a different one is told
        // (`Event::PeerKey` with `KeyStatus::Changed`), not trusted.
        if code == ErrorCode::SEAL_BROKEN && self.seal.is_some() && self.peer_has_keys() {
            self.query_key(send.to.clone());
        }
        if let Some(wire_id) = send.wire_id {
            self.sends.by_wire.remove(wire_id);
        }
        if send.phase != Phase::Waiting {
            debug_assert!(
                self.sends.cmds_in_flight + self.sends.transfers_open > 0,
                "a slot never taken"
            );
            match send.kind {
                SendKind::Cmd => {
                    self.sends.cmds_in_flight = self.sends.cmds_in_flight.saturating_sub(1)
                }
                _ => self.sends.transfers_open = self.sends.transfers_open.saturating_sub(1),
            }
        }
        if let Some(deadline) = send.deadline {
            self.sends.deadlines.remove(&(deadline, id));
        }
        if let Source::File { reading: true, .. } = send.source {
            // Its read request may still wait in the queue: nothing about the send may
            // follow its result, and the application need not answer a dead request.
            self.events
                .retain(|(e, _)| !matches!(e, Event::FileRead { id: r, .. } if *r == id));
        }
        if code.is_success() && send.kind != SendKind::Cmd && send.reported < send.size {
            let total = send.shown(send.size);
            let (sent, cookie) = (total, send.cookie);
            self.push_event(Event::Progress {
                id,
                sent,
                total,
                cookie,
            });
        }
        let (kind, cookie) = (send.kind, send.cookie);
        self.push_event(Event::SendResult {
            id,
            kind,
            code,
            cookie,
        });
    }

    /// The next frame to write, in the order control, commands, transfers.
    fn next_frame(&mut self) -> Option<Frame> {
        if let Some(frame) = self.control.pop_front() {
            return Some(frame);
        }
        if self.session.is_closed() {
            return None;
        }
        // Nothing waiting or ready (the usual case between events): no frame.
        if self.sends.is_idle() || !self.is_logged_in() {
            return None;
        }
        let peer = self.session.peer()?.clone();
        if let Some(frame) = self.next_cmd_frame(&peer) {
            return Some(frame);
        }
        self.next_transfer_frame(&peer)
    }

    fn next_cmd_frame(&mut self, peer: &Hello) -> Option<Frame> {
        let sending = &mut self.sends.cmd_sending;
        start_waiting(
            &mut self.sends.cmd_waiting,
            &mut self.sends.outgoing,
            &mut self.sends.cmds_in_flight,
            peer.max_cmds_in_flight,
            |id, _| sending.push_back(id),
        );
        loop {
            let id = *self.sends.cmd_sending.front()?;
            let Some(send) = self.sends.outgoing.get(id) else {
                self.sends.cmd_sending.pop_front();
                continue;
            };
            let first = send.wire_id.is_none();
            // Command bytes count against the connection credit, as data does.
            let conn_room = self.session.send.room();
            if conn_room == 0 && send.sent < send.size {
                return None; // CONN_CREDIT lets it go on
            }
            let room =
                wire::payload_room(peer.max_frame_size, first.then_some(&send.to)).min(conn_room);
            let data = send.bytes_at_sent(room).unwrap_or_default();
            self.session.send.spend(data.len() as u64);
            let (offset, total_len, to, once) = (send.sent, send.size, send.to.clone(), send.once);
            let wire_id = match send.wire_id {
                Some(w) => w,
                None => self.sends.by_wire.allocate(id),
            };
            let send = self.sends.outgoing.get_mut(id)?;
            send.wire_id = Some(wire_id);
            send.sent += data.len() as u64;
            if send.sent >= send.size {
                send.advance(SendInput::LastFrame);
                self.sends.cmd_sending.pop_front();
            }
            return Some(if first {
                Frame::Cmd(Cmd {
                    id: wire_id,
                    peer: to,
                    once,
                    total_len,
                    data,
                })
            } else {
                Frame::CmdCont(CmdCont {
                    id: wire_id,
                    offset,
                    data,
                })
            });
        }
    }

    fn next_transfer_frame(&mut self, peer: &Hello) -> Option<Frame> {
        let ready = &mut self.sends.ready;
        start_waiting(
            &mut self.sends.transfer_waiting,
            &mut self.sends.outgoing,
            &mut self.sends.transfers_open,
            peer.max_transfers,
            |id, send| queue_ready(ready, id, send),
        );
        while let Some(id) = self.sends.ready.pop_front() {
            let Some(send) = self.sends.outgoing.get_mut(id) else {
                continue;
            };
            send.queued = false;
            if send.phase != Phase::Sending {
                continue;
            }
            if let Some(frame) = self.transfer_frame(id, peer) {
                return Some(frame);
            }
        }
        None
    }

    /// The next frame of transfer `id`, or `None` if it must wait (for credit or file
    /// bytes); re-queues it when it has more to send.
    fn transfer_frame(&mut self, id: SendId, peer: &Hello) -> Option<Frame> {
        let wire_id = match self.sends.outgoing.get(id)?.wire_id {
            Some(w) => w,
            None => {
                let wire_id = self.sends.by_wire.allocate(id);
                let send = self.sends.outgoing.get_mut(id)?;
                send.wire_id = Some(wire_id);
                send.credit = peer.transfer_window;
                let kind = if send.kind == SendKind::File {
                    TransferKind::File
                } else {
                    TransferKind::Buffer
                };
                let resume_key = send
                    .resume_key
                    .filter(|_| peer.capabilities.contains(Capabilities::RESUME));
                if resume_key.is_some() {
                    send.resume = Resume::Asked; // no DATA until the receiver answers
                }
                let open = Open {
                    id: wire_id,
                    kind,
                    peer: send.to.clone(),
                    size: send.size,
                    name: send.name.clone(),
                    resume_key,
                    seal: send.sealed.as_ref().map(|s| Box::new(s.header.clone())),
                };
                self.sends.make_ready(id);
                return Some(Frame::Open(open));
            }
        };
        if !self.resume_settled(id) {
            return None; // RESUME_FROM, or the source's bytes for the check, re-queue it
        }
        let conn_room = self.session.send.room();
        let send = self.sends.outgoing.get_mut(id)?;
        if send.sent >= send.size {
            send.advance(SendInput::LastFrame);
            send.source = Source::Memory(Bytes::new());
            let digest = send.digest.take().map(|d| d.finish())?;
            let digest = match &send.sealed {
                Some(s) => s.file.mask(digest, Masked::End),
                None => digest,
            };
            return Some(Frame::End(End {
                id: wire_id,
                size: send.size,
                digest,
            }));
        }
        let credit_room = send.credit_room();
        if credit_room == 0 {
            return None; // CREDIT re-queues it
        }
        if conn_room == 0 {
            self.sends.conn_blocked.push_back(id);
            return None;
        }
        let room = credit_room
            .min(conn_room)
            .min(wire::payload_room(peer.max_frame_size, None));
        let Some(payload) = send.bytes_at_sent(room) else {
            // A file without the bytes in hand: ask for them, up to the credit.
            let (offset, most) = send.wanted();
            // A sealed file is read a record at a time at least.
            let read_size = match send.sealed {
                Some(_) => self.config.file_read_size.max(sealed_file::RECORD),
                None => self.config.file_read_size,
            };
            if let Source::File { reading, .. } = &mut send.source {
                if !*reading {
                    *reading = true;
                    let len = most.min(read_size);
                    self.push_event(Event::FileRead { id, offset, len });
                }
            }
            return None; // supply_file_data re-queues it
        };
        let offset = send.sent;
        send.sent += payload.len() as u64;
        // A sealed file's digest is of its plain bytes, taken as they were read.
        if let Some(d) = send.digest.as_mut().filter(|_| send.sealed.is_none()) {
            d.update(&payload);
        }
        self.session.send.spend(payload.len() as u64);
        self.sends.make_ready(id);
        Some(Frame::Data(Data {
            id: wire_id,
            offset,
            payload,
        }))
    }

    /// Whether send `id` may send data: not waiting for its receiver's `RESUME_FROM`, nor
    /// checking its source against the receiver's bytes. While it checks, it asks for its
    /// source's bytes up to the receiver's offset and digests them; at the offset it
    /// continues from there if the digests match, and ends with `DIGEST_MISMATCH` if not.
    fn resume_settled(&mut self, id: SendId) -> bool {
        let read_size = self.config.file_read_size;
        let Some(send) = self.sends.outgoing.get_mut(id) else {
            return false;
        };
        let Resume::Checking {
            offset,
            at,
            running,
            ..
        } = &mut send.resume
        else {
            return matches!(send.resume, Resume::Settled);
        };
        if let Source::File { piece, reading, .. } = &mut send.source {
            running.update(piece);
            *at += piece.len() as u64;
            *piece = Bytes::new();
            if *at < *offset {
                if !*reading {
                    *reading = true;
                    let (at, len) = (*at, (*offset - *at).min(read_size));
                    self.push_event(Event::FileRead {
                        id,
                        offset: at,
                        len,
                    });
                }
                return false; // supply_file_data re-queues it
            }
        }
        let Resume::Checking {
            offset,
            digest,
            running,
            ..
        } = core::mem::replace(&mut send.resume, Resume::Settled)
        else {
            return false;
        };
        if running.value() != digest {
            self.abandon(id, ErrorCode::DIGEST_MISMATCH);
            return false;
        }
        // A sealed file goes on from that record on the wire.
        let wire = match &mut send.sealed {
            Some(s) => {
                (s.sealed_to, s.pending) = (offset, BytesMut::new());
                sealed_file::wire_at(offset, s.file.size()).unwrap_or(0)
            }
            None => offset,
        };
        send.sent = wire;
        send.reported = wire;
        send.digest = Some(running);
        if let Source::File { offset: at, .. } = &mut send.source {
            *at = wire;
        }
        let cookie = send.cookie;
        self.push_event(Event::Resumed { id, offset, cookie });
        true
    }

    /// The receiver's answer to our `OPEN` with a resume key.
    fn on_resume_from(&mut self, r: ResumeFrom) {
        let Some(id) = self.send_of_wire(r.id) else {
            return;
        };
        let Some(send) = self.sends.outgoing.get_mut(id) else {
            return;
        };
        if !matches!(send.resume, Resume::Asked) || r.offset > send.size {
            self.violation(Violation::OutOfPlace);
            return;
        }
        // A sealed file's receiver states a record's start, and its digest masked.
        let (offset, digest) = match &send.sealed {
            Some(s) => match sealed_file::plain_at(r.offset, s.file.size()) {
                Some(plain) => (plain, s.file.mask(r.digest, Masked::Resume)),
                None => {
                    self.violation(Violation::OutOfPlace);
                    return;
                }
            },
            None => (r.offset, r.digest),
        };
        send.resume = match offset {
            0 => Resume::Settled,
            offset => {
                // A buffer is checked at once; a file is read again (`resume_settled`).
                let mut running = RunningDigest::new();
                let at = match &send.source {
                    Source::Memory(data) => {
                        running.update(
                            &data[..usize::try_from(offset)
                                .unwrap_or(usize::MAX)
                                .min(data.len())],
                        );
                        offset
                    }
                    Source::File { .. } => 0,
                };
                Resume::Checking {
                    offset,
                    digest,
                    at,
                    running,
                }
            }
        };
        self.sends.make_ready(id);
    }

    // ----- Internals: receiving ------------------------------------------------------

    /// Every frame's handling, in one place.
    /// (The handshake, `HELLO` included, is the session's: [`Session::next_frame`].)
    fn handle_frame(&mut self, now: Instant, frame: Frame) {
        let direct = self.session.peer().is_some_and(|p| p.role == Role::Client);
        match frame {
            // Taken by the session; never comes here.
            Frame::Hello(_) => debug_assert!(false, "HELLO past the session"),
            // A peer on a direct link logs in to us: accepted at once.
            Frame::Login(login) if direct => {
                if let Err(violation) = self.session.begin_login(login.user.clone()) {
                    self.violation(violation);
                    return;
                }
                self.session.accept_login();
                self.queue(Frame::LoginResult(LoginResult {
                    code: ErrorCode::NOERR,
                }));
                self.push_event(Event::PeerLogin { user: login.user });
            }
            Frame::Login(_) => self.violation(Violation::LoginFromRelay),
            Frame::LoginResult(r) => self.on_login_result(r.code),
            Frame::Ping(p) => self.queue(Frame::Pong(p)),
            Frame::Pong(p) => {
                if let Some((nonce, sent)) = self.ping {
                    if nonce == p.nonce {
                        self.rtt = Some(now - sent);
                        self.ping = None;
                    }
                }
            }
            Frame::Close(c) => self.shut(c.code, CloseReason::Peer(c.reason), false),
            // A relay grants beyond the window its HELLO announced (it starts small until
            // login), so the grant is not held to it here.
            Frame::ConnCredit(c) => {
                if self.session.send.raise(c.max_data, None) == Ok(true) {
                    while let Some(id) = self.sends.conn_blocked.pop_front() {
                        self.sends.make_ready(id);
                    }
                }
            }
            Frame::Credit(c) => self.on_credit(c),
            Frame::Result(r) => self.on_result(r),
            Frame::Cmd(cmd) => self.on_cmd(cmd),
            Frame::CmdCont(cont) => self.on_cmd_cont(cont),
            Frame::Open(open) => self.on_open(open),
            Frame::ResumeFrom(r) => self.on_resume_from(r),
            Frame::Data(data) => self.on_data(data),
            Frame::End(end) => self.on_end(end),
            Frame::Cancel(c) => {
                // Not answered yet, so not delivered: the cancel wins, and the sender,
                // which may be waiting for our word, hears it.
                if self.known_incoming(c.id) {
                    self.fail_incoming(c.id, c.code);
                }
            }
            // On a direct link the peer asks us for our own key; of anyone else we know
            // none.
            Frame::KeyQuery(q) => {
                let me = matches!(&self.login, LoginState::Accepted(me) if *me == q.user);
                let key = self.identity().filter(|_| me);
                self.queue(Frame::Key(Key { user: q.user, key }));
            }
            Frame::Key(key) => self.on_key(key),
        }
    }

    fn on_login_result(&mut self, code: ErrorCode) {
        let LoginState::Pending(user) = &self.login else {
            self.violation(Violation::UnaskedLoginResult);
            return;
        };
        if code.is_success() {
            self.login = LoginState::Accepted(user.clone());
        } else {
            self.login = LoginState::None;
        }
        self.push_event(Event::LoginResult { code });
    }

    /// Our send that wire id `wire_id` names; `None` for one ended (a frame that crossed
    /// our cancel) or never sent (the connection is closed).
    fn send_of_wire(&mut self, wire_id: MessageId) -> Option<SendId> {
        match self.sends.by_wire.find(wire_id, Violation::NeverSent) {
            Ok(id) => id.copied(),
            Err(violation) => {
                self.violation(violation);
                None
            }
        }
    }

    fn on_credit(&mut self, c: Credit) {
        let Some(id) = self.send_of_wire(c.id) else {
            return;
        };
        let window = self.session.peer().map_or(0, |p| p.transfer_window);
        let step = self.config.progress_step;
        let Some(send) = self.sends.outgoing.get_mut(id) else {
            return;
        };
        if c.max_offset <= send.credit {
            return;
        }
        send.credit = c.max_offset;
        let acked = c
            .max_offset
            .saturating_sub(window)
            .min(send.size)
            .min(send.sent);
        let progress =
            (acked >= send.reported.saturating_add(step) && acked < send.size).then(|| {
                send.reported = acked;
                Event::Progress {
                    id,
                    sent: send.shown(acked),
                    total: send.shown(send.size),
                    cookie: send.cookie,
                }
            });
        if let Some(event) = progress {
            self.push_event(event);
        }
        self.sends.make_ready(id);
    }

    fn on_result(&mut self, r: MessageResult) {
        let Some(id) = self.send_of_wire(r.id) else {
            return;
        };
        let complete = self
            .sends
            .outgoing
            .get(id)
            .is_some_and(|s| matches!(s.phase, Phase::Ending | Phase::Cancelling));
        if r.code.is_success() && !complete {
            self.violation(Violation::EarlySuccess);
            return;
        }
        self.finish_send(id, r.code);
    }

    /// Checks a new message's id and finds who it is from; answers the message itself
    /// when it cannot be taken. `None` means it was refused (or the connection closed).
    fn take_new_message(
        &mut self,
        id: MessageId,
        peer_field: &UserId,
        kind: SendKind,
        sealed_file: bool,
    ) -> Option<UserId> {
        if let Err(violation) = self.incoming.claim(id) {
            self.violation(violation);
            return None;
        }
        let refuse = |code| Frame::Result(MessageResult { id, code });
        let direct = self.session.peer().is_some_and(|p| p.role == Role::Client);
        let from = match self.session.user() {
            _ if !direct => peer_field.clone(),
            None => {
                self.violation(Violation::NotLoggedIn);
                return None;
            }
            Some(user) => {
                let user = user.clone();
                if self.login.user() != Some(peer_field) {
                    self.queue(refuse(ErrorCode::SENDDATA_TARGETINVALID));
                    return None;
                }
                user
            }
        };
        if self.senders.as_ref().is_some_and(|s| !s.contains(&from)) {
            self.queue(refuse(ErrorCode::REJECTED));
            return None;
        }
        // Where sealing is on, no file comes in the clear; a sealed file's header only
        // opens where sealing is on, and only a file has one.
        let unsealed = match (self.seal.is_some(), sealed_file) {
            (true, false) if kind == SendKind::File => Some(ErrorCode::SEAL_REQUIRED),
            (false, true) => Some(ErrorCode::NO_PEER_KEY),
            (true, true) if kind != SendKind::File => Some(ErrorCode::SEAL_BROKEN),
            _ => None,
        };
        if let Some(code) = unsealed {
            self.queue(refuse(code));
            self.push_event(Event::Refused { from, kind, code });
            return None;
        }
        let (count, cap) = match kind {
            SendKind::Cmd => (self.cmds_arriving, self.config.max_cmds_in_flight),
            _ => (self.transfers_arriving, self.config.max_transfers),
        };
        if count >= cap {
            self.queue(refuse(ErrorCode::LIMIT_EXCEEDED));
            return None;
        }
        match kind {
            SendKind::Cmd => self.cmds_arriving += 1,
            _ => self.transfers_arriving += 1,
        }
        Some(from)
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        if !self.receive_cmd_bytes(cmd.data.len() as u64) {
            return;
        }
        let Some(from) = self.take_new_message(cmd.id, &cmd.peer, SendKind::Cmd, false) else {
            return;
        };
        let first = cmd.data.len() as u64;
        let mut msg = Incoming::new(SendKind::Cmd, from, cmd.total_len, first, 0);
        msg.once = cmd.once;
        msg.data.extend_from_slice(&cmd.data);
        self.incoming.insert(cmd.id, Box::new(msg));
        self.cmd_progress(cmd.id);
    }

    fn on_cmd_cont(&mut self, cont: CmdCont) {
        if !self.receive_cmd_bytes(cont.data.len() as u64) || !self.known_incoming(cont.id) {
            return;
        }
        let Some(msg) = self.incoming.get_mut(cont.id) else {
            return;
        };
        let len = cont.data.len() as u64;
        if let Err(violation) = msg.arrival.bytes(true, cont.offset, len, u64::MAX) {
            self.violation(violation);
            return;
        }
        msg.data.extend_from_slice(&cont.data);
        self.cmd_progress(cont.id);
    }

    /// Delivers a command once all of it is in.
    fn cmd_progress(&mut self, id: MessageId) {
        let Some(msg) = self.incoming.get_mut(id) else {
            return;
        };
        if !msg.is_delivered() {
            return;
        }
        // Opened first: its identity is bound to the seal, so a repeat is judged on what
        // its sender said.
        let once = msg.once;
        let Some(data) = self.open_incoming(id, Binding::Cmd(once)) else {
            return;
        };
        let Some(msg) = self.incoming.get_mut(id) else {
            return;
        };
        // A command with an identity is delivered once across connections: a repeat is
        // confirmed without an event, one of a forgotten stream refused (`seen.rs`).
        if let Some(once) = msg.once {
            let now = self.session.last_heard();
            let code = match self.seen.check(now, &msg.from, once) {
                Verdict::New => None,
                Verdict::Repeat => Some(ErrorCode::NOERR),
                Verdict::Forgotten => Some(ErrorCode::REPEAT_FORGOTTEN),
            };
            if let Some(code) = code {
                self.queue(Frame::Result(MessageResult { id, code }));
                self.drop_incoming(id);
                return;
            }
        }
        let event = Event::CmdReceived {
            id: ReceiveId(id),
            from: msg.from.clone(),
            data,
            once: msg.once,
        };
        self.events.push_back((event, OnTake::Deliver(id)));
    }

    fn on_open(&mut self, open: Open) {
        let kind = match open.kind {
            TransferKind::Buffer => SendKind::Buffer,
            TransferKind::File => SendKind::File,
        };
        let sealed = open.seal.is_some();
        let Some(from) = self.take_new_message(open.id, &open.peer, kind, sealed) else {
            return;
        };
        let (sealed, name, size) = match sealed {
            true => match self.open_file_header(&from, &open) {
                Ok((arrival, header)) => (Some(Box::new(arrival)), header.name, header.size),
                Err(code) => {
                    // Counted as arriving by `take_new_message`: ended the one way.
                    let msg = Incoming::new(kind, from, open.size, 0, 0);
                    self.incoming.insert(open.id, Box::new(msg));
                    self.queue(Frame::Result(MessageResult { id: open.id, code }));
                    self.drop_incoming(open.id);
                    return;
                }
            },
            false => (None, open.name, open.size),
        };
        let window = self.config.transfer_window;
        let mut msg = Incoming::new(kind, from.clone(), open.size, 0, window);
        msg.sealed = sealed;
        // A resume key is the application's to answer if it keeps partial files; else
        // nothing is held of it, said at once.
        let keeps = match kind {
            SendKind::File => self.config.resume_files,
            _ => self.config.resume_buffers,
        };
        let resume_key = open.resume_key.filter(|_| keeps);
        msg.resume_key = resume_key;
        msg.offered_key = open.resume_key;
        msg.awaiting_resume = resume_key.is_some();
        if open.resume_key.is_some() && resume_key.is_none() {
            self.queue(Frame::ResumeFrom(ResumeFrom {
                id: open.id,
                offset: 0,
                digest: Digest::OF_NOTHING,
            }));
        }
        if kind == SendKind::Buffer {
            // The whole buffer is held in the end anyway (its size is within our cap, checked
            // by the decoder); reserving it now saves a copy per doubling. The pages are
            // committed only as the bytes arrive.
            msg.data.reserve(usize::try_from(open.size).unwrap_or(0));
        }
        self.incoming.insert(open.id, Box::new(msg));
        let event = Event::Offer {
            id: ReceiveId(open.id),
            from,
            kind,
            name,
            size,
            resume_key,
        };
        self.push_event(event);
    }

    /// `len` message bytes arrived: within the connection credit we granted, or the peer
    /// is closed (`false`).
    fn count_received(&mut self, len: u64) -> bool {
        if let Err(violation) = self.session.recv.count(len) {
            self.violation(violation);
            return false;
        }
        true
    }

    /// Command bytes arrived. They are counted against the connection credit and given
    /// back at once: what commands hold here is bounded by `max_cmds_in_flight`, and a
    /// grant that waited for a whole command could wait forever on partial commands that
    /// together fill the window.
    fn receive_cmd_bytes(&mut self, len: u64) -> bool {
        if !self.count_received(len) {
            return false;
        }
        self.consume_conn(len);
        true
    }

    fn on_data(&mut self, data: Data) {
        let len = data.payload.len() as u64;
        if !self.count_received(len) {
            return;
        }
        if !self.known_incoming(data.id) || !self.incoming.contains(data.id) {
            self.consume_conn(len); // a message we already ended: the bytes are dropped
            return;
        }
        let step = self.config.progress_step;
        let Some(msg) = self.incoming.get_mut(data.id) else {
            return;
        };
        if msg.awaiting_resume {
            self.violation(Violation::OutOfPlace); // DATA before our RESUME_FROM
            return;
        }
        if let Err(violation) = msg.arrival.bytes(false, data.offset, len, msg.granted) {
            self.violation(violation);
            return;
        }
        if msg.sealed.is_some() {
            self.sealed_data(data.id, data.payload);
            return;
        }
        if let Some(d) = msg.digest.as_mut() {
            d.update(&data.payload);
        }
        let (end, size) = (msg.arrival.received(), msg.size());
        let progress = (end >= msg.reported.saturating_add(step) && end < size).then(|| {
            msg.reported = end;
            Event::ReceiveProgress {
                id: ReceiveId(data.id),
                received: end,
                total: size,
            }
        });
        let kind = msg.kind;
        if kind == SendKind::Buffer {
            msg.data.extend_from_slice(&data.payload);
        }
        let digest = msg
            .digest
            .as_ref()
            .map_or(Digest::OF_NOTHING, RunningDigest::value);
        if let Some(event) = progress {
            self.push_event(event);
        }
        match kind {
            SendKind::File => {
                let event = Event::FileData {
                    id: ReceiveId(data.id),
                    offset: data.offset,
                    data: data.payload,
                    digest,
                };
                self.events
                    .push_back((event, OnTake::Consume(data.id, len)));
            }
            _ => self.consume(data.id, len),
        }
    }

    /// A sealed file's `DATA`: its bytes wait for the rest of their record (their
    /// connection credit given back at once: what waits is at most a record and a frame
    /// per file, and files arriving are bounded by `max_transfers`); each whole record is
    /// opened and handed over, one that does not open ends the file `SEAL_BROKEN`.
    fn sealed_data(&mut self, id: MessageId, payload: Bytes) {
        self.consume_conn(payload.len() as u64);
        let step = self.config.progress_step;
        let Some(msg) = self.incoming.get_mut(id) else {
            return;
        };
        let (end, size) = (msg.arrival.received(), msg.size());
        let Some(sealed) = msg.sealed.as_mut() else {
            return;
        };
        sealed.record.extend_from_slice(&payload);
        let progress = (end >= msg.reported.saturating_add(step) && end < size).then(|| {
            msg.reported = end;
            Event::ReceiveProgress {
                id: ReceiveId(id),
                received: sealed.shown(end),
                total: sealed.file.size(),
            }
        });
        if let Some(event) = progress {
            self.push_event(event);
        }
        loop {
            let Some(msg) = self.incoming.get_mut(id) else {
                return;
            };
            let Some(sealed) = msg.sealed.as_mut() else {
                return;
            };
            let Some((number, offset, wire)) = sealed.next_record(end) else {
                return;
            };
            let wire_len = wire.len() as u64;
            let Some(data) = sealed.file.open_record(number, wire) else {
                let (from, code) = (msg.from.clone(), ErrorCode::SEAL_BROKEN);
                let kind = SendKind::File;
                self.push_event(Event::Refused { from, kind, code });
                self.fail_incoming(id, code);
                return;
            };
            let digest = match msg.digest.as_mut() {
                Some(d) => {
                    d.update(&data);
                    d.value()
                }
                None => Digest::OF_NOTHING,
            };
            let event = Event::FileData {
                id: ReceiveId(id),
                offset,
                data,
                digest,
            };
            self.events
                .push_back((event, OnTake::ConsumeRecord(id, wire_len)));
        }
    }

    fn on_end(&mut self, end: End) {
        if !self.known_incoming(end.id) {
            return;
        }
        let Some(msg) = self.incoming.get_mut(end.id) else {
            return;
        };
        if let Err(violation) = msg.arrival.end() {
            self.violation(violation);
            return;
        }
        // A sealed file's digest is of its plain bytes, masked on the wire.
        let digest = match &msg.sealed {
            Some(s) => s.file.mask(end.digest, Masked::End),
            None => end.digest,
        };
        let code = if end.size != msg.size() || msg.arrival.received() != msg.size() {
            ErrorCode::SIZE_MISMATCH
        } else if msg.digest.take().map(|d| d.finish()) != Some(digest) {
            ErrorCode::DIGEST_MISMATCH
        } else {
            ErrorCode::NOERR
        };
        if !code.is_success() {
            self.fail_incoming(end.id, code);
            return;
        }
        let size = match &msg.sealed {
            Some(s) => s.file.size(),
            None => msg.size(),
        };
        let (id, from) = (ReceiveId(end.id), msg.from.clone());
        let progress = (msg.reported < size).then(|| {
            msg.reported = size;
            Event::ReceiveProgress {
                id,
                received: size,
                total: size,
            }
        });
        let kind = msg.kind;
        let data = match kind {
            SendKind::Buffer => {
                let binding = Binding::Buffer(msg.offered_key);
                match self.open_incoming(end.id, binding) {
                    Some(data) => data,
                    None => return,
                }
            }
            _ => Bytes::new(),
        };
        // A buffer is delivered when the application takes it (unless it confirms buffers
        // itself); a file when the application says it has kept it (`accept_delivery`).
        let (event, on_take) = match kind {
            SendKind::Buffer => (
                Event::BufferReceived { id, from, data },
                match self.config.confirm_buffers {
                    true => OnTake::Nothing,
                    false => OnTake::Deliver(end.id),
                },
            ),
            _ => (Event::FileReceived { id, from, size }, OnTake::Nothing),
        };
        if let Some(progress) = progress {
            self.push_event(progress);
        }
        self.events.push_back((event, on_take));
    }

    /// `true` if `id` names a message of the peer's that is still arriving. An id already
    /// ended is `false` (its late frames are dropped); one never opened closes the
    /// connection.
    fn known_incoming(&mut self, id: MessageId) -> bool {
        match self.incoming.find(id, Violation::NeverOpened) {
            Ok(found) => found.is_some(),
            Err(violation) => {
                self.violation(violation);
                false
            }
        }
    }

    /// The application took `len` bytes of message `id`: grant credit as needed.
    fn consume(&mut self, id: MessageId, len: u64) {
        self.consume_conn(len);
        self.consume_transfer(id, len);
    }

    /// `len` bytes of transfer `id` were taken: its credit grows.
    fn consume_transfer(&mut self, id: MessageId, len: u64) {
        let window = self.config.transfer_window;
        let Some(msg) = self.incoming.get_mut(id) else {
            return;
        };
        msg.consumed += len;
        let want = msg.consumed + window;
        // Sent even when the grant already covers the whole transfer: the grant is also how
        // the sender (through a relay, too) learns what was consumed.
        if want >= msg.granted + credit_step(window) {
            msg.granted = want;
            self.queue(Frame::Credit(Credit {
                id,
                max_offset: want,
            }));
        }
    }

    fn consume_conn(&mut self, len: u64) {
        self.session.recv.release(len);
        if let Some(max_data) = self.session.recv.grant(u64::MAX, 0).max_data {
            self.queue(Frame::ConnCredit(ConnCredit { max_data }));
        }
    }

    /// Incoming message `id` ends undelivered with `code`: the sender is told (`RESULT`,
    /// unless the connection is closed), a delivery event the application has not taken
    /// is withdrawn, and the application hears `ReceiveFailed` (of a buffer or file; a
    /// command it never saw is simply gone).
    fn fail_incoming(&mut self, id: MessageId, code: ErrorCode) {
        let Some(msg) = self.incoming.get(id) else {
            return;
        };
        let (kind, from, delivered) = (msg.kind, msg.from.clone(), msg.is_delivered());
        // A kept buffer cut by a lost connection gives its bytes to the application.
        let suspended = match (kind, msg.resume_key) {
            (SendKind::Buffer, Some(key)) if code == ErrorCode::CONNECTIONLOST && !delivered => {
                self.incoming
                    .get_mut(id)
                    .map(|m| (key, m.data.split().freeze()))
            }
            _ => None,
        };
        self.queue(Frame::Result(MessageResult { id, code }));
        if delivered {
            let rid = ReceiveId(id);
            self.events.retain(|(e, _)| e.delivery_of() != Some(rid));
        }
        let rid = ReceiveId(id);
        match suspended {
            Some((key, data)) => self.push_event(Event::ReceiveSuspended {
                id: rid,
                from,
                key,
                data,
            }),
            None if kind != SendKind::Cmd => self.push_event(Event::ReceiveFailed {
                id: rid,
                from,
                code,
            }),
            None => {}
        }
        self.drop_incoming(id);
    }

    fn drop_incoming(&mut self, id: MessageId) {
        if let Some(msg) = self.incoming.remove(id) {
            debug_assert!(
                self.cmds_arriving + self.transfers_arriving > 0,
                "never counted"
            );
            match msg.kind {
                SendKind::Cmd => self.cmds_arriving = self.cmds_arriving.saturating_sub(1),
                _ => self.transfers_arriving = self.transfers_arriving.saturating_sub(1),
            }
        }
    }

    // ----- Internals: the connection -------------------------------------------------

    /// Queues a control frame; once closed, nothing but the `CLOSE` goes out.
    fn queue(&mut self, frame: Frame) {
        if !self.session.is_closed() {
            self.control.push_back(frame);
        }
    }

    fn push_event(&mut self, event: Event) {
        self.events.push_back((event, OnTake::Nothing));
    }

    /// The peer broke the protocol: tell it why and close.
    fn violation(&mut self, violation: Violation) {
        self.shut(violation.code(), CloseReason::Violation(violation), true);
    }

    /// Ends the connection: every pending send fails with `CONNECTIONLOST`, incoming
    /// messages are dropped, and `Closed` is the last event.
    fn shut(&mut self, code: ErrorCode, reason: CloseReason, send_close: bool) {
        if !self.session.close() {
            return;
        }
        self.closed_with = Some(code);
        self.control.clear();
        if send_close {
            self.control.push_back(Frame::Close(Close {
                code,
                reason: reason.wire_text(),
            }));
        }
        // A session replaced by a newer login of the same user says so to its sends.
        let failed = if code == ErrorCode::KICKOUT_BY_RELOGIN {
            code
        } else {
            ErrorCode::CONNECTIONLOST
        };
        let sends: alloc::vec::Vec<SendId> = self.sends.outgoing.keys().collect();
        for id in sends {
            self.finish_send(id, failed);
        }
        // Messages not answered are not delivered: their senders hear CONNECTIONLOST.
        let arriving: alloc::vec::Vec<MessageId> = self.incoming.ids().collect();
        for id in arriving {
            self.fail_incoming(id, ErrorCode::CONNECTIONLOST);
        }
        self.push_event(Event::Closed { code, reason });
    }
}

impl event::Endpoint for Client {
    fn next_event(&mut self) -> Option<Event> {
        self.poll_event()
    }
    fn transmit<S: FrameSink + ?Sized>(&mut self, out: &mut S) -> usize {
        self.poll_transmit(out)
    }
    fn next_timeout(&self) -> Option<Instant> {
        self.poll_timeout()
    }
}

/// Plain bytes read for a sealed file: whole records (or the file's last one) sealed, as
/// the wire offset they start at and their bytes; `None` while less than a record is in
/// hand (it waits in `pending`).
fn seal_read(sealed: &mut SealedSource, data: Bytes) -> Option<(u64, Bytes)> {
    let (start, size) = (sealed.sealed_to, sealed.file.size());
    let wire_at = sealed_file::wire_at(start, size)?;
    let in_hand = sealed.pending.len() as u64 + data.len() as u64;
    let whole = match start + in_hand >= size {
        true => in_hand,
        false => in_hand / sealed_file::RECORD * sealed_file::RECORD,
    };
    if whole == 0 {
        sealed.pending.extend_from_slice(&data);
        return None;
    }
    let whole_len = usize::try_from(whole).ok()?;
    let mut out = BytesMut::with_capacity(
        usize::try_from(sealed_file::wire_size(whole)).unwrap_or(whole_len),
    );
    if sealed.pending.is_empty() {
        // Straight from the application's bytes: the one copy is the seal's.
        let (records, rest) = data.split_at(whole_len.min(data.len()));
        sealed.file.seal_records(start, records, &mut out);
        sealed.pending.extend_from_slice(rest);
    } else {
        sealed.pending.extend_from_slice(&data);
        let records = sealed.pending.split_to(whole_len.min(sealed.pending.len()));
        sealed.file.seal_records(start, &records, &mut out);
    }
    sealed.sealed_to += whole;
    Some((wire_at, out.freeze()))
}
