//! Fail modes, refusals answered from memory and the key cache under a flood.

use super::*;

/// The fail-mode matrix, cell by cell: error class x what this container knows of the
/// key x fail mode.
#[tokio::test]
async fn the_fail_mode_matrix() {
    type Inject = fn() -> Answer;
    let faults: [(&str, Inject); 6] = [
        ("timeout", || Answer::Fail(Fault::Timeout)),
        ("server_error", || Answer::Fail(Fault::Server)),
        ("connection", || Answer::Fail(Fault::Connection)),
        ("throttled", || Answer::Fail(Fault::Throttled)),
        ("contention", || Answer::Fail(Fault::Contention)),
        ("corrupt", || Answer::Corrupt),
    ];
    // (knowledge, fault) -> (closed, open)
    let expected = |knowledge: &str, fault: &str| -> (&str, &str) {
        let transient = matches!(fault, "timeout" | "server_error" | "connection");
        match knowledge {
            "active_recently" if transient => ("authorization_unavailable", "degraded"),
            _ => ("authorization_unavailable", "authorization_unavailable"),
        }
    };
    for (fault, answer) in faults {
        for knowledge in ["active_recently", "active_long_ago", "denied_last", "unknown"] {
            for mode in [FailMode::Closed, FailMode::Open] {
                let a = Authorizer::new(Scripted::default(), mode);
                let k = key(a.store());
                let now = match knowledge {
                    "active_recently" => {
                        script(&a, [ok()]);
                        assert_eq!(code(&a.decide(Some(&k), ANY, T0).await), "ok");
                        T0.plus(DEFAULT_FAIL_OPEN_WINDOW_S as i64)
                    }
                    "active_long_ago" => {
                        script(&a, [ok()]);
                        a.decide(Some(&k), ANY, T0).await;
                        T0.plus(DEFAULT_FAIL_OPEN_WINDOW_S as i64 + 1)
                    }
                    "denied_last" => {
                        script(&a, [ok(), Answer::Decide(Err(Denial::KeyDisabled), None)]);
                        a.decide(Some(&k), ANY, T0).await;
                        assert_eq!(code(&a.decide(Some(&k), ANY, T0).await), "key_disabled");
                        T0.plus(1)
                    }
                    _ => T0,
                };
                script(&a, [answer()]);
                let got = code(&a.decide(Some(&k), ANY, now).await);
                let (closed, open) = expected(knowledge, fault);
                let want = if mode == FailMode::Open { open } else { closed };
                assert_eq!(got, want, "{fault} x {knowledge} x {mode:?}");
            }
        }
    }
    // An unknown hash whose lookup fails never passes, in either mode, whatever the fault.
    for fault in [Fault::Timeout, Fault::Server, Fault::Connection, Fault::Throttled] {
        let a = Authorizer::new(Scripted::default(), FailMode::Open);
        *a.store().lookup_fault.lock().unwrap() = Some(fault);
        let random = ApiKey::generate(KeyEnv::Live).unwrap();
        assert_eq!(code(&a.decide(Some(random.expose_secret()), ANY, T0).await), "authorization_unavailable");
    }
}

#[tokio::test]
async fn fail_open_keeps_to_what_the_key_had_left() {
    let a = Authorizer::new(Scripted::default(), FailMode::Open);
    let k = key(a.store());
    // Storage allowed the 98th of 100 in this window: two are left.
    script(&a, [Answer::Decide(Ok(()), rate(100, 98, T0.plus(30)))]);
    a.decide(Some(&k), ANY, T0).await;
    script(&a, (0..4).map(|_| Answer::Fail(Fault::Timeout)));
    let mut codes = vec![];
    for _ in 0..3 {
        codes.push(code(&a.decide(Some(&k), ANY, T0.plus(1)).await));
    }
    assert_eq!(codes, ["degraded", "degraded", "rate_limited"]);
    // The next window starts afresh, as storage would have it.
    let d = a.decide(Some(&k), ANY, T0.plus(31)).await;
    assert_eq!(code(&d), "degraded");
    assert_eq!(d.rate.map(|r| (r.used, r.reset)), Some((1, T0.plus(90))));
    assert!(d.key.is_some(), "a degraded decision still names the key for the upstream");
}

