//! Doing work once (`app::idempotent`): reservations, leases and recorded results, on a fresh
//! table.

use shared::app::idempotent::{Job, Once, Scope, once};
use shared::domain::time::UnixTime;
use shared::store::dynamo::DynamoStore;
use shared::store::{IdempotencyStore, Reservation, Reserve, StoreError, StoreResult};
use tollgate_tests::fresh_db;

/// The store, but recording a result fails (storage gone after the work).
struct FinishFails(DynamoStore);

impl IdempotencyStore for FinishFails {
    async fn reserve(&self, req: Reserve<'_>) -> StoreResult<Reservation> {
        self.0.reserve(req).await
    }

    async fn finish(&self, _: &str, _: &str, _: &str, _: &str, _: UnixTime) -> StoreResult<()> {
        Err(StoreError::Corrupt("injected".into()))
    }

    async fn release(&self, scope: &str, id: &str, owner: &str) -> StoreResult<()> {
        self.0.release(scope, id, owner).await
    }
}

const NOW: UnixTime = UnixTime(1_800_000_000);

fn job(scope: Scope, id: &str) -> Job<'_> {
    Job { scope, id, fingerprint: "f1", lease_s: 30, now: NOW }
}

async fn run(store: &impl IdempotencyStore, job: Job<'_>, ok: bool) -> Result<Once<u32>, StoreError> {
    once(store, job, || async move {
        if ok { Ok((7, "key_1".to_owned())) } else { Err(StoreError::Conflict("work failed".into())) }
    })
    .await
}

#[tokio::test]
async fn done_once_then_answered_from_the_record() {
    let db = fresh_db().await;
    let store = db.store;
    assert!(matches!(
        run(&store, job(Scope::CreateKey, "a"), true).await,
        Ok(Once::Ran { value: 7, unrecorded: None })
    ));
    match run(&store, job(Scope::CreateKey, "a"), true).await {
        Ok(Once::Done { fingerprint, result }) => {
            assert_eq!((fingerprint.as_str(), result.as_str()), ("f1", "key_1"))
        }
        other => panic!("{other:?}"),
    }
    // Another scope with the same id is other work.
    assert!(matches!(run(&store, job(Scope::StripeEvent, "a"), true).await, Ok(Once::Ran { .. })));
}

#[tokio::test]
async fn a_failure_gives_the_reservation_back_for_a_retry() {
    let db = fresh_db().await;
    let store = db.store;
    assert!(run(&store, job(Scope::CheckoutClaim, "cs_1"), false).await.is_err());
    assert!(matches!(run(&store, job(Scope::CheckoutClaim, "cs_1"), true).await, Ok(Once::Ran { .. })));
}

#[tokio::test]
async fn work_in_flight_holds_the_id_until_its_lease_ends() {
    let db = fresh_db().await;
    let store = db.store;
    let held = once(&store, job(Scope::StripeEvent, "evt_1"), || async {
        // While this attempt works, a second one is refused.
        let second = run(&store, job(Scope::StripeEvent, "evt_1"), true).await;
        assert!(matches!(second, Ok(Once::InProgress)), "{second:?}");
        // After the lease, a retry may take over.
        let later = Job { now: NOW.plus(31), ..job(Scope::StripeEvent, "evt_1") };
        assert!(matches!(run(&store, later, true).await, Ok(Once::Ran { .. })));
        Ok::<_, StoreError>((1, "applied".to_owned()))
    })
    .await;
    // The first attempt no longer holds it: its result is not recorded, and it says so.
    assert!(matches!(held, Ok(Once::Ran { value: 1, unrecorded: Some(StoreError::Conflict(_)) })), "{held:?}");
}

#[tokio::test]
async fn a_lease_is_given_back_after_success_too() {
    let db = fresh_db().await;
    let store = db.store;
    let lease = |now| Job { scope: Scope::RollupLease, id: "usage-rollup", fingerprint: "", lease_s: 300, now };
    assert!(matches!(run(&store, lease(NOW), true).await, Ok(Once::Ran { unrecorded: None, .. })));
    // The next run, a second later, takes it at once.
    assert!(matches!(run(&store, lease(NOW.plus(1)), true).await, Ok(Once::Ran { .. })));
}

#[tokio::test]
async fn an_unrecorded_result_is_reported_with_the_value() {
    let db = fresh_db().await;
    let store = FinishFails(db.store);
    assert!(matches!(
        run(&store, job(Scope::CreateKey, "b"), true).await,
        Ok(Once::Ran { value: 7, unrecorded: Some(StoreError::Corrupt(_)) })
    ));
}
