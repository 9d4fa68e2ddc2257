//! The one clock of the tokio driver: the core's [`Instant`]s are time since an epoch taken
//! when a client or relay starts, and this is the only place that reads tokio's clock for
//! them. Nothing else in the client or relay asks the time.

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

/// Sixteen bytes from the system's random source: seeds of a client's streams and keys.
/// (Should it fail, the process id and the time make bytes no other process has.)
pub(crate) fn random16() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        bytes[..8].copy_from_slice(&nanos.to_le_bytes());
        bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes
}
