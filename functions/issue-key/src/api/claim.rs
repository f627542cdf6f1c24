//! `GET /v1/claim?session_id=cs_...`: a paying customer's first key, exactly once per Stripe
//! Checkout session. Public: the session id (from Stripe's success URL) is the credential, and
//! Stripe confirms it. Which sessions qualify is `shared::app::checkout`'s rule; the customer's
//! billing is written by the same service the webhook uses, so either may come first.

use super::{Api, ManagementApi, ManagementStore, Reply, issued_json, ok};
use crate::error::ApiError;
use crate::extract::{Query, RequestContext};
use crate::json::ClaimQuery;
use http::StatusCode;
use shared::app::billing::{Applied, BillingError, plan_for_price};
use shared::app::checkout;
use shared::app::idempotent::{self, Job, Once, Scope};
use shared::domain::key_records::KeyRecord;
use shared::domain::keys::{ApiKey, KeyEnv, KeyId};
use shared::domain::time::UnixTime;
use shared::store::{Attempt, AttemptStore, NewKey};
use shared::stripe::api::{CheckoutSession, CheckoutSessions, StripeError};

/// The public claim's bounds: attempts per Checkout session id, and per source address, in a
/// fixed window. Past either, 429 before Stripe is asked anything.
pub const CLAIM_ATTEMPTS_PER_SESSION: u64 = 10;
pub const CLAIM_ATTEMPTS_PER_SOURCE: u64 = 30;
pub const CLAIM_ATTEMPT_WINDOW_S: u64 = 600;
/// How long a claim holds its session: longer than everything it does (Stripe's answer, the
/// billing fan-out's budget, the key), so no second claimant can take over while the first is
/// still issuing a key.
const CLAIM_LEASE_S: u64 = 120;

pub(super) async fn claim<S: ManagementStore>(
    api: Api<S>,
    ctx: RequestContext,
    Query(query): Query<ClaimQuery>,
) -> Reply {
    let now = ctx.now();
    let session_id = query.session_id.0;
    let source = ctx.source.as_deref();
    let stripe = api
        .stripe
        .as_ref()
        .ok_or(ApiError::NotConfigured("The claim flow needs STRIPE_API_KEY; this deployment has none."))?;
    bound_attempts(&api.store, &session_id, source, now).await?;
    let session = confirm(stripe, &session_id).await?;
    let plans = api.store.list_plans().await?;
    let claimable = checkout::claimable(&session, |price| plan_for_price(&plans, price), now).map_err(|refusal| {
        let (status, code) = refusal.status_and_code();
        ApiError::Refused { status, code, message: refusal.to_string() }
    })?;
    if let Some(deployment) = api.key_env.filter(|d| *d != claimable.env) {
        let mode = if deployment == KeyEnv::Live { "live" } else { "test" };
        return Err(ApiError::invalid("session_id", format!("this deployment claims {mode}-mode sessions only")));
    }

    let job =
        Job { scope: Scope::CheckoutClaim, id: &session_id, fingerprint: &session_id, lease_s: CLAIM_LEASE_S, now };
    let work = || async {
        let (key, record) = issue(&api, claimable, &session_id, now).await?;
        let key_id = record.key_id.as_str().to_owned();
        Ok::<_, ApiError>(((key, record), key_id))
    };
    match idempotent::once(&api.store, job, work).await? {
        Once::Ran { value: (key, record), .. } => {
            tracing::info!(key_id = %record.key_id, customer_id = %record.customer_id, source = source.unwrap_or("-"), "checkout claimed");
            ok(StatusCode::CREATED, issued_json(&key, &record, now))
        }
        Once::InProgress => {
            Err(ApiError::Conflict("This session is being claimed right now; retry in a moment.".into()))
        }
        Once::Done { result, .. } => {
            let key_id = KeyId::parse(&result).map_err(|e| ApiError::Internal(Box::new(e)))?;
            let key = api.store.get_key(&key_id).await?.ok_or(ApiError::NotFound("key"))?;
            Err(ApiError::AlreadyClaimed {
                message: "This Checkout session's key was already issued; it is shown only once.".into(),
                key_id: key.key_id.as_str().to_owned(),
                display: key.display,
            })
        }
    }
}

