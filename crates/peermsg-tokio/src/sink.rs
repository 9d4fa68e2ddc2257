//! The file sink: incoming files into temporary files inside one directory.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use peermsg::client::ReceiveId;
use tempfile::NamedTempFile;

/// Makes a received file name safe to show and to use inside a directory: the base name
/// only, no `..`, no path separators (`/` or `\`), no control characters, not empty, at most
/// 200 bytes. Whatever is left is never a path outside the directory.
///
/// ```
/// use peermsg_tokio::sanitize_file_name;
///
/// assert_eq!(sanitize_file_name("../../x"), "x");
/// assert_eq!(sanitize_file_name("/etc/passwd"), "passwd");
/// assert_eq!(sanitize_file_name("a\\b"), "b");
/// assert_eq!(sanitize_file_name("bad\u{0}name\n"), "bad_name_");
/// assert_eq!(sanitize_file_name(""), "file");
/// assert_eq!(sanitize_file_name(".."), "file");
/// ```
pub fn sanitize_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut clean: String = base
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    while clean.len() > 200 {
        clean.pop();
    }
    let clean = clean.trim().to_string();
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        return "file".to_string();
    }
    clean
}

/// Bytes gathered before one write to the file: a frame's payload is 16 KiB by default,
/// and one system call per frame cost more than the copy into this buffer.
const WRITE_BUFFER: usize = 256 * 1024;

/// Writes each incoming file to a temporary file in its directory; keeps it only when the
/// file arrived whole and verified, and removes it otherwise.
#[derive(Debug)]
pub struct FileSink {
    dir: PathBuf,
    open: HashMap<ReceiveId, BufWriter<NamedTempFile>>,
    sync: bool,
}

/// A received file, all its bytes given to the sink, not kept yet: [`ArrivedFile::keep`]
/// does the slow part (flush, `fsync` if asked, persist), away from the task that drives
/// the connection.
#[derive(Debug)]
pub struct ArrivedFile {
    file: BufWriter<NamedTempFile>,
    org_file_name: String,
    sync: bool,
}

impl ArrivedFile {
    /// Writes what is still buffered, syncs it to the disk if the sink was set to, and
    /// keeps the file. On any error the temporary file is removed: nothing half-written
    /// stays behind.
    pub fn keep(self) -> std::io::Result<SavedFile> {
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        if self.sync {
            file.as_file().sync_all()?;
        }
        let (_, path) = file.keep().map_err(|e| e.error)?;
        Ok(SavedFile {
            tmp_file: path,
            org_file_name: self.org_file_name,
        })
    }
}

/// A file the sink kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedFile {
    /// The temporary file, inside the sink's directory.
    pub tmp_file: PathBuf,
    /// The sender's name for it, sanitised.
    pub org_file_name: String,
}

impl FileSink {
    /// A sink writing into `dir`, which must exist and be writable.
    pub fn new(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        // Fail now, with a clear error, rather than at the first file.
        NamedTempFile::new_in(&dir)?;
        Ok(FileSink {
            dir,
            open: HashMap::new(),
            sync: false,
        })
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

    /// An offer arrived: a temporary file is made for it.
    pub fn begin(&mut self, id: ReceiveId, name: &str) -> std::io::Result<()> {
        let file = tempfile::Builder::new()
            .prefix(".peermsg-")
            .suffix(&format!("-{}.part", sanitize_file_name(name)))
            .tempfile_in(&self.dir)?;
        self.open
            .insert(id, BufWriter::with_capacity(WRITE_BUFFER, file));
        Ok(())
    }

    /// Bytes of the file, in order.
    pub fn write(&mut self, id: ReceiveId, data: &[u8]) -> std::io::Result<()> {
        match self.open.get_mut(&id) {
            Some(file) => file.write_all(data),
            None => Ok(()), // a file refused at its offer
        }
    }

    /// The file is complete and verified: it leaves the sink, to be kept with
    /// [`ArrivedFile::keep`]. `None` for a file the sink does not have.
    pub fn arrived(&mut self, id: ReceiveId, name: &str) -> Option<ArrivedFile> {
        let file = self.open.remove(&id)?;
        Some(ArrivedFile {
            file,
            org_file_name: sanitize_file_name(name),
            sync: self.sync,
        })
    }

    /// The file failed or was cancelled: its temporary file is removed.
    pub fn abandon(&mut self, id: ReceiveId) {
        if let Some(file) = self.open.remove(&id) {
            // Unwritten bytes are dropped, not flushed; the temporary file deletes itself.
            let _ = file.into_parts();
        }
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
            sink.begin(id, name).unwrap();
            sink.write(id, b"data").unwrap();
            let saved = sink.arrived(id, name).unwrap().keep().unwrap();
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
        sink.begin(ReceiveId(1), "big.iso").unwrap();
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
        sink.begin(ReceiveId(1), "a.txt").unwrap();
        sink.write(ReceiveId(1), &[9u8; 300 * 1024]).unwrap();
        let saved = sink.arrived(ReceiveId(1), "a.txt").unwrap().keep().unwrap();
        assert_eq!(
            std::fs::read(saved.tmp_file).unwrap(),
            vec![9u8; 300 * 1024]
        );
        assert!(sink.arrived(ReceiveId(2), "b.txt").is_none());
    }
}
