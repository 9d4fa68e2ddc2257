//! Signed login tokens (JWT, the `jwt` feature): [`SignedTokens`] checks them at a relay,
//! [`mint_hmac`] and [`mint_ed25519`] make them in an application's backend.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use peermsg::ErrorCode;

use crate::auth::Authenticator;

/// What a token [minted](mint_hmac) here says. The relay reads only `sub` of a token
/// itself; `exp`, `nbf` and `aud` are checked as JWT allows them (an `aud` may be one
/// string or a list of them).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// The user id the token lets log in.
    pub sub: String,
    /// When it expires (seconds since the Unix epoch).
    pub exp: u64,
    /// When it starts to be valid, if not at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Whom it is for, if the relay asks for an audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// A shared secret for HMAC-SHA256 tokens: at least [`HmacSecret::MIN_LEN`] bytes, so that
/// nobody can guess it, and never empty (an empty key signs tokens anyone can make).
#[derive(Clone)]
pub struct HmacSecret(Vec<u8>);

impl std::fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HmacSecret({} bytes)", self.0.len())
    }
}

/// A token secret shorter than [`HmacSecret::MIN_LEN`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "a token secret must be at least 32 bytes for HMAC-SHA256, and this one is {len}; \
     make one with `openssl rand -hex 32`"
)]
pub struct ShortSecret {
    /// The length of the secret refused.
    pub len: usize,
}

impl HmacSecret {
    /// The shortest secret accepted: HMAC-SHA256's output size (RFC 7518, section 3.2).
    pub const MIN_LEN: usize = 32;

    /// The secret `bytes`, or [`ShortSecret`] if it has fewer than [`Self::MIN_LEN`].
    ///
    /// ```
    /// use peermsg_tokio::HmacSecret;
    ///
    /// assert!(HmacSecret::new(b"").is_err());
    /// assert!(HmacSecret::new(b"0123456789abcdef0123456789abcdef").is_ok());
    /// ```
    pub fn new(bytes: &[u8]) -> Result<Self, ShortSecret> {
        if bytes.len() < Self::MIN_LEN {
            return Err(ShortSecret { len: bytes.len() });
        }
        Ok(HmacSecret(bytes.to_vec()))
    }
}

/// Signed, expiring tokens (JWT): the token's subject is the user id; `exp` is required,
/// `nbf` and `aud` are checked when present (and `aud` required if an audience is set).
/// HMAC-SHA256 with a shared secret, or Ed25519 with the backend's public key so the relay
/// never holds the signing key. Clocks may differ by up to [`SignedTokens::LEEWAY`] seconds.
///
/// A token is checked at login only: a session outlives its token's expiry, and ends as
/// any session does (the client closes it, or it is idle, or replaced).
#[derive(Clone)]
pub struct SignedTokens {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for SignedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedTokens")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl SignedTokens {
    /// Seconds of clock difference tolerated on `exp` and `nbf`.
    pub const LEEWAY: u64 = 5;

    fn with(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = Self::LEEWAY;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        SignedTokens { key, validation }
    }

    /// Tokens signed with HMAC-SHA256 and `secret`.
    pub fn hmac(secret: &HmacSecret) -> Self {
        Self::with(DecodingKey::from_secret(&secret.0), Algorithm::HS256)
    }

    /// Tokens signed with Ed25519, checked with the public key in `pem` (SPKI PEM, as
    /// `openssl pkey -pubout` writes it).
    pub fn ed25519_pem(pem: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Self::with(DecodingKey::from_ed_pem(pem)?, Algorithm::EdDSA))
    }

    /// Tokens must name `audience` (their `aud`).
    pub fn audience(mut self, audience: &str) -> Self {
        self.validation.set_audience(&[audience]);
        self.validation.validate_aud = true;
        self.validation
            .set_required_spec_claims(&["exp", "sub", "aud"]);
        self
    }
}

impl Authenticator for SignedTokens {
    fn authenticate(&self, user: &str, token: &[u8]) -> Result<(), ErrorCode> {
        let token = std::str::from_utf8(token).map_err(|_| ErrorCode::TOKEN_MALFORMED)?;
        let data = jsonwebtoken::decode::<Subject>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => ErrorCode::TOKEN_EXPIRED,
                ErrorKind::ImmatureSignature => ErrorCode::TOKEN_NOT_YET_VALID,
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    ErrorCode::TOKEN_BAD_SIGNATURE
                }
                ErrorKind::InvalidAudience => ErrorCode::TOKEN_WRONG_AUDIENCE,
                // No audience where one is asked for: not for us either.
                ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                    ErrorCode::TOKEN_WRONG_AUDIENCE
                }
                _ => ErrorCode::TOKEN_MALFORMED,
            },
        )?;
        if data.claims.sub != user {
            return Err(ErrorCode::TOKEN_WRONG_USER);
        }
        Ok(())
    }
}

/// The claim the relay reads of a token itself; `jsonwebtoken` checks the others from the
/// token's JSON as it is, so an `aud` list is read as JWT allows.
#[derive(serde::Deserialize)]
struct Subject {
    sub: String,
}

