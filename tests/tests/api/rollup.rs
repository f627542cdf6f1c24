//! The usage rollup end to end: the real store on a DynamoDB-protocol server, the real Stripe
//! client against the local stand-in (which records every request and can fail on demand).
//! What must hold in every test: each allowed request is reported to Stripe exactly once
//! (the sum of accepted meter event values equals the allowed count, and no identifier is
//! accepted twice), and nothing is reported for usage that was already reported.

use http::Method;
use issue_key::api::{ApiRequest, ManagementApi};
use shared::app::rollup::{Backoff, Reporting, Rollup, RollupOptions, RunReport, RunStatus, identifier};
use shared::domain::api_key::{ApiKey, KeyEnv, KeyId};
use shared::domain::customers::{CustomerId, SubscriptionStatus};
use shared::domain::lease::Take;
use shared::domain::plans::{Plan, PlanId};
use shared::domain::time::UnixTime;
use shared::domain::usage::MeterDay;
use shared::store::dynamo::DynamoStore;
use shared::store::{AuthorizeStore, KeyStore, NewKey, PlanStore, RollupStore};
use shared::stripe::api::StripeApi;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tollgate_tests::stripe::{API_KEY, Fault, StripeStandIn};
use tollgate_tests::{TestDb, fresh_db};

/// 2026-11-23T10:00:30Z.
use tollgate_tests::NOW;
const METER: &str = "api_requests";
const NAMESPACE: &str = "tollgate-test";

struct Fixture {
    db: TestDb,
    stripe: StripeStandIn,
}

impl Fixture {
    /// A metered plan `pro` (no limits) and an empty table.
    async fn new() -> Self {
        let db = fresh_db().await;
        let plan = Plan {
            id: PlanId::parse("pro").unwrap(),
            name: "Pro".into(),
            rate_limit: None,
            quota: None,
            stripe_price_ids: vec!["price_pro".into()],
            meter_event_name: Some(METER.into()),
            max_keys: None,
            created_at: NOW,
            updated_at: NOW,
        };
        db.store.create_plan(&plan).await.unwrap();
        Self { db, stripe: StripeStandIn::start().await }
    }

    fn store(&self) -> &DynamoStore {
        &self.db.store
    }

    /// A customer billed through Stripe as `cus_<customer>`.
    async fn stripe_customer(&self, customer: &str) {
        tollgate_tests::bill(
            self.store(),
            customer,
            &format!("cus_{customer}"),
            SubscriptionStatus::Active,
            Some("price_pro"),
            1,
        )
        .await;
    }

    async fn key(&self, customer: &str) -> (KeyId, ApiKey) {
        let key = ApiKey::generate(KeyEnv::Live).unwrap();
        let new = NewKey::new(&key, CustomerId::parse(customer).unwrap(), Some(PlanId::parse("pro").unwrap()), NOW);
        (self.store().create_key(new).await.unwrap().key_id, key)
    }

    async fn requests(&self, key: &(KeyId, ApiKey), n: u64, at: UnixTime) {
        for _ in 0..n {
            let d = self.store().take(&key.0, &key.1.hash(), &[], at, &mut Take::one()).await.unwrap().decision;
            assert!(d.outcome.is_ok(), "{:?}", d.outcome);
        }
    }

    fn rollup(&self, options: RollupOptions) -> Rollup<DynamoStore> {
        let stripe = StripeApi::new(&self.stripe.base, API_KEY.to_owned().into(), Duration::from_millis(300)).unwrap();
        Rollup::new(self.store().clone(), Some(stripe), options)
    }

    async fn run(&self, at: UnixTime) -> RunReport {
        self.rollup(fast()).run(at).await.unwrap()
    }

    /// Stripe's view: accepted units per Stripe customer, after checking that every accepted
    /// event is well formed. (The stand-in never forgets an identifier, so a resend shows up
    /// in `duplicates()`, not here; the uniqueness check guards the stand-in's bookkeeping.)
    fn billed(&self) -> BTreeMap<String, u64> {
        let mut seen = HashSet::new();
        let mut out = BTreeMap::new();
        for e in self.stripe.meter_events() {
            assert!(seen.insert(e["identifier"].clone()), "identifier accepted twice: {e:?}");
            assert_eq!(e["event_name"], METER);
            *out.entry(e["payload[stripe_customer_id]"].clone()).or_default() +=
                e["payload[value]"].parse::<u64>().unwrap();
        }
        out
    }

    fn meter_requests(&self) -> usize {
        self.stripe.requests().iter().filter(|r| r.path == "/v1/billing/meter_events").count()
    }
}

/// Test timings: milliseconds of backoff instead of seconds.
fn fast() -> RollupOptions {
    RollupOptions {
        budget: Duration::from_secs(120),
        lease_margin: Duration::from_secs(10),
        concurrency: 4,
        backoff: Backoff { attempts: 4, base: Duration::from_millis(10), rate_limited: Duration::from_millis(20) },
        identifier_namespace: NAMESPACE.into(),
    }
}

fn billed(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(c, v)| (format!("cus_{c}"), *v)).collect()
}

