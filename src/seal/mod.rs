//! Sealed messages between users: end-to-end encryption that a relay routes and cannot
//! read (docs/PROTOCOL.md, "Sealed messages").
//!
//! Every user has an identity key (X25519). A sender and a receiver agree a key with HPKE
//! (RFC 9180) in its Auth mode, X25519-HKDF-SHA256, HKDF-SHA256 and ChaCha20-Poly1305: the
//! sender's identity key authenticates the agreement, a fresh ephemeral key (from a
//! generator the runtime seeds) gives each session its own secret, and the session's
//! message key is the HPKE exporter's. Each message is sealed with ChaCha20-Poly1305 under
//! that key, with the message's number in the session as its nonce. The associated data
//! binds the header, the kind of message and its identity across connections (a
//! command's stream and number, a buffer's resume key), so a relay cannot replay a message
//! as a new one, turn a buffer into a command, or move a message to another sender: the
//! receiver's repeat rules, which already drop a repeat of a command or buffer it
//! delivered, then hold for sealed messages too. The sender and receiver user ids are the
//! HPKE `info`.
//!
//! Keys are pinned: a peer's key is what the application gave ([`Sealing::pinned`]) or,
//! with [`Sealing::trust_first_use`], the first one seen (then [`KeyStatus::Learned`] tells
//! the runtime to keep it). A different key later is refused ([`KeyStatus::Changed`],
//! `PEER_KEY_CHANGED`) until the application pins the new one. This is where every such
//! rule lives; the client uses it as messages go out and come in.
//!
//! A sealed message's bytes (a command's, a buffer's):
//!
//! ```text
//! e2 01 | enc (32) | sender's identity key (32) | number (8, big-endian) | ciphertext | tag (16)
//! ```

mod aead;
pub(crate) mod file;

pub use file::RECORD;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use aead::Aead as MessageAead;
use bytes::{BufMut, Bytes, BytesMut};
use chacha20::rand_core::SeedableRng;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use sha2::{Digest as _, Sha256};

use crate::evict::remove_oldest;
use crate::wire::{CmdOnce, IdentityKey, ResumeKey, UserId};
use crate::ErrorCode;

type Kem = X25519HkdfSha256;
type SecretKey = <Kem as hpke::Kem>::PrivateKey;
type PublicKey = <Kem as hpke::Kem>::PublicKey;

/// The first two bytes of every sealed message: the format and its cipher suite.
const MARK: [u8; 2] = [0xe2, 0x01];
const ENC: usize = 32;
const NUMBER: usize = 8;
use aead::TAG;

/// The header: mark, HPKE's encapsulated key, the sender's identity key, the number.
const HEADER: usize = MARK.len() + ENC + 32 + NUMBER;
/// What sealing adds to a message.
pub const OVERHEAD: u64 = (HEADER + TAG) as u64;

/// `sealed` bytes of a sealed message, as the bytes of its plaintext they carry: the header
/// carries none, each byte of the body one, the tag none. So a sealed buffer's progress and
/// resume offsets are told in the application's bytes, ending at its length.
pub(crate) fn plain_of(sealed: u64, sealed_len: u64) -> u64 {
    let plain_len = sealed_len.saturating_sub(OVERHEAD);
    sealed.saturating_sub(HEADER as u64).min(plain_len)
}

/// The HPKE exporter's context for a session's message key.
const MESSAGE_KEY: &[u8] = b"peermsg sealed v1 message key";

/// Sessions and pins kept at most; past them the least recently used session goes (a
/// message of it again costs one key agreement), and no new key is pinned.
const SESSIONS: usize = 4096;
const PINS: usize = 65_536;

/// What a user needs to seal and open: its identity, randomness, and the keys it trusts.
#[derive(Clone)]
pub struct Sealing {
    /// The identity key's secret half (X25519), kept by the runtime.
    pub secret: [u8; 32],
    /// Random bytes of the runtime's (its system's random source): the seed of the
    /// generator for ephemeral keys. Never reuse them with the same secret.
    pub entropy: [u8; 32],
    /// Peers' keys the person trusts (a known-peers file).
    pub pinned: Vec<(UserId, IdentityKey)>,
    /// Pin a peer's key the first time it is seen ([`KeyStatus::Learned`]); else a peer
    /// not in `pinned` is refused.
    pub trust_first_use: bool,
}

