//! The Stripe Checkout claim (`GET /v1/claim?session_id=`), against a local stand-in for
//! Stripe's API (full-shape objects, `expand[]` as Stripe does it) and the real store. The
//! caller is treated as the adversary: they may hold any session id of the seller's account
//! and may have chosen its `client_reference_id`.

use http::{HeaderMap, Method};
use issue_key::api::{ApiRequest, ManagementApi};
use serde_json::Value;
use shared::app::authorize::Authorizer;
use shared::app::billing::Billing;
use shared::app::claim::{CLAIM_ATTEMPTS_PER_SESSION, CheckoutClaim, ClaimError};
use shared::config::FailMode;
use shared::domain::api_key::{ApiKey, KeyEnv};
use shared::domain::customers::{CustomerId, SubscriptionStatus};
use shared::domain::plans::{Plan, PlanId, RateLimit};
use shared::store::dynamo::DynamoStore;
use shared::store::{CustomerStore, KeyFilter, KeyStore, NewKey, PlanStore};
use shared::stripe::api::StripeApi;
use shared::stripe::memory::MemoryStripe;
use std::sync::Arc;
use std::time::Duration;
use tollgate_tests::stripe::{API_KEY, StripeStandIn, checkout_session, subscription};
use tollgate_tests::{TestDb, fresh_db};

use tollgate_tests::NOW;

async fn setup(api_key: &str) -> (TestDb, Arc<ManagementApi<DynamoStore>>, StripeStandIn) {
    let db = fresh_db().await;
    let pro = Plan {
        id: PlanId::parse("pro").unwrap(),
        name: "Pro".into(),
        rate_limit: Some(RateLimit { limit: 100, window_s: 60 }),
        quota: None,
        stripe_price_ids: vec!["price_1QProMonthly".into()],
        meter_event_name: Some("api_requests".into()),
        max_keys: None,
        created_at: NOW,
        updated_at: NOW,
    };
    db.store.create_plan(&pro).await.unwrap();
    let standin = StripeStandIn::start().await;
    standin.add_subscription(subscription("sub_Standin123", "cus_Standin123", "active", "price_1QProMonthly"));
    standin.add_session(checkout_session("cs_test_paid", "complete", "paid", Some("user-42")));
    standin.add_session(checkout_session("cs_test_trial", "complete", "no_payment_required", None));
    standin.add_session(checkout_session("cs_test_open", "open", "unpaid", Some("user-7")));
    let stripe = StripeApi::new(&standin.base, api_key.to_owned().into(), Duration::from_secs(5)).unwrap();
    // The admin token is set: the claim must work without it.
    let api = ManagementApi::new(db.store.clone(), Some("admin".to_owned().into())).with_stripe(stripe, 3600);
    (db, Arc::new(api), standin)
}

async fn claim(api: &ManagementApi<DynamoStore>, query: &str) -> (u16, Value) {
    claim_from(api, query, "203.0.113.9").await
}

async fn claim_from(api: &ManagementApi<DynamoStore>, query: &str, source: &str) -> (u16, Value) {
    let req = ApiRequest {
        method: Method::GET,
        path: "/v1/claim".into(),
        query: query.into(),
        headers: HeaderMap::new(),
        body: vec![],
        request_id: "req-claim".into(),
        caller: None,
        source: Some(source.into()),
    };
    let resp = api.handle(req, NOW).await;
    let (status, body) = (resp.status().as_u16(), serde_json::from_str(resp.body()).unwrap());
    tollgate_tests::openapi::check("GET", "/v1/claim", status, &body);
    (status, body)
}