/// Mints a token for `user` valid for `ttl_secs` from now, signed with HMAC-SHA256 and
/// `secret` (for a backend written with this crate, and `peermsg token`).
pub fn mint_hmac(
    secret: &HmacSecret,
    user: &str,
    ttl_secs: u64,
    audience: Option<&str>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let key = jsonwebtoken::EncodingKey::from_secret(&secret.0);
    mint(&key, Algorithm::HS256, user, ttl_secs, audience)
}

/// Mints a token for `user` valid for `ttl_secs` from now, signed with the Ed25519 private
/// key in `pem` (PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes it).
pub fn mint_ed25519(
    pem: &[u8],
    user: &str,
    ttl_secs: u64,
    audience: Option<&str>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let key = jsonwebtoken::EncodingKey::from_ed_pem(pem)?;
    mint(&key, Algorithm::EdDSA, user, ttl_secs, audience)
}

fn mint(
    key: &jsonwebtoken::EncodingKey,
    algorithm: Algorithm,
    user: &str,
    ttl_secs: u64,
    audience: Option<&str>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = Claims {
        sub: user.to_string(),
        exp: jsonwebtoken::get_current_timestamp().saturating_add(ttl_secs),
        nbf: None,
        aud: audience.map(str::to_string),
    };
    jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), &claims, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn secret() -> HmacSecret {
        HmacSecret::new(SECRET).unwrap()
    }

    fn token(secret: &[u8], claims: &Claims) -> Vec<u8> {
        let key = jsonwebtoken::EncodingKey::from_secret(secret);
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key)
            .unwrap()
            .into_bytes()
    }

    fn claims(sub: &str, exp_from_now: i64) -> Claims {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        Claims {
            sub: sub.to_string(),
            exp: (now + exp_from_now) as u64,
            nbf: None,
            aud: None,
        }
    }

    #[test]
    fn every_token_failure_has_its_code() {
        let auth = SignedTokens::hmac(&secret());
        let now = jsonwebtoken::get_current_timestamp();
        let good = token(SECRET, &claims("alice", 3600));
        assert_eq!(auth.authenticate("alice", &good), Ok(()));
        assert_eq!(
            auth.authenticate("bob", &good),
            Err(ErrorCode::TOKEN_WRONG_USER)
        );
        let expired = token(SECRET, &claims("alice", -3600));
        assert_eq!(
            auth.authenticate("alice", &expired),
            Err(ErrorCode::TOKEN_EXPIRED)
        );
        let later = Claims {
            nbf: Some(now + 3600),
            ..claims("alice", 7200)
        };
        assert_eq!(
            auth.authenticate("alice", &token(SECRET, &later)),
            Err(ErrorCode::TOKEN_NOT_YET_VALID)
        );
        let forged = token(b"guess", &claims("alice", 3600));
        assert_eq!(
            auth.authenticate("alice", &forged),
            Err(ErrorCode::TOKEN_BAD_SIGNATURE)
        );
        for junk in [&b"not a token"[..], b"", b"\xff\xfe", b"a.b.c"] {
            assert_eq!(
                auth.authenticate("alice", junk),
                Err(ErrorCode::TOKEN_MALFORMED)
            );
        }
        let for_app = SignedTokens::hmac(&secret()).audience("app");
        let other = Claims {
            aud: Some("other".into()),
            ..claims("alice", 3600)
        };
        assert_eq!(
            for_app.authenticate("alice", &token(SECRET, &other)),
            Err(ErrorCode::TOKEN_WRONG_AUDIENCE)
        );
        let minted = mint_hmac(&secret(), "alice", 60, Some("app")).unwrap();
        assert_eq!(for_app.authenticate("alice", minted.as_bytes()), Ok(()));
    }

    #[test]
    fn a_short_or_empty_secret_is_refused() {
        for short in [&b""[..], b"\n", b"s3cret", &SECRET[..31]] {
            assert_eq!(
                HmacSecret::new(short).unwrap_err(),
                ShortSecret { len: short.len() }
            );
        }
        assert!(HmacSecret::new(SECRET).is_ok());
    }

    #[test]
    fn an_audience_list_is_read_as_jwt_allows() {
        let auth = SignedTokens::hmac(&secret()).audience("chat");
        let exp = jsonwebtoken::get_current_timestamp() + 3600;
        let with_aud = |aud: serde_json::Value| {
            let claims = serde_json::json!({"sub": "alice", "exp": exp, "aud": aud});
            let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
            jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)
                .unwrap()
                .into_bytes()
        };
        let listed = with_aud(serde_json::json!(["other", "chat"]));
        assert_eq!(auth.authenticate("alice", &listed), Ok(()));
        let others = with_aud(serde_json::json!(["other", "more"]));
        assert_eq!(
            auth.authenticate("alice", &others),
            Err(ErrorCode::TOKEN_WRONG_AUDIENCE)
        );
        assert_eq!(
            auth.authenticate("alice", &with_aud(serde_json::json!("chat"))),
            Ok(())
        );
    }
}
