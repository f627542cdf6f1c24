//! Fixed-width base62 for API key bodies and checksums.
//!
//! Base62 keeps keys to `[0-9A-Za-z]`, so they survive double-click selection, URLs, shells
//! and HTTP headers without escaping. The alphabet is in ASCII order, so for equal widths the
//! lexicographic order of encodings is the numeric order of the values.
//!
//! Both directions work on caller-provided buffers so that secret material is never copied
//! into heap allocations we cannot zeroize. Schoolbook multiply-and-add is quadratic, which is
//! irrelevant at 32 bytes and keeps the code obviously correct.

/// Digit `i` is `ALPHABET[i]`.
pub(crate) const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Base62Error {
    /// The byte at this offset of the input is not in [`ALPHABET`].
    InvalidDigit { position: usize },
    /// The value does not fit in the output buffer.
    Overflow,
}

/// The value of a base62 digit, without a 256-entry table: the three ranges are contiguous.
pub(crate) const fn digit_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'Z' => Some(b - b'A' + 10),
        b'a'..=b'z' => Some(b - b'a' + 36),
        _ => None,
    }
}

pub(crate) const fn is_digit(b: u8) -> bool {
    digit_value(b).is_some()
}

/// Writes the big-endian unsigned integer `bytes_be` as exactly `out.len()` base62 digits,
/// left-padded with `'0'`.
///
/// On `Err(Overflow)` the contents of `out` are unspecified (and must be discarded).
pub(crate) fn encode_into(bytes_be: &[u8], out: &mut [u8]) -> Result<(), Base62Error> {
    // `out` holds digit values (0..62) during the computation, least significant digit last.
    out.fill(0);
    for &byte in bytes_be {
        // out = out * 256 + byte
        let mut carry = u32::from(byte);
        for digit in out.iter_mut().rev() {
            let v = u32::from(*digit) * 256 + carry;
            // v % 62 < 62, so the narrowing is lossless.
            *digit = (v % 62) as u8;
            carry = v / 62;
        }
        if carry != 0 {
            return Err(Base62Error::Overflow);
        }
    }
    for digit in out.iter_mut() {
        *digit = ALPHABET[usize::from(*digit)];
    }
    Ok(())
}

/// [`encode_into`] for non-secret values, for tests only (no shipped code needs it).
///
/// Returns `None` if the value needs more than `width` digits.
#[cfg(test)]
pub(crate) fn encode_fixed(bytes_be: &[u8], width: usize) -> Option<String> {
    let mut out = vec![0u8; width];
    encode_into(bytes_be, &mut out).ok()?;
    // Every byte written by `encode_into` comes from ALPHABET, which is ASCII.
    Some(out.into_iter().map(char::from).collect())
}