async fn no_keys(db: &TestDb) -> bool {
    db.store.list_keys(&KeyFilter::default(), 100, None).await.unwrap().items.is_empty()
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

    // Billed from the subscription Stripe returned with the session, before any webhook.
    let customer = db.store.get_customer(&CustomerId::parse("user-42").unwrap()).await.unwrap().unwrap();
    assert_eq!(customer.stripe_customer_id.as_deref(), Some("cus_Standin123"));
    assert_eq!(customer.stripe_subscription_id.as_deref(), Some("sub_Standin123"));
    assert_eq!(customer.subscription_status, Some(SubscriptionStatus::Active));
    assert_eq!(customer.plan_id.as_ref().map(PlanId::as_str), Some("pro"));
    let record = db.store.list_keys(&KeyFilter::default(), 10, None).await.unwrap().items.remove(0);
    assert_eq!(record.limits.rate_limit, Some(RateLimit { limit: 100, window_s: 60 }), "the plan's limits");
    let authorizer = Authorizer::new(db.store.clone(), FailMode::Closed);
    assert!(authorizer.decide(Some(&key), tollgate_tests::ANY_ROUTE, NOW).await.is_allowed());

    let (status, again) = claim(&api, "session_id=cs_test_paid").await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("already_claimed")));
    assert_eq!(again["error"]["key_id"], body["key_id"]);
    assert_eq!(again["error"]["display"], body["display"]);
    assert!(!again.to_string().contains(&key), "the plaintext is never shown twice");

    let all = db.store.list_keys(&KeyFilter::default(), 100, None).await.unwrap();
    assert_eq!(all.items.len(), 1);
    // Every call to Stripe carried the secret key and asked for the subscription expanded.
    let requests = standin.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.path == "/v1/checkout/sessions/cs_test_paid"
        && r.query.as_deref() == Some("expand%5B%5D=subscription")
        && r.authorization.as_deref() == Some(&format!("Bearer {API_KEY}"))));
}

