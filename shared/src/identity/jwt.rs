//! Sign-in with the seller's identity provider: `Authorization: Bearer <JWT>` verified against
//! the issuer's JSON Web Key Set. The cryptography is the `jsonwebtoken` crate's (on ring, the
//! one crypto provider every binary already carries); this module decides which key and which
//! algorithm a token may use, keeps the keys per container, and reads the role and customer
//! from the claims.
//!
//! - Only RS256 and ES256, each only with a key of its own family: `none`, HMAC (a public key
//!   used as a shared secret) and a key of the other family are refused before any signature
//!   check.
//! - `iss` must equal the configured issuer and `aud` contain the configured audience; `exp`
//!   is required; `exp` and `nbf` are checked against the request's clock with
//!   [`CLOCK_SKEW_S`] of skew.
//! - Keys are fetched on first use (never at cold start), kept for [`KEYS_TTL`], and fetched
//!   again at most once per [`UNKNOWN_KID_COOLDOWN`] when a token names a key id the set does
//!   not have (the provider rotated its keys), so tokens with made-up key ids cannot make
//!   every request a fetch. An unreachable issuer is asked again every 30 s, and the keys it
//!   published keep verifying meanwhile for at most [`KEYS_MAX_AGE`].

use super::{Caller, Role};
use crate::domain::customers::CustomerId;
use crate::domain::time::UnixTime;
use crate::http_client::HttpClient;
use bytes::Bytes;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// Allowed difference between the provider's clock and ours, for `exp` and `nbf`.
pub const CLOCK_SKEW_S: i64 = 60;
/// How long fetched keys are used before they are fetched again (a key the provider removed
/// stops working within this).
pub const KEYS_TTL: Duration = Duration::from_secs(600);
/// While the issuer cannot be reached, keys fetched earlier keep verifying for at most this
/// long (then every token is refused until it can be reached again).
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// After a failed fetch, the next is tried no sooner than this (requests do not each wait on
/// an unreachable issuer).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// At most one fetch per this for tokens naming an unknown key id.
pub const UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys beyond this many in one set are ignored.
const MAX_KEYS: usize = 50;

pub const DEFAULT_ROLE_CLAIM: &str = "tollgate_role";
pub const DEFAULT_CUSTOMER_CLAIM: &str = "tollgate_customer_id";

/// `TOLLGATE_JWT_*`: which issuer and audience tokens must name, where its keys are, and
/// which claims carry the role and the customer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    pub issuer: String,
    pub audience: String,
    /// Unset: discovered from `{issuer}/.well-known/openid-configuration`.
    pub jwks_url: Option<String>,
    pub role_claim: String,
    pub customer_claim: String,
}

/// Why a token was not accepted. Every variant but the role ones and `KeysUnavailable` means
/// "not authenticated" (401); the role ones mean "authenticated, may not" (403).
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm {0} is not accepted (RS256 and ES256 are)")]
    UnsupportedAlgorithm(String),
    #[error("the token names a signing key the issuer does not publish")]
    UnknownKey,
    #[error("the token's algorithm does not match its signing key")]
    AlgorithmMismatch,
    #[error("the token is not valid: {0}")]
    Invalid(&'static str),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token carries no role in claim `{0}`")]
    MissingRole(String),
    #[error("the token's role claim names no role Tollgate knows (admin, read_only, customer)")]
    UnknownRole,
    #[error("the token's role is customer but claim `{0}` names no valid customer id")]
    NoCustomer(String),
    #[error("the issuer's signing keys could not be fetched: {0}")]
    KeysUnavailable(String),
}

impl JwtError {
    /// Authenticated, but the claims grant nothing: 403 rather than 401.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::MissingRole(_) | Self::UnknownRole | Self::NoCustomer(_))
    }
}

/// One verifying key from the set.
#[derive(Clone)]
struct VerifyingKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct Keys {
    keys: Vec<VerifyingKey>,
    /// The JWKS URL (configured, or discovered once).
    jwks_url: Option<String>,
    /// The last successful fetch.
    fetched: Option<Instant>,
    /// After a failed refresh, the earliest next attempt (meanwhile the keys still serve).
    retry_at: Option<Instant>,
    unknown_kid_fetch: Option<Instant>,
}

