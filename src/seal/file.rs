//! Sealed files (docs/PROTOCOL.md, "Sealed files"): a file's bytes go in records of
//! [`RECORD`] bytes, each sealed with ChaCha20-Poly1305 under a key of its own for this
//! attempt, numbered in its nonce, the last one marked. Its key, plain size and name go in
//! the `OPEN`'s `seal` field, sealed for the receiver like a message. A relay that alters,
//! moves, drops or repeats a record, or cuts the file short, breaks a record's seal.
//!
//! On the wire a sealed file is its records: offsets, credit and sizes count them, each
//! record `RECORD + 16` bytes (the last one shorter). The applications at both ends see
//! the plain file: reads, `FileData`, progress, resume offsets and digests are of its
//! plain bytes. The digests `END` and `RESUME_FROM` carry are of the plain bytes, masked
//! with values only the two ends can make from the file's key, so the relay learns
//! nothing of the contents from them. This module maps one to the other and seals and
//! opens records: the one place it is done.

use alloc::vec::Vec;

pub(crate) use super::aead::Cipher;
use super::aead::{Aead, Nonce};
use bytes::{Bytes, BytesMut};

use crate::wire::{Digest, ResumeKey, Text};

use super::TAG;

/// Plain bytes in a record (all but the last).
pub const RECORD: u64 = 64 * 1024;
/// A whole record's bytes on the wire.
pub(crate) const RECORD_WIRE: u64 = RECORD + TAG as u64;

/// What the sealed header holds before the resume key: the record cipher, the file key
/// and the plain size.
const HEADER_FIXED: usize = 1 + 32 + 8;

/// The wire size of a file of `plain` bytes.
pub(crate) fn wire_size(plain: u64) -> u64 {
    plain.saturating_add(plain.div_ceil(RECORD).saturating_mul(TAG as u64))
}

/// The plain bytes before wire offset `wire` (the whole records before it, and what of the
/// plain part of the one it falls in), for progress.
pub(crate) fn plain_before(wire: u64) -> u64 {
    let (records, within) = (wire / RECORD_WIRE, wire % RECORD_WIRE);
    records * RECORD + within.min(RECORD)
}

/// The wire offset where plain offset `plain` of a file of `size` plain bytes starts, if it
/// is at a record's start or the end.
pub(crate) fn wire_at(plain: u64, size: u64) -> Option<u64> {
    match plain {
        p if p == size => Some(wire_size(size)),
        p if p < size && p % RECORD == 0 => Some(p / RECORD * RECORD_WIRE),
        _ => None,
    }
}

/// The plain offset where wire offset `wire` of a file of `size` plain bytes starts, if it
/// is at a record's start or the end.
pub(crate) fn plain_at(wire: u64, size: u64) -> Option<u64> {
    match wire {
        w if w == wire_size(size) => Some(size),
        w if w < wire_size(size) && w % RECORD_WIRE == 0 => Some(w / RECORD_WIRE * RECORD),
        _ => None,
    }
}

/// The resume key a sealed file carries for the key its application gave: its own, so
/// that what a receiver holds of the file sent plain (at any offset) is never taken for
/// what it holds of it sealed (at a record's start).
pub(crate) fn resume_key(key: ResumeKey) -> ResumeKey {
    use sha2::{Digest as _, Sha256};
    let hash = Sha256::new()
        .chain_update(b"peermsg sealed file")
        .chain_update(key.0)
        .finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash[..16]);
    ResumeKey(out)
}

/// Which digest a mask hides.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Masked {
    /// `END`'s, of the whole file.
    End,
    /// `RESUME_FROM`'s, of the bytes the receiver holds.
    Resume,
}

/// A sealed file's key for this attempt: seals or opens its records, masks its digests.
pub(crate) struct FileSeal {
    /// `None` only if the cipher refused the key (it does not): every record is then
    /// broken.
    aead: Option<Aead>,
    /// The file's plain size.
    size: u64,
    masks: [u32; 2],
}

impl core::fmt::Debug for FileSeal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FileSeal")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A record's nonce: its kind (1 a record, 2 the last record, 3 the masks) and number.
fn nonce(kind: u8, number: u64) -> Nonce {
    let mut nonce = Nonce::default();
    nonce[0] = kind;
    nonce[4..].copy_from_slice(&number.to_be_bytes());
    nonce
}

