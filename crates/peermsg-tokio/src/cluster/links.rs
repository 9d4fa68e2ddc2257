//! A link's bytes over NATS: numbered, cut to the server's payload size, published
//! within a bounded queue, and the ends of links.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use peermsg::relay::{ConnId, LinkSide, Relay};
use peermsg::wire::Transmit;
use tokio::sync::mpsc;

use super::msg::*;
use super::*;

impl Glue {
    /// Queues a message for the publisher; a full queue makes the message wait (a link's
    /// in order with the rest of that link's), and `link` pauses in the core.
    pub(super) fn send(
        &mut self,
        relay: &mut Relay,
        link: Option<ConnId>,
        subject: String,
        payload: Bytes,
    ) {
        if let Some(m) = &self.metrics {
            m.nats(true, payload.len());
        }
        let wire = link.and_then(|l| self.links.get_mut(&l));
        match wire {
            Some(w) if !w.stalled.is_empty() => w.stalled.push_back((link, subject, payload)),
            Some(w) => match self.publish.try_send((link, subject, payload)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(msg)) => {
                    w.stalled.push_back(msg);
                    if let Some(l) = link {
                        relay.pause_writes(l);
                        self.wait_for_room(l);
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            },
            // Not a link's: a heartbeat, reset, kick or answer, small and rare; it waits in
            // a task of its own if it must, up to CONTROL_WAITING of them (past that NATS
            // has been stalled long enough for the links to end, and it is dropped).
            None => {
                if let Err(mpsc::error::TrySendError::Full(msg)) =
                    self.publish.try_send((None, subject, payload))
                {
                    let Ok(permit) = self.control_waiting.clone().try_acquire_owned() else {
                        tracing::warn!("NATS is not taking messages: a control message dropped");
                        return;
                    };
                    let publish = self.publish.clone();
                    tokio::spawn(async move {
                        let _ = publish.send(msg).await;
                        drop(permit);
                    });
                }
            }
        }
    }

    pub(super) fn wait_for_room(&self, link: ConnId) {
        let (publish, inputs) = (self.publish.clone(), self.inputs.clone());
        tokio::spawn(async move {
            if let Ok(permit) = publish.reserve().await {
                drop(permit);
                let _ = inputs.send(ClusterInput::Room(link)).await;
            }
        });
    }

    /// A link's stalled messages go out as room allows; the link resumes once all did.
    pub(super) fn drain_stalled(&mut self, relay: &mut Relay, link: ConnId) {
        let Some(w) = self.links.get_mut(&link) else {
            return;
        };
        while let Some(msg) = w.stalled.pop_front() {
            if let Err(mpsc::error::TrySendError::Full(msg)) = self.publish.try_send(msg) {
                w.stalled.push_front(msg);
                self.wait_for_room(link);
                return;
            }
        }
        relay.resume_writes(link);
    }

    /// Bytes the core wrote to a link: sent to the relay at its other end, cut to the
    /// server's `max_payload` and numbered; an outgoing link's first bytes search for its
    /// user's relay.
    pub(crate) fn transmit(&mut self, relay: &mut Relay, conn: ConnId, mut batch: Transmit) {
        let Some(w) = self.links.get_mut(&conn) else {
            if let Some((LinkSide::Outgoing, user)) = relay.link(conn) {
                let user = user.clone();
                self.search(conn, &user, batch);
            }
            return;
        };
        let Some(peer) = &w.peer else {
            w.early.push(batch);
            return;
        };
        let subject = node_subject(&peer.node);
        // Each message is copied once, from the core's frames into it.
        while batch.has_remaining() {
            let Some(w) = self.links.get_mut(&conn) else {
                return;
            };
            let n = batch.remaining().min(self.max_chunk);
            let mut msg = BytesMut::with_capacity(n + 200);
            head(&mut msg, BYTES, &self.me);
            put_key(&mut msg, &w.key);
            msg.put_u64(w.next_out);
            w.next_out += 1;
            msg.put((&mut batch).take(n));
            self.send(relay, Some(conn), subject.clone(), msg.freeze());
        }
    }

    /// Tells a relay that one of its links is gone here.
    pub(super) fn reset(&mut self, relay: &mut Relay, node: &str, key: &LinkKey) {
        let mut msg = BytesMut::new();
        head(&mut msg, RESET, &self.me);
        put_key(&mut msg, key);
        self.send(relay, None, node_subject(node), msg.freeze());
    }

    /// Ends a link in the core (its messages end with `CONNECTIONLOST`) and tells the
    /// other end.
    pub(super) fn end_link(&mut self, relay: &mut Relay, conn: ConnId, why: &'static str) {
        if let Some(m) = &self.metrics {
            m.link_ended(why);
        }
        self.drop_end(relay, conn);
        relay.handle_disconnect(conn);
    }

    /// Forgets this relay's end of a link and tells the other end (if it answered);
    /// `false` if the link was forgotten already.
    pub(super) fn drop_end(&mut self, relay: &mut Relay, conn: ConnId) -> bool {
        let Some(w) = self.forget(conn) else {
            return false;
        };
        if let Some(peer) = &w.peer {
            self.reset(relay, &peer.node, &w.key);
        }
        true
    }

    pub(super) fn end_links_with(&mut self, relay: &mut Relay, node: &str, why: &'static str) {
        let gone: Vec<ConnId> = self
            .links
            .iter()
            .filter(|(_, w)| w.peer.as_ref().is_some_and(|p| p.node == node))
            .map(|(c, _)| *c)
            .collect();
        for conn in gone {
            self.end_link(relay, conn, why);
        }
    }

    pub(super) fn add_link(&mut self, conn: ConnId, wire: LinkWire) {
        self.by_key.insert(wire.key.clone(), conn);
        self.links.insert(conn, wire);
    }

    pub(super) fn forget(&mut self, conn: ConnId) -> Option<LinkWire> {
        let w = self.links.remove(&conn)?;
        self.by_key.remove(&w.key);
        Some(w)
    }
}
