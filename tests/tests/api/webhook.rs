//! The Stripe webhook handler on fixtures shaped like Stripe's documented events, signed in the
//! test as Stripe signs them, against the real store; the authorizer sees each change on the
//! very next request.

use base64::Engine;
use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use shared::app::authorize::Authorizer;
use shared::config::{FailMode, Secrets};
use shared::domain::api_key::{ApiKey, KeyEnv};
use shared::domain::customers::{Customer, CustomerId, SubscriptionStatus};
use shared::domain::plans::{Plan, PlanId, RateLimit};
use shared::domain::time::UnixTime;
use shared::store::dynamo::DynamoStore;
use shared::store::{CustomerStore, KeyStore, NewKey, PlanStore};
use shared::stripe::signature::sign;
use stripe_webhook::handler::{EVENT_LEASE_S, Webhook};
use tollgate_tests::{TestDb, fresh_db};

const SECRET: &str = "whsec_test_current";
const OLD_SECRET: &str = "whsec_test_previous";
const GRACE_S: u64 = 3_600;
/// Just after the last fixture's `created`.
const NOW: UnixTime = UnixTime(1_795_428_500);

fn fixture(name: &str) -> Value {
    let path = format!("{}/../events/stripe-{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

struct Fixture {
    db: TestDb,
    webhook: Webhook<DynamoStore>,
    authorizer: Authorizer<DynamoStore>,
    key: ApiKey,
}

/// Plans `pro` (price_1QProMonthly, 100/min) and `basic` (price_1QBasicMonthly, 1/min), and a
/// key for customer `user-42` that follows the customer's plan.
async fn setup() -> Fixture {
    let db = fresh_db().await;
    for (id, price, limit) in [("pro", "price_1QProMonthly", 100), ("basic", "price_1QBasicMonthly", 1)] {
        let plan = Plan {
            id: PlanId::parse(id).unwrap(),
            name: id.into(),
            rate_limit: Some(RateLimit { limit, window_s: 60 }),
            quota: None,
            stripe_price_ids: vec![price.into()],
            meter_event_name: Some(format!("api_{id}")),
            max_keys: None,
            created_at: NOW,
            updated_at: NOW,
        };
        db.store.create_plan(&plan).await.unwrap();
    }
    let key = ApiKey::generate(KeyEnv::Test).unwrap();
    db.store
        .create_key(NewKey { ..NewKey::new(&key, CustomerId::parse("user-42").unwrap(), None, NOW) })
        .await
        .unwrap();
    let secrets = Secrets::parse(&format!("{OLD_SECRET},{SECRET}"));
    let webhook = Webhook::new(db.store.clone(), secrets, 300, GRACE_S);
    let authorizer = Authorizer::new(db.store.clone(), FailMode::Closed);
    Fixture { db, webhook, authorizer, key }
}

impl Fixture {
    async fn post_raw(&self, body: &[u8], signature: Option<String>, now: UnixTime) -> (u16, Value) {
        let mut headers = HeaderMap::new();
        if let Some(sig) = signature {
            headers.insert("stripe-signature", HeaderValue::from_str(&sig).unwrap());
        }
        let resp = self.webhook.handle(&headers, body, "req-webhook", now).await;
        (resp.status().as_u16(), serde_json::from_str(resp.body()).unwrap())
    }

    /// Posts `event` signed with the current secret at `NOW`; returns the outcome.
    async fn post(&self, event: &Value) -> String {
        let body = serde_json::to_vec(event).unwrap();
        let (status, resp) = self.post_raw(&body, Some(sign(&body, SECRET, NOW.secs())), NOW).await;
        assert_eq!(status, 200, "{resp}");
        resp["outcome"].as_str().unwrap().to_owned()
    }

    async fn customer(&self, id: &str) -> shared::domain::customers::Customer {
        self.db.store.get_customer(&CustomerId::parse(id).unwrap()).await.unwrap().unwrap()
    }

    async fn decide(&self, now: UnixTime) -> Result<(), &'static str> {
        self.authorizer
            .decide(Some(self.key.expose_secret()), tollgate_tests::ANY_ROUTE, now)
            .await
            .outcome
            .map_err(|d| d.code())
    }

    fn writes(&self) -> u64 {
        ["PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"]
            .iter()
            .map(|op| self.db.requests.get(op))
            .sum()
    }
}

#[tokio::test]
async fn the_subscription_lifecycle_drives_the_keys() {
    let f = setup().await;
    assert_eq!(f.post(&fixture("checkout-session-completed")).await, "applied");
    let c = f.customer("user-42").await;
    assert_eq!(c.stripe_customer_id.as_deref(), Some("cus_RTollgateDemo"));
    // Linked, but what was bought is not known yet: no access.
    assert_eq!((c.subscription_status, c.plan_id.as_ref()), (Some(SubscriptionStatus::Incomplete), None));
    assert_eq!(f.decide(NOW).await, Err("subscription_inactive"));

    assert_eq!(f.post(&fixture("customer-subscription-created")).await, "applied");
    let c = f.customer("user-42").await;
    assert_eq!(c.stripe_subscription_id.as_deref(), Some("sub_1QTollgateDemo"));
    assert_eq!(
        (c.subscription_status, c.plan_id.as_ref().map(PlanId::as_str)),
        (Some(SubscriptionStatus::Active), Some("pro"))
    );
    assert_eq!(c.current_period_end, Some(UnixTime(1_798_020_000)), "from the subscription item");
    for _ in 0..2 {
        assert_eq!(f.decide(NOW).await, Ok(()), "pro allows 100 a minute");
    }

    // A plan change: the very next request has the new (1 a minute) limit.
    assert_eq!(f.post(&fixture("customer-subscription-updated")).await, "applied");
    let next_minute = NOW.plus(60);
    assert_eq!(f.decide(next_minute).await, Ok(()));
    assert_eq!(f.decide(next_minute).await, Err("rate_limited"));

    assert_eq!(f.post(&fixture("invoice-payment-failed")).await, "applied");
    let c = f.customer("user-42").await;
    assert_eq!(c.subscription_status, Some(SubscriptionStatus::PastDue));
    assert_eq!(c.past_due_since, Some(UnixTime(1_795_428_200)));
    assert_eq!(f.decide(NOW.plus(120)).await, Ok(()), "past_due within the grace");
    assert_eq!(f.decide(UnixTime(1_795_428_200 + GRACE_S as i64 + 1)).await, Err("subscription_inactive"));

    assert_eq!(f.post(&fixture("invoice-paid")).await, "applied");
    assert_eq!(f.customer("user-42").await.subscription_status, Some(SubscriptionStatus::Active));
    assert_eq!(f.decide(UnixTime(1_795_428_200 + GRACE_S as i64 + 61)).await, Ok(()));

    assert_eq!(f.post(&fixture("customer-subscription-deleted")).await, "applied");
    assert_eq!(f.customer("user-42").await.subscription_status, Some(SubscriptionStatus::Canceled));
    assert_eq!(f.decide(NOW.plus(600)).await, Err("subscription_inactive"));
}

#[tokio::test]
async fn duplicates_change_nothing_and_older_events_never_overwrite_newer_state() {
    let f = setup().await;
    f.post(&fixture("checkout-session-completed")).await;
    assert_eq!(f.post(&fixture("customer-subscription-deleted")).await, "applied");
    let before = f.customer("user-42").await;
    f.db.requests.reset();
    assert_eq!(f.post(&fixture("customer-subscription-deleted")).await, "duplicate");
    // Its only write is the event-id claim, a conditional put that finds the id and fails.
    assert_eq!((f.writes(), f.db.requests.get("PutItem")), (1, 1), "a duplicate writes nothing");
    // Delivered late: an update and a paid invoice created before the deletion. Recorded, but
    // a canceled subscription stays canceled.
    assert_eq!(f.post(&fixture("customer-subscription-updated")).await, "recorded");
    assert_eq!(f.post(&fixture("invoice-paid")).await, "recorded");
    assert_eq!(f.customer("user-42").await, before);
    assert_eq!(f.decide(NOW).await, Err("subscription_inactive"));
}

#[tokio::test]
async fn same_second_events_are_ordered_by_the_subscription_not_by_arrival_or_event_id() {
    // `created` then `updated` in one second, with event ids that sort the other way: the
    // update wins in both arrival orders.
    let mut updated = fixture("customer-subscription-updated");
    let mut created = fixture("customer-subscription-created");
    for (e, id) in [(&mut updated, "evt_tie_a"), (&mut created, "evt_tie_b")] {
        e["id"] = id.into();
        e["created"] = 1_795_429_000.into();
    }
    for order in [[&updated, &created], [&created, &updated]] {
        let f = setup().await;
        f.post(&fixture("checkout-session-completed")).await;
        for e in order {
            f.post(e).await;
        }
        assert_eq!(f.customer("user-42").await.plan_id.unwrap().as_str(), "basic");
    }
}

#[tokio::test]
async fn bad_signatures_are_400_and_write_nothing() {
    let f = setup().await;
    let body = serde_json::to_vec(&fixture("customer-subscription-deleted")).unwrap();
    f.db.requests.reset();
    let cases: Vec<(Option<String>, UnixTime, &str)> = vec![
        (None, NOW, "missing_signature"),
        (Some("garbage".into()), NOW, "malformed_signature"),
        (Some(format!("t={},v1={}", NOW.secs(), "ab".repeat(32))), NOW, "invalid_signature"),
        (Some(sign(&body, "whsec_wrong", NOW.secs())), NOW, "invalid_signature"),
        // A replay of a genuine delivery, ten minutes later.
        (Some(sign(&body, SECRET, NOW.secs())), NOW.plus(600), "stale_signature"),
        (Some(sign(&body, SECRET, NOW.secs() + 301)), NOW, "stale_signature"),
    ];
    for (sig, now, code) in cases {
        let (status, resp) = f.post_raw(&body, sig.clone(), now).await;
        assert_eq!((status, resp["error"]["code"].as_str().unwrap()), (400, code), "{sig:?}");
        assert!(!resp.to_string().contains(SECRET));
    }
    // Signed, but the signed body was altered.
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    let (status, _) = f.post_raw(&tampered, Some(sign(&body, SECRET, NOW.secs())), NOW).await;
    assert_eq!(status, 400);
    // 1 MB of garbage: unsigned, and signed.
    let garbage: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(f.post_raw(&garbage, None, NOW).await.0, 400);
    let (status, resp) = f.post_raw(&garbage, Some(sign(&garbage, SECRET, NOW.secs())), NOW).await;
    assert_eq!((status, resp["error"]["code"].as_str()), (400, Some("invalid_event")));
    let too_big = vec![b' '; stripe_webhook::handler::MAX_BODY_BYTES + 1];
    assert_eq!(f.post_raw(&too_big, Some(sign(&too_big, SECRET, NOW.secs())), NOW).await.0, 413);

    assert_eq!(f.writes(), 0, "no rejected delivery wrote anything");
    assert!(
        f.db.store
            .get_customer(&CustomerId::parse("user-42").unwrap())
            .await
            .unwrap()
            .is_some_and(|c| c.subscription_status.is_none())
    );
}

#[tokio::test]
async fn either_secret_verifies_while_one_is_rotated_out() {
    let f = setup().await;
    let body = serde_json::to_vec(&fixture("checkout-session-completed")).unwrap();
    let (status, _) = f.post_raw(&body, Some(sign(&body, OLD_SECRET, NOW.secs())), NOW).await;
    assert_eq!(status, 200);
    let body = serde_json::to_vec(&fixture("customer-subscription-created")).unwrap();
    // Stripe signs with both secrets during a rotation: two v1 values.
    let old = sign(&body, OLD_SECRET, NOW.secs());
    let new = sign(&body, SECRET, NOW.secs());
    let both = format!("{old},v1={}", new.split_once(",v1=").unwrap().1);
    let (status, resp) = f.post_raw(&body, Some(both), NOW).await;
    assert_eq!((status, resp["outcome"].as_str()), (200, Some("applied")));
}

#[tokio::test]
async fn a_base64_function_url_body_is_verified_over_its_raw_bytes() {
    let f = setup().await;
    let body = serde_json::to_vec_pretty(&fixture("checkout-session-completed")).unwrap();
    let sig = sign(&body, SECRET, NOW.secs());
    // The Lambda Function URL event, as AWS delivers a body it chose to base64-encode.
    let event = serde_json::json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
        "headers": {"content-type": "application/json", "stripe-signature": sig, "host": "abc.lambda-url.us-east-1.on.aws"},
        "requestContext": {
            "accountId": "anonymous", "apiId": "abc", "domainName": "abc.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abc", "http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1",
            "sourceIp": "3.18.12.63", "userAgent": "Stripe/1.0"}, "requestId": "r1", "routeKey": "$default",
            "stage": "$default", "time": "23/Nov/2026:10:00:00 +0000", "timeEpoch": 1795428500000_i64
        },
        "body": base64::engine::general_purpose::STANDARD.encode(&body),
        "isBase64Encoded": true
    });
    let req = lambda_http::request::from_str(&event.to_string()).expect("a Function URL event");
    let resp = f.webhook.handle(req.headers(), req.body().as_ref(), "r1", NOW).await;
    assert_eq!(resp.status(), 200, "{}", resp.body());
    assert!(f.customer("user-42").await.stripe_customer_id.is_some());
}