impl fmt::Debug for Sealing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealing")
            .field("identity", &identity_of(&self.secret))
            .field("pinned", &self.pinned.len())
            .field("trust_first_use", &self.trust_first_use)
            .finish_non_exhaustive()
    }
}

/// The identity key of a secret.
pub fn identity_of(secret: &[u8; 32]) -> IdentityKey {
    match SecretKey::from_bytes(secret) {
        Ok(sk) => IdentityKey(array(&Kem::sk_to_pk(&sk).to_bytes())),
        // Every 32 bytes are an X25519 secret (clamped when used).
        Err(_) => IdentityKey([0; 32]),
    }
}

/// A key's fingerprint for people to compare: the first 16 bytes of its SHA-256, in
/// groups of four hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// The fingerprint of `key`.
    pub fn of(key: &IdentityKey) -> Self {
        let hash = Sha256::digest(key.0);
        let mut out = [0; 16];
        out.copy_from_slice(&hash[..16]);
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pair) in self.0.chunks(2).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{:02x}{:02x}", pair[0], pair[1])?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// What became of a peer's key as it was heard ([`Event::PeerKey`](crate::client::Event)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStatus {
    /// Not pinned before: pinned now, on first use. The runtime keeps it (a known-peers
    /// file) so that a later change is noticed.
    Learned,
    /// Not the key pinned for this user: refused, and so is everything sealed with it
    /// (`PEER_KEY_CHANGED`), until the application pins the new one.
    Changed {
        /// The key pinned.
        pinned: IdentityKey,
    },
    /// Not pinned, and keys are not trusted on first use: refused (`NO_PEER_KEY`).
    Unknown,
}

/// What a message is, as its seal binds it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Binding {
    /// A command, with its identity across connections (without the re-sent mark, which
    /// changes when it is sent again).
    Cmd(Option<CmdOnce>),
    /// A buffer, with its resume key.
    Buffer(Option<ResumeKey>),
    /// A file's header (`OPEN`'s `seal`; its resume key is inside it).
    File,
}

impl Binding {
    fn write(&self, ad: &mut Vec<u8>) {
        match self {
            Binding::Cmd(once) => {
                ad.push(0);
                if let Some(once) = once {
                    ad.extend_from_slice(
                        &CmdOnce {
                            resent: false,
                            ..*once
                        }
                        .to_bytes(),
                    );
                }
            }
            Binding::Buffer(key) => {
                ad.push(1);
                if let Some(key) = key {
                    ad.extend_from_slice(&key.0);
                }
            }
            Binding::File => ad.push(2),
        }
    }
}

/// A sealing session toward one receiver.
struct Outbound {
    peer: IdentityKey,
    enc: [u8; ENC],
    aead: MessageAead,
    next: u64,
    used: u64,
}

/// A session a sender opened toward us.
struct Inbound {
    aead: MessageAead,
    used: u64,
}

/// Why a sealed message was not opened, and what the application hears of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) code: ErrorCode,
    /// A key to tell the application of.
    pub(crate) key: Option<(IdentityKey, KeyStatus)>,
}

/// One user's sealing state, carried across its connections.
pub(crate) struct Seal {
    secret: SecretKey,
    public: PublicKey,
    identity: IdentityKey,
    rng: chacha20::ChaCha20Rng,
    pins: BTreeMap<UserId, IdentityKey>,
    trust_first_use: bool,
    outbound: BTreeMap<UserId, Outbound>,
    inbound: BTreeMap<(UserId, [u8; ENC]), Inbound>,
    uses: u64,
}

impl fmt::Debug for Seal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Seal")
            .field("identity", &self.identity)
            .field("pins", &self.pins.len())
            .finish_non_exhaustive()
    }
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    let n = bytes.len().min(N);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// HPKE's `info`: the suite's name and both users, so a session is for these two only.
fn info(sender: &UserId, receiver: &UserId) -> Vec<u8> {
    let mut info = Vec::with_capacity(32 + sender.len() + receiver.len());
    info.extend_from_slice(b"peermsg sealed v1");
    for user in [sender, receiver] {
        let bytes = user.as_bytes();
        info.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        info.extend_from_slice(bytes);
    }
    info
}

