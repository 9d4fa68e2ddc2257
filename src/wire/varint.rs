//! Variable-length integers: the QUIC encoding (RFC 9000, section 16), canonical form only.
//!
//! The two high bits of the first byte give the length (1, 2, 4 or 8 bytes); the rest, big
//! endian, is the value, up to [`VARINT_MAX`]. The length is known from the first byte, so a
//! streaming reader knows at once how many bytes it still needs. A value must use the
//! shortest form that holds it: every value has exactly one encoding, so a frame has exactly
//! one byte representation and a longer form is an error ([`DecodeError::NonCanonicalVarint`]).

use bytes::BufMut;
use nom::{Err, IResult, Needed};

use super::decode::{DecodeError, FieldError};

/// The largest value a varint holds: 2^62 - 1.
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// The number of bytes `value` takes, or `None` if it is over [`VARINT_MAX`].
#[inline]
pub const fn varint_len(value: u64) -> Option<usize> {
    if value < 1 << 6 {
        Some(1)
    } else if value < 1 << 14 {
        Some(2)
    } else if value < 1 << 30 {
        Some(4)
    } else if value <= VARINT_MAX {
        Some(8)
    } else {
        None
    }
}

/// Writes `value`, which the caller has checked with [`varint_len`].
#[inline]
pub(crate) fn put_varint<B: BufMut>(dst: &mut B, value: u64) {
    match varint_len(value) {
        Some(1) => dst.put_u8(value as u8),
        Some(2) => dst.put_u16(0x4000 | value as u16),
        Some(4) => dst.put_u32(0x8000_0000 | value as u32),
        _ => dst.put_u64(0xc000_0000_0000_0000 | value),
    }
}

/// Reads one varint. Short input gives `Err::Incomplete` with the exact number of bytes
/// missing, so the same parser serves the streaming header and the complete body.
#[inline]
pub(crate) fn varint(input: &[u8]) -> IResult<&[u8], u64, FieldError> {
    let Some(&first) = input.first() else {
        return Err(Err::Incomplete(Needed::new(1)));
    };
    let len = 1usize << (first >> 6);
    let Some(bytes) = input.get(..len) else {
        return Err(Err::Incomplete(Needed::new(len - input.len())));
    };
    let mut value = u64::from(first & 0x3f);
    for &b in &bytes[1..] {
        value = (value << 8) | u64::from(b);
    }
    if len > 1 && varint_len(value) != Some(len) {
        return Err(Err::Failure(FieldError::Invalid(
            DecodeError::NonCanonicalVarint { value, len },
        )));
    }
    Ok((&input[len..], value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn encode(value: u64) -> Vec<u8> {
        let mut v = Vec::new();
        put_varint(&mut v, value);
        v
    }

    #[test]
    fn rfc9000_examples() {
        // RFC 9000, appendix A.1.
        assert_eq!(
            varint(&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c]).map(|r| r.1),
            Ok(151_288_809_941_952_652)
        );
        assert_eq!(
            varint(&[0x9d, 0x7f, 0x3e, 0x7d]).map(|r| r.1),
            Ok(494_878_333)
        );
        assert_eq!(varint(&[0x7b, 0xbd]).map(|r| r.1), Ok(15_293));
        assert_eq!(varint(&[0x25]).map(|r| r.1), Ok(37));
        assert_eq!(encode(15_293), [0x7b, 0xbd]);
    }

    #[test]
    fn every_length_boundary_round_trips() {
        for v in [
            0,
            63,
            64,
            16_383,
            16_384,
            (1 << 30) - 1,
            1 << 30,
            VARINT_MAX,
        ] {
            let bytes = encode(v);
            assert_eq!(bytes.len(), varint_len(v).unwrap_or(0));
            assert_eq!(varint(&bytes), Ok((&[][..], v)));
        }
        assert_eq!(varint_len(VARINT_MAX + 1), None);
    }

    #[test]
    fn short_input_says_how_much_is_missing() {
        assert_eq!(varint(&[]), Err(Err::Incomplete(Needed::new(1))));
        assert_eq!(varint(&[0xc0, 0, 0]), Err(Err::Incomplete(Needed::new(5))));
    }

    #[test]
    fn longer_form_than_needed_is_refused() {
        // 37 in two bytes (RFC 9000 says it may be; peermsg requires the short form).
        assert_eq!(
            varint(&[0x40, 0x25]),
            Err(Err::Failure(FieldError::Invalid(
                DecodeError::NonCanonicalVarint { value: 37, len: 2 }
            )))
        );
    }
}
