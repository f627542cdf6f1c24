//! The storage contract: every operation the functions rely on, run through the real SDK
//! against a DynamoDB-protocol server (Dynoxide in-process; moto under `make test`).

use shared::domain::api_key::{ApiKey, KeyEnv, KeyId};
use shared::domain::customers::{Customer, CustomerId, SubscriptionStatus};
use shared::domain::decision::Denial;
use shared::domain::key_records::{Actor, KeyStatus, LimitOverrides};
use shared::domain::lease::Take;
use shared::domain::plans::{Period, Plan, PlanId, Quota, RateLimit};
use shared::domain::time::{Day, UnixTime};
use shared::domain::usage::{DayCount, MeterDay, PendingReport, UsageDay};
use shared::store::{
    AuthorizeStore, BillingStore, CustomerStore, IdempotencyStore, KeyEdit, KeyFilter, KeyPatch, KeyRoll, KeyStore,
    NewKey, PlanStore, ROLL_DAYS_AT_ONCE, Reservation, Reserve, Rolled, RollupStore, SETTLE_DAYS_AT_ONCE, StoreError,
    UsageStore, Written,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tollgate_tests::{TestDb, fresh_db};

/// 2026-11-23T10:00:30Z: mid-window for 60 s windows.
use tollgate_tests::NOW;

fn plan(id: &str, rate: Option<(u64, u64)>, quota: Option<(u64, Period)>) -> Plan {
    Plan {
        id: PlanId::parse(id).unwrap(),
        name: id.to_uppercase(),
        rate_limit: rate.map(|(limit, window_s)| RateLimit { limit, window_s }),
        quota: quota.map(|(limit, period)| Quota { limit, period }),
        stripe_price_ids: vec![format!("price_{id}")],
        meter_event_name: Some("api_requests".into()),
        max_keys: None,
        created_at: NOW,
        updated_at: NOW,
    }
}

fn cid(s: &str) -> CustomerId {
    CustomerId::parse(s).unwrap()
}

fn new_key(customer: &str, plan: Option<&str>) -> (NewKey, ApiKey) {
    let key = ApiKey::generate(KeyEnv::Live).unwrap();
    let new = NewKey {
        key_id: KeyId::generate(NOW.secs() as u64 * 1000),
        customer_id: cid(customer),
        plan_id: plan.map(|p| PlanId::parse(p).unwrap()),
        name: Some("test key".into()),
        env: KeyEnv::Live,
        hash: key.hash(),
        display: key.display(),
        expires_at: None,
        scopes: vec!["read".into()],
        metadata: BTreeMap::from([("team".into(), "core".into())]),
        overrides: LimitOverrides::default(),
        now: NOW,
        by: Actor::Operator,
    };
    (new, key)
}

async fn key_with_plan(db: &TestDb, customer: &str, p: Plan) -> (KeyId, ApiKey) {
    let plan_id = p.id.as_str().to_owned();
    match db.store.create_plan(&p).await {
        Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => panic!("{e:?}"),
    }
    let (new, key) = new_key(customer, Some(&plan_id));
    let record = db.store.create_key(new).await.unwrap();
    (record.key_id, key)
}

async fn decide(db: &TestDb, id: &KeyId, key: &ApiKey, now: UnixTime) -> Result<(), Denial> {
    db.store.take(id, &key.hash(), &[], now, &mut Take::one()).await.unwrap().decision.outcome
}

// ----- keys -------------------------------------------------------------------------------

#[tokio::test]
async fn keys_are_created_read_and_found_by_hash() {
    let db = fresh_db().await;
    db.store.create_plan(&plan("pro", Some((100, 60)), Some((1000, Period::Month)))).await.unwrap();
    let (new, key) = new_key("acme", Some("pro"));
    let created = db.store.create_key(new.clone()).await.unwrap();
    assert_eq!(created.status, KeyStatus::Active);
    assert_eq!(created.limits.rate_limit, Some(RateLimit { limit: 100, window_s: 60 }));
    assert_eq!(created.limits.governing_plan_id.as_ref().map(PlanId::as_str), Some("pro"));

    let got = db.store.get_key(&created.key_id).await.unwrap().unwrap();
    assert_eq!(got, created);
    assert_eq!(db.store.key_id_for_hash(&key.hash()).await.unwrap(), Some(created.key_id.clone()));
    let other = ApiKey::generate(KeyEnv::Live).unwrap();
    assert_eq!(db.store.key_id_for_hash(&other.hash()).await.unwrap(), None);
    assert_eq!(db.store.get_key(&KeyId::generate(1)).await.unwrap(), None);

    // The customer came into being with its first key.
    assert!(db.store.get_customer(&cid("acme")).await.unwrap().is_some());
    assert_eq!(db.store.customer_key_ids(&cid("acme")).await.unwrap(), vec![created.key_id.clone()]);

    // Same id again: refused, nothing overwritten.
    assert!(matches!(db.store.create_key(new).await, Err(StoreError::AlreadyExists("key"))));
    assert_eq!(db.store.get_key(&created.key_id).await.unwrap().unwrap(), created);
}

#[tokio::test]
async fn a_key_naming_an_unknown_plan_is_refused_and_nothing_is_written() {
    let db = fresh_db().await;
    let (new, key) = new_key("acme", Some("nope"));
    let id = new.key_id.clone();
    assert!(matches!(db.store.create_key(new).await, Err(StoreError::UnknownReference("plan"))));
    assert_eq!(db.store.get_key(&id).await.unwrap(), None);
    assert_eq!(db.store.key_id_for_hash(&key.hash()).await.unwrap(), None);
}

#[tokio::test]
async fn listing_filters_and_pages_without_gaps_or_repeats() {
    let db = fresh_db().await;
    db.store.create_plan(&plan("free", Some((10, 60)), None)).await.unwrap();
    db.store.create_plan(&plan("pro", Some((100, 60)), None)).await.unwrap();
    let mut acme = vec![];
    for i in 0..7 {
        let (new, _) = new_key("acme", Some(if i % 2 == 0 { "free" } else { "pro" }));
        acme.push(db.store.create_key(new).await.unwrap().key_id);
    }
    for _ in 0..3 {
        let (new, _) = new_key("globex", Some("free"));
        db.store.create_key(new).await.unwrap();
    }
    db.store.revoke_key(&acme[0], NOW).await.unwrap();

    let collect = |filter: KeyFilter, page: usize| {
        let store = db.store.clone();
        async move {
            let mut all = vec![];
            let mut cursor: Option<String> = None;
            loop {
                let p = store.list_keys(&filter, page, cursor.as_deref()).await.unwrap();
                assert!(p.items.len() <= page);
                all.extend(p.items.into_iter().map(|k| k.key_id));
                match p.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => return all,
                }
            }
        }
    };
    let mut all = collect(KeyFilter::default(), 3).await;
    assert_eq!(all.len(), 10);
    all.dedup();
    assert_eq!(all.len(), 10, "no repeats across pages");

    let by_customer = collect(KeyFilter { customer_id: Some(cid("acme")), ..Default::default() }, 2).await;
    let mut expected = acme.clone();
    expected.sort();
    assert_eq!(by_customer, expected);

    let free = collect(KeyFilter { plan_id: Some(PlanId::parse("free").unwrap()), ..Default::default() }, 2).await;
    assert_eq!(free.len(), 4 + 3);

    let active_acme =
        collect(KeyFilter { customer_id: Some(cid("acme")), status: Some(KeyStatus::Active), ..Default::default() }, 4)
            .await;
    assert_eq!(active_acme.len(), 6);
    assert!(!active_acme.contains(&acme[0]));

    let exact = db
        .store
        .list_keys(&KeyFilter { customer_id: Some(cid("globex")), ..Default::default() }, 3, None)
        .await
        .unwrap();
    assert_eq!((exact.items.len(), exact.next_cursor), (3, None), "a full last page has no cursor");

    assert!(matches!(
        db.store.list_keys(&KeyFilter::default(), 3, Some("not-a-cursor")).await,
        Err(StoreError::InvalidCursor)
    ));
}