impl FileSeal {
    /// The seal of the file `header` describes: its records under its cipher and key.
    pub(crate) fn new(header: &Header) -> Self {
        let size = header.size;
        let aead = Aead::new(header.cipher, &header.key);
        // The masks are the key stream at a nonce no record uses.
        let mut stream = [0u8; 8];
        let masks = match aead
            .as_ref()
            .and_then(|a| a.seal(nonce(3, 0), &[], &mut stream))
        {
            Some(_) => [
                u32::from_be_bytes([stream[0], stream[1], stream[2], stream[3]]),
                u32::from_be_bytes([stream[4], stream[5], stream[6], stream[7]]),
            ],
            None => [0, 0],
        };
        FileSeal { aead, size, masks }
    }

    /// The file's plain size.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The file's size on the wire.
    pub(crate) fn wire_size(&self) -> u64 {
        wire_size(self.size)
    }

    /// Record `number`'s nonce kind: the last record is marked, so a file cut at a
    /// record's end does not open.
    fn kind_of(&self, number: u64) -> u8 {
        match number.saturating_add(1).saturating_mul(RECORD) >= self.size {
            true => 2,
            false => 1,
        }
    }

    /// Seals `plain`, whole records from plain offset `at` (a record's start), onto `out`.
    pub(crate) fn seal_records(&self, at: u64, plain: &[u8], out: &mut BytesMut) {
        for (number, record) in (at / RECORD..).zip(plain.chunks(RECORD as usize)) {
            let start = out.len();
            out.extend_from_slice(record);
            let nonce = nonce(self.kind_of(number), number);
            let sealed = self
                .aead
                .as_ref()
                .and_then(|a| a.seal(nonce, &[], &mut out[start..]));
            // Sealing a record of at most 64 KiB does not fail; if it did, the record goes
            // out broken and its receiver refuses it (`SEAL_BROKEN`).
            out.extend_from_slice(&sealed.unwrap_or([0; TAG]));
        }
    }

    /// Record `number` opened from its wire bytes, or `None` if it does not open.
    pub(crate) fn open_record(&self, number: u64, mut wire: BytesMut) -> Option<Bytes> {
        let body = wire.len().checked_sub(TAG)?;
        let tag = <[u8; TAG]>::try_from(&wire[body..]).ok()?;
        let nonce = nonce(self.kind_of(number), number);
        if !self.aead.as_ref()?.open(nonce, &[], &mut wire[..body], tag) {
            return None;
        }
        wire.truncate(body);
        Some(wire.freeze())
    }

    /// `digest` as it goes on the wire (or back from it): masked.
    pub(crate) fn mask(&self, digest: Digest, which: Masked) -> Digest {
        let Digest::Crc32c(value) = digest;
        Digest::Crc32c(value ^ self.masks[which as usize])
    }
}

/// A sealed file's header, as its `OPEN` carries it sealed: the record cipher, the file
/// key, the plain size, the resume key (the one the `OPEN` may carry, so that a relay
/// cannot put another on it), the name.
pub(crate) struct Header {
    pub(crate) cipher: Cipher,
    pub(crate) key: [u8; 32],
    pub(crate) size: u64,
    pub(crate) resume_key: Option<ResumeKey>,
    pub(crate) name: Text,
}

impl Header {
    /// Its bytes, before sealing.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_FIXED + ResumeKey::LEN as usize + self.name.len());
        out.push(self.cipher as u8);
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.size.to_be_bytes());
        match &self.resume_key {
            Some(key) => {
                out.push(ResumeKey::LEN as u8);
                out.extend_from_slice(&key.0);
            }
            None => out.push(0),
        }
        out.extend_from_slice(self.name.as_bytes());
        out
    }

    /// A header opened, or `None` if it is not one (an unknown cipher included).
    pub(crate) fn read(plain: &[u8]) -> Option<Self> {
        let cipher = Cipher::from_byte(*plain.first()?)?;
        let key = <[u8; 32]>::try_from(plain.get(1..33)?).ok()?;
        let size = u64::from_be_bytes(<[u8; 8]>::try_from(plain.get(33..41)?).ok()?);
        let (resume_key, name) = match *plain.get(41)? {
            0 => (None, plain.get(42..)?),
            16 => (
                Some(ResumeKey(<[u8; 16]>::try_from(plain.get(42..58)?).ok()?)),
                plain.get(58..)?,
            ),
            _ => return None,
        };
        let name = Text::from(core::str::from_utf8(name).ok()?);
        Some(Header {
            cipher,
            key,
            size,
            resume_key,
            name,
        })
    }
}

