//! Hot keys: blocks taken, spent, settled and shared by concurrent decisions.

use super::*;

/// A key decided 10 times a second here runs hot: its next write reserves a block, the
/// block's requests are answered without storage, the next write counts them and gives
/// back what the block left, and what is still held is settled on demand (SIGTERM).
#[tokio::test]
async fn a_hot_key_is_decided_from_blocks_which_are_counted_and_given_back() {
    use crate::domain::lease::HOT_DECISIONS_PER_S;
    let a = Authorizer::new(Scripted::default(), FailMode::Closed);
    a.store().grant_blocks.store(true, Ordering::SeqCst);
    let k = key(a.store());
    let roomy = || Answer::Decide(Ok(()), rate(1_000_000, 1, T0.plus(60)));
    script(&a, (0..4).map(|_| roomy()).chain((0..HOT_DECISIONS_PER_S).map(|_| roomy())));
    let takes = |a: &Authorizer<Scripted>| a.store().takes.lock().unwrap().clone();
    for _ in 1..HOT_DECISIONS_PER_S {
        assert_eq!(code(&a.decide(Some(&k), ANY, T0).await), "ok");
    }
    assert!(takes(&a).iter().all(Take::is_one), "not hot yet: the exact write");
    // The tenth in this second: a block of ten, this request its first.
    let d = a.decide(Some(&k), ANY, T0).await;
    assert!(d.is_allowed() && !d.from_memory);
    assert_eq!(takes(&a).last().unwrap().tokens, HOT_DECISIONS_PER_S);
    let writes = a.store().decisions.load(Ordering::SeqCst);
    // The block's other nine: from memory, no write; held uncounted.
    for _ in 1..HOT_DECISIONS_PER_S {
        let d = a.decide(Some(&k), ANY, T0).await;
        assert!(d.is_allowed() && d.from_memory);
    }
    assert_eq!(a.store().decisions.load(Ordering::SeqCst), writes);
    assert_eq!(a.unsettled(), HOT_DECISIONS_PER_S - 1);
    // Spent: the next write is throttled, so certainly not applied: the nine stay held.
    a.store().answers.lock().unwrap().push_front(Answer::Fail(Fault::Throttled));
    assert_eq!(code(&a.decide(Some(&k), ANY, T0).await), "authorization_unavailable");
    assert_eq!(takes(&a).last().unwrap().used, vec![(T0.day(), 9)]);
    assert_eq!(a.unsettled(), HOT_DECISIONS_PER_S - 1, "a write that was not applied keeps what it carried");
    // The one after takes a bigger block (the pace is 21) and counts the nine.
    assert!(!a.decide(Some(&k), ANY, T0).await.from_memory);
    let last = takes(&a).last().unwrap().clone();
    assert_eq!((last.tokens, last.used.clone(), last.unspent), (21, vec![(T0.day(), 9)], None));
    assert_eq!(a.unsettled(), 0);
    // Two of its requests, then the second ends: the next write gives back the other 18
    // to the window they came from, and counts the two.
    for _ in 0..2 {
        assert!(a.decide(Some(&k), ANY, T0).await.from_memory);
    }
    assert!(!a.decide(Some(&k), ANY, T0.plus(1)).await.from_memory);
    let last = takes(&a).last().unwrap().clone();
    assert_eq!(last.used, vec![(T0.day(), 2)]);
    assert_eq!(last.unspent, Some(Unspent { tokens: 18, window_end: Some(T0.plus(60)), period_end: None }));
    // One request of the new block, then the container is told to stop: one settlement
    // with that request and the rest of the block.
    assert!(a.decide(Some(&k), ANY, T0.plus(1)).await.from_memory);
    assert_eq!(a.settle_leases(T0.plus(1), true).await, 1);
    let settled = a.store().settled.lock().unwrap().clone();
    let (used, unspent) = settled.last().unwrap().clone();
    assert_eq!(used, vec![(T0.day(), 1)]);
    assert_eq!(unspent.map(|u| u.tokens), Some(last.tokens - 2));
    assert_eq!(a.unsettled(), 0);
}

