//! The one clock of the tokio driver: the core's [`Instant`]s are time since an epoch taken
//! when a client or relay starts ([`Clock`]), and the driver's own timers read the same
//! clocks here. Nothing else in this crate asks the time.

use peermsg::Instant;

/// Time since a client or relay started.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    epoch: tokio::time::Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub(crate) fn start() -> Self {
        Clock {
            epoch: tokio::time::Instant::now(),
        }
    }

    /// Now, as the core counts time.
    pub(crate) fn now(&self) -> Instant {
        Instant::ZERO + self.epoch.elapsed()
    }

    /// The core's time `at`, as tokio counts it (to sleep until).
    pub(crate) fn at(&self, at: Instant) -> tokio::time::Instant {
        self.epoch + (at - Instant::ZERO)
    }
}

/// Now, for a driver's own timers that the core does not see (a pause after a failed
/// accept, login throttling, the cluster's heartbeats).
pub(crate) fn tokio_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// Now, for the file sink, which runs on the blocking pool.
pub(crate) fn std_now() -> std::time::Instant {
    std::time::Instant::now()
}

/// The system's time of day, to compare with the modification times of files on disk
/// (how old a kept partial file is).
pub(crate) fn system_now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// Microseconds since the Unix epoch: a relay's run number in a cluster, and the time
/// its probes carry (compared only with its own).
pub(crate) fn unix_micros() -> u64 {
    system_now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Sixteen bytes from the system's random source: seeds of a client's streams and keys.
/// (Should it fail, the process id and the time make bytes no other process has.)
/// 32 random bytes of the system's (sealing's generator seed); `None` without a random
/// source: never seal with a predictable generator.
pub(crate) fn random32() -> Option<[u8; 32]> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).ok().map(|_| bytes)
}

pub(crate) fn random16() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        bytes[..8].copy_from_slice(&unix_micros().to_le_bytes());
        bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes
}