#[tokio::test]
async fn unknown_prices_are_recorded_and_other_types_ignored() {
    let f = setup().await;
    f.post(&fixture("checkout-session-completed")).await;
    f.post(&fixture("customer-subscription-created")).await;
    let mut unknown = fixture("customer-subscription-updated");
    unknown["data"]["object"]["items"]["data"][0]["price"]["id"] = "price_1QNobodyMapsThis".into();
    assert_eq!(f.post(&unknown).await, "applied");
    let c = f.customer("user-42").await;
    assert_eq!(c.unknown_price_id.as_deref(), Some("price_1QNobodyMapsThis"));
    assert_eq!(c.plan_id, None, "no plan lists the price, and the operator is told");
    assert_eq!(f.decide(NOW).await, Err("subscription_inactive"), "an unknown price buys no access (fails closed)");
    // The operator adds the price to a plan and resends the event from Stripe's dashboard.
    let mut basic = f.db.store.get_plan(&PlanId::parse("basic").unwrap()).await.unwrap().unwrap();
    basic.stripe_price_ids.push("price_1QNobodyMapsThis".into());
    f.db.store.update_plan(&basic, NOW, std::time::Instant::now() + std::time::Duration::from_secs(60)).await.unwrap();
    assert_eq!(f.post(&unknown).await, "applied", "a resent event derives the billing again");
    assert_eq!(f.customer("user-42").await.plan_id.unwrap().as_str(), "basic");
    assert_eq!(f.decide(NOW).await, Ok(()));
    assert_eq!(f.post(&unknown).await, "duplicate");
    f.db.requests.reset();
    assert_eq!(f.post(&fixture("charge-succeeded")).await, "ignored");
    assert_eq!(f.writes(), 0);
}

