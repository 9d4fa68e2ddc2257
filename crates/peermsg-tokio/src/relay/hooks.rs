//! What a relay does beside relaying, in one place: metrics, and the cluster's glue.
//! The server calls these at each point of its loop whatever is configured; whether
//! metrics are kept or a cluster is joined is decided here, once.

use peermsg::relay::{ConnId, Relay, RelayStats};
use peermsg::wire::{Transmit, UserId};
use peermsg::{ErrorCode, Instant};

use crate::cluster::{ClusterInput, Glue};
use crate::metrics::Metrics;

/// The relay's metrics and cluster glue, if it has them.
pub(super) struct Hooks {
    metrics: Option<Metrics>,
    glue: Option<Glue>,
}

impl Hooks {
    pub(super) fn new(metrics: Option<Metrics>, glue: Option<Glue>) -> Self {
        Hooks { metrics, glue }
    }

    /// How often the cluster's heartbeat beats (an hour without a cluster: never).
    pub(super) fn heartbeat(&self) -> std::time::Duration {
        self.glue
            .as_ref()
            .map_or(std::time::Duration::from_secs(3600), Glue::heartbeat)
    }

    pub(super) fn in_cluster(&self) -> bool {
        self.glue.is_some()
    }

    pub(super) fn received(&self, bytes: usize) {
        if let Some(m) = &self.metrics {
            m.received(bytes);
        }
    }

    pub(super) fn sent(&self, bytes: usize) {
        if let Some(m) = &self.metrics {
            m.sent(bytes);
        }
    }

    pub(super) fn observe(&self, stats: impl FnOnce() -> RelayStats) {
        if let Some(m) = &self.metrics {
            m.observe(stats());
        }
    }

    pub(super) fn message_ended(&self, cmd: bool, code: ErrorCode) {
        if let Some(m) = &self.metrics {
            m.message_ended(cmd, code);
        }
    }

    /// Frames for a link to another relay: the glue carries them. Given back if `conn`
    /// is no link (its frames go to its socket).
    pub(super) fn link_transmit(
        &mut self,
        relay: &mut Relay,
        conn: ConnId,
        batch: Transmit,
    ) -> Option<Transmit> {
        match (&mut self.glue, conn.is_link()) {
            (Some(glue), true) => {
                glue.transmit(relay, conn, batch);
                None
            }
            _ => Some(batch),
        }
    }

    /// A login decided: counted; an accepted one is, in a cluster, announced first (the
    /// glue accepts it once this relay can be found for the user), else accepted now.
    pub(super) fn login(
        &self,
        relay: &mut Relay,
        conn: ConnId,
        user: UserId,
        decided: Result<(), ErrorCode>,
    ) {
        if let Some(m) = &self.metrics {
            m.login(decided.err());
        }
        // A connection gone meanwhile needs no answer.
        let _ = match (decided, &self.glue) {
            (Ok(()), Some(glue)) => {
                glue.login(conn, user);
                Ok(())
            }
            (Ok(()), None) => relay.accept_login(conn),
            (Err(code), _) => relay.reject_login(conn, code),
        };
    }

    /// A connection ended: its links' part of the cluster goes.
    pub(super) fn closed(&mut self, relay: &mut Relay, conn: ConnId) {
        if let Some(glue) = &mut self.glue {
            glue.closed(relay, conn);
        }
    }

    /// A client asked for the key of a user not logged in here: the cluster is asked
    /// (without one, nobody else could have the user).
    pub(super) fn key_wanted(&mut self, relay: &mut Relay, conn: ConnId, user: UserId) {
        match &mut self.glue {
            Some(glue) => glue.find_key(conn, user),
            None => relay.answer_key(conn, user, None),
        }
    }

    pub(super) fn user_offline(&mut self, user: &UserId) {
        if let Some(glue) = &mut self.glue {
            glue.user_offline(user);
        }
    }

    /// Something came from NATS.
    pub(super) fn cluster_input(&mut self, relay: &mut Relay, now: Instant, input: ClusterInput) {
        if let Some(glue) = &mut self.glue {
            glue.handle(relay, now, input);
        }
    }

    pub(super) fn tick(&mut self, relay: &mut Relay) {
        if let Some(glue) = &mut self.glue {
            glue.tick(relay);
        }
    }

    /// Shutting down: the links' `CLOSE`s go out before the relay's NATS connection ends.
    pub(super) async fn shut(&mut self, relay: &mut Relay) {
        let Some(glue) = &mut self.glue else {
            return;
        };
        loop {
            let mut batch = Transmit::new();
            match relay.poll_output(&mut batch) {
                peermsg::relay::RelayOutput::Transmit(conn, _) if conn.is_link() => {
                    glue.transmit(relay, conn, batch)
                }
                peermsg::relay::RelayOutput::Transmit(..)
                | peermsg::relay::RelayOutput::Event(_) => {}
                _ => break,
            }
        }
        glue.flush().await;
    }
}
