//! What the application's handles and the connection task share: the continuity state
//! machine, who waits for each send, and what the application said of files it kept.
//! Every call takes the lock only for itself.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use peermsg::client::{Event, SendId};
use peermsg::continuity::Continuity;
use peermsg::{ErrorCode, Instant, SendError};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::handle::{SendHandle, SendProgress, Waiting};
use super::keys::read_at;
use crate::clock::Clock;
use crate::sink::DoneRecord;

/// What the handles and the task share.
pub(super) struct Shared {
    state: Mutex<State>,
    /// The application queued something for the task to write.
    pub(super) wake: Notify,
    pub(super) clock: Clock,
}

/// A file read done on the blocking pool.
pub(super) type FileReadDone = (SendId, u64, std::io::Result<bytes::Bytes>);

pub(super) struct State {
    /// The user across connections: every rule of what is sent again, and when.
    pub(super) cont: Continuity,
    /// Who waits for each send not yet ended.
    sends: HashMap<SendId, Waiter>,
    /// File sends read at most this many bytes a second, and when the next read may start.
    pace: Option<(u64, Instant)>,
    /// The relay of the current connection, when the client reconnected.
    pub(super) server: String,
    /// Records of resumable files kept, until the application says where it saved them
    /// ([`super::ClientHandle::file_saved_as`]); the oldest of more than `DONE_RECORDS` go.
    done_records: VecDeque<(peermsg::client::ReceiveId, DoneRecord)>,
    /// Where the application saved kept files, for the sink to record.
    pub(super) saved_at: Vec<(DoneRecord, PathBuf)>,
}

/// Records of kept files waiting for the application's word, at most.
const DONE_RECORDS: usize = 4096;

/// The task's end of a [`SendHandle`](crate::SendHandle).
struct Waiter {
    result: oneshot::Sender<ErrorCode>,
    progress: watch::Sender<SendProgress>,
    /// A file being sent, read by offset.
    file: Option<Arc<std::fs::File>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    pub(super) fn new(cont: Continuity, clock: Clock) -> Arc<Self> {
        Arc::new(Shared {
            state: Mutex::new(State {
                cont,
                sends: HashMap::new(),
                pace: None,
                server: String::new(),
                done_records: VecDeque::new(),
                saved_at: Vec::new(),
            }),
            wake: Notify::new(),
            clock,
        })
    }

    pub(super) fn now(&self) -> Instant {
        self.clock.now()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the state machine half-updated: its calls do not
        // panic. Carry on with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state machine, then wakes the task to write what it queued.
    pub(super) fn call<R>(&self, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        let now = self.now();
        let r = f(&mut self.lock(), now);
        self.wake.notify_one();
        r
    }

    /// Hands every event about our sends to whoever waits for it (file reads to the
    /// blocking pool); whether there was any.
    pub(super) fn tell_senders(&self, reads: &mpsc::Sender<FileReadDone>) -> bool {
        let mut s = self.lock();
        let mut any = false;
        while let Some(event) = s.cont.poll_send_event() {
            any = true;
            s.tell_sender(event, &self.clock, reads);
        }
        any
    }
}

impl State {
    /// Starts a send with `start` and registers who waits for it, in one step, so its
    /// result cannot come before anyone waits for it.
    pub(super) fn start(
        &mut self,
        shared: &Arc<Shared>,
        total: u64,
        file: Option<Arc<std::fs::File>>,
        start: impl FnOnce(&mut Continuity) -> Result<SendId, SendError>,
    ) -> Result<SendHandle, SendError> {
        let id = start(&mut self.cont)?;
        let (result_tx, result) = oneshot::channel();
        let (progress_tx, progress) = watch::channel(SendProgress {
            total,
            ..SendProgress::default()
        });
        self.sends.insert(
            id,
            Waiter {
                result: result_tx,
                progress: progress_tx,
                file,
            },
        );
        Ok(SendHandle::new(id, result, progress, shared.clone()))
    }

    /// Limits file reads to `rate` bytes a second (`None`: no limit), from `now`.
    pub(super) fn set_pace(&mut self, rate: Option<u64>, now: Instant) {
        self.pace = rate.filter(|r| *r > 0).map(|rate| (rate, now));
    }

    /// A kept file's record, until the application says where it saved it.
    pub(super) fn record_done(&mut self, id: peermsg::client::ReceiveId, record: DoneRecord) {
        if self.done_records.len() >= DONE_RECORDS {
            self.done_records.pop_front();
        }
        self.done_records.push_back((id, record));
    }

    /// The application saved kept file `id` at `path`: the sink records it.
    pub(super) fn saved_as(&mut self, id: peermsg::client::ReceiveId, path: PathBuf) {
        let at = self.done_records.iter().position(|(r, _)| *r == id);
        if let Some((_, record)) = at.and_then(|at| self.done_records.remove(at)) {
            self.saved_at.push((record, path));
        }
    }

    /// The connection task is over for good: whoever still waits hears `CONNECTIONLOST`
    /// (their result senders are dropped).
    pub(super) fn abandon_sends(&mut self) {
        self.sends.clear();
    }

    /// Reads `len` bytes of send `id`'s file from `offset` on the blocking pool; the
    /// bytes come back over `reads`.
    fn read_file(
        &mut self,
        id: SendId,
        offset: u64,
        len: u64,
        clock: &Clock,
        reads: &mpsc::Sender<FileReadDone>,
    ) {
        let Some(file) = self.sends.get(&id).and_then(|w| w.file.clone()) else {
            return;
        };
        // With a rate limit, each read starts when the bytes before it are due;
        // re-reading what the receiver holds, to check a resume, is not paced.
        let checking = self.cont.is_checking_resume(id);
        let now = clock.now();
        let delay = self
            .pace
            .as_mut()
            .filter(|_| !checking)
            .map(|(rate, next)| {
                let start = (*next).max(now);
                *next = start + std::time::Duration::from_secs_f64(len as f64 / *rate as f64);
                start - now
            });
        let done = reads.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(delay) = delay {
                std::thread::sleep(delay);
            }
            let _ = done.blocking_send((id, offset, read_at(&file, offset, len)));
        });
    }

    /// Hands an event about one of our sends to its handle (or, for a file read, to the
    /// blocking pool).
    pub(super) fn tell_sender(
        &mut self,
        event: Event,
        clock: &Clock,
        reads: &mpsc::Sender<FileReadDone>,
    ) {
        match event {
            Event::FileRead { id, offset, len } => self.read_file(id, offset, len, clock, reads),
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
                    tracing::info!(%id, offset, "resumed");
                    waiter.progress.send_modify(|p| {
                        p.resumed_at = Some(offset);
                        p.sent = p.sent.max(offset);
                        p.waiting = None;
                    });
                }
            }
            Event::SendWaiting {
                id,
                code,
                since,
                deadline,
            } => {
                if let Some(waiter) = self.sends.get(&id) {
                    tracing::info!(%id, %code, "interrupted; the send waits to go on");
                    waiter.progress.send_modify(|p| {
                        p.waiting = Some(Waiting {
                            reason: code,
                            since: clock.at(since),
                            deadline: clock.at(deadline),
                        });
                    });
                }
            }
            Event::SendResult { id, code, .. } => {
                if let Some(waiter) = self.sends.remove(&id) {
                    tracing::info!(%id, %code, "result");
                    // A dropped handle did not want it.
                    let _ = waiter.result.send(code);
                }
            }
            // `cancel_send` returned it already.
            _ => {}
        }
    }
}
