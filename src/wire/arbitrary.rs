//! `Arbitrary` frames for fuzzing and property tests: every frame made here is valid under
//! `Limits::default()`, so it must survive an encode and decode unchanged.

use alloc::boxed::Box;
use alloc::string::String;
use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::Bytes;

use super::frame::*;
use super::limits::{Limits, MAX_FRAME_SIZE, MIN_FRAME_SIZE};
use super::text::{Text, UserId};
use super::varint::VARINT_MAX;

/// Bytes of a frame body taken by everything but the payload, at most: two varints and a
/// user id of the default limit with its length, and a command identity.
const OVERHEAD: u64 = 8 + 8 + 8 + 2 + 128 + 1 + CmdOnce::LEN;

/// A varint value, spread evenly over the four encoded lengths so every length is tried.
fn value(u: &mut Unstructured<'_>) -> Result<u64> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => u.int_in_range(0..=63)?,
        1 => u.int_in_range(64..=16_383)?,
        2 => u.int_in_range(16_384..=(1 << 30) - 1)?,
        _ => u.int_in_range(1 << 30..=VARINT_MAX)?,
    })
}

fn value_at_most(u: &mut Unstructured<'_>, max: u64) -> Result<u64> {
    Ok(value(u)?.min(max))
}

fn bytes(u: &mut Unstructured<'_>, max: u64) -> Result<Bytes> {
    let len = u.int_in_range(0..=max)?.min(u.len() as u64);
    Ok(Bytes::copy_from_slice(u.bytes(len as usize)?))
}

fn text(u: &mut Unstructured<'_>, max: u64, keep: fn(char) -> bool) -> Result<String> {
    let mut out = String::new();
    for c in <&str>::arbitrary(u)?.chars().filter(|&c| keep(c)) {
        if (out.len() + c.len_utf8()) as u64 > max {
            break;
        }
        out.push(c);
    }
    Ok(out)
}

fn user_id(u: &mut Unstructured<'_>) -> Result<UserId> {
    let s = text(u, Limits::default().max_user_id_len, |c| !c.is_control())?;
    let s = if s.is_empty() { String::from("u") } else { s };
    UserId::try_from(s).map_err(|_| arbitrary::Error::IncorrectFormat)
}

fn code(u: &mut Unstructured<'_>) -> Result<crate::ErrorCode> {
    crate::ErrorCode::arbitrary(u)
}

impl<'a> Arbitrary<'a> for Capabilities {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Capabilities(value(u)?))
    }
}

impl<'a> Arbitrary<'a> for Frame {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let limits = Limits::default();
        let max_payload = limits.max_frame_size - OVERHEAD;
        let ty = *u.choose(FrameType::ALL)?;
        Ok(match ty {
            FrameType::Hello => Frame::Hello(Hello {
                version: value(u)?,
                capabilities: Capabilities::arbitrary(u)?,
                role: Role::arbitrary(u)?,
                max_frame_size: u.int_in_range(MIN_FRAME_SIZE..=MAX_FRAME_SIZE)?,
                max_cmd_size: value(u)?,
                max_buffer_size: value(u)?,
                max_file_size: value(u)?,
                max_cmds_in_flight: value(u)?,
                max_transfers: value(u)?,
                transfer_window: value(u)?,
                conn_window: value(u)?,
                identity: Option::<IdentityKey>::arbitrary(u)?,
            }),
            FrameType::Login => Frame::Login(Login {
                user: user_id(u)?,
                token: bytes(u, limits.max_token_len)?,
            }),
            FrameType::LoginResult => Frame::LoginResult(LoginResult { code: code(u)? }),
            FrameType::Ping => Frame::Ping(Ping { nonce: value(u)? }),
            FrameType::Pong => Frame::Pong(Ping { nonce: value(u)? }),
            FrameType::Close => Frame::Close(Close {
                code: code(u)?,
                reason: Text::from(text(u, limits.max_reason_len, |_| true)?),
            }),
            FrameType::ConnCredit => Frame::ConnCredit(ConnCredit {
                max_data: value(u)?,
            }),
            FrameType::Cmd => {
                let total_len = u.int_in_range(0..=limits.max_cmd_size)?;
                let data = bytes(u, total_len.min(max_payload))?;
                Frame::Cmd(Cmd {
                    id: value(u)?,
                    peer: user_id(u)?,
                    once: Option::<CmdOnce>::arbitrary(u)?,
                    total_len,
                    data,
                })
            }
            FrameType::CmdCont => {
                let data = bytes(u, max_payload)?;
                let offset = u.int_in_range(0..=limits.max_cmd_size - data.len() as u64)?;
                Frame::CmdCont(CmdCont {
                    id: value(u)?,
                    offset,
                    data,
                })
            }
            FrameType::Open => {
                let kind = TransferKind::arbitrary(u)?;
                let (size, name) = match kind {
                    TransferKind::Buffer => {
                        (value_at_most(u, limits.max_buffer_size)?, Text::new())
                    }
                    TransferKind::File => (
                        value_at_most(u, limits.max_file_size)?,
                        Text::from(text(u, limits.max_file_name_len, |_| true)?),
                    ),
                };
                Frame::Open(Open {
                    id: value(u)?,
                    kind,
                    peer: user_id(u)?,
                    size,
                    name,
                    resume_key: Option::<ResumeKey>::arbitrary(u)?,
                    seal: match bool::arbitrary(u)? {
                        true => Some(bytes(u, limits.max_file_name_len)?)
                            .filter(|s| !s.is_empty())
                            .map(Box::new),
                        false => None,
                    },
                })
            }
            FrameType::Data => {
                let payload = bytes(u, max_payload)?;
                let offset = value_at_most(u, limits.max_transfer_size() - payload.len() as u64)?;
                Frame::Data(Data {
                    id: value(u)?,
                    offset,
                    payload,
                })
            }
            FrameType::End => Frame::End(End {
                id: value(u)?,
                size: value_at_most(u, limits.max_transfer_size())?,
                digest: Digest::arbitrary(u)?,
            }),
            FrameType::Credit => Frame::Credit(Credit {
                id: value(u)?,
                max_offset: value(u)?,
            }),
            FrameType::Cancel => Frame::Cancel(Cancel {
                id: value(u)?,
                code: code(u)?,
            }),
            FrameType::Result => Frame::Result(MessageResult {
                id: value(u)?,
                code: code(u)?,
            }),
            FrameType::ResumeFrom => Frame::ResumeFrom(ResumeFrom {
                id: value(u)?,
                offset: value_at_most(u, limits.max_transfer_size())?,
                digest: Digest::arbitrary(u)?,
            }),
            FrameType::KeyQuery => Frame::KeyQuery(KeyQuery { user: user_id(u)? }),
            FrameType::Key => Frame::Key(Key {
                user: user_id(u)?,
                key: Option::<IdentityKey>::arbitrary(u)?,
            }),
        })
    }
}