fn nonce(number: u64) -> aead::Nonce {
    let mut nonce = aead::Nonce::default();
    nonce[4..].copy_from_slice(&number.to_be_bytes());
    nonce
}

fn message_aead(export: impl FnOnce(&mut [u8; 32]) -> bool) -> Option<MessageAead> {
    let mut key = [0u8; 32];
    export(&mut key).then(|| MessageAead::new(aead::Cipher::ChaCha20Poly1305, &key))?
}

impl Seal {
    pub(crate) fn new(sealing: Sealing) -> Self {
        let (secret, public) = match SecretKey::from_bytes(&sealing.secret) {
            Ok(sk) => {
                let pk = Kem::sk_to_pk(&sk);
                (sk, pk)
            }
            // Not reached: any 32 bytes are a secret. Still no panic.
            Err(_) => Kem::derive_keypair(&sealing.secret),
        };
        let identity = IdentityKey(array(&public.to_bytes()));
        let mut pins = BTreeMap::new();
        for (user, key) in sealing.pinned {
            if pins.len() < PINS {
                pins.insert(user, key);
            }
        }
        Seal {
            secret,
            public,
            identity,
            rng: chacha20::ChaCha20Rng::from_seed(sealing.entropy),
            pins,
            trust_first_use: sealing.trust_first_use,
            outbound: BTreeMap::new(),
            inbound: BTreeMap::new(),
            uses: 0,
        }
    }

    /// Our identity key.
    pub(crate) fn identity(&self) -> IdentityKey {
        self.identity
    }

    /// The key pinned for `user`.
    pub(crate) fn pinned(&self, user: &UserId) -> Option<IdentityKey> {
        self.pins.get(user).copied()
    }

    /// `key` heard for `user` (from a `KEY`, or a sealed message's header): `None` if it
    /// is the one pinned; else what became of it.
    pub(crate) fn hear(&mut self, user: &UserId, key: IdentityKey) -> Option<KeyStatus> {
        match self.pins.get(user) {
            Some(pinned) if *pinned == key => None,
            Some(pinned) => Some(KeyStatus::Changed { pinned: *pinned }),
            None if self.trust_first_use && self.pins.len() < PINS => {
                self.pins.insert(user.clone(), key);
                Some(KeyStatus::Learned)
            }
            None => Some(KeyStatus::Unknown),
        }
    }

    /// The application trusts `key` for `user` from now on (a changed key accepted).
    pub(crate) fn pin(&mut self, user: UserId, key: IdentityKey) {
        if self.pins.len() < PINS || self.pins.contains_key(&user) {
            self.outbound.remove(&user);
            self.pins.insert(user, key);
        }
    }

    /// A fresh key for one attempt at a sealed file.
    pub(crate) fn file_key(&mut self) -> [u8; 32] {
        let mut key = [0u8; 32];
        chacha20::rand_core::Rng::fill_bytes(&mut self.rng, &mut key);
        key
    }

    fn tick(&mut self) -> u64 {
        self.uses += 1;
        self.uses
    }

    /// `plain` sealed by `me` for `to`, whose key must be pinned (`NO_PEER_KEY` if not).
    pub(crate) fn seal(
        &mut self,
        me: &UserId,
        to: &UserId,
        binding: Binding,
        plain: &[u8],
    ) -> Result<Bytes, ErrorCode> {
        let peer = self.pins.get(to).copied().ok_or(ErrorCode::NO_PEER_KEY)?;
        let used = self.tick();
        if self.outbound.get(to).is_none_or(|s| s.peer != peer) {
            let pk = PublicKey::from_bytes(&peer.0).map_err(|_| ErrorCode::NO_PEER_KEY)?;
            let mode = OpModeS::Auth((self.secret.clone(), self.public.clone()));
            let (enc, ctx) = hpke::setup_sender_with_rng::<ChaCha20Poly1305, HkdfSha256, Kem>(
                &mode,
                &pk,
                &info(me, to),
                &mut self.rng,
            )
            .map_err(|_| ErrorCode::NO_PEER_KEY)?;
            let aead =
                message_aead(|k| ctx.export(MESSAGE_KEY, k).is_ok()).ok_or(ErrorCode::UNKNOWERR)?;
            if self.outbound.len() >= SESSIONS {
                remove_oldest(&mut self.outbound, |s| s.used);
            }
            let session = Outbound {
                peer,
                enc: array(&enc.to_bytes()),
                aead,
                next: 0,
                used,
            };
            self.outbound.insert(to.clone(), session);
        }
        let session = self.outbound.get_mut(to).ok_or(ErrorCode::UNKNOWERR)?;
        session.used = used;
        let number = session.next;
        session.next += 1;
        let mut out = BytesMut::with_capacity(HEADER + plain.len() + TAG);
        out.put_slice(&MARK);
        out.put_slice(&session.enc);
        out.put_slice(&self.identity.0);
        out.put_u64(number);
        let mut ad = Vec::with_capacity(HEADER + 32);
        ad.extend_from_slice(&out);
        binding.write(&mut ad);
        out.put_slice(plain);
        let tag = session
            .aead
            .seal(nonce(number), &ad, &mut out[HEADER..])
            .ok_or(ErrorCode::SENDFAIL)?;
        out.put_slice(&tag);
        Ok(out.freeze())
    }

