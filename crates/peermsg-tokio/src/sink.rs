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

/// The code a failure to write an incoming file gives its sender: `FILE_NO_SPACE` when
/// the disk has no room for it, `FILE_WRITE_ERR` for any other failure.
///
/// ```
/// use peermsg_tokio::{write_error_code, ErrorCode};
///
/// let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
/// assert_eq!(write_error_code(&full), ErrorCode::FILE_NO_SPACE);
/// let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
/// assert_eq!(write_error_code(&denied), ErrorCode::FILE_WRITE_ERR);
/// ```
pub fn write_error_code(error: &std::io::Error) -> peermsg::ErrorCode {
    match error.kind() {
        std::io::ErrorKind::StorageFull => peermsg::ErrorCode::FILE_NO_SPACE,
        _ => peermsg::ErrorCode::FILE_WRITE_ERR,
    }
}

/// Whether `c` is a bidirectional control character (U+061C, U+200E, U+200F, U+202A to
/// U+202E, U+2066 to U+2069): in a name it can make `gpj.exe` show as `exe.jpg`.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Makes a received file name safe to show and to use inside a directory: the base name
/// only, no `..`, no path separators (`/` or `\`), no control characters nor
/// bidirectional controls ([`is_bidi_control`]), not hidden (a leading `.` becomes `_`),
/// not empty, at most 200 bytes. Whatever is left is never a path outside the directory.
///
/// ```
/// use peermsg_tokio::sanitize_file_name;
///
/// assert_eq!(sanitize_file_name("../../x"), "x");
/// assert_eq!(sanitize_file_name("/etc/passwd"), "passwd");
/// assert_eq!(sanitize_file_name("a\\b"), "b");
/// assert_eq!(sanitize_file_name("bad\u{0}name\n"), "bad_name_");
/// assert_eq!(sanitize_file_name("invoice\u{202e}fdp.exe"), "invoice_fdp.exe");
/// assert_eq!(sanitize_file_name(".bashrc"), "_bashrc");
/// assert_eq!(sanitize_file_name(""), "file");
/// assert_eq!(sanitize_file_name(".."), "file");
/// ```
pub fn sanitize_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut clean: String = base
        .chars()
        .map(|c| {
            if c.is_control() || is_bidi_control(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    while clean.len() > 200 {
        clean.pop();
    }
    let clean = clean.trim().to_string();
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        return "file".to_string();
    }
    // A hidden name would land out of sight (and among the sink's own `.peermsg-` files).
    match clean.strip_prefix('.') {
        Some(rest) => format!("_{rest}"),
        None => clean,
    }
}

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
    let mut digest = 0u32;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return digest == crc,
            Ok(n) => digest = crc32c::crc32c_append(digest, &buf[..n]),
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

/// A received file, all its bytes given to the sink, not kept yet: [`ArrivedFile::keep`]
/// does the slow part (flush, `fsync` if asked, persist), away from the task that drives
/// the connection.
#[derive(Debug)]
pub struct ArrivedFile {
    target: Target,
    org_file_name: String,
    sync: bool,
}

impl ArrivedFile {
    /// Writes what is still buffered, syncs it to the disk if the sink was set to, and
    /// keeps the file. On any error the temporary file is removed: nothing half-written
    /// stays behind. [`Kept::Already`] for a resumable file an earlier attempt delivered,
    /// still where the application saved it.
    pub fn keep(self) -> std::io::Result<Kept> {
        let tmp_file = match self.target {
            Target::Temp(file) => {
                let file = file.into_inner().map_err(|e| e.into_error())?;
                if self.sync {
                    file.as_file().sync_all()?;
                }
                file.keep().map_err(|e| e.error)?.1
            }
            Target::Partial(mut partial) => {
                let kept = partial.record(self.sync).and_then(|()| {
                    // The data file moves to a name of its own; the record stays, done, for
                    // a sender that sends it again.
                    let path = tempfile::Builder::new()
                        .prefix(".peermsg-")
                        .suffix(".kept")
                        .tempfile_in(partial.base.parent().unwrap_or(Path::new(".")))?
                        .into_temp_path()
                        .keep()
                        .map_err(|e| e.error)?;
                    std::fs::rename(partial::data_path(&partial.base), &path)?;
                    partial.record.done = true;
                    // Where it is now, until the application says where it moved it.
                    partial.record.saved = Some(path.clone());
                    partial.record.save(&partial.base, self.sync)?;
                    Ok(path)
                });
                if kept.is_err() {
                    partial::remove(&partial.base);
                }
                return Ok(Kept::Saved(SavedFile {
                    tmp_file: kept?,
                    org_file_name: self.org_file_name,
                    done_record: Some(DoneRecord(partial.base)),
                }));
            }
            Target::Repeat(path) => return Ok(Kept::Already(path)),
        };
        Ok(Kept::Saved(SavedFile {
            tmp_file,
            org_file_name: self.org_file_name,
            done_record: None,
        }))
    }
}

/// What [`ArrivedFile::keep`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kept {
    /// The file is kept now.
    Saved(SavedFile),
    /// An earlier attempt delivered this file (its sender never heard), and it is still
    /// where the application saved it ([`FileSink::saved_at`]), whole and unchanged: it
    /// is not kept twice.
    Already(PathBuf),
}

