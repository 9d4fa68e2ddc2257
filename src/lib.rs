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
//! - [`client`]: the user endpoint. Commands, buffers and files out, with one result per
//!   send, progress and cancel; the same in, with offers, reject and receive progress;
//!   credit-based flow control, fair interleaving, digests, keepalive and timeouts.
//! - [`continuity`]: one user across connections. A [`continuity::Continuity`] holds a
//!   `Client` per connection and decides what survives a lost one: commands sent again
//!   and delivered once, buffers and files going on from what their receivers hold, when
//!   to dial again and when a waiting send is given up. A runtime that reconnects drives
//!   it exactly as it would a `Client`, and dials when
//!   [`Continuity::poll_redial`](continuity::Continuity::poll_redial) says.
//! - [`relay`]: the server between clients, over many connections: login as the
//!   application's decision, routing by user id with the source stamped, ids mapped,
//!   credit passed end to end, and a misbehaving client closed without touching anyone
//!   else's messages. Driven by the same contract, per connection.
//! - [`wire`]: the frames of the protocol, their encoder and a streaming decoder that
//!   accepts bytes split anywhere, checks every length before it buffers anything, and
//!   hands payloads out as slices of the input. `docs/PROTOCOL.md` is the byte-level
//!   specification.
//! - [`ErrorCode`]: result codes with wire-stable numbers (the SDK's where one fits).
//! - [`Instant`]: time as the caller gives it.
//!
//! ## The drive contract
//!
//! A [`client::Client`] is driven by four kinds of input and one output:
//!
//! - **Inputs**: bytes exactly as the transport delivered them, split anywhere
//!   ([`Client::handle_input`](client::Client::handle_input), which copies them, or
//!   [`Client::handle_input_buf`](client::Client::handle_input_buf), which takes the
//!   runtime's `BytesMut` and hands payloads on as slices of it); the passing of time
//!   ([`Client::handle_timeout`](client::Client::handle_timeout)); the transport closing
//!   ([`Client::handle_disconnect`](client::Client::handle_disconnect)); and user commands
//!   (`login`, `send_cmd`, `send_buffer`, `send_file`, `supply_file_data`, `cancel_send`,
//!   `reject`, `accept_delivery`, `close`).
//! - **Output**: [`Client::poll_output`](client::Client::poll_output) gives, in turn, bytes
//!   to write (appended to a sink the caller owns: a `BytesMut`, or a [`wire::Transmit`]
//!   whose chunks share the payloads, for vectored writes), an event, or the time to wait
//!   for ([`client::Output`]).
//!
//! **The one invariant**: after any input, call `poll_output` until it says
//! [`Output::Timeout`](client::Output::Timeout); then wait for bytes or for that time,
//! whichever comes first. Nothing is left pending when it says so, so no order of calls is
//! wrong. Time is always an argument; nothing reads a clock. No input, however malformed,
//! makes the client panic: a peer that breaks the protocol is sent a `CLOSE` with the reason
//! and every pending send fails. (`poll_output` is made of `poll_transmit`, `poll_event`
//! and `poll_timeout`, public for runtimes that take events only when they have room for
//! them, as the tokio adapter does.) A [`relay::Relay`] is driven the same way, by
//! [`Relay::poll_output`](relay::Relay::poll_output).
//!
//! ## Example: two users, in memory
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use peermsg::client::{Client, ClientConfig, Event, Output};
//! use peermsg::{ErrorCode, Instant};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = Instant::ZERO;
//! let mut alice = Client::new(ClientConfig::default(), now)?;
//! let mut bob = Client::new(ClientConfig::default(), now)?;
//! alice.login("alice", b"token")?;
//! bob.login("bob", b"token")?;
//! let file = Bytes::from(vec![42u8; 1_000_000]);
//!
//! let mut sends = Vec::new();
//! let mut results = Vec::new();
//! let mut bob_got = Vec::new();
//! // Each side's output is the other's input (a real transport would sit between).
//! let (mut to_bob, mut to_alice) = (BytesMut::new(), BytesMut::new());
//! loop {
//!     // Alice: drive until she waits.
//!     while let Some(output) = ready(alice.poll_output(&mut to_bob)) {
//!         match output {
//!             // Logged in: send a command and a file.
//!             Output::Event(Event::LoginResult { code }) if code.is_success() => {
//!                 sends.push(alice.send_cmd(now, "bob", Bytes::from_static(b"hi"), 1)?);
//!                 sends.push(alice.send_file(now, "bob", "a.bin", file.len() as u64, 2)?);
//!             }
//!             // The file source: the client asks for bytes by offset.
//!             Output::Event(Event::FileRead { id, offset, len }) => {
//!                 let piece = file.slice(offset as usize..(offset + len) as usize);
//!                 alice.supply_file_data(id, offset, piece)?;
//!             }
//!             Output::Event(Event::SendResult { id, code, .. }) => results.push((id, code)),
//!             _ => {}
//!         }
//!     }
//!     // Bob: the same.
//!     while let Some(output) = ready(bob.poll_output(&mut to_alice)) {
//!         match output {
//!             Output::Event(Event::CmdReceived { from, data, .. }) => {
//!                 bob_got.push(format!("{from}: {data:?}"))
//!             }
//!             // Bob keeps the file (here: nothing to write), then confirms it.
//!             Output::Event(Event::FileReceived { id, from, size }) => {
//!                 bob.accept_delivery(id)?;
//!                 bob_got.push(format!("{from}: {size} bytes"));
//!             }
//!             _ => {}
//!         }
//!     }
//!     // The "transport": both directions at once; nothing on the wire means all is done.
//!     if to_bob.is_empty() && to_alice.is_empty() {
//!         break;
//!     }
//!     bob.handle_input(now, &to_bob.split());
//!     alice.handle_input(now, &to_alice.split());
//! }
//! assert_eq!(results, [(sends[0], ErrorCode::NOERR), (sends[1], ErrorCode::NOERR)]);
//! assert_eq!(bob_got, ["alice: b\"hi\"", "alice: 1000000 bytes"]);
//!
//! /// Anything but "wait now".
//! fn ready(output: Output) -> Option<Output> {
//!     match output {
//!         Output::Timeout(_) | Output::Closed => None,
//!         other => Some(other),
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! `examples/blocking_tcp.rs` runs the same loop over a real TCP connection with blocking
//! sockets and std threads, waiting on `poll_timeout`.
//!
//! ## The wire layer alone
//!
//! Under the client, a connection is a stream of frames: append what the transport
//! delivered to one `BytesMut`, take frames off it until the decoder says it needs more,
//! and encode outgoing frames into a buffer the caller writes out.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use peermsg::wire::{Cmd, Decoder, Frame, Limits, UserId};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut wire = BytesMut::new();
//! let cmd = Frame::Cmd(Cmd { id: 0, peer: UserId::new("bob")?, once: None, total_len: 5, data: Bytes::from_static(b"hello") });
//! cmd.encode(&mut wire)?;
//! let mut decoder = Decoder::new(Limits::default())?;
//! assert_eq!(decoder.decode(&mut wire)?, Some(cmd));
//! # Ok(())
//! # }
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// No panic reachable from any input: the library code has no unwrap, expect or panic.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod client;
mod conn;
pub mod continuity;
mod digest;
mod error;
mod evict;
pub mod relay;
pub mod seal;
mod seq_map;
mod time;
pub mod wire;

pub use conn::{CloseReason, Violation};
pub use error::{ActionError, ErrorCode, SendError};

/// The README's code, compiled and run as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
pub use time::Instant;
