//! Built without the `cluster` feature: no [`Cluster`] value can exist, so a relay is
//! never one of a cluster (the code that would drive one is there and never runs), and
//! NATS is not built.

use std::time::Duration;

use peermsg::relay::{ConnId, Relay};
use peermsg::wire::{Transmit, UserId};
use peermsg::Instant;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// A relay's place in a cluster over NATS: not in this build (enable peermsg-tokio's
/// `cluster` feature). No value of this type exists.
#[derive(Clone, Debug)]
pub enum Cluster {}

/// Why a cluster cannot be joined: none can be in this build.
#[derive(Debug)]
pub enum ClusterError {}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for ClusterError {}

/// NATS input: none in this build.
pub(crate) enum ClusterInput {}

/// The relay's glue to NATS: none in this build.
pub(crate) enum Glue {}

impl Glue {
    pub(crate) async fn connect(
        config: Cluster,
        _metrics: Option<Metrics>,
    ) -> Result<(Self, mpsc::Receiver<ClusterInput>), ClusterError> {
        match config {}
    }

    pub(crate) fn heartbeat(&self) -> Duration {
        match *self {}
    }

    pub(crate) fn transmit(&mut self, _relay: &mut Relay, _conn: ConnId, _batch: Transmit) {
        match *self {}
    }

    pub(crate) fn login(&self, _conn: ConnId, _user: UserId) {
        match *self {}
    }

    pub(crate) fn handle(&mut self, _relay: &mut Relay, _now: Instant, input: ClusterInput) {
        match input {}
    }

    pub(crate) fn closed(&mut self, _relay: &mut Relay, _conn: ConnId) {
        match *self {}
    }

    pub(crate) fn find_key(&mut self, _conn: ConnId, _user: UserId) {
        match *self {}
    }

    pub(crate) fn user_offline(&mut self, _user: &UserId) {
        match *self {}
    }

    pub(crate) fn tick(&mut self, _relay: &mut Relay) {
        match *self {}
    }

    pub(crate) async fn flush(&self) {
        match *self {}
    }
}
