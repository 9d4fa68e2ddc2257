//! What a person sees: events as text or JSON lines, progress bars, and results in words.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use base64::Engine as _;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use peermsg::client::{Event, ReceiveId, SendId, SendKind};
use peermsg::seal::{Fingerprint, KeyStatus};
use peermsg::wire::{IdentityKey, UserId};
use peermsg::ErrorCode;
use peermsg_tokio::{ClientEvent, ClientHandle, SendProgress};
use serde_json::json;

use crate::keys::Keys;
use crate::save::{self, shown};

/// Prints one event, as text or as a JSON line (the events are listed in docs/CLI.md).
pub(crate) struct Printer {
    pub(crate) json: bool,
    /// Put before each line of text.
    pub(crate) prefix: &'static str,
    pub(crate) dir: Option<PathBuf>,
    /// Progress lines last printed, by send or receive id, so a long transfer prints at
    /// most about ten a second (and always its last).
    pub(crate) progress_at: HashMap<(bool, u64), std::time::Instant>,
    /// Bars of incoming transfers, in text mode on a terminal.
    pub(crate) bars: HashMap<u64, ProgressBar>,
    /// The session a saved buffer is confirmed on, if it confirms buffers
    /// (`ClientConfig::confirm_buffers`).
    pub(crate) confirm: Option<ClientHandle>,
    /// Where peers' keys are kept, with --e2e.
    pub(crate) keys: Option<Keys>,
}

/// A code and its name, as every JSON event gives them.
pub(crate) fn code_json(code: ErrorCode) -> serde_json::Value {
    json!(code.name().unwrap_or("UNKNOWN"))
}

impl Printer {
    pub(crate) fn new(json: bool, prefix: &'static str, dir: Option<PathBuf>) -> Self {
        Printer {
            json,
            prefix,
            dir,
            progress_at: HashMap::new(),
            bars: HashMap::new(),
            confirm: None,
            keys: None,
        }
    }

    /// A peer's key heard (--e2e): kept if it is new, refused loudly if it changed.
    fn peer_key(&self, user: &UserId, key: Option<&IdentityKey>, status: Option<&KeyStatus>) {
        let who = shown(user.as_str());
        let known = self
            .keys
            .as_ref()
            .map(Keys::known_peers_path)
            .unwrap_or_default();
        let known = shown(&known.display().to_string());
        match (key, status) {
            (None, _) => self.line(
                json!({"event": "peer_key", "user": user.as_str(), "status": "none"}),
                format!("{who} has no key (they do not use --e2e): nothing is sent to them"),
            ),
            (Some(key), Some(KeyStatus::Learned)) => {
                let print = Fingerprint::of(key).to_string();
                if let Some(keys) = &self.keys {
                    if let Err(e) = keys.remember(user, key) {
                        shout!("error: cannot keep {who}'s key: {e:#}");
                    }
                }
                self.line(
                    json!({"event": "peer_key", "user": user.as_str(), "status": "learned", "fingerprint": print}),
                    format!("{who}'s key is {print}: trusted on first use, kept in {known}; compare it with what {who} sees"),
                )
            }
            (Some(key), Some(KeyStatus::Changed { pinned })) => {
                let (print, before) = (Fingerprint::of(key), Fingerprint::of(pinned));
                if self.json {
                    self.line(json!({"event": "peer_key", "user": user.as_str(), "status": "changed", "fingerprint": print.to_string(), "pinned": before.to_string()}), String::new());
                }
                shout!("error: {who}'s key has CHANGED: {print} is not the {before} you trusted before, so nothing goes to or comes from {who}. Someone may be in the middle. If {who} really has a new key, check it with them and remove their line from {known}.");
            }
            (Some(key), Some(KeyStatus::Unknown)) => self.line(
                json!({"event": "peer_key", "user": user.as_str(), "status": "unknown", "fingerprint": Fingerprint::of(key).to_string()}),
                format!("{who}'s key {} is not trusted: nothing is sent to them", Fingerprint::of(key)),
            ),
            (Some(_), None) => {}
        }
    }

    /// One line of output, as JSON or as text.
    pub(crate) fn line(&self, value: serde_json::Value, text: String) {
        if self.json {
            say!("{value}");
        } else {
            say!("{}{text}", self.prefix);
        }
    }

    /// Whether a progress line for (`incoming`, `id`) is due: a tenth of a second since
    /// the last, or the end.
    pub(crate) fn progress_due(&mut self, incoming: bool, id: u64, done: bool) -> bool {
        let now = std::time::Instant::now();
        let last = self.progress_at.get(&(incoming, id));
        if done || last.is_none_or(|t| now - *t >= Duration::from_millis(100)) {
            self.progress_at.insert((incoming, id), now);
            return true;
        }
        false
    }

