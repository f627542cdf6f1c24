//! Stripe webhook signatures: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`, where each
//! `v1` is HMAC-SHA256 over `"{t}.{raw body}"` with an endpoint secret. Other schemes (`v0`)
//! are ignored. Several secrets may be configured while one is rotated out.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Stripe's default tolerance for the signed timestamp.
pub const DEFAULT_TOLERANCE_S: i64 = 300;
/// The most `v1` values a header may carry. Stripe sends one per endpoint secret (two while a
/// secret is rolled); more is not Stripe, and each costs a comparison.
pub const MAX_V1: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    #[error("no v1 signature matches a configured secret")]
    NoMatch,
    #[error("the signature's timestamp is outside the {0} s tolerance")]
    Stale(i64),
}

impl SignatureError {
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "missing_signature",
            Self::Malformed => "malformed_signature",
            Self::NoMatch => "invalid_signature",
            Self::Stale(_) => "stale_signature",
        }
    }
}

/// A parsed `Stripe-Signature` header: built only by [`StripeSignature::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeSignature {
    timestamp: i64,
    v1: Vec<[u8; 32]>,
}

impl StripeSignature {
    pub fn parse(header: &str) -> Result<Self, SignatureError> {
        let mut timestamp = None;
        let mut v1 = vec![];
        for part in header.split(',') {
            let (k, v) = part.trim().split_once('=').ok_or(SignatureError::Malformed)?;
            match k {
                "t" => timestamp = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
                "v1" => {
                    if v1.len() == MAX_V1 {
                        return Err(SignatureError::Malformed);
                    }
                    let mut sig = [0u8; 32];
                    // A v1 that is not 64 hex digits can never match: skip it, as Stripe's
                    // libraries do, rather than reject the header.
                    if hex::decode_to_slice(v, &mut sig).is_ok() {
                        v1.push(sig);
                    }
                }
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
        if v1.is_empty() {
            return Err(SignatureError::NoMatch);
        }
        Ok(Self { timestamp, v1 })
    }

    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }
}

/// Checks `header` against `body` with any of `secrets`, and the timestamp against `now`.
/// One HMAC per secret, whatever the header carries: the work an attacker can cause is bounded
/// by the configured secrets, and a stale timestamp costs none.
pub fn verify<'a>(
    header: Option<&str>,
    body: &[u8],
    secrets: impl IntoIterator<Item = &'a str>,
    now: i64,
    tolerance_s: i64,
) -> Result<StripeSignature, SignatureError> {
    let sig = StripeSignature::parse(header.ok_or(SignatureError::Missing)?)?;
    if now.abs_diff(sig.timestamp) > tolerance_s.unsigned_abs() {
        return Err(SignatureError::Stale(tolerance_s));
    }
    let signed_prefix = format!("{}.", sig.timestamp);
    let matched = secrets.into_iter().any(|secret| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return false };
        mac.update(signed_prefix.as_bytes());
        mac.update(body);
        let expected = mac.finalize().into_bytes();
        // Constant-time comparison against every candidate (no early exit on a match).
        sig.v1.iter().fold(false, |found, candidate| found | bool::from(expected.as_slice().ct_eq(candidate)))
    });
    if matched { Ok(sig) } else { Err(SignatureError::NoMatch) }
}

/// The header Stripe would send for `body` at `timestamp`: for tests and the local tooling.
pub fn sign(body: &[u8], secret: &str, timestamp: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"evt_1"}"#;

    #[test]
    fn a_signed_body_verifies_with_any_configured_secret() {
        let header = sign(BODY, "whsec_new", 1_000);
        assert!(verify(Some(&header), BODY, ["whsec_old", "whsec_new"], 1_000, 300).is_ok());
        assert_eq!(verify(Some(&header), BODY, ["whsec_other"], 1_000, 300), Err(SignatureError::NoMatch));
        assert_eq!(verify(Some(&header), b"{}", ["whsec_new"], 1_000, 300), Err(SignatureError::NoMatch));
    }

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        for t in [i64::MIN, i64::MAX, -1] {
            let header = format!("t={t},v1={}", "0".repeat(64));
            assert_eq!(verify(Some(&header), b"{}", ["whsec_a"], 1000, 300), Err(SignatureError::Stale(300)));
        }
    }

    #[test]
    fn the_header_carries_at_most_max_v1_candidates() {
        let body = br#"{"id":"evt_1"}"#;
        let good = sign(body, "whsec_a", 1000);
        let v1 = good.split_once(",v1=").unwrap().1;
        let decoys = vec![format!("v1={}", "0".repeat(64)); MAX_V1 - 1].join(",");
        let fits = format!("t=1000,{decoys},v1={v1}");
        assert!(verify(Some(&fits), body, ["whsec_a"], 1000, 300).is_ok());
        let over = format!("t=1000,{decoys},v1={},v1={v1}", "1".repeat(64));
        assert_eq!(verify(Some(&over), body, ["whsec_a"], 1000, 300), Err(SignatureError::Malformed));
    }

    #[test]
    fn several_v1_values_and_other_schemes() {
        let good = sign(BODY, "whsec_a", 1_000);
        let v1 = good.split_once(",v1=").unwrap().1;
        let header = format!("t=1000,v0=deadbeef,v1={},v1={v1}", "0".repeat(64));
        assert!(verify(Some(&header), BODY, ["whsec_a"], 1_000, 300).is_ok());
    }

    #[test]
    fn bad_headers_and_stale_timestamps() {
        assert_eq!(verify(None, BODY, ["s"], 0, 300).unwrap_err(), SignatureError::Missing);
        for bad in ["", "garbage", "t=abc,v1=00", "v1=00"] {
            assert!(verify(Some(bad), BODY, ["s"], 0, 300).is_err(), "{bad}");
        }
        assert_eq!(verify(Some("t=5"), BODY, ["s"], 5, 300).unwrap_err(), SignatureError::NoMatch);
        let header = sign(BODY, "s", 1_000);
        assert_eq!(verify(Some(&header), BODY, ["s"], 1_301, 300).unwrap_err(), SignatureError::Stale(300));
        assert_eq!(verify(Some(&header), BODY, ["s"], 699, 300).unwrap_err(), SignatureError::Stale(300));
        assert!(verify(Some(&header), BODY, ["s"], 1_300, 300).is_ok());
    }
}