    /// The plaintext of `sealed`, a message `from` sealed for `me`. Refused: not sealed
    /// (`SEAL_REQUIRED`), its key not trusted (`PEER_KEY_CHANGED`, `NO_PEER_KEY`), or it
    /// does not open (`SEAL_BROKEN`). A key first seen is pinned only once a message
    /// sealed with it opened: then `Ok` carries [`KeyStatus::Learned`].
    pub(crate) fn open(
        &mut self,
        me: &UserId,
        from: &UserId,
        binding: Binding,
        sealed: &[u8],
    ) -> Result<(Bytes, Option<IdentityKey>), Refused> {
        let refused = |code| Refused { code, key: None };
        if sealed.len() < HEADER + TAG || sealed[..MARK.len()] != MARK {
            return Err(refused(ErrorCode::SEAL_REQUIRED));
        }
        let enc: [u8; ENC] = array(&sealed[MARK.len()..MARK.len() + ENC]);
        let key = IdentityKey(array(&sealed[MARK.len() + ENC..MARK.len() + ENC + 32]));
        let number = u64::from_be_bytes(array(&sealed[HEADER - NUMBER..HEADER]));
        // Trusted before anything is computed with it; a first key only once it opened.
        let first = match self.pins.get(from) {
            Some(pinned) if *pinned == key => false,
            Some(pinned) => {
                return Err(Refused {
                    code: ErrorCode::PEER_KEY_CHANGED,
                    key: Some((key, KeyStatus::Changed { pinned: *pinned })),
                })
            }
            None if self.trust_first_use && self.pins.len() < PINS => true,
            None => {
                return Err(Refused {
                    code: ErrorCode::NO_PEER_KEY,
                    key: Some((key, KeyStatus::Unknown)),
                })
            }
        };
        let used = self.tick();
        let slot = (from.clone(), enc);
        if !self.inbound.contains_key(&slot) {
            let broken = refused(ErrorCode::SEAL_BROKEN);
            let pk = PublicKey::from_bytes(&key.0).map_err(|_| broken)?;
            let encapped = <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc).map_err(|_| broken)?;
            let ctx = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, Kem>(
                &OpModeR::Auth(pk),
                &self.secret,
                &encapped,
                &info(from, me),
            )
            .map_err(|_| broken)?;
            let aead = message_aead(|k| ctx.export(MESSAGE_KEY, k).is_ok()).ok_or(broken)?;
            if self.inbound.len() >= SESSIONS {
                remove_oldest(&mut self.inbound, |s| s.used);
            }
            self.inbound.insert(slot.clone(), Inbound { aead, used });
        }
        let session = self
            .inbound
            .get_mut(&slot)
            .ok_or(refused(ErrorCode::UNKNOWERR))?;
        session.used = used;
        let mut ad = Vec::with_capacity(HEADER + 32);
        ad.extend_from_slice(&sealed[..HEADER]);
        binding.write(&mut ad);
        let body = &sealed[HEADER..sealed.len() - TAG];
        let tag = <[u8; TAG]>::try_from(&sealed[sealed.len() - TAG..])
            .map_err(|_| refused(ErrorCode::SEAL_BROKEN))?;
        let mut plain = BytesMut::from(body);
        if !session.aead.open(nonce(number), &ad, &mut plain[..], tag) {
            return Err(refused(ErrorCode::SEAL_BROKEN));
        }
        let learned = first.then(|| {
            self.pins.insert(from.clone(), key);
            key
        });
        Ok((plain.freeze(), learned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn user(name: &str) -> UserId {
        UserId::new(name).unwrap()
    }

    fn seal_of(secret: u8, pinned: &[(&str, u8)], first_use: bool) -> Seal {
        Seal::new(Sealing {
            secret: [secret; 32],
            entropy: [secret ^ 0x55; 32],
            pinned: pinned
                .iter()
                .map(|(u, s)| (user(u), identity_of(&[*s; 32])))
                .collect(),
            trust_first_use: first_use,
        })
    }

    #[test]
    fn a_sealed_message_opens_once_for_its_receiver_only() {
        let (alice, bob) = (user("alice"), user("bob"));
        let mut a = seal_of(1, &[("bob", 2)], false);
        let mut b = seal_of(2, &[("alice", 1)], false);
        let binding = Binding::Cmd(None);
        let sealed = a.seal(&alice, &bob, binding, b"hello").unwrap();
        assert_eq!(sealed.len() as u64, 5 + OVERHEAD);
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        let (plain, learned) = b.open(&bob, &alice, binding, &sealed).unwrap();
        assert_eq!((&plain[..], learned), (&b"hello"[..], None));
        // Another sender name, another receiver, another binding: none opens.
        let carol = user("carol");
        let mut b2 = seal_of(2, &[("carol", 1)], false);
        assert_eq!(
            b2.open(&bob, &carol, binding, &sealed).unwrap_err().code,
            ErrorCode::SEAL_BROKEN
        );
        assert_eq!(
            b.open(&bob, &alice, Binding::Buffer(None), &sealed)
                .unwrap_err()
                .code,
            ErrorCode::SEAL_BROKEN
        );
        // Each byte changed breaks it.
        for at in 0..sealed.len() {
            let mut bad = sealed.to_vec();
            bad[at] ^= 1;
            let code = b.open(&bob, &alice, binding, &bad).unwrap_err().code;
            assert!(
                [
                    ErrorCode::SEAL_BROKEN,
                    ErrorCode::SEAL_REQUIRED,
                    ErrorCode::PEER_KEY_CHANGED
                ]
                .contains(&code),
                "byte {at}: {code:?}"
            );
        }
        // Cut short.
        let code = b
            .open(&bob, &alice, binding, &sealed[..sealed.len() - 1])
            .unwrap_err()
            .code;
        assert_eq!(code, ErrorCode::SEAL_BROKEN);
    }

    #[test]
    fn keys_are_pinned_on_first_use_and_a_change_is_refused() {
        let (alice, bob) = (user("alice"), user("bob"));
        let mut a = seal_of(1, &[("bob", 2)], false);
        let mut b = seal_of(2, &[], true);
        let sealed = a.seal(&alice, &bob, Binding::Cmd(None), b"x").unwrap();
        let (_, learned) = b.open(&bob, &alice, Binding::Cmd(None), &sealed).unwrap();
        assert_eq!(learned, Some(identity_of(&[1; 32])));
        // Mallory, as alice, with her own key.
        let mut m = seal_of(9, &[("bob", 2)], false);
        let forged = m.seal(&alice, &bob, Binding::Cmd(None), b"x").unwrap();
        let refused = b
            .open(&bob, &alice, Binding::Cmd(None), &forged)
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::PEER_KEY_CHANGED);
        // Not trusting first use: refused, nothing pinned.
        let mut strict = seal_of(2, &[], false);
        let refused = strict
            .open(&bob, &alice, Binding::Cmd(None), &sealed)
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::NO_PEER_KEY);
        assert_eq!(strict.pinned(&alice), None);
        // No key for the receiver: nothing to seal to.
        assert_eq!(
            a.seal(&alice, &user("dave"), Binding::Cmd(None), b"x"),
            Err(ErrorCode::NO_PEER_KEY)
        );
    }

    #[test]
    fn fingerprints_read_in_groups() {
        let shown = Fingerprint::of(&identity_of(&[1; 32])).to_string();
        assert_eq!(shown.len(), 39);
        assert_eq!(shown.split(' ').count(), 8);
    }
}
