//! `peermsg listen`: receive commands, buffers and files, and keep them.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use peermsg::client::Event;
use peermsg_tokio::ClientEvent;
use serde_json::json;

use crate::args::{Choice, Interrupt, LoginArgs, INTERRUPTED};
use crate::connect::{login, LISTEN_WINDOW};
use crate::printer::Printer;

pub(crate) async fn listen(
    args: &LoginArgs,
    dir: &Path,
    choice: &Choice,
    json: bool,
) -> Result<ExitCode> {
    let mut interrupt = Interrupt::new()?;
    // Past a file size limit (`ulimit -f`) the system sends SIGXFSZ, which would end the
    // listener; handled, the write fails instead (EFBIG) and that one file fails.
    let _file_too_large =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))?;
    // Paths printed are absolute, whatever the working directory of who reads them.
    let dir = std::fs::canonicalize(dir)
        .with_context(|| format!("cannot use {} for received files", dir.display()))?;
    let (handle, mut events) = tokio::select! {
        logged_in = login(args, Some(&dir), choice.max_size, args.reconnect_window.unwrap_or(LISTEN_WINDOW)) => logged_in.with_context(|| format!("(receiving into {})", dir.display()))?,
        _ = interrupt.recv() => return Ok(ExitCode::from(INTERRUPTED)),
    };
    if !choice.from.is_empty() {
        let senders = choice
            .from
            .iter()
            .map(|u| {
                peermsg::wire::UserId::new(u.trim()).map_err(|e| anyhow::anyhow!("--from {u}: {e}"))
            })
            .collect::<Result<std::collections::BTreeSet<_>>>()?;
        handle.accept_only_from(Some(senders));
    }
    let mut printer = Printer::new(json, "", Some(dir.clone()));
    printer.confirm = Some(handle.clone());
    printer.keys = args.e2e_keys()?;
    printer.line(
        json!({"event": "ready", "user": args.user, "server": args.server, "dir": dir}),
        format!(
            "{} logged in at {}; files go to {}",
            args.user,
            args.server,
            dir.display()
        ),
    );
    let mut interrupted = false;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    printer.event(&event).await?;
                    if let ClientEvent::Core(Event::Closed { code, .. }) = event {
                        return Ok(if interrupted {
                            ExitCode::from(INTERRUPTED)
                        } else if code.is_success() {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::FAILURE
                        });
                    }
                }
                None => return Ok(ExitCode::from(if interrupted { INTERRUPTED } else { 1 })),
            },
            _ = interrupt.recv() => {
                interrupted = true;
                handle.close();
            }
        }
    }
}