#[tokio::test]
async fn unusable_hashes_cost_storage_once() {
    let a = Authorizer::new(Scripted::default(), FailMode::Closed);
    // Unknown: one lookup, then memory, until the backstop expires.
    let random = ApiKey::generate(KeyEnv::Live).unwrap();
    for _ in 0..5 {
        assert_eq!(code(&a.decide(Some(random.expose_secret()), ANY, T0).await), "invalid_api_key");
    }
    assert_eq!(a.store().lookups.load(Ordering::SeqCst), 1);
    a.decide(Some(random.expose_secret()), ANY, T0.plus(UNKNOWN_HASH_TTL_S)).await;
    assert_eq!(a.store().lookups.load(Ordering::SeqCst), 2);

    // Revoked and rotated-away: one decision each, then never again.
    for denial in [Denial::KeyRevoked, Denial::InvalidKey] {
        let k = key(a.store());
        script(&a, [ok(), Answer::Decide(Err(denial), None)]);
        assert_eq!(code(&a.decide(Some(&k), ANY, T0).await), "ok");
        let before = a.store().decisions.load(Ordering::SeqCst);
        for i in 0..5 {
            assert_eq!(code(&a.decide(Some(&k), ANY, T0.plus(i * 86_400)).await), denial.code());
        }
        assert_eq!(a.store().decisions.load(Ordering::SeqCst), before + 1, "{denial:?}");
    }
}

