//! Who the relay lets in: failed logins throttled per address, and accept errors told
//! from a broken listener.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Failed logins per address, for throttling.
pub(super) struct LoginFailures {
    by_ip: HashMap<IpAddr, (tokio::time::Instant, u32)>,
    max: u32,
    window: Duration,
}

impl LoginFailures {
    /// Entries kept at most; past it, expired ones go, and then all (throttling fails
    /// open rather than growing without bound).
    const MAX_ADDRESSES: usize = 65_536;

    pub(super) fn throttled(&self, ip: IpAddr) -> bool {
        self.by_ip.get(&ip).is_some_and(|(since, n)| {
            *n >= self.max && crate::clock::tokio_now() - *since < self.window
        })
    }

    pub(super) fn failed(&mut self, ip: IpAddr) {
        let now = crate::clock::tokio_now();
        if self.by_ip.len() >= Self::MAX_ADDRESSES {
            let window = self.window;
            self.by_ip.retain(|_, (since, _)| now - *since < window);
            if self.by_ip.len() >= Self::MAX_ADDRESSES {
                self.by_ip.clear();
            }
        }
        let entry = self.by_ip.entry(ip).or_insert((now, 0));
        if now - entry.0 >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

impl LoginFailures {
    /// At most `max` failures from an address within `window`.
    pub(super) fn new(max: u32, window: Duration) -> Self {
        LoginFailures {
            by_ip: HashMap::new(),
            max,
            window,
        }
    }
}

/// Accept errors that say the listener itself is broken, not that this one connection or
/// the process's resources failed for now.
pub(super) fn is_fatal(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        InvalidInput | PermissionDenied | Unsupported | NotConnected
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_logins_throttle_an_address_for_the_window_only() {
        let mut failures = LoginFailures {
            by_ip: HashMap::new(),
            max: 3,
            window: Duration::from_millis(200),
        };
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(!failures.throttled(ip));
            failures.failed(ip);
        }
        assert!(failures.throttled(ip));
        assert!(!failures.throttled(other));
        std::thread::sleep(Duration::from_millis(250));
        assert!(!failures.throttled(ip));
    }
}
