//! Stripe's secrets from AWS Secrets Manager, read once at cold start and kept in memory for
//! the life of the execution environment, so they are never in the function's environment
//! (which `lambda:GetFunctionConfiguration` shows to anyone with read-only access).
//!
//! `STRIPE_API_KEY_SECRET_ARN` and `STRIPE_WEBHOOK_SECRET_ARN` name the secrets; their
//! `SecretString` is the value itself (several webhook secrets comma-separated during a
//! rotation). The plain `STRIPE_API_KEY` / `STRIPE_WEBHOOK_SECRET` remain for the local stack
//! and tests; setting both forms of one is refused. A rotated secret reaches new execution
//! environments (the template's `SecretsRevision` forces them).
//!
//! The client comes from the standard AWS configuration chain, so
//! `AWS_ENDPOINT_URL_SECRETS_MANAGER` points it elsewhere (tests use a local stand-in).

use crate::config::{Config, ConfigError, Secrets};
use secrecy::SecretString;

pub const API_KEY_ARN_VAR: &str = "STRIPE_API_KEY_SECRET_ARN";
pub const WEBHOOK_ARN_VAR: &str = "STRIPE_WEBHOOK_SECRET_ARN";

impl Config {
    /// [`from_env`](Self::from_env), then the secrets named by ARN read from Secrets Manager:
    /// what every Lambda does at cold start. (Here rather than in `config.rs`, so that the
    /// configuration does not depend on the AWS client that fills it.)
    pub async fn load() -> Result<Self, ConfigError> {
        let mut config = Self::from_env()?;
        load(&mut config).await?;
        Ok(config)
    }
}

/// Reads the secrets `config` names by ARN into `config`. No ARN: no request, no client.
pub async fn load(config: &mut Config) -> Result<(), ConfigError> {
    if config.stripe_api_key_secret_arn.is_none() && config.stripe_webhook_secret_arn.is_none() {
        return Ok(());
    }
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(crate::http_client::sdk_http_client())
        .load()
        .await;
    load_with(config, &aws_sdk_secretsmanager::Client::new(&shared)).await
}

/// [`load`] with a given client.
pub async fn load_with(config: &mut Config, client: &aws_sdk_secretsmanager::Client) -> Result<(), ConfigError> {
    if let Some(arn) = config.stripe_api_key_secret_arn.clone() {
        let value = fetch(client, API_KEY_ARN_VAR, &arn).await?;
        expect_prefix(API_KEY_ARN_VAR, &value, &["sk_", "rk_"])?;
        config.stripe_api_key = Some(SecretString::from(value));
    }
    if let Some(arn) = config.stripe_webhook_secret_arn.clone() {
        let value = fetch(client, WEBHOOK_ARN_VAR, &arn).await?;
        let secrets = Secrets::parse(&value);
        for secret in secrets.iter() {
            expect_prefix(WEBHOOK_ARN_VAR, secret, &["whsec_"])?;
        }
        config.stripe_webhook_secrets = secrets;
    }
    Ok(())
}

async fn fetch(client: &aws_sdk_secretsmanager::Client, var: &'static str, arn: &str) -> Result<String, ConfigError> {
    let started = std::time::Instant::now();
    let out = client.get_secret_value().secret_id(arn).send().await.map_err(|e| ConfigError::Invalid {
        name: var,
        reason: format!(
            "could not read the secret from Secrets Manager: {}",
            aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
        ),
    })?;
    let value = out
        .secret_string
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or(ConfigError::Invalid { name: var, reason: "the secret has no SecretString".into() })?;
    tracing::info!(secret = var, millis = started.elapsed().as_millis() as u64, "read a secret from Secrets Manager");
    Ok(value)
}

/// A secret stored as the console's key/value JSON, or the wrong one, fails the cold start
/// with a clear error rather than every request later. The value itself is never shown.
fn expect_prefix(var: &'static str, value: &str, prefixes: &[&str]) -> Result<(), ConfigError> {
    if prefixes.iter().any(|p| value.starts_with(p)) {
        return Ok(());
    }
    let reason = if value.starts_with('{') {
        "the secret is JSON (a key/value secret); store the plain value as the SecretString".to_owned()
    } else {
        format!("the secret does not start with {}", prefixes.join(" or "))
    };
    Err(ConfigError::Invalid { name: var, reason })
}
