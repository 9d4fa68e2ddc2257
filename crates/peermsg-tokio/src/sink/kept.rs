//! A file the sink kept, as the application receives it, and the record that lets a
//! repeat of it be confirmed without keeping it twice.

use super::*;
use crate::partial::{self};
use std::path::{Path, PathBuf};

/// A received file, all its bytes given to the sink, not kept yet: [`ArrivedFile::keep`]
/// does the slow part (flush, `fsync` if asked, persist), away from the task that drives
/// the connection.
#[derive(Debug)]
pub struct ArrivedFile {
    pub(super) target: Target,
    pub(super) org_file_name: String,
    pub(super) sync: bool,
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
pub struct DoneRecord(pub(super) PathBuf);

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
    pub(super) done_record: Option<DoneRecord>,
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