#[tokio::test]
async fn disabled_and_inactive_keys_are_asked_every_time() {
    // They can change back at any moment (enable, a paid invoice): nothing from memory.
    let a = Authorizer::new(Scripted::default(), FailMode::Closed);
    let k = key(a.store());
    script(
        &a,
        [
            Answer::Decide(Err(Denial::KeyDisabled), None),
            Answer::Decide(Err(Denial::SubscriptionInactive), None),
            Answer::Decide(Err(Denial::KeyExpired), None),
            ok(),
        ],
    );
    let mut codes = vec![];
    for _ in 0..4 {
        codes.push(code(&a.decide(Some(&k), ANY, T0).await));
    }
    assert_eq!(codes, ["key_disabled", "subscription_inactive", "key_expired", "ok"]);
    assert_eq!(a.store().decisions.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_spent_window_is_answered_from_memory_until_a_recheck_and_its_denials_are_recorded() {
    let a = Authorizer::new(Scripted::default(), FailMode::Closed);
    let k = key(a.store());
    // Spent until T0+45: answered here until T0+10 (the recheck), then asked again.
    script(&a, [Answer::Decide(Err(Denial::RateLimited), rate(100, 100, T0.plus(45)))]);
    let d = a.decide(Some(&k), ANY, T0).await;
    assert_eq!((code(&d), d.retry_after(T0)), ("rate_limited", Some(45)));
    for s in 0..SPENT_RECHECK_S {
        let d = a.decide(Some(&k), ANY, T0.plus(s)).await;
        assert_eq!((code(&d), d.retry_after(T0.plus(s))), ("rate_limited", Some(45 - s as u64)));
    }
    assert_eq!(a.store().decisions.load(Ordering::SeqCst), 1);
    // The sweep every two seconds records those answered here so far; never more.
    let swept = a.store().recorded.load(Ordering::SeqCst);
    assert!(swept > 0 && swept < SPENT_RECHECK_S as u64, "{swept} recorded by the sweep");
    // The recheck: storage now allows (a raised limit); the ten answered here are recorded,
    // each once, between the sweep and the recheck.
    script(&a, [ok()]);
    assert_eq!(code(&a.decide(Some(&k), ANY, T0.plus(SPENT_RECHECK_S)).await), "ok");
    assert_eq!(a.store().decisions.load(Ordering::SeqCst), 2);
    assert_eq!(a.store().recorded.load(Ordering::SeqCst), SPENT_RECHECK_S as u64);
    // A window that resets sooner than the recheck is asked at its reset.
    script(&a, [Answer::Decide(Err(Denial::RateLimited), rate(100, 100, T0.plus(12))), ok()]);
    a.decide(Some(&k), ANY, T0.plus(11)).await;
    assert_eq!(code(&a.decide(Some(&k), ANY, T0.plus(12)).await), "ok");
    assert_eq!(a.store().decisions.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_hammering_refused_key_is_answered_from_memory_until_the_recheck() {
    let a = Authorizer::new(Scripted::default(), FailMode::Closed);
    let k = key(a.store());
    let disabled = || Answer::Decide(Err(Denial::KeyDisabled), None);
    script(&a, (0..HOT_REFUSALS_PER_S).map(|_| disabled()));
    for _ in 0..HOT_REFUSALS_PER_S + 20 {
        assert_eq!(code(&a.decide(Some(&k), ANY, T0).await), "key_disabled");
    }
    assert_eq!(a.store().decisions.load(Ordering::SeqCst), u64::from(HOT_REFUSALS_PER_S));
    // Enabled meanwhile: the recheck sees it, and the 20 answered here are recorded.
    script(&a, [ok()]);
    assert_eq!(code(&a.decide(Some(&k), ANY, T0.plus(SPENT_RECHECK_S)).await), "ok");
    assert_eq!(a.store().recorded.load(Ordering::SeqCst), 20);
    assert_eq!(*a.store().recorded_codes.lock().unwrap(), [(Denial::KeyDisabled, 20)], "counted under their code");
}

#[tokio::test]
async fn open_never_lets_a_key_through_that_storage_refused_last() {
    let a = Authorizer::new(Scripted::default(), FailMode::Open);
    let k = key(a.store());
    script(&a, [ok(), Answer::Decide(Err(Denial::RateLimited), rate(100, 100, T0.plus(30)))]);
    a.decide(Some(&k), ANY, T0).await;
    assert_eq!(code(&a.decide(Some(&k), ANY, T0.plus(1)).await), "rate_limited");
    // The outage begins after the recheck but inside the window storage called spent.
    script(&a, [Answer::Fail(Fault::Timeout)]);
    assert_eq!(code(&a.decide(Some(&k), ANY, T0.plus(1 + SPENT_RECHECK_S)).await), "authorization_unavailable");
}

#[tokio::test]
async fn denials_answered_from_memory_survive_a_failed_recheck() {
    let a = Authorizer::new(Scripted::default(), FailMode::Closed);
    let k = key(a.store());
    script(&a, [Answer::Decide(Err(Denial::RateLimited), rate(100, 100, T0.plus(3_600)))]);
    for _ in 0..4 {
        a.decide(Some(&k), ANY, T0).await;
    }
    script(&a, [Answer::Fail(Fault::Server), Answer::Decide(Err(Denial::RateLimited), None)]);
    assert_eq!(a.store().recorded.load(Ordering::SeqCst), 0, "not recorded before the sweep is due");
    assert_eq!(code(&a.decide(Some(&k), ANY, T0.plus(SPENT_RECHECK_S)).await), "authorization_unavailable");
    // The failed recheck put them back, and the sweep after it recorded them: once.
    a.decide(Some(&k), ANY, T0.plus(SPENT_RECHECK_S + 1)).await;
    assert_eq!(a.store().recorded.load(Ordering::SeqCst), 3, "recorded once, after the failed recheck");
    assert_eq!(*a.store().recorded_codes.lock().unwrap(), [(Denial::RateLimited, 3)]);
}

#[tokio::test]
async fn a_flood_of_random_keys_evicts_no_key_in_use() {
    let options = AuthorizerOptions { capacity: 8, ..AuthorizerOptions::default() };
    let a = Authorizer::with_options(Scripted::default(), options);
    let keys: Vec<String> = (0..8).map(|_| key(a.store())).collect();
    script(&a, keys.iter().map(|_| ok()));
    for k in &keys {
        a.decide(Some(k), ANY, T0).await;
    }
    for _ in 0..1_000 {
        let random = ApiKey::generate(KeyEnv::Live).unwrap();
        a.decide(Some(random.expose_secret()), ANY, T0).await;
    }
    let lookups = a.store().lookups.load(Ordering::SeqCst);
    script(&a, keys.iter().map(|_| ok()));
    for k in &keys {
        assert_eq!(code(&a.decide(Some(k), ANY, T0).await), "ok");
    }
    assert_eq!(a.store().lookups.load(Ordering::SeqCst), lookups, "every key in use was still known");
}

#[tokio::test]
async fn the_other_environment_never_reaches_storage() {
    let options = AuthorizerOptions { key_env: Some(KeyEnv::Live), ..AuthorizerOptions::default() };
    let a = Authorizer::with_options(Scripted::default(), options);
    let test_key = ApiKey::generate(KeyEnv::Test).unwrap();
    assert_eq!(code(&a.decide(Some(test_key.expose_secret()), ANY, T0).await), "invalid_api_key");
    assert_eq!(a.store().lookups.load(Ordering::SeqCst), 0);
}
