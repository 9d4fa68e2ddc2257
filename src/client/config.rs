//! The client's configuration, with its defaults in one place.

use core::time::Duration;

use crate::wire::{Limits, LimitsError};

/// Everything a [`Client`](super::Client) can be tuned by. `ClientConfig::default()` suits a fast
/// link; each field documents its default.
///
/// ```
/// use core::time::Duration;
/// use peermsg::client::ClientConfig;
///
/// let config = ClientConfig { send_timeout: Some(Duration::from_secs(30)), ..ClientConfig::default() };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// What this endpoint accepts from its peer (frame size, user id and name lengths,
    /// command 64 KiB, buffer 100 MiB, file size). Default: [`Limits::default`].
    pub limits: Limits,
    /// Commands the peer may have sent to us without a `RESULT`. Default 64.
    pub max_cmds_in_flight: u64,
    /// Transfers the peer may have open toward us at once. Default 16.
    pub max_transfers: u64,
    /// Bytes of one transfer the peer may send beyond what we have consumed. Default 1 MiB.
    pub transfer_window: u64,
    /// Bytes of all transfers the peer may send beyond what we have consumed. Default 4 MiB.
    pub conn_window: u64,
    /// Sends of ours waiting for a free slot (commands beyond the peer's in-flight cap,
    /// transfers beyond its concurrency cap). A send over this is refused with
    /// `LIMIT_EXCEEDED`. Default 1024.
    pub max_queued_sends: usize,
    /// Largest piece of a file asked of the application at once (never more than the
    /// credit allows). Default 1 MiB: each piece is a hand-over to whatever reads files
    /// (a thread, in the tokio adapter), and at 256 KiB those hand-overs cost `peermsg
    /// send` a third more CPU (docs/PERFORMANCE.md, issue 28).
    pub file_read_size: u64,
    /// Progress events come every this many bytes (and always at the end). Default 64 KiB.
    pub progress_step: u64,
    /// Send a `PING` after this long without hearing from the peer. Default 15 s.
    pub keepalive_interval: Duration,
    /// Give the connection up after this long without hearing from the peer. Default 45 s.
    pub idle_timeout: Duration,
    /// End a send that has no result after this long with `SOCKETTIMEOUT`. Default: none.
    pub send_timeout: Option<Duration>,
    /// Log in to a relay only to send: the user's full session elsewhere (a listener) is
    /// not replaced, and nothing is routed to this one. Default false.
    pub send_only: bool,
    /// Confirm buffers as files are: only when the application calls
    /// [`Client::accept_delivery`](super::Client::accept_delivery) (or
    /// [`Client::fail_delivery`](super::Client::fail_delivery)), not when it takes
    /// [`Event::BufferReceived`](super::Event::BufferReceived). For applications that keep a
    /// buffer somewhere that can fail (a disk) before it counts as theirs. Until answered,
    /// the buffer holds one of the peer's transfer slots. Default false.
    pub confirm_buffers: bool,
    /// The application keeps partial files across connections and resumes them: every
    /// [`Event::Offer`](super::Event::Offer) of a file that carries a `resume_key` must be
    /// answered with [`Client::resume_incoming`](super::Client::resume_incoming) (offset 0
    /// for nothing held) before its data comes. Without it the client answers every resume
    /// key itself, with offset 0. Default false.
    pub resume_files: bool,
    /// The application keeps partial buffers across connections in memory: a buffer that
    /// carries a resume key and is cut by a lost connection ends with
    /// [`Event::ReceiveSuspended`](super::Event::ReceiveSuspended) (its bytes so far), and
    /// every [`Event::Offer`](super::Event::Offer) of a buffer with a `resume_key` must be
    /// answered with [`Client::resume_incoming_buffer`](super::Client::resume_incoming_buffer).
    /// Without it the client answers those keys itself, with offset 0. Default false.
    pub resume_buffers: bool,
    /// How long a sender may send a command again after a lost connection (its reconnect
    /// window): a command this client delivered is remembered for twice that, so a repeat
    /// is confirmed and not delivered again ([`SeenCmds`](super::SeenCmds)). Default 300 s.
    pub resume_window: Duration,
    /// Most bytes one [`Client::poll_transmit`](super::Client::poll_transmit) call
    /// appends (it always appends at least one whole frame if any is ready). Default 256 KiB.
    pub transmit_batch: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            limits: Limits::default(),
            max_cmds_in_flight: 64,
            max_transfers: 16,
            transfer_window: 1 << 20,
            conn_window: 4 << 20,
            max_queued_sends: 1024,
            file_read_size: 1 << 20,
            progress_step: 64 * 1024,
            keepalive_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            send_timeout: None,
            send_only: false,
            confirm_buffers: false,
            resume_files: false,
            resume_buffers: false,
            resume_window: Duration::from_secs(300),
            transmit_batch: 256 * 1024,
        }
    }
}

