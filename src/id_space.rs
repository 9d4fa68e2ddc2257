//! The one rule about message ids a peer names (docs/PROTOCOL.md, "Message ids"): ids only
//! grow, so an id is in progress, ended (its late frames are dropped), or never allocated
//! (the peer broke the protocol).

use crate::wire::MessageId;

/// Where an id stands.
pub(crate) enum IdState<T> {
    /// In progress, with what the map holds for it.
    Active(T),
    /// Allocated once and ended since.
    Ended,
    /// Never allocated: a protocol violation.
    Unknown,
}

/// Where `id` stands, given what a lookup among the ids in progress `found`, and `next`,
/// the next id to be allocated.
pub(crate) fn id_state<T>(found: Option<T>, next: MessageId, id: MessageId) -> IdState<T> {
    match found {
        Some(value) => IdState::Active(value),
        None if id < next => IdState::Ended,
        None => IdState::Unknown,
    }
}
