//! Arbitrary bytes, streamed to the decoder in arbitrary pieces: it never panics, never
//! holds more than one frame's worth beyond what it was given, gives the same result as
//! when the bytes come whole, and whatever decodes re-encodes to the bytes it came from.
//! The same bytes through an `Inbox`, as owned pieces (split off one buffer, or separate
//! allocations) or copied slices, give the same frames and error.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use peermsg::wire::{DecodeError, Decoder, Frame, Inbox, Limits};

#[derive(Arbitrary, Debug)]
struct Input {
    pieces: Vec<u16>,
    bytes: Vec<u8>,
}

fn run(bytes: &[u8], pieces: &[u16]) -> (Vec<Frame>, Option<DecodeError>) {
    let mut decoder = Decoder::new(Limits::default()).unwrap();
    let mut input = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = bytes;
    let mut sizes = pieces.iter().map(|&p| p as usize).chain(std::iter::repeat(usize::MAX));
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(usize::MAX).clamp(1, rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        input.extend_from_slice(piece);
        loop {
            let before = input.clone().freeze();
            match decoder.decode(&mut input) {
                Ok(Some(frame)) => {
                    let consumed = before.len() - input.len();
                    let mut again = Vec::new();
                    frame.encode(&mut again).expect("a decoded frame encodes");
                    if matches!(frame, Frame::Hello(_)) {
                        assert!(again.len() <= consumed);
                    } else {
                        assert_eq!(&again[..], &before[..consumed], "canonical encoding");
                    }
                    frames.push(frame);
                }
                Ok(None) => {
                    assert_eq!(&input[..], &before[..], "need more consumes nothing");
                    break;
                }
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fn run_inbox(bytes: &[u8], pieces: &[u16]) -> (Vec<Frame>, Option<DecodeError>) {
    let decoder = Decoder::new(Limits::default()).unwrap();
    let mut inbox = Inbox::new();
    let mut shared = BytesMut::from(bytes);
    let mut frames = Vec::new();
    let mut sizes = pieces.iter().copied().chain(std::iter::repeat(u16::MAX));
    while !shared.is_empty() {
        let p = sizes.next().unwrap_or(u16::MAX);
        let piece = shared.split_to((p as usize >> 2).clamp(1, shared.len()));
        match p & 3 {
            0 | 1 => inbox.push_owned(piece),
            2 => inbox.push_owned(BytesMut::from(&piece[..])),
            _ => inbox.push_slice(&piece),
        }
        assert!(inbox.len() <= bytes.len());
        loop {
            match inbox.next_frame(&decoder) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fuzz_target!(|input: Input| {
    let split = run(&input.bytes, &input.pieces);
    let whole = run(&input.bytes, &[]);
    assert_eq!(split, whole);
    assert_eq!(run_inbox(&input.bytes, &input.pieces), whole);
});