impl Keys {
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<VerifyingKey> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)).cloned(),
            // Without a key id, only an unambiguous key for the algorithm.
            None => {
                let mut same = self.keys.iter().filter(|k| k.alg == alg);
                match (same.next(), same.next()) {
                    (Some(k), None) => Some(k.clone()),
                    _ => None,
                }
            }
        }
    }

    /// Usable without a fetch: fetched within the TTL, or waiting out a failed refresh.
    fn fresh(&self) -> bool {
        self.fetched.is_some_and(|at| at.elapsed() < KEYS_TTL) || self.retry_at.is_some_and(|at| Instant::now() < at)
    }
}

/// Verifies management API tokens; one per container, shared by every request.
pub struct JwtVerifier {
    settings: JwtSettings,
    http: HttpClient,
    keys: RwLock<Keys>,
}

impl JwtVerifier {
    pub fn new(settings: JwtSettings) -> Result<Self, crate::http_client::HttpError> {
        let http = HttpClient::new(FETCH_TIMEOUT)?;
        let keys = Keys { jwks_url: settings.jwks_url.clone(), ..Keys::default() };
        Ok(Self { settings, http, keys: RwLock::new(keys) })
    }

    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// The caller a token authenticates, at `now`.
    pub async fn verify(&self, token: &str, now: UnixTime) -> Result<Caller, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(JwtError::UnsupportedAlgorithm(format!("{:?}", header.alg)));
        }
        let key = self.key_for(header.kid.as_deref(), header.alg).await?;
        if key.alg != header.alg {
            return Err(JwtError::AlgorithmMismatch);
        }
        let mut validation = Validation::new(key.alg);
        // Time is checked below against the request's clock, not the system's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key.key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => JwtError::Invalid("bad signature"),
                    ErrorKind::InvalidIssuer => JwtError::Invalid("wrong issuer"),
                    ErrorKind::InvalidAudience => JwtError::Invalid("wrong audience"),
                    ErrorKind::MissingRequiredClaim(_) => {
                        JwtError::Invalid("a required claim (exp, iss, aud) is missing")
                    }
                    ErrorKind::InvalidAlgorithm => JwtError::AlgorithmMismatch,
                    _ => JwtError::Malformed,
                }
            })?;
        let claims = data.claims;
        let exp = time_claim(&claims, "exp").ok_or(JwtError::Invalid("exp is not a number"))?;
        if now.secs() > exp.saturating_add(CLOCK_SKEW_S) {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = claims
            .get("nbf")
            .map(|_| time_claim(&claims, "nbf").ok_or(JwtError::Invalid("nbf is not a number")))
            .transpose()?
            && now.secs().saturating_add(CLOCK_SKEW_S) < nbf
        {
            return Err(JwtError::NotYetValid);
        }
        self.caller(&claims)
    }

    /// The role and customer the (verified) claims carry.
    fn caller(&self, claims: &serde_json::Map<String, serde_json::Value>) -> Result<Caller, JwtError> {
        let role_claim = &self.settings.role_claim;
        let role = match claims.get(role_claim) {
            None | Some(serde_json::Value::Null) => return Err(JwtError::MissingRole(role_claim.clone())),
            Some(v) => Role::from_claim(v).ok_or(JwtError::UnknownRole)?,
        };
        let customer = match role {
            Role::Customer => {
                let claim = &self.settings.customer_claim;
                let id = claims.get(claim).and_then(|v| v.as_str()).and_then(|s| CustomerId::parse(s).ok());
                Some(id.ok_or_else(|| JwtError::NoCustomer(claim.clone()))?)
            }
            _ => None,
        };
        let sub = claims.get("sub").and_then(|v| v.as_str()).unwrap_or("-");
        Ok(Caller { role, customer, subject: format!("jwt:{}", truncate(sub, 128)) })
    }

    /// The key for `kid`: from memory while fresh; otherwise, or for a key id memory lacks,
    /// from the issuer (within the cooldown).
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<VerifyingKey, JwtError> {
        {
            let keys = self.keys.read().await;
            if keys.fresh()
                && let Some(k) = keys.find(kid, alg)
            {
                return Ok(k);
            }
        }
        let mut keys = self.keys.write().await;
        if !keys.fresh() {
            match self.fetch(&mut keys).await {
                Ok(()) => {}
                // The provider is unreachable: keep verifying with the keys already known, for
                // at most KEYS_MAX_AGE, asking again every RETRY_AFTER_FAILURE meanwhile.
                Err(e) if keys.fetched.is_some_and(|at| at.elapsed() < KEYS_MAX_AGE) => {
                    keys.retry_at = Some(Instant::now() + RETRY_AFTER_FAILURE);
                    tracing::warn!(error = %e, "could not refresh the JWKS; using the keys fetched earlier");
                }
                Err(e) => {
                    keys.keys.clear();
                    keys.retry_at = Some(Instant::now() + RETRY_AFTER_FAILURE);
                    return Err(e);
                }
            }
        } else if keys.find(kid, alg).is_none()
            && keys.unknown_kid_fetch.is_none_or(|at| at.elapsed() >= UNKNOWN_KID_COOLDOWN)
        {
            keys.unknown_kid_fetch = Some(Instant::now());
            self.fetch(&mut keys).await?;
        }
        keys.find(kid, alg).ok_or(JwtError::UnknownKey)
    }

    /// Fetches the key set (discovering its URL first if needed) into `keys`.
    async fn fetch(&self, keys: &mut Keys) -> Result<(), JwtError> {
        let url = match &keys.jwks_url {
            Some(url) => url.clone(),
            None => {
                let url = self.discover().await?;
                keys.jwks_url = Some(url.clone());
                url
            }
        };
        let set = self.get_json(&url).await?;
        let found: Vec<VerifyingKey> = set
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or_else(|| JwtError::KeysUnavailable("the JWKS has no `keys` array".into()))?
            .iter()
            .take(MAX_KEYS)
            .filter_map(verifying_key)
            .collect();
        tracing::info!(keys = found.len(), "fetched the identity provider's signing keys");
        keys.keys = found;
        keys.fetched = Some(Instant::now());
        keys.retry_at = None;
        Ok(())
    }

    /// The JWKS URL from the issuer's OpenID configuration, which must name the same issuer.
    async fn discover(&self) -> Result<String, JwtError> {
        let issuer = &self.settings.issuer;
        let doc = self.get_json(&format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))).await?;
        if doc.get("issuer").and_then(|v| v.as_str()) != Some(issuer.as_str()) {
            return Err(JwtError::KeysUnavailable("the OpenID configuration names another issuer".into()));
        }
        let url = doc
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| JwtError::KeysUnavailable("the OpenID configuration has no jwks_uri".into()))?;
        if !trusted_url(url) {
            return Err(JwtError::KeysUnavailable("the OpenID configuration's jwks_uri is not https".into()));
        }
        Ok(url.to_owned())
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value, JwtError> {
        let unavailable = |e: String| JwtError::KeysUnavailable(format!("{url}: {e}"));
        let req = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Bytes::new())
            .map_err(|e| unavailable(e.to_string()))?;
        let resp = self.http.send(req).await.map_err(|e| unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("status {}", resp.status())));
        }
        serde_json::from_slice(resp.body()).map_err(|e| unavailable(e.to_string()))
    }
}