#[tokio::test]
async fn concurrent_claims_of_one_session_issue_one_key() {
    let (db, api, standin) = setup(API_KEY).await;
    standin.add_subscription(subscription("sub_Standin123", "cus_Standin123", "trialing", "price_1QProMonthly"));
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
async fn only_paid_subscription_sessions_with_a_live_subscription_yield_a_key() {
    let (db, api, standin) = setup(API_KEY).await;
    let mut payment = checkout_session("cs_test_payment", "complete", "paid", Some("user-9"));
    payment["mode"] = "payment".into();
    payment["subscription"] = Value::Null;
    standin.add_session(payment);
    let mut setup_mode = checkout_session("cs_test_setup", "complete", "no_payment_required", Some("user-9"));
    setup_mode["mode"] = "setup".into();
    setup_mode["subscription"] = Value::Null;
    standin.add_session(setup_mode);
    let mut no_sub = checkout_session("cs_test_nosub", "complete", "paid", Some("user-9"));
    no_sub["subscription"] = Value::Null;
    standin.add_session(no_sub);
    let mut gone = checkout_session("cs_test_gone", "complete", "paid", Some("user-9"));
    gone["subscription"] = "sub_Gone".into();
    standin.add_session(gone);
    standin.add_subscription(subscription("sub_Gone", "cus_Standin123", "canceled", "price_1QProMonthly"));
    let mut unknown_sub = checkout_session("cs_test_unknownsub", "complete", "paid", Some("user-9"));
    unknown_sub["subscription"] = "sub_NotAtStripe".into();
    standin.add_session(unknown_sub);
    let mut old = checkout_session("cs_test_old", "complete", "paid", Some("user-9"));
    old["created"] = (NOW.secs() - 8 * 86_400).into();
    standin.add_session(old);
    let mut other_product = checkout_session("cs_test_other", "complete", "paid", Some("user-9"));
    other_product["subscription"] = "sub_Newsletter".into();
    standin.add_session(other_product);
    standin.add_subscription(subscription("sub_Newsletter", "cus_Standin123", "active", "price_1QNewsletter"));
    let mut bad_ref = checkout_session("cs_test_badref", "complete", "paid", Some("not a valid id"));
    bad_ref["client_reference_id"] = "not a valid id".into();
    standin.add_session(bad_ref);
    let cases = [
        ("session_id=cs_test_open", 409, "checkout_incomplete"),
        ("session_id=cs_test_payment", 422, "not_a_subscription"),
        ("session_id=cs_test_setup", 422, "not_a_subscription"),
        ("session_id=cs_test_nosub", 409, "no_subscription"),
        ("session_id=cs_test_unknownsub", 409, "no_subscription"),
        ("session_id=cs_test_gone", 409, "subscription_inactive"),
        ("session_id=cs_test_old", 409, "session_expired"),
        ("session_id=cs_test_other", 409, "unknown_price"),
        ("session_id=cs_test_badref", 422, "invalid_field"),
        ("session_id=cs_test_nope", 404, "not_found"),
        ("session_id=pi_123", 422, "invalid_field"),
        ("session_id=cs_test_x%2F..%2Fy", 422, "invalid_field"),
        ("", 422, "invalid_field"),
        ("session_id=cs_test_paid&extra=1", 422, "invalid_field"),
    ];
    db.requests.reset();
    for (query, status, code) in cases {
        let (s, body) = claim(&api, query).await;
        assert_eq!((s, body["error"]["code"].as_str().unwrap()), (status, code), "{query}: {body}");
    }
    for op in ["PutItem", "DeleteItem", "TransactWriteItems"] {
        assert_eq!(db.requests.get(op), 0, "a refused claim writes nothing ({op})");
    }
    // Only the attempt counters (session and source) of the ten that were asked of Stripe.
    assert_eq!(db.requests.get("UpdateItem"), 2 * 10);
    let items = db.store.client().scan().table_name(&db.table).send().await.unwrap().items.unwrap_or_default();
    for item in items {
        let pk = item["pk"].as_s().unwrap();
        assert!(pk.starts_with("PLAN#") || pk.starts_with("LIMIT#claim#"), "a refused claim wrote {pk}");
    }
    assert!(no_keys(&db).await);
    for c in ["user-7", "user-9"] {
        assert!(db.store.get_customer(&CustomerId::parse(c).unwrap()).await.unwrap().is_none());
    }
    // The open session can still be claimed once it is paid.
    standin.add_session(checkout_session("cs_test_open", "complete", "paid", Some("user-7")));
    assert_eq!(claim(&api, "session_id=cs_test_open").await.0, 201);
}

#[tokio::test]
async fn a_session_cannot_take_over_a_customer_linked_to_another_stripe_customer() {
    let (db, api, standin) = setup(API_KEY).await;
    // acme pays through its own Stripe customer.
    tollgate_tests::bill(&db.store, "acme", "cus_Acme", SubscriptionStatus::Active, Some("price_1QProMonthly"), 1)
        .await;
    let before = db.store.get_customer(&CustomerId::parse("acme").unwrap()).await.unwrap();
    // A stranger pays once (cus_Standin123) with client_reference_id=acme, as a Payment Link's
    // URL allows.
    standin.add_session(checkout_session("cs_test_takeover", "complete", "paid", Some("acme")));
    let (status, body) = claim(&api, "session_id=cs_test_takeover").await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("customer_conflict")), "{body}");
    assert!(no_keys(&db).await, "no key for the stranger under acme");
    assert_eq!(db.store.get_customer(&CustomerId::parse("acme").unwrap()).await.unwrap(), before);
    assert_eq!(db.store.customer_for_stripe("cus_Standin123").await.unwrap(), None);
    // The other way round: the Stripe customer is linked, a second session names another
    // customer for it.
    assert_eq!(claim(&api, "session_id=cs_test_paid").await.0, 201);
    standin.add_session(checkout_session("cs_test_rename", "complete", "paid", Some("user-43")));
    let (status, body) = claim(&api, "session_id=cs_test_rename").await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("customer_conflict")), "{body}");
    assert!(db.store.get_customer(&CustomerId::parse("user-43").unwrap()).await.unwrap().is_none());
    // A refused claim does not use the session up: it stays refused, with the same answer.
    assert_eq!(claim(&api, "session_id=cs_test_rename").await.1["error"]["code"], "customer_conflict");
}

