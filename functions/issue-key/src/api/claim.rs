//! `GET /v1/claim?session_id=cs_...`: a paying customer's first key, exactly once per Stripe
//! Checkout session (`shared::app::claim`). Public: the session id is the credential.

use super::{Api, ManagementStore, Reply, issued_json, ok};
use crate::error::ApiError;
use crate::extract::{Query, RequestContext};
use crate::json::ClaimQuery;
use http::StatusCode;
use shared::app::claim::ClaimError;

pub(super) async fn claim<S: ManagementStore>(
    api: Api<S>,
    ctx: RequestContext,
    Query(query): Query<ClaimQuery>,
) -> Reply {
    let now = ctx.now();
    let source = ctx.source.as_deref();
    let claims = api
        .claims
        .as_ref()
        .ok_or(ApiError::NotConfigured("The claim flow needs STRIPE_API_KEY; this deployment has none."))?;
    let (key, record) = claims.claim(&query.session_id.0, source, now).await.map_err(refusal)?;
    tracing::info!(key_id = %record.key_id, customer_id = %record.customer_id, source = source.unwrap_or("-"), "checkout claimed");
    ok(StatusCode::CREATED, issued_json(&key, &record, now))
}

/// A claim's refusal as the API answers it. Stripe's own words stay in the log: the caller is
/// the public.
fn refusal(e: ClaimError) -> ApiError {
    match e {
        ClaimError::TooManyAttempts { retry_after } => {
            ApiError::TooManyAttempts { message: "Too many claim attempts; retry later.", retry_after }
        }
        ClaimError::UnknownSession => ApiError::NotFound("checkout session"),
        ClaimError::StripeUnavailable(e) => {
            tracing::error!(error = %e, "Stripe could not be asked about a Checkout session");
            ApiError::Upstream("Stripe could not confirm the session; retry shortly.".into())
        }
        ClaimError::Refused(refusal) => {
            let (status, code) = refusal.status_and_code();
            ApiError::Refused { status, code, message: refusal.to_string() }
        }
        e @ ClaimError::WrongMode(_) => ApiError::invalid("session_id", e.to_string()),
        ClaimError::InProgress => {
            ApiError::Conflict("This session is being claimed right now; retry in a moment.".into())
        }
        ClaimError::AlreadyClaimed(key) => ApiError::AlreadyClaimed {
            message: "This Checkout session's key was already issued; it is shown only once.".into(),
            key_id: key.key_id.as_str().to_owned(),
            display: key.display,
        },
        ClaimError::CustomerConflict => ApiError::Refused {
            status: 409,
            code: "customer_conflict",
            message: "This session's customer is already linked to another Stripe customer.".into(),
        },
        ClaimError::Unfinished(message) => ApiError::Unfinished(message),
        ClaimError::Store(e) => e.into(),
        e @ (ClaimError::Randomness(_) | ClaimError::CorruptRecord(_)) => ApiError::Internal(Box::new(e)),
    }
}
