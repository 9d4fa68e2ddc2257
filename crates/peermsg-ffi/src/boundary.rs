//! Where C meets Rust, in one place: every exported function runs its body through
//! [`guard`] (no panic unwinds into C: it becomes `UNKNOWERR`), and reads its arguments
//! through the readers here (a null pointer or text that is not UTF-8 is `PARAM_ERR`, never
//! a crash).

use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use peermsg::ErrorCode;

/// What an exported call returns: `NOERR` (0) or an SDK error number.
pub(crate) type Status = Result<(), ErrorCode>;

/// Runs `body` and turns its outcome into the number C reads. A panic is caught here (and
/// reported as `UNKNOWERR`): unwinding across `extern "C"` would abort the process.
pub(crate) fn guard(body: impl FnOnce() -> Status) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => 0,
        Ok(Err(code)) => code_number(code),
        Err(_) => code_number(ErrorCode::UNKNOWERR),
    }
}

/// An error code as C reads it.
pub(crate) fn code_number(code: ErrorCode) -> i32 {
    i32::try_from(code.as_u32()).unwrap_or(i32::MAX)
}

/// `code` as a status: `NOERR` is `Ok`.
pub(crate) fn status(code: ErrorCode) -> Status {
    if code.is_success() {
        Ok(())
    } else {
        Err(code)
    }
}

/// An error code argument: C's `int32_t`, one of the SDK's numbers (never negative).
pub(crate) fn code_arg(code: i32) -> Result<ErrorCode, ErrorCode> {
    u32::try_from(code)
        .map(ErrorCode::from_u32)
        .map_err(|_| ErrorCode::PARAM_ERR)
}

/// A C string of `s`, for a callback or an event; text with a NUL in it (user ids and
/// sanitised names have none) is cut there.
pub(crate) fn c_string(s: &str) -> CString {
    let end = s.find('\0').unwrap_or(s.len());
    CString::new(&s[..end]).unwrap_or_default()
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string that lives for `'a`.
pub(crate) unsafe fn text<'a>(p: *const c_char) -> Result<&'a str, ErrorCode> {
    if p.is_null() {
        return Err(ErrorCode::PARAM_ERR);
    }
    // SAFETY: not null, and the caller promises a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| ErrorCode::PARAM_ERR)
}

/// An optional string argument: null is `None`.
///
/// # Safety
/// As [`text`].
pub(crate) unsafe fn optional_text<'a>(p: *const c_char) -> Result<Option<&'a str>, ErrorCode> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: as the caller promises.
        unsafe { text(p) }.map(Some)
    }
}

/// `len` bytes at `p` (null is allowed when `len` is 0).
///
/// # Safety
/// `p` is null or points to `len` readable bytes that live for `'a`.
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: usize) -> Result<&'a [u8], ErrorCode> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() || len > isize::MAX as usize {
        return Err(ErrorCode::PARAM_ERR);
    }
    // SAFETY: not null, and the caller promises `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// The 32 bytes at `p` (a key): null is `PARAM_ERR`.
///
/// # Safety
/// `p` is null or points to 32 readable bytes.
pub(crate) unsafe fn key32(p: *const u8) -> Result<[u8; 32], ErrorCode> {
    // SAFETY: the caller's promise.
    let bytes = unsafe { bytes(p, 32)? };
    bytes.try_into().map_err(|_| ErrorCode::PARAM_ERR)
}

/// Where to write a result: null is `PARAM_ERR`.
///
/// # Safety
/// `p` is null or points to a writable, aligned `T`.
pub(crate) unsafe fn out<'a, T>(p: *mut T) -> Result<&'a mut T, ErrorCode> {
    // SAFETY: the caller promises a writable, aligned `T` or null.
    unsafe { p.as_mut() }.ok_or(ErrorCode::PARAM_ERR)
}

/// The object behind a handle C holds: null is `PARAM_ERR`.
///
/// # Safety
/// `p` is null or a handle this library made and has not freed.
pub(crate) unsafe fn object<'a, T>(p: *mut T) -> Result<&'a mut T, ErrorCode> {
    // SAFETY: as the caller promises.
    unsafe { p.as_mut() }.ok_or(ErrorCode::PARAM_ERR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_unknowerr_and_errors_their_numbers() {
        assert_eq!(guard(|| Ok(())), 0);
        assert_eq!(guard(|| Err(ErrorCode::OFFLINE)), 603);
        assert_eq!(guard(|| panic!("inside")), 1);
    }

    #[test]
    fn null_and_bad_text_are_param_err() {
        assert_eq!(unsafe { text(std::ptr::null()) }, Err(ErrorCode::PARAM_ERR));
        let bad = b"\xff\xfe\0";
        assert_eq!(
            unsafe { text(bad.as_ptr().cast()) },
            Err(ErrorCode::PARAM_ERR)
        );
        assert_eq!(unsafe { text(c"bob".as_ptr()) }, Ok("bob"));
        assert_eq!(unsafe { optional_text(std::ptr::null()) }, Ok(None));
        assert_eq!(unsafe { bytes(std::ptr::null(), 0) }, Ok(&[][..]));
        assert_eq!(
            unsafe { bytes(std::ptr::null(), 3) },
            Err(ErrorCode::PARAM_ERR)
        );
        assert!(unsafe { out::<u64>(std::ptr::null_mut()) }.is_err());
    }
}
