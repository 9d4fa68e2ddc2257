//! peermsg's core on a microcontroller: a `no_std` main loop drives two clients (say, a
//! sensor and its gateway on a direct link) over a byte-at-a-time transport, as a UART
//! driver would feed them, with a fixed-size heap. The sensor sends a command and a small
//! file; the gateway checks and confirms them.
//!
//! Built for `thumbv7em-none-eabihf` (a Cortex-M4):
//! `cargo build --release --target thumbv7em-none-eabihf` in this folder. The same loop runs
//! on the host to check it: `cargo run` here.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::vec::Vec;
use bytes::{Bytes, BytesMut};
use peermsg::client::{Client, ClientConfig, Event, Output, SendId};
use peermsg::{ErrorCode, Instant};

/// A transport that moves one byte at a time, as a UART does.
pub trait Transport {
    /// The next received byte, if one is waiting.
    fn read_byte(&mut self) -> Option<u8>;
    /// Queues a byte to send; `false` if the transmit buffer is full (try again later).
    fn write_byte(&mut self, byte: u8) -> bool;
}

/// A fixed-size byte ring: one direction of a serial line.
pub struct Ring<const N: usize> {
    bytes: [u8; N],
    start: usize,
    len: usize,
}

impl<const N: usize> Default for Ring<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Ring<N> {
    pub const fn new() -> Self {
        Ring {
            bytes: [0; N],
            start: 0,
            len: 0,
        }
    }

    fn push(&mut self, byte: u8) -> bool {
        if self.len == N {
            return false;
        }
        self.bytes[(self.start + self.len) % N] = byte;
        self.len += 1;
        true
    }

    fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let byte = self.bytes[self.start];
        self.start = (self.start + 1) % N;
        self.len -= 1;
        Some(byte)
    }
}

/// One end of a serial line made of two rings.
pub struct Uart<'a, const N: usize> {
    rx: &'a mut Ring<N>,
    tx: &'a mut Ring<N>,
}

impl<const N: usize> Transport for Uart<'_, N> {
    fn read_byte(&mut self) -> Option<u8> {
        self.rx.pop()
    }
    fn write_byte(&mut self, byte: u8) -> bool {
        self.tx.push(byte)
    }
}

/// A client and what its side of the application holds.
struct Node {
    client: Client,
    /// Bytes the client wrote that the transport has not taken yet.
    pending: BytesMut,
    /// The deadline the client last asked for.
    wake: Instant,
}

impl Node {
    fn new(user: &str, now: Instant) -> Self {
        let mut client = Client::new(ClientConfig::small(), now).expect("valid preset");
        client.login(user, b"").expect("valid user id");
        Node {
            client,
            pending: BytesMut::new(),
            wake: now,
        }
    }

    /// One pass of the drive loop: bytes in (up to 64 at a time, as a UART driver hands
    /// them on), the deadline if it passed, then `poll_output` until it says to wait; what
    /// the client wrote goes out as the transport takes it. `on_event` is the application.
    fn poll(
        &mut self,
        uart: &mut impl Transport,
        now: Instant,
        mut on_event: impl FnMut(&mut Client, Event),
    ) {
        let mut chunk = [0u8; 64];
        let mut n = 0;
        while let Some(byte) = uart.read_byte() {
            chunk[n] = byte;
            n += 1;
            if n == chunk.len() {
                self.client.handle_input(now, &chunk);
                n = 0;
            }
        }
        if n > 0 {
            self.client.handle_input(now, &chunk[..n]);
        }
        if now >= self.wake {
            self.client.handle_timeout(now);
        }
        loop {
            match self.client.poll_output(&mut self.pending) {
                Output::Transmit(_) => {}
                Output::Event(event) => on_event(&mut self.client, event),
                Output::Timeout(at) => {
                    self.wake = at;
                    break;
                }
                _ => break,
            }
        }
        let mut sent = 0;
        for &byte in self.pending.iter() {
            if !uart.write_byte(byte) {
                break;
            }
            sent += 1;
        }
        let _ = self.pending.split_to(sent);
    }
}

/// The byte at `offset` of the sensor's file.
fn byte_at(offset: u64) -> u8 {
    (offset as u8).wrapping_mul(7).wrapping_add(3)
}

/// What the run ended with.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub cmd: Option<ErrorCode>,
    pub file: Option<ErrorCode>,
    pub gateway_cmds: u32,
    pub gateway_file_bytes: u64,
}

