//! Arbitrary frames (valid under the default limits) encode, decode and compare equal,
//! whole and with the payload written apart from the header.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use peermsg::wire::{Decoder, Frame, Limits};

fuzz_target!(|frames: Vec<Frame>| {
    let mut stream = BytesMut::new();
    for frame in &frames {
        let n = frame.encode(&mut stream).expect("arbitrary frames encode");
        assert_eq!(Ok(n), frame.encoded_len());
    }
    let mut decoder = Decoder::new(Limits::default()).unwrap();
    for frame in &frames {
        assert_eq!(decoder.decode(&mut stream).as_ref(), Ok(&Some(frame.clone())));
    }
    assert!(stream.is_empty());
});