#[tokio::test]
async fn a_run_reports_each_customers_increase_once_and_a_rerun_sends_nothing() {
    let f = Fixture::new().await;
    f.stripe_customer("acme").await;
    f.stripe_customer("beta").await;
    let (a1, a2, b1) = (f.key("acme").await, f.key("acme").await, f.key("beta").await);
    f.requests(&a1, 7, NOW).await;
    f.requests(&a2, 5, NOW).await;
    f.requests(&b1, 4, NOW).await;

    let report = f.run(NOW).await;
    assert_eq!(report.status, Some(RunStatus::Completed));
    assert_eq!(report.reporting, Some(Reporting::Ok));
    // Used this minute: rolled, and each key's marker kept (a busy key is looked at again).
    let keys = (report.keys_active, report.key_days_rolled, report.keys_settled, report.keys_deferred);
    assert_eq!(keys, (3, 3, 0, 3));
    assert_eq!((report.meters_owed, report.events_accepted, report.units_reported), (2, 2, 16));
    assert_eq!(f.billed(), billed(&[("acme", 12), ("beta", 4)]));

    // What Stripe was sent, field by field, with the secret key.
    let events = f.stripe.meter_events();
    let acme = events.iter().find(|e| e["payload[stripe_customer_id]"] == "cus_acme").unwrap();
    assert_eq!(acme["timestamp"], NOW.secs().to_string());
    let acme_day =
        MeterDay { customer_id: CustomerId::parse("acme").unwrap(), day: NOW.day(), meter: Some(METER.into()) };
    assert_eq!(acme["identifier"], identifier(NAMESPACE, &acme_day, METER, 0, 12));
    assert!(f.stripe.requests().iter().all(|r| r.authorization.as_deref() == Some(&format!("Bearer {API_KEY}"))));

    // No new usage and idle a minute: each key is settled, one write per customer (acme's two
    // keys in one transaction, beta's one key an UpdateItem); Stripe hears nothing.
    let before = f.meter_requests();
    f.db.requests.reset();
    let rerun = f.run(NOW.plus(60)).await;
    assert_eq!((rerun.keys_active, rerun.keys_settled, rerun.key_days_rolled), (3, 3, 0));
    assert_eq!((rerun.meters_owed, rerun.events_accepted), (0, 0));
    assert_eq!(f.meter_requests(), before);
    let writes = (f.db.requests.get("TransactWriteItems"), f.db.requests.get("UpdateItem"));
    assert_eq!(writes, (1, 1), "{:?}", f.db.requests.snapshot());
    // Then no key is touched at all.
    f.db.requests.reset();
    let quiet = f.run(NOW.plus(90)).await;
    assert_eq!((quiet.keys_active, quiet.meters_owed), (0, 0));
    assert_eq!(f.db.requests.get("UpdateItem"), 0, "{:?}", f.db.requests.snapshot());

    // New usage on one key: only that key is read, only the increase is reported.
    f.requests(&a2, 3, NOW.plus(120)).await;
    let third = f.run(NOW.plus(180)).await;
    assert_eq!((third.keys_active, third.events_accepted, third.units_reported), (1, 1, 3));
    assert_eq!(f.billed(), billed(&[("acme", 15), ("beta", 4)]));
    let last = f.stripe.meter_events().pop().unwrap();
    assert_eq!(last["identifier"], identifier(NAMESPACE, &acme_day, METER, 12, 15));
}

#[tokio::test]
async fn history_is_kept_per_day_and_shown_by_the_usage_endpoint() {
    let f = Fixture::new().await;
    f.stripe_customer("acme").await;
    let key = f.key("acme").await;
    let yesterday = NOW.plus(-86_400);
    f.requests(&key, 6, yesterday).await;
    f.requests(&key, 2, NOW).await;
    // A denied request counts in the history, never in the bill.
    f.store()
        .update_key(
            &key.0,
            shared::store::KeyPatch {
                status: Some(shared::domain::key_records::KeyStatus::Disabled),
                ..Default::default()
            },
            NOW,
        )
        .await
        .unwrap();
    let denied = f.store().take(&key.0, &key.1.hash(), &[], NOW, &mut Take::one()).await.unwrap().decision;
    assert!(denied.outcome.is_err());

    let report = f.run(NOW).await;
    assert_eq!(report.key_days_rolled, 2);
    assert_eq!(f.billed(), billed(&[("acme", 8)]));
    // Busy (used, and denied, since the last run), so the key item is left alone; a minute
    // later it is settled: yesterday ended over an hour ago, and its live counters go.
    let live = |f: &Fixture| {
        let store = f.store().clone();
        let id = key.0.clone();
        async move { store.key_usage(&id).await.unwrap().unwrap().live.into_keys().collect::<Vec<_>>() }
    };
    assert_eq!(live(&f).await, vec![yesterday.day(), NOW.day()]);
    assert_eq!(f.run(NOW.plus(60)).await.keys_settled, 1);
    assert_eq!(live(&f).await, vec![NOW.day()]);
    // Yesterday's report carries yesterday's last second, so Stripe bills it in its period.
    let stamps: HashSet<String> = f.stripe.meter_events().iter().map(|e| e["timestamp"].clone()).collect();
    assert!(stamps.contains(&(NOW.day().start().secs() - 1).to_string()), "{stamps:?}");

    let api = ManagementApi::new(f.store().clone(), None);
    let get = |path: String| ApiRequest {
        method: Method::GET,
        path,
        query: "days=7".into(),
        headers: http::HeaderMap::new(),
        body: vec![],
        request_id: "req_test".into(),
        // As API Gateway's IAM authorization passes the caller on.
        caller: Some("arn:aws:iam::123456789012:user/ops".into()),
        source: None,
    };
    let resp = api.handle(get(format!("/v1/keys/{}/usage", key.0.as_str())), NOW).await;
    assert_eq!(resp.status(), 200, "{}", resp.body());
    let body: serde_json::Value = serde_json::from_str(resp.body()).unwrap();
    assert_eq!(
        body["history"],
        serde_json::json!([
            {"day": yesterday.day().iso(), "allowed": 6, "denied": 0, "denied_by_code": {}},
            {"day": NOW.day().iso(), "allowed": 2, "denied": 1, "denied_by_code": {"key_disabled": 1}},
        ])
    );
    let resp = api.handle(get("/v1/customers/acme/usage".into()), NOW).await;
    assert_eq!(resp.status(), 200, "{}", resp.body());
    let body: serde_json::Value = serde_json::from_str(resp.body()).unwrap();
    assert_eq!(body["history"].as_array().unwrap().len(), 2);
    assert_eq!(body["history"][1]["allowed"], 2);
    assert_eq!(body["history"][1]["denied"], 1);
    assert_eq!(body["history"][1]["reported"], 2);
    assert_eq!(body["history"][1]["meter"], METER);
    assert_eq!(body["history"][1]["denied_by_code"], serde_json::json!({"key_disabled": 1}));
}

