//! Every way a management request can fail, and the one place each becomes a status and a
//! JSON error body: `{"error":{"code","message","field"?},"request_id"}` (`shared::envelope`).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use shared::domain::plans::ValidationError;
use shared::envelope;
use shared::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong admin token")]
    Unauthorized,
    /// A token the identity provider's keys do not verify (or no longer do).
    #[error("{0}")]
    BadToken(String),
    /// Authenticated, but the role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The identity provider's signing keys could not be fetched (and none are known).
    #[error("the identity provider is unavailable: {0}")]
    IdentityUnavailable(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("no such route")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// A field (or query parameter) with the wrong type, an unknown name, or an out-of-range value.
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(ValidationError),
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    AlreadyClaimed { message: String, key_id: String, display: String },
    /// A request refused for a reason with its own status and code (the Checkout claim's).
    #[error("{message}")]
    Refused { status: u16, code: &'static str, message: String },
    /// Saved, but its fan-out to keys is not finished; the same request again continues.
    #[error("{0}")]
    Unfinished(String),
    /// Too many attempts from one source or at one Checkout session in a window.
    #[error("{message}")]
    TooManyAttempts { message: &'static str, retry_after: u64 },
    #[error("storage is unavailable")]
    Unavailable(#[source] StoreError),
    #[error("the payment provider is unavailable: {0}")]
    Upstream(String),
    #[error("{0}")]
    NotConfigured(&'static str),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(ValidationError::new(field, message))
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::Unauthorized | Self::BadToken(_) => 401,
            Self::Forbidden(_) => 403,
            Self::IdentityUnavailable(_) => 503,
            Self::NotFound(_) | Self::NoRoute => 404,
            Self::MethodNotAllowed(_) => 405,
            Self::Conflict(_) | Self::AlreadyClaimed { .. } => 409,
            Self::InvalidJson(_) | Self::BodyTooLarge(_) => 400,
            Self::Invalid(_) => 422,
            Self::Internal(_) => 500,
            Self::NotConfigured(_) => 501,
            Self::Upstream(_) => 502,
            Self::Unavailable(_) | Self::Unfinished(_) => 503,
            Self::Refused { status, .. } => *status,
            Self::TooManyAttempts { .. } => 429,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized | Self::BadToken(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::IdentityUnavailable(_) => "identity_unavailable",
            Self::NotFound(_) | Self::NoRoute => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::AlreadyClaimed { .. } => "already_claimed",
            Self::InvalidJson(_) => "invalid_json",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::Invalid(_) => "invalid_field",
            Self::Internal(_) => "internal_error",
            Self::NotConfigured(_) => "not_configured",
            Self::Upstream(_) => "upstream_error",
            Self::Unavailable(_) => "unavailable",
            Self::Unfinished(_) => "unfinished",
            Self::Refused { code, .. } => code,
            Self::TooManyAttempts { .. } => "too_many_attempts",
        }
    }

    /// The `error` object. Internal details stay in the logs, never in a response.
    pub fn error_object(&self) -> serde_json::Value {
        let message = match self {
            Self::Internal(_) => "An internal error occurred; the request id identifies it in the logs.".to_owned(),
            Self::Unavailable(_) => "Storage is temporarily unavailable; retry shortly.".to_owned(),
            Self::Unauthorized => {
                "Send Authorization: Bearer <admin token, or a JWT from the identity provider>.".to_owned()
            }
            Self::IdentityUnavailable(_) => {
                "The identity provider's signing keys could not be fetched; retry shortly.".to_owned()
            }
            other => other.to_string(),
        };
        let mut extra = serde_json::Map::new();
        match self {
            Self::Invalid(v) => {
                extra.insert("field".into(), v.field.clone().into());
            }
            Self::AlreadyClaimed { key_id, display, .. } => {
                extra.insert("key_id".into(), key_id.clone().into());
                extra.insert("display".into(), display.clone().into());
            }
            Self::TooManyAttempts { retry_after, .. } => {
                extra.insert("retry_after".into(), (*retry_after).into());
            }
            _ => {}
        }
        envelope::error_object(self.code(), &message, extra)
    }

    /// The whole error body for `request_id`.
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        envelope::error_body(self.error_object(), request_id)
    }
}

/// A refusal's `error` object on its way out: the router's outer layer, which knows the
/// request id, writes it as the response body.
#[derive(Debug, Clone)]
pub struct Failure(pub serde_json::Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(_) | Self::Unavailable(_) | Self::Upstream(_) | Self::IdentityUnavailable(_) => {
                tracing::error!(error = %self, source = ?std::error::Error::source(&self), "request failed")
            }
            _ => tracing::info!(code = self.code(), error = %self, "request rejected"),
        }
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = status.into_response();
        match &self {
            Self::MethodNotAllowed(allow) => {
                resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::TooManyAttempts { retry_after, .. } => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        resp.extensions_mut().insert(Failure(self.error_object()));
        resp
    }
}

impl From<shared::identity::jwt::JwtError> for ApiError {
    fn from(e: shared::identity::jwt::JwtError) -> Self {
        use shared::identity::jwt::JwtError;
        match e {
            JwtError::KeysUnavailable(detail) => Self::IdentityUnavailable(detail),
            e if e.is_forbidden() => Self::Forbidden(e.to_string()),
            e => Self::BadToken(e.to_string()),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::Invalid(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::AlreadyExists(what) => Self::Conflict(format!("{what} already exists")),
            StoreError::Conflict(msg) => Self::Conflict(msg),
            StoreError::UnknownReference(what) => {
                Self::invalid(format!("{what}_id"), format!("no {what} with this id exists"))
            }
            StoreError::InvalidCursor => Self::invalid("cursor", "not a cursor this API returned"),
            StoreError::NoPlan => Self::Refused {
                status: 409,
                code: "no_plan",
                message: "Your account has no plan yet: subscribe first, or ask the operator for a key.".into(),
            },
            StoreError::KeyLimitReached(max) => Self::Refused {
                status: 409,
                code: "max_keys_reached",
                message: format!("Your plan allows {max} keys and all are in use; revoke one or upgrade your plan."),
            },
            e @ StoreError::Unavailable(_) => Self::Unavailable(e),
            e @ (StoreError::Backend(_) | StoreError::Corrupt(_)) => Self::Internal(Box::new(e)),
        }
    }
}
