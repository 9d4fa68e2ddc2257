//! Every message's lifecycle, as data: the one place its state rules live. A send and an
//! incoming message move only by these tables ([`send_step`], [`receive_step`]); the code
//! that handles frames and calls asks them, and `docs/PROTOCOL.md`'s tables "Sender
//! transitions" and "Receiver transitions" are checked against them by a test.
//!
//! Sender:
//!
//! | from | on | to |
//! | --- | --- | --- |
//! | Waiting | slot | Sending |
//! | Waiting | cancel | done |
//! | Waiting | failure | done |
//! | Sending | last frame | Ending |
//! | Sending | cancel | done |
//! | Sending | result | done |
//! | Sending | failure | done |
//! | Ending | result | done |
//! | Ending | cancel | Cancelling |
//! | Ending | failure | done |
//! | Cancelling | cancel | Cancelling |
//! | Cancelling | result | done |
//! | Cancelling | failure | done |
//!
//! Receiver:
//!
//! | from | on | to |
//! | --- | --- | --- |
//! | Arriving | whole | Delivered |
//! | Arriving | cancel | done |
//! | Arriving | reject | done |
//! | Arriving | failure | done |
//! | Delivered | take | done |
//! | Delivered | answer | done |
//! | Delivered | cancel | done |
//! | Delivered | failure | done |
//!
//! "done" is not a state: the message is forgotten, its one result sent or reported. A
//! failure is a timeout, a failed file source or check, or the connection's end.

/// Where a send of ours stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepted, waiting for a slot under the peer's caps.
    Waiting,
    /// Its frames are going out.
    Sending,
    /// All of it went out; its result has not come.
    Ending,
    /// Cancelled after all of it went out: the receiver's `RESULT` says which came first.
    Cancelling,
}

/// What moves a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendInput {
    /// A slot under the peer's caps is free.
    Slot,
    /// Its last frame went out.
    LastFrame,
    /// The user cancels it.
    Cancel,
    /// The receiver's `RESULT`.
    Result,
    /// A timeout, a failed file source, the connection's end.
    Failure,
}

/// Where an incoming message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Receiving {
    /// Its bytes are coming.
    Arriving,
    /// Whole and verified; the application's turn.
    Delivered,
}

/// What moves an incoming message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReceiveInput {
    /// Every byte of a command, or a transfer's verified `END`.
    Whole,
    /// The sender's (or a relay's) `CANCEL`.
    Cancel,
    /// The application refuses it while it arrives.
    Reject,
    /// The application takes it (a command, or a buffer it does not confirm itself).
    Take,
    /// The application's word on a file (or a buffer it confirms): kept or not.
    Answer,
    /// A failed check, the connection's end.
    Failure,
}

/// Where a step leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next<S> {
    /// On to this state.
    To(S),
    /// The message is over.
    Done,
}

use Next::{Done, To};

/// The sender's lifecycle.
pub(crate) const SEND_LIFECYCLE: &[(Phase, SendInput, Next<Phase>)] = &[
    (Phase::Waiting, SendInput::Slot, To(Phase::Sending)),
    (Phase::Waiting, SendInput::Cancel, Done),
    (Phase::Waiting, SendInput::Failure, Done),
    (Phase::Sending, SendInput::LastFrame, To(Phase::Ending)),
    (Phase::Sending, SendInput::Cancel, Done),
    (Phase::Sending, SendInput::Result, Done),
    (Phase::Sending, SendInput::Failure, Done),
    (Phase::Ending, SendInput::Result, Done),
    (Phase::Ending, SendInput::Cancel, To(Phase::Cancelling)),
    (Phase::Ending, SendInput::Failure, Done),
    (Phase::Cancelling, SendInput::Cancel, To(Phase::Cancelling)),
    (Phase::Cancelling, SendInput::Result, Done),
    (Phase::Cancelling, SendInput::Failure, Done),
];