/// Why a [`ClientConfig`] cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The limits are not usable.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// A count, window or size that must be positive is zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The idle timeout is not longer than the keepalive interval, so a live but quiet
    /// peer would be dropped before it is pinged.
    #[error("idle_timeout must be longer than keepalive_interval")]
    Timers,
    /// A size of something the client holds whole in memory (a command, a buffer) that
    /// this platform cannot address (over `isize::MAX`: 2 GiB on a 32-bit target).
    #[error("{0} is larger than this platform can hold in memory")]
    Unaddressable(&'static str),
}

impl ClientConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate()?;
        let positive = [
            ("max_cmds_in_flight", self.max_cmds_in_flight),
            ("max_transfers", self.max_transfers),
            ("transfer_window", self.transfer_window),
            ("conn_window", self.conn_window),
            ("file_read_size", self.file_read_size),
            ("progress_step", self.progress_step),
            ("transmit_batch", self.transmit_batch as u64),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Zero(name));
        }
        if self.idle_timeout <= self.keepalive_interval {
            return Err(ConfigError::Timers);
        }
        // Commands and buffers are held whole; files never are (they go by offset).
        let whole = [
            ("max_cmd_size", self.limits.max_cmd_size),
            ("max_buffer_size", self.limits.max_buffer_size),
        ];
        let addressable = isize::MAX as u64; // isize is at most 64 bits: no truncation
        if let Some((name, _)) = whole.iter().find(|(_, v)| *v > addressable) {
            return Err(ConfigError::Unaddressable(name));
        }
        Ok(())
    }

    /// A preset for a small device (a microcontroller with tens of KiB of RAM): 1 KiB
    /// frames, commands up to 1 KiB, buffers up to 4 KiB, files of any size (they go by
    /// offset, never whole), one transfer and two commands at a time each way, 2 KiB
    /// transfer windows, 4 KiB in all, small reads and batches. A client with it holds a
    /// few KiB (docs/PERFORMANCE.md, "A small device").
    ///
    /// ```
    /// use peermsg::client::{Client, ClientConfig};
    /// use peermsg::Instant;
    ///
    /// let client = Client::new(ClientConfig::small(), Instant::ZERO).unwrap();
    /// # drop(client);
    /// ```
    pub fn small() -> Self {
        ClientConfig {
            limits: Limits {
                max_frame_size: crate::wire::MIN_FRAME_SIZE,
                max_user_id_len: 32,
                max_token_len: 64,
                max_file_name_len: 64,
                max_reason_len: 64,
                max_cmd_size: 1024,
                max_buffer_size: 4096,
                ..Limits::default()
            },
            max_cmds_in_flight: 2,
            max_transfers: 1,
            transfer_window: 2048,
            conn_window: 4096,
            max_queued_sends: 4,
            file_read_size: 512,
            progress_step: 1024,
            transmit_batch: 1024,
            ..ClientConfig::default()
        }
    }
}
