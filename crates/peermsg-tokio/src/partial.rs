//! Durable partial files: what the sink holds of a resumable transfer, written so that a
//! killed process resumes from bytes really on disk.
//!
//! Each resumable transfer has a data file and a record beside it in the sink's
//! directory, named from its sender and resume key. The record says how many bytes of the
//! data file count and their CRC-32C. The order is the guarantee: bytes are written and
//! flushed to the data file (and synced, if the sink is set to) before a record that
//! counts them replaces the old one (write to a temporary name, then rename), so a
//! record never counts bytes that are not in the file. On start, a data file longer than
//! its record is cut back to it. Once the file is kept, its record stays as a "done"
//! record for the resume window, so a sender that never heard of the delivery and sends
//! it again is answered "all of it" and the file is not kept twice.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use peermsg::wire::{ResumeKey, UserId};
use sha2::{Digest as _, Sha256};

/// What a record holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub from: UserId,
    pub key: ResumeKey,
    pub size: u64,
    /// Bytes of the data file that count.
    pub offset: u64,
    /// CRC-32C of those bytes.
    pub crc: u32,
    /// The sender's name for the file, sanitised.
    pub name: String,
    /// The file was kept (its data file has moved to its place).
    pub done: bool,
    /// Where the kept file is: where the sink kept it, then where the application said
    /// it moved it. A repeat is recognised only while that file is there, whole and
    /// unchanged.
    pub saved: Option<PathBuf>,
}

const MAGIC: &str = "peermsg-partial 1";
const PREFIX: &str = ".peermsg-resume-";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The data file's and the record's paths for a transfer, without their extensions: one
/// name per sender and key.
pub(crate) fn base(dir: &Path, from: &UserId, key: &ResumeKey) -> PathBuf {
    let mut hash = Sha256::new();
    hash.update(from.as_bytes());
    hash.update([0]);
    hash.update(key.0);
    dir.join(format!("{PREFIX}{}", hex(&hash.finalize()[..16])))
}

pub(crate) fn data_path(base: &Path) -> PathBuf {
    base.with_extension("part")
}

pub(crate) fn record_path(base: &Path) -> PathBuf {
    base.with_extension("rec")
}

impl Record {
    fn text(&self) -> String {
        let mut text = format!(
            "{MAGIC}\nfrom {}\nkey {}\nsize {}\noffset {}\ncrc {}\ndone {}\nname {}\n",
            hex(self.from.as_bytes()),
            hex(&self.key.0),
            self.size,
            self.offset,
            self.crc,
            u8::from(self.done),
            self.name
        );
        if let Some(saved) = &self.saved {
            text.push_str(&format!(
                "saved {}\n",
                hex(saved.as_os_str().as_encoded_bytes())
            ));
        }
        text
    }

    fn parse(text: &str) -> Option<Record> {
        let mut lines = text.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let mut field = |name: &str| {
            let line = lines.next()?;
            line.strip_prefix(name)?
                .strip_prefix(' ')
                .map(str::to_string)
        };
        let from = String::from_utf8(unhex(&field("from")?)?).ok()?;
        let key: [u8; 16] = unhex(&field("key")?)?.try_into().ok()?;
        Some(Record {
            from: UserId::new(&from).ok()?,
            key: ResumeKey(key),
            size: field("size")?.parse().ok()?,
            offset: field("offset")?.parse().ok()?,
            crc: field("crc")?.parse().ok()?,
            done: field("done")? == "1",
            name: field("name")?,
            // Optional, last: records written before it was kept have none.
            saved: field("saved")
                .and_then(|hexed| unhex(&hexed))
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .map(PathBuf::from),
        })
    }

    /// Replaces the record at `base` with this one, in one step (a new temporary file of a
    /// random name, never one planted there, renamed over it), synced first if `sync`.
    pub(crate) fn save(&self, base: &Path, sync: bool) -> std::io::Result<()> {
        let path = record_path(base);
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}tmp-"))
            .suffix(".rec.tmp")
            .tempfile_in(path.parent().unwrap_or(Path::new(".")))?;
        tmp.write_all(self.text().as_bytes())?;
        if sync {
            tmp.as_file().sync_all()?;
        }
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    /// The record at `base`, if there is a readable one.
    pub(crate) fn load(base: &Path) -> Option<Record> {
        Record::parse(&std::fs::read_to_string(record_path(base)).ok()?)
    }
}

/// The length of the regular file at `path`: `None` if there is none (missing, or a link
/// or anything else planted under the name, never followed).
pub(crate) fn regular_len(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_file())
        .map(|m| m.len())
}

/// Removes a transfer's data file and record.
pub(crate) fn remove(base: &Path) {
    let _ = std::fs::remove_file(data_path(base));
    let _ = std::fs::remove_file(record_path(base));
}

