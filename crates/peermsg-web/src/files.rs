//! Files in a browser: a file being sent, read ahead from its `Blob`; a file being
//! received, gathered into `Blob`s and handed over as a `File`; what is kept of files cut
//! off (to resume) and delivered (to confirm a repeat).

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use js_sys::{Array, Uint8Array};
use peermsg::client::{ReceiveId, SendId};
use peermsg::wire::{Digest, ResumeKey};
use peermsg::ErrorCode;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, File, FilePropertyBag};

use crate::driver::{drive, Call, Inner};
use crate::source::Source;
use crate::{BLOB_STEP, DELIVERED, PARTIALS};

/// A file being sent: its `Blob`, its name, and what is read of it.
pub(crate) struct Outgoing {
    pub(crate) blob: Blob,
    pub(crate) name: String,
    pub(crate) source: Source,
}

/// A file being received: its bytes so far, in a `Blob` and pieces not yet moved into it.
pub(crate) struct Incoming {
    pub(crate) from: String,
    pub(crate) name: String,
    pub(crate) key: Option<ResumeKey>,
    pub(crate) blob: Blob,
    pub(crate) pieces: Array,
    pub(crate) pieces_len: usize,
    pub(crate) received: u64,
    pub(crate) digest: Digest,
    /// Delivered before to an application whose sender never heard: confirmed, not
    /// delivered again.
    pub(crate) repeat: bool,
}

impl Incoming {
    /// Moves the pieces into the `Blob`.
    pub(crate) fn settle(&mut self) -> Result<(), JsValue> {
        if self.pieces.length() == 0 {
            return Ok(());
        }
        let parts = Array::of1(&self.blob);
        for piece in self.pieces.iter() {
            parts.push(&piece);
        }
        self.blob = Blob::new_with_blob_sequence(&parts)?;
        self.pieces = Array::new();
        self.pieces_len = 0;
        Ok(())
    }
}

/// What is held of a file whose connection was lost: its bytes and their digest, under
/// its sender and key.
pub(crate) struct Partial {
    pub(crate) from: String,
    pub(crate) key: ResumeKey,
    pub(crate) blob: Blob,
    pub(crate) len: u64,
    pub(crate) digest: Digest,
}

impl Inner {
    /// The core asks for bytes of a file being sent: given now if read ahead already;
    /// the next block is read if one should be.
    pub(crate) fn file_read(&mut self, id: SendId, offset: u64, len: u64) {
        let Some(Outgoing { source, .. }) = self.files_out.get_mut(&id.0) else {
            let _ = self.cont.file_read_failed(id);
            return;
        };
        let ready = source.ask(offset, len);
        if let Some((at, block)) = source.next_read() {
            self.reads.push((id.0, at, block));
        }
        if let Some(bytes) = ready {
            let _ = self.cont.supply_file_data(id, offset, bytes);
        }
    }

    /// A block of a file being sent was read (or could not be).
    pub(crate) fn block_read(&mut self, id: SendId, at: u64, read: Option<Bytes>) {
        let Some(Outgoing { source, .. }) = self.files_out.get_mut(&id.0) else {
            return;
        };
        let Some(bytes) = read else {
            source.read_failed();
            let _ = self.cont.file_read_failed(id);
            return;
        };
        let ready = source.arrived(at, bytes);
        if let Some((at, block)) = source.next_read() {
            self.reads.push((id.0, at, block));
        }
        if let Some((offset, bytes)) = ready {
            let _ = self.cont.supply_file_data(id, offset, bytes);
        }
    }

    /// A file is offered: it goes on from what is held of it (a part kept from a lost
    /// connection, or all of it when it was delivered before), or begins.
    pub(crate) fn offer(&mut self, id: ReceiveId, from: &str, name: &str, key: Option<ResumeKey>) {
        let mut incoming = Incoming {
            from: from.into(),
            name: name.into(),
            key,
            blob: Blob::new().unwrap_or_else(|_| unreachable_blob()),
            pieces: Array::new(),
            pieces_len: 0,
            received: 0,
            digest: Digest::OF_NOTHING,
            repeat: false,
        };
        if let Some(key) = key {
            if let Some(&(_, _, size, digest)) = self
                .delivered
                .iter()
                .find(|(f, k, _, _)| f == from && *k == key)
            {
                incoming.repeat = true;
                incoming.received = size;
                incoming.digest = digest;
            } else if let Some(at) = self
                .partials
                .iter()
                .position(|p| p.from == from && p.key == key)
            {
                let partial = self.partials.remove(at).expect("found");
                incoming.blob = partial.blob;
                incoming.received = partial.len;
                incoming.digest = partial.digest;
            }
            let (offset, digest) = (incoming.received, incoming.digest);
            if self.cont.resume_incoming(id, offset, digest).is_err() {
                // Held more than the file is (another file under the same key): anew.
                incoming = Incoming {
                    blob: Blob::new().unwrap_or_else(|_| unreachable_blob()),
                    received: 0,
                    digest: Digest::OF_NOTHING,
                    repeat: false,
                    ..incoming
                };
                let _ = self.cont.resume_incoming(id, 0, Digest::OF_NOTHING);
            }
        }
        self.files_in.insert(id.0, incoming);
    }