/// A customer the operator made (keys, no Stripe link yet) cannot be taken over by a stranger
/// who pays through a Payment Link whose URL names it: that session is the stranger's own
/// Stripe customer's, whatever `client_reference_id` says; acme stays as it was.
#[tokio::test]
async fn a_payment_link_cannot_name_an_existing_customer() {
    let (db, api, standin) = setup(API_KEY).await;
    let acme = CustomerId::parse("acme").unwrap();
    let key = ApiKey::generate(KeyEnv::Test).unwrap();
    db.store.create_key(NewKey::new(&key, acme.clone(), None, NOW)).await.unwrap();
    let before = db.store.get_customer(&acme).await.unwrap();
    let mut session = checkout_session("cs_test_link", "complete", "paid", Some("acme"));
    session["payment_link"] = "plink_1QTollgateDemo".into();
    standin.add_session(session);
    let (status, body) = claim(&api, "session_id=cs_test_link").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["customer_id"], "cus_Standin123", "the payer's own customer, not acme");
    assert_eq!(db.store.get_customer(&acme).await.unwrap(), before, "acme untouched");
    assert_eq!(
        db.store.customer_for_stripe("cus_Standin123").await.unwrap(),
        Some(CustomerId::parse("cus_Standin123").unwrap())
    );
    assert_eq!(db.store.customer_key_ids(&acme).await.unwrap().len(), 1, "no key for the stranger under acme");
}

#[tokio::test]
async fn stripe_errors_are_not_echoed_and_a_missing_key_is_501() {
    let (db, api, _standin) = setup("sk_test_wrong").await;
    let (status, body) = claim(&api, "session_id=cs_test_paid").await;
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("upstream_error")), "{body}");
    assert!(!body.to_string().contains("sk_test_wrong"));
    assert!(!body.to_string().contains("Invalid API Key"), "Stripe's text stays in the logs: {body}");
    // A failed attempt does not use the session up.
    let again = ManagementApi::new(db.store.clone(), None);
    let (status, body) = claim(&again, "session_id=cs_test_paid").await;
    assert_eq!((status, body["error"]["code"].as_str()), (501, Some("not_configured")));
    assert!(no_keys(&db).await);
}

/// Guessing costs the guesser: a session id, and a source address, get a bounded number of
/// attempts per window; past it, 429 with Retry-After and Stripe is not asked.
#[tokio::test]
async fn claim_attempts_are_bounded_per_session_and_per_source() {
    use shared::app::claim::{CLAIM_ATTEMPT_WINDOW_S, CLAIM_ATTEMPTS_PER_SESSION, CLAIM_ATTEMPTS_PER_SOURCE};
    let (db, api, standin) = setup(API_KEY).await;
    let stripe_calls = || standin.requests().len() as u64;

    // One session, from many addresses: the session's bucket holds.
    for i in 0..CLAIM_ATTEMPTS_PER_SESSION {
        let (status, body) = claim_from(&api, "session_id=cs_test_open", &format!("198.51.100.{i}")).await;
        assert_eq!((status, body["error"]["code"].as_str()), (409, Some("checkout_incomplete")), "{body}");
    }
    let (status, body) = claim_from(&api, "session_id=cs_test_open", "198.51.100.200").await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_attempts")), "{body}");
    let retry = body["error"]["retry_after"].as_u64().unwrap();
    assert!(retry > 0 && retry <= CLAIM_ATTEMPT_WINDOW_S, "{retry}");
    assert_eq!(stripe_calls(), CLAIM_ATTEMPTS_PER_SESSION, "the refused attempt never reached Stripe");

    // One address, guessing session ids: its bucket holds; another address is unaffected.
    let before = stripe_calls();
    for i in 0..CLAIM_ATTEMPTS_PER_SOURCE {
        let (status, _) = claim_from(&api, &format!("session_id=cs_test_guess{i:04}"), "192.0.2.66").await;
        assert_eq!(status, 404);
    }
    let (status, body) = claim_from(&api, "session_id=cs_test_paid", "192.0.2.66").await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_attempts")));
    assert_eq!(stripe_calls() - before, CLAIM_ATTEMPTS_PER_SOURCE);
    let (status, body) = claim_from(&api, "session_id=cs_test_paid", "192.0.2.67").await;
    assert_eq!(status, 201, "{body}");
    // Malformed ids cost nothing at all: refused before any storage or Stripe request.
    db.requests.reset();
    let (status, _) = claim_from(&api, "session_id=not-a-session", "192.0.2.66").await;
    assert_eq!(status, 422);
    assert_eq!(db.requests.total(), 0);
}

