//! What other relays say: messages to this relay, to users logged in here, and the
//! search for the relay a user is on.

use async_nats::Client;
use async_nats::{Message, Subscriber};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use peermsg::relay::{ConnId, Relay, RelayError};
use peermsg::wire::{IdentityKey, Transmit, UserId};
use peermsg::{ErrorCode, Instant};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::msg::*;
use super::*;

impl Glue {
    /// Asks the cluster which relay has `user`, with the link's first bytes (its `HELLO`).
    pub(super) fn search(&mut self, conn: ConnId, user: &UserId, first: Transmit) {
        let key = LinkKey {
            node: self.me.node.clone(),
            run: self.me.run,
            id: conn.0,
        };
        let mut msg = BytesMut::new();
        head(&mut msg, OPEN, &self.me);
        msg.put_u64(conn.0);
        msg.put(first);
        // The search carries the opener's bytes number 0.
        self.add_link(conn, LinkWire::new(key, None, 1, 0));
        if let Some(m) = &self.metrics {
            m.nats(true, msg.len());
        }
        let (client, inputs) = (self.client.clone(), self.inputs.clone());
        let subject = user_subject(user);
        let limit = self.config.search_timeout;
        let msg = msg.freeze();
        tokio::spawn(async move {
            use async_nats::RequestErrorKind;
            let answer = match ask_where_user_is(&client, subject, msg, limit).await {
                Ok(Ok(reply)) => {
                    let mut b = reply.payload;
                    match read_head(&mut b) {
                        Some((ACCEPTED, relay)) => Ok(relay),
                        Some((BUSY, _)) => Err(ErrorCode::LIMIT_EXCEEDED),
                        _ => Err(ErrorCode::CONNECTIONLOST),
                    }
                }
                Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Err(ErrorCode::OFFLINE),
                // Without NATS nothing can be known of the user.
                _ if client.connection_state() != async_nats::connection::State::Connected => {
                    Err(ErrorCode::CONNECTIONLOST)
                }
                // A relay that has the user answers; one that lost it stays silent.
                Ok(Err(e)) if e.kind() == RequestErrorKind::TimedOut => Err(ErrorCode::OFFLINE),
                Err(_) => Err(ErrorCode::OFFLINE),
                Ok(Err(_)) => Err(ErrorCode::CONNECTIONLOST),
            };
            let _ = inputs.send(ClusterInput::Found(conn, answer)).await;
        });
    }

    /// Asks the relay `user` is logged in on for the identity key the user announced
    /// there; the answer (`None` if no relay has the user or NATS could not ask) comes
    /// back as [`ClusterInput::KeyFound`].
    pub(crate) fn find_key(&mut self, conn: ConnId, user: UserId) {
        let mut msg = BytesMut::new();
        head(&mut msg, KEY_ASK, &self.me);
        if let Some(m) = &self.metrics {
            m.nats(true, msg.len());
        }
        let (client, inputs) = (self.client.clone(), self.inputs.clone());
        let subject = user_subject(&user);
        let limit = self.config.search_timeout;
        let msg = msg.freeze();
        tokio::spawn(async move {
            let key = match ask_where_user_is(&client, subject, msg, limit).await {
                Ok(Ok(reply)) => {
                    let mut b = reply.payload;
                    match read_head(&mut b) {
                        Some((KEY, _)) => <[u8; 32]>::try_from(&b[..]).ok().map(IdentityKey),
                        _ => None,
                    }
                }
                _ => None,
            };
            let _ = inputs.send(ClusterInput::KeyFound(conn, user, key)).await;
        });
    }

    /// The relay at a link's other end is known: what waited for it goes.
    pub(super) fn peer_known(&mut self, relay: &mut Relay, conn: ConnId, peer: Relayed) {
        let Some(w) = self.links.get_mut(&conn) else {
            return;
        };
        if w.peer.is_some() {
            return;
        }
        w.peer = Some(peer);
        let early = std::mem::take(&mut w.early);
        for batch in early {
            self.transmit(relay, conn, batch);
        }
    }