    pub(crate) fn file_data(&mut self, id: ReceiveId, offset: u64, data: &[u8], digest: Digest) {
        let Some(incoming) = self.files_in.get_mut(&id.0) else {
            return;
        };
        if offset != incoming.received {
            return; // the core hands bytes in order; nothing else can come
        }
        incoming.pieces.push(&Uint8Array::from(data));
        incoming.pieces_len += data.len();
        incoming.received += data.len() as u64;
        incoming.digest = digest;
        if incoming.pieces_len >= BLOB_STEP && incoming.settle().is_err() {
            let _ = self.cont.fail_delivery(id, ErrorCode::FILE_WRITE_ERR);
        }
    }

    /// A file arrived whole and verified: kept as a `File`, confirmed, and handed to the
    /// application (once: a repeat is only confirmed).
    pub(crate) fn file_received(
        &mut self,
        id: ReceiveId,
        size: u64,
        calls: &mut Vec<Call>,
        from: &str,
    ) {
        let Some(mut incoming) = self.files_in.remove(&id.0) else {
            let _ = self.cont.fail_delivery(id, ErrorCode::FILE_WRITE_ERR);
            return;
        };
        if incoming.repeat {
            let _ = self.cont.accept_delivery(id);
            return;
        }
        let file = incoming.settle().and_then(|_| {
            let options = FilePropertyBag::new();
            File::new_with_blob_sequence_and_options(
                &Array::of1(&incoming.blob),
                &incoming.name,
                &options,
            )
        });
        let Ok(file) = file else {
            let _ = self.cont.fail_delivery(id, ErrorCode::FILE_WRITE_ERR);
            return;
        };
        let _ = self.cont.accept_delivery(id);
        if let Some(key) = incoming.key {
            if self.delivered.len() >= DELIVERED {
                self.delivered.pop_front();
            }
            self.delivered
                .push_back((incoming.from.clone(), key, size, incoming.digest));
        }
        let args = [from.into(), file.into(), incoming.name.as_str().into()];
        self.call(calls, "notifyFileData", &args);
    }

    /// A file ended without arriving: cut off, what came of it is kept for its sender's
    /// return; else dropped.
    pub(crate) fn receive_failed(&mut self, id: ReceiveId, code: ErrorCode) {
        let Some(mut incoming) = self.files_in.remove(&id.0) else {
            return;
        };
        let Some(key) = incoming
            .key
            .filter(|_| code.is_cut_off() && !incoming.repeat)
        else {
            return;
        };
        if incoming.settle().is_err() {
            return;
        }
        if self.partials.len() >= PARTIALS {
            self.partials.pop_front();
        }
        self.partials.push_back(Partial {
            from: incoming.from,
            key,
            blob: incoming.blob,
            len: incoming.received,
            digest: incoming.digest,
        });
    }
}

/// `Blob::new` fails only where there is no `Blob`; this crate runs where there is.
pub(crate) fn unreachable_blob() -> Blob {
    wasm_bindgen::throw_str("this browser has no Blob")
}

/// Reads a block of send `id`'s file (`Blob.slice`, `arrayBuffer`) and hands it to its
/// [`Source`].
pub(crate) fn read_file(rc: &Rc<RefCell<Inner>>, id: u64, offset: u64, len: u64) {
    let slice = match rc.borrow().files_out.get(&id) {
        Some(outgoing) => outgoing
            .blob
            .slice_with_f64_and_f64(offset as f64, (offset + len) as f64),
        None => return,
    };
    let weak = Rc::downgrade(rc);
    wasm_bindgen_futures::spawn_local(async move {
        let read = match slice {
            Ok(slice) => JsFuture::from(slice.array_buffer()).await,
            Err(e) => Err(e),
        };
        let Some(rc) = weak.upgrade() else { return };
        // Shorter than asked: the file changed meanwhile, and cannot be sent as it was.
        let bytes = read
            .ok()
            .map(|buffer| Uint8Array::new(&buffer).to_vec())
            .filter(|bytes| bytes.len() as u64 == len)
            .map(Bytes::from);
        rc.borrow_mut().block_read(SendId(id), offset, bytes);
        drive(&rc);
    });
}