/// The record of a resumable file kept, by which a sender's repeat is recognised: see
/// [`SavedFile::done_record`] and [`FileSink::saved_at`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoneRecord(PathBuf);

/// A file the sink kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedFile {
    /// The temporary file, inside the sink's directory.
    pub tmp_file: PathBuf,
    /// The sender's name for it, sanitised.
    pub org_file_name: String,
    /// A resumable file's record, marked done (so a sender that never heard is answered
    /// "all of it" while the file is where it was saved): it goes with the file if the
    /// file is given up.
    done_record: Option<DoneRecord>,
}

impl SavedFile {
    /// Gives the kept file up (its message was cancelled as it was kept): the file goes,
    /// and so does a resumable file's done record, so sending it again delivers it again
    /// instead of being confirmed as a repeat.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.tmp_file);
        if let Some(DoneRecord(base)) = &self.done_record {
            partial::remove(base);
        }
    }

    /// A resumable file's record: give it to [`FileSink::saved_at`] with the place the
    /// application moved the file to, so that a repeat is recognised there.
    pub fn done_record(&self) -> Option<DoneRecord> {
        self.done_record.clone()
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
                p.crc = match digest {
                    Some(Digest::Crc32c(crc)) => crc,
                    None => crc32c::crc32c_append(p.crc, data),
                };
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

/// The file of a [`Kept::Saved`], in tests.
#[cfg(test)]
fn saved_file(kept: Kept) -> SavedFile {
    match kept {
        Kept::Saved(saved) => saved,
        other => panic!("not kept now: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_stay_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::new(dir.path()).unwrap();
        let names = [
            "../../x",
            "/etc/passwd",
            "a\\b",
            "ctl\u{1}\u{7f}\n",
            "",
            "..",
            ".",
            "x/../../..",
            "C:\\Windows\\evil",
        ];
        for (i, name) in names.iter().enumerate() {
            let id = ReceiveId(i as u64);
            sink.begin(id, name, 4).unwrap();
            sink.write(id, b"data").unwrap();
            let saved = sink
                .arrived(id, name)
                .unwrap()
                .keep()
                .map(saved_file)
                .unwrap();
            assert_eq!(saved.tmp_file.parent(), Some(dir.path()), "{name:?}");
            assert!(!saved.org_file_name.contains(['/', '\\']) && saved.org_file_name != "..");
            assert!(!saved.org_file_name.chars().any(char::is_control));
            assert_eq!(std::fs::read(&saved.tmp_file).unwrap(), b"data");
        }
    }

    #[test]
    fn abandoned_files_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::new(dir.path()).unwrap();
        sink.begin(ReceiveId(1), "big.iso", 1 << 20).unwrap();
        sink.write(ReceiveId(1), b"partial").unwrap();
        sink.abandon(ReceiveId(1));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

#[cfg(test)]
mod keep_tests {
    use super::*;

    #[test]
    fn a_file_kept_synced_is_whole_and_one_not_arrived_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::new(dir.path()).unwrap();
        sink.set_sync(true);
        sink.begin(ReceiveId(1), "a.txt", 5).unwrap();
        sink.write(ReceiveId(1), &[9u8; 300 * 1024]).unwrap();
        let saved = sink
            .arrived(ReceiveId(1), "a.txt")
            .unwrap()
            .keep()
            .map(saved_file)
            .unwrap();
        assert_eq!(
            std::fs::read(saved.tmp_file).unwrap(),
            vec![9u8; 300 * 1024]
        );
        assert!(sink.arrived(ReceiveId(2), "b.txt").is_none());
    }
}

#[cfg(test)]
mod resume_tests {
    use super::*;

    fn alice() -> UserId {
        UserId::new("alice").unwrap()
    }

    #[test]
    fn a_partial_survives_the_sink_and_resumes_at_its_recorded_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let key = ResumeKey([5; 16]);
        let bytes: Vec<u8> = (0..(RECORD_EVERY as usize + 300_000))
            .map(|i| (i % 253) as u8)
            .collect();
        let mut sink = FileSink::new(dir.path()).unwrap();
        let id = ReceiveId(1);
        let size = bytes.len() as u64 * 2;
        assert_eq!(
            sink.begin_resumable(id, &alice(), key, "f.bin", size)
                .unwrap(),
            (0, Digest::Crc32c(0))
        );
        let (first, rest) = bytes.split_at(RECORD_EVERY as usize);
        sink.write(id, first).unwrap();
        sink.write(id, rest).unwrap();
        // Killed here: only what was recorded (the first RECORD_EVERY bytes) counts; the
        // rest reached the file (the buffer is flushed on drop) and is cut back.
        drop(sink);
        let mut sink = FileSink::new(dir.path()).unwrap();
        let (offset, digest) = sink
            .begin_resumable(ReceiveId(7), &alice(), key, "f.bin", size)
            .unwrap();
        assert_eq!(offset, RECORD_EVERY);
        let head = &bytes[..offset as usize];
        assert_eq!(digest, Digest::Crc32c(crc32c::crc32c(head)));
        // A lost connection records everything given so far.
        sink.write(ReceiveId(7), &bytes[offset as usize..]).unwrap();
        sink.suspend(ReceiveId(7));
        let mut sink = FileSink::new(dir.path()).unwrap();
        let (offset, _) = sink
            .begin_resumable(ReceiveId(8), &alice(), key, "f.bin", size)
            .unwrap();
        assert_eq!(offset, bytes.len() as u64);
        sink.write(ReceiveId(8), &bytes).unwrap();
        let saved = sink
            .arrived(ReceiveId(8), "f.bin")
            .unwrap()
            .keep()
            .map(saved_file)
            .unwrap();
        assert_eq!(
            std::fs::read(&saved.tmp_file).unwrap(),
            [&bytes[..], &bytes[..]].concat()
        );
        // Offered again (its sender never heard) while the kept file is where the sink
        // put it: all of it is held, and it is not kept again.
        let mut sink = FileSink::new(dir.path()).unwrap();
        let whole = [&bytes[..], &bytes[..]].concat();
        assert_eq!(
            sink.begin_resumable(ReceiveId(9), &alice(), key, "f.bin", size)
                .unwrap(),
            (size, Digest::Crc32c(crc32c::crc32c(&whole)))
        );
        let kept = sink.arrived(ReceiveId(9), "f.bin").unwrap().keep().unwrap();
        assert_eq!(kept, Kept::Already(saved.tmp_file.clone()));
        // Moved without a word: a new delivery, all of it again.
        std::fs::rename(&saved.tmp_file, dir.path().join("elsewhere")).unwrap();
        assert_eq!(
            sink.begin_resumable(ReceiveId(10), &alice(), key, "f.bin", size)
                .unwrap(),
            (0, Digest::Crc32c(0))
        );
    }

    #[test]
    fn a_repeat_is_recognised_only_while_the_saved_file_is_there_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let key = ResumeKey([5; 16]);
        let mut sink = FileSink::new(dir.path()).unwrap();
        let deliver = |sink: &mut FileSink, id| {
            let got = sink
                .begin_resumable(ReceiveId(id), &alice(), key, "f", 100)
                .unwrap();
            assert_eq!(got, (0, Digest::Crc32c(0)), "a new delivery");
            sink.write(ReceiveId(id), &[3; 100]).unwrap();
            let saved = sink
                .arrived(ReceiveId(id), "f")
                .unwrap()
                .keep()
                .map(saved_file)
                .unwrap();
            let place = dir.path().join(format!("f-{id}"));
            std::fs::rename(&saved.tmp_file, &place).unwrap();
            sink.saved_at(saved.done_record().unwrap(), &place).unwrap();
            place
        };
        let place = deliver(&mut sink, 1);
        // Sent again: held whole where it was saved, so answered all of it, not kept twice.
        let whole = Digest::Crc32c(crc32c::crc32c(&[3; 100]));
        let got = sink
            .begin_resumable(ReceiveId(2), &alice(), key, "f", 100)
            .unwrap();
        assert_eq!(got, (100, whole));
        let kept = sink.arrived(ReceiveId(2), "f").unwrap().keep().unwrap();
        assert_eq!(kept, Kept::Already(place.clone()));
        // Changed there, then gone: each time a new delivery.
        std::fs::write(&place, [4; 100]).unwrap();
        let place = deliver(&mut sink, 3);
        std::fs::remove_file(&place).unwrap();
        deliver(&mut sink, 4);
    }

    #[test]
    fn an_attempt_still_open_gives_way_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let key = ResumeKey([8; 16]);
        let mut sink = FileSink::new(dir.path()).unwrap();
        sink.begin_resumable(ReceiveId(1), &alice(), key, "f", 100)
            .unwrap();
        sink.write(ReceiveId(1), &[1; 30]).unwrap();
        // The sender is back before the first attempt's end was heard.
        let (offset, _) = sink
            .begin_resumable(ReceiveId(2), &alice(), key, "f", 100)
            .unwrap();
        assert_eq!(offset, 30);
        sink.write(ReceiveId(2), &[2; 70]).unwrap();
        // The first attempt's end, heard late, changes nothing.
        sink.write(ReceiveId(1), &[9; 5]).unwrap();
        sink.suspend(ReceiveId(1));
        let saved = sink
            .arrived(ReceiveId(2), "f")
            .unwrap()
            .keep()
            .map(saved_file)
            .unwrap();
        assert_eq!(
            std::fs::read(saved.tmp_file).unwrap(),
            [[1; 30].as_slice(), &[2; 70]].concat()
        );
    }

    #[test]
    fn a_link_planted_under_a_partials_name_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let key = ResumeKey([4; 16]);
        let base = partial::base(dir.path(), &alice(), &key);
        // Planted while the listener runs (at its start, the sink removes such files).
        let mut sink = FileSink::new(dir.path()).unwrap();
        std::os::unix::fs::symlink(&target, partial::data_path(&base)).unwrap();
        sink.begin_resumable(ReceiveId(1), &alice(), key, "f", 10)
            .unwrap();
        sink.write(ReceiveId(1), b"0123456789").unwrap();
        sink.suspend(ReceiveId(1));
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    }

    #[test]
    fn another_sender_or_size_under_the_same_key_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let key = ResumeKey([6; 16]);
        let mut sink = FileSink::new(dir.path()).unwrap();
        sink.begin_resumable(ReceiveId(1), &alice(), key, "f", 100)
            .unwrap();
        sink.write(ReceiveId(1), &[1; 60]).unwrap();
        sink.suspend(ReceiveId(1));
        let mallory = UserId::new("mallory").unwrap();
        let got = sink
            .begin_resumable(ReceiveId(2), &mallory, key, "f", 100)
            .unwrap();
        assert_eq!(got.0, 0, "keyed by sender too");
        let got = sink
            .begin_resumable(ReceiveId(3), &alice(), key, "f", 101)
            .unwrap();
        assert_eq!(got.0, 0, "another size");
        // An abandoned (cancelled) partial leaves nothing.
        sink.abandon(ReceiveId(2));
        sink.abandon(ReceiveId(3));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_kept_file_given_up_leaves_nothing_and_is_received_again_whole() {
        let dir = tempfile::tempdir().unwrap();
        let key = ResumeKey([9; 16]);
        let mut sink = FileSink::new(dir.path()).unwrap();
        sink.begin_resumable(ReceiveId(1), &alice(), key, "f", 100)
            .unwrap();
        sink.write(ReceiveId(1), &[3; 100]).unwrap();
        let saved = sink
            .arrived(ReceiveId(1), "f")
            .unwrap()
            .keep()
            .map(saved_file);
        // Cancelled as it was kept: the file and its done record go.
        saved.unwrap().discard();
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        // Sent again, it is not taken for a repeat of a delivered file: all of it comes.
        let got = sink
            .begin_resumable(ReceiveId(2), &alice(), key, "f", 100)
            .unwrap();
        assert_eq!(got, (0, Digest::Crc32c(0)));
        sink.write(ReceiveId(2), &[3; 100]).unwrap();
        let saved = sink
            .arrived(ReceiveId(2), "f")
            .unwrap()
            .keep()
            .map(saved_file);
        assert_eq!(std::fs::read(saved.unwrap().tmp_file).unwrap(), [3; 100]);
    }

    /// `from` leaves `n` partial files of `size` bytes, `bytes` of each written, each under
    /// a new key (an attempt cut by a lost connection, again and again).
    fn leave_partials(sink: &mut FileSink, from: &UserId, n: u8, size: u64, bytes: usize) {
        for k in 0..n {
            let id = ReceiveId(u64::from(k) + 1000);
            let key = ResumeKey([k; 16]);
            sink.begin_resumable(id, from, key, "f.bin", size).unwrap();
            sink.write(id, &vec![k; bytes]).unwrap();
            sink.suspend(id);
        }
    }

    fn partial_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".part")
            })
            .count()
    }

    #[test]
    fn kept_partials_stay_within_each_senders_bounds_and_in_all() {
        let dir = tempfile::tempdir().unwrap();
        let limits = KeptLimits {
            per_sender: 4,
            per_sender_bytes: 10_000,
            total: 6,
            ..KeptLimits::default()
        };
        let mut sink = FileSink::with_limits(dir.path(), limits).unwrap();
        let carol = UserId::new("carol").unwrap();
        let mallory = UserId::new("mallory").unwrap();
        leave_partials(&mut sink, &carol, 2, 1000, 100);
        // Mallory leaves 20: only his last 4 stay, and carol's are untouched.
        leave_partials(&mut sink, &mallory, 20, 1000, 100);
        assert_eq!(sink.kept(), (6, 600, 0));
        assert_eq!(partial_files(dir.path()), 6);
        let base = partial::base(dir.path(), &carol, &ResumeKey([1; 16]));
        assert_eq!(partial::Record::load(&base).unwrap().offset, 100);
        // By bytes too: 3 partials of 4,000 bytes pass his 10,000.
        leave_partials(&mut sink, &mallory, 3, 8000, 4000);
        let (count, bytes, _) = sink.kept();
        assert!(
            count <= 6 && bytes <= 200 + 10_000,
            "{count} files, {bytes} bytes"
        );
        // A new sink over the same directory (a new connection) keeps the same bounds.
        let mut again = FileSink::with_limits(dir.path(), limits).unwrap();
        assert_eq!(again.kept(), sink.kept());
    }

    #[test]
    fn kept_partials_expire_while_the_sink_runs() {
        let dir = tempfile::tempdir().unwrap();
        let limits = KeptLimits {
            window: Duration::from_millis(200),
            ..KeptLimits::default()
        };
        let mut sink = FileSink::with_limits(dir.path(), limits).unwrap();
        leave_partials(&mut sink, &alice(), 3, 1000, 100);
        assert_eq!(sink.kept().0, 3);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(sink.kept(), (0, 0, 0));
        assert_eq!(partial_files(dir.path()), 0);
    }
}