/// Makes `dir` consistent at start: partials and done records older than `window` go,
/// data files longer than their records are cut back to them, data files shorter than
/// their records (bytes the system lost: the machine failed without `sync`) and data
/// files without a record go, and so do temporary files of non-resumable transfers older
/// than `window` (a process killed while receiving them).
///
/// Gives what stays: each record's base path, the record, and its age.
pub(crate) fn tidy(
    dir: &Path,
    window: Duration,
) -> std::io::Result<Vec<(PathBuf, Record, Duration)>> {
    let now = crate::clock::system_now();
    let age = |path: &Path| {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map(|t| now.duration_since(t).unwrap_or_default())
            .unwrap_or(Duration::MAX)
    };
    let old = |path: &Path| age(path) >= window;
    let mut stays = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(rest) = name.strip_prefix(PREFIX) {
            let base = dir.join(format!("{PREFIX}{}", rest.split('.').next().unwrap_or("")));
            if name.ends_with(".rec.tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".rec") {
                // A data file: its record decides (below); alone, it goes.
                if !record_path(&base).exists() {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            match Record::load(&base) {
                Some(_) if old(&path) => remove(&base),
                Some(r) if r.done => stays.push((base, r, age(&path))),
                Some(r) => {
                    let data = data_path(&base);
                    match regular_len(&data) {
                        Some(len) if len > r.offset => {
                            File::options().write(true).open(&data)?.set_len(r.offset)?;
                            stays.push((base, r, age(&path)));
                        }
                        Some(len) if len == r.offset => stays.push((base, r, age(&path))),
                        // Shorter than recorded, missing, or a link planted under the name
                        // (it goes itself, not what it points to).
                        _ => remove(&base),
                    }
                }
                None => remove(&base),
            }
        } else if name.starts_with(".peermsg-") && name.ends_with(".part") && old(&path) {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(stays)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            from: UserId::new("alice smith").unwrap(),
            key: ResumeKey([0xab; 16]),
            size: 1 << 40,
            offset: 4 << 20,
            crc: 0xdead_beef,
            name: "a b.iso".to_string(),
            done: false,
            saved: None,
        }
    }

    #[test]
    fn a_record_reads_back_and_garbage_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let base = base(dir.path(), &record().from, &record().key);
        record().save(&base, true).unwrap();
        assert_eq!(Record::load(&base), Some(record()));
        std::fs::write(record_path(&base), "peermsg-partial 1\nfrom zz\n").unwrap();
        assert_eq!(Record::load(&base), None);
    }

    #[test]
    fn tidy_cuts_data_back_to_its_record_and_removes_what_cannot_count() {
        let dir = tempfile::tempdir().unwrap();
        let r = record();
        // A data file longer than its record: cut back.
        let longer = base(dir.path(), &r.from, &ResumeKey([1; 16]));
        std::fs::write(data_path(&longer), vec![7u8; 5 << 20]).unwrap();
        r.save(&longer, false).unwrap();
        // Shorter than its record: removed.
        let shorter = base(dir.path(), &r.from, &ResumeKey([2; 16]));
        std::fs::write(data_path(&shorter), vec![7u8; 10]).unwrap();
        r.save(&shorter, false).unwrap();
        // No record: removed.
        let orphan = base(dir.path(), &r.from, &ResumeKey([3; 16]));
        std::fs::write(data_path(&orphan), b"x").unwrap();
        tidy(dir.path(), Duration::from_secs(300)).unwrap();
        assert_eq!(
            std::fs::metadata(data_path(&longer)).unwrap().len(),
            4 << 20
        );
        assert!(!data_path(&shorter).exists() && !record_path(&shorter).exists());
        assert!(!data_path(&orphan).exists());
        // Past the window, everything of it goes.
        tidy(dir.path(), Duration::ZERO).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn links_planted_under_a_records_names_are_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, vec![1u8; 8 << 20]).unwrap();
        let r = record();
        let base = base(dir.path(), &r.from, &r.key);
        // Under the data file's name, with a record that counts fewer bytes: tidy takes
        // the link away and cuts nothing.
        std::os::unix::fs::symlink(&victim, data_path(&base)).unwrap();
        r.save(&base, false).unwrap();
        tidy(dir.path(), Duration::from_secs(300)).unwrap();
        assert!(std::fs::symlink_metadata(data_path(&base)).is_err());
        assert!(!record_path(&base).exists());
        // Under the name a record was once written through before it took its place.
        let planted = record_path(&base).with_extension("rec.tmp");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        r.save(&base, false).unwrap();
        assert_eq!(Record::load(&base), Some(r));
        assert_eq!(std::fs::read(&victim).unwrap(), vec![1u8; 8 << 20]);
    }
}
