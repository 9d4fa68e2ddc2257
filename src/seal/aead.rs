//! The AEADs of sealing, the one place they are called: ChaCha20-Poly1305 (RFC 8439) for
//! sealed messages, and for a sealed file's records whichever [`Cipher`] its sender chose
//! (its sealed header names it). Where `ring` builds (x86_64 and aarch64, with `std`) its
//! assembly does the work: its AES-256-GCM runs at about 7 times, its ChaCha20-Poly1305 at
//! about 1.7 times the speed of RustCrypto's ChaCha20-Poly1305 on the project's bench
//! machine (`aeadbench`, docs/PERFORMANCE.md "Sealed files through the program").
//! Elsewhere (no `std`, thumbv7em, wasm32, i686) RustCrypto's crates do. Both give the
//! same bytes: one end may use either (tested below).

/// A file's record cipher, as its sealed header names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cipher {
    /// ChaCha20-Poly1305 (RFC 8439): fast in portable code.
    ChaCha20Poly1305 = 1,
    /// AES-256-GCM: fastest where the CPU has AES and carry-less multiply instructions.
    Aes256Gcm = 2,
}

impl Cipher {
    /// The cipher this build seals records with: AES-256-GCM where `ring`'s assembly runs
    /// it (the x86_64 and aarch64 CPUs such builds run on have AES instructions), else
    /// ChaCha20-Poly1305, faster than AES in portable code. Any build opens both.
    pub(crate) fn for_records() -> Cipher {
        match FAST {
            true => Cipher::Aes256Gcm,
            false => Cipher::ChaCha20Poly1305,
        }
    }

    /// The cipher named by `byte`, if any.
    pub(crate) fn from_byte(byte: u8) -> Option<Cipher> {
        match byte {
            1 => Some(Cipher::ChaCha20Poly1305),
            2 => Some(Cipher::Aes256Gcm),
            _ => None,
        }
    }
}

/// Whether `ring` does the work in this build.
const FAST: bool = cfg!(all(
    feature = "std",
    any(target_arch = "x86_64", target_arch = "aarch64")
));

/// A nonce: 12 bytes.
pub(crate) type Nonce = [u8; 12];

/// Bytes of a tag.
pub(crate) const TAG: usize = 16;

#[cfg(all(feature = "std", any(target_arch = "x86_64", target_arch = "aarch64")))]
mod imp {
    use super::{Cipher, Nonce, TAG};
    use ring::aead::{Aad, LessSafeKey, Tag, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};

    pub(crate) struct Aead(LessSafeKey);

    impl Aead {
        pub(crate) fn new(cipher: Cipher, key: &[u8; 32]) -> Option<Self> {
            let algorithm = match cipher {
                Cipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
                Cipher::Aes256Gcm => &AES_256_GCM,
            };
            let key = UnboundKey::new(algorithm, key).ok()?;
            Some(Aead(LessSafeKey::new(key)))
        }

        pub(crate) fn seal(&self, nonce: Nonce, ad: &[u8], in_out: &mut [u8]) -> Option<[u8; TAG]> {
            let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
            let tag = self
                .0
                .seal_in_place_separate_tag(nonce, Aad::from(ad), in_out)
                .ok()?;
            <[u8; TAG]>::try_from(tag.as_ref()).ok()
        }

        pub(crate) fn open(
            &self,
            nonce: Nonce,
            ad: &[u8],
            in_out: &mut [u8],
            tag: [u8; TAG],
        ) -> bool {
            let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
            self.0
                .open_in_place_separate_tag(nonce, Aad::from(ad), Tag::from(tag), in_out, 0..)
                .is_ok()
        }
    }
}

#[cfg(not(all(feature = "std", any(target_arch = "x86_64", target_arch = "aarch64"))))]
mod imp {
    pub(crate) use super::portable::Aead;
}

/// RustCrypto's ciphers: where `ring` does not build, and the reference the
/// tests hold `ring`'s to.
mod portable {
    use super::{Cipher, Nonce, TAG};
    use aes_gcm::Aes256Gcm;
    use alloc::boxed::Box;
    use chacha20poly1305::aead::{AeadInOut, KeyInit};
    use chacha20poly1305::ChaCha20Poly1305;

    pub(crate) enum Aead {
        ChaCha(ChaCha20Poly1305),
        // Boxed: its key schedule is ten times a ChaCha key's size.
        Aes(Box<Aes256Gcm>),
    }

