//! The SDK's error numbers, as C reads them: every call returns one, and every result
//! callback and event carries one. `pm_error_name` gives a number's name.

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::sync::{Mutex, OnceLock};

use peermsg::ErrorCode;

/// Success.
pub const PM_NOERR: i32 = 0;

/// Anything not covered by another code.
pub const PM_UNKNOWERR: i32 = 1;

/// Empty or malformed user id, or another bad argument.
pub const PM_PARAM_ERR: i32 = 5;

/// This login was replaced by a newer login of the same user.
pub const PM_KICKOUT_BY_RELOGIN: i32 = 10;

/// A send was attempted before login succeeded.
pub const PM_NOT_LOGIN: i32 = 12;

/// No answer within the configured time.
pub const PM_SOCKETTIMEOUT: i32 = 205;

/// The connection went away with the send pending.
pub const PM_CONNECTIONLOST: i32 = 207;

/// The target user is not connected.
pub const PM_OFFLINE: i32 = 603;

/// The send failed for another reason.
pub const PM_SENDFAIL: i32 = 1000;

/// The command is over the size cap.
pub const PM_SENDCMD_LARGE: i32 = 1100;

/// The buffer is over the size cap.
pub const PM_SENDBUFFER_LARGE: i32 = 1101;

/// The target user id is not valid.
pub const PM_SENDDATA_TARGETINVALID: i32 = 1102;

/// The file source failed.
pub const PM_SENDFILE_FILEINERROR: i32 = 1103;

/// Cancel of an unknown or finished send, or of a command.
pub const PM_TRANSID_INVALID: i32 = 1104;

/// The file does not exist.
pub const PM_FILE_NOT_EXIST: i32 = 1400;

/// The file could not be read.
pub const PM_FILE_READ_ERR: i32 = 1401;

/// The file could not be written.
pub const PM_FILE_WRITE_ERR: i32 = 1402;

/// The file already exists.
pub const PM_FILE_EXIST: i32 = 1403;

/// A file operation failed.
pub const PM_FILE_OPERATION_ERR: i32 = 1404;

/// The file's size is wrong or over the cap.
pub const PM_FILE_SIZE_ERR: i32 = 1405;

/// The receiver's disk has no room for the file (refused before its bytes come, or
/// when the disk filled as they came).
pub const PM_FILE_NO_SPACE: i32 = 1406;

/// The sender cancelled the send.
pub const PM_CANCELLED: i32 = 9000;

/// The receiver rejected the send before taking any of it.
pub const PM_REJECTED: i32 = 9001;

/// The receiver aborted the send part way.
pub const PM_ABORTED: i32 = 9002;

/// The received bytes do not match the sender's digest.
pub const PM_DIGEST_MISMATCH: i32 = 9003;

/// The received size differs from the declared size.
pub const PM_SIZE_MISMATCH: i32 = 9004;

/// The peer broke the protocol (malformed or unexpected frame).
pub const PM_PROTOCOL_VIOLATION: i32 = 9005;

/// No protocol version in common.
pub const PM_UNSUPPORTED_VERSION: i32 = 9006;

/// The peer sent data beyond the credit it was granted.
pub const PM_FLOW_CONTROL: i32 = 9007;

/// Too many commands or transfers in flight, or a declared size over a limit.
pub const PM_LIMIT_EXCEEDED: i32 = 9008;

/// The application refused the login.
pub const PM_LOGIN_REJECTED: i32 = 9009;

/// The peer is shutting down.
pub const PM_SHUTDOWN: i32 = 9010;

/// The login token has expired.
pub const PM_TOKEN_EXPIRED: i32 = 9011;

/// The login token is not valid yet.
pub const PM_TOKEN_NOT_YET_VALID: i32 = 9012;

/// The login token's signature does not check out.
pub const PM_TOKEN_BAD_SIGNATURE: i32 = 9013;

/// The login token is for another audience.
pub const PM_TOKEN_WRONG_AUDIENCE: i32 = 9014;

/// The login token cannot be read.
pub const PM_TOKEN_MALFORMED: i32 = 9015;

/// The login token is for another user.
pub const PM_TOKEN_WRONG_USER: i32 = 9016;

/// A command sent again after a lost connection, of a stream the receiver no longer
/// remembers (it kept its bounds): it may have been delivered, so it is not delivered
/// now (docs/PROTOCOL.md, "Commands exactly once").
pub const PM_REPEAT_FORGOTTEN: i32 = 9017;

/// The receiver takes sealed messages only (end-to-end encryption), and this one was not
/// sealed.
pub const PM_SEAL_REQUIRED: i32 = 9018;

/// A sealed send found no key to seal to: its receiver does not use end-to-end
/// encryption, or is not known where it was looked up.
pub const PM_NO_PEER_KEY: i32 = 9019;

/// The peer's identity key is not the one pinned for it: refused (someone between, a
/// relay for one, may be swapping keys), until the person accepts the new key.
pub const PM_PEER_KEY_CHANGED: i32 = 9020;

/// A sealed message did not open: altered, cut, spliced or moved on its way, or sealed
/// for another user.
pub const PM_SEAL_BROKEN: i32 = 9021;

/// The name of error number `code` (`"NOERR"`, `"OFFLINE"`, ...), or `"UNKNOWN"` for a
/// number this version does not know. The string is static: never free it.
#[no_mangle]
pub extern "C" fn pm_error_name(code: i32) -> *const c_char {
    static NAMES: OnceLock<Mutex<BTreeMap<i32, &'static CStr>>> = OnceLock::new();
    let name = u32::try_from(code)
        .ok()
        .and_then(|c| ErrorCode::from_u32(c).name());
    let Some(name) = name else {
        return c"UNKNOWN".as_ptr();
    };
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // One leaked string per known code, at most: the table is bounded by the codes.
    names
        .entry(code)
        .or_insert_with(|| Box::leak(CString::new(name).unwrap_or_default().into_boxed_c_str()))
        .as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `PM_*` number here is the core's code of that name, and every code of the
    /// core is here.
    #[test]
    fn the_numbers_are_the_cores() {
        let source = include_str!("codes.rs");
        let mut seen = 0;
        for line in source.lines() {
            let Some(rest) = line.strip_prefix("pub const PM_") else {
                continue;
            };
            let (name, number) = rest.split_once(": i32 = ").unwrap();
            let number: u32 = number.trim_end_matches(';').parse().unwrap();
            assert_eq!(ErrorCode::from_u32(number).name(), Some(name), "{line}");
            seen += 1;
        }
        let known = (0..100_000).filter(|n| ErrorCode::from_u32(*n).name().is_some());
        assert_eq!(seen, known.count());
    }

    #[test]
    fn names_of_numbers() {
        let name = |c| {
            unsafe { CStr::from_ptr(pm_error_name(c)) }
                .to_str()
                .unwrap()
        };
        assert_eq!(name(PM_NOERR), "NOERR");
        assert_eq!(name(PM_OFFLINE), "OFFLINE");
        assert_eq!(name(PM_CANCELLED), "CANCELLED");
        assert_eq!(name(-4), "UNKNOWN");
        assert_eq!(name(4242), "UNKNOWN");
        assert_eq!(pm_error_name(PM_OFFLINE), pm_error_name(PM_OFFLINE));
    }
}
