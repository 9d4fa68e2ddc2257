//! Signed login tokens over a real relay connection: a token a backend minted logs in, and
//! every kind of bad token is refused with its own code, which the client reports.

use std::time::Duration;

use peermsg_tokio::{
    connect, mint_hmac, serve, Claims, ClientConfig, ConnectError, ErrorCode, HmacSecret,
    ServerConfig, SignedTokens,
};

const SECRET: &[u8] = b"shared with the backend, 32 bytes or more";

async fn relay() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let auth = SignedTokens::hmac(&HmacSecret::new(SECRET).unwrap()).audience("chat");
    tokio::spawn(serve(
        listener,
        ServerConfig::default(),
        auth,
        std::future::pending(),
    ));
    addr
}

/// A token with these claims, signed with `secret`.
fn token(secret: &[u8], claims: &Claims) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).unwrap()
}

fn claims(sub: &str, exp_in: i64, aud: &str) -> Claims {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    Claims {
        sub: sub.into(),
        exp: (now + exp_in) as u64,
        nbf: None,
        aud: Some(aud.into()),
    }
}

async fn login(addr: std::net::SocketAddr, user: &str, token: &str) -> Result<(), ErrorCode> {
    let connecting = connect(addr, user, token.as_bytes(), ClientConfig::default(), None);
    match tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .expect("answered in time")
    {
        Ok(_) => Ok(()),
        Err(ConnectError::Refused(code)) => Err(code),
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn every_bad_token_is_refused_with_its_code() {
    let addr = relay().await;
    let minted = mint_hmac(
        &HmacSecret::new(SECRET).unwrap(),
        "alice",
        3600,
        Some("chat"),
    )
    .unwrap();
    assert_eq!(login(addr, "alice", &minted).await, Ok(()));
    let now = jsonwebtoken::get_current_timestamp();
    let cases = [
        ("alice", minted.clone(), ErrorCode::TOKEN_WRONG_USER, "bob"),
        (
            "alice",
            token(SECRET, &claims("alice", -3600, "chat")),
            ErrorCode::TOKEN_EXPIRED,
            "alice",
        ),
        (
            "alice",
            token(
                SECRET,
                &Claims {
                    nbf: Some(now + 3600),
                    ..claims("alice", 7200, "chat")
                },
            ),
            ErrorCode::TOKEN_NOT_YET_VALID,
            "alice",
        ),
        (
            "alice",
            token(b"a guess", &claims("alice", 3600, "chat")),
            ErrorCode::TOKEN_BAD_SIGNATURE,
            "alice",
        ),
        (
            "alice",
            token(SECRET, &claims("alice", 3600, "billing")),
            ErrorCode::TOKEN_WRONG_AUDIENCE,
            "alice",
        ),
        (
            "alice",
            "alice's password".to_string(),
            ErrorCode::TOKEN_MALFORMED,
            "alice",
        ),
    ];
    for (_, token, code, user) in cases {
        assert_eq!(login(addr, user, &token).await, Err(code), "{code}");
    }
}