/// The receiver's lifecycle.
pub(crate) const RECEIVE_LIFECYCLE: &[(Receiving, ReceiveInput, Next<Receiving>)] = &[
    (
        Receiving::Arriving,
        ReceiveInput::Whole,
        To(Receiving::Delivered),
    ),
    (Receiving::Arriving, ReceiveInput::Cancel, Done),
    (Receiving::Arriving, ReceiveInput::Reject, Done),
    (Receiving::Arriving, ReceiveInput::Failure, Done),
    (Receiving::Delivered, ReceiveInput::Take, Done),
    (Receiving::Delivered, ReceiveInput::Answer, Done),
    (Receiving::Delivered, ReceiveInput::Cancel, Done),
    (Receiving::Delivered, ReceiveInput::Failure, Done),
];

/// Where `on` takes a send in `from`; `None` if it does not apply there.
pub(crate) fn send_step(from: Phase, on: SendInput) -> Option<Next<Phase>> {
    lookup(SEND_LIFECYCLE, from, on)
}

/// Where `on` takes an incoming message in `from`; `None` if it does not apply there.
pub(crate) fn receive_step(from: Receiving, on: ReceiveInput) -> Option<Next<Receiving>> {
    lookup(RECEIVE_LIFECYCLE, from, on)
}

fn lookup<S: Copy + PartialEq, I: Copy + PartialEq>(
    table: &[(S, I, Next<S>)],
    from: S,
    on: I,
) -> Option<Next<S>> {
    table
        .iter()
        .find(|(s, i, _)| *s == from && *i == on)
        .map(|(_, _, next)| *next)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;

    /// The rows of the table under `heading` in `doc`, as `(from, on, to)` strings.
    fn table(doc: &str, heading: &str) -> Vec<(String, String, String)> {
        let start = doc.find(heading).expect("the table's heading");
        doc[start..]
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2) // header and rule
            .map(|l| {
                let cells: Vec<String> = l
                    .trim_matches('|')
                    .split('|')
                    .map(|c| String::from(c.trim()))
                    .collect();
                (cells[0].clone(), cells[1].clone(), cells[2].clone())
            })
            .collect()
    }

    /// A name as the tables write it: `LastFrame` is "last frame", `Cancelling` stays.
    fn words(debug: &str, state: bool) -> String {
        if state {
            return String::from(debug);
        }
        let mut out = String::new();
        for (i, c) in debug.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                out.push(' ');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    fn rows<S: core::fmt::Debug, I: core::fmt::Debug>(
        lifecycle: &[(S, I, Next<S>)],
    ) -> Vec<(String, String, String)> {
        lifecycle
            .iter()
            .map(|(from, on, next)| {
                let to = match next {
                    To(s) => format!("{s:?}"),
                    Done => String::from("done"),
                };
                (format!("{from:?}"), words(&format!("{on:?}"), false), to)
            })
            .collect()
    }

    #[test]
    fn protocol_md_states_the_lifecycles_the_code_follows() {
        let doc = include_str!("../../docs/PROTOCOL.md");
        assert_eq!(table(doc, "Sender transitions"), rows(SEND_LIFECYCLE));
        assert_eq!(table(doc, "Receiver transitions"), rows(RECEIVE_LIFECYCLE));
        // And this module's own copy.
        let here = include_str!("lifecycle.rs")
            .replace("//! ", "")
            .replace("//!", "");
        assert_eq!(table(&here, "Sender:"), rows(SEND_LIFECYCLE));
        assert_eq!(table(&here, "Receiver:"), rows(RECEIVE_LIFECYCLE));
    }

    #[test]
    fn every_state_can_end_and_nothing_moves_twice_on_one_input() {
        for (from, on, _) in SEND_LIFECYCLE {
            let same = SEND_LIFECYCLE
                .iter()
                .filter(|(f, i, _)| f == from && i == on)
                .count();
            assert_eq!(same, 1, "{from:?} on {on:?}");
        }
        for phase in [
            Phase::Waiting,
            Phase::Sending,
            Phase::Ending,
            Phase::Cancelling,
        ] {
            assert_eq!(send_step(phase, SendInput::Failure), Some(Done));
        }
        for state in [Receiving::Arriving, Receiving::Delivered] {
            assert_eq!(receive_step(state, ReceiveInput::Failure), Some(Done));
            assert_eq!(receive_step(state, ReceiveInput::Cancel), Some(Done));
        }
    }
}