/// Parses base62 `digits` (any number of them, leading zeros allowed) into the big-endian
/// unsigned integer `out`, using all of `out.len()` bytes.
///
/// Rejects values that do not fit in `out.len()` bytes, rather than truncating them, so that
/// distinct strings of the same width never decode to the same bytes.
/// On error the contents of `out` are unspecified (and must be discarded).
pub(crate) fn decode_into(digits: &[u8], out: &mut [u8]) -> Result<(), Base62Error> {
    out.fill(0);
    for (position, &b) in digits.iter().enumerate() {
        let Some(value) = digit_value(b) else {
            return Err(Base62Error::InvalidDigit { position });
        };
        // out = out * 62 + value
        let mut carry = u32::from(value);
        for byte in out.iter_mut().rev() {
            let v = u32::from(*byte) * 62 + carry;
            // Masked to the low 8 bits, so the narrowing is lossless.
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        if carry != 0 {
            return Err(Base62Error::Overflow);
        }
    }
    Ok(())
}

/// [`decode_into`] for non-secret values, for tests only (no shipped code needs it).
#[cfg(test)]
pub(crate) fn decode_fixed(s: &str, out_len: usize) -> Result<Vec<u8>, Base62Error> {
    let mut out = vec![0u8; out_len];
    decode_into(s.as_bytes(), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2^256 - 1 in 43 digits: the largest body a key can carry.
    const MAX_32_BYTES: &str = "yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1";

    #[test]
    fn alphabet_is_ascii_ordered_and_matches_digit_value() {
        assert!(ALPHABET.windows(2).all(|w| w[0] < w[1]));
        for (i, &c) in ALPHABET.iter().enumerate() {
            assert_eq!(digit_value(c), Some(i as u8));
        }
        let valid = (0u8..=255).filter(|&b| is_digit(b)).count();
        assert_eq!(valid, 62);
    }

    #[test]
    fn known_values() {
        assert_eq!(encode_fixed(&[0], 1).as_deref(), Some("0"));
        assert_eq!(encode_fixed(&[61], 1).as_deref(), Some("z"));
        assert_eq!(encode_fixed(&[62], 2).as_deref(), Some("10"));
        assert_eq!(encode_fixed(&[1, 0], 3).as_deref(), Some("048")); // 256 = 4*62 + 8
        assert_eq!(decode_fixed("048", 2), Ok(vec![1, 0]));
        assert_eq!(decode_fixed("z", 1), Ok(vec![61]));
    }

    #[test]
    fn zero_and_empty() {
        assert_eq!(encode_fixed(&[0; 32], 43), Some("0".repeat(43)));
        assert_eq!(encode_fixed(&[], 3).as_deref(), Some("000"));
        assert_eq!(encode_fixed(&[], 0).as_deref(), Some(""));
        assert_eq!(decode_fixed(&"0".repeat(43), 32), Ok(vec![0; 32]));
        assert_eq!(decode_fixed("", 4), Ok(vec![0; 4]));
        // Zero fits in zero bytes and zero digits.
        assert_eq!(encode_fixed(&[0, 0], 0).as_deref(), Some(""));
        assert_eq!(decode_fixed("000", 0), Ok(vec![]));
    }

    #[test]
    fn max_values() {
        let max = encode_fixed(&[0xff; 32], 43);
        assert_eq!(max.as_deref(), Some(MAX_32_BYTES));
        assert_eq!(decode_fixed(MAX_32_BYTES, 32), Ok(vec![0xff; 32]));
        // u32::MAX needs 6 digits, so every CRC32 fits the key's check field.
        assert_eq!(encode_fixed(&u32::MAX.to_be_bytes(), 6).as_deref(), Some("4gfFC3"));
        assert_eq!(encode_fixed(&u32::MAX.to_be_bytes(), 5), None);
        assert_eq!(decode_fixed("zzzzzz", 4), Err(Base62Error::Overflow));
        assert_eq!(decode_fixed("4gfFC4", 4), Err(Base62Error::Overflow));
    }

    #[test]
    fn overflow_on_encode() {
        assert_eq!(encode_fixed(&[62], 1), None);
        assert_eq!(encode_fixed(&[1], 0), None);
        assert_eq!(encode_fixed(&[0xff; 33], 43), None);
        // 62^43 > 2^256, so all 43-digit strings are not valid 32-byte values ...
        assert_eq!(decode_fixed(&"z".repeat(43), 32), Err(Base62Error::Overflow));
        // ... and the first one past the maximum is rejected.
        assert_eq!(decode_fixed("yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp2", 32), Err(Base62Error::Overflow));
    }

    #[test]
    fn non_canonical_inputs() {
        // Leading zeros are padding, not value: width is the caller's concern.
        assert_eq!(decode_fixed("00000000000000000000z", 1), Ok(vec![61]));
        assert_eq!(decode_fixed("", 1), decode_fixed("0", 1));
        // A value that overflows and then would be "brought back" is still rejected.
        assert_eq!(decode_fixed("100", 1), Err(Base62Error::Overflow)); // 3844
        assert_eq!(decode_fixed("47", 1), Ok(vec![255])); // 4*62 + 7
        assert_eq!(decode_fixed("48", 1), Err(Base62Error::Overflow));
    }

    #[test]
    fn invalid_digits_report_byte_offset() {
        assert_eq!(decode_fixed("ab-c", 4), Err(Base62Error::InvalidDigit { position: 2 }));
        assert_eq!(decode_fixed(" ", 4), Err(Base62Error::InvalidDigit { position: 0 }));
        assert_eq!(decode_fixed("aé", 4), Err(Base62Error::InvalidDigit { position: 1 }));
        assert_eq!(decode_fixed("a+", 4), Err(Base62Error::InvalidDigit { position: 1 }));
    }

    proptest! {
        #[test]
        fn round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            // Each byte needs fewer than two base62 digits.
            let encoded = encode_fixed(&bytes, bytes.len() * 2).unwrap();
            prop_assert_eq!(encoded.len(), bytes.len() * 2);
            prop_assert!(encoded.bytes().all(is_digit));
            prop_assert_eq!(decode_fixed(&encoded, bytes.len()), Ok(bytes));
        }

        #[test]
        fn every_32_bytes_fit_43_digits(bytes in any::<[u8; 32]>()) {
            let encoded = encode_fixed(&bytes, 43).unwrap();
            prop_assert_eq!(decode_fixed(&encoded, 32), Ok(bytes.to_vec()));
        }

        #[test]
        fn order_is_preserved(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            let (ea, eb) = (encode_fixed(&a, 43).unwrap(), encode_fixed(&b, 43).unwrap());
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
        }

        #[test]
        fn decode_never_panics(s in "\\PC{0,60}", len in 0usize..40) {
            let _ = decode_fixed(&s, len);
        }
    }
}
