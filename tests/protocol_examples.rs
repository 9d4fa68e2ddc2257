//! The worked examples of docs/PROTOCOL.md, byte for byte: if the encoding changes, this
//! fails until the document is changed with it.

use bytes::{Bytes, BytesMut};
use peermsg::wire::*;
use peermsg::ErrorCode;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

/// `frame` encodes to exactly `bytes`, and `bytes` decode to exactly `frame`.
fn check(frame: Frame, bytes: &str) {
    let expected = hex(bytes);
    let mut out = BytesMut::new();
    frame.encode(&mut out).expect("encodes");
    assert_eq!(&out[..], &expected[..], "{frame:?}");
    let mut input = BytesMut::from(&expected[..]);
    let decoded = Decoder::new(Limits::default()).unwrap().decode(&mut input);
    assert_eq!(decoded, Ok(Some(frame)));
}

#[test]
fn hello() {
    check(
        Frame::Hello(Hello {
            version: 1,
            capabilities: Capabilities::DIGEST_CRC32C,
            role: Role::Client,
            max_frame_size: 16384,
            max_cmd_size: 65536,
            max_buffer_size: 104_857_600,
            max_file_size: VARINT_MAX,
            max_cmds_in_flight: 64,
            max_transfers: 16,
            transfer_window: 262_144,
            conn_window: 1_048_576,
            identity: None,
        }),
        "01 26 50 4d 53 47 01 01 00 80 00 40 00 80 01 00 00 86 40 00 00
         ff ff ff ff ff ff ff ff 40 40 10 80 04 00 00 80 10 00 00",
    );
}

#[test]
fn sealed_hello_and_keys() {
    let key = IdentityKey([0x11; 32]);
    let keyed = "20 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11
                 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11";
    let mut hello = Hello::new(Role::Client, &Limits::default(), 64, 16, 262_144, 1_048_576);
    hello.capabilities = Capabilities(Capabilities::DIGEST_CRC32C.0 | Capabilities::SEALED.0);
    hello.identity = Some(key);
    check(
        Frame::Hello(hello),
        &format!(
            "01 40 47 50 4d 53 47 01 09 00 80 00 40 00 80 01 00 00 86 40 00 00
             ff ff ff ff ff ff ff ff 40 40 10 80 04 00 00 80 10 00 00 {keyed}"
        ),
    );
    let bob = UserId::new("bob").unwrap();
    check(
        Frame::KeyQuery(KeyQuery { user: bob.clone() }),
        "19 04 03 62 6f 62",
    );
    check(
        Frame::Key(Key {
            user: bob.clone(),
            key: Some(key),
        }),
        &format!("1a 25 03 62 6f 62 {keyed}"),
    );
    check(
        Frame::Key(Key {
            user: bob,
            key: None,
        }),
        "1a 05 03 62 6f 62 00",
    );
}

#[test]
fn login() {
    let user = UserId::new("alice").unwrap();
    check(
        Frame::Login(Login {
            user,
            token: Bytes::from_static(b"s3cret"),
        }),
        "02 0d 05 61 6c 69 63 65 06 73 33 63 72 65 74",
    );
}

#[test]
fn command_and_its_result() {
    let cmd = |id, peer| {
        Frame::Cmd(Cmd {
            id,
            peer: UserId::new(peer).unwrap(),
            once: None,
            total_len: 5,
            data: Bytes::from_static(b"hello"),
        })
    };
    check(cmd(0, "bob"), "10 0c 00 03 62 6f 62 00 05 68 65 6c 6c 6f");
    check(
        cmd(7, "alice"),
        "10 0e 07 05 61 6c 69 63 65 00 05 68 65 6c 6c 6f",
    );
    check(
        Frame::Result(MessageResult {
            id: 7,
            code: ErrorCode::NOERR,
        }),
        "17 02 07 00",
    );
    check(
        Frame::Result(MessageResult {
            id: 0,
            code: ErrorCode::OFFLINE,
        }),
        "17 03 00 42 5b",
    );
}

#[test]
fn file_transfer() {
    check(
        Frame::Open(Open {
            id: 1,
            kind: TransferKind::File,
            peer: UserId::new("bob").unwrap(),
            size: 45,
            name: Text::from("fox.txt"),
            resume_key: None,
            seal: None,
        }),
        "12 10 01 01 03 62 6f 62 2d 07 66 6f 78 2e 74 78 74 00",
    );
    check(
        Frame::Data(Data {
            id: 1,
            offset: 0,
            payload: Bytes::from_static(b"abc"),
        }),
        "13 05 01 00 61 62 63",
    );
    check(
        Frame::End(End {
            id: 1,
            size: 45,
            digest: Digest::Crc32c(0xd39c_5c25),
        }),
        "14 08 01 2d 01 04 d3 9c 5c 25",
    );
    check(
        Frame::Credit(Credit {
            id: 8,
            max_offset: 262_189,
        }),
        "15 05 08 80 04 00 2d",
    );
    check(
        Frame::ConnCredit(ConnCredit {
            max_data: 1_048_621,
        }),
        "07 04 80 10 00 2d",
    );
    check(
        Frame::Cancel(Cancel {
            id: 2,
            code: ErrorCode::CANCELLED,
        }),
        "16 03 02 63 28",
    );
}

#[test]
fn resumed_file_transfer() {
    check(
        Frame::Open(Open {
            id: 1,
            kind: TransferKind::File,
            peer: UserId::new("bob").unwrap(),
            size: 45,
            name: Text::from("fox.txt"),
            resume_key: Some(ResumeKey(core::array::from_fn(|i| i as u8))),
            seal: None,
        }),
        "12 20 01 01 03 62 6f 62 2d 07 66 6f 78 2e 74 78 74 10 \
         00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f",
    );
    check(
        Frame::ResumeFrom(ResumeFrom {
            id: 8,
            offset: 20,
            digest: Digest::Crc32c(0x4667_5bb9),
        }),
        "18 08 08 14 01 04 46 67 5b b9",
    );
}

#[test]
fn keepalive_and_close() {
    check(Frame::Ping(Ping { nonce: 42 }), "04 01 2a");
    check(Frame::Pong(Ping { nonce: 42 }), "05 01 2a");
    check(
        Frame::Close(Close {
            code: ErrorCode::NOERR,
            reason: Text::from_static("bye"),
        }),
        "06 05 00 03 62 79 65",
    );
}

#[test]
fn crc32c_check_value() {
    // The digest is CRC-32C (Castagnoli); its standard check value.
    assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    assert_eq!(
        crc32c::crc32c(b"The quick brown fox jumps over the lazy dog. "),
        0xd39c_5c25
    );
}