    #[cfg_attr(
        all(feature = "std", any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    impl Aead {
        pub(crate) fn new(cipher: Cipher, key: &[u8; 32]) -> Option<Self> {
            Some(match cipher {
                Cipher::ChaCha20Poly1305 => Aead::ChaCha(ChaCha20Poly1305::new(key.into())),
                Cipher::Aes256Gcm => Aead::Aes(Box::new(Aes256Gcm::new(key.into()))),
            })
        }

        pub(crate) fn seal(&self, nonce: Nonce, ad: &[u8], in_out: &mut [u8]) -> Option<[u8; TAG]> {
            let (nonce, in_out) = (&nonce.into(), in_out.into());
            let tag = match self {
                Aead::ChaCha(a) => a.encrypt_inout_detached(nonce, ad, in_out),
                Aead::Aes(a) => a.encrypt_inout_detached(nonce, ad, in_out),
            };
            Some(tag.ok()?.into())
        }

        pub(crate) fn open(
            &self,
            nonce: Nonce,
            ad: &[u8],
            in_out: &mut [u8],
            tag: [u8; TAG],
        ) -> bool {
            let (nonce, in_out, tag) = (&nonce.into(), in_out.into(), &tag.into());
            match self {
                Aead::ChaCha(a) => a.decrypt_inout_detached(nonce, ad, in_out, tag),
                Aead::Aes(a) => a.decrypt_inout_detached(nonce, ad, in_out, tag),
            }
            .is_ok()
        }
    }
}

/// An AEAD under one key.
pub(crate) struct Aead(imp::Aead);

impl Aead {
    /// `cipher` under `key`; `None` only if the library refuses a 32-byte key (it does
    /// not).
    pub(crate) fn new(cipher: Cipher, key: &[u8; 32]) -> Option<Self> {
        imp::Aead::new(cipher, key).map(Aead)
    }

    /// Seals `in_out` in place, bound to `ad`; its tag, or `None` past the cipher's
    /// length limit (256 GiB: a record or message never comes near it).
    pub(crate) fn seal(&self, nonce: Nonce, ad: &[u8], in_out: &mut [u8]) -> Option<[u8; TAG]> {
        self.0.seal(nonce, ad, in_out)
    }

    /// Opens `in_out` in place; `false` if it does not open with `tag` (its bytes are then
    /// of no use).
    pub(crate) fn open(&self, nonce: Nonce, ad: &[u8], in_out: &mut [u8], tag: [u8; TAG]) -> bool {
        self.0.open(nonce, ad, in_out, tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8439, section 2.8.2: the AEAD test vector.
    #[test]
    fn the_rfc_8439_vector_seals_and_opens() {
        let key: [u8; 32] = core::array::from_fn(|i| 0x80 + i as u8);
        let nonce = [
            0x07, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
        ];
        let ad = [
            0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
        ];
        let plain = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let tag = [
            0x1a, 0xe1, 0x0b, 0x59, 0x4f, 0x09, 0xe2, 0x6a, 0x7e, 0x90, 0x2e, 0xcb, 0xd0, 0x60,
            0x06, 0x91,
        ];
        let aead = Aead::new(Cipher::ChaCha20Poly1305, &key).unwrap();
        let mut bytes = plain.to_vec();
        assert_eq!(aead.seal(nonce, &ad, &mut bytes), Some(tag));
        assert_eq!(&bytes[..4], &[0xd3, 0x1a, 0x8d, 0x34]);
        assert!(aead.open(nonce, &ad, &mut bytes, tag));
        assert_eq!(&bytes[..], &plain[..]);
        let mut altered = tag;
        altered[0] ^= 1;
        assert!(!aead.open(nonce, &ad, &mut bytes.clone(), altered));
    }

    /// The GCM spec's test case 16 (AES-256, 60 bytes, associated data), cut to its first
    /// bytes and tag.
    #[test]
    fn an_aes_256_gcm_vector_seals_and_opens() {
        let hex = |s: &str| -> alloc::vec::Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let key = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
        let nonce = hex("cafebabefacedbaddecaf888");
        let plain = hex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
        let ad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let tag = hex("76fc6ece0f4e1768cddf8853bb2d551b");
        let aead = Aead::new(Cipher::Aes256Gcm, &key.try_into().unwrap()).unwrap();
        let mut bytes = plain.clone();
        let nonce: Nonce = nonce.try_into().unwrap();
        assert_eq!(aead.seal(nonce, &ad, &mut bytes).unwrap()[..], tag[..]);
        assert_eq!(&bytes[..4], &hex("522dc1f0")[..]);
        assert!(aead.open(nonce, &ad, &mut bytes, tag.try_into().unwrap()));
        assert_eq!(bytes, plain);
    }

    #[test]
    fn the_fast_and_the_portable_ciphers_give_the_same_bytes() {
        let (key, nonce) = ([9u8; 32], [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
        for cipher in [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm] {
            for len in [0, 1, 63, 64, 65, 1000, 65536] {
                let plain: alloc::vec::Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let (mut a, mut b) = (plain.clone(), plain.clone());
                let fast = Aead::new(cipher, &key).unwrap();
                let portable = portable::Aead::new(cipher, &key).unwrap();
                let tag_a = fast.seal(nonce, b"ad", &mut a);
                let tag_b = portable.seal(nonce, b"ad", &mut b);
                assert_eq!((tag_a, &a), (tag_b, &b), "{cipher:?} {len}");
                let tag = tag_a.unwrap();
                assert!(portable.open(nonce, b"ad", &mut a, tag));
                assert!(fast.open(nonce, b"ad", &mut b, tag));
                assert_eq!((&a, &b), (&plain, &plain));
            }
        }
    }

    #[test]
    fn a_cipher_is_named_by_its_byte() {
        for cipher in [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm] {
            assert_eq!(Cipher::from_byte(cipher as u8), Some(cipher));
        }
        assert_eq!(Cipher::from_byte(0), None);
        assert_eq!(Cipher::from_byte(3), None);
    }
}
