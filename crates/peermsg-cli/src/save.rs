//! Where `peermsg listen` puts what arrives, and how peer text reaches the terminal.
//!
//! Nothing a peer sends decides a path outside the directory, replaces a file, or follows
//! a link: every name is made here, and every file is created new (`O_EXCL`), which also
//! refuses a symlink planted at the name.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// A user id as a file name part: letters, digits, `-` and `_` as they are, every other
/// byte as `%XX`, so two different ids never give one name and none gives a path.
pub fn user_part(user: &str) -> String {
    let mut out = String::new();
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `name` with ` (n)` before its extension, as browsers name a second download.
fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_string();
    }
    match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{} ({n}){}", &name[..dot], &name[dot..]),
        _ => format!("{name} ({n})"),
    }
}

/// Tries `make` on `dir/name`, then `name (1)`, `name (2)`, ... while the name is taken;
/// gives the path that worked.
fn first_free(
    dir: &Path,
    name: &str,
    mut make: impl FnMut(&Path) -> std::io::Result<()>,
) -> std::io::Result<PathBuf> {
    for n in 0..10_000 {
        let path = dir.join(numbered(name, n));
        match make(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        ErrorKind::AlreadyExists,
        "no free name",
    ))
}

/// Writes `data` to a new file in `dir` named `name`, or `name (1)`, `name (2)`, ... if
/// taken: never over an existing file, never through a link. The bytes go to a hidden
/// temporary file first, which takes the name only once all of them are written, so no
/// name ever holds part of them (a failed write, or a process killed mid-way, leaves at
/// most a hidden `.peermsg-` file, which the next start tidies away). Gives the path.
pub fn save_new(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<PathBuf> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".peermsg-")
        .suffix(".part")
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.flush()?;
    let tmp = tmp.into_temp_path();
    let path = place(&tmp, dir, name)?;
    // Its name went with `place`; nothing is left to remove.
    let _ = tmp.keep();
    Ok(path)
}

/// Moves a received file from its temporary name to `dir/name`, or `name (1)`, ... if
/// taken, without replacing anything (a new link, then the old name removed). Gives the
/// final path.
pub fn place(tmp: &Path, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let path = first_free(dir, name, |path| std::fs::hard_link(tmp, path))?;
    std::fs::remove_file(tmp)?;
    Ok(path)
}

/// Peer text made safe for a terminal: control characters (escape sequences, newlines)
/// and bidirectional overrides are shown as `\u{..}` escapes, so a peer can neither
/// recolour the screen nor forge a line.
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || peermsg_tokio::is_bidi_control(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_map_to_distinct_plain_names() {
        assert_eq!(user_part("alice"), "alice");
        assert_eq!(user_part("a/b"), "a%2Fb");
        assert_ne!(user_part("a/b"), user_part("b"));
        assert_ne!(user_part("a_b"), user_part("a/b"));
        assert_eq!(user_part(".."), "%2E%2E");
    }

    #[test]
    fn saving_never_replaces_nor_follows_a_link() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.bin"), b"old").unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("victim");
        std::os::unix::fs::symlink(&target, dir.path().join("x (1).bin")).unwrap();
        let path = save_new(dir.path(), "x.bin", b"new").unwrap();
        assert_eq!(path, dir.path().join("x (2).bin"));
        assert_eq!(std::fs::read(dir.path().join("x.bin")).unwrap(), b"old");
        assert!(!target.exists(), "wrote through the link");
        assert_eq!(std::fs::read(path).unwrap(), b"new");
    }

    #[test]
    fn placing_keeps_existing_files_and_removes_the_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("report.pdf"), b"mine").unwrap();
        let tmp = dir.path().join(".peermsg-x-report.pdf.part");
        std::fs::write(&tmp, b"theirs").unwrap();
        let path = place(&tmp, dir.path(), "report.pdf").unwrap();
        assert_eq!(path, dir.path().join("report (1).pdf"));
        assert_eq!(
            std::fs::read(dir.path().join("report.pdf")).unwrap(),
            b"mine"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
        assert!(!tmp.exists());
    }

    #[test]
    fn peer_text_cannot_drive_the_terminal() {
        assert_eq!(shown("hi\u{1b}[2J"), "hi\\u{1b}[2J");
        assert_eq!(
            shown("a\ncommand from alice: x"),
            "a\\u{a}command from alice: x"
        );
        assert_eq!(shown("abc\u{202e}txt.exe"), "abc\\u{202e}txt.exe");
        assert_eq!(shown("naïve 名前"), "naïve 名前");
    }
}