/// `GET /v1/stats` as an admin sees it.
async fn stats(f: &Fixture, days: u32, at: UnixTime) -> serde_json::Value {
    let api = ManagementApi::new(f.store().clone(), Some("tga_stats_test".to_owned().into()));
    let req = ApiRequest::new(Method::GET, &format!("/v1/stats?days={days}")).bearer("tga_stats_test");
    let resp = api.handle(req, at).await;
    assert_eq!(resp.status(), 200, "{}", resp.body());
    let body = serde_json::from_str(resp.body()).unwrap();
    tollgate_tests::openapi::check("GET", "/v1/stats", 200, &body);
    body
}

/// The overview's statistics follow the rollup: each day's totals (allowed, and denied by
/// code) grow by exactly what each run rolled, never twice; the top lists hold each key's and
/// customer's exact day totals; keys near their quota are listed until they are not.
#[tokio::test]
async fn statistics_count_each_rolled_request_once_by_code_with_top_keys_and_near_quota() {
    let f = Fixture::new().await;
    f.stripe_customer("acme").await;
    f.stripe_customer("beta").await;
    // A quota of 10 a day on its own plan, for the near-quota list.
    let small = Plan {
        id: PlanId::parse("small").unwrap(),
        name: "Small".into(),
        rate_limit: None,
        quota: Some(shared::domain::plans::Quota { limit: 10, period: shared::domain::plans::Period::Day }),
        stripe_price_ids: vec![],
        meter_event_name: None,
        max_keys: None,
        created_at: NOW,
        updated_at: NOW,
    };
    f.store().create_plan(&small).await.unwrap();
    let (a1, a2, b1) = (f.key("acme").await, f.key("acme").await, f.key("beta").await);
    let capped = {
        let key = ApiKey::generate(KeyEnv::Live).unwrap();
        let new = NewKey::new(&key, CustomerId::parse("gamma").unwrap(), Some(small.id.clone()), NOW);
        (f.store().create_key(new).await.unwrap().key_id, key)
    };
    let yesterday = NOW.plus(-86_400);
    f.requests(&a1, 4, yesterday).await;
    f.requests(&a1, 3, NOW).await;
    f.requests(&a2, 2, NOW).await;
    f.requests(&b1, 4, NOW).await;
    f.requests(&capped, 8, NOW).await;
    // Denials of two codes: over gamma's quota, and a scope b1 lacks.
    f.requests(&capped, 2, NOW).await;
    for _ in 0..3 {
        let d = f.store().take(&capped.0, &capped.1.hash(), &[], NOW, &mut Take::one()).await.unwrap().decision;
        assert_eq!(d.outcome, Err(shared::domain::decision::Denial::QuotaExceeded));
    }
    let scoped = f.store().take(&b1.0, &b1.1.hash(), &["admin".into()], NOW, &mut Take::one()).await.unwrap().decision;
    assert_eq!(scoped.outcome, Err(shared::domain::decision::Denial::InsufficientScope));

    // Before any run: nothing yet, every day of the range present as zeros.
    let empty = stats(&f, 3, NOW).await;
    assert_eq!(empty["days"].as_array().unwrap().len(), 3);
    assert!(empty["days"].as_array().unwrap().iter().all(|d| d["allowed"] == 0 && d["denied"] == 0));

    let report = f.run(NOW).await;
    assert!(report.stats_written);
    let s = stats(&f, 3, NOW).await;
    let day = |s: &serde_json::Value, i: usize| s["days"][i].clone();
    assert_eq!(
        day(&s, 1),
        serde_json::json!({"day": yesterday.day().iso(), "allowed": 4, "denied": 0, "denied_by_code": {}})
    );
    assert_eq!(
        day(&s, 2),
        serde_json::json!({"day": NOW.day().iso(), "allowed": 19, "denied": 4,
            "denied_by_code": {"quota_exceeded": 3, "insufficient_scope": 1}})
    );
    assert_eq!(s["day"], NOW.day().iso());
    let top: Vec<(String, u64)> = s["top_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["key_id"].as_str().unwrap().to_owned(), k["allowed"].as_u64().unwrap()))
        .collect();
    assert_eq!(top[0], (capped.0.as_str().to_owned(), 10));
    assert_eq!(top[1], (b1.0.as_str().to_owned(), 4));
    assert_eq!(top[2], (a1.0.as_str().to_owned(), 3), "today's total, not yesterday's");
    assert_eq!(
        s["top_customers"],
        serde_json::json!([{"customer_id": "gamma", "allowed": 10}, {"customer_id": "acme", "allowed": 5},
            {"customer_id": "beta", "allowed": 4}])
    );
    assert_eq!(s["near_quota"].as_array().unwrap().len(), 1);
    assert_eq!(s["near_quota"][0]["key_id"], capped.0.as_str());
    assert_eq!(
        (&s["near_quota"][0]["used"], &s["near_quota"][0]["limit"]),
        (&serde_json::json!(10), &serde_json::json!(10))
    );
    assert_eq!(s["near_quota"][0]["reset"], NOW.day().next().start().to_rfc3339());

    // A run with nothing new adds nothing; new usage adds exactly its difference, and acme's
    // day total (two keys) overtakes gamma's.
    f.run(NOW.plus(60)).await;
    assert_eq!(day(&stats(&f, 3, NOW.plus(60)).await, 2)["allowed"], 19);
    f.requests(&a2, 7, NOW.plus(90)).await;
    f.run(NOW.plus(120)).await;
    let s = stats(&f, 3, NOW.plus(120)).await;
    assert_eq!(day(&s, 2)["allowed"], 26);
    assert_eq!(s["top_customers"][0], serde_json::json!({"customer_id": "acme", "allowed": 12}));
    assert_eq!(s["top_keys"][1], serde_json::json!({"key_id": a2.0.as_str(), "customer_id": "acme", "allowed": 9}));

    // The next day gamma's quota has reset: no longer near, and the totals start afresh.
    let tomorrow = NOW.plus(86_400);
    f.requests(&capped, 1, tomorrow).await;
    f.run(tomorrow.plus(60)).await;
    let s = stats(&f, 3, tomorrow).await;
    assert_eq!(s["near_quota"], serde_json::json!([]));
    assert_eq!(day(&s, 1)["allowed"], 26, "yesterday unchanged");
    assert_eq!(day(&s, 2)["allowed"], 1);
    assert_eq!(s["top_keys"], serde_json::json!([{"key_id": capped.0.as_str(), "customer_id": "gamma", "allowed": 1}]));

    // Customers and read-only callers: a customer's JWT is refused (403) in the identity suite;
    // here, no token is 401.
    let api = ManagementApi::new(f.store().clone(), Some("tga_stats_test".to_owned().into()));
    let resp = api.handle(ApiRequest::new(Method::GET, "/v1/stats"), NOW).await;
    assert_eq!(resp.status(), 401);
    let resp = api.handle(ApiRequest::new(Method::GET, "/v1/stats?days=91").bearer("tga_stats_test"), NOW).await;
    assert_eq!(resp.status(), 422, "{}", resp.body());
}

#[tokio::test]
async fn rate_limits_server_errors_and_timeouts_are_retried_with_the_same_identifier() {
    let f = Fixture::new().await;
    f.stripe_customer("acme").await;
    let key = f.key("acme").await;
    f.requests(&key, 9, NOW).await;
    f.stripe.inject(&[Fault::Status(429), Fault::Status(500), Fault::Delay(Duration::from_millis(600))]);

    let report = f.run(NOW).await;
    assert_eq!((report.reporting, report.events_accepted), (Some(Reporting::Ok), 1));
    assert_eq!(f.meter_requests(), 4, "three failures, then the accept");
    assert_eq!(f.billed(), billed(&[("acme", 9)]));
    // The timed-out attempt reached Stripe after all (the stand-in processes it late): it was
    // the same identifier, so Stripe kept one event.
    assert_eq!(f.stripe.meter_events().len(), 1);
}

#[tokio::test]
async fn a_crash_between_stripes_accept_and_the_watermark_never_double_bills() {
    let f = Fixture::new().await;
    f.stripe_customer("acme").await;
    let key = f.key("acme").await;
    f.requests(&key, 10, NOW).await;

    // Stripe accepts, but the answer is lost (500) and the run gives up on Stripe.
    f.stripe.inject(&[Fault::AcceptThen500]);
    let once = RollupOptions { backoff: Backoff { attempts: 1, ..fast().backoff }, ..fast() };
    let report = f.rollup(once).run(NOW).await.unwrap();
    assert_eq!(report.reporting, Some(Reporting::Unavailable));
    assert_eq!(report.units_reported, 0);
    assert_eq!(f.billed(), billed(&[("acme", 10)]), "Stripe has it");

    // More usage arrives before the next run.
    f.requests(&key, 5, NOW.plus(30)).await;
    let report = f.run(NOW.plus(60)).await;
    // The pending report is resent as it was (Stripe says it already has it), then the rest.
    assert_eq!((report.events_already_delivered, report.events_accepted), (1, 1));
    assert_eq!(f.stripe.duplicates(), 1, "exactly the lost answer's event was resent");
    assert_eq!(report.units_reported, 15);
    assert_eq!(f.billed(), billed(&[("acme", 15)]));
    assert_eq!(f.run(NOW.plus(120)).await.events_accepted, 0);
}

#[tokio::test]
async fn a_run_killed_mid_report_leaves_a_lease_that_expires_and_nothing_lost() {
    let f = Fixture::new().await;
    f.stripe_customer("acme").await;
    let key = f.key("acme").await;
    f.requests(&key, 4, NOW).await;

    // The process dies while Stripe is answering: the run future is dropped mid-request.
    f.stripe.inject(&[Fault::Delay(Duration::from_millis(250))]);
    let slow_client = RollupOptions { budget: Duration::from_secs(30), lease_margin: Duration::from_secs(5), ..fast() };
    let killed = tokio::time::timeout(Duration::from_millis(100), f.rollup(slow_client.clone()).run(NOW)).await;
    assert!(killed.is_err(), "the run was still in flight");
    tokio::time::sleep(Duration::from_millis(400)).await; // whatever Stripe does with it, it has done

    // Its lease holds until it expires: a run meanwhile does nothing.
    let busy = f.run(NOW.plus(10)).await;
    assert_eq!(busy.status, Some(RunStatus::Busy));
    let after = f.run(NOW.plus(36)).await;
    assert_eq!(after.status, Some(RunStatus::Completed));
    assert_eq!(after.units_reported, 4);
    assert_eq!(f.billed(), billed(&[("acme", 4)]));
}

#[tokio::test]
async fn a_customer_without_a_stripe_id_is_skipped_and_written_off_while_others_are_billed() {
    let f = Fixture::new().await;
    f.stripe_customer("acme").await;
    let (paying, internal) = (f.key("acme").await, f.key("internal-team").await);
    f.requests(&paying, 3, NOW).await;
    f.requests(&internal, 8, NOW).await;

    let report = f.run(NOW).await;
    assert_eq!((report.units_reported, report.units_unbilled), (3, 8));
    assert_eq!(f.billed(), billed(&[("acme", 3)]));
    let internal_day = MeterDay {
        customer_id: CustomerId::parse("internal-team").unwrap(),
        day: NOW.day(),
        meter: Some(METER.into()),
    };
    let ledger = f.store().meter_ledger(&internal_day).await.unwrap().unwrap();
    assert_eq!((ledger.usage.allowed, ledger.reported, ledger.unbilled), (8, 0, 8));
    assert!(f.store().owed_meters().await.unwrap().is_empty(), "nothing left owed; the next run does not retry it");
}

#[tokio::test]
async fn a_rejected_event_skips_that_customer_and_the_others_go_on() {
    let f = Fixture::new().await;
    for c in ["acme", "beta"] {
        f.stripe_customer(c).await;
    }
    let (a, b) = (f.key("acme").await, f.key("beta").await);
    f.requests(&a, 2, NOW).await;
    f.requests(&b, 3, NOW).await;
    // One customer at a time, in order: acme's event meets the 4xx.
    f.stripe.inject(&[Fault::Status(400)]);
    let serial = RollupOptions { concurrency: 1, ..fast() };
    let report = f.rollup(serial).run(NOW).await.unwrap();
    assert_eq!((report.customers_skipped, report.units_reported), (1, 3));
    assert_eq!(f.billed(), billed(&[("beta", 3)]));
    // The next run sends acme's report again, unchanged.
    let report = f.run(NOW.plus(60)).await;
    assert_eq!((report.customers_skipped, report.units_reported), (0, 2));
    assert_eq!(f.billed(), billed(&[("acme", 2), ("beta", 3)]));
}

#[tokio::test]
async fn a_pending_report_too_old_for_stripe_is_written_off_and_the_customer_goes_on() {
    let f = Fixture::new().await;
    f.stripe_customer("acme").await;
    let key = f.key("acme").await;
    f.requests(&key, 6, NOW).await;
    // Decided and sent, but Stripe is down, and the rollup then stays down for 36 days.
    f.stripe.inject(&[Fault::Status(503)]);
    let once = RollupOptions { backoff: Backoff { attempts: 1, ..fast().backoff }, ..fast() };
    assert_eq!(f.rollup(once).run(NOW).await.unwrap().reporting, Some(Reporting::Unavailable));

    let later = NOW.plus(36 * 86_400);
    f.requests(&key, 4, later).await;
    let report = f.run(later.plus(60)).await;
    // Stripe would refuse the old timestamp: written off, not sent; the new day is billed.
    assert_eq!((report.units_unbilled, report.units_reported, report.customers_skipped), (6, 4, 0));
    assert_eq!(f.billed(), billed(&[("acme", 4)]));
    let old_day =
        MeterDay { customer_id: CustomerId::parse("acme").unwrap(), day: NOW.day(), meter: Some(METER.into()) };
    let ledger = f.store().meter_ledger(&old_day).await.unwrap().unwrap();
    assert_eq!((ledger.usage.allowed, ledger.reported, ledger.unbilled, ledger.pending), (6, 0, 6, None));
    assert!(f.store().owed_meters().await.unwrap().is_empty());
}

/// 10,000 keys of 100 customers, one or two requests each: one run rolls and reports them
/// all, and its DynamoDB requests stay within one per key (its read) plus a few per customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_active_keys_in_one_run() {
    const CUSTOMERS: usize = 100;
    const KEYS_PER_CUSTOMER: usize = 100;
    let f = Fixture::new().await;
    let mut keys = vec![];
    for c in 0..CUSTOMERS {
        let customer = format!("c{c:03}");
        f.stripe_customer(&customer).await;
        let batch = futures::future::join_all((0..KEYS_PER_CUSTOMER).map(|_| f.key(&customer))).await;
        keys.extend(batch.into_iter().map(|k| (customer.clone(), k)));
    }
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for chunk in keys.chunks(200) {
        futures::future::join_all(chunk.iter().enumerate().map(|(i, (customer, key))| {
            let n = 1 + (i % 2) as u64;
            *expected.entry(format!("cus_{customer}")).or_default() += n;
            f.requests(key, n, NOW)
        }))
        .await;
    }

    // Two minutes on, the keys are idle: each is rolled and settled in one write.
    f.db.requests.reset();
    let started = std::time::Instant::now();
    let at = NOW.plus(120);
    let report = f.rollup(RollupOptions { budget: Duration::from_secs(600), ..fast() }).run(at).await.unwrap();
    let elapsed = started.elapsed();
    let requests = f.db.requests.total();
    eprintln!(
        "rollup of {} keys / {CUSTOMERS} customers on {}: {elapsed:?}, {requests} DynamoDB requests {:?}",
        keys.len(),
        f.db.backend(),
        f.db.requests.snapshot()
    );
    assert_eq!(report.status, Some(RunStatus::Completed));
    assert_eq!((report.keys_active, report.keys_settled), (10_000, 10_000));
    assert_eq!(report.events_accepted, CUSTOMERS as u64);
    assert_eq!(f.billed(), expected);
    // Per key: its Query. Per customer: its keys rolled and settled in transactions of up to
    // 49 keys (two items each, and the ledger), at most 5,000 keys read at a time (so a
    // customer's 100 keys meet in at most 2 chunks: at most 4 transactions), the report's four,
    // and the statistics' read of its day total. Per run: the work lists, the plans, the lease,
    // and the statistics' Query, day write and near-quota put.
    let transactions = f.db.requests.get("TransactWriteItems");
    assert!(transactions <= 4 * CUSTOMERS as u64, "{transactions} transactions");
    assert!(requests <= 10_000 + (4 + 5) * CUSTOMERS as u64 + 64 + 3, "{requests} requests");
    assert!(f.store().active_keys().await.unwrap().is_empty());
}

