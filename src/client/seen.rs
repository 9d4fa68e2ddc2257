//! Commands exactly once: which commands with an identity (`CMD`'s `once`) this receiver
//! delivered, so that one its sender sends again after a lost connection is confirmed and
//! not delivered twice (docs/PROTOCOL.md, "Commands exactly once"). The rule is written
//! here only; a [`Client`](super::Client) consults it for every whole command, and a new
//! connection's client inherits it ([`Client::carry_from`](super::Client::carry_from)).
//!
//! Memory is bounded per sending user ([`SeenCmds::STREAMS_PER_USER`]) and in all
//! ([`SeenCmds::USERS`]), so no user can make another user's streams forgotten. Where a
//! record was dropped to stay in those bounds, a command *sent again* of a stream no longer
//! known cannot be told from one delivered before: it is refused with `REPEAT_FORGOTTEN`
//! rather than risk delivering it twice. A command sent for the first time is never a
//! repeat, and is always delivered.

use alloc::collections::BTreeMap;
use core::time::Duration;

use crate::evict::remove_oldest;
use crate::wire::{CmdOnce, UserId};
use crate::Instant;

/// What to do with a whole command that carries an identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not delivered before: deliver it (it is now remembered).
    New,
    /// Delivered before: confirm it to its sender, do not deliver it again.
    Repeat,
    /// Sent again, of a stream whose record was dropped to stay in bounds: it may have
    /// been delivered, or not; refuse it (`REPEAT_FORGOTTEN`).
    Forgotten,
}

/// One stream's deliveries: the highest number delivered, which of the
/// [`SeenCmds::WINDOW`] numbers up to it were (bit `i`: `max - i`), and when it was last
/// heard. Numbers may be delivered out of order: a command sent again after a lost
/// connection can arrive after later ones that were on their way.
#[derive(Clone, Copy, Debug)]
struct Stream {
    max: u64,
    delivered: [u64; 4],
    heard: Instant,
}

impl Stream {
    fn new(seq: u64, now: Instant) -> Self {
        Stream {
            max: seq,
            delivered: [1, 0, 0, 0],
            heard: now,
        }
    }

    /// Whether `seq` was delivered: `None` if it is below the window (not known).
    fn has(&self, seq: u64) -> Option<bool> {
        if seq > self.max {
            return Some(false);
        }
        let back = self.max - seq;
        (back < SeenCmds::WINDOW)
            .then(|| self.delivered[(back / 64) as usize] >> (back % 64) & 1 == 1)
    }

    fn mark(&mut self, seq: u64, now: Instant) {
        self.heard = now;
        if seq > self.max {
            let shift = seq - self.max;
            self.delivered = match shift < SeenCmds::WINDOW {
                true => shifted(self.delivered, shift as u32),
                false => [0; 4],
            };
            self.max = seq;
        }
        let back = self.max - seq;
        if back < SeenCmds::WINDOW {
            self.delivered[(back / 64) as usize] |= 1 << (back % 64);
        }
    }
}

/// The 256-bit set `bits` (word 0 lowest), moved up by `n` (< 256) bits.
fn shifted(bits: [u64; 4], n: u32) -> [u64; 4] {
    let (words, rest) = ((n / 64) as usize, n % 64);
    let mut out = [0u64; 4];
    for i in (words..4).rev() {
        let low = bits[i - words];
        let carry = match (rest, i > words) {
            (0, _) | (_, false) => 0,
            _ => bits[i - words - 1] >> (64 - rest),
        };
        out[i] = low << rest | carry;
    }
    out
}

/// One sending user's streams, and when a stream of theirs was last dropped to stay in
/// bounds.
#[derive(Clone, Debug, Default)]
struct UserStreams {
    streams: BTreeMap<[u8; 16], Stream>,
    forgot: Option<Instant>,
    heard: Instant,
}

