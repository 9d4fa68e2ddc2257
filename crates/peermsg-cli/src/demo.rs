//! `peermsg demo`: a relay and two users in one process, end to end.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use peermsg::client::ClientConfig;
use peermsg_tokio::{
    connect_tls, serve_with, tls, Extras, OpenAccess, SendHandle, SendProgress, ServerConfig,
};

use crate::printer::{outcome, progress_bar, Printer};

/// The demo: a relay on loopback, alice and bob, each kind of send, one cancel.
pub(crate) async fn demo() -> Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // TLS, with a certificate made now; the clients trust exactly it (a pin).
    let (relay_tls, pin) = tls::self_signed("localhost")?;
    let extras = Extras {
        tls: Some(relay_tls),
        ..Extras::default()
    };
    let server = tokio::spawn(serve_with(
        listener,
        ServerConfig::default(),
        OpenAccess,
        extras,
        async move {
            let _ = stopped.await;
        },
    ));
    say!("relay on {addr}, TLS with a certificate of SHA-256 {pin}");
    let trust = tls::client_config(&tls::Trust::pin(&pin).map_err(anyhow::Error::msg)?)?;
    let dir = tempfile::tempdir()?;
    let saves = dir.path().to_path_buf();
    // alice only sends: her results come on each send's handle, and nothing comes to her.
    let (alice, _a_events) = connect_tls(
        addr,
        "localhost",
        trust.clone(),
        "alice",
        b"",
        ClientConfig::default(),
        None,
    )
    .await?;
    // bob confirms a buffer once he has saved it, as `listen` does.
    let bob_config = ClientConfig {
        confirm_buffers: true,
        ..ClientConfig::default()
    };
    let (bob, mut b_events) = connect_tls(
        addr,
        "localhost",
        trust,
        "bob",
        b"",
        bob_config,
        Some(dir.path()),
    )
    .await?;
    say!(
        "alice and bob logged in; bob saves files in {}",
        dir.path().display()
    );
    let confirm = bob.clone();
    let bob_printer = tokio::spawn(async move {
        let mut printer = Printer::new(false, "  bob: ", Some(saves));
        printer.confirm = Some(confirm);
        while let Some(event) = b_events.recv().await {
            let _ = printer.event(&event).await;
        }
    });

    // The demo's own files to send, made new in a directory of its own (never written
    // through a link or over a file).
    let originals = tempfile::tempdir()?;
    let write_new = |name: &str, bytes: &[u8]| -> std::io::Result<PathBuf> {
        let path = originals.path().join(name);
        let mut file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&path)?;
        std::io::Write::write_all(&mut file, bytes)?;
        Ok(path)
    };
    let pattern: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    let src = write_new("report.pdf", &pattern)?;
    let big = write_new("movie.mkv", &vec![0u8; 256 << 20])?;

    let cmd = alice
        .send_cmd("bob", Bytes::from_static(b"hello from alice"), 1)
        .await?;
    wait(cmd, None, "command").await;
    let buffer = alice
        .send_buffer("bob", Bytes::from(vec![42u8; 8 << 20]), 2)
        .await?;
    wait(buffer, Some("alice: buffer"), "buffer of 8 MiB").await;
    let file = alice.send_file("bob", &src, 3).await?;
    wait(file, Some("alice: report.pdf"), "file of 24 MiB").await;
    let doomed = alice.send_file("bob", &big, 4).await?;
    let mut progress = doomed.progress();
    let mut bar = None;
    while progress.changed().await.is_ok() {
        let SendProgress { sent, total, .. } = *progress.borrow_and_update();
        let bar = bar.get_or_insert_with(|| progress_bar("alice: movie.mkv", total));
        if let Some(bar) = bar {
            bar.set_position(sent);
        }
        if sent > total / 4 {
            let code = doomed.cancel();
            if let Some(bar) = bar.take() {
                bar.finish_and_clear();
            }
            match code.is_success() {
                true => say!("alice cancels the 256 MiB file at {}%", sent * 100 / total),
                false => say!("alice cannot cancel the 256 MiB file: {code}"),
            }
            break;
        }
    }
    if let Some(bar) = bar.flatten() {
        bar.finish_and_clear();
    }
    say!("alice: file of 256 MiB: {}", outcome(doomed.await, "bob"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    alice.close();
    bob.close();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = stop.send(());
    let _ = server.await;
    bob_printer.abort();
    Ok(ExitCode::SUCCESS)
}

/// Waits for `send`'s result, showing its progress on a bar named `label` (if any, once
/// its size is known), and says how it ended.
pub(crate) async fn wait(mut send: SendHandle, label: Option<&str>, what: &str) {
    let mut progress = send.progress();
    let mut bar = None;
    let code = loop {
        tokio::select! {
            code = &mut send => break code,
            changed = progress.changed() => match (changed, label) {
                (Err(_), _) => break (&mut send).await,
                (Ok(()), Some(label)) => {
                    let p = *progress.borrow_and_update();
                    if let Some(bar) = bar.get_or_insert_with(|| progress_bar(label, p.total)) {
                        bar.set_position(p.sent);
                    }
                }
                (Ok(()), None) => {}
            },
        }
    };
    if let Some(bar) = bar.flatten() {
        bar.finish_and_clear();
    }
    say!("alice: {what}: {}", outcome(code, "bob"));
}