/// Keys used in every run, through midnight: each run is at most two requests a key (its
/// Query and one write), the day after's first run an hour past midnight removes the finished
/// day in a write of its own and the next run rolls what waited, and the keys settle the first
/// run after they go quiet. Billed exactly throughout.
#[tokio::test]
async fn busy_keys_cost_two_requests_a_run_through_midnight_and_settle_when_quiet() {
    const CUSTOMERS: usize = 4;
    const KEYS_PER_CUSTOMER: usize = 25;
    const KEYS: u64 = (CUSTOMERS * KEYS_PER_CUSTOMER) as u64;
    let f = Fixture::new().await;
    let mut keys = vec![];
    for c in 0..CUSTOMERS {
        let customer = format!("c{c}");
        f.stripe_customer(&customer).await;
        for _ in 0..KEYS_PER_CUSTOMER {
            keys.push((customer.clone(), f.key(&customer).await));
        }
    }
    let midnight = NOW.day().next().start();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0;
    // (run at, keys used just before it, key-days rolled, keys settled)
    let runs = [
        (midnight.plus(-600), true, KEYS, 0),
        (midnight.plus(1_800), true, KEYS, 0),
        // The finished day goes; what the keys counted since the last run waits.
        (midnight.plus(3_900), true, 0, 0),
        (midnight.plus(4_200), true, KEYS, 0),
        // Quiet for a minute: rolled and settled in one write each.
        (midnight.plus(4_500), false, 0, KEYS),
    ];
    for (at, used, rolled, settled) in runs {
        if used {
            for (customer, key) in &keys {
                f.requests(key, 1, at.plus(-30)).await;
                *expected.entry(format!("cus_{customer}")).or_default() += 1;
                total += 1;
            }
        }
        f.db.requests.reset();
        let report = f.run(at).await;
        let requests = f.db.requests.total();
        // Per key its Query and one write; per customer up to two days' ledgers reported
        // (four each) and a day total read; per run the work lists, plans, lease, statistics.
        assert!(requests <= 2 * KEYS + 10 * CUSTOMERS as u64 + 70, "{requests} requests at {at:?}");
        assert!(f.db.requests.get("TransactWriteItems") <= KEYS);
        assert_eq!(
            (report.keys_active, report.key_days_rolled, report.keys_settled),
            (KEYS, rolled, settled),
            "{at:?}"
        );
        if at == midnight.plus(3_900) {
            let usage = f.store().key_usage(&keys[0].1.0).await.unwrap().unwrap();
            assert_eq!(usage.live.into_keys().collect::<Vec<_>>(), vec![midnight.day()], "finished day removed");
            assert!(f.billed().values().sum::<u64>() < total, "the last minutes wait a run");
        } else {
            assert_eq!(f.billed(), expected, "{at:?}");
        }
    }
    assert!(f.store().active_keys().await.unwrap().is_empty());
}

