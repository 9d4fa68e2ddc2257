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

/// `len` bytes of `file` from `offset`, in one read where the system allows: memory
/// zeroed first costs less than `read_to_end`'s reads, which start at 8 KiB and double
/// (six system calls for a 256 KiB piece).
pub(super) fn read_at(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<Bytes> {
    let len = usize::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut reader = file;
    reader.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; len];
    reader.read_exact(&mut buf)?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::read_at;
    use std::io::Write;

    #[test]
    fn a_piece_is_the_file_bytes_at_its_offset_and_a_short_one_is_an_error() {
        let mut file = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&bytes).unwrap();
        let piece = read_at(&file, 12_345, 256 * 1024).unwrap();
        assert_eq!(&piece[..], &bytes[12_345..12_345 + 256 * 1024]);
        // The file's last bytes, then one more than it holds.
        assert_eq!(&read_at(&file, 299_990, 10).unwrap()[..], &bytes[299_990..]);
        let short = read_at(&file, 299_990, 11).unwrap_err();
        assert_eq!(short.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
