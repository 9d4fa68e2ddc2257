//! Transfer digests: the running CRC-32C both ends compute over a transfer's bytes.
//!
//! Two well-kept crates provide the arithmetic, one per build, because the receiver must
//! verify the digest before it reports success and a hand-written CRC would be a copy of
//! theirs: with the `std` feature, `crc32c` (the CPU's CRC instructions, detected at run
//! time, 15-20 GB/s here); without it, `crc` (no_std, table-driven, slicing by 16, about
//! 2 GB/s). Both compute the same function; the check value is tested in either build.

use crate::wire::Digest;

#[cfg(feature = "std")]
use accelerated as imp;
#[cfg(not(feature = "std"))]
use table as imp;

#[cfg(feature = "std")]
mod accelerated {
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

// Built with std too, under test, so it is checked against the accelerated one.
#[cfg(any(test, not(feature = "std")))]
mod table {
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

    /// The table-driven CRC the no_std build uses computes what the accelerated one does,
    /// over any bytes fed in any pieces.
    #[cfg(feature = "std")]
    #[test]
    fn the_no_std_digest_is_the_std_digest() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200 {
            let len = (next() % 5000) as usize;
            let bytes: alloc::vec::Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let (mut fast, mut small) = (accelerated::State::default(), table::State::default());
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = ((next() % 700) as usize + 1).min(rest.len());
                fast.update(&rest[..n]);
                small.update(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(fast.finish(), small.finish(), "{len} bytes");
        }
        let mut check = table::State::default();
        check.update(b"123456789");
        assert_eq!(check.finish(), 0xe306_9283);
    }
}