    /// An incoming transfer ended: its bar goes.
    pub(crate) fn end_bar(&mut self, id: u64) {
        if let Some(bar) = self.bars.remove(&id) {
            bar.finish_and_clear();
        }
        self.progress_at.remove(&(true, id));
    }

    /// A send of ours went on after a lost connection from `offset`, where its
    /// receiver's bytes ended.
    pub(crate) fn resumed(&mut self, id: SendId, offset: u64) {
        self.line(
            json!({"event": "resumed", "send_id": id.0, "offset": offset}),
            format!("{id}: resumed at byte {offset}"),
        );
    }

    /// A send of ours waits for its receiver or the relay to come back: said once (the
    /// bar, if any, counts down).
    pub(crate) fn waiting(
        &mut self,
        id: SendId,
        to: &str,
        p: &SendProgress,
        w: peermsg_tokio::Waiting,
        on_bar: bool,
    ) {
        let unix = |at: tokio::time::Instant| {
            let now = tokio::time::Instant::now();
            let wall = std::time::SystemTime::now();
            let then = match at >= now {
                true => wall + (at - now),
                false => wall - (now - at),
            };
            then.duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        if self.json {
            say!(
                "{}",
                json!({"event": "waiting", "send_id": id.0, "reason": code_json(w.reason), "code": w.reason.as_u32(),
                       "since": unix(w.since), "deadline": unix(w.deadline), "sent": p.sent, "total": p.total})
            );
        } else if !on_bar {
            say!("{id}: {}", waiting_text(to, p, w));
        }
    }

    /// A send of ours was answered "all of it" by its receiver: an earlier attempt
    /// delivered it (its receiver still has it, unchanged), so nothing is sent again.
    pub(crate) fn already_delivered(&mut self, id: SendId, to: &str, what: &str) {
        self.line(
            json!({"event": "already_delivered", "send_id": id.0}),
            format!(
                "{id}: {} already has {what} (delivered before, unchanged); nothing is sent again",
                shown(to)
            ),
        );
    }

    /// A send of ours got further (JSON only: a terminal has the bar).
    pub(crate) fn send_progress(&mut self, id: SendId, p: SendProgress) {
        if self.json && self.progress_due(false, id.0, p.sent == p.total) {
            self.line(
                json!({"event": "progress", "send_id": id.0, "sent": p.sent, "total": p.total}),
                String::new(),
            );
        }
    }

    /// A send of ours ended.
    pub(crate) fn send_result(&mut self, id: SendId, code: ErrorCode, to: &str) {
        self.line(
            json!({"event": "send_result", "send_id": id.0, "code": code.as_u32(), "code_name": code_json(code)}),
            format!("{id}: {}", outcome(code, to)),
        );
    }

    /// A command: its text as it is, other bytes in base64.
    fn cmd_received(&mut self, id: ReceiveId, from: &UserId, data: &Bytes) {
        // Text as it is; other bytes in base64, never with characters replaced.
        let (json, text) = match std::str::from_utf8(data) {
            Ok(text) => (
                json!({"event": "cmd_received", "receive_id": id.0, "from": from.as_str(), "data": text}),
                shown(text),
            ),
            Err(_) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(data);
                let said = format!("{} bytes, not UTF-8 text (base64 {b64})", data.len());
                (
                    json!({"event": "cmd_received", "receive_id": id.0, "from": from.as_str(), "data_base64": b64}),
                    said,
                )
            }
        };
        self.line(
            json,
            format!("command from {}: {text}", shown(from.as_str())),
        );
    }

    /// A buffer: saved in the directory, and only then confirmed to its sender.
    async fn buffer_received(&mut self, id: ReceiveId, from: &UserId, data: &Bytes) {
        self.end_bar(id.0);
        let dir = self.dir.clone().unwrap_or_else(|| PathBuf::from("."));
        let name = format!("buffer-{}.bin", save::user_part(from.as_str()));
        let (into, bytes) = (dir.clone(), data.clone());
        let saved = tokio::task::spawn_blocking(move || save::save_new(&into, &name, &bytes))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        // Its sender hears of success only once it is saved.
        if let Some(session) = &self.confirm {
            let _ = match &saved {
                Ok(_) => session.accept_buffer(id),
                Err(e) => session.fail_buffer(id, peermsg_tokio::write_error_code(e)),
            };
        }
        match saved {
            Ok(path) => self.line(
                json!({"event": "buffer_received", "receive_id": id.0, "from": from.as_str(), "size": data.len(), "path": path}),
                format!("buffer from {}: {} bytes, saved as {}", shown(from.as_str()), data.len(), path.display()),
            ),
            // Not fatal: the next message may well be saved.
            Err(e) => shout!("error: cannot save a buffer from {} in {}: {e}", shown(from.as_str()), dir.display()),
        }
    }

