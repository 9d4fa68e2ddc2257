//! `--e2e`: this person's identity key and the keys of the peers they trust, kept in a
//! directory (`--keys`, or `~/.config/peermsg`): `identity` (the secret, hex, readable by
//! its owner only) and `known_peers` (one `user hexkey` line per peer, pinned on first
//! use, like ssh's `known_hosts`).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use peermsg::seal::{identity_of, Fingerprint, Sealing};
use peermsg::wire::{IdentityKey, UserId};

/// Where the keys are kept.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    dir: PathBuf,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.trim();
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Keys {
    /// The keys in `dir`, or in the user's configuration directory.
    pub(crate) fn at(dir: Option<&Path>) -> Result<Self> {
        let dir = match dir {
            Some(dir) => dir.to_path_buf(),
            None => {
                let config = std::env::var_os("XDG_CONFIG_HOME")
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute())
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
                    .ok_or_else(|| {
                        anyhow!("--e2e: no home directory for the keys; give --keys DIR")
                    })?;
                config.join("peermsg")
            }
        };
        Ok(Keys { dir })
    }

    pub(crate) fn known_peers_path(&self) -> PathBuf {
        self.dir.join("known_peers")
    }

    pub(crate) fn identity_path(&self) -> PathBuf {
        self.dir.join("identity")
    }

    /// This person's secret: read, or made (random, kept readable by its owner only).
    fn secret(&self) -> Result<[u8; 32]> {
        let path = self.identity_path();
        match fs::read_to_string(&path) {
            Ok(text) => from_hex(&text)
                .ok_or_else(|| anyhow!("{}: not an identity (64 hex digits)", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.dir)
                    .with_context(|| format!("--e2e: cannot make {}", self.dir.display()))?;
                let mut secret = [0u8; 32];
                getrandom::getrandom(&mut secret)
                    .map_err(|e| anyhow!("--e2e: no random source to make a key with: {e}"))?;
                let mut options = OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options
                    .open(&path)
                    .with_context(|| format!("--e2e: cannot make {}", path.display()))?;
                writeln!(file, "{}", hex(&secret))?;
                file.sync_all()?;
                Ok(secret)
            }
            Err(e) => Err(e).with_context(|| format!("--e2e: cannot read {}", path.display())),
        }
    }

    /// The peers' keys pinned so far.
    fn known(&self) -> Result<Vec<(UserId, IdentityKey)>> {
        let path = self.known_peers_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut known = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || anyhow!("{}:{}: not `user hexkey`", path.display(), n + 1);
            let (user, key) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
            let user = UserId::new(user).map_err(|_| bad())?;
            let key = from_hex::<32>(key).ok_or_else(bad)?;
            // A later line for the same user wins (a changed key accepted by appending it).
            known.retain(|(u, _): &(UserId, IdentityKey)| *u != user);
            known.push((user, IdentityKey(key)));
        }
        Ok(known)
    }

    /// Sealing for this person: its identity, the peers pinned, first use trusted.
    /// Returns the fingerprint of its own key too, for the person to show.
    pub(crate) fn sealing(&self) -> Result<(Sealing, Fingerprint)> {
        let secret = self.secret()?;
        let mut entropy = [0u8; 32];
        getrandom::getrandom(&mut entropy)
            .map_err(|e| anyhow!("--e2e: no random source to seal with: {e}"))?;
        let sealing = Sealing {
            secret,
            entropy,
            pinned: self.known()?,
            trust_first_use: true,
        };
        Ok((sealing, Fingerprint::of(&identity_of(&secret))))
    }

    /// `user`'s key, learned on first use, kept for next time.
    pub(crate) fn remember(&self, user: &UserId, key: &IdentityKey) -> Result<()> {
        if self.known()?.iter().any(|(u, k)| u == user && k == key) {
            return Ok(());
        }
        let path = self.known_peers_path();
        fs::create_dir_all(&self.dir)?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(file, "{} {}", user.as_str(), hex(&key.0))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_made_once_and_peers_pinned_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::at(Some(dir.path())).unwrap();
        let (first, print) = keys.sealing().unwrap();
        let (again, print_again) = keys.sealing().unwrap();
        assert_eq!(first.secret, again.secret, "one identity, kept");
        assert_eq!(print.to_string(), print_again.to_string());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("identity"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the secret is its owner's only");
        }
        let alice = UserId::new("alice").unwrap();
        keys.remember(&alice, &IdentityKey([7; 32])).unwrap();
        keys.remember(&alice, &IdentityKey([7; 32])).unwrap();
        let text = fs::read_to_string(keys.known_peers_path()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert_eq!(
            keys.sealing().unwrap().0.pinned,
            vec![(alice, IdentityKey([7; 32]))]
        );
        fs::write(keys.known_peers_path(), "alice zz\n").unwrap();
        let error = keys.sealing().unwrap_err().to_string();
        assert!(error.contains("known_peers:1"), "{error}");
    }
}
