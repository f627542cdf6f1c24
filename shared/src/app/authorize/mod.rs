//! Authorizing one request, from the credentials a client sent to a [`Decision`] and the
//! context and headers a gateway returns. Shared by the Lambda authorizer and the local stack;
//! it knows nothing of API Gateway's event shapes.

mod context;
mod credentials;
mod fail_mode;
mod flight;
mod leases;
mod memory;
mod options;
#[cfg(test)]
mod tests;

pub use context::AuthorizerContext;
pub use credentials::{bearer_token, presented_key};
pub use flight::MIN_WAIT;
pub use options::{AuthorizerOptions, HOT_REFUSALS_PER_S, MEMORY_CAPACITY, Route, SPENT_RECHECK_S, UNKNOWN_HASH_TTL_S};

use crate::config::FailMode;
use crate::domain::api_key::ApiKey;
use crate::domain::decision::{Decision, Denial};
use crate::domain::lease::Take;
use crate::domain::time::UnixTime;
use crate::store::{AuthorizeStore, Fault};
use flight::Waited;
use lru::LruCache;
use memory::{Memory, Recall, Unrecorded};
use std::num::NonZeroUsize;
use std::sync::Mutex;

/// How often a process that keeps running between requests sweeps ([`Authorizer::sweep`]).
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Blocks a decision's own sweep settles have ended this long ago: a hot key's next write
/// carries what its block admitted for free before then.
const DECISION_SWEEP_GRACE_S: i64 = 2;

/// Decides requests for one container: its memory of keys, its hot keys' blocks, and the
/// sweep that settles them. Safe to share between concurrent requests.
pub struct Authorizer<S> {
    store: S,
    options: AuthorizerOptions,
    memory: Mutex<Memory>,
    /// When ended leases are next looked for (epoch seconds).
    next_sweep: std::sync::atomic::AtomicI64,
}

impl<S: AuthorizeStore> Authorizer<S> {
    pub fn new(store: S, fail_mode: FailMode) -> Self {
        Self::with_options(store, AuthorizerOptions { fail_mode, ..AuthorizerOptions::default() })
    }