#[tokio::test]
async fn subscription_events_before_the_checkout_are_carried_over() {
    let f = setup().await;
    // Stripe does not promise order: the subscription arrives first, for a Stripe customer
    // linked to nobody yet. It is recorded under the Stripe customer; no customer is made.
    assert_eq!(f.post(&fixture("customer-subscription-created")).await, "recorded");
    let nobody = f.db.store.get_customer(&CustomerId::parse("cus_RTollgateDemo").unwrap()).await.unwrap();
    assert_eq!(nobody, None);
    assert_eq!(f.post(&fixture("checkout-session-completed")).await, "applied");
    let c = f.customer("user-42").await;
    assert_eq!((c.subscription_status, c.plan_id.unwrap().as_str()), (Some(SubscriptionStatus::Active), "pro"));
    // Later events find the customer the checkout named.
    assert_eq!(f.post(&fixture("customer-subscription-deleted")).await, "applied");
    assert_eq!(f.decide(NOW).await, Err("subscription_inactive"));
}

/// The table of docs/billing.md, "Subscription status → access", row by row.
#[tokio::test]
async fn every_subscription_status_has_the_access_the_readme_promises() {
    let table = [
        ("active", Ok(())),
        ("trialing", Ok(())),
        ("past_due", Ok(())), // within TOLLGATE_PAST_DUE_GRACE_S
        ("unpaid", Err("subscription_inactive")),
        ("canceled", Err("subscription_inactive")),
        ("incomplete", Err("subscription_inactive")),
        ("incomplete_expired", Err("subscription_inactive")),
        ("paused", Err("subscription_inactive")),
    ];
    assert_eq!(table.len(), SubscriptionStatus::ALL.len());
    for (status, access) in table {
        let f = setup().await;
        f.post(&fixture("checkout-session-completed")).await;
        let mut e = fixture("customer-subscription-updated");
        e["data"]["object"]["status"] = status.into();
        assert_eq!(f.post(&e).await, "applied", "{status}");
        assert_eq!(f.decide(NOW).await, access, "{status}");
        if status == "past_due" {
            let since = e["created"].as_i64().unwrap();
            assert_eq!(f.decide(UnixTime(since + GRACE_S as i64 - 1)).await, Ok(()));
            assert_eq!(f.decide(UnixTime(since + GRACE_S as i64 + 1)).await, Err("subscription_inactive"));
        }
    }
}