/// The claim function's IAM role (infra/template.yaml, `ClaimFunction`) allows every request a
/// claim makes, and nothing here relies on more: every write is matched to a statement by its
/// action and its partition key (`dynamodb:LeadingKeys`), every read by its table or index.
/// Neither Dynoxide nor moto enforces IAM, so without this a missing permission would surface
/// only in AWS, as a paid claim that can never finish.
#[tokio::test]
async fn the_claim_functions_role_allows_every_request_a_claim_makes() {
    use shared::domain::api_key::{ApiKey, KeyEnv};
    use shared::store::NewKey;
    use shared::store::dynamo::{ClientOptions, build_client};
    use tollgate_tests::faults::FaultProxy;

    let (db, _, standin) = setup(API_KEY).await;
    // A returning customer with a key the operator made: the claim links it and refreshes it.
    let old = ApiKey::generate(KeyEnv::Test).unwrap();
    db.store.create_key(NewKey::new(&old, CustomerId::parse("user-42").unwrap(), None, NOW)).await.unwrap();
    let proxy = FaultProxy::start(&db.endpoint, 1).await;
    let client = build_client(ClientOptions::local(proxy.endpoint())).await;
    let store = DynamoStore::new(client, db.table.clone());
    let stripe = StripeApi::new(&standin.base, API_KEY.to_owned().into(), Duration::from_secs(5)).unwrap();
    let api = ManagementApi::new(store, None).with_stripe(stripe, 3600).with_routes(issue_key::api::Routes::Claim);
    let mut trial = checkout_session("cs_test_trial2", "complete", "no_payment_required", None);
    trial["customer"] = "cus_Trial2".into();
    trial["subscription"] = "sub_Trial2".into();
    standin.add_subscription(subscription("sub_Trial2", "cus_Trial2", "trialing", "price_1QProMonthly"));
    standin.add_session(trial);
    for session in ["cs_test_paid", "cs_test_trial2", "cs_test_paid"] {
        let (status, body) = claim(&api, &format!("session_id={session}")).await;
        assert!(status == 201 || (status == 409 && body["error"]["code"] == "already_claimed"), "{body}");
    }

    let template: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml")).unwrap(),
    )
    .unwrap();
    let statements = template["Resources"]["ClaimFunction"]["Properties"]["Policies"][0]["Statement"].clone();
    let strings = |v: &serde_yaml::Value| -> Vec<String> {
        match v {
            serde_yaml::Value::String(s) => vec![s.clone()],
            serde_yaml::Value::Sequence(items) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
            _ => vec![],
        }
    };
    /// One Allow statement: its actions, its resources ("table" or "index/<name>") and its
    /// LeadingKeys patterns, if it has any.
    struct Allowed {
        actions: Vec<String>,
        resources: Vec<String>,
        leading: Option<Vec<String>>,
    }
    let mut allowed: Vec<Allowed> = vec![];
    for st in statements.as_sequence().unwrap() {
        if st.get("Effect").and_then(|e| e.as_str()) != Some("Allow") {
            continue; // the !If secret statements
        }
        let resource = |r: &serde_yaml::Value| match r {
            serde_yaml::Value::Tagged(t) if t.value.as_str() == Some("Table.Arn") => "table".to_owned(),
            serde_yaml::Value::Tagged(t) => {
                t.value.as_str().unwrap_or_default().trim_start_matches("${Table.Arn}/").to_owned()
            }
            other => other.as_str().unwrap_or_default().to_owned(),
        };
        let resources = match &st["Resource"] {
            serde_yaml::Value::Sequence(items) => items.iter().map(resource).collect(),
            one => vec![resource(one)],
        };
        let leading = st["Condition"]["ForAllValues:StringLike"].get("dynamodb:LeadingKeys").map(strings);
        allowed.push(Allowed { actions: strings(&st["Action"]), resources, leading });
    }
    let permits = |action: &str, resource: &str, pk: Option<&str>| {
        allowed.iter().any(|Allowed { actions, resources, leading }| {
            actions.iter().any(|a| a == &format!("dynamodb:{action}"))
                && resources.iter().any(|r| r == resource)
                && match (leading, pk) {
                    (None, _) => true,
                    (Some(patterns), Some(pk)) => patterns.iter().any(|p| match p.strip_suffix('*') {
                        Some(prefix) => pk.starts_with(prefix),
                        None => pk == p,
                    }),
                    (Some(_), None) => false,
                }
        })
    };
    let pk = |v: &serde_json::Value| v["pk"]["S"].as_str().map(str::to_owned);
    let mut checked = 0;
    for (op, body) in proxy.seen() {
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let requests: Vec<(String, String, Option<String>)> = match op.as_str() {
            "GetItem" => vec![(op.clone(), "table".into(), None)],
            "Query" => {
                let on = body["IndexName"].as_str().map_or("table".to_owned(), |i| format!("index/{i}"));
                vec![(op.clone(), on, None)]
            }
            "PutItem" => vec![(op.clone(), "table".into(), pk(&body["Item"]))],
            "UpdateItem" | "DeleteItem" => vec![(op.clone(), "table".into(), pk(&body["Key"]))],
            "TransactWriteItems" => body["TransactItems"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| {
                    let (kind, inner) = item.as_object().unwrap().iter().next().unwrap();
                    let (action, key) = match kind.as_str() {
                        "Put" => ("PutItem", &inner["Item"]),
                        "Update" => ("UpdateItem", &inner["Key"]),
                        "Delete" => ("DeleteItem", &inner["Key"]),
                        _ => ("ConditionCheckItem", &inner["Key"]),
                    };
                    (action.to_owned(), "table".to_owned(), pk(key))
                })
                .collect(),
            other => panic!("the claim sent {other}, which its role does not allow at all"),
        };
        for (action, resource, pk) in requests {
            assert!(permits(&action, &resource, pk.as_deref()), "the claim role refuses {action} on {resource} {pk:?}");
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} requests seen");
}

