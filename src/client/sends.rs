//! The send scheduler: our sends by id and by wire id, and where each stands in the order
//! frames go out: commands waiting for a slot, then sending; transfers waiting for a slot,
//! then taking turns while they have credit (`ready`), or held by the connection's credit
//! (`conn_blocked`); and the deadlines of sends with a timeout. The client's frame
//! production (`Client::next_frame`) reads these in one place.

use alloc::boxed::Box;
use alloc::collections::{BTreeSet, VecDeque};

use super::lifecycle::SendInput;
use super::outgoing::{Outgoing, Phase};
use super::SendId;
use crate::conn::ids::IdSpace;
use crate::seq_map::SeqMap;
use crate::Instant;

/// Our sends, and the order they go out in.
#[derive(Debug)]
pub(super) struct Sends {
    pub(super) next_send: u64,
    /// Boxed: a send moves into and out of the map as a pointer, not a 288-byte copy.
    pub(super) outgoing: SeqMap<SendId, Box<Outgoing>>,
    /// Our sends by their wire ids.
    pub(super) by_wire: IdSpace<SendId>,
    pub(super) cmd_waiting: VecDeque<SendId>,
    pub(super) cmd_sending: VecDeque<SendId>,
    pub(super) cmds_in_flight: u64,
    pub(super) transfer_waiting: VecDeque<SendId>,
    pub(super) transfers_open: u64,
    pub(super) ready: VecDeque<SendId>,
    pub(super) conn_blocked: VecDeque<SendId>,
    pub(super) deadlines: BTreeSet<(Instant, SendId)>,
}

impl Default for Sends {
    fn default() -> Self {
        Sends {
            next_send: 0,
            outgoing: SeqMap::new(),
            by_wire: IdSpace::new(),
            cmd_waiting: VecDeque::new(),
            cmd_sending: VecDeque::new(),
            cmds_in_flight: 0,
            transfer_waiting: VecDeque::new(),
            transfers_open: 0,
            ready: VecDeque::new(),
            conn_blocked: VecDeque::new(),
            deadlines: BTreeSet::new(),
        }
    }
}

impl Sends {
    /// Sends waiting for a slot.
    pub(super) fn waiting(&self) -> usize {
        self.cmd_waiting.len() + self.transfer_waiting.len()
    }

    /// Nothing waits for a slot and nothing is ready to send: no frame to make.
    pub(super) fn is_idle(&self) -> bool {
        self.cmd_waiting.is_empty()
            && self.cmd_sending.is_empty()
            && self.transfer_waiting.is_empty()
            && self.ready.is_empty()
    }

    /// Queues `send`, with its deadline if it has one: its id.
    pub(super) fn enqueue(&mut self, mut send: Outgoing, deadline: Option<Instant>) -> SendId {
        let id = SendId(self.next_send);
        self.next_send += 1;
        match send.kind {
            super::SendKind::Cmd => self.cmd_waiting.push_back(id),
            _ => self.transfer_waiting.push_back(id),
        }
        if let Some(at) = deadline {
            send.deadline = Some(at);
            self.deadlines.insert((at, id));
        }
        self.outgoing.insert(id, Box::new(send));
        id
    }

    /// Puts a transfer back in the round-robin if it is sending and not queued.
    pub(super) fn make_ready(&mut self, id: SendId) {
        if let Some(send) = self.outgoing.get_mut(id) {
            queue_ready(&mut self.ready, id, send);
        }
    }
}

/// Puts transfer `id` in the round-robin if it is sending and not there yet.
pub(super) fn queue_ready(ready: &mut VecDeque<SendId>, id: SendId, send: &mut Outgoing) {
    if send.phase == Phase::Sending && !send.queued {
        send.queued = true;
        ready.push_back(id);
    }
}

/// Moves sends from `waiting` into progress while fewer than `cap` are `open`; `start`
/// puts each admitted send where it goes next.
pub(super) fn start_waiting(
    waiting: &mut VecDeque<SendId>,
    outgoing: &mut SeqMap<SendId, Box<Outgoing>>,
    open: &mut u64,
    cap: u64,
    mut start: impl FnMut(SendId, &mut Outgoing),
) {
    while *open < cap {
        let Some(id) = waiting.pop_front() else { break };
        // A send cancelled while it waited is gone from `outgoing`: skip it.
        if let Some(send) = outgoing.get_mut(id) {
            send.advance(SendInput::Slot);
            *open += 1;
            start(id, send);
        }
    }
}
