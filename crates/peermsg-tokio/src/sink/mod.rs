//! The file sink: incoming files into temporary files inside one directory; resumable
//! ones into durable partial files (`partial.rs`) that survive a lost connection and a
//! killed process.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use peermsg::client::ReceiveId;
use peermsg::wire::{Digest, ResumeKey, UserId};
use tempfile::NamedTempFile;

use crate::partial::{self, Record};

mod kept;
mod names;
#[cfg(test)]
mod tests;

pub use kept::{ArrivedFile, DoneRecord, Kept, SavedFile};
pub use names::{is_bidi_control, sanitize_file_name, write_error_code};

/// Whether `path` is a regular file of `size` bytes whose CRC-32C is `crc` (read whole).
fn holds(path: &Path, size: u64, crc: u32) -> bool {
    use std::io::Read;
    if partial::regular_len(path) != Some(size) {
        return false;
    }
    let Ok(mut file) = File::open(path) else {
        return false;
    };
    let mut buf = vec![0u8; WRITE_BUFFER];
    let mut digest = Digest::OF_NOTHING;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return digest == Digest::Crc32c(crc),
            Ok(n) => digest = digest.appended(&buf[..n]),
            Err(_) => return false,
        }
    }
}

/// Bytes gathered before one write to the file: a frame's payload is 16 KiB by default,
/// and one system call per frame cost more than the copy into this buffer.
const WRITE_BUFFER: usize = 256 * 1024;

/// Resumable files' bytes counted in their records at least this often (and at the end
/// of an attempt): a killed receiver sends for at most this much again.
pub const RECORD_EVERY: u64 = 4 << 20;

/// How long partial files and records of delivered files are kept by default.
pub const RESUME_WINDOW: Duration = Duration::from_secs(300);

/// Bounds on the partial files a sink keeps between attempts (a lost connection's
/// resumable files): a sender could otherwise fill the disk with them. Kept partials are
/// the first to go when room is needed: the oldest of the sender's own past its bounds,
/// the oldest of all past the overall bounds or when an offer needs the space, and any
/// older than the window. A partial that goes is only a resume lost: its next attempt
/// starts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeptLimits {
    /// Partial files kept per sender at most. Default 16.
    pub per_sender: usize,
    /// Bytes of partial files kept per sender at most. Default 4 GiB.
    pub per_sender_bytes: u64,
    /// Partial files kept in all at most. Default 256.
    pub total: usize,
    /// Bytes of partial files kept in all at most. Default 16 GiB.
    pub total_bytes: u64,
    /// How long a partial file, and the record of a file kept (for a sender that never
    /// heard), is kept after its last attempt. Default [`RESUME_WINDOW`].
    pub window: Duration,
}

impl Default for KeptLimits {
    fn default() -> Self {
        KeptLimits {
            per_sender: 16,
            per_sender_bytes: 4 << 30,
            total: 256,
            total_bytes: 16 << 30,
            window: RESUME_WINDOW,
        }
    }
}

/// What the sink keeps of a resumable file between attempts.
#[derive(Debug)]
struct KeptEntry {
    from: UserId,
    /// Bytes of its partial file (0 for the record of a file kept).
    bytes: u64,
    since: std::time::Instant,
    /// The record of a file kept already, not a partial file.
    done: bool,
}

/// Writes each incoming file to a temporary file in its directory; keeps it only when the
/// file arrived whole and verified, and removes it otherwise. A resumable file
/// ([`FileSink::begin_resumable`]) goes to a partial file that a lost connection or a
/// killed process leaves in place, with a record of how many of its bytes are on disk, for
/// the next attempt to continue, within [`KeptLimits`]. An offer whose bytes do not fit
/// in the disk's free space (less what the files under way still need) is refused before
/// any byte comes, with an error of kind [`std::io::ErrorKind::StorageFull`].
#[derive(Debug)]
pub struct FileSink {
    dir: PathBuf,
    open: HashMap<ReceiveId, Target>,
    /// Bytes each file under way still needs on the disk.
    reserved: HashMap<ReceiveId, u64>,
    /// Partial files and records of kept files between attempts, by base path.
    kept: HashMap<PathBuf, KeptEntry>,
    limits: KeptLimits,
    sync: bool,
}

/// Where an incoming file's bytes go.
#[derive(Debug)]
enum Target {
    /// A temporary file, removed unless kept.
    Temp(BufWriter<NamedTempFile>),
    /// A resumable file's partial file and its record.
    Partial(Partial),
    /// A resumable file delivered already and still where it was saved (its sender never
    /// heard): nothing is written, and it is not kept twice.
    Repeat(PathBuf),
}

