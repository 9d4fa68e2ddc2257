//! A conversation between two users through a relay, frame by frame: each frame is encoded
//! into one byte stream per hop, the streams are cut into 7-byte pieces as a slow link
//! might deliver them, and the decoder puts the frames back together.
//!
//! Run: `cargo run --example conversation`

use bytes::{Bytes, BytesMut};
use peermsg::wire::*;
use peermsg::ErrorCode;

/// Who sends a frame, to whom.
#[derive(Clone, Copy, Debug)]
enum Hop {
    AliceToRelay,
    RelayToAlice,
    RelayToBob,
    BobToRelay,
}

fn hello(role: Role) -> Frame {
    Frame::Hello(Hello::new(
        role,
        &Limits::default(),
        64,
        16,
        256 * 1024,
        1024 * 1024,
    ))
}

fn user(id: &str) -> UserId {
    UserId::new(id).expect("valid user id")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = Bytes::from_static(b"The quick brown fox jumps over the lazy dog. ");
    let crc = crc32c::crc32c(&file);
    let (first, second) = (file.slice(..20), file.slice(20..));

    use Hop::*;
    let conversation = vec![
        (AliceToRelay, hello(Role::Client)),
        (RelayToAlice, hello(Role::Relay)),
        (
            AliceToRelay,
            Frame::Login(Login {
                user: user("alice"),
                token: Bytes::from_static(b"s3cret"),
            }),
        ),
        (
            RelayToAlice,
            Frame::LoginResult(LoginResult {
                code: ErrorCode::NOERR,
            }),
        ),
        // Alice's command to bob: the relay replaces the target with the source.
        (
            AliceToRelay,
            Frame::Cmd(Cmd {
                id: 0,
                peer: user("bob"),
                once: None,
                total_len: 5,
                data: Bytes::from_static(b"hello"),
            }),
        ),
        (
            RelayToBob,
            Frame::Cmd(Cmd {
                id: 7,
                peer: user("alice"),
                once: None,
                total_len: 5,
                data: Bytes::from_static(b"hello"),
            }),
        ),
        (
            BobToRelay,
            Frame::Result(MessageResult {
                id: 7,
                code: ErrorCode::NOERR,
            }),
        ),
        (
            RelayToAlice,
            Frame::Result(MessageResult {
                id: 0,
                code: ErrorCode::NOERR,
            }),
        ),
        // A file in two pieces, then its end with the CRC-32C of every byte.
        (
            AliceToRelay,
            Frame::Open(Open {
                id: 1,
                kind: TransferKind::File,
                peer: user("bob"),
                size: file.len() as u64,
                name: Text::from("fox.txt"),
                resume_key: None,
                seal: None,
            }),
        ),
        (
            AliceToRelay,
            Frame::Data(Data {
                id: 1,
                offset: 0,
                payload: first,
            }),
        ),
        (
            AliceToRelay,
            Frame::Data(Data {
                id: 1,
                offset: 20,
                payload: second,
            }),
        ),
        (
            AliceToRelay,
            Frame::End(End {
                id: 1,
                size: file.len() as u64,
                digest: Digest::Crc32c(crc),
            }),
        ),
        // The relay forwards the file to bob under its own id on bob's connection.
        (
            RelayToBob,
            Frame::Open(Open {
                id: 8,
                kind: TransferKind::File,
                peer: user("alice"),
                size: file.len() as u64,
                name: Text::from("fox.txt"),
                resume_key: None,
                seal: None,
            }),
        ),
        (
            RelayToBob,
            Frame::Data(Data {
                id: 8,
                offset: 0,
                payload: file.clone(),
            }),
        ),
        (
            RelayToBob,
            Frame::End(End {
                id: 8,
                size: file.len() as u64,
                digest: Digest::Crc32c(crc),
            }),
        ),
        (
            BobToRelay,
            Frame::Credit(Credit {
                id: 8,
                max_offset: 256 * 1024 + 45,
            }),
        ),
        (
            BobToRelay,
            Frame::ConnCredit(ConnCredit {
                max_data: 1024 * 1024 + 45,
            }),
        ),
        (
            BobToRelay,
            Frame::Result(MessageResult {
                id: 8,
                code: ErrorCode::NOERR,
            }),
        ),
        (
            RelayToAlice,
            Frame::Result(MessageResult {
                id: 1,
                code: ErrorCode::NOERR,
            }),
        ),
        // A buffer alice gives up on, and bob's own buffer to an offline user.
        (
            AliceToRelay,
            Frame::Open(Open {
                id: 2,
                kind: TransferKind::Buffer,
                peer: user("bob"),
                size: 1 << 20,
                name: Text::new(),
                resume_key: None,
                seal: None,
            }),
        ),
        (
            AliceToRelay,
            Frame::Cancel(Cancel {
                id: 2,
                code: ErrorCode::CANCELLED,
            }),
        ),
        (
            BobToRelay,
            Frame::Open(Open {
                id: 0,
                kind: TransferKind::Buffer,
                peer: user("carol"),
                size: 3,
                name: Text::new(),
                resume_key: None,
                seal: None,
            }),
        ),
        (
            RelayToBob,
            Frame::Result(MessageResult {
                id: 0,
                code: ErrorCode::OFFLINE,
            }),
        ),
        (RelayToAlice, Frame::Ping(Ping { nonce: 42 })),
        (AliceToRelay, Frame::Pong(Ping { nonce: 42 })),
        (
            AliceToRelay,
            Frame::Close(Close {
                code: ErrorCode::NOERR,
                reason: Text::from_static("bye"),
            }),
        ),
    ];

    // One byte stream per hop, as each connection would carry it.
    let mut streams: Vec<(Hop, BytesMut)> = Vec::new();
    for (hop, frame) in &conversation {
        let stream = match streams.iter_mut().find(|(h, _)| *h as u8 == *hop as u8) {
            Some((_, s)) => s,
            None => {
                streams.push((*hop, BytesMut::new()));
                &mut streams.last_mut().expect("just pushed").1
            }
        };
        let start = stream.len();
        frame.encode(stream)?;
        println!(
            "{:<12} {:<13} {}",
            format!("{hop:?}"),
            frame.frame_type().name(),
            hex(&stream[start..])
        );
    }

    println!();
    let mut decoded = 0;
    for (hop, stream) in streams {
        let mut decoder = Decoder::new(Limits::default())?;
        let mut input = BytesMut::new();
        for piece in stream.chunks(7) {
            input.extend_from_slice(piece);
            while let Some(frame) = decoder.decode(&mut input)? {
                println!("{:<12} {frame:?}", format!("{hop:?}"));
                decoded += 1;
            }
        }
        assert!(input.is_empty(), "every byte decoded");
    }
    assert_eq!(decoded, conversation.len());
    println!("\n{decoded} frames encoded, cut into 7-byte pieces and decoded back.");
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().take(24).map(|b| format!("{b:02x}")).collect();
    let more = if bytes.len() > 24 {
        format!(" … ({} bytes)", bytes.len())
    } else {
        String::new()
    };
    shown.join(" ") + &more
}