    pub(super) fn on_node_message(&mut self, relay: &mut Relay, now: Instant, payload: Bytes) {
        let mut b = payload;
        let Some((kind, from)) = read_head(&mut b) else {
            return;
        };
        let Some(key) = get_key(&mut b) else {
            return;
        };
        let Some(conn) = self.by_key.get(&key).copied() else {
            // A link this relay no longer has: the other end is told.
            if kind == BYTES {
                self.reset(relay, &from.node, &key);
            }
            return;
        };
        // A user briefly on two relays may have both answer a search: the link goes on
        // with the first that did, and the other is told to drop its end.
        let peer = self.links.get(&conn).and_then(|w| w.peer.clone());
        if peer.as_ref().is_some_and(|p| p.node != from.node) {
            if kind == BYTES {
                self.reset(relay, &from.node, &key);
            }
            return;
        }
        match kind {
            BYTES => {
                let Some(seq) = get_u64(&mut b) else {
                    return;
                };
                let Some(w) = self.links.get_mut(&conn) else {
                    return;
                };
                // The same relay in a later run: the link's other end is gone.
                let stale = peer.is_some_and(|p| p.run != from.run);
                if seq != w.next_in || stale {
                    // A message was lost (or came from an earlier run): the link cannot
                    // go on, and its messages end at both ends.
                    tracing::warn!(link = conn.0, seq, want = w.next_in, "gap in a link");
                    self.end_link(relay, conn, "gap");
                    return;
                }
                w.next_in += 1;
                self.peer_known(relay, conn, from);
                relay.handle_input_buf(now, conn, BytesMut::from(b));
            }
            RESET => {
                if let Some(m) = &self.metrics {
                    m.link_ended("lost");
                }
                self.forget(conn);
                relay.handle_disconnect(conn);
            }
            _ => {}
        }
    }

    pub(super) fn on_user_message(
        &mut self,
        relay: &mut Relay,
        now: Instant,
        user: UserId,
        msg: Message,
    ) {
        let mut b = msg.payload;
        let Some((kind, from)) = read_head(&mut b) else {
            return;
        };
        match kind {
            OPEN => {
                let (Some(reply), Some(id)) = (msg.reply, get_u64(&mut b)) else {
                    return;
                };
                let key = LinkKey {
                    node: from.node.clone(),
                    run: from.run,
                    id,
                };
                if self.by_key.contains_key(&key) {
                    return;
                }
                let answer = match relay.accept_link(now, &user) {
                    Ok(conn) => {
                        self.add_link(conn, LinkWire::new(key, Some(from), 0, 1));
                        relay.handle_input_buf(now, conn, BytesMut::from(b));
                        ACCEPTED
                    }
                    Err(RelayError::Links) => BUSY,
                    // Not here (any more): another relay may have the user, and answers.
                    Err(_) => return,
                };
                let mut out = BytesMut::new();
                head(&mut out, answer, &self.me);
                self.send(relay, None, reply.to_string(), out.freeze());
            }
            // Only the relay the user is on answers; the others stay silent.
            KEY_ASK if relay.user_session(&user).is_some() => {
                let Some(reply) = msg.reply else {
                    return;
                };
                let mut out = BytesMut::new();
                head(&mut out, KEY, &self.me);
                if let Some(key) = relay.user_key(&user) {
                    out.put_slice(&key.0);
                }
                self.send(relay, None, reply.to_string(), out.freeze());
            }
            KICK if from.node != self.me.node => {
                let Some(at) = get_u64(&mut b) else {
                    return;
                };
                // The newer login stays (ties: the larger relay name).
                let older = self
                    .present
                    .get(&user)
                    .is_some_and(|p| p.since < at || (p.since == at && from.node > self.me.node));
                if older {
                    tracing::info!(%user, by = %from.node, "session replaced by a login on another relay");
                    relay.kick_user(&user);
                }
            }
            _ => {}
        }
    }
}

/// A request on a user's subject, answered by the relay the user is logged in on.
/// Several NATS servers learn of a new subscription one after the other: "no responders"
/// is asked again for a moment ([`INTEREST_SPREADS`]) before it counts.
async fn ask_where_user_is(
    client: &Client,
    subject: String,
    msg: Bytes,
    limit: Duration,
) -> Result<Result<Message, async_nats::RequestError>, tokio::time::error::Elapsed> {
    let clustered = !client.server_info().connect_urls.is_empty();
    let started = crate::clock::tokio_now();
    let mut wait = Duration::from_millis(20);
    loop {
        let asked = tokio::time::timeout(limit, client.request(subject.clone(), msg.clone())).await;
        let nobody =
            matches!(&asked, Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders);
        if !(nobody && clustered && crate::clock::tokio_now() - started + wait <= INTEREST_SPREADS)
        {
            return asked;
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
}

/// Forwards a subscription's messages to the relay's task, waiting for room.
pub(super) fn forward(
    mut sub: Subscriber,
    inputs: mpsc::Sender<ClusterInput>,
    wrap: impl Fn(Message) -> ClusterInput + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if inputs.send(wrap(msg)).await.is_err() {
                return;
            }
        }
    })
}
