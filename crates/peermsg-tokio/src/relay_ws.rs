//! The relay's WebSocket transport: a browser's connection carries the
//! same byte stream as a TCP one, in binary messages (docs/PROTOCOL.md, "WebSocket").
//!
//! WebSocket is a framing layer of the socket, as TLS is, so a browser gets the relay's
//! one write path, its budgets and its caps: the reader takes the client's frames apart
//! ([`Frames`]: unmasked in place, the payloads handed on as the stream they carry) before
//! the relay sees the bytes, and the relay's task puts each batch it writes in one binary
//! frame ([`frame`]), whose header goes before the batch's chunks (no payload is copied).
//! tungstenite parses and formats frame headers and derives the handshake's accept key;
//! httparse reads the request. The opening handshake ([`handshake`], after TLS on
//! `wss://`) runs in a task of its own within the login deadline, as a TLS handshake does;
//! a plain `GET` on the same port is answered from the web folder, if there is one.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use peermsg::wire::Transmit;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::relay_tls;

/// The largest request head a WebSocket or web client may send.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// The largest file served from the web folder.
const MAX_WEB_FILE: u64 = 64 << 20;

/// A connection whose WebSocket handshake is done: its TCP stream, its TLS session on
/// `wss://`, and the bytes that came after the request (the first frames, if any).
pub(crate) struct Opened {
    pub(crate) stream: TcpStream,
    pub(crate) session: Option<relay_tls::Session>,
    pub(crate) early: BytesMut,
}

/// The handshake on an accepted connection, within `limit`: TLS first with `acceptor`,
/// then the HTTP upgrade. A `GET` that asks for no upgrade is answered from `web` (or
/// refused) and gives `None`, as does anything else that is not a WebSocket.
pub(crate) async fn handshake(
    acceptor: Option<relay_tls::Acceptor>,
    stream: TcpStream,
    limit: Duration,
    web: Option<PathBuf>,
) -> Option<Opened> {
    let opening = async move {
        match acceptor {
            None => {
                let mut stream = stream;
                let early = upgrade(&mut stream, web.as_deref()).await?;
                Some(Opened {
                    stream,
                    session: None,
                    early,
                })
            }
            #[cfg(feature = "tls")]
            Some(acceptor) => {
                let mut tls = acceptor.accept(stream).await.ok()?;
                let early = upgrade(&mut tls, web.as_deref()).await?;
                let (stream, session) = tls.into_inner();
                Some(Opened {
                    stream,
                    session: Some(Box::new(session)),
                    early,
                })
            }
            #[cfg(not(feature = "tls"))]
            Some(acceptor) => match acceptor {},
        }
    };
    tokio::time::timeout(limit, opening).await.ok()?
}