// The claim's own rules (`app::claim`) with Stripe's session lookup faked: one key per paid
// session, nothing written otherwise, attempts bounded before Stripe is asked.

async fn key_count(db: &TestDb) -> usize {
    db.store.list_keys(&KeyFilter::default(), 100, None).await.unwrap().items.len()
}

fn unit_paid_session(id: &str, reference: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "object": "checkout.session", "status": "complete", "payment_status": "paid",
        "mode": "subscription", "customer": "cus_1", "client_reference_id": reference,
        "livemode": false, "created": NOW.secs() - 60,
        "subscription": {
            "id": "sub_1", "object": "subscription", "status": "active", "created": NOW.secs() - 60,
            "items": {"data": [{"price": {"id": "price_pro"}, "current_period_end": NOW.secs() + 86_400}]}
        }
    })
}

/// The claim over a fresh table and a fake of Stripe's session lookup holding `sessions`.
async fn claim_with(
    sessions: Vec<serde_json::Value>,
) -> (CheckoutClaim<DynamoStore, MemoryStripe>, TestDb, MemoryStripe) {
    let db = fresh_db().await;
    let store = db.store.clone();
    let plan = Plan {
        id: PlanId::parse("pro").unwrap(),
        name: "Pro".into(),
        rate_limit: None,
        quota: None,
        stripe_price_ids: vec!["price_pro".into()],
        meter_event_name: None,
        max_keys: None,
        created_at: NOW,
        updated_at: NOW,
    };
    store.create_plan(&plan).await.unwrap();
    let stripe = MemoryStripe::with_sessions(sessions);
    let billing = Billing::new(store.clone(), 0, Duration::from_secs(5));
    (CheckoutClaim::new(store.clone(), stripe.clone(), billing), db, stripe)
}

