//! Names and codes: what an incoming file may be called on disk, and the code a failure
//! to write it gives its sender.

/// The code a failure to write an incoming file gives its sender: `FILE_NO_SPACE` when
/// the disk has no room for it, `FILE_WRITE_ERR` for any other failure.
///
/// ```
/// use peermsg_tokio::{write_error_code, ErrorCode};
///
/// let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
/// assert_eq!(write_error_code(&full), ErrorCode::FILE_NO_SPACE);
/// let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
/// assert_eq!(write_error_code(&denied), ErrorCode::FILE_WRITE_ERR);
/// ```
pub fn write_error_code(error: &std::io::Error) -> peermsg::ErrorCode {
    match error.kind() {
        std::io::ErrorKind::StorageFull => peermsg::ErrorCode::FILE_NO_SPACE,
        _ => peermsg::ErrorCode::FILE_WRITE_ERR,
    }
}

/// Whether `c` is a bidirectional control character (U+061C, U+200E, U+200F, U+202A to
/// U+202E, U+2066 to U+2069): in a name it can make `gpj.exe` show as `exe.jpg`.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Makes a received file name safe to show and to use inside a directory: the base name
/// only, no `..`, no path separators (`/` or `\`), no control characters nor
/// bidirectional controls ([`is_bidi_control`]), not hidden (a leading `.` becomes `_`),
/// not empty, at most 200 bytes. Whatever is left is never a path outside the directory.
///
/// ```
/// use peermsg_tokio::sanitize_file_name;
///
/// assert_eq!(sanitize_file_name("../../x"), "x");
/// assert_eq!(sanitize_file_name("/etc/passwd"), "passwd");
/// assert_eq!(sanitize_file_name("a\\b"), "b");
/// assert_eq!(sanitize_file_name("bad\u{0}name\n"), "bad_name_");
/// assert_eq!(sanitize_file_name("invoice\u{202e}fdp.exe"), "invoice_fdp.exe");
/// assert_eq!(sanitize_file_name(".bashrc"), "_bashrc");
/// assert_eq!(sanitize_file_name(""), "file");
/// assert_eq!(sanitize_file_name(".."), "file");
/// ```
pub fn sanitize_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut clean: String = base
        .chars()
        .map(|c| {
            if c.is_control() || is_bidi_control(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    while clean.len() > 200 {
        clean.pop();
    }
    let clean = clean.trim().to_string();
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        return "file".to_string();
    }
    // A hidden name would land out of sight (and among the sink's own `.peermsg-` files).
    match clean.strip_prefix('.') {
        Some(rest) => format!("_{rest}"),
        None => clean,
    }
}
