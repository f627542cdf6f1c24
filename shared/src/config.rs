//! Typed configuration, read once at cold start. A missing or malformed variable stops
//! start-up with an error naming it; secrets are wrapped so they never reach a log.

use crate::domain::api_key::KeyEnv;
use crate::domain::scopes::ScopeMap;
use crate::identity::jwt::{DEFAULT_CUSTOMER_CLAIM, DEFAULT_ROLE_CLAIM, JwtSettings};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("missing required environment variable {0}")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Deny when storage cannot be reached: nobody gets in unmetered.
    #[default]
    Closed,
    /// Allow (marked degraded) when storage cannot be reached: availability over metering.
    Open,
}

/// `open` lets a key through a transient outage only if storage allowed it this recently.
pub const DEFAULT_FAIL_OPEN_WINDOW_S: u64 = 300;
pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";
/// Three days: long enough for Stripe's first automatic payment retries.
pub const DEFAULT_PAST_DUE_GRACE_S: u64 = 3 * 86_400;

/// A list of secrets (comma-separated in the environment) for zero-downtime rotation.
#[derive(Clone, Default)]
pub struct Secrets(Vec<SecretString>);

impl Secrets {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|s| s.expose_secret())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn parse(raw: &str) -> Self {
        Self(
            raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| SecretString::from(s.to_owned())).collect(),
        )
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets([{} redacted])", self.0.len())
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `TOLLGATE_TABLE`
    pub table: String,
    /// `TOLLGATE_DYNAMODB_ENDPOINT`: a DynamoDB-compatible endpoint instead of AWS's.
    pub dynamodb_endpoint: Option<String>,
    /// `TOLLGATE_FAIL_MODE`
    pub fail_mode: FailMode,
    /// `TOLLGATE_FAIL_OPEN_WINDOW_S`
    pub fail_open_window_s: u64,
    /// `TOLLGATE_KEY_ENV`: `live` or `test`; unset accepts both.
    pub key_env: Option<KeyEnv>,
    /// `TOLLGATE_PAST_DUE_GRACE_S`
    pub past_due_grace_s: u64,
    /// `STRIPE_WEBHOOK_SECRET`, comma-separated.
    pub stripe_webhook_secrets: Secrets,
    /// `STRIPE_WEBHOOK_TOLERANCE_S`: how old (or new) a signed timestamp may be.
    pub stripe_webhook_tolerance_s: i64,
    /// `STRIPE_API_KEY`, or read from `STRIPE_API_KEY_SECRET_ARN` at cold start (`Config::load`, in `secrets.rs`).
    pub stripe_api_key: Option<SecretString>,
    /// `STRIPE_API_KEY_SECRET_ARN`: the Secrets Manager secret holding the API key.
    pub stripe_api_key_secret_arn: Option<String>,
    /// `STRIPE_WEBHOOK_SECRET_ARN`: the Secrets Manager secret holding the webhook secret(s).
    pub stripe_webhook_secret_arn: Option<String>,
    /// `STRIPE_API_BASE`
    pub stripe_api_base: String,
    /// `TOLLGATE_ADMIN_TOKEN` (local stack only; AWS uses IAM).
    pub admin_token: Option<SecretString>,
    /// `TOLLGATE_JWT_*`: sign-in with the seller's identity provider; unset: none.
    pub jwt: Option<JwtSettings>,
    /// `TOLLGATE_SCOPES`: which routes of the protected API need which key scopes.
    pub scopes: ScopeMap,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());
        let table = get("TOLLGATE_TABLE").ok_or(ConfigError::Missing("TOLLGATE_TABLE"))?;
        let dynamodb_endpoint = get("TOLLGATE_DYNAMODB_ENDPOINT");
        if let Some(e) = &dynamodb_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(ConfigError::Invalid {
                name: "TOLLGATE_DYNAMODB_ENDPOINT",
                reason: "must be an http:// or https:// URL".into(),
            });
        }
        let fail_mode = match get("TOLLGATE_FAIL_MODE").as_deref() {
            None | Some("closed") => FailMode::Closed,
            Some("open") => FailMode::Open,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "TOLLGATE_FAIL_MODE",
                    reason: format!("expected `closed` or `open`, got `{other}`"),
                });
            }
        };
        let seconds = |name: &'static str, default: u64| match get(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| ConfigError::Invalid { name, reason: "expected a whole number of seconds".into() }),
        };
        let past_due_grace_s = seconds("TOLLGATE_PAST_DUE_GRACE_S", DEFAULT_PAST_DUE_GRACE_S)?;
        let fail_open_window_s = seconds("TOLLGATE_FAIL_OPEN_WINDOW_S", DEFAULT_FAIL_OPEN_WINDOW_S)?;
        let key_env = match get("TOLLGATE_KEY_ENV").as_deref().map(str::trim) {
            None => None,
            Some("live") => Some(KeyEnv::Live),
            Some("test") => Some(KeyEnv::Test),
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "TOLLGATE_KEY_ENV",
                    reason: format!("expected `live` or `test`, got `{other}`"),
                });
            }
        };
        let stripe_webhook_tolerance_s = match get("STRIPE_WEBHOOK_TOLERANCE_S") {
            None => crate::stripe::signature::DEFAULT_TOLERANCE_S,
            Some(v) => v.trim().parse().ok().filter(|t: &i64| *t > 0).ok_or(ConfigError::Invalid {
                name: "STRIPE_WEBHOOK_TOLERANCE_S",
                reason: "expected a positive whole number of seconds".into(),
            })?,
        };
        let arn = |name: &'static str, plain: &'static str| match get(name) {
            None => Ok(None),
            Some(_) if get(plain).is_some() => {
                Err(ConfigError::Invalid { name, reason: format!("set {name} or {plain}, not both") })
            }
            Some(v) if v.trim().starts_with("arn:") => Ok(Some(v.trim().to_owned())),
            Some(_) => Err(ConfigError::Invalid { name, reason: "expected a Secrets Manager ARN (arn:...)".into() }),
        };
        let stripe_api_key_secret_arn = arn("STRIPE_API_KEY_SECRET_ARN", "STRIPE_API_KEY")?;
        let stripe_webhook_secret_arn = arn("STRIPE_WEBHOOK_SECRET_ARN", "STRIPE_WEBHOOK_SECRET")?;
        let stripe_api_base = get("STRIPE_API_BASE")
            .map(|s| s.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| DEFAULT_STRIPE_API_BASE.to_owned());
        let url = |name: &'static str, v: String| {
            let v = v.trim().trim_end_matches('/').to_owned();
            if crate::identity::jwt::trusted_url(&v) {
                Ok(v)
            } else {
                Err(ConfigError::Invalid {
                    name,
                    reason: "must be an https:// URL (http:// only on loopback, for tests)".into(),
                })
            }
        };
        let jwt = match get("TOLLGATE_JWT_ISSUER") {
            None => None,
            Some(issuer) => Some(JwtSettings {
                // The issuer is compared with `iss` exactly as configured (less a trailing slash
                // only for building URLs), so keep it as given.
                issuer: {
                    url("TOLLGATE_JWT_ISSUER", issuer.clone())?;
                    issuer.trim().to_owned()
                },
                audience: get("TOLLGATE_JWT_AUDIENCE")
                    .map(|a| a.trim().to_owned())
                    .ok_or(ConfigError::Missing("TOLLGATE_JWT_AUDIENCE (TOLLGATE_JWT_ISSUER is set)"))?,
                jwks_url: get("TOLLGATE_JWT_JWKS_URL").map(|u| url("TOLLGATE_JWT_JWKS_URL", u)).transpose()?,
                role_claim: get("TOLLGATE_JWT_ROLE_CLAIM")
                    .map_or_else(|| DEFAULT_ROLE_CLAIM.into(), |c| c.trim().into()),
                customer_claim: get("TOLLGATE_JWT_CUSTOMER_CLAIM")
                    .map_or_else(|| DEFAULT_CUSTOMER_CLAIM.into(), |c| c.trim().into()),
            }),
        };
        let scopes = match get("TOLLGATE_SCOPES") {
            None => ScopeMap::default(),
            Some(v) => {
                ScopeMap::parse(&v).map_err(|reason| ConfigError::Invalid { name: "TOLLGATE_SCOPES", reason })?
            }
        };
        Ok(Self {
            table,
            dynamodb_endpoint,
            fail_mode,
            fail_open_window_s,
            key_env,
            past_due_grace_s,
            stripe_webhook_secrets: get("STRIPE_WEBHOOK_SECRET").map(|s| Secrets::parse(&s)).unwrap_or_default(),
            stripe_webhook_tolerance_s,
            stripe_api_key: get("STRIPE_API_KEY").map(SecretString::from),
            stripe_api_key_secret_arn,
            stripe_webhook_secret_arn,
            stripe_api_base,
            admin_token: get("TOLLGATE_ADMIN_TOKEN").map(SecretString::from),
            jwt,
            scopes,
        })
    }

    /// For functions that verify Stripe webhooks: the secrets, or an error naming the variable.
    pub fn require_webhook_secrets(&self) -> Result<&Secrets, ConfigError> {
        if self.stripe_webhook_secrets.is_empty() {
            Err(ConfigError::Missing("STRIPE_WEBHOOK_SECRET_ARN (or STRIPE_WEBHOOK_SECRET)"))
        } else {
            Ok(&self.stripe_webhook_secrets)
        }
    }

    /// For functions that call Stripe's API.
    pub fn require_stripe_api_key(&self) -> Result<&SecretString, ConfigError> {
        self.stripe_api_key.as_ref().ok_or(ConfigError::Missing("STRIPE_API_KEY"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn the_table_is_required_and_named() {
        let err = cfg(&[]).unwrap_err();
        assert_eq!(err, ConfigError::Missing("TOLLGATE_TABLE"));
        assert!(err.to_string().contains("TOLLGATE_TABLE"));
    }

    #[test]
    fn defaults() {
        let c = cfg(&[("TOLLGATE_TABLE", "t")]).unwrap();
        assert_eq!(c.fail_mode, FailMode::Closed);
        assert_eq!(c.past_due_grace_s, DEFAULT_PAST_DUE_GRACE_S);
        assert_eq!(c.stripe_api_base, DEFAULT_STRIPE_API_BASE);
        assert_eq!(
            c.require_webhook_secrets().unwrap_err(),
            ConfigError::Missing("STRIPE_WEBHOOK_SECRET_ARN (or STRIPE_WEBHOOK_SECRET)")
        );
        assert_eq!(c.require_stripe_api_key().unwrap_err(), ConfigError::Missing("STRIPE_API_KEY"));
    }

    #[test]
    fn invalid_values_are_named() {
        let e = cfg(&[("TOLLGATE_TABLE", "t"), ("TOLLGATE_FAIL_MODE", "maybe")]).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { name: "TOLLGATE_FAIL_MODE", .. }));
        let e = cfg(&[("TOLLGATE_TABLE", "t"), ("TOLLGATE_PAST_DUE_GRACE_S", "-1")]).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { name: "TOLLGATE_PAST_DUE_GRACE_S", .. }));
        let e = cfg(&[("TOLLGATE_TABLE", "t"), ("TOLLGATE_DYNAMODB_ENDPOINT", "localhost:8000")]).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { name: "TOLLGATE_DYNAMODB_ENDPOINT", .. }));
    }

    #[test]
    fn secret_arns_are_checked_and_exclusive() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tollgate/stripe-AbCdEf";
        let c = cfg(&[("TOLLGATE_TABLE", "t"), ("STRIPE_API_KEY_SECRET_ARN", arn)]).unwrap();
        assert_eq!(c.stripe_api_key_secret_arn.as_deref(), Some(arn));
        let e = cfg(&[("TOLLGATE_TABLE", "t"), ("STRIPE_API_KEY_SECRET_ARN", arn), ("STRIPE_API_KEY", "sk_test_x")]);
        assert!(matches!(e, Err(ConfigError::Invalid { name: "STRIPE_API_KEY_SECRET_ARN", .. })));
        let e = cfg(&[("TOLLGATE_TABLE", "t"), ("STRIPE_WEBHOOK_SECRET_ARN", "tollgate/webhook")]);
        assert!(matches!(e, Err(ConfigError::Invalid { name: "STRIPE_WEBHOOK_SECRET_ARN", .. })));
        let e = cfg(&[("TOLLGATE_TABLE", "t"), ("TOLLGATE_KEY_ENV", "prod")]);
        assert!(matches!(e, Err(ConfigError::Invalid { name: "TOLLGATE_KEY_ENV", .. })));
    }

    #[test]
    fn jwt_and_scopes_are_read_and_checked() {
        let c = cfg(&[
            ("TOLLGATE_TABLE", "t"),
            ("TOLLGATE_JWT_ISSUER", "https://tenant.eu.auth0.com/"),
            ("TOLLGATE_JWT_AUDIENCE", "https://api.example.com"),
            ("TOLLGATE_SCOPES", r#"{"GET /pets/*": "pets:read"}"#),
        ])
        .unwrap();
        let jwt = c.jwt.unwrap();
        assert_eq!(jwt.issuer, "https://tenant.eu.auth0.com/", "compared with iss exactly as given");
        assert_eq!((jwt.role_claim.as_str(), jwt.customer_claim.as_str()), ("tollgate_role", "tollgate_customer_id"));
        assert_eq!(jwt.jwks_url, None, "discovered");
        assert_eq!(c.scopes.required("GET", "/pets/1").unwrap(), ["pets:read"]);
        let e = cfg(&[("TOLLGATE_TABLE", "t"), ("TOLLGATE_JWT_ISSUER", "https://idp.example")]);
        assert!(matches!(e, Err(ConfigError::Missing(m)) if m.contains("TOLLGATE_JWT_AUDIENCE")));
        let e = cfg(&[("TOLLGATE_TABLE", "t"), ("TOLLGATE_JWT_ISSUER", "idp.example"), ("TOLLGATE_JWT_AUDIENCE", "a")]);
        assert!(matches!(e, Err(ConfigError::Invalid { name: "TOLLGATE_JWT_ISSUER", .. })));
        let e = cfg(&[
            ("TOLLGATE_TABLE", "t"),
            ("TOLLGATE_JWT_ISSUER", "http://idp.example"),
            ("TOLLGATE_JWT_AUDIENCE", "a"),
        ]);
        assert!(matches!(e, Err(ConfigError::Invalid { name: "TOLLGATE_JWT_ISSUER", .. })), "keys over plain HTTP");
        let local = cfg(&[
            ("TOLLGATE_TABLE", "t"),
            ("TOLLGATE_JWT_ISSUER", "http://127.0.0.1:9"),
            ("TOLLGATE_JWT_AUDIENCE", "a"),
        ]);
        assert!(local.is_ok(), "loopback, for tests");
        let e = cfg(&[("TOLLGATE_TABLE", "t"), ("TOLLGATE_SCOPES", r#"{"GET pets": "x"}"#)]);
        assert!(matches!(e, Err(ConfigError::Invalid { name: "TOLLGATE_SCOPES", .. })));
    }

    #[test]
    fn secrets_split_for_rotation_and_never_print() {
        let c = cfg(&[
            ("TOLLGATE_TABLE", "t"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_old, whsec_new"),
            ("STRIPE_API_KEY", "sk_test_abc"),
            ("TOLLGATE_FAIL_MODE", "open"),
            ("STRIPE_API_BASE", "http://127.0.0.1:9/"),
        ])
        .unwrap();
        assert_eq!(c.require_webhook_secrets().unwrap().iter().collect::<Vec<_>>(), ["whsec_old", "whsec_new"]);
        assert_eq!(c.fail_mode, FailMode::Open);
        assert_eq!(c.stripe_api_base, "http://127.0.0.1:9");
        let printed = format!("{c:?}");
        assert!(!printed.contains("whsec_") && !printed.contains("sk_test_abc"), "{printed}");
    }
}
