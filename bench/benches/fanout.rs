//! Fan-outs at scale: one customer with 5,000 keys that follow its Stripe plan (so the plan
//! governs the same 5,000 keys). Measured on in-process Dynoxide: a customer change through
//! the billing service and its redelivery, a plan update and its retry, and a plan update cut
//! into many short calls (each continues where the last stopped).

use crate::{Row, row};
use shared::app::billing::{Billing, StripeInput};
use shared::domain::api_key::{ApiKey, KeyEnv};
use shared::domain::billing::{Observation, Source, SubscriptionFacts};
use shared::domain::customers::{CustomerId, SubscriptionStatus};
use shared::domain::plans::{Plan, PlanId, RateLimit};
use shared::domain::time::UnixTime;
use shared::store::dynamo::{ClientOptions, DynamoStore, build_client};
use shared::store::embedded::EmbeddedDynamo;
use shared::store::metrics::RequestCounter;
use shared::store::{KeyStore, NewKey, PlanStore};
use std::time::{Duration, Instant};

const KEYS: usize = 5_000;

fn plan(id: &str, limit: u64) -> Plan {
    let now = UnixTime::now();
    Plan {
        id: PlanId::parse(id).unwrap(),
        name: id.into(),
        rate_limit: Some(RateLimit { limit, window_s: 60 }),
        quota: None,
        stripe_price_ids: vec![format!("price_{id}")],
        meter_event_name: None,
        max_keys: None,
        created_at: now,
        updated_at: now,
    }
}

fn event(n: i64, price: &str) -> StripeInput {
    let facts = SubscriptionFacts { price_ids: vec![price.into()], current_period_end: None, created: Some(1) };
    let observation = Observation::subscription_event(
        &format!("evt_bench_{n}"),
        n,
        Source::SubscriptionUpdated,
        SubscriptionStatus::Active,
        facts,
    );
    StripeInput {
        stripe_customer: "cus_bench".into(),
        link: Some(CustomerId::parse("big").unwrap()),
        observed: Some(("sub_bench".into(), observation)),
    }
}

pub async fn rows() -> Vec<Row> {
    match measure().await {
        Ok(rows) => rows,
        Err(e) => vec![row("fan-out of 5,000 keys", format!("failed: {e}"), "")],
    }
}

async fn measure() -> Result<Vec<Row>, String> {
    let db = EmbeddedDynamo::start_in_memory().await.map_err(|e| e.to_string())?;
    let counter = RequestCounter::new();
    let client =
        build_client(ClientOptions { counter: Some(counter.clone()), ..ClientOptions::local(db.endpoint()) }).await;
    let store = DynamoStore::new(client, "tollgate-bench-fanout");
    store.create_table_if_missing().await.map_err(|e| e.to_string())?;
    for p in [plan("basic", 10), plan("pro", 100)] {
        store.create_plan(&p).await.map_err(|e| e.to_string())?;
    }
    let billing = Billing::new(store.clone(), 3600, Duration::from_secs(600));
    billing.apply(&event(1, "price_basic"), UnixTime::now()).await.map_err(|e| e.to_string())?;
    let customer = CustomerId::parse("big").unwrap();
    let created = Instant::now();
    for _ in 0..KEYS {
        let key = ApiKey::generate(KeyEnv::Live).map_err(|e| e.to_string())?;
        store
            .create_key(NewKey::new(&key, customer.clone(), None, UnixTime::now()))
            .await
            .map_err(|e| e.to_string())?;
    }
    let create_s = created.elapsed().as_secs_f64();

    let mut rows = vec![];
    let mut timed = |label: &str, requests: u64, seconds: f64, goal: &str| {
        rows.push(row(
            format!("fan-out, {KEYS} keys: {label}"),
            format!("{requests} requests ({:.2} per key), {seconds:.2} s", requests as f64 / KEYS as f64),
            goal,
        ));
    };
    // A customer's plan change (Stripe), then the same event redelivered.
    for (label, n, goal) in [("customer's plan changes", 2, ""), ("the same event redelivered", 2, "O(1), not per key")]
    {
        counter.reset();
        let t = Instant::now();
        billing.apply(&event(n, "price_pro"), UnixTime::now()).await.map_err(|e| e.to_string())?;
        timed(label, counter.total(), t.elapsed().as_secs_f64(), goal);
    }
    // A plan update, and the same update retried.
    let updated = plan("pro", 200);
    for (label, goal) in [("plan update", ""), ("the same plan update retried", "O(1), not per key")] {
        counter.reset();
        let t = Instant::now();
        let f = store.update_plan(&updated, UnixTime::now(), Instant::now() + Duration::from_secs(600)).await;
        let f = f.map_err(|e| e.to_string())?;
        if !f.complete {
            return Err("an unbounded fan-out did not finish".into());
        }
        timed(label, counter.total(), t.elapsed().as_secs_f64(), goal);
    }
    // A plan update given 100 ms a call, as a timed-out Lambda and its retries would be.
    let cut = plan("pro", 300);
    counter.reset();
    let t = Instant::now();
    let mut calls = 0;
    let mut visited = 0;
    loop {
        calls += 1;
        let f = store.update_plan(&cut, UnixTime::now(), Instant::now() + Duration::from_millis(100)).await;
        let f = f.map_err(|e| e.to_string())?;
        visited += f.visited;
        if f.complete {
            break;
        }
    }
    rows.push(row(
        format!("fan-out, {KEYS} keys: plan update in 100 ms calls"),
        format!(
            "{calls} calls, {visited} keys visited, {} requests, {:.2} s",
            counter.total(),
            t.elapsed().as_secs_f64()
        ),
        format!("each key visited once ({KEYS})"),
    ));
    rows.push(row(format!("creating the {KEYS} keys (setup)"), format!("{create_s:.1} s"), ""));
    db.stop().await;
    Ok(rows)
}