// ----- the issue-12 cases, and every order ----------------------------------------------

/// Case 1: the subscription event, then the customer's success page claiming the session,
/// then the checkout event. The claimed key has the subscription's plan from the start.
#[tokio::test]
async fn the_claim_before_the_checkout_event_keeps_the_subscription() {
    let f = setup().await;
    let (api, _standin) = claim_api(&f.db).await;
    assert_eq!(f.post(&fixture("customer-subscription-created")).await, "recorded");
    let (status, body) = claim_session(&api, "cs_test_a1TollgateDemo").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(f.post(&fixture("checkout-session-completed")).await, "recorded", "the claim did it already");
    let c = f.customer("user-42").await;
    assert_eq!((c.subscription_status, c.plan_id.unwrap().as_str()), (Some(SubscriptionStatus::Active), "pro"));
    let key_id = shared::domain::api_key::KeyId::parse(body["key_id"].as_str().unwrap()).unwrap();
    let key = f.db.store.get_key(&key_id).await.unwrap().unwrap();
    assert_eq!(key.limits.rate_limit, Some(RateLimit { limit: 100, window_s: 60 }), "pro's limits, not none");
    assert_eq!(key.limits.governing_plan_id.unwrap().as_str(), "pro");
}

/// Case 3 through the webhook: a checkout naming a customer linked to another Stripe customer
/// writes nothing (200, so Stripe does not retry what retrying cannot fix).
#[tokio::test]
async fn a_checkout_naming_a_customer_linked_elsewhere_writes_nothing() {
    let f = setup().await;
    f.post(&fixture("checkout-session-completed")).await;
    f.post(&fixture("customer-subscription-created")).await;
    let before = f.customer("user-42").await;
    let mut stranger = fixture("checkout-session-completed");
    stranger["id"] = "evt_stranger".into();
    stranger["data"]["object"]["customer"] = "cus_Stranger".into();
    stranger["data"]["object"]["subscription"] = "sub_Stranger".into();
    assert_eq!(f.post(&stranger).await, "conflict");
    assert_eq!(f.customer("user-42").await, before);
    assert_eq!(f.db.store.customer_for_stripe("cus_Stranger").await.unwrap(), None);
}