#[tokio::test]
async fn a_paid_session_issues_one_key_once() {
    let (claims, db, _) = claim_with(vec![unit_paid_session("cs_test_1", "acme")]).await;
    let (key, record) = claims.claim("cs_test_1", Some("203.0.113.7"), NOW).await.unwrap();
    assert_eq!(record.customer_id.as_str(), "acme");
    assert_eq!(record.limits.governing_plan_id.as_ref().map(PlanId::as_str), Some("pro"));
    assert_eq!(key.hash(), record.hash);
    // The same session again: the key is not shown twice, and no second key exists.
    match claims.claim("cs_test_1", Some("203.0.113.7"), NOW.plus(5)).await {
        Err(ClaimError::AlreadyClaimed(again)) => assert_eq!(again.key_id, record.key_id),
        other => panic!("expected AlreadyClaimed, got {:?}", other.map(|(_, r)| r.key_id)),
    }
    assert_eq!(key_count(&db).await, 1);
}

/// The claim's record lost (its write failed and the reservation lapsed after 120 s, here
/// removed outright): the same session still yields no second key, and its key is named.
#[tokio::test]
async fn a_session_whose_claim_record_is_lost_yields_no_second_key() {
    use aws_sdk_dynamodb::types::AttributeValue::S;
    use shared::store::schema::{IDEMPOTENCY_SK, PK, SK, idempotency_pk};
    let (claims, db, _) = claim_with(vec![unit_paid_session("cs_test_lost", "acme")]).await;
    let (_, record) = claims.claim("cs_test_lost", None, NOW).await.unwrap();
    db.store
        .client()
        .delete_item()
        .table_name(db.store.table())
        .key(PK, S(idempotency_pk("checkout-claim", "cs_test_lost")))
        .key(SK, S(IDEMPOTENCY_SK.into()))
        .send()
        .await
        .unwrap();
    for at in [NOW.plus(200), NOW.plus(300)] {
        match claims.claim("cs_test_lost", None, at).await {
            Err(ClaimError::AlreadyClaimed(again)) => assert_eq!(again.key_id, record.key_id),
            other => panic!("expected AlreadyClaimed, got {:?}", other.map(|(_, r)| r.key_id)),
        }
    }
    assert_eq!(key_count(&db).await, 1);
}

#[tokio::test]
async fn an_unknown_or_unpaid_session_writes_no_key() {
    let mut unpaid = unit_paid_session("cs_test_2", "acme");
    unpaid["payment_status"] = "unpaid".into();
    let (claims, db, _) = claim_with(vec![unpaid]).await;
    assert!(matches!(claims.claim("cs_test_nope", None, NOW).await, Err(ClaimError::UnknownSession)));
    assert!(matches!(claims.claim("cs_test_2", None, NOW).await, Err(ClaimError::Refused(_))));
    assert_eq!(key_count(&db).await, 0);
}

#[tokio::test]
async fn attempts_past_the_bound_never_reach_stripe() {
    let (claims, _db, stripe) = claim_with(vec![]).await;
    for _ in 0..CLAIM_ATTEMPTS_PER_SESSION {
        assert!(matches!(claims.claim("cs_test_guess", None, NOW).await, Err(ClaimError::UnknownSession)));
    }
    let refused = claims.claim("cs_test_guess", None, NOW).await;
    assert!(matches!(refused, Err(ClaimError::TooManyAttempts { .. })));
    assert_eq!(stripe.sessions_asked(), CLAIM_ATTEMPTS_PER_SESSION as usize);
}