/// Under DynamoDB's transaction isolation (the fault proxy holding each transaction's items a
/// few milliseconds, refusing any other write to them meanwhile), a run over many customers'
/// keys, 16 customers at a time, never contends with itself: one customer's keys are written
/// together, in turn, and no two customers' writes share an item. The simulator does catch
/// contention: two writes of one customer's keys side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_never_contends_with_itself_for_an_item() {
    use shared::store::KeyEdit;
    use tollgate_tests::faults::FaultProxy;
    const CUSTOMERS: usize = 20;
    const KEYS_PER_CUSTOMER: usize = 30;
    let f = Fixture::new().await;
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for c in 0..CUSTOMERS {
        let customer = format!("c{c:02}");
        f.stripe_customer(&customer).await;
        for k in 0..KEYS_PER_CUSTOMER {
            let key = f.key(&customer).await;
            f.requests(&key, 1 + (k % 2) as u64, NOW).await;
            *expected.entry(format!("cus_{customer}")).or_default() += 1 + (k % 2) as u64;
        }
    }
    let proxy = FaultProxy::start(&f.db.endpoint, 3).await;
    let client = proxy.client(Duration::from_secs(5), Duration::from_secs(20)).await;
    let store = DynamoStore::new(client, f.db.table.clone());

    // The simulator: two keys of one customer rolled side by side contend for its ledger;
    // the one cancelled is sent again, and both apply.
    f.stripe_customer("zeta").await;
    let (z1, z2) = (f.key("zeta").await, f.key("zeta").await);
    f.requests(&z1, 1, NOW).await;
    f.requests(&z2, 1, NOW).await;
    proxy.simulate_transactions(Duration::from_millis(50));
    let (r1, r2) = (store.key_usage(&z1.0).await.unwrap().unwrap(), store.key_usage(&z2.0).await.unwrap().unwrap());
    let today = [NOW.day()];
    // Sent again while cancelled by contention, as the rollup does.
    let roll = |r| {
        let store = store.clone();
        async move {
            loop {
                match store.roll_key(r, &today, Some(METER), KeyEdit::Keep, NOW).await {
                    Err(shared::store::StoreError::Unavailable(_)) => continue,
                    other => return other.unwrap(),
                }
            }
        }
    };
    let (a, b) = futures::join!(roll(&r1), roll(&r2));
    assert_eq!((a, b), (shared::store::Written::Applied, shared::store::Written::Applied));
    assert!(proxy.transaction_conflicts() >= 1, "the simulator must catch contention");
    *expected.entry("cus_zeta".into()).or_default() += 2;

    proxy.simulate_transactions(Duration::from_millis(5));
    let stripe = StripeApi::new(&f.stripe.base, API_KEY.to_owned().into(), Duration::from_millis(300)).unwrap();
    let options = RollupOptions { concurrency: 16, ..fast() };
    let report = Rollup::new(store, Some(stripe), options).run(NOW.plus(120)).await.unwrap();
    assert_eq!(proxy.transaction_conflicts(), 0, "{report:?}");
    assert_eq!(report.keys_settled, (CUSTOMERS * KEYS_PER_CUSTOMER + 2) as u64, "{report:?}");
    assert_eq!(f.billed(), expected);
}

