//! The messages relays of a cluster send each other: a kind, the sending relay, and a
//! link key or payload, in a small binary layout written and read here only.

use bytes::{Buf, BufMut, Bytes, BytesMut};

// Kinds of cluster message (docs/CLUSTER.md, "Messages").
pub(super) const BYTES: u8 = 1;
pub(super) const RESET: u8 = 2;
pub(super) const OPEN: u8 = 3;
pub(super) const KICK: u8 = 4;
pub(super) const ALIVE: u8 = 5;
pub(super) const ACCEPTED: u8 = 6;
pub(super) const BUSY: u8 = 7;
pub(super) const PROBE: u8 = 8;
pub(super) const KEY_ASK: u8 = 9;
pub(super) const KEY: u8 = 10;

/// A link's name in the cluster: the relay that opened it, that relay's run, its id there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct LinkKey {
    pub(super) node: String,
    pub(super) run: u64,
    pub(super) id: u64,
}

/// A relay's run: which process of that name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Relayed {
    pub(super) node: String,
    pub(super) run: u64,
}

pub(super) fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u8(s.len() as u8);
    out.put_slice(s.as_bytes());
}

pub(super) fn get_str(b: &mut Bytes) -> Option<String> {
    let len = usize::from(*b.first()?);
    b.advance(1);
    if b.len() < len {
        return None;
    }
    String::from_utf8(b.split_to(len).to_vec()).ok()
}

pub(super) fn get_u64(b: &mut Bytes) -> Option<u64> {
    (b.len() >= 8).then(|| b.get_u64())
}

/// A message's head: its kind and the relay (and run) that sent it.
pub(super) fn head(out: &mut BytesMut, kind: u8, me: &Relayed) {
    out.put_u8(kind);
    put_str(out, &me.node);
    out.put_u64(me.run);
}

pub(super) fn read_head(b: &mut Bytes) -> Option<(u8, Relayed)> {
    let kind = *b.first()?;
    b.advance(1);
    let node = get_str(b)?;
    let run = get_u64(b)?;
    Some((kind, Relayed { node, run }))
}

pub(super) fn put_key(out: &mut BytesMut, key: &LinkKey) {
    put_str(out, &key.node);
    out.put_u64(key.run);
    out.put_u64(key.id);
}

pub(super) fn get_key(b: &mut Bytes) -> Option<LinkKey> {
    Some(LinkKey {
        node: get_str(b)?,
        run: get_u64(b)?,
        id: get_u64(b)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{user_subject, Cluster};
    use super::*;
    use peermsg::wire::UserId;

    #[test]
    fn user_subjects_carry_any_id() {
        let user = UserId::new("a.b *>c").unwrap();
        assert_eq!(user_subject(&user), "peermsg.user.612e62202a3e63");
    }

    #[test]
    fn names_that_a_subject_cannot_carry_are_refused() {
        for bad in ["", "a.b", "a b", "*", &"x".repeat(65)] {
            assert!(Cluster::new(vec!["nats://x".into()], bad).is_err(), "{bad}");
        }
        assert!(Cluster::new(vec![], "ok").is_err());
        assert!(Cluster::new(vec!["nats://x".into()], "relay-1_a").is_ok());
    }

    #[test]
    fn a_message_head_and_key_read_back() {
        let me = Relayed {
            node: "n1".into(),
            run: 7,
        };
        let key = LinkKey {
            node: "n2".into(),
            run: 9,
            id: peermsg::relay::LINK_BIT | 3,
        };
        let mut out = BytesMut::new();
        head(&mut out, BYTES, &me);
        put_key(&mut out, &key);
        out.put_u64(5);
        out.put_slice(b"xyz");
        let mut b = out.freeze();
        assert_eq!(read_head(&mut b), Some((BYTES, me)));
        assert_eq!(get_key(&mut b), Some(key));
        assert_eq!(get_u64(&mut b), Some(5));
        assert_eq!(&b[..], b"xyz");
        // Cut short anywhere, nothing is misread.
        let mut short = Bytes::from_static(&[BYTES, 5, b'a']);
        assert_eq!(read_head(&mut short), None);
    }
}