    /// A transfer that ended without completing: cut off (it goes on when sent again),
    /// or failed.
    fn receive_failed(&mut self, id: ReceiveId, from: &UserId, code: ErrorCode) {
        let at = self
            .bars
            .get(&id.0)
            .and_then(|b| Some(b.position() * 100 / b.length().filter(|l| *l > 0)?));
        self.end_bar(id.0);
        // Cut off by a lost connection, what came is kept (a file on disk, a
        // buffer in memory) and goes on when its sender sends it again: not a
        // failure to tell, then a file saved, for one file.
        let cut_off = code.is_cut_off();
        let said = match cut_off {
            true => format!(
                "a transfer from {} was cut off{} ({} {}); what came is kept, and it goes on when {} sends it again",
                shown(from.as_str()),
                at.map_or(String::new(), |at| format!(" at {at}%")),
                code.as_u32(),
                code.name().unwrap_or("UNKNOWN"),
                shown(from.as_str()),
            ),
            false => format!(
                "a transfer from {} failed: {} ({} {})",
                shown(from.as_str()),
                code.meaning().unwrap_or("a code this program does not know"),
                code.as_u32(),
                code.name().unwrap_or("UNKNOWN")
            ),
        };
        self.line(
            json!({"event": "receive_failed", "receive_id": id.0, "from": from.as_str(), "code": code.as_u32(), "code_name": code_json(code), "cut_off": cut_off}),
            said,
        )
    }

    pub(crate) async fn event(&mut self, event: &ClientEvent) -> Result<()> {
        match event {
            ClientEvent::Core(Event::PeerKey { user, key, status }) => {
                self.peer_key(user, key.as_ref(), status.as_ref())
            }
            ClientEvent::Core(Event::Refused { from, kind, code }) => {
                let kind = match kind {
                    SendKind::Cmd => "command",
                    SendKind::Buffer => "buffer",
                    SendKind::File => "file",
                };
                self.line(
                    json!({"event": "refused", "from": from.as_str(), "kind": kind, "code": code.as_u32(), "code_name": code_json(*code)}),
                    format!(
                        "refused a {kind} from {}: {} ({})",
                        shown(from.as_str()),
                        code.meaning().unwrap_or("a code this program does not know"),
                        code.name().unwrap_or("UNKNOWN")
                    ),
                )
            }
            ClientEvent::Core(Event::CmdReceived { id, from, data, .. }) => {
                self.cmd_received(*id, from, data)
            }
            ClientEvent::Core(Event::BufferReceived { id, from, data }) => {
                self.buffer_received(*id, from, data).await
            }
            ClientEvent::FileReceived { id, from, tmp_file, org_file_name, size } => {
                self.end_bar(id.0);
                let dir = self.dir.as_deref().unwrap_or(Path::new("."));
                let path = save::place(tmp_file, dir, org_file_name).unwrap_or_else(|e| {
                    shout!("error: cannot name a received file {}: {e}; it stays as {}", shown(org_file_name), tmp_file.display());
                    tmp_file.clone()
                });
                // A repeat of it is recognised while it is there, unchanged.
                if let Some(session) = &self.confirm {
                    session.file_saved_as(*id, &path);
                }
                self.line(
                    json!({"event": "file_received", "receive_id": id.0, "from": from.as_str(), "org_file_name": org_file_name, "size": size, "path": path}),
                    format!("file from {}: {} ({size} bytes) saved as {}", shown(from.as_str()), shown(org_file_name), shown(&path.display().to_string())),
                )
            }
            ClientEvent::FileAlreadyHeld { id, from, path, size } => {
                self.end_bar(id.0);
                self.line(
                    json!({"event": "already_delivered", "receive_id": id.0, "from": from.as_str(), "size": size, "path": path}),
                    format!("file from {}: sent again, and already here as {} ({size} bytes, unchanged); not kept twice", shown(from.as_str()), shown(&path.display().to_string())),
                )
            }
            ClientEvent::Core(Event::Offer { id, from, name, size, kind, .. }) => {
                let what = if name.is_empty() { "a buffer".to_string() } else { shown(name.as_str()) };
                let kind_name = if *kind == SendKind::File { "file" } else { "buffer" };
                self.line(
                    json!({"event": "offer", "receive_id": id.0, "kind": kind_name, "from": from.as_str(), "name": name.as_str(), "size": size}),
                    format!("{} is sending {what} ({size} bytes)", shown(from.as_str())),
                );
                // The line first, then its bar below it.
                let label = format!("{} from {}", what, shown(from.as_str()));
                if let Some(bar) = progress_bar(&label, *size).filter(|_| !self.json) {
                    self.bars.insert(id.0, bar);
                }
            }
            ClientEvent::Core(Event::ReceiveProgress { id, received, total }) => {
                if let Some(bar) = self.bars.get(&id.0) {
                    bar.set_position(*received);
                }
                if self.json && self.progress_due(true, id.0, received == total) {
                    self.line(json!({"event": "receive_progress", "receive_id": id.0, "received": received, "total": total}), String::new());
                }
            }
            ClientEvent::Core(Event::ReceiveFailed { id, from, code }) if *code == ErrorCode::CANCELLED => {
                self.end_bar(id.0);
                self.line(json!({"event": "cancelled", "receive_id": id.0, "from": from.as_str()}), format!("{} cancelled a transfer", shown(from.as_str())))
            }
            ClientEvent::Core(Event::ReceiveFailed { id, from, code }) => {
                self.receive_failed(*id, from, *code)
            }
            ClientEvent::Reconnecting { attempt, error } => self.line(
                json!({"event": "reconnecting", "attempt": attempt, "error": error}),
                format!("connection lost ({}); connecting again (attempt {attempt})", shown(error)),
            ),
            ClientEvent::Reconnected { server } => self.line(
                json!({"event": "reconnected", "server": server}),
                format!("connected again to {}", shown(server)),
            ),
            ClientEvent::Core(Event::Closed { code, reason }) => self.line(
                json!({"event": "closed", "code": code.as_u32(), "code_name": code_json(*code), "reason": reason.to_string()}),
                match code.is_success() {
                    true => format!("connection closed ({})", shown(&reason.to_string())),
                    false => format!("connection closed: {code} ({})", shown(&reason.to_string())),
                },
            ),
            _ => {}
        }
        Ok(())
    }
}

