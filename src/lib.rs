#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! peermsg
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod error;
mod time;
pub mod wire;

pub use error::ErrorCode;
pub use time::Instant;