/// A hot key pushed out of a full memory by other keys: what its block admitted is counted
/// and what it left given back by the next sweep, not lost with its entry.
#[tokio::test]
async fn an_evicted_hot_keys_block_is_still_settled() {
    use crate::domain::lease::HOT_DECISIONS_PER_S;
    let options = AuthorizerOptions { capacity: 2, ..AuthorizerOptions::default() };
    let a = Authorizer::with_options(Scripted::default(), options);
    a.store().grant_blocks.store(true, Ordering::SeqCst);
    let hot = key(a.store());
    let roomy = || Answer::Decide(Ok(()), rate(1_000_000, 1, T0.plus(60)));
    script(&a, (0..HOT_DECISIONS_PER_S + 2).map(|_| roomy()));
    for _ in 0..HOT_DECISIONS_PER_S {
        assert!(!a.decide(Some(&hot), ANY, T0).await.from_memory);
    }
    // The tenth took a block of ten: three more spent from memory.
    let block = a.store().takes.lock().unwrap().last().unwrap().tokens;
    assert_eq!(block, HOT_DECISIONS_PER_S);
    for _ in 0..3 {
        assert!(a.decide(Some(&hot), ANY, T0).await.from_memory);
    }
    assert_eq!(a.unsettled(), 3);
    // Two other keys fill the memory of two: the hot key's entry goes.
    let (b, c) = (key(a.store()), key(a.store()));
    assert!(a.decide(Some(&b), ANY, T0).await.is_allowed());
    assert!(a.decide(Some(&c), ANY, T0).await.is_allowed());
    assert_eq!(a.unsettled(), 3, "still held, for the sweep");
    assert_eq!(a.settle_leases(T0, false).await, 1, "settled at once, though its lease has not ended");
    let (used, unspent) = a.store().settled.lock().unwrap().last().unwrap().clone();
    assert_eq!(used, vec![(T0.day(), 3)]);
    assert_eq!(unspent, Some(Unspent { tokens: block - 1 - 3, window_end: Some(T0.plus(60)), period_end: None }));
    assert_eq!(a.unsettled(), 0);
}

/// `n` decisions for `k` at once, each its own task: the decisions, in the order they end.
async fn at_once(
    a: &std::sync::Arc<Authorizer<Scripted>>,
    k: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Decision>> {
    (0..n)
        .map(|_| {
            let (a, k) = (a.clone(), k.to_owned());
            tokio::spawn(async move { a.decide(Some(&k), ANY, T0).await })
        })
        .collect()
}

/// A container serving many requests at once: one decision per key goes to storage, the
/// others wait for it (twice the median round trip here: 40 ms) and are served from the block
/// the next one brings back, sized for the callers that queued.
#[tokio::test(start_paused = true)]
async fn concurrent_decisions_for_a_key_share_one_write() {
    let a = std::sync::Arc::new(Authorizer::new(Scripted::default(), FailMode::Closed));
    let k = key(a.store());
    a.store().grant_blocks.store(true, Ordering::SeqCst);
    let room = rate(1_000_000, 0, T0.plus(60));
    script(&a, (0..3).map(|_| Answer::Decide(Ok(()), room)));
    // One alone: storage takes 20 ms.
    a.store().delays.lock().unwrap().extend([20; 3]);
    assert_eq!(code(&a.decide(Some(&k), ANY, T0).await), "ok");
    // Eight at once: the first takes off alone (one request: not hot by pace, nine this
    // second), seven wait; one of those takes a block for the eight that asked at once, and
    // the other six are served from it without storage.
    let mut from_memory = 0;
    for t in at_once(&a, &k, 8).await {
        let d = t.await.unwrap();
        assert_eq!(code(&d), "ok");
        from_memory += usize::from(d.from_memory);
    }
    let takes = a.store().takes.lock().unwrap().iter().map(|t| t.tokens).collect::<Vec<_>>();
    assert_eq!(takes, [1, 1, 8], "two writes for eight decisions at once");
    assert_eq!(from_memory, 6);
    // What the block admitted is counted once it is settled, and its last token given back.
    a.settle_leases(T0, true).await;
    let settled = a.store().settled.lock().unwrap().clone();
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].0, [(T0.day(), 6)]);
    assert_eq!(settled[0].1.map(|u| u.tokens), Some(1));
}

/// A write that stalls holds the others no longer than their bound: then each takes its own
/// write, of one request, beside it.
#[tokio::test(start_paused = true)]
async fn a_stalled_write_holds_the_others_only_their_bound() {
    let a = std::sync::Arc::new(Authorizer::new(Scripted::default(), FailMode::Closed));
    let k = key(a.store());
    script(&a, (0..11).map(|_| ok()));
    a.store().delays.lock().unwrap().extend([20, 20, 20, 10_000, 20, 20, 20, 20, 20, 20, 20]);
    for _ in 0..3 {
        a.decide(Some(&k), ANY, T0).await;
    }
    let started = tokio::time::Instant::now();
    let mut tasks = at_once(&a, &k, 8).await;
    let stalled = tasks.remove(0);
    for t in tasks {
        assert_eq!(code(&t.await.unwrap()), "ok");
    }
    // 40 ms waiting, then their own 20 ms write: long before the stalled one answers.
    assert_eq!(started.elapsed(), std::time::Duration::from_millis(60));
    assert!(!stalled.is_finished());
    let takes = a.store().takes.lock().unwrap().iter().map(|t| t.tokens).collect::<Vec<_>>();
    assert_eq!(takes, [1; 11], "writes beside one in flight take one request each");
    assert_eq!(code(&stalled.await.unwrap()), "ok");
}
