//! Text fields: UTF-8 held as `Bytes` slices of the input, checked once when decoded.

use alloc::string::String;
use bytes::Bytes;
use core::fmt;

/// UTF-8 text carried in a frame: a file name or a close reason.
///
/// Decoded text shares the input's buffer (no copy); building one from a `String` takes the
/// `String`'s allocation.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(Bytes);

impl Text {
    /// Empty text.
    pub const fn new() -> Self {
        Text(Bytes::new())
    }

    /// Text from a static string, without allocating.
    pub const fn from_static(s: &'static str) -> Self {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// Checks that `bytes` is UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, core::str::Utf8Error> {
        core::str::from_utf8(&bytes)?;
        Ok(Text(bytes))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Checked at construction; the check is repeated because the core has no unsafe code.
        core::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The UTF-8 bytes as a shared buffer.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `true` if empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(Bytes::from(s))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a user id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserIdError {
    /// The id is empty.
    #[error("user id is empty")]
    Empty,
    /// The id is not UTF-8.
    #[error("user id is not valid UTF-8")]
    InvalidUtf8,
    /// The id contains a control character (such as a newline or NUL).
    #[error("user id contains a control character")]
    ControlCharacter,
}

/// A user id: non-empty UTF-8 without control characters.
///
/// Its length limit is configuration ([`Limits::max_user_id_len`](super::Limits)), checked
/// where the id enters: by the decoder and by the endpoints' send calls. Ids of up to
/// [`UserId::INLINE_LEN`] bytes, the usual case, are held inline: making, cloning and
/// dropping one touches no allocation and no reference count.
///
/// ```
/// use peermsg::wire::{UserId, UserIdError};
///
/// let alice = UserId::new("alice").unwrap();
/// assert_eq!(alice.as_str(), "alice");
/// assert_eq!(UserId::new(""), Err(UserIdError::Empty));
/// assert_eq!(UserId::new("a\nb"), Err(UserIdError::ControlCharacter));
/// ```
#[derive(Clone)]
pub struct UserId(Repr);

#[derive(Clone)]
enum Repr {
    Inline {
        len: u8,
        bytes: [u8; UserId::INLINE_LEN],
    },
    Shared(Bytes),
}

impl UserId {
    /// The longest id held inline.
    pub const INLINE_LEN: usize = 23;

    /// Checks and copies `id`.
    pub fn new(id: &str) -> Result<Self, UserIdError> {
        Self::from_slice(id.as_bytes(), Bytes::copy_from_slice)
    }

    /// Checks `bytes`; a long id keeps the buffer (no copy).
    pub fn from_bytes(bytes: Bytes) -> Result<Self, UserIdError> {
        Self::from_slice(&bytes, |_| bytes.clone())
    }

    /// Checks `id`; a short one is copied inline, a long one is held as `shared(id)`.
    pub(crate) fn from_slice(
        id: &[u8],
        shared: impl FnOnce(&[u8]) -> Bytes,
    ) -> Result<Self, UserIdError> {
        check_user_id(id)?;
        Ok(UserId(match id.len() {
            len @ ..=Self::INLINE_LEN => {
                let mut bytes = [0; Self::INLINE_LEN];
                for (to, from) in bytes.iter_mut().zip(id) {
                    *to = *from;
                }
                Repr::Inline {
                    len: len as u8,
                    bytes,
                }
            }
            _ => Repr::Shared(shared(id)),
        }))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        // Checked at construction; checked again because the core has no unsafe code.
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Repr::Shared(bytes) => bytes,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Always `false`: a user id is never empty. Present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }
}

impl PartialEq for UserId {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for UserId {}

impl PartialOrd for UserId {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for UserId {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl core::hash::Hash for UserId {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

/// The one place the user id rules live.
fn check_user_id(bytes: &[u8]) -> Result<(), UserIdError> {
    if bytes.is_empty() {
        return Err(UserIdError::Empty);
    }
    // Fast path: printable ASCII, the common case.
    if bytes.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        return Ok(());
    }
    let s = core::str::from_utf8(bytes).map_err(|_| UserIdError::InvalidUtf8)?;
    if s.chars().any(char::is_control) {
        return Err(UserIdError::ControlCharacter);
    }
    Ok(())
}

impl TryFrom<&str> for UserId {
    type Error = UserIdError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        UserId::new(s)
    }
}

impl TryFrom<String> for UserId {
    type Error = UserIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        UserId::from_bytes(Bytes::from(s))
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_rules() {
        assert!(UserId::new("user_000022").is_ok());
        assert!(UserId::new("żółw 🐢").is_ok());
        assert_eq!(UserId::new("tab\there"), Err(UserIdError::ControlCharacter));
        assert_eq!(UserId::new("del\u{7f}"), Err(UserIdError::ControlCharacter));
        assert_eq!(UserId::new("c1\u{85}"), Err(UserIdError::ControlCharacter));
        assert_eq!(
            UserId::from_bytes(Bytes::from_static(b"\xff\xfe")),
            Err(UserIdError::InvalidUtf8)
        );
    }

    #[test]
    fn short_and_long_ids_behave_the_same() {
        let short = "s".repeat(UserId::INLINE_LEN);
        let long = "l".repeat(UserId::INLINE_LEN + 1);
        for id in [short.as_str(), long.as_str()] {
            let a = UserId::new(id).unwrap();
            let b = UserId::from_bytes(Bytes::copy_from_slice(id.as_bytes())).unwrap();
            assert_eq!(a, b);
            assert_eq!(a.as_str(), id);
            assert_eq!(a.len(), id.len());
        }
        assert!(matches!(
            UserId::new(&short).unwrap().0,
            Repr::Inline { .. }
        ));
        assert!(matches!(UserId::new(&long).unwrap().0, Repr::Shared(_)));
    }

    #[test]
    fn text_rejects_invalid_utf8_and_keeps_valid() {
        assert!(Text::from_utf8(Bytes::from_static(b"\xc3")).is_err());
        assert_eq!(
            Text::from_utf8(Bytes::from_static(b"a.jpg")).map(|t| t.len()),
            Ok(5)
        );
    }
}
