//! A file over NATS as the benchmarks send it (the fairest plain way NATS moves a file):
//! 256 KiB messages on a data subject, the receiver acknowledging every 4 MiB on an ack
//! subject, the sender keeping at most 16 MiB unacknowledged; an empty message ends the
//! file. One writer and one reader of it, used by `progbench` (one file) and `capbench`
//! (many at once, each pair on its own subjects).

use std::io::{Read, Write};

use async_nats::{Client, Message, Subscriber};
use futures::StreamExt;

/// Bytes in one data message.
pub const CHUNK: usize = 256 * 1024;
/// The receiver acknowledges every this many bytes.
pub const ACK_EVERY: u64 = 4 << 20;
/// The sender keeps at most this many bytes unacknowledged.
pub const UNACKED: u64 = 16 << 20;

/// Sends `file` on `data`, reading acknowledgements from `acks` (subscribed to the ack
/// subject before the receiver may answer): the bytes sent, once all are acknowledged.
pub async fn send(nats: &Client, data: &str, acks: &mut Subscriber, mut file: impl Read) -> u64 {
    let ack = |message: Option<Message>| -> u64 {
        let message = message.expect("the ack subscription lives");
        std::str::from_utf8(&message.payload)
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("an ack is a byte count")
    };
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut buf = vec![0u8; CHUNK];
    loop {
        while sent - acked > UNACKED {
            acked = ack(acks.next().await);
        }
        let n = file.read(&mut buf).expect("the file reads");
        if n == 0 {
            break;
        }
        nats.publish(data.to_string(), bytes::Bytes::copy_from_slice(&buf[..n]))
            .await
            .expect("published");
        sent += n as u64;
    }
    nats.publish(data.to_string(), bytes::Bytes::new())
        .await
        .expect("published");
    nats.flush().await.expect("flushed");
    while acked < sent {
        acked = ack(acks.next().await);
    }
    sent
}

/// Receives one file from `data` (subscribed) into `out`, acknowledging on `ack`: the
/// bytes received, or `None` if the subscription ended first.
pub async fn receive(
    nats: &Client,
    data: &mut Subscriber,
    ack: &str,
    out: &mut impl Write,
) -> Option<u64> {
    let (mut got, mut acked) = (0u64, 0u64);
    loop {
        let message = data.next().await?;
        let end = message.payload.is_empty();
        out.write_all(&message.payload).expect("the file writes");
        got += message.payload.len() as u64;
        if end || got - acked >= ACK_EVERY {
            acked = got;
            nats.publish(ack.to_string(), got.to_string().into())
                .await
                .expect("published");
            nats.flush().await.expect("flushed");
        }
        if end {
            out.flush().expect("the file writes");
            return Some(got);
        }
    }
}
