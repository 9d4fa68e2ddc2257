//! One connection's task: the socket, the files, and the drive loop, until the connection
//! ends. It follows the drive invariant: after any input (bytes, a wake-up, a file read,
//! a deadline) it writes frames and hands out events until neither comes, then waits on
//! all of them at once. It decides nothing of the protocol: [`Continuity`] does.
//!
//! [`Continuity`]: peermsg::continuity::Continuity

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::BytesMut;
use peermsg::client::{Event, ReceiveId};
use peermsg::wire::{Transmit, UserId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::files_in::{handle_event, kept, run_sink, SinkDone, SinkOp, Taker, SINK_QUEUE};
use super::state::{FileReadDone, Shared};
use super::ClientEvent;
use crate::sink::FileSink;

/// Room made in the read buffer before each read.
const READ_SIZE: usize = 256 * 1024;

/// The file sink on the blocking pool as the task sees it: requests go in order over a
/// bounded channel, failures and kept files come back; and what the task keeps of each
/// incoming file meanwhile.
struct SinkFeed {
    ops: Option<mpsc::Sender<SinkOp>>,
    done: mpsc::Receiver<SinkDone>,
    /// Incoming files in the sink: their names and senders.
    names: HashMap<ReceiveId, (String, UserId)>,
    /// Failures of incoming files, told to the application once the sink has removed
    /// their partial bytes (so when it hears, nothing is left behind).
    failing: HashMap<ReceiveId, ClientEvent>,
    /// Files the sink is keeping, whole and verified, with what the core said of each
    /// meanwhile (a lost connection, a cancel): the application hears once it is kept.
    keeping: HashMap<ReceiveId, Option<Event>>,
    /// The sink's queue was full when the task last looked.
    full: bool,
}

impl SinkFeed {
    fn start(sink: Option<FileSink>) -> Self {
        let (done_tx, done) = mpsc::channel::<SinkDone>(64);
        let ops = sink.map(|sink| {
            let (ops_tx, ops) = mpsc::channel::<SinkOp>(SINK_QUEUE);
            tokio::task::spawn_blocking(move || run_sink(sink, ops, done_tx));
            ops_tx
        });
        SinkFeed {
            ops,
            done,
            names: HashMap::new(),
            failing: HashMap::new(),
            keeping: HashMap::new(),
            full: false,
        }
    }

    /// What the sink reported: an event for the application, if any. While the
    /// connection lives, a failure refuses the file and a resumable file's offset answers
    /// its offer; a file kept is the application's either way.
    fn on_done(&mut self, shared: &Shared, done: SinkDone, live: bool) -> Option<ClientEvent> {
        match done {
            SinkDone::Abandoned(id) => self.failing.remove(&id),
            SinkDone::Kept(id, from, size, saved) => {
                kept(&mut shared.lock(), &mut self.keeping, id, from, size, saved)
            }
            SinkDone::Resume(..) | SinkDone::Failed(..) if !live => None,
            SinkDone::Resume(id, offset, digest) => {
                // (A file that ended meanwhile is gone: nothing to answer.)
                let _ = shared.lock().cont.resume_incoming(id, offset, digest);
                None
            }
            SinkDone::Failed(id, error) => {
                tracing::warn!(%id, %error, "cannot write an incoming file");
                // Refused (the sender's result is 1402); the application hears of it
                // too, unless the file ended otherwise meanwhile.
                let code = crate::write_error_code(&error);
                let refused = shared.lock().cont.reject(id, code).is_ok();
                match (self.names.remove(&id), refused) {
                    (Some((_, from)), true) => {
                        Some(ClientEvent::Core(Event::ReceiveFailed { id, from, code }))
                    }
                    _ => None,
                }
            }
        }
    }

    /// Tells the sink where the application saved kept files; what does not fit waits
    /// for the next turn.
    fn send_saved_at(&mut self, shared: &Shared) {
        let saved_at = std::mem::take(&mut shared.lock().saved_at);
        let Some(ops) = &self.ops else {
            return;
        };
        for (record, path) in saved_at {
            if let Err(mpsc::error::TrySendError::Full(SinkOp::SavedAt(record, path))) =
                ops.try_send(SinkOp::SavedAt(record, path))
            {
                shared.lock().saved_at.push((record, path));
                self.full = true;
            }
        }
    }
}

/// One connection's task: what it holds between turns of its loop.
struct Driver {
    shared: Arc<Shared>,
    events: mpsc::Sender<ClientEvent>,
    feed: SinkFeed,
    /// At most one read per file being sent is outstanding; a full channel makes the
    /// blocking reader wait, not the task.
    reads_tx: mpsc::Sender<FileReadDone>,
    /// Events the task made itself (a file kept, or not), waiting for room in the
    /// application's channel; at most one per incoming transfer.
    own: VecDeque<ClientEvent>,
    /// Writes are vectored, so payloads go from the application's `Bytes` to the socket
    /// without a copy.
    out: Transmit,
    /// The application's channel was full when the task last looked.
    full: bool,
}

/// One connection, from its first byte to its end.
pub(super) async fn drive<T: AsyncRead + AsyncWrite + Send + Unpin + ?Sized>(
    shared: Arc<Shared>,
    stream: Box<T>,
    events: mpsc::Sender<ClientEvent>,
    sink: Option<FileSink>,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (reads_tx, mut reads) = mpsc::channel::<FileReadDone>(64);
    let mut d = Driver {
        shared,
        events,
        feed: SinkFeed::start(sink),
        reads_tx,
        own: VecDeque::new(),
        out: Transmit::new(),
        full: false,
    };
    // Reads land in one buffer and are handed over without a copy.
    let mut input = BytesMut::new();
    loop {
        while d.write(&mut wr).await | d.take_events() {}
        // The next deadline, while the connection lives.
        let deadline = {
            let s = d.shared.lock();
            s.cont.is_connected().then(|| s.cont.poll_timeout())
        };
        let Some(deadline) = deadline else {
            return d.finish(&mut wr).await;
        };
        let wake = deadline.map(|at| d.shared.clock.at(at));
        input.reserve(READ_SIZE);
        let ops = d.feed.ops.clone();
        let shared = d.shared.clone();
        tokio::select! {
            read = rd.read_buf(&mut input) => {
                let now = shared.now();
                let mut s = shared.lock();
                match read {
                    Ok(0) | Err(_) => s.cont.handle_disconnect(now),
                    Ok(_) => s.cont.handle_input_buf(now, input.split()),
                }
            }
            _ = shared.wake.notified() => {}
            room = d.events.reserve(), if d.full => {
                // The application took an event: there is room to take the next.
                drop(room);
                d.full = false;
            }
            room = async { ops.as_ref()?.reserve().await.ok() }, if d.feed.full => {
                drop(room);
                d.feed.full = false;
            }
            Some(done) = d.feed.done.recv() => {
                let event = d.feed.on_done(&shared, done, true);
                d.own.extend(event);
            }
            Some((id, offset, piece)) = reads.recv() => {
                let mut s = shared.lock();
                let answer = match piece {
                    Ok(piece) => s.cont.supply_file_data(id, offset, piece),
                    Err(error) => {
                        tracing::warn!(%id, %error, "file source failed");
                        s.cont.file_read_failed(id)
                    }
                };
                // A send cancelled since it asked is gone.
                let _ = answer;
            }
            _ = async { tokio::time::sleep_until(wake?).await; Some(()) }, if wake.is_some() => {
                let now = shared.now();
                shared.lock().cont.handle_timeout(now);
            }
        }
    }
}

impl Driver {
    /// Writes what the state machine has for the socket; whether there was any.
    async fn write<W: AsyncWrite + Unpin>(&mut self, wr: &mut W) -> bool {
        let written = self.shared.lock().cont.poll_transmit(&mut self.out);
        if written > 0 && wr.write_all_buf(&mut self.out).await.is_err() {
            self.out.clear();
            let now = self.shared.now();
            self.shared.lock().cont.handle_disconnect(now);
        }
        written > 0
    }

    /// Hands out events: about our sends to their handles, whatever the application's
    /// channel holds; the rest each only with room for it there (and, for file data, in
    /// the sink's queue). Whether there was any.
    fn take_events(&mut self) -> bool {
        let mut any = self.shared.tell_senders(&self.reads_tx);
        // An application that has gone away has its events dropped.
        while !self.own.is_empty() {
            match self.events.try_reserve() {
                Ok(room) => room.send(self.own.pop_front().expect("not empty")),
                Err(mpsc::error::TrySendError::Full(())) => break,
                Err(mpsc::error::TrySendError::Closed(())) => self.own.clear(),
            }
        }
        self.feed.send_saved_at(&self.shared);
        loop {
            let room = match self.events.try_reserve() {
                Ok(room) => Some(room),
                Err(mpsc::error::TrySendError::Full(())) => {
                    self.full = true;
                    return any;
                }
                Err(mpsc::error::TrySendError::Closed(())) => None,
            };
            let sink_room = match self.feed.ops.as_ref().map(mpsc::Sender::try_reserve) {
                Some(Ok(room)) => Some(room),
                Some(Err(mpsc::error::TrySendError::Full(()))) => {
                    self.feed.full = true;
                    return any;
                }
                Some(Err(mpsc::error::TrySendError::Closed(()))) | None => None,
            };
            let Some(event) = self.shared.lock().cont.poll_event() else {
                return any;
            };
            any = true;
            if event.send_id().is_some() {
                let mut s = self.shared.lock();
                s.tell_sender(event, &self.shared.clock, &self.reads_tx);
                continue;
            }
            let cx = Taker {
                shared: &self.shared,
                sink: sink_room,
                names: &mut self.feed.names,
                failing: &mut self.feed.failing,
                keeping: &mut self.feed.keeping,
            };
            if let (Some(app), Some(room)) = (handle_event(cx, event), room) {
                room.send(app);
            }
        }
    }

    /// The connection is over: the sink finishes what it was asked (its failures
    /// removed), then the application hears the rest, if it still reads.
    async fn finish<W: AsyncWrite + Unpin>(mut self, wr: &mut W) {
        let _ = wr.shutdown().await;
        drop(self.feed.ops.take());
        while let Some(done) = self.feed.done.recv().await {
            let event = self.feed.on_done(&self.shared, done, false);
            self.own.extend(event);
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            for event in self.own.drain(..) {
                let _ = self.events.send(event).await;
            }
        })
        .await;
    }
}
