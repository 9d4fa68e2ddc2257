//! Who may log in to a relay. The relay core surfaces each `LOGIN` and leaves the decision
//! to the application; [`serve`](crate::serve) asks an [`Authenticator`]. Three come with
//! the crate: [`OpenAccess`] (anyone as anyone: for trying things out), [`TokenTable`] (a fixed
//! table of users and tokens) and, with the `jwt` feature, `SignedTokens` (JWTs an
//! application's backend mints: the LiveKit and Agora pattern, where the relay never holds
//! user passwords; `jwt.rs`).

use std::collections::HashMap;

use peermsg::ErrorCode;
use subtle::ConstantTimeEq;

/// Decides logins: `Ok` if `user` may log in with `token`, else the code its
/// `LOGIN_RESULT` carries (the code's name is the one-line reason the client shows).
pub trait Authenticator: Send + Sync + 'static {
    /// Whether `user` may log in with `token`.
    fn authenticate(&self, user: &str, token: &[u8]) -> Result<(), ErrorCode>;

    /// Whether anyone may log in as anyone: such a relay lets one user take over another's
    /// session (a new login of a name replaces the old one).
    fn is_open(&self) -> bool {
        false
    }
}

impl<A: Authenticator + ?Sized> Authenticator for Box<A> {
    fn authenticate(&self, user: &str, token: &[u8]) -> Result<(), ErrorCode> {
        (**self).authenticate(user, token)
    }

    fn is_open(&self) -> bool {
        (**self).is_open()
    }
}

/// Anyone may log in as anyone. Only for trying things out on a machine of one's own.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenAccess;

/// The former name of [`OpenAccess`] (it clashed with the wire's `Open` frame).
#[deprecated(note = "renamed `OpenAccess`")]
#[allow(non_upper_case_globals)]
pub const Open: OpenAccess = OpenAccess;

impl Authenticator for OpenAccess {
    fn authenticate(&self, _user: &str, _token: &[u8]) -> Result<(), ErrorCode> {
        Ok(())
    }

    fn is_open(&self) -> bool {
        true
    }
}

/// A fixed table of users and their tokens, compared in constant time.
#[derive(Clone, Debug, Default)]
pub struct TokenTable(HashMap<String, Vec<u8>>);

impl TokenTable {
    /// A table of `(user, token)` pairs.
    pub fn new(tokens: HashMap<String, Vec<u8>>) -> Self {
        TokenTable(tokens)
    }

    /// Users in the table.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the table is empty (nobody may log in).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Authenticator for TokenTable {
    fn authenticate(&self, user: &str, token: &[u8]) -> Result<(), ErrorCode> {
        let known = self
            .0
            .get(user)
            .is_some_and(|want| bool::from(want.as_slice().ct_eq(token)));
        known.then_some(()).ok_or(ErrorCode::LOGIN_REJECTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_compares_tokens_and_open_lets_anyone_in() {
        let table = TokenTable::new(HashMap::from([("alice".into(), b"pw".to_vec())]));
        assert_eq!(table.authenticate("alice", b"pw"), Ok(()));
        assert_eq!(
            table.authenticate("alice", b"pX"),
            Err(ErrorCode::LOGIN_REJECTED)
        );
        assert_eq!(
            table.authenticate("mallory", b"pw"),
            Err(ErrorCode::LOGIN_REJECTED)
        );
        assert!(!table.is_open() && OpenAccess.is_open());
    }
}
