//! The Stripe Checkout claim (`GET /v1/claim?session_id=`), against a local stand-in for
//! Stripe's API and the real store.

use http::{HeaderMap, Method};
use issue_key::handler::{ApiRequest, ManagementApi};
use serde_json::Value;
use shared::authorize::Authorizer;
use shared::config::FailMode;
use shared::domain::customers::CustomerId;
use shared::domain::time::UnixTime;
use shared::store::dynamo::DynamoStore;
use shared::store::{CustomerStore, KeyFilter, KeyStore};
use shared::stripe::api::StripeApi;
use std::sync::Arc;
use std::time::Duration;
use tollgate_tests::stripe::{API_KEY, StripeStandIn, checkout_session};
use tollgate_tests::{TestDb, fresh_db};

const NOW: UnixTime = UnixTime(1_795_428_030);

async fn setup(api_key: &str) -> (TestDb, Arc<ManagementApi<DynamoStore>>, StripeStandIn) {
    let db = fresh_db().await;
    let standin = StripeStandIn::start().await;
    standin.add_session(checkout_session("cs_test_paid", "complete", "paid", Some("user-42")));
    standin.add_session(checkout_session("cs_test_trial", "complete", "no_payment_required", None));
    standin.add_session(checkout_session("cs_test_open", "open", "unpaid", Some("user-7")));
    let stripe = StripeApi::new(&standin.base, api_key.to_owned().into(), Duration::from_secs(5)).unwrap();
    // The admin token is set: the claim must work without it.
    let api = ManagementApi::new(db.store.clone(), Some("admin".to_owned().into())).with_stripe(stripe, 3600);
    (db, Arc::new(api), standin)
}

async fn claim(api: &ManagementApi<DynamoStore>, query: &str) -> (u16, Value) {
    let req = ApiRequest {
        method: Method::GET,
        path: "/v1/claim".into(),
        query: query.into(),
        headers: HeaderMap::new(),
        body: vec![],
        request_id: "req-claim".into(),
    };
    let resp = api.handle(req, NOW).await;
    let (status, body) = (resp.status().as_u16(), serde_json::from_str(resp.body()).unwrap());
    tollgate_tests::openapi::check("GET", "/v1/claim", status, &body);
    (status, body)
}

#[tokio::test]
async fn a_paid_session_gets_one_key_exactly_once() {
    let (db, api, standin) = setup(API_KEY).await;
    let (status, body) = claim(&api, "session_id=cs_test_paid").await;
    assert_eq!(status, 201, "{body}");
    let key = body["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("tg_test_"), "a test-mode session gets a test key");
    assert_eq!(body["customer_id"], "user-42", "client_reference_id names the customer");
    assert_eq!(body["metadata"]["checkout_session"], "cs_test_paid");

    let customer = db.store.get_customer(&CustomerId::parse("user-42").unwrap()).await.unwrap().unwrap();
    assert_eq!(customer.stripe_customer_id.as_deref(), Some("cus_Standin123"));
    assert_eq!(customer.stripe_subscription_id.as_deref(), Some("sub_Standin123"));
    let authorizer = Authorizer::new(db.store.clone(), FailMode::Closed);
    assert!(authorizer.decide(Some(&key), NOW).await.is_allowed());

    let (status, again) = claim(&api, "session_id=cs_test_paid").await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("already_claimed")));
    assert_eq!(again["error"]["key_id"], body["key_id"]);
    assert_eq!(again["error"]["display"], body["display"]);
    assert!(!again.to_string().contains(&key), "the plaintext is never shown twice");

    let all = db.store.list_keys(&KeyFilter::default(), 100, None).await.unwrap();
    assert_eq!(all.items.len(), 1);
    // Every call to Stripe carried the secret key.
    let requests = standin.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.path == "/v1/checkout/sessions/cs_test_paid"
        && r.authorization.as_deref() == Some(&format!("Bearer {API_KEY}"))));
}

#[tokio::test]
async fn concurrent_claims_of_one_session_issue_one_key() {
    let (db, api, _standin) = setup(API_KEY).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move { claim(&api, "session_id=cs_test_trial").await.0 })
        })
        .collect();
    let mut statuses = vec![];
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 409), "{statuses:?}");
    let all = db.store.list_keys(&KeyFilter::default(), 100, None).await.unwrap();
    assert_eq!(all.items.len(), 1);
    assert_eq!(all.items[0].customer_id.as_str(), "cus_Standin123", "no client_reference_id: the Stripe customer id");
}

#[tokio::test]
async fn unpaid_unknown_and_malformed_sessions_issue_nothing() {
    let (db, api, _standin) = setup(API_KEY).await;
    let cases = [
        ("session_id=cs_test_open", 402, "payment_required"),
        ("session_id=cs_test_nope", 404, "not_found"),
        ("session_id=pi_123", 422, "invalid_field"),
        ("session_id=cs_test_x%2F..%2Fy", 422, "invalid_field"),
        ("", 422, "invalid_field"),
        ("session_id=cs_test_paid&extra=1", 422, "invalid_field"),
    ];
    for (query, status, code) in cases {
        let (s, body) = claim(&api, query).await;
        assert_eq!((s, body["error"]["code"].as_str().unwrap()), (status, code), "{query}: {body}");
    }
    assert!(db.store.list_keys(&KeyFilter::default(), 100, None).await.unwrap().items.is_empty());
    // The open session can still be claimed once it is paid.
    assert!(db.store.get_customer(&CustomerId::parse("user-7").unwrap()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_wrong_stripe_key_is_an_upstream_error_and_a_missing_one_is_501() {
    let (db, api, _standin) = setup("sk_test_wrong").await;
    let (status, body) = claim(&api, "session_id=cs_test_paid").await;
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("upstream_error")), "{body}");
    assert!(!body.to_string().contains("sk_test_wrong"));
    // A failed attempt does not use the session up.
    let again = ManagementApi::new(db.store.clone(), None);
    let (status, body) = claim(&again, "session_id=cs_test_paid").await;
    assert_eq!((status, body["error"]["code"].as_str()), (501, Some("not_configured")));
    assert!(db.store.list_keys(&KeyFilter::default(), 100, None).await.unwrap().items.is_empty());
}
