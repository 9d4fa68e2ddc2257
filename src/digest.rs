//! Transfer digests: the running CRC-32C both ends compute over a transfer's bytes.
//!
//! Two well-kept crates provide the arithmetic, one per build, because the receiver must
//! verify the digest before it reports success and a hand-written CRC would be a copy of
//! theirs: with the `std` feature, `crc-fast` (folding by carry-less multiplication,
//! VPCLMULQDQ where the CPU has it, detected at run time: 94-111 GB/s on 16-256 KiB pieces
//! on the bench machine, where the CPU's CRC instruction alone, as the `crc32c` crate
//! uses it, made 23-28); without it, `crc` (no_std, table-driven, slicing by 16, about
//! 2 GB/s). Both compute the same function; the check value is tested in either build, and
//! the tests check both against `crc32c`.

use crate::wire::Digest;

#[cfg(feature = "std")]
use accelerated as imp;
#[cfg(not(feature = "std"))]
use table as imp;

#[cfg(feature = "std")]
mod accelerated {
    use alloc::boxed::Box;
    use crc_fast::{CrcAlgorithm, Digest};

    /// The crate's running CRC, set up once per transfer rather than per piece (boxed:
    /// its parameters are about 200 bytes, and transfers' states hold one each).
    pub(super) struct State(Box<Digest>);

    impl Default for State {
        fn default() -> Self {
            State(Box::new(Digest::new(CrcAlgorithm::Crc32Iscsi)))
        }
    }

    impl State {
        /// Continues from the CRC of the bytes before: the crate's register is the CRC
        /// before its final XOR, the inverse of the value.
        pub(super) fn resume(crc: u32) -> Self {
            State(Box::new(Digest::new_with_init_state(
                CrcAlgorithm::Crc32Iscsi,
                u64::from(!crc),
            )))
        }

        pub(super) fn update(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }

        pub(super) fn value(&self) -> u32 {
            // A CRC-32's value fits its 32 bits; the crate returns every width as a u64.
            self.0.finalize() as u32
        }

        pub(super) fn finish(self) -> u32 {
            self.value()
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
        /// Continues from the CRC of the bytes before: the register is the CRC without its
        /// final XOR, and the crate takes an initial value bit-reversed (a reflected CRC).
        pub(super) fn resume(crc: u32) -> Self {
            State(CASTAGNOLI.digest_with_initial((crc ^ 0xffff_ffff).reverse_bits()))
        }

        pub(super) fn update(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }

        pub(super) fn value(&self) -> u32 {
            self.0.clone().finalize()
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

    /// A digest that continues from `so_far`, the digest of the bytes before (a resumed
    /// transfer's).
    pub(crate) fn resume(so_far: Digest) -> Self {
        match so_far {
            Digest::Crc32c(crc) => RunningDigest(imp::State::resume(crc)),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything fed so far, and it goes on.
    pub(crate) fn value(&self) -> Digest {
        Digest::Crc32c(self.0.value())
    }

    /// The digest of everything fed so far.
    pub(crate) fn finish(self) -> Digest {
        Digest::Crc32c(self.0.finish())
    }
}

impl Digest {
    /// The digest of the bytes this one covers followed by `bytes`: for a runtime that
    /// digests what it holds itself (a file kept from an earlier attempt, say) the way the
    /// state machine digests a transfer.
    ///
    /// ```
    /// use peermsg::wire::Digest;
    ///
    /// let whole = Digest::OF_NOTHING.appended(b"123456789");
    /// assert_eq!(whole, Digest::Crc32c(0xe306_9283));
    /// assert_eq!(Digest::OF_NOTHING.appended(b"1234").appended(b"56789"), whole);
    /// ```
    pub fn appended(self, bytes: &[u8]) -> Digest {
        let mut digest = RunningDigest::resume(self);
        digest.update(bytes);
        digest.finish()
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

    /// Pieces long enough for every folding width (up to 300 KiB), starting at every
    /// alignment, digest as the `crc32c` crate does.
    #[cfg(feature = "std")]
    #[test]
    fn long_pieces_at_any_alignment_are_digested_as_crc32c_does() {
        let bytes: alloc::vec::Vec<u8> = (0..320_000u32).map(|i| (i * 131 % 251) as u8).collect();
        for start in 0..64 {
            for len in [
                0, 1, 15, 16, 63, 64, 255, 256, 1023, 4096, 16_376, 65_537, 300_000,
            ] {
                let piece = &bytes[start..start + len];
                let mut fast = accelerated::State::resume(0x1234_5678);
                fast.update(piece);
                assert_eq!(
                    fast.finish(),
                    crc32c::crc32c_append(0x1234_5678, piece),
                    "{len} bytes from {start}"
                );
            }
        }
    }

    /// A digest resumed from the value of a prefix ends where one fed everything does, in
    /// both builds.
    #[cfg(feature = "std")]
    #[test]
    fn a_resumed_digest_continues_the_prefix() {
        let bytes: alloc::vec::Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        for cut in [0, 1, 999, 2999, 3000] {
            let (head, tail) = bytes.split_at(cut);
            let (mut fast, mut small) = (accelerated::State::default(), table::State::default());
            fast.update(head);
            small.update(head);
            let (so_far_fast, so_far_small) = (fast.value(), small.value());
            assert_eq!(so_far_fast, so_far_small);
            let mut fast = accelerated::State::resume(so_far_fast);
            let mut small = table::State::resume(so_far_small);
            fast.update(tail);
            small.update(tail);
            assert_eq!(fast.finish(), crc32c::crc32c(&bytes), "cut at {cut}");
            assert_eq!(small.finish(), crc32c::crc32c(&bytes), "cut at {cut}");
        }
    }
}