    pub fn with_options(store: S, options: AuthorizerOptions) -> Self {
        let capacity = NonZeroUsize::new(options.capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        let memory = Memory {
            usable: LruCache::new(capacity),
            unusable: LruCache::new(capacity),
            leased: vec![],
            pending: vec![],
            denied: Default::default(),
            round_trips: Default::default(),
        };
        Self { store, options, memory: Mutex::new(memory), next_sweep: std::sync::atomic::AtomicI64::new(0) }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides one request. Never fails: storage trouble becomes a decision per the
    /// fail-mode matrix (docs/authorizer.md, "Fail modes"). Counted in [`crate::metrics`] by outcome code
    /// and plan, with its latency.
    pub async fn decide(&self, presented: Option<&str>, route: Route<'_>, now: UnixTime) -> Decision {
        let started = std::time::Instant::now();
        let decision = self.decision(presented, route, now).await;
        if now.secs() >= self.next_sweep.load(std::sync::atomic::Ordering::Relaxed) {
            self.next_sweep.store(now.secs() + 2, std::sync::atomic::Ordering::Relaxed);
            self.settle(now, false, DECISION_SWEEP_GRACE_S).await;
        }
        let outcome = match decision.outcome {
            Ok(()) => "ok",
            Err(denial) => denial.code(),
        };
        let plan = decision.key.as_ref().and_then(|k| k.plan_id.as_ref()).map(|p| p.as_str());
        crate::metrics::global().decision(outcome, plan, started.elapsed());
        decision
    }

    /// The decision alone: from memory, or from storage's one conditional write (waiting on
    /// another decision's write for the key when one is in flight, see [`flight`]).
    async fn decision(&self, presented: Option<&str>, route: Route<'_>, now: UnixTime) -> Decision {
        let Some(raw) = presented.map(str::trim).filter(|s| !s.is_empty()) else {
            return Decision::denied(Denial::MissingKey);
        };
        // Format, checksum and environment first: garbage never reaches storage.
        let Ok(key) = ApiKey::parse(raw) else {
            return Decision::denied(Denial::InvalidKey);
        };
        if self.options.key_env.is_some_and(|env| env != key.env()) {
            return Decision::denied(Denial::InvalidKey);
        }
        let hash = key.hash();
        let Ok(required) = self.options.scopes.required(route.method, route.path) else {
            // A path upstreams read differently: no route's scopes can be vouched for.
            return Decision::denied(Denial::InsufficientScope);
        };
        let (mut waited, mut deadline) = (Waited::No, None);
        let recalled = loop {
            // Bound first, so the memory's lock is released before any wait.
            let recalled = self.memory().recall(&hash, &required, now, waited);
            match recalled {
                Recall::Wait(mut watch, bound) => {
                    let until = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + bound);
                    // Closed when the flight's answer is in memory; then recall again.
                    waited = match tokio::time::timeout_at(until, watch.changed()).await {
                        Ok(_) => Waited::Woken,
                        Err(_) => Waited::TooLong,
                    };
                }
                other => break other,
            }
        };
        // Known keys are counted in flight while storage is asked (see `Known::in_flight`).
        let (key_id, unrecorded, take, known, flight) = match recalled {
            Recall::Answer(mut decision) => {
                decision.from_memory = true;
                return decision;
            }
            Recall::Wait(..) => unreachable!("the loop above waits"),
            Recall::Ask(Some(id), unrecorded, take, flight) => (id, unrecorded, take, true, flight),
            Recall::Ask(None, ..) => match self.store.key_id_for_hash(&hash).await {
                Ok(Some(id)) => (id, None, Take::one(), false, None),
                Ok(None) => {
                    self.memory().unknown(hash, now);
                    return Decision::denied(Denial::InvalidKey);
                }
                Err(e) => return self.unavailable(&hash, &required, &e, now),
            },
        };
        let span = tracing::info_span!("authorize", key_id = %key_id);
        let _guard = span.enter();
        let mut take = take;
        let asked_as_known = known;
        let sent = tokio::time::Instant::now();
        let result = self.store.take(&key_id, &hash, &required, now, &mut take).await;
        {
            let mut memory = self.memory();
            memory.round_trips.record(sent.elapsed());
            if asked_as_known {
                memory.answered(&hash);
            }
            if !take.used.is_empty() || take.unspent.is_some() {
                // Certainly not written (throttled, refused before it was sent): kept for the next write.
                memory.keep(&hash, take);
            }
        }
        let taken = match result {
            Ok(taken) => taken,
            Err(e) => {
                let decision = self.unavailable(&hash, &required, &e, now);
                if let Some(unrecorded) = unrecorded {
                    self.memory().unrecorded(&hash, unrecorded);
                }
                return decision;
            }
        };
        let decision = taken.decision;
        if matches!(decision.outcome, Err(Denial::RateLimited | Denial::QuotaExceeded)) {
            // Spent, as storage counts: but tokens this container reserved (a block that
            // came back while this decision was in flight) are this request's to use.
            if let Some(mut from_block) = self.memory().usable.get_mut(&hash).and_then(|k| k.spend(now)) {
                from_block.from_memory = true;
                return from_block;
            }
        }
        self.memory().learn(hash, &key_id, &decision, taken.tokens, now);
        // Landed: the decisions waiting on it are served from what it brought back.
        drop(flight);
        if let Some(Unrecorded { denial, day, n }) = unrecorded {
            self.store.record_denials(&key_id, day, denial, n).await;
        }
        decision
    }

    /// Requests this container admitted from blocks that no write has counted yet: what it
    /// would leave uncounted if it stopped now without [`Authorizer::settle_leases`].
    pub fn unsettled(&self) -> u64 {
        let memory = self.memory();
        let leased = memory.leased.iter().filter_map(|h| memory.usable.peek(h)).map(|k| &k.uncounted);
        let pending = memory.pending.iter().map(|(_, used, _)| used);
        leased.chain(pending).map(|used| used.iter().map(|(_, n)| n).sum::<u64>()).sum()
    }

    /// Counts what this container holds that storage has not: what its blocks admitted (and
    /// gives back what they left), and the denials it answered from memory. Blocks ended over
    /// two seconds ago (a hot key's next block carries them for free before then), or all of
    /// them (`all`, before the container stops). One write per key with anything to settle;
    /// answers the keys whose blocks were settled.
    pub async fn settle_leases(&self, now: UnixTime, all: bool) -> usize {
        self.settle(now, all, DECISION_SWEEP_GRACE_S).await
    }

    /// The sweep of a process that keeps running between requests (the local stack, Lambda
    /// Managed Instances), every [`SWEEP_EVERY`]: blocks settled once they end, so within
    /// two seconds of a key's last decision, and denials answered from memory counted.
    pub async fn sweep(&self, now: UnixTime) -> usize {
        self.settle(now, false, 0).await
    }

    /// [`Authorizer::sweep`] every [`SWEEP_EVERY`], for as long as the future is polled.
    pub async fn sweep_forever(&self) {
        let mut ticks = tokio::time::interval(SWEEP_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.sweep(UnixTime::now()).await;
        }
    }

    async fn settle(&self, now: UnixTime, all: bool, grace_s: i64) -> usize {
        let (due, denials) = {
            let mut memory = self.memory();
            (memory.settlements(now, all, grace_s), memory.denials_due())
        };
        for (key_id, Unrecorded { denial, day, n }) in denials {
            self.store.record_denials(&key_id, day, denial, n).await;
        }
        let n = due.len();
        for (key_id, used, unspent) in due {
            match self.store.settle(&key_id, &used, unspent, now).await {
                Ok(()) => {}
                // Refused, so not applied: kept for the next sweep (or the next stop).
                Err(e) if e.fault().is_some_and(Fault::not_applied) => {
                    tracing::warn!(key_id = %key_id, error = %e, "a lease's settlement was refused; kept for the next sweep");
                    self.memory().pending.push((key_id, used, unspent));
                }
                Err(e) => {
                    tracing::warn!(key_id = %key_id, error = %e, "could not settle a lease; what it admitted stays uncounted")
                }
            }
        }
        n
    }
}