/// The webhook's side of the same rule: a checkout from a Payment Link whose URL named an
/// existing, unlinked customer links the payer's own Stripe customer, never that customer.
#[tokio::test]
async fn a_payment_link_checkout_never_links_the_customer_its_url_names() {
    let f = setup().await;
    let key = shared::domain::api_key::ApiKey::generate(shared::domain::api_key::KeyEnv::Test).unwrap();
    let victim = shared::domain::customers::CustomerId::parse("user-42").unwrap();
    f.db.store.create_key(shared::store::NewKey::new(&key, victim.clone(), None, NOW)).await.unwrap();
    let before = f.customer("user-42").await;
    let mut via_link = fixture("checkout-session-completed");
    via_link["data"]["object"]["payment_link"] = "plink_1QTollgateDemo".into();
    assert_eq!(f.post(&via_link).await, "applied");
    assert_eq!(f.customer("user-42").await, before, "the customer the URL named is untouched");
    assert_eq!(
        f.db.store.customer_for_stripe("cus_RTollgateDemo").await.unwrap().map(|c| c.as_str().to_owned()),
        Some("cus_RTollgateDemo".to_owned()),
        "the payer's Stripe customer is its own customer"
    );
}

/// Case 4: an invoice moves only the subscription it names, and a failed first invoice of an
/// incomplete subscription grants no past-due grace.
#[tokio::test]
async fn invoices_move_only_their_own_subscription() {
    let f = setup().await;
    f.post(&fixture("checkout-session-completed")).await;
    f.post(&fixture("customer-subscription-created")).await;
    assert_eq!(f.post(&fixture("invoice-payment-failed")).await, "applied");
    assert_eq!(f.customer("user-42").await.subscription_status, Some(SubscriptionStatus::PastDue));
    let after_grace = UnixTime(1_795_428_200 + GRACE_S as i64 + 1);
    assert_eq!(f.decide(after_grace).await, Err("subscription_inactive"));
    // A paid invoice of another subscription of the same Stripe customer.
    let mut other = fixture("invoice-paid");
    other["id"] = "evt_other_sub_paid".into();
    other["data"]["object"]["parent"]["subscription_details"]["subscription"] = "sub_1QSomethingElse".into();
    assert_eq!(f.post(&other).await, "recorded");
    assert_eq!(f.customer("user-42").await.subscription_status, Some(SubscriptionStatus::PastDue));
    assert_eq!(f.decide(after_grace).await, Err("subscription_inactive"), "still 402");
    // An invoice of no subscription at all.
    let mut one_off = fixture("invoice-paid");
    one_off["id"] = "evt_one_off".into();
    one_off["data"]["object"]["parent"] = Value::Null;
    assert_eq!(f.post(&one_off).await, "ignored");

    // An incomplete subscription whose first invoice fails stays without access.
    let g = setup().await;
    g.post(&fixture("checkout-session-completed")).await;
    let mut incomplete = fixture("customer-subscription-created");
    incomplete["data"]["object"]["status"] = "incomplete".into();
    g.post(&incomplete).await;
    assert_eq!(g.post(&fixture("invoice-payment-failed-first")).await, "ignored");
    assert_eq!(g.customer("user-42").await.subscription_status, Some(SubscriptionStatus::Incomplete));
    assert_eq!(g.decide(NOW).await, Err("subscription_inactive"), "no grace for a subscription never paid");
}

/// Case 5 through Stripe: switching plans in the customer portal does not reset the quota.
#[tokio::test]
async fn a_plan_switch_through_stripe_keeps_the_quota_used() {
    use shared::domain::plans::{Period, Quota};
    let f = setup().await;
    for (id, price, quota) in
        [("monthly", "price_1QMonthly", (3, Period::Month)), ("daily", "price_1QDaily", (2, Period::Day))]
    {
        let plan = Plan {
            id: PlanId::parse(id).unwrap(),
            name: id.into(),
            rate_limit: None,
            quota: Some(Quota { limit: quota.0, period: quota.1 }),
            stripe_price_ids: vec![price.into()],
            meter_event_name: None,
            max_keys: None,
            created_at: NOW,
            updated_at: NOW,
        };
        f.db.store.create_plan(&plan).await.unwrap();
    }
    f.post(&fixture("checkout-session-completed")).await;
    let switch = |i: i64, price: &str| {
        let mut e = fixture("customer-subscription-updated");
        e["id"] = format!("evt_switch_{i}").into();
        e["created"] = (1_795_428_400 + i).into();
        e["data"]["object"]["items"]["data"][0]["price"]["id"] = price.into();
        e
    };
    f.post(&switch(0, "price_1QMonthly")).await;
    for _ in 0..3 {
        assert_eq!(f.decide(NOW).await, Ok(()));
    }
    assert_eq!(f.decide(NOW).await, Err("quota_exceeded"));
    f.post(&switch(1, "price_1QDaily")).await;
    assert_eq!(f.decide(NOW).await, Err("quota_exceeded"), "the month's 3 count against the day's 2");
    f.post(&switch(2, "price_1QMonthly")).await;
    assert_eq!(f.decide(NOW).await, Err("quota_exceeded"), "and back: still spent");
}