/// The sensor sends the gateway a command and a 3,000-byte file over a serial line of
/// two 128-byte rings; the loop runs until both sends have their results (or a bound of
/// passes). Time is a tick per pass (a millisecond, as a SysTick would count).
pub fn run() -> Outcome {
    const FILE_SIZE: u64 = 3000;
    let (mut a_to_b, mut b_to_a) = (Ring::<128>::new(), Ring::<128>::new());
    let mut now = Instant::ZERO;
    let mut sensor = Node::new("sensor", now);
    let mut gateway = Node::new("gateway", now);
    let (mut cmd, mut file): (Option<SendId>, Option<SendId>) = (None, None);
    let mut outcome = Outcome {
        cmd: None,
        file: None,
        gateway_cmds: 0,
        gateway_file_bytes: 0,
    };
    for _tick in 0..200_000u32 {
        let mut uart = Uart {
            rx: &mut b_to_a,
            tx: &mut a_to_b,
        };
        sensor.poll(&mut uart, now, |client, event| match event {
            Event::LoginResult { code } if code.is_success() && cmd.is_none() => {
                let reading = Bytes::from_static(b"temperature=21.5");
                cmd = client.send_cmd(now, "gateway", reading, 1).ok();
                file = client
                    .send_file(now, "gateway", "log.bin", FILE_SIZE, 2)
                    .ok();
            }
            Event::FileRead { id, offset, len } => {
                let piece: Vec<u8> = (offset..offset + len).map(byte_at).collect();
                let _ = client.supply_file_data(id, offset, Bytes::from(piece));
            }
            Event::SendResult { id, code, .. } if Some(id) == cmd => outcome.cmd = Some(code),
            Event::SendResult { id, code, .. } if Some(id) == file => outcome.file = Some(code),
            _ => {}
        });
        let mut uart = Uart {
            rx: &mut a_to_b,
            tx: &mut b_to_a,
        };
        gateway.poll(&mut uart, now, |client, event| match event {
            Event::CmdReceived { .. } => outcome.gateway_cmds += 1,
            // Only bytes that are what the sensor sent count.
            Event::FileData { offset, data, .. }
                if data.iter().zip(offset..).all(|(b, o)| *b == byte_at(o)) =>
            {
                outcome.gateway_file_bytes += data.len() as u64;
            }
            // Kept (here: checked as it came), so confirmed.
            Event::FileReceived { id, .. } => {
                let _ = client.accept_delivery(id);
            }
            _ => {}
        });
        if outcome.cmd.is_some() && outcome.file.is_some() {
            break;
        }
        now += core::time::Duration::from_millis(1);
    }
    outcome
}

#[cfg(target_os = "none")]
mod device {
    use core::mem::MaybeUninit;
    use embedded_alloc::LlffHeap as Heap;
    use panic_halt as _;

    /// The heap: 32 KiB of the part's 128 KiB of RAM.
    const HEAP_SIZE: usize = 32 * 1024;

    #[global_allocator]
    static HEAP: Heap = Heap::empty();

    #[cortex_m_rt::entry]
    fn main() -> ! {
        static mut HEAP_MEM: [MaybeUninit<u8>; HEAP_SIZE] = [MaybeUninit::uninit(); HEAP_SIZE];
        // SAFETY: the entry runs once, before anything allocates, and this is the only
        // reference to HEAP_MEM (cortex-m-rt makes `static mut` in `entry` a unique &mut).
        unsafe { HEAP.init(HEAP_MEM.as_mut_ptr() as usize, HEAP_SIZE) }
        let outcome = super::run();
        let delivered = outcome.cmd == Some(peermsg::ErrorCode::NOERR)
            && outcome.file == Some(peermsg::ErrorCode::NOERR);
        loop {
            // A real device would report `delivered` (a LED, a log line); here it waits.
            core::hint::black_box(delivered);
            cortex_m::asm::wfi();
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    let outcome = run();
    println!("{outcome:?}");
    assert_eq!(
        outcome.cmd,
        Some(ErrorCode::NOERR),
        "the command was delivered"
    );
    assert_eq!(
        outcome.file,
        Some(ErrorCode::NOERR),
        "the file was delivered"
    );
    assert_eq!(outcome.gateway_cmds, 1);
    assert_eq!(outcome.gateway_file_bytes, 3000, "every byte, checked");
}
