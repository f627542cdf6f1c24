//! The Stripe webhook handler on fixtures shaped like Stripe's documented events, signed in the
//! test as Stripe signs them, against the real store; the authorizer sees each change on the
//! very next request.

use base64::Engine;
use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use shared::authorize::Authorizer;
use shared::config::{FailMode, Secrets};
use shared::domain::customers::{CustomerId, SubscriptionStatus};
use shared::domain::keys::{ApiKey, KeyEnv};
use shared::domain::plans::{Plan, PlanId, RateLimit};
use shared::domain::time::UnixTime;
use shared::store::dynamo::DynamoStore;
use shared::store::{CustomerStore, KeyStore, NewKey, PlanStore};
use shared::stripe::signature::sign;
use stripe_webhook::handler::Webhook;
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
            meter_event_name: None,
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
        self.authorizer.decide(Some(self.key.expose_secret()), now).await.outcome.map_err(|d| d.code())
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
    assert_eq!(c.plan_id, None, "no plan lists the price: the key has no plan limits, and the operator is told");
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

/// The README's "subscription status → access" table, row by row.
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