async fn claim_api(db: &TestDb) -> (issue_key::api::ManagementApi<DynamoStore>, tollgate_tests::stripe::StripeStandIn) {
    use tollgate_tests::stripe::{API_KEY, StripeStandIn, checkout_session, subscription};
    let standin = StripeStandIn::start().await;
    let mut session = checkout_session("cs_test_a1TollgateDemo", "complete", "paid", Some("user-42"));
    session["customer"] = "cus_RTollgateDemo".into();
    session["subscription"] = "sub_1QTollgateDemo".into();
    standin.add_session(session);
    standin.add_subscription(subscription("sub_1QTollgateDemo", "cus_RTollgateDemo", "active", "price_1QProMonthly"));
    let stripe = shared::stripe::api::StripeApi::new(
        &standin.base,
        API_KEY.to_owned().into(),
        std::time::Duration::from_secs(5),
    );
    let api = issue_key::api::ManagementApi::new(db.store.clone(), None).with_stripe(stripe.unwrap(), GRACE_S);
    (api, standin)
}

async fn claim_session(api: &issue_key::api::ManagementApi<DynamoStore>, session: &str) -> (u16, Value) {
    let req = issue_key::api::ApiRequest {
        method: http::Method::GET,
        path: "/v1/claim".into(),
        query: format!("session_id={session}"),
        headers: HeaderMap::new(),
        body: vec![],
        request_id: "req-claim".into(),
        caller: None,
        // Scenarios share a table: no source bucket (claim.rs tests the attempt bounds).
        source: None,
    };
    let resp = api.handle(req, NOW).await;
    (resp.status().as_u16(), serde_json::from_str(resp.body()).unwrap())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Checkout,
    Created,
    Updated,
    Failed,
    Paid,
    Claim,
}

/// Stripe's creation order, and the test's reference: the subscription and its first (paid)
/// invoice, the checkout, the success page's claim, a plan change, a failed renewal.
const IN_ORDER: [Step; 6] = [Step::Created, Step::Paid, Step::Checkout, Step::Claim, Step::Updated, Step::Failed];

/// The fixture for `step`, renamed for scenario `n` so that scenarios share one table.
fn scenario_event(step: Step, n: usize, with_reference: bool) -> Value {
    let name = match step {
        Step::Checkout => "checkout-session-completed",
        Step::Created => "customer-subscription-created",
        Step::Updated => "customer-subscription-updated",
        Step::Failed => "invoice-payment-failed",
        Step::Paid => "invoice-paid",
        Step::Claim => unreachable!("the claim is no event"),
    };
    let mut e = fixture(name);
    if step == Step::Paid {
        // The subscription's first invoice, paid as the subscription starts.
        e["created"] = 1_795_428_005.into();
        e["data"]["object"]["billing_reason"] = "subscription_create".into();
    }
    let reference = if with_reference { format!("\"user-p{n}\"") } else { "null".into() };
    let text = e
        .to_string()
        .replace("cus_RTollgateDemo", &format!("cus_p{n}"))
        .replace("sub_1QTollgateDemo", &format!("sub_p{n}"))
        .replace("\"evt_1Q", &format!("\"evt_p{n}_1Q"))
        .replace("cs_test_a1TollgateDemo", &format!("cs_test_p{n}"))
        .replace("\"user-42\"", &reference);
    serde_json::from_str(&text).unwrap()
}

/// What a scenario ends with, ids normalised: the customer's billing and its keys' limits,
/// access and meter.
async fn final_state(f: &Fixture, n: usize, with_reference: bool) -> String {
    let id = if with_reference { format!("user-p{n}") } else { format!("cus_p{n}") };
    let c = f.customer(&id).await;
    let mut out = format!(
        "customer {:?} {:?} {:?} {:?} {:?} {:?} {:?}\n",
        c.stripe_customer_id,
        c.stripe_subscription_id,
        c.subscription_status,
        c.plan_id,
        c.current_period_end,
        c.past_due_since,
        c.unknown_price_id
    );
    for key_id in f.db.store.customer_key_ids(&c.customer_id).await.unwrap() {
        let k = f.db.store.get_key(&key_id).await.unwrap().unwrap();
        let meter = match &k.limits.governing_plan_id {
            Some(p) => f.db.store.get_plan(p).await.unwrap().and_then(|p| p.meter_event_name),
            None => None,
        };
        out.push_str(&format!("key {:?} {:?} {:?}\n", k.limits, k.access, meter));
    }
    out.replace(&format!("p{n}"), "pN")
}