/// Stripe's word on the session. Its own words stay in the log: the caller is the public.
async fn confirm(sessions: &impl CheckoutSessions, session_id: &str) -> Result<CheckoutSession, ApiError> {
    sessions.checkout_session(session_id).await.map_err(|e| match e {
        StripeError::NotFound => ApiError::NotFound("checkout session"),
        e => {
            tracing::error!(error = %e, "Stripe could not be asked about a Checkout session");
            ApiError::Upstream("Stripe could not confirm the session; retry shortly.".into())
        }
    })
}

/// Bounded before Stripe is asked: guessing session ids costs the guesser, not the Stripe API
/// quota. The session's bucket holds whoever tries it; the source's holds one address however
/// many sessions it tries. The source first: an exhausted source spends nothing of the
/// session's attempts.
async fn bound_attempts<S: AttemptStore>(
    store: &S,
    session_id: &str,
    source: Option<&str>,
    now: UnixTime,
) -> Result<(), ApiError> {
    let mut buckets = vec![];
    if let Some(source) = source {
        buckets.push((format!("claim#source#{}", source_bucket(source)), CLAIM_ATTEMPTS_PER_SOURCE));
    }
    buckets.push((format!("claim#session#{session_id}"), CLAIM_ATTEMPTS_PER_SESSION));
    for (bucket, limit) in buckets {
        if let Attempt::Exhausted { retry_after } = store.attempt(&bucket, limit, CLAIM_ATTEMPT_WINDOW_S, now).await? {
            let kind = bucket.split('#').nth(1);
            tracing::warn!(bucket = kind, source = source.unwrap_or("-"), "claim attempts exhausted");
            return Err(ApiError::TooManyAttempts { message: "Too many claim attempts; retry later.", retry_after });
        }
    }
    Ok(())
}

/// A source address's bucket: the address itself for IPv4, its /64 for IPv6 (one host holds a
/// whole /64), anything else as given.
fn source_bucket(source: &str) -> String {
    match source.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(ip) => ip.to_string(),
        Err(_) => source.chars().filter(|c| c.is_ascii_alphanumeric() || ".:-".contains(*c)).take(64).collect(),
    }
}

/// Links and bills the customer (as the webhook would), then issues their key.
async fn issue<S: ManagementStore>(
    api: &ManagementApi<S>,
    claimable: checkout::Claimable,
    session_id: &str,
    now: UnixTime,
) -> Result<(ApiKey, KeyRecord), ApiError> {
    match api.billing.apply(&claimable.input, now).await {
        Ok(Applied::Synced { .. }) => {}
        Ok(Applied::Conflict(conflict)) => {
            tracing::warn!(session_id, error = %conflict, "claim refused: the customer is linked elsewhere");
            return Err(ApiError::Refused {
                status: 409,
                code: "customer_conflict",
                message: "This session's customer is already linked to another Stripe customer.".into(),
            });
        }
        Err(BillingError::Store(e)) => return Err(e.into()),
        Err(e) => return Err(ApiError::Unfinished(e.to_string())),
    }
    let key = ApiKey::generate(claimable.env).map_err(|e| ApiError::Internal(Box::new(e)))?;
    let record = api
        .store
        .create_key(NewKey {
            name: Some("Stripe Checkout".into()),
            metadata: [("checkout_session".to_owned(), session_id.to_owned())].into_iter().collect(),
            // No plan of its own: it follows the customer's, which the subscription's price decides.
            ..NewKey::new(&key, claimable.customer_id, None, now)
        })
        .await?;
    Ok((key, record))
}

#[cfg(test)]
mod tests {
    use super::source_bucket;

    #[test]
    fn one_host_is_one_bucket() {
        assert_eq!(source_bucket("203.0.113.7"), "203.0.113.7");
        assert_eq!(source_bucket("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(source_bucket("2001:db8:1:2:bbbb::9"), source_bucket("2001:db8:1:2:aaaa::1"));
        assert_eq!(source_bucket("x'; drop"), "xdrop");
    }
}