/// A resumable file being written.
#[derive(Debug)]
struct Partial {
    base: PathBuf,
    file: BufWriter<File>,
    record: Record,
    /// Bytes given to the sink (the record counts those flushed so far).
    written: u64,
    crc: u32,
}

impl Partial {
    /// Flushes what is buffered (synced if `sync`), then records it.
    fn record(&mut self, sync: bool) -> std::io::Result<()> {
        self.file.flush()?;
        if sync {
            self.file.get_ref().sync_data()?;
        }
        self.record.offset = self.written;
        self.record.crc = self.crc;
        self.record.save(&self.base, sync)
    }
}

impl FileSink {
    /// A sink writing into `dir`, which must exist and be writable.
    pub fn new(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        Self::with_limits(dir, KeptLimits::default())
    }

    /// A sink writing into `dir`, keeping partial files and records of delivered files for
    /// `window`, within the default bounds.
    pub fn with_window(dir: impl Into<PathBuf>, window: Duration) -> std::io::Result<Self> {
        Self::with_limits(
            dir,
            KeptLimits {
                window,
                ..KeptLimits::default()
            },
        )
    }

    /// A sink writing into `dir` that keeps partial files within `limits`. At start it
    /// removes what is older than the window, cuts every partial file back to the bytes
    /// its record counts (`partial.rs`), and keeps the rest within the bounds.
    pub fn with_limits(dir: impl Into<PathBuf>, limits: KeptLimits) -> std::io::Result<Self> {
        let dir = dir.into();
        // Fail now, with a clear error, rather than at the first file.
        NamedTempFile::new_in(&dir)?;
        let now = crate::clock::std_now();
        let kept = partial::tidy(&dir, limits.window)?
            .into_iter()
            .map(|(base, record, age)| {
                let kept = KeptEntry {
                    from: record.from,
                    bytes: record.offset,
                    since: now.checked_sub(age).unwrap_or(now),
                    done: record.done,
                };
                (base, kept)
            })
            .collect();
        let mut sink = FileSink {
            dir,
            open: HashMap::new(),
            reserved: HashMap::new(),
            kept,
            limits,
            sync: false,
        };
        sink.bound(None);
        Ok(sink)
    }

    /// Kept partial files and records of kept files, now (after expiring the old ones):
    /// `(partial files, their bytes, records of files kept)`.
    pub fn kept(&mut self) -> (usize, u64, usize) {
        self.expire_kept();
        let partials = self.kept.values().filter(|k| !k.done);
        let (count, bytes) = partials.fold((0, 0), |(n, b), k| (n + 1, b + k.bytes));
        (count, bytes, self.kept.values().filter(|k| k.done).count())
    }

    /// Partial files and records of kept files older than the window go (the sink does
    /// it too before each new file and after each suspended one).
    pub fn expire_kept(&mut self) {
        let (window, now) = (self.limits.window, crate::clock::std_now());
        self.kept.retain(|base, k| {
            let live = now - k.since < window;
            if !live {
                partial::remove(base);
            }
            live
        });
    }

    /// The oldest kept partial file of `from` (of anyone, for `None`) goes; false if
    /// there is none.
    fn evict_oldest(&mut self, from: Option<&UserId>) -> bool {
        let oldest = self
            .kept
            .iter()
            .filter(|(_, k)| !k.done && from.is_none_or(|f| k.from == *f))
            .min_by_key(|(_, k)| k.since)
            .map(|(base, _)| base.clone());
        match oldest {
            Some(base) => {
                tracing::info!(path = %base.display(), "a kept partial file goes, to stay in bounds");
                partial::remove(&base);
                self.kept.remove(&base);
                true
            }
            None => false,
        }
    }

    /// Kept partial files within the bounds: `from`'s own first, then all.
    fn bound(&mut self, from: Option<&UserId>) {
        self.expire_kept();
        let sum = |kept: &HashMap<PathBuf, KeptEntry>, who: Option<&UserId>| {
            kept.values()
                .filter(|k| !k.done && who.is_none_or(|f| k.from == *f))
                .fold((0usize, 0u64), |(n, b), k| (n + 1, b + k.bytes))
        };
        if let Some(from) = from {
            loop {
                let (count, bytes) = sum(&self.kept, Some(from));
                let over = count > self.limits.per_sender || bytes > self.limits.per_sender_bytes;
                if !over || !self.evict_oldest(Some(from)) {
                    break;
                }
            }
        }
        loop {
            let (count, bytes) = sum(&self.kept, None);
            let over = count > self.limits.total || bytes > self.limits.total_bytes;
            if !over || !self.evict_oldest(None) {
                break;
            }
        }
    }

