//! `peermsg token`: a signed login token.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::args::{read_hmac_secret, read_secret};

/// `peermsg token`: a signed login token on standard output.
pub(crate) fn token(
    user: &str,
    ttl: &str,
    secret_file: Option<PathBuf>,
    private_key: Option<PathBuf>,
    audience: Option<&str>,
) -> Result<ExitCode> {
    let ttl = humantime::parse_duration(ttl)
        .with_context(|| format!("--ttl {ttl}: not a duration such as 1h, 30m or 3600s"))?;
    let token = match (secret_file, private_key) {
        (Some(path), _) => {
            peermsg_tokio::mint_hmac(&read_hmac_secret(&path)?, user, ttl.as_secs(), audience)?
        }
        (None, Some(path)) => {
            peermsg_tokio::mint_ed25519(&read_secret(&path)?, user, ttl.as_secs(), audience)
                .with_context(|| format!("{}: not an Ed25519 private key", path.display()))?
        }
        (None, None) => bail!("give --secret-file or --private-key"),
    };
    say!("{token}");
    Ok(ExitCode::SUCCESS)
}
