//! Every limit the decoder enforces, tried at the limit and one past it.

use bytes::{Bytes, BytesMut};
use peermsg::wire::*;
use peermsg::ErrorCode;

fn decode_with(limits: Limits, frame: &Frame) -> Result<Option<Frame>, DecodeError> {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf).expect("encodes");
    Decoder::new(limits).unwrap().decode(&mut buf)
}

fn decode(frame: &Frame) -> Result<Option<Frame>, DecodeError> {
    decode_with(Limits::default(), frame)
}

/// Asserts that `at` decodes and `past` fails with `LimitExceeded` for `limit`.
fn at_and_past(at: Frame, past: Frame, limit: Limit, value: u64, max: u64) {
    assert_eq!(decode(&at), Ok(Some(at.clone())), "{limit:?} at the limit");
    assert_eq!(
        decode(&past),
        Err(DecodeError::LimitExceeded { limit, value, max }),
        "{limit:?} past it"
    );
}

fn user(len: usize) -> UserId {
    UserId::new(&"u".repeat(len)).unwrap()
}

fn bytes(len: usize) -> Bytes {
    Bytes::from(vec![0xa5; len])
}

fn data(offset: u64, len: usize) -> Frame {
    Frame::Data(Data {
        id: 1,
        offset,
        payload: bytes(len),
    })
}

#[test]
fn frame_size() {
    let max = Limits::default().max_frame_size;
    // id and offset take a byte each: the body is exactly max_frame_size, whose
    // length varint (16384 and up) takes four bytes.
    let at = data(0, max as usize - 2);
    assert_eq!(at.encoded_len(), Ok(1 + 4 + max as usize));
    assert_eq!(decode(&at), Ok(Some(at.clone())));
    assert_eq!(
        decode(&data(0, max as usize - 1)),
        Err(DecodeError::FrameTooLarge {
            frame: FrameType::Data,
            len: max + 1,
            max
        })
    );
    // A smaller configured limit is the one enforced.
    let small = Limits {
        max_frame_size: 1024,
        ..Limits::default()
    };
    assert_eq!(
        decode_with(small, &data(0, 1022)).map(|f| f.is_some()),
        Ok(true)
    );
    assert!(matches!(
        decode_with(small, &data(0, 1023)),
        Err(DecodeError::FrameTooLarge { len: 1025, .. })
    ));
}

#[test]
fn user_id_length() {
    let max = Limits::default().max_user_id_len;
    let login = |n| {
        Frame::Login(Login {
            user: user(n),
            token: Bytes::new(),
        })
    };
    at_and_past(
        login(max as usize),
        login(max as usize + 1),
        Limit::UserIdLen,
        max + 1,
        max,
    );
    let cmd = |n| {
        Frame::Cmd(Cmd {
            id: 0,
            peer: user(n),
            once: None,
            total_len: 0,
            data: Bytes::new(),
        })
    };
    at_and_past(
        cmd(max as usize),
        cmd(max as usize + 1),
        Limit::UserIdLen,
        max + 1,
        max,
    );
}

#[test]
fn token_length() {
    let max = Limits::default().max_token_len;
    let login = |n| {
        Frame::Login(Login {
            user: user(5),
            token: bytes(n),
        })
    };
    at_and_past(
        login(max as usize),
        login(max as usize + 1),
        Limit::TokenLen,
        max + 1,
        max,
    );
}

#[test]
fn file_name_length() {
    let max = Limits::default().max_file_name_len;
    let open = |n: usize| {
        Frame::Open(Open {
            id: 0,
            kind: TransferKind::File,
            peer: user(3),
            size: 10,
            name: Text::from("n".repeat(n)),
            resume_key: None,
            seal: None,
        })
    };
    at_and_past(
        open(max as usize),
        open(max as usize + 1),
        Limit::FileNameLen,
        max + 1,
        max,
    );
}

#[test]
fn close_reason_length() {
    let max = Limits::default().max_reason_len;
    let close = |n: usize| {
        Frame::Close(Close {
            code: ErrorCode::SHUTDOWN,
            reason: Text::from("r".repeat(n)),
        })
    };
    at_and_past(
        close(max as usize),
        close(max as usize + 1),
        Limit::ReasonLen,
        max + 1,
        max,
    );
}

#[test]
fn command_size_first_fragment_and_continuations() {
    let max = Limits::default().max_cmd_size;
    let cmd = |total| {
        Frame::Cmd(Cmd {
            id: 0,
            peer: user(1),
            once: None,
            total_len: total,
            data: bytes(100),
        })
    };
    at_and_past(cmd(max), cmd(max + 1), Limit::CmdSize, max + 1, max);
    let cont = |offset| {
        Frame::CmdCont(CmdCont {
            id: 0,
            offset,
            data: bytes(100),
        })
    };
    at_and_past(
        cont(max - 100),
        cont(max - 99),
        Limit::CmdSize,
        max + 1,
        max,
    );
}

