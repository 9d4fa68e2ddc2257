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
                    let path = move_to_new_name(
                        &partial::data_path(&partial.base),
                        partial.base.parent().unwrap_or(Path::new(".")),
                    )?;
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

/// Moves the file at `from` to a new random name in `dir` and gives it: a new link, then
/// the old name removed. Not a rename over a name made first: on ext4 replacing a file
/// by rename writes the moved file's data out first (`auto_da_alloc`), which held a
/// received 1 GiB file's result back by about 0.4 s. Where `dir`'s file system has no
/// links (FAT, some network ones), the rename it is.
fn move_to_new_name(from: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    move_by(from, dir, |from, to| std::fs::hard_link(from, to))
}

/// [`move_to_new_name`] with `link` making the new link.
fn move_by(
    from: &Path,
    dir: &Path,
    link: impl Fn(&Path, &Path) -> std::io::Result<()>,
) -> std::io::Result<PathBuf> {
    let mut names = tempfile::Builder::new();
    names.prefix(".peermsg-").suffix(".kept");
    let path = match names.make_in(dir, |to| link(from, to)) {
        Ok(linked) => linked.into_temp_path().keep().map_err(|e| e.error)?,
        Err(_) => {
            // No link: the rename over a name made first, which goes if the rename fails.
            let path = names.tempfile_in(dir)?.into_temp_path();
            std::fs::rename(from, &path)?;
            return path.keep().map_err(|e| e.error);
        }
    };
    if let Err(error) = std::fs::remove_file(from) {
        let _ = std::fs::remove_file(&path);
        return Err(error);
    }
    Ok(path)
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

#[cfg(test)]
mod tests {
    use super::{move_by, move_to_new_name};

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_kept_file_moves_to_a_new_name_and_replaces_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("x.part");
        std::fs::write(&from, b"the bytes").unwrap();
        std::fs::write(dir.path().join("other"), b"left alone").unwrap();
        let path = move_to_new_name(&from, dir.path()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"the bytes");
        assert!(!from.exists(), "the old name is gone");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".peermsg-") && name.ends_with(".kept"),
            "{name}"
        );
        assert_eq!(names(dir.path()), vec![name, "other".to_string()]);
        assert_eq!(
            std::fs::read(dir.path().join("other")).unwrap(),
            b"left alone"
        );
    }

    #[test]
    fn a_file_that_cannot_move_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone.part");
        assert!(move_to_new_name(&missing, dir.path()).is_err());
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn where_links_fail_the_file_is_renamed_to_its_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("x.part");
        std::fs::write(&from, b"the bytes").unwrap();
        let no_links = |_: &std::path::Path, _: &std::path::Path| {
            Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
        };
        let path = move_by(&from, dir.path(), no_links).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"the bytes");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".peermsg-") && name.ends_with(".kept"),
            "{name}"
        );
        assert_eq!(names(dir.path()), vec![name]);
        // And when the rename fails too, no name made for it stays.
        let missing = dir.path().join("gone.part");
        assert!(move_by(&missing, dir.path(), no_links).is_err());
        assert_eq!(names(dir.path()).len(), 1);
    }
}