/// Where keys may come from: HTTPS, or plain HTTP on a loopback address only (tests, the
/// local stack): keys fetched in the clear could be replaced on the way.
pub fn trusted_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else { return false };
    let Some(authority) = uri.authority() else { return false };
    if authority.as_str().contains('@') {
        // Credentials in the URL, or a host hidden behind them.
        return false;
    }
    match uri.scheme_str() {
        Some("https") => true,
        Some("http") => {
            let host = authority.host().trim_start_matches('[').trim_end_matches(']');
            host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

/// A signing key Tollgate can use: RSA for RS256, P-256 for ES256, not marked for encryption;
/// anything else in the set is skipped.
fn verifying_key(raw: &serde_json::Value) -> Option<VerifyingKey> {
    let jwk: Jwk = serde_json::from_value(raw.clone()).ok()?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    let stated = jwk.common.key_algorithm;
    let agrees = match stated {
        None => true,
        Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
        Some(_) => false,
    };
    if !agrees {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(VerifyingKey { kid: jwk.common.key_id.clone(), alg, key })
}

/// A NumericDate claim (seconds; a fraction is allowed and dropped).
fn time_claim(claims: &serde_json::Map<String, serde_json::Value>, name: &str) -> Option<i64> {
    let v = claims.get(name)?;
    v.as_i64().or_else(|| v.as_f64().filter(|f| f.is_finite() && f.abs() < 1e15).map(|f| f as i64))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_over_https_or_from_loopback() {
        for ok in ["https://idp.example", "http://127.0.0.1:8080/jwks", "http://localhost/x", "http://[::1]:9/"] {
            assert!(trusted_url(ok), "{ok}");
        }
        for bad in [
            "http://idp.example",
            "http://127.0.0.1.evil.example/",
            "http://127.0.0.1:1@evil.example/jwks",
            "https://user:pass@idp.example",
            "ftp://x",
            "idp.example",
            "http://10.0.0.1",
        ] {
            assert!(!trusted_url(bad), "{bad}");
        }
    }
}
