//! Time as the caller gives it: the core never reads a clock.

use core::ops::{Add, AddAssign, Sub};
use core::time::Duration;

/// A point in time, in microseconds from an epoch the caller chooses.
///
/// Every input of the state machines takes the current `Instant`; deadlines come back as
/// `Instant`s. Only differences matter, so any monotonic source works: a
/// `std::time::Instant` (see [`Instant::from_std`]), a hardware tick counter, or a virtual
/// clock in tests. Arithmetic saturates instead of overflowing.
///
/// ```
/// use core::time::Duration;
/// use peermsg::Instant;
///
/// let t0 = Instant::from_micros(1_000);
/// let t1 = t0 + Duration::from_millis(5);
/// assert_eq!(t1.as_micros(), 6_000);
/// assert_eq!(t1 - t0, Duration::from_millis(5));
/// assert_eq!(t0 - t1, Duration::ZERO); // saturates
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The epoch itself.
    pub const ZERO: Instant = Instant(0);
    /// The latest representable instant, a deadline that never comes.
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The span since `earlier`, or zero if `earlier` is later than `self`.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// Converts a `std::time::Instant`, measured from `epoch`.
    ///
    /// Instants before `epoch` map to [`Instant::ZERO`].
    ///
    /// The runtime reads its clock and hands the core the result:
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// /// Two seconds after the runtime's epoch, as the core counts time.
    /// fn two_seconds_in(epoch: std::time::Instant) -> peermsg::Instant {
    ///     peermsg::Instant::from_std(epoch, epoch + Duration::from_secs(2))
    /// }
    /// # let _ = two_seconds_in;
    /// ```
    #[cfg(feature = "std")]
    pub fn from_std(epoch: std::time::Instant, now: std::time::Instant) -> Self {
        Instant::ZERO + now.saturating_duration_since(epoch)
    }
}

fn micros_of(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(micros_of(rhs)))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_sub(micros_of(rhs)))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_at_both_ends() {
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(Instant::from_micros(5) + Duration::MAX, Instant::MAX);
    }

    #[test]
    fn difference_is_exact_in_microseconds() {
        let a = Instant::from_micros(1_234_567);
        let b = a + Duration::from_micros(89);
        assert_eq!(b - a, Duration::from_micros(89));
        assert_eq!(b.as_micros(), 1_234_656);
    }
}
