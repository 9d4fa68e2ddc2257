//! Transfer digests: the running CRC-32C both ends compute over a transfer's bytes.
//!
//! The `crc` crate (no_std, table-driven, slicing by 16) provides the arithmetic; it is a
//! core dependency beyond DESIGN.md's list because the receiver must verify the digest
//! before it reports success, and a hand-written CRC would be a copy of well-kept code.

use crc::{Crc, Table, CRC_32_ISCSI};

use crate::wire::Digest;

static CASTAGNOLI: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);

/// A CRC-32C over bytes fed in order.
pub(crate) struct RunningDigest(crc::Digest<'static, u32, Table<16>>);

impl RunningDigest {
    pub(crate) fn new() -> Self {
        RunningDigest(CASTAGNOLI.digest())
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything fed so far.
    pub(crate) fn finish(self) -> Digest {
        Digest::Crc32c(self.0.finalize())
    }
}

impl core::fmt::Debug for RunningDigest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RunningDigest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_and_pieces() {
        let mut d = RunningDigest::new();
        d.update(b"1234");
        d.update(b"56789");
        assert_eq!(d.finish(), Digest::Crc32c(0xe306_9283));
    }
}
