//! C programs over the library: the sans-IO core driven over a socketpair, and the SDK's
//! calls through a real relay to a Rust user. Under valgrind when `PEERMSG_VALGRIND` is set.

mod support;

use std::time::Duration;

use peermsg::client::Event;
use peermsg_tokio::ClientEvent;
use support::{c_compiler, compile, run, succeeded, Link};

#[test]
fn a_c_program_drives_two_cores_over_a_socketpair() {
    let Some(cc) = c_compiler() else {
        return;
    };
    let program = compile(&cc, "core_socketpair", Link::Static);
    let stdout = succeeded(&mut run(&program));
    for line in [
        "command: delivered, result NOERR",
        "buffer: 1048581 bytes delivered and equal",
        "file: 3145745 bytes supplied on request, delivered in order and equal",
        "cancel: result CANCELLED",
        "cut and dialled again: the buffer went on from byte",
        "the command sent while away delivered once",
        "closed at both ends",
        "all checks passed",
    ] {
        assert!(stdout.contains(line), "no '{line}' in:\n{stdout}");
    }
    // The same, both ends sealing: everything holds, and nothing sent is readable.
    let stdout = succeeded(run(&program).arg("--sealed"));
    for line in [
        "file: 3145745 bytes supplied on request, delivered in order and equal",
        "the command sent while away delivered once",
        "sealed: bob's key learned on first use; nothing alice sent readable on the link",
        "all checks passed",
    ] {
        assert!(stdout.contains(line), "no '{line}' in:\n{stdout}");
    }
}

#[test]
fn the_c_example_sends_a_command_a_buffer_and_a_file_through_a_relay() {
    let Some(cc) = c_compiler() else {
        return;
    };
    let program = compile(&cc, "example", Link::Shared);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let relay = support::relay(&runtime);
    let inbox = tempfile::tempdir().unwrap();
    let (_bob, mut events) = support::rust_user(&runtime, &relay, "bob", inbox.path());

    let file = tempfile::NamedTempFile::new().unwrap();
    let content: Vec<u8> = (0..5_000_003u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(file.path(), &content).unwrap();

    // Bob reads his events as they come (a user that stops reading stops confirming).
    let heard = runtime.spawn(async move {
        let (mut cmd, mut buffer, mut kept) = (None, None, None);
        while cmd.is_none() || buffer.is_none() || kept.is_none() {
            let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
                .await
                .expect("bob hears everything")
                .expect("bob's connection lives");
            match event {
                ClientEvent::Core(Event::CmdReceived { data, .. }) => cmd = Some(data),
                ClientEvent::Core(Event::BufferReceived { data, .. }) => buffer = Some(data),
                ClientEvent::FileReceived { tmp_file, .. } => kept = Some(tmp_file),
                _ => {}
            }
        }
        (cmd.unwrap(), buffer.unwrap(), kept.unwrap())
    });
    let stdout = succeeded(
        run(&program)
            .args([relay.as_str(), "alice", "bob"])
            .arg(file.path()),
    );
    assert!(stdout.contains("connection: connected (NOERR)"), "{stdout}");
    assert!(stdout.contains("command 0: NOERR"), "{stdout}");
    assert!(stdout.contains("buffer 1 (cookie 2): NOERR"), "{stdout}");
    assert!(stdout.contains("(cookie 3): NOERR"), "{stdout}");
    assert!(
        stdout.contains("of 4194304 bytes"),
        "no buffer progress:\n{stdout}"
    );
    assert!(
        stdout.contains("progress 2: 5000003 of 5000003 bytes"),
        "no file progress to the end:\n{stdout}"
    );
    assert!(stdout.contains("all delivered"), "{stdout}");

    // What bob has: the command, the buffer and the file, byte for byte.
    let (cmd, buffer, kept) = runtime.block_on(heard).unwrap();
    assert_eq!(&cmd[..], b"hello from C");
    assert_eq!(buffer.len(), 4 << 20);
    assert!(buffer
        .iter()
        .enumerate()
        .all(|(i, b)| *b == (i as u8).wrapping_mul(7).wrapping_add(3)));
    assert!(std::fs::read(kept).unwrap() == content);
}