#[test]
fn buffer_and_file_size() {
    let limits = Limits {
        max_file_size: 1_000_000_000,
        ..Limits::default()
    };
    let open = |kind, size| {
        Frame::Open(Open {
            id: 0,
            kind,
            peer: user(1),
            size,
            name: Text::new(),
            resume_key: None,
            seal: None,
        })
    };
    let buf_max = limits.max_buffer_size;
    assert_eq!(
        decode_with(limits, &open(TransferKind::Buffer, buf_max)).map(|f| f.is_some()),
        Ok(true)
    );
    assert_eq!(
        decode_with(limits, &open(TransferKind::Buffer, buf_max + 1)),
        Err(DecodeError::LimitExceeded {
            limit: Limit::BufferSize,
            value: buf_max + 1,
            max: buf_max
        })
    );
    // A file may be larger than a buffer, up to its own limit.
    let file_max = limits.max_file_size;
    assert_eq!(
        decode_with(limits, &open(TransferKind::File, file_max)).map(|f| f.is_some()),
        Ok(true)
    );
    assert_eq!(
        decode_with(limits, &open(TransferKind::File, file_max + 1)),
        Err(DecodeError::LimitExceeded {
            limit: Limit::FileSize,
            value: file_max + 1,
            max: file_max
        })
    );
    // By default a file may be as large as a varint goes.
    assert_eq!(
        decode(&open(TransferKind::File, VARINT_MAX)).map(|f| f.is_some()),
        Ok(true)
    );
}

#[test]
fn data_offsets_and_end_sizes_stay_within_the_largest_transfer() {
    let limits = Limits {
        max_buffer_size: 5_000,
        max_file_size: 10_000,
        ..Limits::default()
    };
    let check = |frame: Frame, ok: bool, value: u64| {
        let expected = if ok {
            Ok(Some(frame.clone()))
        } else {
            Err(DecodeError::LimitExceeded {
                limit: Limit::TransferSize,
                value,
                max: 10_000,
            })
        };
        assert_eq!(decode_with(limits, &frame), expected);
    };
    check(data(9_000, 1_000), true, 0);
    check(data(9_001, 1_000), false, 10_001);
    let end = |size| {
        Frame::End(End {
            id: 2,
            size,
            digest: Digest::Crc32c(7),
        })
    };
    check(end(10_000), true, 0);
    check(end(10_001), false, 10_001);
}

#[test]
fn hello_frame_size_bounds() {
    let hello = |max_frame_size| {
        Frame::Hello(Hello {
            version: VERSION,
            capabilities: Capabilities::supported(),
            role: Role::Client,
            max_frame_size,
            max_cmd_size: 1,
            max_buffer_size: 1,
            max_file_size: 1,
            max_cmds_in_flight: 1,
            max_transfers: 1,
            transfer_window: 1,
            conn_window: 1,
            identity: None,
        })
    };
    for ok in [MIN_FRAME_SIZE, MAX_FRAME_SIZE] {
        assert_eq!(decode(&hello(ok)).map(|f| f.is_some()), Ok(true));
    }
    for bad in [MIN_FRAME_SIZE - 1, MAX_FRAME_SIZE + 1] {
        assert_eq!(
            decode(&hello(bad)),
            Err(DecodeError::OutOfRange {
                field: "max_frame_size",
                value: bad
            })
        );
    }
}

#[test]
fn encoder_refuses_values_a_varint_cannot_hold() {
    let f = Frame::Credit(Credit {
        id: 1,
        max_offset: VARINT_MAX + 1,
    });
    assert_eq!(
        f.encoded_len(),
        Err(EncodeError::ValueTooLarge {
            frame: FrameType::Credit,
            value: VARINT_MAX + 1
        })
    );
    let mut out = Vec::new();
    assert!(f.encode(&mut out).is_err());
    assert!(out.is_empty(), "nothing written on error");
}

#[test]
fn encoder_refuses_a_destination_too_small() {
    let f = Frame::Ping(Ping { nonce: 1 });
    let mut space = [0u8; 2];
    let mut dst = &mut space[..];
    assert_eq!(
        f.encode(&mut dst),
        Err(EncodeError::BufferTooSmall {
            needed: 3,
            available: 2
        })
    );
    let mut space = [0u8; 3];
    let mut dst = &mut space[..];
    assert_eq!(f.encode(&mut dst), Ok(3));
    assert_eq!(space, [0x04, 0x01, 0x01]);
}
