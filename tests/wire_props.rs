//! Properties of the wire codec over random frames, streams, splits and bytes.

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use peermsg::wire::{DecodeError, Decoder, Frame, Inbox, Limits};
use proptest::prelude::*;

/// Frames from random bytes through their `Arbitrary` impl, which keeps them within
/// `Limits::default()`.
fn frame() -> impl Strategy<Value = Frame> {
    proptest::collection::vec(any::<u8>(), 0..2048).prop_filter_map("not enough bytes", |seed| {
        Frame::arbitrary(&mut Unstructured::new(&seed)).ok()
    })
}

fn encode_all(frames: &[Frame]) -> Bytes {
    let mut out = BytesMut::new();
    for f in frames {
        f.encode(&mut out).expect("arbitrary frames encode");
    }
    out.freeze()
}

/// Feeds `stream` to one decoder in pieces cut at `cuts`, collecting what comes out.
fn decode_in_pieces(stream: &[u8], cuts: &[usize]) -> (Vec<Frame>, Option<DecodeError>, usize) {
    let mut decoder = Decoder::new(Limits::default()).unwrap();
    let mut input = BytesMut::new();
    let mut frames = Vec::new();
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    bounds.push(stream.len());
    bounds.sort_unstable();
    let mut start = 0;
    for end in bounds {
        input.extend_from_slice(&stream[start..end]);
        start = end;
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e), input.len()),
            }
        }
    }
    (frames, None, input.len())
}

/// Feeds `stream` to an [`Inbox`] in pieces cut at `cuts`, each piece chosen by `how`:
/// split off one shared buffer (joined without a copy), a separate allocation, or copied
/// in with `push_slice`. Returns the frames and the error, if any.
fn inbox_in_pieces(stream: &[u8], cuts: &[usize], how: &[u8]) -> (Vec<Frame>, Option<DecodeError>) {
    let decoder = Decoder::new(Limits::default()).unwrap();
    let mut inbox = Inbox::new();
    let mut shared = BytesMut::from(stream);
    let mut frames = Vec::new();
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    bounds.push(stream.len());
    bounds.sort_unstable();
    let mut start = 0;
    for (i, end) in bounds.into_iter().enumerate() {
        let piece = shared.split_to(end - start);
        start = end;
        match how.get(i).copied().unwrap_or(0) % 3 {
            0 => inbox.push_owned(piece),
            1 => inbox.push_owned(BytesMut::from(&piece[..])),
            _ => inbox.push_slice(&piece),
        }
        loop {
            match inbox.next_frame(&decoder) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn an_inbox_fed_owned_pieces_decodes_the_same(
        frames in proptest::collection::vec(frame(), 1..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
        how in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let stream = encode_all(&frames);
        let (decoded, error) = inbox_in_pieces(&stream, &cuts, &how);
        prop_assert_eq!(error, None);
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn arbitrary_bytes_through_an_inbox_decode_as_whole(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        how in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let (frames, error, _) = decode_in_pieces(&bytes, &[]);
        prop_assert_eq!((frames, error), inbox_in_pieces(&bytes, &cuts, &how));
    }

    #[test]
    fn every_frame_round_trips(f in frame()) {
        let mut buf = BytesMut::new();
        let written = f.encode(&mut buf).unwrap();
        prop_assert_eq!(written, buf.len());
        prop_assert_eq!(Some(written), f.encoded_len().ok());

        let mut header = Vec::new();
        let n = f.encode_header(&mut header).unwrap();
        prop_assert_eq!(&header[..], &buf[..n]);

        let decoded = Decoder::new(Limits::default()).unwrap().decode(&mut buf);
        prop_assert_eq!(decoded, Ok(Some(f)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn a_stream_split_anywhere_decodes_the_same(
        frames in proptest::collection::vec(frame(), 1..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let stream = encode_all(&frames);
        let (decoded, error, left) = decode_in_pieces(&stream, &cuts);
        prop_assert_eq!(error, None);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn arbitrary_bytes_decode_the_same_however_split(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        // Never panics; any split gives the same frames, then the same error, or else the
        // same bytes left waiting for more. (Where an error stops the stream, how much was
        // buffered then depends on the split.)
        let outcome = |(frames, error, left): (Vec<Frame>, Option<DecodeError>, usize)| {
            let left = if error.is_some() { None } else { Some(left) };
            (frames, error, left)
        };
        let whole = outcome(decode_in_pieces(&bytes, &[]));
        let split = outcome(decode_in_pieces(&bytes, &cuts));
        prop_assert_eq!(&whole, &split);
        let every_byte: Vec<usize> = (0..bytes.len()).collect();
        prop_assert_eq!(&whole, &outcome(decode_in_pieces(&bytes, &every_byte)));
    }

    #[test]
    fn whatever_decodes_re_encodes_to_the_same_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ty in 1u8..0x18,
    ) {
        // Valid frame types up front make decodable frames common. Every field has one
        // encoding, so a decoded frame re-encodes to exactly the bytes it came from
        // (a HELLO only up to its last known field).
        let mut input = BytesMut::from(&[ty, bytes.len() as u8 & 0x3f][..]);
        input.extend_from_slice(&bytes);
        let original = input.clone().freeze();
        if let Ok(Some(f)) = Decoder::new(Limits::default()).unwrap().decode(&mut input) {
            let consumed = original.len() - input.len();
            let mut again = BytesMut::new();
            f.encode(&mut again).unwrap();
            if matches!(f, Frame::Hello(_)) {
                prop_assert!(again.len() <= consumed);
            } else {
                prop_assert_eq!(&again[..], &original[..consumed]);
            }
        }
    }
}
