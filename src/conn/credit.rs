//! Connection credit (docs/PROTOCOL.md, "Flow control"): bytes of message payload a side
//! may send before the peer grants more. One rule for both directions, whoever holds them.

use super::Violation;
use crate::wire::credit_step;

/// The credit we give: the peer may send up to `granted` message bytes in all; we grant
/// more as we release what arrived, a step at a time.
#[derive(Debug)]
pub(crate) struct RecvWindow {
    window: u64,
    received: u64,
    released: u64,
    granted: u64,
}

/// A grant [`RecvWindow::grant`] decided on.
pub(crate) struct Grant {
    /// The new limit to announce (`CONN_CREDIT`), if there is one.
    pub max_data: Option<u64>,
    /// The room given was less than the window: the holder owes the rest.
    pub short: bool,
}

impl RecvWindow {
    /// A window of `window` bytes, `granted` of them already announced.
    pub(crate) fn new(window: u64, granted: u64) -> Self {
        RecvWindow {
            window,
            received: 0,
            released: 0,
            granted,
        }
    }

    /// `len` message bytes arrived: within what we granted, or the peer broke the rule.
    pub(crate) fn count(&mut self, len: u64) -> Result<(), Violation> {
        self.received = self.received.saturating_add(len);
        if self.received > self.granted {
            return Err(Violation::BeyondConnCredit);
        }
        Ok(())
    }

    /// `len` bytes that arrived are gone from here (taken, forwarded or dropped).
    pub(crate) fn release(&mut self, len: u64) {
        self.released = self.released.saturating_add(len);
        debug_assert!(
            self.released <= self.received,
            "released more than received"
        );
    }

    /// A new grant, when the window allows a step more than was granted: up to `released`
    /// plus the window, but no more than `room` beyond what was granted, and never less
    /// than `floor` beyond what was released.
    pub(crate) fn grant(&mut self, room: u64, floor: u64) -> Grant {
        // Saturating: windows and budgets are the application's to set, any size.
        let full = self.released.saturating_add(self.window);
        let next_step = self.granted.saturating_add(credit_step(self.window));
        if full < next_step {
            return Grant {
                max_data: None,
                short: false,
            };
        }
        let target = full
            .min(self.granted.saturating_add(room))
            .max(self.released.saturating_add(floor));
        let short = target < full;
        if target < next_step {
            return Grant {
                max_data: None,
                short,
            };
        }
        let max_data = Some(target);
        self.granted = target;
        Grant { max_data, short }
    }

    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    pub(crate) fn granted(&self) -> u64 {
        self.granted
    }

    /// Sets what was granted (a relay grants nothing before login, then more).
    pub(crate) fn set_granted(&mut self, granted: u64) {
        self.granted = granted;
    }
}

/// The credit we were given: we may send up to `credit` message bytes in all.
#[derive(Debug, Default)]
pub(crate) struct SendWindow {
    sent: u64,
    credit: u64,
}

impl SendWindow {
    /// Bytes we may still send.
    pub(crate) fn room(&self) -> u64 {
        self.credit.saturating_sub(self.sent)
    }

    pub(crate) fn spend(&mut self, len: u64) {
        debug_assert!(len <= self.room(), "sent beyond connection credit");
        self.sent = self.sent.saturating_add(len);
    }

    /// The peer's `CONN_CREDIT`; `true` if it gives more room. With `window` (the
    /// peer's announced connection window), a grant beyond what was sent plus the window
    /// is the peer's violation.
    pub(crate) fn raise(&mut self, max_data: u64, window: Option<u64>) -> Result<bool, Violation> {
        if window.is_some_and(|w| max_data > self.sent.saturating_add(w)) {
            return Err(Violation::ConnCreditBeyondWindow);
        }
        if max_data <= self.credit {
            return Ok(false);
        }
        self.credit = max_data;
        Ok(true)
    }
}