/// The terminal's bars: one set for the whole program (the demo runs two users in one
/// process), when standard error is a terminal. Every line is printed above them
/// ([`print_line`]), so a bar's redraw never takes a line away.
pub(crate) fn screen() -> Option<&'static indicatif::MultiProgress> {
    static SCREEN: std::sync::OnceLock<Option<indicatif::MultiProgress>> =
        std::sync::OnceLock::new();
    SCREEN
        .get_or_init(|| {
            std::io::stderr()
                .is_terminal()
                .then(indicatif::MultiProgress::new)
        })
        .as_ref()
}

/// Writes `text` as a line to standard output (standard error if `err`), above the bars.
pub(crate) fn print_line(err: bool, text: &str) {
    use std::io::Write as _;
    let write = || {
        let _ = match err {
            true => writeln!(std::io::stderr().lock(), "{text}"),
            false => writeln!(std::io::stdout().lock(), "{text}"),
        };
    };
    match screen() {
        Some(screen) => screen.suspend(write),
        None => write(),
    }
}

/// A bar named `label` for `total` bytes, with the percentage, bytes, rate and time left,
/// on the terminal's bars; `None` without a terminal or for nothing to show (a bar of no
/// bytes would sit at `100% 0 B/0 B`).
pub(crate) fn progress_bar(label: &str, total: u64) -> Option<ProgressBar> {
    let screen = screen().filter(|_| total > 0)?;
    // Hidden until it is on the screen's set: drawn on its own first, its first frame
    // stayed behind as a dead line (`100% 0 B/0 B`) that nothing cleared.
    let bar = ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::hidden());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} {bar:30} {percent:>3}% {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(label.to_string());
    Some(screen.add(bar))
}

/// What a waiting send is doing, in words: "waiting for bob (gone at 19%, 0:12 ago;
/// giving up in 0:48)".
pub(crate) fn waiting_text(to: &str, p: &SendProgress, w: peermsg_tokio::Waiting) -> String {
    let now = tokio::time::Instant::now();
    let clock = |d: Duration| format!("{}:{:02}", d.as_secs() / 60, d.as_secs() % 60);
    let at = match p.total {
        0 => String::new(),
        total => format!("gone at {}%, ", p.sent.saturating_mul(100) / total),
    };
    format!(
        "waiting for {} ({at}{} ago; giving up in {})",
        shown(to),
        clock(now.saturating_duration_since(w.since)),
        clock(w.deadline.saturating_duration_since(now))
    )
}

/// A send's result in words, with the SDK's code and name after them: what a person
/// reads first is what happened.
pub(crate) fn outcome(code: ErrorCode, to: &str) -> String {
    let said = match code {
        ErrorCode::NOERR => "delivered".to_string(),
        ErrorCode::CANCELLED => "cancelled".to_string(),
        ErrorCode::REJECTED => format!("{} refused it", shown(to)),
        ErrorCode::OFFLINE => format!("not delivered: {} is not connected", shown(to)),
        code => format!(
            "not delivered: {}",
            code.meaning()
                .unwrap_or("a code this program does not know")
        ),
    };
    format!(
        "{said} ({} {})",
        code.as_u32(),
        code.name().unwrap_or("UNKNOWN")
    )
}
