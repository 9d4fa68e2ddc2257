//! Files coming in: the file sink on the blocking pool, fed in order over a bounded
//! queue, and what the task makes of the core's events about incoming messages (file
//! bytes to the sink, a file confirmed only once kept).

use std::collections::HashMap;
use std::path::PathBuf;

use bytes::Bytes;
use peermsg::client::{Event, ReceiveId, SendKind};
use peermsg::wire::{Digest, ResumeKey, UserId};
use peermsg::ErrorCode;
use tokio::sync::mpsc;

use super::state::{Shared, State};
use super::ClientEvent;
use crate::sink::{DoneRecord, FileSink, Kept};

/// What the task asks of the file sink, which runs on the blocking pool: file writes
/// never stall the connection's task.
pub(super) enum SinkOp {
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
pub(super) enum SinkDone {
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
pub(super) const SINK_QUEUE: usize = 256;

/// The sink's loop: it does what the task asks, in order, and reports failures and kept
/// files.
pub(super) fn run_sink(
    mut sink: FileSink,
    mut ops: mpsc::Receiver<SinkOp>,
    done: mpsc::Sender<SinkDone>,
) {
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

/// What handling an event may touch.
pub(super) struct Taker<'a> {
    pub(super) shared: &'a Shared,
    /// Room for one request to the file sink, if there is a sink.
    pub(super) sink: Option<mpsc::Permit<'a, SinkOp>>,
    pub(super) names: &'a mut HashMap<ReceiveId, (String, UserId)>,
    pub(super) failing: &'a mut HashMap<ReceiveId, ClientEvent>,
    pub(super) keeping: &'a mut HashMap<ReceiveId, Option<Event>>,
}

/// A file the sink kept (or failed to): confirmed to its sender only now that it is in
/// its place, and what the application hears of it. A file kept whole is the
/// application's even if its connection was lost meanwhile: its sender, back, is answered
/// "all of it" and confirmed without sending it again. One cancelled meanwhile goes.
pub(super) fn kept(
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
    let client = &mut state.cont;
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
                state.record_done(id, record);
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
pub(super) fn handle_event(cx: Taker<'_>, event: Event) -> Option<ClientEvent> {
    match event {
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
            tracing::info!(%id, %from, size = data.len(), "buffer received");
            Some(ClientEvent::Core(event))
        }
        Event::Reconnected => {
            let s = cx.shared.lock();
            tracing::info!(server = %s.server, "reconnected");
            Some(ClientEvent::Reconnected {
                server: s.server.clone(),
            })
        }
        other => file_event(cx, other),
    }
}

/// An event about an incoming file (its bytes go to the sink, and it is told once kept),
/// or any other, passed on.
fn file_event(cx: Taker<'_>, event: Event) -> Option<ClientEvent> {
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
                let _ = cx.shared.lock().cont.reject(id, ErrorCode::FILE_WRITE_ERR);
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
                        .cont
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
        other => Some(ClientEvent::Core(other)),
    }
}
