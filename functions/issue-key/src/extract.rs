//! What a management handler takes from a request, already in domain types: the JSON body,
//! the query, a path id, the `Idempotency-Key`, and the request's context (id, caller, source,
//! clock). Every refusal is an [`ApiError`], so every surface answers in the one envelope.

use crate::error::ApiError;
use crate::json::{MAX_BODY_BYTES, parse_body, parse_query};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use http::request::Parts;
use serde::de::DeserializeOwned;
use shared::domain::api_key::KeyId;
use shared::domain::customers::CustomerId;
use shared::domain::plans::{PlanId, ValidationError};
use shared::domain::time::UnixTime;
use shared::identity::Caller;

/// Who and what a request is, as the surface in front of the router knows it (the Lambda
/// adapter from API Gateway's context, the local stack from its connection, tests by hand).
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub request_id: String,
    /// The IAM principal API Gateway authenticated (its ARN), in AWS; set only by the Lambda
    /// adapter from the gateway's context, never from anything a client sends.
    pub caller: Option<String>,
    /// The client's address as the gateway saw it (never a client-sent header).
    pub source: Option<String>,
    /// The request's "now"; unset means the clock (tests fix it).
    pub now: Option<UnixTime>,
}

impl RequestContext {
    pub fn now(&self) -> UnixTime {
        self.now.unwrap_or_else(UnixTime::now)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(parts.extensions.get::<RequestContext>().cloned().unwrap_or_default())
    }
}

/// The caller, as the authentication layer established it (a request that reaches a handler
/// always has one; without, it is refused).
fn caller(parts: &Parts) -> Result<&Caller, ApiError> {
    parts.extensions.get::<Caller>().ok_or(ApiError::Unauthorized)
}

/// A caller who may change anything: `admin` (IAM, the admin token, or a JWT with that role).
pub struct Admin(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let caller = caller(parts)?;
        if !caller.can_write() {
            return Err(ApiError::Forbidden(format!("the {} role cannot change this", caller.role.as_str())));
        }
        Ok(Admin(caller.clone()))
    }
}

/// A caller who may read the operator's API: `admin` or `read_only`.
pub struct Reader(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let caller = caller(parts)?;
        if !caller.can_read() {
            return Err(ApiError::Forbidden(format!("the {} role cannot read this", caller.role.as_str())));
        }
        Ok(Reader(caller.clone()))
    }
}

/// The signed-in customer (`/v1/me`): role `customer`, acting as the customer its token names.
pub struct Me(pub CustomerId);

impl<S: Send + Sync> FromRequestParts<S> for Me {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match caller(parts)?.as_customer() {
            Some(customer) => Ok(Me(customer.clone())),
            None => Err(ApiError::Forbidden("/v1/me is for customers signed in with the customer role".into())),
        }
    }
}

/// The request's "now" (one instant per request).
#[derive(Debug, Clone, Copy)]
pub struct Now(pub UnixTime);

impl<S: Send + Sync> FromRequestParts<S> for Now {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Now(parts.extensions.get::<RequestContext>().map_or_else(UnixTime::now, RequestContext::now)))
    }
}

/// A JSON object body deserialized into `T` (strict: unknown or repeated fields are errors).
pub struct Json<T>(pub T);

/// The same, where an empty body means `{}` (rotate, revoke).
pub struct JsonOrEmpty<T>(pub T);

async fn body_bytes(req: Request) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES).await.map_err(|_| ApiError::BodyTooLarge(MAX_BODY_BYTES))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        parse_body(&body_bytes(req).await?, false).map(Json)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        parse_body(&body_bytes(req).await?, true).map(JsonOrEmpty)
    }
}

/// A JSON body as `T`, with the bytes it was parsed from (an idempotent create fingerprints them).
pub struct JsonBytes<T>(pub T, pub axum::body::Bytes);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBytes<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req).await?;
        Ok(JsonBytes(parse_body(&bytes, false)?, bytes))
    }
}

/// The query string deserialized into `T` (unknown parameters are errors).
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or_default()).map(Query)
    }
}

/// An id from the path, percent-decoded (`/v1/customers/a%40b` names `a@b`) and parsed.
pub struct Id<T>(pub T);

/// A domain id that can name a resource in a path.
pub trait PathId: Sized {
    fn from_segment(s: &str) -> Result<Self, ApiError>;
}

impl PathId for PlanId {
    fn from_segment(s: &str) -> Result<Self, ApiError> {
        PlanId::parse(s).map_err(|e| ApiError::Invalid(ValidationError::new("plan_id", e.message)))
    }
}

impl PathId for KeyId {
    fn from_segment(s: &str) -> Result<Self, ApiError> {
        KeyId::parse(s).map_err(|e| ApiError::invalid("key_id", e.to_string()))
    }
}

impl PathId for CustomerId {
    fn from_segment(s: &str) -> Result<Self, ApiError> {
        Ok(CustomerId::parse(s)?)
    }
}

impl<S: Send + Sync, T: PathId> FromRequestParts<S> for Id<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(segment) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid("path", "must be UTF-8 once percent-decoded"))?;
        T::from_segment(&segment).map(Id)
    }
}

/// The optional `Idempotency-Key` header: 1-255 visible ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        value
            .to_str()
            .ok()
            .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
            .map(|k| IdempotencyKey(Some(k.to_owned())))
            .ok_or_else(|| ApiError::invalid("Idempotency-Key", "must be 1-255 visible ASCII characters"))
    }
}