/// A customer's write that storage refuses outright (not a cancellation) is tried again one key
/// at a time, so one bad key cannot hold the customer's others back run after run.
#[tokio::test]
async fn a_customers_write_refused_outright_goes_again_key_by_key() {
    use tollgate_tests::faults::{Fault as DbFault, FaultProxy, Rule};
    let f = Fixture::new().await;
    f.stripe_customer("acme").await;
    for n in 1..=3 {
        let key = f.key("acme").await;
        f.requests(&key, n, NOW).await;
    }
    let proxy = FaultProxy::start(&f.db.endpoint, 9).await;
    let client = proxy.client(Duration::from_secs(5), Duration::from_secs(20)).await;
    let stripe = StripeApi::new(&f.stripe.base, API_KEY.to_owned().into(), Duration::from_millis(300)).unwrap();
    let rollup = Rollup::new(DynamoStore::new(client, f.db.table.clone()), Some(stripe), fast());
    proxy.inject(Rule::on("TransactWriteItems", DbFault::Validation).times(1));
    let report = rollup.run(NOW.plus(120)).await.unwrap();
    assert_eq!(proxy.injected_count(DbFault::Validation), 1);
    assert_eq!((report.keys_settled, report.key_days_rolled, report.keys_deferred), (3, 3, 0), "{report:?}");
    let transactions = proxy.seen().iter().filter(|(op, _)| op == "TransactWriteItems").count();
    assert_eq!(transactions, 3, "one key at a time after the refusal");
    assert_eq!(f.billed(), billed(&[("acme", 6)]));
}

