//! Built without the `metrics` feature: no [`Metrics`] value can exist, so a relay keeps
//! none (the code that would update them is there and never runs), and neither
//! prometheus-client nor hyper is built.

use peermsg::relay::RelayStats;
use peermsg::ErrorCode;

/// A relay's metrics: not in this build (enable peermsg-tokio's `metrics` feature). No
/// value of this type exists.
#[derive(Clone, Debug)]
pub enum Metrics {}

impl Metrics {
    pub(crate) fn observe(&self, _stats: RelayStats) {
        match *self {}
    }

    pub(crate) fn received(&self, _bytes: usize) {
        match *self {}
    }

    pub(crate) fn sent(&self, _bytes: usize) {
        match *self {}
    }

    pub(crate) fn login(&self, _refused: Option<ErrorCode>) {
        match *self {}
    }

    pub(crate) fn message_ended(&self, _cmd: bool, _code: ErrorCode) {
        match *self {}
    }

    #[cfg(feature = "cluster")]
    pub(crate) fn nats(&self, _out: bool, _bytes: usize) {
        match *self {}
    }

    #[cfg(feature = "cluster")]
    pub(crate) fn peer_relays(&self, _peer_relays: usize) {
        match *self {}
    }

    #[cfg(feature = "cluster")]
    pub(crate) fn link_ended(&self, _what: &'static str) {
        match *self {}
    }

    #[cfg(feature = "cluster")]
    pub(crate) fn searched(&self, _what: &'static str) {
        match *self {}
    }
}
