//! The codec against tokio-util's `LengthDelimitedCodec`, the framing a user would
//! otherwise reach for, doing the same work in the same run: encode a batch of frames into
//! one buffer, then decode them all back out.
//!
//! Run: `cargo bench --bench codec`. `docs/PERFORMANCE.md` records the figures.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use peermsg::wire::{Cmd, Data, Decoder, Frame, Limits, UserId};
use tokio_util::codec::{Decoder as _, Encoder as _, LengthDelimitedCodec};

/// Frames per batch.
const BATCH: usize = 64;
/// Payload of a data frame: a 16 KiB frame body less its id and offset varints.
const DATA_PAYLOAD: usize = 16 * 1024 - 8;
/// Size of a command.
const CMD_SIZE: usize = 64;

fn peermsg_round(frames: &[Frame], buf: &mut BytesMut, decoder: &mut Decoder) -> usize {
    for f in frames {
        f.encode(buf).expect("encodes");
    }
    let mut n = 0;
    while let Some(frame) = decoder.decode(buf).expect("decodes") {
        n += match &frame {
            Frame::Data(d) => d.payload.len(),
            Frame::Cmd(c) => c.data.len(),
            _ => 0,
        };
        black_box(&frame);
    }
    n
}

fn ldc_round(payloads: &[Bytes], buf: &mut BytesMut, codec: &mut LengthDelimitedCodec) -> usize {
    for p in payloads {
        codec.encode(p.clone(), buf).expect("encodes");
    }
    let mut n = 0;
    while let Some(frame) = codec.decode(buf).expect("decodes") {
        n += frame.len();
        black_box(&frame);
    }
    n
}

fn bench_pair(
    c: &mut Criterion,
    name: &str,
    throughput: Throughput,
    frames: Vec<Frame>,
    payloads: Vec<Bytes>,
) {
    let mut group = c.benchmark_group(name);
    group.throughput(throughput);
    let total: usize = payloads.iter().map(Bytes::len).sum();

    let mut buf = BytesMut::new();
    let mut decoder = Decoder::new(Limits::default()).unwrap();
    group.bench_function("peermsg", |b| {
        b.iter(|| {
            assert_eq!(
                peermsg_round(black_box(&frames), &mut buf, &mut decoder),
                total
            )
        })
    });

    let mut buf = BytesMut::new();
    let mut codec = LengthDelimitedCodec::builder()
        .max_frame_length(1 << 20)
        .new_codec();
    group.bench_function("length_delimited", |b| {
        b.iter(|| assert_eq!(ldc_round(black_box(&payloads), &mut buf, &mut codec), total))
    });
    group.finish();
}

fn data_frames(c: &mut Criterion) {
    let payload = Bytes::from(vec![0x5a; DATA_PAYLOAD]);
    let frames = (0..BATCH)
        .map(|i| {
            let offset = (i * DATA_PAYLOAD) as u64;
            Frame::Data(Data {
                id: 3,
                offset,
                payload: payload.clone(),
            })
        })
        .collect();
    let payloads = vec![payload; BATCH];
    bench_pair(
        c,
        "data_16k",
        Throughput::Bytes((BATCH * DATA_PAYLOAD) as u64),
        frames,
        payloads,
    );
}

fn commands(c: &mut Criterion) {
    let data = Bytes::from(vec![0x33; CMD_SIZE]);
    let peer = UserId::new("user_000022").expect("valid id");
    let frames = (0..BATCH)
        .map(|i| {
            Frame::Cmd(Cmd {
                id: i as u64,
                peer: peer.clone(),
                once: None,
                total_len: CMD_SIZE as u64,
                data: data.clone(),
            })
        })
        .collect();
    let payloads = vec![data; BATCH];
    bench_pair(
        c,
        "cmd_64b",
        Throughput::Elements(BATCH as u64),
        frames,
        payloads,
    );
}

criterion_group!(benches, data_frames, commands);
criterion_main!(benches);
