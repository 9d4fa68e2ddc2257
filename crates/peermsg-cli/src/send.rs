//! `peermsg send`: one command, buffer or file to one user, with its result.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use indicatif::ProgressBar;
use peermsg::client::Event;
use peermsg::ErrorCode;
use peermsg_tokio::{file_resume_key, ClientEvent, ClientHandle, SendHandle, SendId, SendProgress};

use crate::args::{Interrupt, LoginArgs, What, INTERRUPTED, NOT_DELIVERED};
use crate::connect::login;
use crate::printer::{progress_bar, waiting_text, Printer};
use crate::save::shown;

pub(crate) async fn send(
    args: &LoginArgs,
    to: &str,
    what: &What,
    name: Option<&str>,
    window: u64,
    limit_rate: Option<u64>,
    json: bool,
) -> Result<ExitCode> {
    let mut interrupt = Interrupt::new()?;
    // What to send is read and checked before connecting.
    let source = Source::of(what, name)?;
    let (handle, mut events) = tokio::select! {
        logged_in = login(args, None, None, window) => logged_in?,
        _ = interrupt.recv() => return Ok(ExitCode::from(INTERRUPTED)),
    };
    handle.set_file_rate(limit_rate);
    let mut sending = source.start(&handle, to).await?;
    let id = sending.id();
    let mut progress = sending.progress();
    let started = std::time::Instant::now();
    let mut printer = Printer::new(json, "", None);
    printer.keys = args.e2e_keys()?;
    let mut interrupted = false;
    let mut view = SendView {
        id,
        to,
        what: source.label(),
        label: format!("{} to {}", source.label(), shown(to)),
        bar: None,
        with_bar: !json && what.cmd.is_none(),
        shown: SendProgress::default(),
        waited: None,
    };
    let mut clock = tokio::time::interval(Duration::from_secs(1));
    let code = loop {
        tokio::select! {
            code = &mut sending => break code,
            _ = clock.tick() => {
                let p = *progress.borrow();
                if p.waiting.is_some() {
                    view.show(&mut printer, p);
                }
            }
            changed = progress.changed() => {
                if changed.is_err() {
                    // The send is over: its result is there.
                    break (&mut sending).await;
                }
                view.show(&mut printer, *progress.borrow_and_update());
            }
            // Others may send to this user too: what they send is told, not kept.
            Some(event) = events.recv() => printer.event(&event).await?,
            _ = interrupt.recv(), if !interrupted => {
                interrupted = true;
                let code = sending.cancel();
                if !json {
                    match code.is_success() {
                        true => shout!("cancelling {id}"),
                        false => shout!("cannot cancel {id}: {code}"),
                    }
                }
            }
        }
    };
    // The last progress comes before the result, but the result may be seen first.
    view.show(&mut printer, *progress.borrow());
    if let Some(bar) = &view.bar {
        bar.finish_and_clear();
    }
    printer.send_result(id, code, to);
    // Sealed, and the receiver could not open it: the receiver's key is asked again (the
    // core does), and a changed key is told before the program ends.
    if code == ErrorCode::SEAL_BROKEN && args.e2e {
        let until = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => break,
                Some(event) = events.recv() => {
                    let told = matches!(&event, ClientEvent::Core(Event::PeerKey { user, .. }) if user.as_str() == to);
                    printer.event(&event).await?;
                    if told {
                        break;
                    }
                }
            }
        }
    }
    if let (Some(w), ErrorCode::CONNECTIONLOST, false) = (view.waited, code, json) {
        say!(
            "gave up waiting for {} after {} s (--wait)",
            shown(to),
            w.deadline.saturating_duration_since(w.since).as_secs()
        );
    }
    if code.is_success() && !json {
        let resumed_at = progress.borrow().resumed_at.unwrap_or(0);
        say_delivered(&source, to, started.elapsed().as_secs_f64(), resumed_at);
    }
    handle.close();
    Ok(if interrupted {
        ExitCode::from(INTERRUPTED)
    } else if code.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_DELIVERED)
    })
}

/// What a send has shown of its progress so far: its bar (once its size is known), the
/// last progress told, the last time it waited.
struct SendView<'a> {
    id: SendId,
    to: &'a str,
    /// What is sent, in words.
    what: String,
    /// The bar's label.
    label: String,
    bar: Option<ProgressBar>,
    with_bar: bool,
    shown: SendProgress,
    /// The last time the send waited for its receiver or the relay, if it did.
    waited: Option<peermsg_tokio::Waiting>,
}

impl SendView<'_> {
    /// Shows progress `p`: what changed since the last, and while it waits, a countdown.
    fn show(&mut self, printer: &mut Printer, p: SendProgress) {
        let (id, to) = (self.id, self.to);
        if p != self.shown {
            if let Some(offset) = p
                .resumed_at
                .filter(|_| p.resumed_at != self.shown.resumed_at)
            {
                match offset == p.total && p.total > 0 {
                    true => printer.already_delivered(id, to, &self.what),
                    false => printer.resumed(id, offset),
                }
                // Speed and time left count only what moves from here.
                if let Some(bar) = &self.bar {
                    bar.set_position(offset);
                    bar.reset_eta();
                }
            }
            if let Some(w) = p.waiting {
                self.waited = Some(w);
                // Said once a waiting spell (tried again meanwhile, it may change reason).
                if self.shown.waiting.is_none() {
                    printer.waiting(id, to, &p, w, self.bar.is_some());
                }
            }
            if p.waiting.is_none() && self.shown.waiting.is_some() {
                if let Some(bar) = &self.bar {
                    bar.set_message(self.label.clone());
                }
            }
            self.shown = p;
            if self.bar.is_none() && self.with_bar && p.sent < p.total {
                self.bar = progress_bar(&self.label, p.total);
            }
            if let Some(bar) = &self.bar {
                bar.set_length(p.total);
                bar.set_position(p.sent);
            }
            printer.send_progress(id, p);
        }
        // While it waits, its bar says so, and counts down.
        if let (Some(w), Some(bar)) = (p.waiting, &self.bar) {
            bar.set_message(waiting_text(to, &p, w));
        }
    }
}