/// The most a sealed header adds to the name on the wire (the decoder's bound on
/// `OPEN`'s `seal`).
pub(crate) const HEADER_OVERHEAD: u64 = HEADER_FIXED as u64 + 1 + ResumeKey::LEN + super::OVERHEAD;

/// The longest name a sealed file may have: its sealed header and the longest other
/// fields still fit in the smallest frame (docs/PROTOCOL.md, "Limits and defaults").
pub(crate) const NAME_MAX: u64 = 640 - HEADER_OVERHEAD;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_at_record_boundaries_only() {
        let size = 2 * RECORD + 10;
        assert_eq!(wire_size(0), 0);
        assert_eq!(wire_size(size), size + 3 * 16);
        assert_eq!(wire_at(RECORD, size), Some(RECORD_WIRE));
        assert_eq!(wire_at(size, size), Some(size + 48));
        assert_eq!(wire_at(RECORD + 1, size), None);
        assert_eq!(plain_at(RECORD_WIRE, size), Some(RECORD));
        assert_eq!(plain_at(RECORD_WIRE + 3, size), None);
        assert_eq!(plain_at(size + 48, size), Some(size));
        assert_eq!(plain_before(RECORD_WIRE + RECORD + 5), 2 * RECORD);
    }

    /// The seal of a file of `size` bytes under `key` and `cipher`.
    fn seal_of(cipher: Cipher, key: [u8; 32], size: u64) -> FileSeal {
        FileSeal::new(&Header {
            cipher,
            key,
            size,
            resume_key: None,
            name: Text::from(""),
        })
    }

    #[test]
    fn records_open_in_place_only() {
        for cipher in [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm] {
            records_open_in_place_only_under(cipher);
        }
    }

    fn records_open_in_place_only_under(cipher: Cipher) {
        let key = [7u8; 32];
        let size = RECORD + 5;
        let file = seal_of(cipher, key, size);
        let plain: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut wire = BytesMut::new();
        file.seal_records(0, &plain, &mut wire);
        assert_eq!(wire.len() as u64, wire_size(size));
        let first = BytesMut::from(&wire[..RECORD_WIRE as usize]);
        let last = BytesMut::from(&wire[RECORD_WIRE as usize..]);
        assert_eq!(
            file.open_record(0, first.clone()).as_deref(),
            Some(&plain[..RECORD as usize])
        );
        assert_eq!(
            file.open_record(1, last.clone()).as_deref(),
            Some(&plain[RECORD as usize..])
        );
        // Moved, altered, or the file cut at its first record: none opens.
        assert!(file.open_record(1, first.clone()).is_none());
        let mut altered = last.clone();
        altered[0] ^= 1;
        assert!(file.open_record(1, altered).is_none());
        let cut = seal_of(cipher, key, RECORD);
        assert!(cut.open_record(0, first).is_none());
        assert!(seal_of(cipher, [8u8; 32], size)
            .open_record(1, last.clone())
            .is_none());
        // Under the other cipher with the same key: none opens.
        let other = match cipher {
            Cipher::ChaCha20Poly1305 => Cipher::Aes256Gcm,
            Cipher::Aes256Gcm => Cipher::ChaCha20Poly1305,
        };
        assert!(seal_of(other, key, size).open_record(1, last).is_none());
        // The masks hide the digest, and undo themselves.
        let digest = Digest::Crc32c(0x1234_5678);
        let masked = file.mask(digest, Masked::End);
        assert_ne!(masked, digest);
        assert_ne!(masked, file.mask(digest, Masked::Resume));
        assert_eq!(file.mask(masked, Masked::End), digest);
    }

    #[test]
    fn a_header_reads_back() {
        for (cipher, resume_key) in [
            (Cipher::ChaCha20Poly1305, None),
            (Cipher::Aes256Gcm, Some(ResumeKey([5; 16]))),
        ] {
            let h = Header {
                cipher,
                key: [9; 32],
                size: 77,
                resume_key,
                name: Text::from("report.pdf"),
            };
            let mut bytes = h.to_bytes();
            let back = Header::read(&bytes).expect("reads");
            assert_eq!(
                (back.cipher, back.key, back.size, back.resume_key, back.name),
                (h.cipher, h.key, h.size, h.resume_key, h.name)
            );
            assert!(Header::read(&bytes[..41]).is_none());
            bytes[0] = 3;
            assert!(Header::read(&bytes).is_none(), "an unknown cipher");
        }
    }
}
