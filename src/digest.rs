//! Transfer digests: the running CRC-32C both ends compute over a transfer's bytes.
//!
//! Two well-kept crates provide the arithmetic, one per build, because the receiver must
//! verify the digest before it reports success and a hand-written CRC would be a copy of
//! theirs: with the `std` feature, `crc32c` (the CPU's CRC instructions, detected at run
//! time, 15-20 GB/s here); without it, `crc` (no_std, table-driven, slicing by 16, about
//! 2 GB/s). Both compute the same function; the check value is tested in either build.

use crate::wire::Digest;

#[cfg(feature = "std")]
mod imp {
    /// The CRC so far, in its final (inverted) form, as `crc32c_append` takes it.
    #[derive(Default)]
    pub(super) struct State(u32);

    impl State {
        pub(super) fn update(&mut self, bytes: &[u8]) {
            self.0 = crc32c::crc32c_append(self.0, bytes);
        }

        pub(super) fn finish(self) -> u32 {
            self.0
        }
    }
}

#[cfg(not(feature = "std"))]
mod imp {
    use crc::{Crc, Table, CRC_32_ISCSI};

    static CASTAGNOLI: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);

    pub(super) struct State(crc::Digest<'static, u32, Table<16>>);

    impl Default for State {
        fn default() -> Self {
            State(CASTAGNOLI.digest())
        }
    }

    impl State {
        pub(super) fn update(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }

        pub(super) fn finish(self) -> u32 {
            self.0.finalize()
        }
    }
}

/// A CRC-32C over bytes fed in order.
pub(crate) struct RunningDigest(imp::State);

impl RunningDigest {
    pub(crate) fn new() -> Self {
        RunningDigest(imp::State::default())
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything fed so far.
    pub(crate) fn finish(self) -> Digest {
        Digest::Crc32c(self.0.finish())
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
        assert_eq!(RunningDigest::new().finish(), Digest::Crc32c(0));
    }
}
