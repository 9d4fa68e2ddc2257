//! Sealed messages from C (docs/PROTOCOL.md, "Sealed messages"): the identity key of a
//! secret, and how the kinds of `PM_EVENT_PEER_KEY` name what became of a peer's key.
//! Turning sealing on is per client: `pm_set_sealing` (SDK) or `pm_core_set_sealing`
//! (core). The application keeps its 32-byte secret (random, made once, private) and the
//! keys of its peers (a known-peers file), and pins them at start.

use peermsg::seal::{identity_of, KeyStatus};

use crate::boundary::{guard, key32, out};

/// A peer's key is the one pinned (or it has none): nothing to do.
pub const PM_KEY_PINNED: u64 = 0;
/// A peer's key seen for the first time, and trusted on first use: keep it (with the
/// user) and pin it next time, so that a change is noticed.
pub const PM_KEY_LEARNED: u64 = 1;
/// A peer's key is not the one pinned: refused, with everything sealed with it
/// (`PEER_KEY_CHANGED`), until the application pins the new one after checking it.
pub const PM_KEY_CHANGED: u64 = 2;
/// A peer's key is not pinned and keys are not trusted on first use: refused
/// (`NO_PEER_KEY`).
pub const PM_KEY_UNKNOWN: u64 = 3;

/// The `PM_KEY_*` of a key's status.
pub(crate) fn key_status(status: Option<KeyStatus>) -> u64 {
    match status {
        None => PM_KEY_PINNED,
        Some(KeyStatus::Learned) => PM_KEY_LEARNED,
        Some(KeyStatus::Changed { .. }) => PM_KEY_CHANGED,
        Some(_) => PM_KEY_UNKNOWN,
    }
}

/// Writes to `out_key` (32 bytes) the identity key of `secret` (32 bytes): what a peer
/// pins, and what a person compares.
///
/// # Safety
/// `secret` points to 32 readable bytes, `out_key` to 32 writable bytes.
#[no_mangle]
pub unsafe extern "C" fn pm_identity_of(secret: *const u8, out_key: *mut [u8; 32]) -> i32 {
    guard(|| {
        // SAFETY: the caller's promises.
        let (secret, out_key) = unsafe { (key32(secret)?, out(out_key)?) };
        *out_key = identity_of(&secret).0;
        Ok(())
    })
}