#[tokio::test]
async fn patches_change_fields_and_limits_but_never_a_revoked_key() {
    let db = fresh_db().await;
    db.store.create_plan(&plan("free", Some((10, 60)), None)).await.unwrap();
    db.store.create_plan(&plan("pro", Some((100, 60)), Some((5000, Period::Day)))).await.unwrap();
    let (new, key) = new_key("acme", Some("free"));
    let id = db.store.create_key(new).await.unwrap().key_id;

    let patched = db
        .store
        .update_key(
            &id,
            KeyPatch {
                name: Some(Some("renamed".into())),
                status: Some(KeyStatus::Disabled),
                plan_id: Some(Some(PlanId::parse("pro").unwrap())),
                metadata: Some(BTreeMap::from([("env".into(), "prod".into())])),
                ..Default::default()
            },
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(patched.name.as_deref(), Some("renamed"));
    assert_eq!(patched.status, KeyStatus::Disabled);
    assert_eq!(patched.limits.rate_limit, Some(RateLimit { limit: 100, window_s: 60 }));
    assert_eq!(patched.limits.quota, Some(Quota { limit: 5000, period: Period::Day }));
    assert_eq!(db.store.get_key(&id).await.unwrap().unwrap(), patched);
    assert_eq!(decide(&db, &id, &key, NOW).await, Err(Denial::KeyDisabled));

    // Overrides beat the plan.
    let o = db
        .store
        .update_key(
            &id,
            KeyPatch {
                status: Some(KeyStatus::Active),
                overrides: Some(LimitOverrides { rate_limit: Some(RateLimit { limit: 2, window_s: 60 }), quota: None }),
                ..Default::default()
            },
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(o.limits.rate_limit, Some(RateLimit { limit: 2, window_s: 60 }));
    assert_eq!(o.limits.quota, Some(Quota { limit: 5000, period: Period::Day }));

    assert!(matches!(
        db.store
            .update_key(
                &id,
                KeyPatch { plan_id: Some(Some(PlanId::parse("ghost").unwrap())), ..Default::default() },
                NOW
            )
            .await,
        Err(StoreError::UnknownReference("plan"))
    ));
    assert!(matches!(
        db.store.update_key(&KeyId::generate(1), KeyPatch::default(), NOW).await,
        Err(StoreError::NotFound("key"))
    ));

    db.store.revoke_key(&id, NOW).await.unwrap();
    let before = db.store.get_key(&id).await.unwrap().unwrap();
    assert!(matches!(
        db.store.update_key(&id, KeyPatch { status: Some(KeyStatus::Active), ..Default::default() }, NOW).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(db.store.get_key(&id).await.unwrap().unwrap(), before, "a refused patch writes nothing");
}

#[tokio::test]
async fn rotation_keeps_the_old_secret_only_for_the_grace_period() {
    let db = fresh_db().await;
    let (id, old) = key_with_plan(&db, "acme", plan("pro", Some((100, 60)), None)).await;
    let new = ApiKey::generate(KeyEnv::Live).unwrap();
    let rotated = db.store.rotate_key(&id, new.hash(), new.display(), NOW.plus(300), NOW).await.unwrap();
    assert_eq!(rotated.hash, new.hash());
    assert_eq!(rotated.display, new.display());
    assert_eq!(db.store.key_id_for_hash(&new.hash()).await.unwrap(), Some(id.clone()));
    assert_eq!(db.store.key_id_for_hash(&old.hash()).await.unwrap(), Some(id.clone()));

    assert_eq!(decide(&db, &id, &new, NOW).await, Ok(()));
    assert_eq!(decide(&db, &id, &old, NOW.plus(299)).await, Ok(()));
    assert_eq!(decide(&db, &id, &old, NOW.plus(300)).await, Err(Denial::InvalidKey));
    assert_eq!(decide(&db, &id, &new, NOW.plus(300)).await, Ok(()));

    // Rotating without grace retires the old secret at once.
    let newer = ApiKey::generate(KeyEnv::Live).unwrap();
    db.store.rotate_key(&id, newer.hash(), newer.display(), NOW, NOW).await.unwrap();
    assert_eq!(decide(&db, &id, &new, NOW).await, Err(Denial::InvalidKey));
    assert_eq!(decide(&db, &id, &newer, NOW).await, Ok(()));
    assert!(matches!(
        db.store.rotate_key(&KeyId::generate(1), newer.hash(), newer.display(), NOW, NOW).await,
        Err(StoreError::NotFound("key"))
    ));
}

#[tokio::test]
async fn revocation_is_permanent_and_idempotent() {
    let db = fresh_db().await;
    let (id, key) = key_with_plan(&db, "acme", plan("pro", Some((100, 60)), None)).await;
    let revoked = db.store.revoke_key(&id, NOW).await.unwrap();
    assert_eq!(revoked.status, KeyStatus::Revoked);
    assert_eq!(db.store.revoke_key(&id, NOW).await.unwrap().status, KeyStatus::Revoked);
    assert_eq!(decide(&db, &id, &key, NOW).await, Err(Denial::KeyRevoked));
    let new = ApiKey::generate(KeyEnv::Live).unwrap();
    assert!(matches!(
        db.store.rotate_key(&id, new.hash(), new.display(), NOW, NOW).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(db.store.revoke_key(&KeyId::generate(1), NOW).await, Err(StoreError::NotFound("key"))));
}

// ----- plans ------------------------------------------------------------------------------

#[tokio::test]
async fn plans_crud_and_in_use_protection() {
    let db = fresh_db().await;
    let pro = plan("pro", Some((100, 60)), Some((1000, Period::Month)));
    db.store.create_plan(&pro).await.unwrap();
    assert!(matches!(db.store.create_plan(&pro).await, Err(StoreError::AlreadyExists("plan"))));
    assert_eq!(db.store.get_plan(&pro.id).await.unwrap(), Some(pro.clone()));
    db.store.create_plan(&plan("free", None, None)).await.unwrap();
    let mut ids: Vec<_> = db.store.list_plans().await.unwrap().into_iter().map(|p| p.id.as_str().to_owned()).collect();
    ids.sort();
    assert_eq!(ids, ["free", "pro"]);

    let missing = plan("ghost", None, None);
    assert!(matches!(db.store.update_plan(&missing, NOW, far()).await, Err(StoreError::NotFound("plan"))));
    assert!(matches!(db.store.delete_plan(&missing.id).await, Err(StoreError::NotFound("plan"))));

    let (new, _) = new_key("acme", Some("pro"));
    let id = db.store.create_key(new).await.unwrap().key_id;
    assert!(matches!(db.store.delete_plan(&pro.id).await, Err(StoreError::Conflict(_))));
    assert!(db.store.get_plan(&pro.id).await.unwrap().is_some(), "a refused delete keeps the plan");

    db.store
        .update_key(&id, KeyPatch { plan_id: Some(Some(PlanId::parse("free").unwrap())), ..Default::default() }, NOW)
        .await
        .unwrap();
    db.store.delete_plan(&pro.id).await.unwrap();
    assert_eq!(db.store.get_plan(&pro.id).await.unwrap(), None);
    let free = PlanId::parse("free").unwrap();
    assert!(matches!(db.store.delete_plan(&free).await, Err(StoreError::Conflict(_))));
    db.store.revoke_key(&id, NOW).await.unwrap();
    db.store.delete_plan(&free).await.unwrap();
}

#[tokio::test]
async fn a_plan_update_reaches_every_key_it_governs() {
    let db = fresh_db().await;
    let (a, ka) = key_with_plan(&db, "acme", plan("pro", Some((1, 60)), None)).await;
    let (b, _) = key_with_plan(&db, "globex", plan("pro", Some((1, 60)), None)).await;
    assert_eq!(decide(&db, &a, &ka, NOW).await, Ok(()));
    assert_eq!(decide(&db, &a, &ka, NOW).await, Err(Denial::RateLimited));

    let mut updated = plan("pro", Some((3, 60)), Some((10, Period::Day)));
    updated.name = "Pro v2".into();
    db.store.update_plan(&updated, NOW, far()).await.unwrap();
    let stored = db.store.get_plan(&updated.id).await.unwrap().unwrap();
    assert_eq!((stored.name.as_str(), stored.created_at), ("Pro v2", NOW));
    for id in [&a, &b] {
        let k = db.store.get_key(id).await.unwrap().unwrap();
        assert_eq!(k.limits.rate_limit, Some(RateLimit { limit: 3, window_s: 60 }));
        assert_eq!(k.limits.quota, Some(Quota { limit: 10, period: Period::Day }));
    }
    // The very next request sees the higher limit.
    assert_eq!(decide(&db, &a, &ka, NOW).await, Ok(()));
}

// ----- customers and billing identity -------------------------------------------------------

fn far() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(300)
}

#[tokio::test]
async fn a_customer_stripe_bills_is_linked_both_ways() {
    let db = fresh_db().await;
    db.store.create_plan(&plan("pro", Some((100, 60)), None)).await.unwrap();
    tollgate_tests::bill(&db.store, "acme", "cus_123", SubscriptionStatus::Active, Some("price_pro"), 100).await;
    let stored = db.store.get_customer(&cid("acme")).await.unwrap().unwrap();
    assert_eq!(stored.stripe_customer_id.as_deref(), Some("cus_123"));
    assert_eq!(stored.stripe_subscription_id.as_deref(), Some("sub_cus_123"));
    assert_eq!(stored.subscription_status, Some(SubscriptionStatus::Active));
    assert_eq!(stored.plan_id.as_ref().map(PlanId::as_str), Some("pro"));
    assert_eq!(db.store.customer_for_stripe("cus_123").await.unwrap(), Some(cid("acme")));
    let account = db.store.stripe_account("cus_123").await.unwrap();
    assert_eq!((account.linked, account.subscriptions.len()), (Some(cid("acme")), 1));
    assert!(db.store.customer_key_ids(&cid("acme")).await.unwrap().is_empty());
}

#[tokio::test]
async fn links_are_written_once_and_never_moved() {
    let db = fresh_db().await;
    assert_eq!(db.store.link_customer(&cid("acme"), "cus_1", NOW).await.unwrap(), Written::Applied);
    assert_eq!(db.store.link_customer(&cid("acme"), "cus_1", NOW).await.unwrap(), Written::Applied, "idempotent");
    // Neither side moves: not the customer to another Stripe customer, nor the Stripe
    // customer to another customer.
    assert_eq!(db.store.link_customer(&cid("acme"), "cus_2", NOW).await.unwrap(), Written::Stale);
    assert_eq!(db.store.link_customer(&cid("globex"), "cus_1", NOW).await.unwrap(), Written::Stale);
    assert_eq!(db.store.get_customer(&cid("globex")).await.unwrap(), None, "nothing written");
    let acme = db.store.get_customer(&cid("acme")).await.unwrap().unwrap();
    assert_eq!(acme.stripe_customer_id.as_deref(), Some("cus_1"));
    assert_eq!(acme.subscription_status, Some(SubscriptionStatus::Incomplete), "no access before a subscription");
    assert_eq!(db.store.customer_for_stripe("cus_2").await.unwrap(), None);
}

#[tokio::test]
async fn subscription_and_billing_writes_are_conditional_on_what_was_read() {
    use shared::domain::billing::{Observation, Source, Subscription, SubscriptionFacts};
    use shared::store::BillingStore;
    let db = fresh_db().await;
    db.store.link_customer(&cid("acme"), "cus_1", NOW).await.unwrap();
    let mut sub = Subscription::new("sub_1", "cus_1");
    let facts =
        SubscriptionFacts { price_ids: vec!["price_pro".into()], current_period_end: Some(9), created: Some(1) };
    sub.observe(Observation::subscription_event(
        "evt_1",
        10,
        Source::SubscriptionCreated,
        SubscriptionStatus::Active,
        facts,
    ));
    assert_eq!(db.store.put_subscription(&sub, None).await.unwrap(), Written::Applied);
    assert_eq!(db.store.put_subscription(&sub, None).await.unwrap(), Written::Stale, "already stored");
    let account = db.store.stripe_account("cus_1").await.unwrap();
    assert_eq!(account.subscriptions, vec![(sub.clone(), 1)]);
    assert_eq!(db.store.put_subscription(&sub, Some(1)).await.unwrap(), Written::Applied);
    // Billing derived from the account as first read is refused: a subscription moved since.
    let (customer, ver) = db.store.customer_versioned(&cid("acme")).await.unwrap().unwrap();
    let billed = Customer { subscription_status: Some(SubscriptionStatus::Active), ..customer };
    assert_eq!(db.store.put_billing(&billed, ver, &account, 3600).await.unwrap(), Written::Stale);
    // A torn read: the account's current version beside a subscription's old one.
    let now = db.store.stripe_account("cus_1").await.unwrap();
    let torn = shared::store::StripeAccount { subscriptions: account.subscriptions.clone(), ..now.clone() };
    assert_eq!(db.store.put_billing(&billed, ver, &torn, 3600).await.unwrap(), Written::Stale);
    assert_eq!(db.store.put_billing(&billed, ver, &now, 3600).await.unwrap(), Written::Applied);
    assert_eq!(db.store.put_billing(&billed, ver, &now, 3600).await.unwrap(), Written::Stale, "customer moved");
}

#[tokio::test]
async fn customer_billing_drives_its_keys() {
    let db = fresh_db().await;
    db.store.create_plan(&plan("basic", Some((1, 60)), None)).await.unwrap();
    db.store.create_plan(&plan("pro", Some((100, 60)), None)).await.unwrap();
    // A key that follows its customer's plan.
    let (new, key) = new_key("acme", None);
    let id = db.store.create_key(new).await.unwrap().key_id;
    assert_eq!(db.store.get_key(&id).await.unwrap().unwrap().limits.governing_plan_id, None);
    let bill = |status, price, at| tollgate_tests::bill(&db.store, "acme", "cus_123", status, price, at);

    bill(SubscriptionStatus::Active, Some("price_basic"), 100).await;
    let k = db.store.get_key(&id).await.unwrap().unwrap();
    assert_eq!(k.limits.governing_plan_id.as_ref().map(PlanId::as_str), Some("basic"));
    assert_eq!(decide(&db, &id, &key, NOW).await, Ok(()));
    assert_eq!(decide(&db, &id, &key, NOW).await, Err(Denial::RateLimited));

    // Upgrade: limits change from the next request.
    bill(SubscriptionStatus::Active, Some("price_pro"), 200).await;
    assert_eq!(decide(&db, &id, &key, NOW).await, Ok(()));
    // An older event arriving late changes nothing.
    bill(SubscriptionStatus::Active, Some("price_basic"), 150).await;
    let stored = db.store.get_customer(&cid("acme")).await.unwrap().unwrap();
    assert_eq!(stored.plan_id.as_ref().map(PlanId::as_str), Some("pro"));

    // Past due: allowed within grace (from the event's time), then not.
    let at = NOW.secs();
    bill(SubscriptionStatus::PastDue, Some("price_pro"), at).await;
    assert_eq!(decide(&db, &id, &key, NOW.plus(3599)).await, Ok(()));
    assert_eq!(decide(&db, &id, &key, NOW.plus(3600)).await, Err(Denial::SubscriptionInactive));
    // Canceled is final, even when it is delivered before older events.
    bill(SubscriptionStatus::Canceled, Some("price_pro"), at + 10).await;
    bill(SubscriptionStatus::Active, Some("price_pro"), at + 5).await;
    assert_eq!(decide(&db, &id, &key, NOW).await, Err(Denial::SubscriptionInactive));
    assert_eq!(db.store.get_customer(&cid("nobody")).await.unwrap(), None);
}

// ----- authorize and count ----------------------------------------------------------------

#[tokio::test]
async fn steady_state_is_one_request_and_a_rollover_at_most_two() {
    let db = fresh_db().await;
    let (id, key) = key_with_plan(&db, "acme", plan("pro", Some((100, 60)), Some((1000, Period::Month)))).await;
    // First request ever: the counters' windows start (rollover).
    db.requests.reset();
    let first = db.store.take(&id, &key.hash(), &[], NOW, &mut Take::one()).await.unwrap().decision;
    assert!(first.is_allowed());
    assert_eq!(db.requests.total(), 2, "{:?}", db.requests.snapshot());

    for i in 0..10 {
        db.requests.reset();
        let d = db.store.take(&id, &key.hash(), &[], NOW, &mut Take::one()).await.unwrap().decision;
        assert!(d.is_allowed());
        assert_eq!(db.requests.snapshot(), BTreeMap::from([("UpdateItem".to_owned(), 1)]), "request {i}");
        assert_eq!(d.rate.unwrap().remaining(), 100 - 2 - i);
        assert_eq!(d.quota.unwrap().remaining(), 1000 - 2 - i);
    }

    // Next window: one rollover (two requests), then one again.
    db.requests.reset();
    let d = db.store.take(&id, &key.hash(), &[], NOW.plus(60), &mut Take::one()).await.unwrap().decision;
    assert_eq!(d.rate.unwrap().remaining(), 99);
    assert_eq!(d.quota.unwrap().remaining(), 1000 - 12, "11 before, this one the 12th");
    assert_eq!(db.requests.total(), 2);
    db.requests.reset();
    db.store.take(&id, &key.hash(), &[], NOW.plus(61), &mut Take::one()).await.unwrap();
    assert_eq!(db.requests.total(), 1);
}

#[tokio::test]
async fn denials_follow_the_contract_order_and_are_counted_separately() {
    let db = fresh_db().await;
    let (id, key) = key_with_plan(&db, "acme", plan("tiny", Some((2, 60)), Some((3, Period::Day)))).await;
    assert_eq!(decide(&db, &id, &key, NOW).await, Ok(()));
    assert_eq!(decide(&db, &id, &key, NOW).await, Ok(()));
    let limited = db.store.take(&id, &key.hash(), &[], NOW, &mut Take::one()).await.unwrap().decision;
    assert_eq!(limited.outcome, Err(Denial::RateLimited));
    assert_eq!(limited.retry_after(NOW), Some(30));
    assert_eq!(limited.rate.unwrap().remaining(), 0);
    // Next window: one more fits the daily quota, then the quota stops it.
    assert_eq!(decide(&db, &id, &key, NOW.plus(60)).await, Ok(()));
    let q = db.store.take(&id, &key.hash(), &[], NOW.plus(60), &mut Take::one()).await.unwrap().decision;
    assert_eq!(q.outcome, Err(Denial::QuotaExceeded));
    let seconds_to_midnight =
        Day::from_days_since_epoch(NOW.day().days_since_epoch() + 1).start().secs() - NOW.plus(60).secs();
    assert_eq!(q.retry_after(NOW.plus(60)), Some(seconds_to_midnight as u64));
    // Only allowed requests counted against limits.
    let state = db.store.key_counters(&id).await.unwrap().unwrap();
    assert_eq!(state.counters.period_count, 3);

    let history = db.store.usage_history(&id, NOW.day()).await.unwrap();
    assert_eq!(
        history,
        vec![UsageDay {
            day: NOW.day(),
            count: DayCount::new(3, 2).with(Denial::RateLimited, 1).with(Denial::QuotaExceeded, 1)
        }]
    );

    // A wrong secret for a known key id.
    let stranger = ApiKey::generate(KeyEnv::Live).unwrap();
    assert_eq!(decide(&db, &id, &stranger, NOW).await, Err(Denial::InvalidKey));
    // A key id with no item.
    let ghost = db.store.take(&KeyId::generate(1), &key.hash(), &[], NOW, &mut Take::one()).await.unwrap().decision;
    assert_eq!(ghost.outcome, Err(Denial::InvalidKey));
}

#[tokio::test]
async fn expiry_and_status_deny_before_limits() {
    let db = fresh_db().await;
    db.store.create_plan(&plan("pro", Some((100, 60)), None)).await.unwrap();
    let (mut new, key) = new_key("acme", Some("pro"));
    new.expires_at = Some(NOW.plus(10));
    let id = db.store.create_key(new).await.unwrap().key_id;
    assert_eq!(decide(&db, &id, &key, NOW.plus(9)).await, Ok(()));
    assert_eq!(decide(&db, &id, &key, NOW.plus(10)).await, Err(Denial::KeyExpired));
    db.store.update_key(&id, KeyPatch { expires_at: Some(None), ..Default::default() }, NOW).await.unwrap();
    assert_eq!(decide(&db, &id, &key, NOW.plus(10)).await, Ok(()));
}

#[tokio::test]
async fn unlimited_keys_are_allowed_and_still_counted() {
    let db = fresh_db().await;
    let (new, key) = new_key("acme", None);
    let id = db.store.create_key(new).await.unwrap().key_id;
    for _ in 0..5 {
        db.requests.reset();
        let d = db.store.take(&id, &key.hash(), &[], NOW, &mut Take::one()).await.unwrap().decision;
        assert!(d.is_allowed());
        assert_eq!((d.rate, d.quota), (None, None));
        assert_eq!(db.requests.total(), 1);
    }
    let history = db.store.usage_history(&id, NOW.day()).await.unwrap();
    assert_eq!(history, vec![UsageDay { day: NOW.day(), count: DayCount::new(5, 0) }]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_allow_exactly_the_limit() {
    let db = fresh_db().await;
    const LIMIT: u64 = 1_000;
    const TASKS: usize = 64;
    const PER_TASK: usize = 50;
    let (id, key) = key_with_plan(&db, "acme", plan("burst", Some((LIMIT, 3600)), None)).await;
    let allowed = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let hash = key.hash();
    let now = UnixTime(NOW.secs() - NOW.secs() % 3600 + 10);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (store, id, allowed, limited) = (db.store.clone(), id.clone(), allowed.clone(), limited.clone());
            tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    match store.take(&id, &hash, &[], now, &mut Take::one()).await.unwrap().decision.outcome {
                        Ok(()) => allowed.fetch_add(1, Ordering::Relaxed),
                        Err(Denial::RateLimited) => limited.fetch_add(1, Ordering::Relaxed),
                        Err(other) => panic!("unexpected {other:?}"),
                    };
                }
            })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        t.unwrap();
    }
    let total = (TASKS * PER_TASK) as u64;
    assert_eq!(allowed.load(Ordering::Relaxed), LIMIT, "backend {}", db.backend());
    assert_eq!(limited.load(Ordering::Relaxed), total - LIMIT);
    let state = db.store.key_counters(&id).await.unwrap().unwrap();
    assert_eq!(state.counters.window_count, LIMIT, "no lost or extra counts");
    let history = db.store.usage_history(&id, now.day()).await.unwrap();
    assert_eq!(history[0].count.allowed, LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rollovers_start_one_window() {
    let db = fresh_db().await;
    let (id, key) = key_with_plan(&db, "acme", plan("small", Some((10, 60)), None)).await;
    let hash = key.hash();
    // Everyone arrives at the start of a fresh window at once.
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (store, id) = (db.store.clone(), id.clone());
            tokio::spawn(async move {
                store.take(&id, &hash, &[], NOW, &mut Take::one()).await.unwrap().decision.is_allowed()
            })
        })
        .collect();
    let allowed = futures::future::join_all(tasks).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(allowed, 10);
    assert_eq!(db.store.key_counters(&id).await.unwrap().unwrap().counters.window_count, 10);
}

// ----- idempotency ------------------------------------------------------------------------

#[tokio::test]
async fn idempotency_claims_leases_and_expiry() {
    let db = fresh_db().await;
    let exp = NOW.plus(86_400);
    let s = &db.store;
    assert_eq!(
        s.reserve(Reserve {
            scope: "keys",
            id: "abc",
            owner: "w1",
            fingerprint: "fp1",
            lease_s: 30,
            expires_at: exp,
            now: NOW
        })
        .await
        .unwrap(),
        Reservation::Fresh
    );
    assert_eq!(
        s.reserve(Reserve {
            scope: "keys",
            id: "abc",
            owner: "w2",
            fingerprint: "fp1",
            lease_s: 30,
            expires_at: exp,
            now: NOW
        })
        .await
        .unwrap(),
        Reservation::InProgress { fingerprint: "fp1".into() }
    );
    // The same attempt again (the SDK resending a put whose answer was lost): still ours.
    assert_eq!(
        s.reserve(Reserve {
            scope: "keys",
            id: "abc",
            owner: "w1",
            fingerprint: "fp1",
            lease_s: 30,
            expires_at: exp,
            now: NOW
        })
        .await
        .unwrap(),
        Reservation::Fresh
    );
    // Other scopes are independent.
    assert_eq!(
        s.reserve(Reserve {
            scope: "stripe",
            id: "abc",
            owner: "w9",
            fingerprint: "fp9",
            lease_s: 30,
            expires_at: exp,
            now: NOW
        })
        .await
        .unwrap(),
        Reservation::Fresh
    );
    s.finish("keys", "abc", "w1", "{\"key_id\":\"k\"}", exp).await.unwrap();
    assert_eq!(
        s.reserve(Reserve {
            scope: "keys",
            id: "abc",
            owner: "w2",
            fingerprint: "fp2",
            lease_s: 30,
            expires_at: exp,
            now: NOW.plus(60)
        })
        .await
        .unwrap(),
        Reservation::Done { fingerprint: "fp1".into(), result: "{\"key_id\":\"k\"}".into() }
    );
    // Finished records are not taken over when a lease would have run out...
    assert!(matches!(
        s.reserve(Reserve {
            scope: "keys",
            id: "abc",
            owner: "w3",
            fingerprint: "fp1",
            lease_s: 30,
            expires_at: exp,
            now: NOW.plus(3600)
        })
        .await
        .unwrap(),
        Reservation::Done { .. }
    ));
    // ...but are once the record itself expires (TTL deletion may lag).
    assert_eq!(
        s.reserve(Reserve {
            scope: "keys",
            id: "abc",
            owner: "w4",
            fingerprint: "fp1",
            lease_s: 30,
            expires_at: exp,
            now: exp
        })
        .await
        .unwrap(),
        Reservation::Fresh
    );

    // A crashed holder's lease runs out; a released claim is free at once.
    assert_eq!(
        s.reserve(Reserve {
            scope: "keys",
            id: "crash",
            owner: "a",
            fingerprint: "fp",
            lease_s: 30,
            expires_at: exp,
            now: NOW
        })
        .await
        .unwrap(),
        Reservation::Fresh
    );
    assert!(matches!(
        s.reserve(Reserve {
            scope: "keys",
            id: "crash",
            owner: "b",
            fingerprint: "fp",
            lease_s: 30,
            expires_at: exp,
            now: NOW.plus(29)
        })
        .await
        .unwrap(),
        Reservation::InProgress { .. }
    ));
    assert_eq!(
        s.reserve(Reserve {
            scope: "keys",
            id: "crash",
            owner: "c",
            fingerprint: "fp",
            lease_s: 30,
            expires_at: exp,
            now: NOW.plus(30)
        })
        .await
        .unwrap(),
        Reservation::Fresh
    );
    // The crashed holder wakes up: it can neither finish nor release what is now c's.
    assert!(matches!(s.finish("keys", "crash", "a", "late", exp).await, Err(StoreError::Conflict(_))));
    s.release("keys", "crash", "a").await.unwrap();
    assert!(matches!(
        s.reserve(Reserve {
            scope: "keys",
            id: "crash",
            owner: "d",
            fingerprint: "fp",
            lease_s: 30,
            expires_at: exp,
            now: NOW.plus(31)
        })
        .await
        .unwrap(),
        Reservation::InProgress { .. }
    ));
    s.release("keys", "crash", "c").await.unwrap();
    assert_eq!(
        s.reserve(Reserve {
            scope: "keys",
            id: "crash",
            owner: "e",
            fingerprint: "fp",
            lease_s: 30,
            expires_at: exp,
            now: NOW.plus(31)
        })
        .await
        .unwrap(),
        Reservation::Fresh
    );
    // Releasing a finished record does not delete it.
    s.finish("keys", "crash", "e", "r", exp).await.unwrap();
    s.release("keys", "crash", "e").await.unwrap();
    assert!(matches!(
        s.reserve(Reserve {
            scope: "keys",
            id: "crash",
            owner: "f",
            fingerprint: "fp",
            lease_s: 30,
            expires_at: exp,
            now: NOW.plus(40)
        })
        .await
        .unwrap(),
        Reservation::Done { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_one_concurrent_claim_wins() {
    let db = fresh_db().await;
    let exp = NOW.plus(86_400);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = db.store.clone();
            tokio::spawn(async move {
                store
                    .reserve(Reserve {
                        scope: "stripe",
                        id: "evt_1",
                        owner: &format!("w{i}"),
                        fingerprint: &format!("fp{i}"),
                        lease_s: 30,
                        expires_at: exp,
                        now: NOW,
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    let fresh = futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter(|c| *c.as_ref().unwrap() == Reservation::Fresh)
        .count();
    assert_eq!(fresh, 1);
}

// ----- usage history ----------------------------------------------------------------------

#[tokio::test]
async fn usage_history_merges_rolled_up_days_with_live_counters() {
    let db = fresh_db().await;
    let (id, key) = key_with_plan(&db, "acme", plan("pro", None, None)).await;
    let today = NOW.day();
    let two_days_ago = NOW.plus(-2 * 86_400);
    for _ in 0..3 {
        decide(&db, &id, &key, two_days_ago).await.unwrap();
    }
    // Rolled up and settled: the day's live counters are gone, its usage-day item stays.
    let usage = db.store.key_usage(&id).await.unwrap().unwrap();
    let day = [two_days_ago.day()];
    db.requests.reset();
    assert_eq!(
        db.store.roll_key(&usage, &day, Some("api_requests"), KeyEdit::Settle(&day), NOW).await.unwrap(),
        Written::Applied
    );
    assert_eq!(db.requests.get("TransactWriteItems"), 1, "rolled and settled in one request");
    assert_eq!(db.requests.total(), 1);
    decide(&db, &id, &key, NOW).await.unwrap();
    let history = db.store.usage_history(&id, today.minus(89)).await.unwrap();
    assert_eq!(
        history,
        vec![
            UsageDay { day: two_days_ago.day(), count: DayCount::new(3, 0) },
            UsageDay { day: today, count: DayCount::new(1, 0) }
        ]
    );
    assert_eq!(
        db.store.usage_history(&id, today).await.unwrap(),
        vec![UsageDay { day: today, count: DayCount::new(1, 0) }]
    );
    assert!(db.store.usage_history(&KeyId::generate(1), today.minus(89)).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_counting_write_keeps_last_used_and_denials_by_code_in_the_same_request() {
    let db = fresh_db().await;
    let (id, key) = key_with_plan(&db, "acme", plan("two", Some((2, 60)), None)).await;
    assert_eq!(db.store.get_key(&id).await.unwrap().unwrap().last_used_at, None, "never used");
    // The first decision opens the window (two requests); the steady state is one.
    assert_eq!(decide(&db, &id, &key, NOW).await, Ok(()));
    assert_eq!(db.store.get_key(&id).await.unwrap().unwrap().last_used_at, Some(NOW));
    db.requests.reset();
    assert_eq!(decide(&db, &id, &key, NOW.plus(1)).await, Ok(()));
    assert_eq!(db.requests.total(), 1, "last_used rides on the one counting write");
    assert_eq!(db.store.get_key(&id).await.unwrap().unwrap().last_used_at, Some(NOW.plus(1)));
    // A denial is not a use.
    assert_eq!(decide(&db, &id, &key, NOW.plus(5)).await, Err(Denial::RateLimited));
    assert_eq!(db.store.get_key(&id).await.unwrap().unwrap().last_used_at, Some(NOW.plus(1)));
    // Denials the authorizer answered from memory arrive with their code.
    db.store.record_denials(&id, NOW.day(), Denial::RateLimited, 4).await;
    db.store.record_denials(&id, NOW.day(), Denial::InsufficientScope, 2).await;
    // An unknown secret or an outage is never the key's: not counted.
    db.store.record_denials(&id, NOW.day(), Denial::InvalidKey, 9).await;
    let history = db.store.usage_history(&id, NOW.day()).await.unwrap();
    let want = DayCount::new(2, 7).with(Denial::RateLimited, 5).with(Denial::InsufficientScope, 2);
    assert_eq!(history, vec![UsageDay { day: NOW.day(), count: want }]);
    // Rolled up and settled a day later, the codes move to history with the rest and leave
    // the key item.
    let later = NOW.plus(2 * 86_400);
    let read = db.store.key_usage(&id).await.unwrap().unwrap();
    assert_eq!(read.live[&NOW.day()], want);
    let today = [NOW.day()];
    assert_eq!(db.store.roll_key(&read, &today, None, KeyEdit::Settle(&today), later).await.unwrap(), Written::Applied);
    let after = db.store.key_usage(&id).await.unwrap().unwrap();
    assert!(after.live.is_empty(), "{:?}", after.live);
    assert_eq!(after.rolled[&NOW.day()], want);
    assert_eq!(db.store.usage_history(&id, NOW.day()).await.unwrap()[0].count, want);
    let ledger = db.store.customer_usage(&cid("acme"), NOW.day()).await.unwrap();
    assert_eq!(ledger[0].1.usage, want, "the customer's ledger has the codes too");
}

#[tokio::test]
async fn statistics_days_add_up_and_their_lists_are_replaced() {
    use shared::domain::stats::{NearQuota, TopCustomer, TopKey};
    let db = fresh_db().await;
    let (day, next) = (NOW.day(), NOW.day().next());
    let key = |n: u64| TopKey { key_id: KeyId::generate(n), customer_id: cid("acme"), allowed: n };
    let acme = |n| TopCustomer { customer_id: cid("acme"), allowed: n };
    let first = DayCount::new(3, 2).with(Denial::RateLimited, 2);
    db.store.add_day_stats(day, first, &[key(3)], &[acme(3)]).await.unwrap();
    let (k5, k4) = (key(5), key(4));
    db.store
        .add_day_stats(day, DayCount::new(2, 1).with(Denial::QuotaExceeded, 1), &[k5.clone(), k4.clone()], &[acme(5)])
        .await
        .unwrap();
    db.store.add_day_stats(next, DayCount::new(1, 0), &[], &[]).await.unwrap();
    let near = NearQuota {
        key_id: k5.key_id.clone(),
        customer_id: cid("acme"),
        used: 9,
        limit: 10,
        period: Period::Month,
        reset: NOW.plus(3_600),
    };
    db.store.put_near_quota(std::slice::from_ref(&near)).await.unwrap();
    db.requests.reset();
    let stats = db.store.stats(day.minus(30), day).await.unwrap();
    assert_eq!(db.requests.total(), 1, "the overview is one Query");
    assert_eq!(stats.days.len(), 1, "days after `to` are left out");
    let d = &stats.days[&day];
    assert_eq!(d.count, DayCount::new(5, 3).with(Denial::RateLimited, 2).with(Denial::QuotaExceeded, 1));
    assert_eq!((d.top_keys.clone(), d.top_customers.clone()), (vec![k5, k4], vec![acme(5)]));
    assert_eq!(stats.near_quota, vec![near]);
    assert_eq!(db.store.stats(next, next).await.unwrap().days[&next].count, DayCount::new(1, 0));
}

// ----- the usage rollup's storage -----------------------------------------------------------

/// A key on a plan without limits, allowed one request a day for `days` days from `first`.
async fn key_used_daily(db: &TestDb, first: UnixTime, days: i64) -> (KeyId, ApiKey) {
    let (id, key) = key_with_plan(db, "acme", plan("free", None, None)).await;
    for d in 0..days {
        assert_eq!(decide(db, &id, &key, first.plus(d * 86_400)).await, Ok(()));
    }
    (id, key)
}

/// After weeks without a rollup a key holds many finished days: they are rolled and removed a
/// few at a time (a transaction holds 100 items, an expression 4 KB), the marker kept until
/// the last of them goes.
#[tokio::test]
async fn many_finished_days_are_rolled_and_settled_a_few_at_a_time() {
    let db = fresh_db().await;
    let first = NOW.plus(-30 * 86_400);
    let (id, _) = key_used_daily(&db, first, 20).await;
    db.store.record_denials(&id, first.day(), Denial::KeyDisabled, 1).await;
    let read = db.store.key_usage(&id).await.unwrap().unwrap();
    assert_eq!(read.live.len(), 20);
    let days: Vec<Day> = read.live.keys().copied().collect();
    // More than one write takes is refused before anything is sent.
    let too_many: Vec<Day> = (0..=ROLL_DAYS_AT_ONCE as i64).map(|i| first.day().minus(-i)).collect();
    assert!(db.store.roll_key(&read, &too_many, None, KeyEdit::Keep, NOW).await.is_err());
    let twice = [first.day(), first.day()];
    assert!(db.store.roll_key(&read, &twice, None, KeyEdit::Keep, NOW).await.is_err());
    assert!(db.store.roll_key(&read, &[], None, KeyEdit::Settle(&days), NOW).await.is_err());
    // Every day rolled, the first 14 removed: one transaction.
    db.requests.reset();
    let some = KeyEdit::RemoveDays(&days[..SETTLE_DAYS_AT_ONCE]);
    assert_eq!(db.store.roll_key(&read, &days, None, some, NOW).await.unwrap(), Written::Applied);
    assert_eq!(db.requests.total(), 1);
    let again = db.store.key_usage(&id).await.unwrap().unwrap();
    assert_eq!(again.live.len(), 6);
    assert!(again.live.iter().all(|(d, c)| again.rolled.get(d) == Some(c)), "each live day read as rolled");
    assert_eq!(db.store.active_keys().await.unwrap(), vec![id.clone()], "the marker stays meanwhile");
    let rest: Vec<Day> = again.live.keys().copied().collect();
    assert_eq!(db.store.roll_key(&again, &[], None, KeyEdit::Settle(&rest), NOW).await.unwrap(), Written::Applied);
    assert!(db.store.key_usage(&id).await.unwrap().unwrap().live.is_empty());
    assert!(db.store.active_keys().await.unwrap().is_empty());
    // History kept every day, the denial's code with it.
    let history = db.store.usage_history(&id, first.day()).await.unwrap();
    assert_eq!(history.len(), 20);
    assert_eq!(history[0].count, DayCount::new(1, 1).with(Denial::KeyDisabled, 1));
}

/// The rollup's read of a key is one Query (newest first) however long the key rested since it
/// was settled on a day that was not over; a second Query only for live days older than its
/// fifteen most recent usage days.
#[tokio::test]
async fn a_keys_usage_is_read_in_one_query_after_weeks_of_rest() {
    let db = fresh_db().await;
    let (id, key) = key_used_daily(&db, NOW.plus(-60 * 86_400), 20).await;
    // Rolled, and its finished days kept (as a busy key's are until their own run).
    let read = db.store.key_usage(&id).await.unwrap().unwrap();
    let days: Vec<Day> = read.live.keys().copied().collect();
    assert_eq!(db.store.roll_key(&read, &days, None, KeyEdit::Keep, NOW).await.unwrap(), Written::Applied);
    db.requests.reset();
    let all = db.store.key_usage(&id).await.unwrap().unwrap();
    assert_eq!(db.requests.get("Query"), 2, "live days older than the newest fifteen: one more Query");
    assert_eq!((all.live.len(), &all.rolled), (20, &read.live));
    // Every day but the last removed, then settled on that day (it was not over), the key
    // rests forty days and is used again: one Query reads what the rollup needs.
    let remove = KeyEdit::RemoveDays(&days[..SETTLE_DAYS_AT_ONCE]);
    assert_eq!(db.store.roll_key(&all, &[], None, remove, NOW).await.unwrap(), Written::Applied);
    let part = db.store.key_usage(&id).await.unwrap().unwrap();
    let rest: Vec<Day> = part.live.keys().copied().filter(|d| *d != days[19]).collect();
    assert_eq!(db.store.roll_key(&part, &[], None, KeyEdit::Settle(&rest), NOW).await.unwrap(), Written::Applied);
    assert!(db.store.active_keys().await.unwrap().is_empty());
    assert_eq!(decide(&db, &id, &key, NOW).await, Ok(()));
    db.requests.reset();
    let later = db.store.key_usage(&id).await.unwrap().unwrap();
    assert_eq!(db.requests.total(), 1);
    assert_eq!(later.live.keys().copied().collect::<Vec<_>>(), vec![days[19], NOW.day()]);
    assert_eq!(later.rolled.get(&days[19]), Some(&DayCount::new(1, 0)), "the rested day's roll is read");
    assert_eq!(later.live[&days[19]], DayCount::new(1, 0), "so nothing of it is rolled again");
}

/// Keys of one customer are rolled in one transaction, with one ledger update per day and
/// meter by the sum of their differences; a key counted since the read fails only its own
/// guard, which the answer names, and the others go again without it.
#[tokio::test]
async fn a_customers_keys_roll_together_and_a_changed_one_is_named() {
    let db = fresh_db().await;
    let mut keys = vec![];
    for _ in 0..3 {
        let (id, key) = key_with_plan(&db, "acme", plan("pro", None, None)).await;
        for _ in 0..2 {
            decide(&db, &id, &key, NOW).await.unwrap();
        }
        keys.push((id, key));
    }
    let (other, _) = key_with_plan(&db, "beta", plan("pro", None, None)).await;
    let mut read = vec![];
    for (id, _) in &keys {
        read.push(db.store.key_usage(id).await.unwrap().unwrap());
    }
    let today = [NOW.day()];
    let roll = |k| KeyRoll { key: k, days: &today, meter: Some("api_requests"), edit: KeyEdit::Settle(&[]) };
    let rolls: Vec<KeyRoll<'_>> = read.iter().map(roll).collect();
    // Keys of two customers never share a write.
    let beta = db.store.key_usage(&other).await.unwrap();
    assert!(beta.is_none() || db.store.roll_keys(&[rolls[0], roll(beta.as_ref().unwrap())], NOW).await.is_err());
    // The second key is used after the read: its settle guard fails, named; nothing written.
    decide(&db, &keys[1].0, &keys[1].1, NOW.plus(1)).await.unwrap();
    db.requests.reset();
    assert_eq!(db.store.roll_keys(&rolls, NOW).await.unwrap(), Rolled::Stale(vec![1]));
    let meter = MeterDay { customer_id: cid("acme"), day: NOW.day(), meter: Some("api_requests".into()) };
    assert!(db.store.meter_ledger(&meter).await.unwrap().is_none(), "nothing written");
    // Again without the settle of the changed key: one transaction, one ledger update of 6.
    let again = [rolls[0], KeyRoll { edit: KeyEdit::Keep, ..rolls[1] }, rolls[2]];
    assert_eq!(again.iter().map(KeyRoll::items).sum::<usize>(), 5);
    assert_eq!(db.store.roll_keys(&again, NOW).await.unwrap(), Rolled::Applied);
    assert_eq!(db.requests.get("TransactWriteItems"), 2);
    assert_eq!(db.store.meter_ledger(&meter).await.unwrap().unwrap().usage, DayCount::new(6, 0));
    assert_eq!(db.store.active_keys().await.unwrap(), vec![keys[1].0.clone()], "two settled, one kept");
    // The same read again: every usage-day guard fails.
    assert_eq!(db.store.roll_keys(&again, NOW).await.unwrap(), Rolled::Stale(vec![0, 1, 2]));
}

#[tokio::test]
async fn rolling_a_key_moves_exactly_the_difference_once() {
    let db = fresh_db().await;
    let (id, key) = key_with_plan(&db, "acme", plan("pro", Some((2, 60)), None)).await;
    for _ in 0..3 {
        let _ = decide(&db, &id, &key, NOW).await; // 2 allowed, 1 denied (rate limit)
    }
    assert_eq!(db.store.active_keys().await.unwrap(), vec![id.clone()]);
    let read = db.store.key_usage(&id).await.unwrap().unwrap();
    assert_eq!(read.customer_id, cid("acme"));
    assert_eq!(read.plan, Some(PlanId::parse("pro").unwrap()));
    assert_eq!(read.last_used, Some(NOW));
    assert_eq!(read.live, BTreeMap::from([(NOW.day(), DayCount::new(2, 1).with(Denial::RateLimited, 1))]));
    assert!(read.rolled.is_empty());
    let today = [NOW.day()];
    let roll = |read| db.store.roll_key(read, &today, Some("api_requests"), KeyEdit::Keep, NOW);
    assert_eq!(roll(&read).await.unwrap(), Written::Applied);
    // The same read again is stale: the usage-day item no longer holds what it saw.
    assert_eq!(roll(&read).await.unwrap(), Written::Stale);

    let meter = MeterDay { customer_id: cid("acme"), day: NOW.day(), meter: Some("api_requests".into()) };
    let ledger = db.store.meter_ledger(&meter).await.unwrap().unwrap();
    assert_eq!(ledger.usage, DayCount::new(2, 1).with(Denial::RateLimited, 1));
    assert_eq!((ledger.reported, ledger.unbilled, ledger.pending.clone()), (0, 0, None));
    assert_eq!(db.store.owed_meters().await.unwrap(), vec![meter.clone()]);

    // More usage, then a fresh read: only the difference moves.
    decide(&db, &id, &key, NOW.plus(60)).await.unwrap();
    let again = db.store.key_usage(&id).await.unwrap().unwrap();
    assert_eq!(again.rolled[&NOW.day()], DayCount::new(2, 1).with(Denial::RateLimited, 1));
    assert_eq!(roll(&again).await.unwrap(), Written::Applied);
    let usage = |db: &TestDb| {
        let meter = meter.clone();
        let store = db.store.clone();
        async move { store.meter_ledger(&meter).await.unwrap().unwrap().usage }
    };
    assert_eq!(usage(&db).await, DayCount::new(3, 1).with(Denial::RateLimited, 1));

    // Settling removes the marker only if nothing was counted since the read; alone, it is
    // one UpdateItem.
    decide(&db, &id, &key, NOW.plus(61)).await.unwrap();
    db.requests.reset();
    assert_eq!(db.store.roll_key(&again, &[], None, KeyEdit::Settle(&[]), NOW).await.unwrap(), Written::Stale);
    assert_eq!(db.requests.get("UpdateItem"), 1);
    assert_eq!(db.store.active_keys().await.unwrap(), vec![id.clone()]);
    // A roll that settles too is one transaction: a request counted after the read cancels
    // all of it, the day's roll with the settle (nothing is half written).
    let last = db.store.key_usage(&id).await.unwrap().unwrap();
    decide(&db, &id, &key, NOW.plus(62)).await.unwrap_err(); // rate limited: a denial counted
    let settle = |read| db.store.roll_key(read, &today, Some("api_requests"), KeyEdit::Settle(&[]), NOW);
    assert_eq!(settle(&last).await.unwrap(), Written::Stale);
    assert_eq!(usage(&db).await, DayCount::new(3, 1).with(Denial::RateLimited, 1), "not rolled");
    assert_eq!(db.store.active_keys().await.unwrap(), vec![id.clone()]);
    let last = db.store.key_usage(&id).await.unwrap().unwrap();
    db.requests.reset();
    assert_eq!(settle(&last).await.unwrap(), Written::Applied);
    assert_eq!((db.requests.get("TransactWriteItems"), db.requests.total()), (1, 1));
    assert_eq!(usage(&db).await, DayCount::new(4, 2).with(Denial::RateLimited, 2));
    assert!(db.store.active_keys().await.unwrap().is_empty());
    // Today's live counters stay (the day is not over); the next request marks the key again.
    assert_eq!(db.store.usage_history(&id, NOW.day()).await.unwrap()[0].count.allowed, 4);
    decide(&db, &id, &key, NOW.plus(120)).await.unwrap();
    assert_eq!(db.store.active_keys().await.unwrap(), vec![id.clone()]);

    // Finished days alone go whatever the key counts meanwhile: their own counters guard them.
    let tomorrow = NOW.plus(86_400);
    decide(&db, &id, &key, tomorrow).await.unwrap();
    let read = db.store.key_usage(&id).await.unwrap().unwrap();
    assert_eq!(
        db.store.roll_key(&read, &today, Some("api_requests"), KeyEdit::Keep, NOW).await.unwrap(),
        Written::Applied
    );
    let read = db.store.key_usage(&id).await.unwrap().unwrap();
    decide(&db, &id, &key, tomorrow.plus(60)).await.unwrap();
    let later = tomorrow.plus(7_200);
    let remove = KeyEdit::RemoveDays(&today);
    assert_eq!(db.store.roll_key(&read, &[], None, remove, later).await.unwrap(), Written::Applied);
    let after = db.store.key_usage(&id).await.unwrap().unwrap();
    assert_eq!(after.live.keys().copied().collect::<Vec<_>>(), vec![tomorrow.day()]);
    assert_eq!(after.rolled[&NOW.day()].allowed, 5);
    assert_eq!(db.store.active_keys().await.unwrap(), vec![id], "the marker stays");
}

#[tokio::test]
async fn a_meter_ledger_is_reported_through_a_pending_report() {
    let db = fresh_db().await;
    let (id, key) = key_with_plan(&db, "acme", plan("pro", None, None)).await;
    for _ in 0..5 {
        decide(&db, &id, &key, NOW).await.unwrap();
    }
    let read = db.store.key_usage(&id).await.unwrap().unwrap();
    db.store.roll_key(&read, &[NOW.day()], Some("api_requests"), KeyEdit::Keep, NOW).await.unwrap();
    let meter = MeterDay { customer_id: cid("acme"), day: NOW.day(), meter: Some("api_requests".into()) };
    let ledger = db.store.meter_ledger(&meter).await.unwrap().unwrap();
    let pending = PendingReport {
        value: 5,
        to: 5,
        identifier: "tg_test_1".into(),
        timestamp: NOW.secs(),
        stripe_customer_id: "cus_123".into(),
    };
    assert_eq!(db.store.begin_report(&meter, &ledger, &pending).await.unwrap(), Written::Applied);
    // A second decision from the same read finds the slot taken.
    assert_eq!(db.store.begin_report(&meter, &ledger, &pending).await.unwrap(), Written::Stale);
    assert_eq!(db.store.meter_ledger(&meter).await.unwrap().unwrap().pending, Some(pending.clone()));
    assert_eq!(db.store.commit_report(&meter, &pending).await.unwrap(), Written::Applied);
    assert_eq!(db.store.commit_report(&meter, &pending).await.unwrap(), Written::Stale, "committed once");
    let ledger = db.store.meter_ledger(&meter).await.unwrap().unwrap();
    assert_eq!((ledger.reported, ledger.unsettled(), ledger.pending), (5, 0, None));
    assert!(db.store.owed_meters().await.unwrap().is_empty(), "settled: no longer owed");

    // Written off: unbilled, never reported, no longer owed.
    decide(&db, &id, &key, NOW.plus(1)).await.unwrap();
    let read = db.store.key_usage(&id).await.unwrap().unwrap();
    db.store.roll_key(&read, &[NOW.day()], Some("api_requests"), KeyEdit::Keep, NOW).await.unwrap();
    let ledger = db.store.meter_ledger(&meter).await.unwrap().unwrap();
    assert_eq!(ledger.unsettled(), 1);
    assert_eq!(db.store.write_off(&meter, &ledger).await.unwrap(), Written::Applied);
    assert_eq!(db.store.write_off(&meter, &ledger).await.unwrap(), Written::Stale);
    let ledger = db.store.meter_ledger(&meter).await.unwrap().unwrap();
    assert_eq!((ledger.reported, ledger.unbilled, ledger.unsettled()), (5, 1, 0));
    assert!(db.store.owed_meters().await.unwrap().is_empty());
    assert_eq!(db.store.customer_usage(&cid("acme"), NOW.day()).await.unwrap(), vec![(meter, ledger)]);
}

// ----- consistency regressions ----------------------------------------------------------

#[tokio::test]
async fn plan_updates_never_lose_reference_counts() {
    let db = fresh_db().await;
    let (a, _) = key_with_plan(&db, "acme", plan("pro", Some((10, 60)), None)).await;
    let (b, _) = key_with_plan(&db, "acme", plan("pro", Some((10, 60)), None)).await;
    db.store.update_plan(&plan("pro", Some((20, 60)), None), NOW, far()).await.unwrap();
    db.store.revoke_key(&a, NOW).await.unwrap();
    let pro = PlanId::parse("pro").unwrap();
    assert!(matches!(db.store.delete_plan(&pro).await, Err(StoreError::Conflict(_))), "b still uses it");
    db.store.revoke_key(&b, NOW).await.unwrap();
    db.store.delete_plan(&pro).await.unwrap();
}

#[tokio::test]
async fn a_new_window_length_carries_the_count_over() {
    let db = fresh_db().await;
    let (id, key) = key_with_plan(&db, "acme", plan("hourly", Some((2, 3600)), None)).await;
    assert_eq!(decide(&db, &id, &key, NOW).await, Ok(()));
    assert_eq!(decide(&db, &id, &key, NOW).await, Ok(()));
    assert_eq!(decide(&db, &id, &key, NOW).await, Err(Denial::RateLimited));
    // Same window length, higher limit: the count carries on.
    db.store.update_plan(&plan("hourly", Some((3, 3600)), None), NOW, far()).await.unwrap();
    assert_eq!(decide(&db, &id, &key, NOW).await, Ok(()));
    assert_eq!(decide(&db, &id, &key, NOW).await, Err(Denial::RateLimited));
    // A minute window instead of an hour: the hour's 3 stay until the hour ends, so switching
    // the window is no way round the limit.
    db.store.update_plan(&plan("hourly", Some((3, 60)), None), NOW, far()).await.unwrap();
    let d = db.store.take(&id, &key.hash(), &[], NOW, &mut Take::one()).await.unwrap().decision;
    assert_eq!(d.outcome, Err(Denial::RateLimited));
    let hour_end = UnixTime(NOW.secs() - NOW.secs() % 3600 + 3600);
    assert_eq!(d.rate.unwrap().reset, hour_end);
    // After it, minute windows.
    let d = db.store.take(&id, &key.hash(), &[], hour_end, &mut Take::one()).await.unwrap().decision;
    assert!(d.is_allowed());
    assert_eq!(d.rate.unwrap().reset, hour_end.plus(60));
}

#[tokio::test]
async fn switching_plans_never_resets_a_quota() {
    let db = fresh_db().await;
    let monthly = plan("monthly", None, Some((3, Period::Month)));
    db.store.create_plan(&plan("daily", None, Some((2, Period::Day)))).await.unwrap();
    db.store.create_plan(&plan("bigdaily", None, Some((5, Period::Day)))).await.unwrap();
    let (id, key) = key_with_plan(&db, "acme", monthly).await;
    for _ in 0..3 {
        assert_eq!(decide(&db, &id, &key, NOW).await, Ok(()));
    }
    assert_eq!(decide(&db, &id, &key, NOW).await, Err(Denial::QuotaExceeded));
    let switch = |to: &'static str| {
        let patch = KeyPatch { plan_id: Some(Some(PlanId::parse(to).unwrap())), ..Default::default() };
        db.store.update_key(&id, patch, NOW)
    };
    // Monthly (spent) to a smaller daily quota and back: still spent.
    switch("daily").await.unwrap();
    assert_eq!(decide(&db, &id, &key, NOW).await, Err(Denial::QuotaExceeded), "the month's 3 stay");
    switch("monthly").await.unwrap();
    assert_eq!(decide(&db, &id, &key, NOW).await, Err(Denial::QuotaExceeded));
    // To a larger daily quota: the 3 count against it until the month ends (5 in all).
    switch("bigdaily").await.unwrap();
    assert_eq!(decide(&db, &id, &key, NOW).await, Ok(()));
    assert_eq!(decide(&db, &id, &key, NOW).await, Ok(()));
    assert_eq!(decide(&db, &id, &key, NOW).await, Err(Denial::QuotaExceeded), "5, the largest quota in force");
    switch("monthly").await.unwrap();
    assert_eq!(decide(&db, &id, &key, NOW).await, Err(Denial::QuotaExceeded));
    // Daily to monthly on a fresh key: today's usage counts toward the month.
    let (id2, key2) = key_with_plan(&db, "globex", plan("bigdaily", None, Some((5, Period::Day)))).await;
    assert_eq!(decide(&db, &id2, &key2, NOW).await, Ok(()));
    assert_eq!(decide(&db, &id2, &key2, NOW).await, Ok(()));
    let patch = KeyPatch { plan_id: Some(Some(PlanId::parse("monthly").unwrap())), ..Default::default() };
    db.store.update_key(&id2, patch, NOW).await.unwrap();
    assert_eq!(decide(&db, &id2, &key2, NOW).await, Ok(()));
    assert_eq!(decide(&db, &id2, &key2, NOW).await, Err(Denial::QuotaExceeded), "2 today + 1 = the month's 3");
}

#[tokio::test]
async fn a_replayed_event_repairs_an_interrupted_fan_out() {
    let db = fresh_db().await;
    db.store.create_plan(&plan("pro", Some((100, 60)), None)).await.unwrap();
    let (new, key) = new_key("acme", None);
    let id = db.store.create_key(new).await.unwrap().key_id;
    tollgate_tests::bill(&db.store, "acme", "cus_1", SubscriptionStatus::Canceled, Some("price_pro"), 100).await;
    assert_eq!(decide(&db, &id, &key, NOW).await, Err(Denial::SubscriptionInactive));
    // Simulate a crash after the customer write but before its keys were updated: put the
    // key back to its old access and forget the fan-out's progress, then refresh again.
    use aws_sdk_dynamodb::types::AttributeValue;
    db.store
        .client()
        .update_item()
        .table_name(&db.table)
        .key("pk", AttributeValue::S(format!("KEY#{}", id.as_str())))
        .key("sk", AttributeValue::S("KEY".into()))
        .update_expression("SET sub_status = :a REMOVE #plan, rl_limit, rl_window")
        .expression_attribute_names("#plan", "plan")
        .expression_attribute_values(":a", AttributeValue::S("active".into()))
        .send()
        .await
        .unwrap();
    db.store
        .client()
        .delete_item()
        .table_name(&db.table)
        .key("pk", AttributeValue::S("FANOUT#customer#acme".into()))
        .key("sk", AttributeValue::S("FANOUT".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(decide(&db, &id, &key, NOW).await, Ok(()), "the stale key authorizes");
    let f = db.store.refresh_customer_keys(&cid("acme"), NOW, far()).await.unwrap();
    assert_eq!((f.visited, f.rewritten, f.complete), (1, 1, true));
    assert_eq!(decide(&db, &id, &key, NOW).await, Err(Denial::SubscriptionInactive));
    let k = db.store.get_key(&id).await.unwrap().unwrap();
    assert_eq!(k.limits.governing_plan_id.as_ref().map(PlanId::as_str), Some("pro"));
}

#[tokio::test]
async fn fan_outs_resume_where_they_stopped_and_finished_ones_cost_one_read() {
    let db = fresh_db().await;
    db.store.create_plan(&plan("pro", Some((100, 60)), None)).await.unwrap();
    let n = 120;
    for _ in 0..n {
        let (new, _) = new_key("acme", Some("pro"));
        db.store.create_key(new).await.unwrap();
    }
    // A deadline already passed: one page per call, each continuing after the last.
    let past = std::time::Instant::now();
    let updated = plan("pro", Some((50, 60)), None);
    let mut visited = 0;
    let mut calls = 0;
    loop {
        let f = db.store.update_plan(&updated, NOW, past).await.unwrap();
        calls += 1;
        visited += f.visited;
        assert_eq!(f.visited, f.rewritten, "no key is visited twice");
        if f.complete {
            break;
        }
        assert!(calls < 10);
    }
    assert_eq!((visited, calls), (n, 3), "pages of 50");
    for k in db.store.list_keys(&KeyFilter::default(), 100, None).await.unwrap().items {
        assert_eq!(k.limits.rate_limit.unwrap().limit, 50);
    }
    // The same update again (a retry): the plan is unchanged and the fan-out is done.
    db.requests.reset();
    let f = db.store.update_plan(&updated, NOW, far()).await.unwrap();
    assert_eq!((f.visited, f.complete), (0, true));
    assert_eq!(db.requests.total(), 2, "the plan and the progress item, nothing per key");
}

#[tokio::test]
async fn a_patch_cannot_revoke_and_a_cursor_cannot_cross_listings() {
    let db = fresh_db().await;
    let (id, _) = key_with_plan(&db, "acme", plan("pro", Some((100, 60)), None)).await;
    assert!(matches!(
        db.store.update_key(&id, KeyPatch { status: Some(KeyStatus::Revoked), ..Default::default() }, NOW).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(db.store.get_key(&id).await.unwrap().unwrap().status, KeyStatus::Active);
    for _ in 0..3 {
        let (new, _) = new_key("acme", Some("pro"));
        db.store.create_key(new).await.unwrap();
    }
    let page = db.store.list_keys(&KeyFilter::default(), 2, None).await.unwrap();
    let cursor = page.next_cursor.unwrap();
    let other = KeyFilter { customer_id: Some(cid("acme")), ..Default::default() };
    assert!(matches!(db.store.list_keys(&other, 2, Some(&cursor)).await, Err(StoreError::InvalidCursor)));
}

/// A customer's own keys stop at its plan's `max_keys`: counted on the customer item with
/// every create and revoke, and, for an item written before the count was kept, counted once
/// from the customer's keys. Operators are not bound by it.
#[tokio::test]
async fn a_customers_own_keys_stop_at_its_plans_max_keys() {
    let db = fresh_db().await;
    let team = Plan { max_keys: Some(3), ..plan("team", None, None) };
    db.store.create_plan(&team).await.unwrap();
    tollgate_tests::bill(&db.store, "acme", "cus_acme", SubscriptionStatus::Active, Some("price_team"), 100).await;
    let own = || {
        let key = ApiKey::generate(KeyEnv::Live).unwrap();
        NewKey { by: Actor::Customer, ..NewKey::new(&key, cid("acme"), None, NOW) }
    };
    let first = db.store.create_key(own()).await.unwrap();
    assert_eq!(first.limits.governing_plan_id.as_ref().map(PlanId::as_str), Some("team"));
    // An operator's key counts, and is never refused.
    let (operator, _) = new_key("acme", None);
    db.store.create_key(operator).await.unwrap();
    db.store.create_key(own()).await.unwrap();
    assert!(matches!(db.store.create_key(own()).await, Err(StoreError::KeyLimitReached(3))));
    let (operator, _) = new_key("acme", None);
    db.store.create_key(operator).await.expect("the operator is not bound by max_keys");

    // Forget the count, as on an item written before it was kept: it is counted again (4 live).
    use aws_sdk_dynamodb::types::AttributeValue;
    db.store
        .client()
        .update_item()
        .table_name(&db.table)
        .key("pk", AttributeValue::S("CUST#acme".into()))
        .key("sk", AttributeValue::S("CUST".into()))
        .update_expression("REMOVE live_keys")
        .condition_expression("attribute_exists(live_keys)")
        .send()
        .await
        .expect("the customer item counts its keys");
    assert!(matches!(db.store.create_key(own()).await, Err(StoreError::KeyLimitReached(3))));
    // Revoking frees places: 4 live, two revoked, one place.
    db.store.revoke_key(&first.key_id, NOW).await.unwrap();
    let ids = db.store.customer_key_ids(&cid("acme")).await.unwrap();
    let second = ids.iter().find(|id| **id != first.key_id).unwrap();
    db.store.revoke_key(second, NOW).await.unwrap();
    db.store.revoke_key(second, NOW).await.unwrap();
    db.store.create_key(own()).await.expect("two revoked: one place below 3");
    assert!(matches!(db.store.create_key(own()).await, Err(StoreError::KeyLimitReached(3))));
    // A customer without a plan cannot make a key with no limits.
    let (operator, _) = new_key("planless", None);
    db.store.create_key(operator).await.unwrap();
    let own_planless = NewKey {
        by: Actor::Customer,
        ..NewKey::new(&ApiKey::generate(KeyEnv::Live).unwrap(), cid("planless"), None, NOW)
    };
    assert!(matches!(db.store.create_key(own_planless).await, Err(StoreError::NoPlan)));
    // A customer Tollgate does not know creates nothing.
    let stranger = ApiKey::generate(KeyEnv::Live).unwrap();
    let new = NewKey { by: Actor::Customer, ..NewKey::new(&stranger, cid("nobody"), None, NOW) };
    assert!(matches!(db.store.create_key(new).await, Err(StoreError::NotFound("customer"))));
}