/// The commands a receiver delivered, per (source user, stream), for a window of time:
/// a command sent again after a lost connection is confirmed, not delivered twice.
///
/// Memory is bounded per sending user ([`SeenCmds::STREAMS_PER_USER`]) and in all
/// ([`SeenCmds::USERS`]), so no user can make another user's streams forgotten. Where a
/// record was dropped to stay in those bounds, a command *sent again* of a stream no longer
/// known cannot be told from one delivered before: it is refused with `REPEAT_FORGOTTEN`
/// rather than risk delivering it twice. A command sent for the first time is never a
/// repeat, and is always delivered.
#[derive(Clone, Debug)]
pub struct SeenCmds {
    users: BTreeMap<UserId, UserStreams>,
    /// How long a stream is remembered after it was last heard.
    keep: Duration,
    /// When a whole user's record was last dropped to stay under [`SeenCmds::USERS`].
    forgot_user: Option<Instant>,
}

impl Default for SeenCmds {
    fn default() -> Self {
        SeenCmds::new(Duration::from_secs(300))
    }
}

impl SeenCmds {
    /// Streams remembered per sending user at most: a user's client processes sending to
    /// this receiver within the window. Past it, the user's own oldest stream is dropped.
    pub const STREAMS_PER_USER: usize = 64;
    /// Sending users remembered at most. Past it, the user heard least recently is dropped.
    pub const USERS: usize = 4096;
    /// Numbers of a stream remembered below its highest: a command sent again that comes
    /// after more than this many later ones of its stream is refused as forgotten.
    pub const WINDOW: u64 = 256;

    /// A table for senders that send again for up to `resume_window` after a lost
    /// connection. A stream is kept for twice that after it was last heard: a sender's
    /// window runs from its own loss, which may come later than the delivery it did not
    /// hear of.
    pub fn new(resume_window: Duration) -> Self {
        SeenCmds {
            users: BTreeMap::new(),
            keep: resume_window.saturating_mul(2),
            forgot_user: None,
        }
    }