/// Reads a request head from `stream` and answers it: a WebSocket upgrade gives the bytes
/// read after the head; a file of `web`, or an error, is answered and gives `None`.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    web: Option<&Path>,
) -> Option<BytesMut> {
    let mut head = BytesMut::with_capacity(1024);
    let (request, rest) = loop {
        if head.len() >= MAX_REQUEST_HEAD {
            answer(
                stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
            )
            .await;
            return None;
        }
        let room = MAX_REQUEST_HEAD - head.len();
        let n = stream.read_buf(&mut (&mut head).limit(room)).await.ok()?;
        if n == 0 {
            return None;
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&head) {
            Ok(httparse::Status::Complete(len)) => break (Request::of(&parsed), len),
            Ok(httparse::Status::Partial) => {}
            Err(_) => {
                answer(stream, "400 Bad Request", "text/plain", b"").await;
                return None;
            }
        }
    };
    match request {
        Request::Upgrade { key } => {
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            stream.write_all(response.as_bytes()).await.ok()?;
            stream.flush().await.ok()?;
            head.advance(rest);
            Some(head)
        }
        Request::Get(path) => {
            match web.and_then(|dir| web_file(dir, &path)) {
                Some(file) => match read_web_file(&file).await {
                    Some(body) => answer(stream, "200 OK", content_type(&file), &body).await,
                    None => answer(stream, "404 Not Found", "text/plain", b"not found").await,
                },
                None => answer(stream, "404 Not Found", "text/plain", b"not found").await,
            }
            None
        }
        Request::Other => {
            answer(stream, "400 Bad Request", "text/plain", b"").await;
            None
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// A WebSocket of version 13, with its key.
    Upgrade { key: String },
    /// A plain `GET` of this path.
    Get(String),
    /// Anything else.
    Other,
}

impl Request {
    fn of(request: &httparse::Request<'_, '_>) -> Request {
        if request.method != Some("GET") {
            return Request::Other;
        }
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
        };
        let has_token = |name: &str, token: &str| {
            header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        if has_token("upgrade", "websocket") {
            return match (
                has_token("connection", "upgrade"),
                header("sec-websocket-version"),
                header("sec-websocket-key"),
            ) {
                (true, Some("13"), Some(key)) => Request::Upgrade {
                    key: key.trim().to_string(),
                },
                _ => Request::Other,
            };
        }
        Request::Get(request.path.unwrap_or("/").to_string())
    }
}

/// The file of the web folder `dir` a request path names: `/` is `index.html`; a path
/// whose parts are not plain names (no `..`, no hidden files) names none.
fn web_file(dir: &Path, path: &str) -> Option<PathBuf> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = match path.trim_start_matches('/') {
        "" => "index.html",
        p => p,
    };
    let plain = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if !path.split('/').all(plain) {
        return None;
    }
    Some(dir.join(path))
}

async fn read_web_file(file: &Path) -> Option<Vec<u8>> {
    let meta = tokio::fs::metadata(file).await.ok()?;
    if !meta.is_file() || meta.len() > MAX_WEB_FILE {
        return None;
    }
    tokio::fs::read(file).await.ok()
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// Answers a request that is not an upgrade, and ends the connection.
async fn answer<S: AsyncWrite + Unpin>(stream: &mut S, status: &str, kind: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if stream.write_all(head.as_bytes()).await.is_ok() && stream.write_all(body).await.is_ok() {
        let _ = stream.flush().await;
        let _ = stream.shutdown().await;
    }
}

/// Puts `batch` in one binary frame: its header, then the batch's chunks as they are.
pub(crate) fn frame(mut batch: Transmit) -> Transmit {
    let mut out = Transmit::new();
    let len = bytes::Buf::remaining(&batch) as u64;
    if len == 0 {
        return out;
    }
    out.push_bytes(header(OpCode::Data(Data::Binary), len));
    while let Some(chunk) = batch.pop_chunk() {
        out.push_bytes(chunk);
    }
    out
}

/// A close frame with `code` ("going away" when the relay ends the connection), the last
/// thing a WebSocket connection is sent.
pub(crate) fn close_frame(code: CloseCode) -> Bytes {
    let code: u16 = code.into();
    let mut out = BytesMut::from(&header(OpCode::Control(Control::Close), 2)[..]);
    out.extend_from_slice(&code.to_be_bytes());
    out.freeze()
}

/// The normal close of a connection the relay ended.
pub(crate) const CLOSE_NORMAL: CloseCode = CloseCode::Normal;

/// A server frame's header (servers do not mask).
fn header(opcode: OpCode, len: u64) -> Bytes {
    let head = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    let mut out = Vec::with_capacity(head.len(len));
    // Writing to a Vec does not fail.
    let _ = head.format(len, &mut out);
    Bytes::from(out)
}

/// Why a client's frames end the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// It sent a close frame.
    Closed,
    /// It broke the WebSocket protocol (with what it broke).
    Broken(&'static str),
}

/// What one read of a client's frames gave.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    /// The bytes its binary messages carry, in order.
    pub(crate) data: BytesMut,
    /// Frames to answer with (pongs), already formatted.
    pub(crate) replies: Vec<Bytes>,
}

/// Takes a client's WebSocket frames apart, as they come, split anywhere: the bytes of
/// binary messages are the connection's stream; pings are answered; text, unmasked and
/// reserved frames, and frames over the size cap end it. Memory is a header's 14 bytes and
/// a control frame's 125: a data frame's payload is never gathered, only unmasked in place.
#[derive(Debug)]
pub(crate) struct Frames {
    /// A header's bytes so far, when a read ended within it.
    head: Vec<u8>,
    /// The frame whose payload is coming: its kind, bytes left, mask and place in it.
    payload: Option<Payload>,
    /// In a fragmented binary message (its next frame is a continuation).
    in_message: bool,
    /// The largest frame payload accepted.
    max_frame: u64,
}

#[derive(Debug)]
struct Payload {
    /// `None` for data; a control frame's opcode and its payload so far.
    control: Option<(Control, Vec<u8>)>,
    left: u64,
    mask: [u8; 4],
    at: usize,
}

impl Frames {
    /// A decoder that refuses frames over `max_frame` bytes.
    pub(crate) fn new(max_frame: u64) -> Self {
        Frames {
            head: Vec::with_capacity(14),
            payload: None,
            in_message: false,
            max_frame,
        }
    }

    /// Takes the frames in `bytes` apart; their data is unmasked where it lies and handed
    /// back (as a part of `bytes`).
    pub(crate) fn decode(&mut self, mut bytes: BytesMut) -> Result<Decoded, End> {
        let mut replies = Vec::new();
        // Data goes to `start..end` of `bytes`, moved down over the headers between.
        let (mut read, mut start, mut end) = (0, None::<usize>, 0);
        while read < bytes.len() {
            let Some(payload) = &mut self.payload else {
                read += self.header(&bytes[read..], &mut replies)?;
                continue;
            };
            let n = (bytes.len() - read).min(usize::try_from(payload.left).unwrap_or(usize::MAX));
            let part = &mut bytes[read..read + n];
            unmask(part, payload.mask, payload.at);
            payload.at = (payload.at + n) % 4;
            payload.left -= n as u64;
            match &mut payload.control {
                Some((_, gathered)) => gathered.extend_from_slice(part),
                None => {
                    // The first data stays where it is; later data follows it.
                    let to = match start {
                        None => *start.insert(read),
                        Some(_) => end,
                    };
                    if to != read {
                        bytes.copy_within(read..read + n, to);
                    }
                    end = to + n;
                }
            }
            read += n;
            if payload.left == 0 {
                self.frame_done(&mut replies)?;
            }
        }
        bytes.truncate(end);
        bytes.advance(start.unwrap_or(0));
        Ok(Decoded {
            data: bytes,
            replies,
        })
    }

    /// Reads a frame header from `input` (with what an earlier read left of it): the
    /// bytes of `input` it took.
    fn header(&mut self, input: &[u8], replies: &mut Vec<Bytes>) -> Result<usize, End> {
        let had = self.head.len();
        let take = (14 - had).min(input.len());
        self.head.extend_from_slice(&input[..take]);
        let mut cursor = Cursor::new(&self.head[..]);
        let (head, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            // 14 bytes always hold a header: all of `input` was taken.
            Ok(None) => return Ok(take),
            Err(_) => return Err(End::Broken("a malformed frame header")),
        };
        let used = cursor.position() as usize - had;
        self.head.clear();
        self.begin(head, len)?;
        if len == 0 {
            self.frame_done(replies)?;
        }
        Ok(used)
    }

    /// A frame's header is read: checks it and gets ready for its payload.
    fn begin(&mut self, head: FrameHeader, len: u64) -> Result<(), End> {
        if head.rsv1 || head.rsv2 || head.rsv3 {
            return Err(End::Broken("reserved bits set"));
        }
        let Some(mask) = head.mask else {
            return Err(End::Broken("an unmasked frame"));
        };
        let control = match head.opcode {
            OpCode::Data(Data::Binary) if !self.in_message => None,
            OpCode::Data(Data::Continue) if self.in_message => None,
            OpCode::Data(Data::Text) => return Err(End::Broken("a text message")),
            OpCode::Data(_) => return Err(End::Broken("a data frame out of order")),
            OpCode::Control(Control::Reserved(_)) => return Err(End::Broken("a reserved opcode")),
            OpCode::Control(c) if head.is_final && len <= 125 => Some((c, Vec::new())),
            OpCode::Control(_) => return Err(End::Broken("a control frame too long or split")),
        };
        if control.is_none() {
            if len > self.max_frame {
                return Err(End::Broken("a frame over the size cap"));
            }
            self.in_message = !head.is_final;
        }
        self.payload = Some(Payload {
            control,
            left: len,
            mask,
            at: 0,
        });
        Ok(())
    }

    /// A frame's payload is all here: a control frame is acted on.
    fn frame_done(&mut self, replies: &mut Vec<Bytes>) -> Result<(), End> {
        let Some(Payload {
            control: Some((control, body)),
            ..
        }) = self.payload.take()
        else {
            return Ok(());
        };
        match control {
            Control::Close => Err(End::Closed),
            Control::Ping => {
                let mut pong =
                    BytesMut::from(&header(OpCode::Control(Control::Pong), body.len() as u64)[..]);
                pong.extend_from_slice(&body);
                replies.push(pong.freeze());
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Unmasks `part`, whose first byte is at `at` in the mask's cycle.
fn unmask(part: &mut [u8], mask: [u8; 4], at: usize) {
    let mask = [
        mask[at % 4],
        mask[(at + 1) % 4],
        mask[(at + 2) % 4],
        mask[(at + 3) % 4],
    ];
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = part.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with `mask`.
    fn client_frame(opcode: OpCode, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let head = FrameHeader {
            opcode,
            is_final: fin,
            mask: Some(mask),
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        head.format(payload.len() as u64, &mut out).unwrap();
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn binary(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        client_frame(OpCode::Data(Data::Binary), true, payload, mask)
    }

    /// Feeds `wire` split after each of `cuts`; gives the data and replies.
    fn feed(frames: &mut Frames, wire: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, usize), End> {
        let (mut data, mut replies, mut from) = (Vec::new(), 0, 0);
        for &to in cuts.iter().chain([wire.len()].iter()) {
            let got = frames.decode(BytesMut::from(&wire[from..to]))?;
            data.extend_from_slice(&got.data);
            replies += got.replies.len();
            from = to;
        }
        Ok((data, replies))
    }

    #[test]
    fn frames_split_anywhere_give_the_stream_they_carry() {
        let payload: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
        let mut wire = binary(&payload[..100], [1, 2, 3, 4]);
        wire.extend(client_frame(
            OpCode::Control(Control::Ping),
            true,
            b"hi",
            [9, 9, 9, 9],
        ));
        wire.extend(client_frame(
            OpCode::Data(Data::Binary),
            false,
            &payload[100..70_000 - 3],
            [5, 6, 7, 8],
        ));
        wire.extend(client_frame(
            OpCode::Data(Data::Continue),
            true,
            &payload[70_000 - 3..],
            [0xa, 0xb, 0xc, 0xd],
        ));
        for cuts in [
            vec![],
            vec![1],
            vec![3, 7, 105, 106, 200, 65_000],
            (1..wire.len()).step_by(997).collect(),
        ] {
            let mut frames = Frames::new(1 << 20);
            let (data, replies) = feed(&mut frames, &wire, &cuts).unwrap();
            assert_eq!(data, payload, "cut at {cuts:?}");
            assert_eq!(replies, 1);
        }
    }

    #[test]
    fn a_ping_is_answered_with_its_payload() {
        let mut frames = Frames::new(1024);
        let got = frames
            .decode(BytesMut::from(
                &client_frame(OpCode::Control(Control::Ping), true, b"abc", [1, 2, 3, 4])[..],
            ))
            .unwrap();
        assert_eq!(&got.replies[0][..], &[0x8a, 3, b'a', b'b', b'c']);
        assert!(got.data.is_empty());
    }

    #[test]
    fn a_broken_client_is_refused() {
        let cases: Vec<(Vec<u8>, End)> = vec![
            (
                client_frame(OpCode::Data(Data::Text), true, b"x", [1; 4]),
                End::Broken("a text message"),
            ),
            (
                {
                    let mut f = binary(b"abc", [1; 4]);
                    f[1] &= 0x7f; // no mask bit
                    f.truncate(2 + 3);
                    f
                },
                End::Broken("an unmasked frame"),
            ),
            (
                binary(&[0; 2000], [1; 4]),
                End::Broken("a frame over the size cap"),
            ),
            (
                client_frame(OpCode::Data(Data::Continue), true, b"x", [1; 4]),
                End::Broken("a data frame out of order"),
            ),
            (
                client_frame(OpCode::Control(Control::Ping), true, &[0; 126], [1; 4]),
                End::Broken("a control frame too long or split"),
            ),
            (
                client_frame(OpCode::Control(Control::Close), true, &[3, 232], [1; 4]),
                End::Closed,
            ),
            (
                {
                    let mut f = binary(b"abc", [1; 4]);
                    f[0] |= 0x40;
                    f
                },
                End::Broken("reserved bits set"),
            ),
        ];
        for (wire, want) in cases {
            let mut frames = Frames::new(1024);
            assert_eq!(feed(&mut frames, &wire, &[]).unwrap_err(), want);
        }
    }

    #[test]
    fn a_batch_goes_in_one_binary_frame_without_copying_its_payload() {
        let payload = Bytes::from(vec![7u8; 70_000]);
        let mut batch = Transmit::new();
        batch.push_bytes(payload.clone());
        let mut out = frame(batch);
        let head = out.pop_chunk().unwrap();
        assert_eq!(&head[..], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(out.pop_chunk().unwrap().as_ptr(), payload.as_ptr());
        assert_eq!(&close_frame(CLOSE_NORMAL)[..], &[0x88, 2, 3, 232]);
    }

    #[test]
    fn web_paths_are_plain_names_in_the_folder() {
        let dir = Path::new("/srv/web");
        assert_eq!(web_file(dir, "/"), Some(dir.join("index.html")));
        assert_eq!(
            web_file(dir, "/pkg/peermsg_web.js?v=1"),
            Some(dir.join("pkg/peermsg_web.js"))
        );
        for bad in [
            "/../etc/passwd",
            "/.git/config",
            "/a//b",
            "/a%2f..",
            "/pkg/../x",
        ] {
            assert_eq!(web_file(dir, bad), None, "{bad}");
        }
    }
}
