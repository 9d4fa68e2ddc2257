//! # peermsg
//!
//! Point-to-point messaging between users: one user sends another a **command**, an
//! in-memory **buffer** or a **file**, with a result for each send, progress and cancel,
//! through a relay server or over a direct link.
//!
//! The crate is **sans-IO**: it never touches a socket, a file, a clock or a thread. Bytes
//! and the current time go in; frames, bytes to write and events come out. Any runtime
//! (tokio, std threads, an embedded main loop over a UART) plugs in its own I/O and timers.
//! It is `#![no_std]` with `alloc`, has no unsafe code and never panics on any input.
//!
//! ## Layers
//!
//! - [`wire`]: the frames of the protocol, their encoder and a streaming decoder that
//!   accepts bytes split anywhere, checks every length before it buffers anything, and
//!   hands payloads out as slices of the input. `docs/PROTOCOL.md` is the byte-level
//!   specification.
//! - [`ErrorCode`]: result codes with wire-stable numbers (the SDK's where one fits).
//! - [`Instant`]: time as the caller gives it.
//!
//! ## The drive loop of the wire layer
//!
//! Whatever the transport, a connection is driven the same way: append what the transport
//! delivered to one `BytesMut`, take frames off it until the decoder says it needs more,
//! and encode outgoing frames into a buffer the caller writes out. A decode error ends the
//! connection with [`wire::DecodeError::code`].
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use peermsg::wire::{Cmd, Decoder, Frame, Limits, Ping, SendResult, UserId};
//! use peermsg::ErrorCode;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The sending side encodes frames into the buffer it will write to the transport.
//! let mut outgoing = BytesMut::new();
//! let cmd = Frame::Cmd(Cmd {
//!     id: 0,
//!     peer: UserId::new("bob")?,
//!     total_len: 5,
//!     data: Bytes::from_static(b"hello"),
//! });
//! cmd.encode(&mut outgoing)?;
//! Frame::Ping(Ping { nonce: 1 }).encode(&mut outgoing)?;
//!
//! // The transport delivers the bytes in whatever pieces it likes.
//! let wire = outgoing.freeze();
//! let pieces = [&wire[..3], &wire[3..11], &wire[11..]];
//!
//! // The receiving side appends each piece and takes off every whole frame.
//! let mut decoder = Decoder::new(Limits::default())?;
//! let mut incoming = BytesMut::new();
//! let mut answers = BytesMut::new();
//! for piece in pieces {
//!     incoming.extend_from_slice(piece);
//!     loop {
//!         match decoder.decode(&mut incoming) {
//!             Ok(Some(Frame::Cmd(c))) => {
//!                 assert_eq!(&c.data[..], b"hello");
//!                 let done = SendResult { id: c.id, code: ErrorCode::NOERR };
//!                 Frame::Result(done).encode(&mut answers)?;
//!             }
//!             Ok(Some(Frame::Ping(p))) => {
//!                 Frame::Pong(p).encode(&mut answers)?;
//!             }
//!             Ok(Some(other)) => println!("{other:?}"),
//!             Ok(None) => break, // need more bytes
//!             Err(e) => {
//!                 // Tell the peer why, then close the transport.
//!                 let close = peermsg::wire::Close { code: e.code(), reason: e.to_string().into() };
//!                 Frame::Close(close).encode(&mut answers)?;
//!                 break;
//!             }
//!         }
//!     }
//! }
//! assert_eq!(answers.len(), 4 + 3); // RESULT and PONG, ready to write back
//! # Ok(())
//! # }
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod client;
mod digest;
mod error;
mod time;
pub mod wire;

pub use error::{ActionError, ErrorCode, SendError};

/// The README's code, compiled and run as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
pub use time::Instant;