/// Every order of the six inputs, with and without `client_reference_id`, each with a
/// duplicate delivery mixed in, ends in the state in-order delivery ends in. Against moto
/// (an independent implementation, single-threaded and some fifty times slower: about two
/// seconds a scenario) every eighth order runs, alternating with and without the reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_order_of_events_and_the_claim_ends_in_the_same_state() {
    // Failures name their cause in the logs (the webhook's error line carries the source).
    shared::telemetry::init_with_default("error");
    let external = std::env::var(tollgate_tests::ENDPOINT_VAR).is_ok_and(|v| !v.is_empty());
    let mut orders = vec![IN_ORDER.to_vec()];
    orders.extend(permutations(&IN_ORDER));
    let mut scenarios = vec![];
    for (i, order) in orders.iter().enumerate() {
        for with_reference in [true, false] {
            if external && i > 0 && (i % 8 != 0 || with_reference != (i % 16 == 0)) {
                continue;
            }
            // A duplicate of one step, delivered again somewhere after the first.
            let mut steps = order.clone();
            let dup = steps[i % 6];
            steps.insert((i % 6 + 1 + i / 6 % 5).min(steps.len()), dup);
            scenarios.push((scenarios.len(), with_reference, steps));
        }
    }
    let total = scenarios.len();
    let mut results = vec![];
    // A fresh table per chunk keeps every table small (moto's index queries scan the table).
    for chunk in scenarios.chunks(100) {
        results.extend(run_scenarios(chunk.to_vec()).await);
    }
    let reference = |with: bool| results.iter().find(|(n, w, _, _)| *w == with && *n < 2).unwrap().3.clone();
    let (with_ref, without_ref) = (reference(true), reference(false));
    // In order: past due since the failed renewal, on the plan the update chose; the claimed key
    // has basic's limits and meter.
    assert!(with_ref.contains("Some(PastDue)") && with_ref.contains("Some(PlanId(\"basic\"))"), "{with_ref}");
    assert!(with_ref.contains("Some(UnixTime(1795428200))"), "{with_ref}");
    assert!(with_ref.contains("key ") && with_ref.contains("Some(\"api_basic\")"), "{with_ref}");
    assert_eq!(with_ref.matches("key ").count(), 1, "exactly one key: the claim's");
    let mut mismatches = 0;
    for (n, with, steps, state) in &results {
        let want = if *with { &with_ref } else { &without_ref };
        if state != want {
            mismatches += 1;
            if mismatches <= 3 {
                eprintln!("scenario {n} ({steps:?}, reference {with}):\n{state}\nwanted\n{want}");
            }
        }
    }
    assert_eq!(mismatches, 0, "{total} scenarios");
    assert_eq!(results.len(), if external { 2 + 90 } else { 2 * 721 });
}

/// Runs `scenarios` on a fresh table, eight at a time: (scenario, with reference, steps, state).
async fn run_scenarios(scenarios: Vec<(usize, bool, Vec<Step>)>) -> Vec<(usize, bool, Vec<Step>, String)> {
    use futures::StreamExt;
    use tollgate_tests::stripe::{API_KEY, StripeStandIn, checkout_session, subscription};
    let f = std::sync::Arc::new(setup().await);
    let standin = StripeStandIn::start().await;
    let stripe = shared::stripe::api::StripeApi::new(
        &standin.base,
        API_KEY.to_owned().into(),
        std::time::Duration::from_secs(30),
    );
    let api = std::sync::Arc::new(
        issue_key::api::ManagementApi::new(f.db.store.clone(), None).with_stripe(stripe.unwrap(), GRACE_S),
    );
    for (n, with_reference, _) in &scenarios {
        let mut session = checkout_session(&format!("cs_test_p{n}"), "complete", "paid", None);
        if *with_reference {
            session["client_reference_id"] = format!("user-p{n}").into();
        }
        session["customer"] = format!("cus_p{n}").into();
        session["subscription"] = format!("sub_p{n}").into();
        standin.add_session(session);
        // What Stripe's API says when the claim asks: the subscription as it started.
        standin.add_subscription(subscription(
            &format!("sub_p{n}"),
            &format!("cus_p{n}"),
            "active",
            "price_1QProMonthly",
        ));
    }
    futures::stream::iter(scenarios)
        .map(|(n, with_reference, steps)| {
            let (f, api) = (f.clone(), api.clone());
            async move {
                let mut claimed = false;
                for step in &steps {
                    if *step == Step::Claim {
                        let (status, body) = claim_session(&api, &format!("cs_test_p{n}")).await;
                        assert!(status == 201 || (claimed && status == 409), "{n} {steps:?}: {status} {body}");
                        claimed = true;
                    } else {
                        let body = serde_json::to_vec(&scenario_event(*step, n, with_reference)).unwrap();
                        let (status, resp) = f.post_raw(&body, Some(sign(&body, SECRET, NOW.secs())), NOW).await;
                        assert_eq!(status, 200, "scenario {n} {steps:?}, at {step:?}: {resp}");
                    }
                }
                let state = final_state(&f, n, with_reference).await;
                (n, with_reference, steps, state)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await
}

fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = vec![];
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first.clone());
            out.push(p);
        }
    }
    out
}