    /// Room on the disk for `need` more bytes of file `id`, beside what the files under
    /// way still need: kept partial files go, oldest first, to make it; else the offer is
    /// refused (`StorageFull`) before any byte comes. Where the free space cannot be read,
    /// the disk's own answer to each write decides.
    fn reserve(&mut self, id: ReceiveId, need: u64) -> std::io::Result<()> {
        while let Ok(free) = fs4::available_space(&self.dir) {
            let promised: u64 = self.reserved.values().sum();
            let room = free.saturating_sub(promised);
            if need <= room {
                break;
            }
            if !self.evict_oldest(None) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!(
                        "the file needs {need} bytes and {room} are free in {}",
                        self.dir.display()
                    ),
                ));
            }
        }
        self.reserved.insert(id, need);
        Ok(())
    }

    /// Whether kept files are synced to the disk (`fsync`) before they are confirmed to
    /// their senders. Off by default: the file is then confirmed once written to the
    /// operating system, which keeps it unless the machine itself fails.
    pub fn set_sync(&mut self, sync: bool) {
        self.sync = sync;
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An offer of a file of `size` bytes arrived: a temporary file is made for it, if the
    /// disk has room for it.
    pub fn begin(&mut self, id: ReceiveId, name: &str, size: u64) -> std::io::Result<()> {
        self.expire_kept();
        self.reserve(id, size)?;
        let file = tempfile::Builder::new()
            .prefix(".peermsg-")
            .suffix(&format!("-{}.part", sanitize_file_name(name)))
            .tempfile_in(&self.dir)?;
        self.open.insert(
            id,
            Target::Temp(BufWriter::with_capacity(WRITE_BUFFER, file)),
        );
        Ok(())
    }

    /// An offer of a resumable file from `from` under `key`: its partial file is opened
    /// (made if new), and the answer is where its bytes on disk end and their digest, for
    /// [`Client::resume_incoming`](peermsg::client::Client::resume_incoming). A file of
    /// another size under the same key starts over; one kept already is answered whole, and
    /// not kept again.
    pub fn begin_resumable(
        &mut self,
        id: ReceiveId,
        from: &UserId,
        key: ResumeKey,
        name: &str,
        size: u64,
    ) -> std::io::Result<(u64, Digest)> {
        let base = partial::base(&self.dir, from, &key);
        // An earlier attempt still open here (its end not heard yet: the sender came back
        // first) gives way: its bytes are recorded and it writes no more.
        let earlier = self
            .open
            .iter()
            .find(|(_, t)| matches!(t, Target::Partial(p) if p.base == base))
            .map(|(id, _)| *id);
        if let Some(earlier) = earlier {
            self.suspend(earlier);
        }
        self.expire_kept();
        let held = partial::Record::load(&base).filter(|r| r.size == size && r.from == *from);
        if let Some(done) = held.as_ref().filter(|r| r.done) {
            // A repeat only while the application still has that very file where it was
            // saved; else it is a new delivery.
            if let Some(path) = done
                .saved
                .as_ref()
                .filter(|p| holds(p, done.size, done.crc))
            {
                self.open.insert(id, Target::Repeat(path.clone()));
                return Ok((done.size, Digest::Crc32c(done.crc)));
            }
            partial::remove(&base);
        }
        let held = held.filter(|r| !r.done);
        // Taken up again: no longer kept, but open (and not to be evicted for room).
        self.kept.remove(&base);
        let data = partial::data_path(&base);
        // Never through a link planted under the partial's name.
        let held = held.filter(|_| partial::regular_len(&data).is_some());
        let on_disk = held.as_ref().map_or(0, |r| r.offset);
        if let Err(e) = self.reserve(id, size.saturating_sub(on_disk)) {
            // Refused: what was kept of it stays kept, for when there is room.
            if let Some(record) = held {
                self.keep_partial(base, &record);
            }
            return Err(e);
        }
        let (record, mut file) = match held {
            Some(record) => {
                let mut file = File::options().write(true).open(&data)?;
                file.set_len(record.offset)?;
                file.seek(SeekFrom::End(0))?;
                (record, file)
            }
            None => {
                let record = Record {
                    from: from.clone(),
                    key,
                    size,
                    offset: 0,
                    crc: 0,
                    name: sanitize_file_name(name),
                    done: false,
                    saved: None,
                };
                // A new file (whatever had the name, a link too, goes; not its target).
                let _ = std::fs::remove_file(&data);
                let file = File::options().write(true).create_new(true).open(&data)?;
                record.save(&base, self.sync)?;
                (record, file)
            }
        };
        file.flush()?;
        let answer = (record.offset, Digest::Crc32c(record.crc));
        self.open.insert(
            id,
            Target::Partial(Partial {
                base,
                file: BufWriter::with_capacity(WRITE_BUFFER, file),
                written: record.offset,
                crc: record.crc,
                record,
            }),
        );
        Ok(answer)
    }

    /// The application moved a kept resumable file to `path`: a sender that sends it
    /// again is answered "all of it" while that file is there, of its size and digest.
    pub fn saved_at(&mut self, record: DoneRecord, path: &Path) -> std::io::Result<()> {
        let DoneRecord(base) = record;
        let Some(mut done) = partial::Record::load(&base).filter(|r| r.done) else {
            return Ok(()); // gone meanwhile: nothing to say of it
        };
        done.saved = Some(path.to_path_buf());
        done.save(&base, self.sync)
    }

    /// Bytes of the file, in order.
    pub fn write(&mut self, id: ReceiveId, data: &[u8]) -> std::io::Result<()> {
        self.write_digested(id, data, None)
    }

    /// [`FileSink::write`], given the digest of the file up to the end of `data` when it
    /// is known already (the state machine's, in
    /// [`Event::FileData`](peermsg::client::Event::FileData)): a resumable file's record then
    /// takes it rather than digesting the bytes a second time.
    pub fn write_digested(
        &mut self,
        id: ReceiveId,
        data: &[u8],
        digest: Option<Digest>,
    ) -> std::io::Result<()> {
        if let Some(need) = self.reserved.get_mut(&id) {
            *need = need.saturating_sub(data.len() as u64);
        }
        match self.open.get_mut(&id) {
            Some(Target::Temp(file)) => file.write_all(data),
            Some(Target::Partial(p)) => {
                p.file.write_all(data)?;
                p.written += data.len() as u64;
                let Digest::Crc32c(crc) =
                    digest.unwrap_or_else(|| Digest::Crc32c(p.crc).appended(data));
                p.crc = crc;
                if p.written - p.record.offset >= RECORD_EVERY {
                    p.record(self.sync)?;
                }
                Ok(())
            }
            // A file refused at its offer, or a repeat (no bytes come for it).
            Some(Target::Repeat(_)) | None => Ok(()),
        }
    }

    /// The file's attempt broke off (the connection was lost): a resumable file's bytes so
    /// far are flushed and recorded for the next attempt; any other file is removed.
    pub fn suspend(&mut self, id: ReceiveId) {
        self.reserved.remove(&id);
        match self.open.remove(&id) {
            // Bytes that cannot be recorded cannot be counted on: the partial goes.
            Some(Target::Partial(mut p)) => match p.record(self.sync) {
                Ok(()) => {
                    self.keep_partial(p.base, &p.record);
                    self.bound(Some(&p.record.from));
                }
                Err(_) => partial::remove(&p.base),
            },
            Some(other) => self.discard(other),
            None => {}
        }
    }

    /// A partial file kept from now on, for its next attempt.
    fn keep_partial(&mut self, base: PathBuf, record: &Record) {
        let kept = KeptEntry {
            from: record.from.clone(),
            bytes: record.offset,
            since: crate::clock::std_now(),
            done: false,
        };
        self.kept.insert(base, kept);
    }

    /// The file is complete and verified: it leaves the sink, to be kept with
    /// [`ArrivedFile::keep`]. `None` for a file the sink does not have.
    pub fn arrived(&mut self, id: ReceiveId, name: &str) -> Option<ArrivedFile> {
        self.reserved.remove(&id);
        let target = self.open.remove(&id)?;
        if let Target::Partial(p) = &target {
            // Its record stays, done, for the window (for a sender that never heard).
            let done = KeptEntry {
                from: p.record.from.clone(),
                bytes: 0,
                since: crate::clock::std_now(),
                done: true,
            };
            self.kept.insert(p.base.clone(), done);
        }
        Some(ArrivedFile {
            target,
            org_file_name: sanitize_file_name(name),
            sync: self.sync,
        })
    }

    /// The file failed or was cancelled: its temporary or partial file is removed.
    pub fn abandon(&mut self, id: ReceiveId) {
        self.reserved.remove(&id);
        if let Some(target) = self.open.remove(&id) {
            self.discard(target);
        }
    }

    fn discard(&self, target: Target) {
        match target {
            // Unwritten bytes are dropped, not flushed; the temporary file deletes itself.
            Target::Temp(file) => drop(file.into_parts()),
            Target::Partial(p) => {
                drop(p.file.into_parts());
                partial::remove(&p.base);
            }
            Target::Repeat(_) => {}
        }
    }
}
