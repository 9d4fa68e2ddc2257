//! Resume keys of file sends, and reading a file's bytes by offset.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use bytes::Bytes;
use peermsg::wire::ResumeKey;

/// A key of a send's own for the file at `path` of `size` bytes: unique, kept while this
/// process lives.
pub(super) fn new_file_key(path: &Path, size: u64) -> ResumeKey {
    key_of(&[
        path.as_os_str().as_encoded_bytes(),
        &size.to_le_bytes(),
        &crate::clock::random16(),
    ])
}

/// A resume key from these parts (the first 16 bytes of their SHA-256).
pub(super) fn key_of(parts: &[&[u8]]) -> ResumeKey {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    let mut key = [0u8; 16];
    key.copy_from_slice(&hash.finalize()[..16]);
    ResumeKey(key)
}

/// The resume key of the file at `path` sent to `to`, the same every time while the file
/// is unchanged: from its canonical path, size and modification time. With it
/// ([`ClientHandle::send_file_with_key`](crate::ClientHandle::send_file_with_key)) a sender that was restarted continues where its
/// receiver's bytes end; a file changed since gets another key and starts over. (The
/// receiver also knows a file it kept already: the same unchanged file sent again to the
/// same user within the resume window is confirmed, not kept twice.)
pub fn file_resume_key(path: &Path, to: &str) -> std::io::Result<ResumeKey> {
    let canonical = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&canonical)?;
    let modified = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    Ok(key_of(&[
        canonical.as_os_str().as_encoded_bytes(),
        &meta.len().to_le_bytes(),
        &modified.to_le_bytes(),
        to.as_bytes(),
    ]))
}

/// `len` bytes of `file` from `offset`, read into memory that is not zeroed first.
pub(super) fn read_at(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<Bytes> {
    let mut reader = file;
    reader.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len as usize);
    reader.take(len).read_to_end(&mut buf)?;
    if (buf.len() as u64) < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Bytes::from(buf))
}