    /// Streams remembered now.
    pub fn len(&self) -> usize {
        self.users.values().map(|u| u.streams.len()).sum()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The verdict on a whole command from `from` with identity `once`, at `now`. Nothing
    /// is remembered here: a command counts as delivered only once the application has it
    /// ([`SeenCmds::delivered`]), so one whose connection is lost before then is delivered
    /// when it comes again.
    pub fn check(&self, now: Instant, from: &UserId, once: CmdOnce) -> Verdict {
        let keep = self.keep;
        let live = |at: Instant| now.saturating_duration_since(at) < keep;
        let user = self.users.get(from);
        let known = user
            .and_then(|u| u.streams.get(&once.stream))
            .filter(|s| live(s.heard));
        if let Some(stream) = known {
            return match stream.has(once.seq) {
                Some(true) => Verdict::Repeat,
                Some(false) => Verdict::New,
                // Too far below to know: a first sending is new, a repeat may not be.
                None if once.resent => Verdict::Forgotten,
                None => Verdict::New,
            };
        }
        // A stream not known (now): sent for the first time, it is new; sent again, it is
        // new unless a record that might have held it was dropped within the window.
        let forgot =
            self.forgot_user.is_some_and(live) || user.and_then(|u| u.forgot).is_some_and(live);
        match once.resent && forgot {
            true => Verdict::Forgotten,
            false => Verdict::New,
        }
    }

    /// The application has command `once` of `from` (at `now`): it is remembered, within
    /// the bounds.
    pub fn delivered(&mut self, now: Instant, from: &UserId, once: CmdOnce) {
        let keep = self.keep;
        if let Some(user) = self.users.get_mut(from) {
            user.heard = now;
            let known = user
                .streams
                .get_mut(&once.stream)
                .filter(|s| now.saturating_duration_since(s.heard) < keep);
            if let Some(stream) = known {
                stream.mark(once.seq, now);
                return;
            }
        }
        self.remember(now, from, once);
    }

    /// A new stream's record, within the bounds.
    fn remember(&mut self, now: Instant, from: &UserId, once: CmdOnce) {
        if !self.users.contains_key(from) && self.users.len() >= Self::USERS {
            let keep = self.keep;
            self.users
                .retain(|_, u| now.saturating_duration_since(u.heard) < keep);
            if self.users.len() >= Self::USERS
                && remove_oldest(&mut self.users, |u| u.heard).is_some()
            {
                self.forgot_user = Some(now);
            }
        }
        let keep = self.keep;
        let live = |at: Instant| now.saturating_duration_since(at) < keep;
        let user = self.users.entry(from.clone()).or_default();
        user.heard = now;
        if user.streams.len() >= Self::STREAMS_PER_USER {
            user.streams.retain(|_, s| live(s.heard));
        }
        if user.streams.len() >= Self::STREAMS_PER_USER
            && remove_oldest(&mut user.streams, |s| s.heard).is_some()
        {
            user.forgot = Some(now);
        }
        user.streams.insert(once.stream, Stream::new(once.seq, now));
        if self.forgot_user.is_some_and(|at| !live(at)) {
            self.forgot_user = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::new(name).unwrap()
    }

    fn once(stream: u32, seq: u64, resent: bool) -> CmdOnce {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&stream.to_be_bytes());
        CmdOnce {
            stream: id,
            seq,
            resent,
        }
    }

    const W: Duration = Duration::from_secs(300);

    /// A command checked and, if new, taken by the application.
    fn take(seen: &mut SeenCmds, now: Instant, from: &UserId, once: CmdOnce) -> Verdict {
        let verdict = seen.check(now, from, once);
        if verdict == Verdict::New {
            seen.delivered(now, from, once);
        }
        verdict
    }

    #[test]
    fn a_command_not_taken_is_not_remembered() {
        let mut seen = SeenCmds::new(W);
        let alice = user("alice");
        assert_eq!(
            seen.check(Instant::ZERO, &alice, once(1, 1, false)),
            Verdict::New
        );
        // Its connection was lost before the application took it: sent again, it is new.
        assert_eq!(
            seen.check(Instant::ZERO, &alice, once(1, 1, true)),
            Verdict::New
        );
        seen.delivered(Instant::ZERO, &alice, once(1, 1, true));
        assert_eq!(
            seen.check(Instant::ZERO, &alice, once(1, 1, true)),
            Verdict::Repeat
        );
    }

    #[test]
    fn a_repeat_is_confirmed_not_delivered() {
        let mut seen = SeenCmds::new(W);
        let t = Instant::ZERO;
        let alice = user("alice");
        assert_eq!(take(&mut seen, t, &alice, once(1, 1, false)), Verdict::New);
        assert_eq!(take(&mut seen, t, &alice, once(1, 2, false)), Verdict::New);
        assert_eq!(
            take(&mut seen, t, &alice, once(1, 2, true)),
            Verdict::Repeat
        );
        assert_eq!(
            take(&mut seen, t, &alice, once(1, 1, true)),
            Verdict::Repeat
        );
        assert_eq!(take(&mut seen, t, &alice, once(1, 3, true)), Verdict::New);
        // Another user's stream of the same bytes is another stream.
        assert_eq!(
            take(&mut seen, t, &user("bob"), once(1, 2, true)),
            Verdict::New
        );
    }

    #[test]
    fn a_command_sent_again_after_later_ones_were_delivered_is_still_new() {
        let mut seen = SeenCmds::new(W);
        let t = Instant::ZERO;
        let alice = user("alice");
        assert_eq!(take(&mut seen, t, &alice, once(1, 1, false)), Verdict::New);
        // 2 was cut off on its way; 3 to 100 overtook it.
        for seq in 3..=100 {
            assert_eq!(
                take(&mut seen, t, &alice, once(1, seq, false)),
                Verdict::New
            );
        }
        assert_eq!(take(&mut seen, t, &alice, once(1, 2, true)), Verdict::New);
        assert_eq!(
            take(&mut seen, t, &alice, once(1, 2, true)),
            Verdict::Repeat
        );
        assert_eq!(
            take(&mut seen, t, &alice, once(1, 50, true)),
            Verdict::Repeat
        );
        // Overtaken by more than the window: it cannot be told, and is refused.
        for seq in 102..=400 {
            assert_eq!(
                take(&mut seen, t, &alice, once(1, seq, false)),
                Verdict::New
            );
        }
        assert_eq!(
            take(&mut seen, t, &alice, once(1, 101, true)),
            Verdict::Forgotten
        );
        assert_eq!(
            take(&mut seen, t, &alice, once(1, 101, false)),
            Verdict::New
        );
    }

    #[test]
    fn the_window_moves_by_whole_words_and_by_bits() {
        let mut s = Stream::new(10, Instant::ZERO);
        for seq in [11, 75, 139, 140, 300] {
            s.mark(seq, Instant::ZERO);
        }
        for seq in [75, 139, 140, 300] {
            assert_eq!(s.has(seq), Some(true), "{seq}");
        }
        for seq in [76, 138, 299, 301] {
            assert_eq!(s.has(seq), Some(false), "{seq}");
        }
        assert_eq!(s.has(300 - SeenCmds::WINDOW), None);
        assert_eq!(shifted([1 << 63, 0, 0, 0], 1), [0, 1, 0, 0]);
        assert_eq!(shifted([1, 0, 0, 0], 255), [0, 0, 0, 1 << 63]);
    }

    #[test]
    fn no_user_makes_another_forget() {
        let mut seen = SeenCmds::new(W);
        let mut t = Instant::ZERO;
        let (alice, mallory) = (user("alice"), user("mallory"));
        assert_eq!(take(&mut seen, t, &alice, once(7, 5, false)), Verdict::New);
        for stream in 0..5000 {
            t += Duration::from_millis(1);
            assert_eq!(
                take(&mut seen, t, &mallory, once(stream, 1, false)),
                Verdict::New
            );
        }
        assert_eq!(seen.len(), 1 + SeenCmds::STREAMS_PER_USER);
        assert_eq!(
            take(&mut seen, t, &alice, once(7, 5, true)),
            Verdict::Repeat
        );
        // Mallory's own forgotten stream, sent again, is refused rather than delivered
        // twice; a command Mallory sends for the first time still goes through.
        assert_eq!(
            take(&mut seen, t, &mallory, once(0, 1, true)),
            Verdict::Forgotten
        );
        assert_eq!(
            take(&mut seen, t, &mallory, once(0, 2, false)),
            Verdict::New
        );
    }

    #[test]
    fn past_the_users_bound_a_resent_unknown_stream_is_refused() {
        let mut seen = SeenCmds::new(W);
        let mut t = Instant::ZERO;
        let alice = user("alice");
        assert_eq!(take(&mut seen, t, &alice, once(1, 3, false)), Verdict::New);
        for n in 0..SeenCmds::USERS {
            t += Duration::from_millis(1);
            let someone = user(&alloc::format!("u{n}"));
            assert_eq!(
                take(&mut seen, t, &someone, once(1, 1, false)),
                Verdict::New
            );
        }
        assert!(seen.users.len() <= SeenCmds::USERS);
        assert_eq!(
            take(&mut seen, t, &alice, once(1, 3, true)),
            Verdict::Forgotten
        );
        assert_eq!(take(&mut seen, t, &alice, once(1, 4, false)), Verdict::New);
    }

    #[test]
    fn a_stream_is_kept_for_twice_the_window() {
        let mut seen = SeenCmds::new(W);
        let alice = user("alice");
        assert_eq!(
            take(&mut seen, Instant::ZERO, &alice, once(1, 1, false)),
            Verdict::New
        );
        let later = Instant::ZERO + W + W / 2;
        assert_eq!(
            take(&mut seen, later, &alice, once(1, 1, true)),
            Verdict::Repeat
        );
        // Long after, with nothing dropped to stay in bounds, the stream is simply over:
        // a command sent again is taken as never delivered.
        let much_later = later + W * 3;
        assert_eq!(
            take(&mut seen, much_later, &alice, once(1, 2, true)),
            Verdict::New
        );
    }
}