/// Storage failing under the webhook: every failed delivery answers 5xx (Stripe retries it) and
/// leaves nothing half-written; redelivered as Stripe would until accepted, the events end in
/// exactly the state a fault-free delivery reaches.
#[tokio::test]
async fn storage_faults_answer_5xx_and_redelivery_ends_in_the_fault_free_state() {
    use shared::store::dynamo::{ClientOptions, build_client};
    use tollgate_tests::faults::{Fault, FaultProxy, Rule};
    let events = ["checkout-session-completed", "customer-subscription-created", "invoice-paid"];

    // Fault-free reference.
    let reference = setup().await;
    for name in events {
        assert!(matches!(reference.post(&fixture(name)).await.as_str(), "applied" | "recorded"), "{name}");
    }
    let want = reference.customer("user-42").await;

    let f = setup().await;
    let proxy = FaultProxy::start(&f.db.endpoint, 11).await;
    let client = build_client(ClientOptions {
        endpoint: Some(proxy.endpoint().to_owned()),
        counter: None,
        attempt_timeout: std::time::Duration::from_secs(1),
        operation_timeout: std::time::Duration::from_secs(3),
    })
    .await;
    let store = DynamoStore::new(client, f.db.table.clone());
    let webhook = Webhook::new(store, Secrets::parse(SECRET), 300, GRACE_S);
    let deliver = |event: &Value, now: UnixTime| {
        let body = serde_json::to_vec(event).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("stripe-signature", HeaderValue::from_str(&sign(&body, SECRET, now.secs())).unwrap());
        let webhook = &webhook;
        async move {
            let resp = webhook.handle(&headers, &body, "req-faults", now).await;
            (resp.status().as_u16(), serde_json::from_str::<Value>(resp.body()).unwrap())
        }
    };

    // Every write fails: 503, and nothing changed.
    let before = f.db.store.get_customer(&CustomerId::parse("user-42").unwrap()).await.unwrap();
    for fault in [Fault::ServerError, Fault::ProvisionedThroughputExceeded, Fault::DropBeforeApply] {
        for op in ["PutItem", "UpdateItem", "TransactWriteItems"] {
            proxy.inject(Rule::on(op, fault));
        }
        let (status, body) = deliver(&fixture("checkout-session-completed"), NOW).await;
        assert!(status >= 500, "{fault:?}: {status} {body}");
        proxy.clear();
        assert_eq!(f.db.store.get_customer(&CustomerId::parse("user-42").unwrap()).await.unwrap(), before);
    }

    // A third of all requests fail in every way, applied-then-dropped included; each event is
    // redelivered until it is accepted, and every event again afterwards (Stripe redelivers).
    for rule in [
        Rule::any(Fault::ServerError).rate(0.1),
        Rule::any(Fault::DropAfterApply).rate(0.1),
        Rule::any(Fault::DropBeforeApply).rate(0.05),
        Rule::any(Fault::Throttling).rate(0.05),
    ] {
        proxy.inject(rule);
    }
    // Stripe's clock: a delivery whose work failed and whose lease could not be given back
    // either holds the event until the lease ends (409 meanwhile), and Stripe's next attempt
    // comes later anyway (minutes, then hours), so a 409 moves the clock past the lease.
    let mut now = NOW;
    let mut failures = 0;
    for name in events.iter().chain(events.iter()) {
        let mut tries = 0;
        loop {
            tries += 1;
            let (status, body) = deliver(&fixture(name), now).await;
            if status == 200 {
                assert!(matches!(body["outcome"].as_str(), Some("applied" | "recorded" | "duplicate")), "{body}");
                break;
            }
            // Another delivery of the same event may hold it for a moment (409), or storage
            // failed (5xx): either way Stripe delivers again.
            assert!(status >= 500 || status == 409, "{name}: {status} {body}");
            failures += 1;
            assert!(tries < 60, "{name} never accepted");
            if status == 409 {
                now = now.plus(EVENT_LEASE_S as i64 + 1);
            }
        }
    }
    assert!(!proxy.injected().is_empty());
    proxy.clear();
    let got = f.customer("user-42").await;
    // Only the time of the last write may differ: a later delivery writes later.
    assert_eq!(Customer { updated_at: want.updated_at, ..got }, want, "after {failures} failed deliveries");
    assert_eq!(f.decide(now).await, Ok(()));
}