/// Every order, seeded: containers deciding keys (single requests, and bursts that make them hot
/// and spend blocks from memory), keys disabled and enabled (denials), containers settling
/// their blocks, and rollup runs (some side by side with a burst), at random times across
/// midnight and the hour after, and containers crashing with blocks unsettled. However the
/// writes interleave, Stripe is billed exactly what was allowed less what crashed containers
/// held (never more), the keys' histories add up to the bills, and once quiet every key is
/// settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn billing_is_exact_in_every_seeded_order_of_decisions_blocks_and_runs() {
    use shared::app::authorize::Authorizer;
    use shared::config::FailMode;
    use shared::domain::key_records::KeyStatus;
    use shared::store::{KeyPatch, UsageStore};
    for seed in [3_u64, 17, 2026] {
        let mut rng = seed;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let f = Fixture::new().await;
        let mut keys = vec![];
        for c in ["acme", "beta", "core"] {
            f.stripe_customer(c).await;
            for _ in 0..3 {
                keys.push((c, f.key(c).await));
            }
        }
        let mut containers: Vec<_> = (0..3).map(|_| Authorizer::new(f.store().clone(), FailMode::Closed)).collect();
        // What crashed containers had admitted and not counted: never billed, never more.
        let mut crashed = 0;
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        let mut per_key = vec![0_u64; keys.len()];
        let mut disabled = vec![false; keys.len()];
        let mut t = NOW.day().next().start().plus(-2 * 3_600);
        let (mut runs, mut hot_bursts) = (0, 0);
        for _ in 0..120 {
            t = t.plus(next(240) as i64);
            let k = next(keys.len() as u64) as usize;
            let a = &containers[next(3) as usize];
            let burst = |n: u64| {
                let secret = keys[k].1.1.expose_secret().to_owned();
                async move {
                    let mut allowed = 0;
                    for _ in 0..n {
                        allowed += u64::from(a.decide(Some(&secret), tollgate_tests::ANY_ROUTE, t).await.is_allowed());
                    }
                    allowed
                }
            };
            let allowed = match next(10) {
                0..=5 => {
                    let n = 1 + next(40);
                    hot_bursts += u64::from(n >= 10);
                    burst(n).await
                }
                6 | 7 => {
                    runs += 1;
                    let rollup = f.rollup(fast());
                    let (allowed, report) = futures::join!(burst(1 + next(20)), rollup.run(t));
                    report.unwrap();
                    allowed
                }
                8 if next(3) == 0 => {
                    // A container crashes (or is reclaimed without SIGTERM): a fresh one takes
                    // its place.
                    let i = next(3) as usize;
                    crashed += containers[i].unsettled();
                    containers[i] = Authorizer::new(f.store().clone(), FailMode::Closed);
                    0
                }
                8 => {
                    a.settle_leases(t, false).await;
                    0
                }
                _ => {
                    disabled[k] = !disabled[k];
                    let status = if disabled[k] { KeyStatus::Disabled } else { KeyStatus::Active };
                    let patch = KeyPatch { status: Some(status), ..Default::default() };
                    f.store().update_key(&keys[k].1.0, patch, t).await.unwrap();
                    0
                }
            };
            per_key[k] += allowed;
            *expected.entry(format!("cus_{}", keys[k].0)).or_default() += allowed;
        }
        // Quiet: the containers stop (settling their blocks), and the runs after a while
        // settle every key.
        for a in &containers {
            a.settle_leases(t, true).await;
        }
        for later in [3_600, 3_720, 3_840] {
            f.run(t.plus(later)).await;
        }
        assert!(runs > 5 && hot_bursts > 10, "seed {seed}: {runs} runs, {hot_bursts} hot bursts");
        let billed = f.billed();
        eprintln!(
            "seed {seed}: {runs} runs, {hot_bursts} hot bursts, {crashed} held by crashed containers, {billed:?}"
        );
        for (customer, allowed) in &expected {
            assert!(billed.get(customer).copied().unwrap_or(0) <= *allowed, "seed {seed}: {customer} billed more");
        }
        let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
        assert_eq!(total(&billed) + crashed, total(&expected), "seed {seed}: billed and crashed-unbilled");
        let mut history_total = 0;
        for (i, (_, (id, _))) in keys.iter().enumerate() {
            let history = f.store().usage_history(id, NOW.day().minus(2)).await.unwrap();
            let allowed: u64 = history.iter().map(|d| d.count.allowed).sum();
            assert!(allowed <= per_key[i], "seed {seed}: key {i}'s history over its allowed requests");
            history_total += allowed;
        }
        assert_eq!(history_total, total(&billed), "seed {seed}: history and bills agree");
        assert!(f.store().active_keys().await.unwrap().is_empty(), "seed {seed}: every key settled");
    }
}