/// The line of a delivered send: its size, time and rate (of the bytes that moved in
/// this attempt: `resumed_at` its receiver had).
fn say_delivered(source: &Source, to: &str, secs: f64, resumed_at: u64) {
    let size = source.size();
    // Only bytes that moved in this attempt count toward a rate.
    let moved = size.saturating_sub(resumed_at);
    match source {
        _ if moved == 0 && size > 0 => say!(
            "{} already had it: nothing was sent again ({size} bytes, delivered before)",
            shown(to)
        ),
        Source::Cmd(_) => say!("delivered {size} bytes to {} in {secs:.3} s", shown(to)),
        _ if resumed_at > 0 => say!(
            "delivered {size} bytes to {} in {secs:.3} s: {moved} sent now ({:.1} MB/s), {resumed_at} it had",
            shown(to),
            moved as f64 / secs.max(1e-6) / 1e6
        ),
        _ => say!(
            "delivered {size} bytes to {} in {secs:.3} s ({:.1} MB/s)",
            shown(to),
            size as f64 / secs.max(1e-6) / 1e6
        ),
    }
}

/// What `send` sends, read or checked before connecting. A file that is not a regular
/// file (standard input, a pipe, a device) is read to its end into a temporary file first,
/// so its size is known and no byte is lost.
pub(crate) enum Source {
    Cmd(Bytes),
    Buffer(Bytes),
    /// A file, and the temporary directory holding it if it was spooled (kept until the
    /// send ends).
    File(PathBuf, #[allow(dead_code)] Option<tempfile::TempDir>),
}

impl Source {
    pub(crate) fn of(what: &What, named: Option<&str>) -> Result<Self> {
        if let Some(text) = &what.cmd {
            return Ok(Source::Cmd(Bytes::from(text.clone())));
        }
        if let Some(path) = &what.buffer {
            let data =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            return Ok(Source::Buffer(Bytes::from(data)));
        }
        let Some(path) = &what.file else {
            bail!("nothing to send")
        };
        if path.as_os_str() == "-" {
            return Self::spooled(&mut std::io::stdin().lock(), named.unwrap_or("stdin"));
        }
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            let base = path
                .file_name()
                .map_or("dir".into(), |n| n.to_string_lossy().into_owned());
            bail!(
                "{} is a directory: send one file, for example an archive of it: \
                 tar -czf {base}.tar.gz -C {} {base}, then --file {base}.tar.gz",
                path.display(),
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or(".".into(), |p| p.display().to_string()),
            );
        }
        if meta.is_file() {
            return match named {
                None => Ok(Source::File(path.clone(), None)),
                Some(name) => Self::renamed(path, name),
            };
        }
        let mut input =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = named.map_or_else(
            || {
                path.file_name()
                    .map_or("file".into(), |n| n.to_string_lossy().into_owned())
            },
            str::to_string,
        );
        Self::spooled(&mut input, &name)
    }

    /// The regular file at `path`, sent as `name`: a link of that name to it, in a
    /// temporary directory of our own (the file itself is not copied).
    pub(crate) fn renamed(path: &Path, name: &str) -> Result<Self> {
        let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
        let target = std::fs::canonicalize(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let link = dir.path().join(peermsg_tokio::sanitize_file_name(name));
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("cannot name {} {name}", path.display()))?;
        Ok(Source::File(link, Some(dir)))
    }

    /// `input` read to its end into a temporary file named `name`.
    pub(crate) fn spooled(input: &mut impl std::io::Read, name: &str) -> Result<Self> {
        let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
        let path = dir.path().join(peermsg_tokio::sanitize_file_name(name));
        // A new file in a directory of our own: nothing to replace, no link to follow.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::io::copy(input, &mut file).context("cannot read the input")?;
        Ok(Source::File(path, Some(dir)))
    }

    /// What it is, for the progress bar.
    pub(crate) fn label(&self) -> String {
        match self {
            Source::Cmd(_) => "a command".to_string(),
            Source::Buffer(_) => "a buffer".to_string(),
            Source::File(path, _) => path
                .file_name()
                .map_or("a file".to_string(), |n| shown(&n.to_string_lossy())),
        }
    }

    /// Its size in bytes.
    pub(crate) fn size(&self) -> u64 {
        match self {
            Source::Cmd(b) | Source::Buffer(b) => b.len() as u64,
            Source::File(path, _) => std::fs::metadata(path).map_or(0, |m| m.len()),
        }
    }

    pub(crate) async fn start(&self, handle: &ClientHandle, to: &str) -> Result<SendHandle> {
        Ok(match self {
            Source::Cmd(text) => handle.send_cmd(to, text.clone(), 0).await?,
            Source::Buffer(data) => handle.send_buffer(to, data.clone(), 0).await?,
            // The same key for the same unchanged file: a `send` run again after it was
            // killed continues where the receiver's bytes end.
            Source::File(path, _) => {
                let key = file_resume_key(path, to)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                handle.send_file_with_key(to, path, key, 0).await?
            }
        })
    }
}
