//! When a client whose connection was lost dials again: at once for the first attempt,
//! then after a wait that doubles up to a bound, less a random part of up to half of it
//! (so that many clients cut off at once do not all come back at once), and not after the
//! resume window has passed since the loss.

use core::time::Duration;

use crate::Instant;

/// Where a client stands between connections.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Redial {
    /// When the connection was lost.
    pub(crate) since: Instant,
    /// Attempts made.
    pub(crate) attempts: u32,
    /// When the next attempt is due.
    pub(crate) next: Instant,
    /// The wait after the next failed attempt, before jitter.
    wait: Duration,
}

impl Redial {
    /// A connection lost at `now`: the first attempt after `backoff`, jittered.
    pub(crate) fn lost(now: Instant, backoff: Duration, rng: &mut Rng) -> Self {
        Redial {
            since: now,
            attempts: 0,
            next: now + rng.jitter(backoff),
            wait: backoff,
        }
    }

    /// The attempt at `now` failed: the next waits twice as long, up to `max`.
    pub(crate) fn failed(&mut self, now: Instant, max: Duration, rng: &mut Rng) {
        self.attempts += 1;
        self.wait = self.wait.saturating_mul(2).min(max);
        self.next = now + rng.jitter(self.wait);
    }
}

/// A small generator (xorshift) for jitter, seeded by the runtime: the core reads no
/// clock and no entropy of its own.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `wait`, less a random part of up to half of it.
    pub(crate) fn jitter(&mut self, wait: Duration) -> Duration {
        let half = wait / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(self.next() % nanos.saturating_add(1))
    }
}