/// Storage failing under the rollup in every way (500s, throttling, writes applied whose
/// answers were lost): runs fail or skip, and later runs resume, until Stripe has been told
/// exactly the allowed count per customer, each identifier once.
#[tokio::test]
async fn storage_faults_mid_run_are_resumed_and_bill_exactly_once() {
    use tollgate_tests::faults::{Fault, FaultProxy, Rule};
    let f = Fixture::new().await;
    let customers = ["acme", "beta", "core", "dyna"];
    for (i, c) in customers.iter().enumerate() {
        f.stripe_customer(c).await;
        for _ in 0..2 {
            let k = f.key(c).await;
            f.requests(&k, 3 + i as u64, NOW).await;
        }
    }
    let proxy = FaultProxy::start(&f.db.endpoint, 5).await;
    let client = proxy.client(Duration::from_secs(1), Duration::from_secs(3)).await;
    let store = DynamoStore::new(client, f.db.table.clone());
    let stripe = StripeApi::new(&f.stripe.base, API_KEY.to_owned().into(), Duration::from_millis(300)).unwrap();
    let rollup = Rollup::new(store, Some(stripe), fast());
    for rule in [
        Rule::any(Fault::ServerError).rate(0.08),
        Rule::any(Fault::DropAfterApply).rate(0.08),
        Rule::any(Fault::ProvisionedThroughputExceeded).rate(0.04),
    ] {
        proxy.inject(rule);
    }
    // A failed run may leave its lease behind (its release failed too): each run is a lease
    // length later, as the schedule's next run would be.
    let lease = (fast().budget + fast().lease_margin).as_secs() as i64 + 1;
    let mut results = vec![];
    for run in 0..6 {
        results.push(rollup.run(NOW.plus(run * lease)).await.map(|r| r.status));
    }
    assert!(proxy.injected().len() > 5, "faults were injected");
    proxy.clear();
    let mut at = 6;
    loop {
        let report = rollup.run(NOW.plus(at * lease)).await.unwrap();
        at += 1;
        if report.status == Some(RunStatus::Completed) && report.meters_owed == 0 && report.keys_active == 0 {
            break;
        }
        assert!(at < 20, "the rollup never settled: {report:?}");
    }
    let want: Vec<(&str, u64)> = customers.iter().enumerate().map(|(i, c)| (*c, 2 * (3 + i as u64))).collect();
    assert_eq!(f.billed(), billed(&want), "runs under faults: {results:?}");
}

#[tokio::test]
async fn any_meter_events_sink_is_reported_to_exactly_once() {
    let f = Fixture::new().await;
    f.stripe_customer("acme").await;
    let key = f.key("acme").await;
    f.requests(&key, 3, NOW).await;
    // Any MeterEvents can take the reports: here Stripe in memory, which takes each
    // identifier once, as Stripe does.
    let sink = shared::stripe::memory::MemoryStripe::default();
    let rollup = Rollup::with_meter_events(f.store().clone(), sink.clone(), fast());
    let report = rollup.run(NOW.plus(60)).await.unwrap();
    assert_eq!(report.units_reported, 3, "{report:?}");
    f.requests(&key, 2, NOW.plus(120)).await;
    rollup.run(NOW.plus(180)).await.unwrap();
    rollup.run(NOW.plus(240)).await.unwrap();
    let sent: Vec<_> = sink.delivered().into_iter().map(|e| (e.identifier, e.stripe_customer_id, e.value)).collect();
    let meter_day =
        MeterDay { customer_id: CustomerId::parse("acme").unwrap(), day: NOW.day(), meter: Some(METER.into()) };
    assert_eq!(
        sent,
        vec![
            (identifier(NAMESPACE, &meter_day, METER, 0, 3), "cus_acme".to_owned(), 3),
            (identifier(NAMESPACE, &meter_day, METER, 3, 5), "cus_acme".to_owned(), 2),
        ],
        "each increment once, under its own identifier"
    );
}
