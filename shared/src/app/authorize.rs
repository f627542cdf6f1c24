//! Authorizing one request, from the credentials a client sent to a [`Decision`] and the
//! context and headers a gateway returns. Shared by the Lambda authorizer and the local stack;
//! it knows nothing of API Gateway's event shapes.

use crate::config::{Config, DEFAULT_FAIL_OPEN_WINDOW_S, FailMode};
use crate::domain::api_key::{ApiKey, KeyEnv, KeyHash, KeyId};
use crate::domain::decision::{Decision, Denial, KeyContext};
use crate::domain::lease::{Take, Unspent, add_used, block_size, lease_until};
use crate::domain::limits::LimitStatus;
use crate::domain::scopes::ScopeMap;
use crate::domain::time::{Day, UnixTime};
use crate::store::{AuthorizeStore, Fault, StoreError};
use lru::LruCache;
use serde::{Deserialize, Serialize};
use std::num::NonZeroUsize;
use std::sync::Mutex;

/// The key a client presented: `x-api-key`, else `Authorization: Bearer <key>`. Header names
/// are matched case-insensitively, as HTTP requires.
pub fn presented_key<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<&'a str> {
    let mut bearer = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("x-api-key") {
            let v = value.trim();
            if !v.is_empty() {
                return Some(v);
            }
        } else if name.eq_ignore_ascii_case("authorization") && bearer.is_none() {
            bearer = bearer_token(value);
        }
    }
    bearer
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive.
pub fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// How an authorizer behaves beyond the store: its fail mode and what it remembers.
#[derive(Debug, Clone)]
pub struct AuthorizerOptions {
    pub fail_mode: FailMode,
    /// `open` only: how recently storage must have allowed a key for an outage to let it
    /// through (`TOLLGATE_FAIL_OPEN_WINDOW_S`).
    pub open_window_s: u64,
    /// The deployment's key environment (`TOLLGATE_KEY_ENV`): keys of the other one are
    /// refused before storage is asked. `None` accepts both.
    pub key_env: Option<KeyEnv>,
    /// Entries of each of the two bounded memories (usable keys; unusable hashes).
    pub capacity: usize,
    /// Which routes need which scopes (`TOLLGATE_SCOPES`); empty: none do.
    pub scopes: ScopeMap,
}

/// The request being authorized, as the protected API's upstream will see it.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    pub method: &'a str,
    pub path: &'a str,
}

impl Default for AuthorizerOptions {
    fn default() -> Self {
        Self {
            fail_mode: FailMode::Closed,
            open_window_s: DEFAULT_FAIL_OPEN_WINDOW_S,
            key_env: None,
            capacity: MEMORY_CAPACITY,
            scopes: ScopeMap::default(),
        }
    }
}

impl AuthorizerOptions {
    pub fn from_config(config: &Config) -> Self {
        Self {
            fail_mode: config.fail_mode,
            open_window_s: config.fail_open_window_s,
            key_env: config.key_env,
            scopes: config.scopes.clone(),
            ..Self::default()
        }
    }
}

/// Entries per memory: about 300 bytes each, so both full stay under 15 MB.
pub const MEMORY_CAPACITY: usize = 20_000;
/// How long a hash storage does not know stays known as unknown. Keys are created with a
/// secret from the CSPRNG and shown only after their hash is stored, so an unknown hash does
/// not become known; the limit is only a backstop.
pub const UNKNOWN_HASH_TTL_S: i64 = 600;
/// The longest a spent window or quota is answered from memory before storage is asked again:
/// a raised limit, a plan change or an override reaches every container within this.
pub const SPENT_RECHECK_S: i64 = 10;
/// A key refused for a reason that can change at any moment (disabled, expired, subscription
/// inactive) is asked about every time, unless it is refused this often within one second in
/// this container: then it is hammering, and its refusal is answered from memory until the
/// recheck too. Each refusal storage answers costs two writes on the key's item.
pub const HOT_REFUSALS_PER_S: u32 = 5;

/// What one container remembers of the keys it has seen, in two bounded LRU memories so that
/// a flood of random (well-formed) keys evicts only other unusable hashes, never the keys in
/// use. Positive knowledge never lets a request in by itself: every allowed decision is still
/// a conditional write, so revocation, disabling and a lapsed subscription take effect at once.
struct Memory {
    usable: LruCache<KeyHash, Known>,
    unusable: LruCache<KeyHash, Unusable>,
    /// Keys that were given a block: the few whose leases may need settling.
    leased: Vec<KeyHash>,
    /// Settlements for the next sweep: of keys pushed out of `usable`, and ones storage
    /// refused (throttled, or held by a transaction) and so did not apply.
    pending: Vec<Settlement>,
}

struct Known {
    key_id: KeyId,
    /// The key's scopes as storage last returned them, and when: a route they do not cover is
    /// refused from memory until the recheck (no request to storage per refusal), and a
    /// refusal remembered for the key is answered for a route only if they cover it.
    scopes: Vec<String>,
    scopes_seen: UnixTime,
    /// Refusals for scope answered from memory, recorded at the next decision storage makes.
    scope_unrecorded: Option<Unrecorded>,
    /// The last decision storage allowed for this key, and when: what `open` may act on. Any
    /// refusal clears it.
    active: Option<Active>,
    /// A refusal answered from memory until then: a spent window or quota, or a hot key's.
    spent: Option<Spent>,
    /// Refusals storage answered in one second: (that second, how many).
    refusals: (i64, u32),
    /// Requests decided for the key in this container: (this second, how many so far, how
    /// many the second before). Past [`crate::domain::lease::HOT_DECISIONS_PER_S`] it is hot.
    pace: (i64, u64, u64),
    /// A hot key's block being spent ([`crate::domain::lease`]).
    lease: Option<Lease>,
    /// Requests admitted from blocks that no write has counted yet, by day.
    uncounted: Vec<(Day, u64)>,
    /// An ended block's unspent tokens, to give back with the next write.
    unspent: Option<Unspent>,
    /// Decisions for the key waiting on storage in this container. Blocks are for one
    /// decision at a time (as in Lambda): with others in flight (the local stack serving
    /// concurrent clients) each write takes one request, so no block sits in memory while
    /// storage refuses the requests it was reserved for.
    in_flight: u32,
}

/// What one key's ended blocks left: its id, the requests admitted and not counted (by day),
/// and the unspent tokens to give back.
type Settlement = (KeyId, Vec<(Day, u64)>, Option<Unspent>);

/// A block of requests reserved for this container: spent from memory until `until`.
struct Lease {
    until: UnixTime,
    left: u64,
    /// The write's decision, for the requests the block admits.
    decision: Decision,
}

impl Known {
    fn pace(&mut self, now: UnixTime) -> u64 {
        let (second, count, before) = self.pace;
        self.pace = match now.secs() - second {
            0 => (second, count + 1, before),
            1 => (now.secs(), 1, count),
            _ => (now.secs(), 1, 0),
        };
        self.pace.1.max(self.pace.2)
    }

    /// One request of the block held, if it is still current: admitted from memory, counted
    /// for billing with the key's next write. Its headers show what is known: the key's count
    /// at the block's write, less what this container has not spent.
    fn spend(&mut self, now: UnixTime) -> Option<Decision> {
        let lease = self.lease.as_mut().filter(|l| now < l.until && l.left > 0)?;
        lease.left -= 1;
        let mut decision = lease.decision.clone();
        for l in [&mut decision.rate, &mut decision.quota].into_iter().flatten() {
            l.used = l.used.saturating_sub(lease.left);
        }
        add_used(&mut self.uncounted, now.day(), 1);
        Some(decision)
    }

    /// The block ended: what it left goes back with the next write (an older block's
    /// unspent, if its write failed, stays reserved until its window ends: fewer admitted,
    /// never more).
    fn end_lease(&mut self) {
        if let Some(lease) = self.lease.take().filter(|l| l.left > 0) {
            self.unspent = Some(Unspent {
                tokens: lease.left,
                window_end: lease.decision.rate.map(|r| r.reset),
                period_end: lease.decision.quota.map(|q| q.reset),
            });
        }
    }

    /// What the next write for the key takes: a block when it runs hot here and no other
    /// decision for it is in flight, with what earlier blocks used and left (moved out: a
    /// write carries them once).
    fn next_take(&mut self, pace: u64) -> Take {
        self.in_flight += 1;
        let last = self.active.as_ref();
        let (rate, quota) = (last.and_then(|a| a.rate), last.and_then(|a| a.quota));
        let remaining = [rate, quota].into_iter().flatten().map(|l| l.remaining()).min();
        // Without a recent allowed decision the limits are not known here: the block's first
        // write learns them from the item its condition returns, and the second fits them.
        let tokens = if self.in_flight > 1 { 1 } else { block_size(pace, remaining) };
        let take =
            Take { tokens, used: std::mem::take(&mut self.uncounted), unspent: self.unspent.take(), rate, quota };
        if take.is_one() { Take::one() } else { take }
    }
}

struct Active {
    at: UnixTime,
    key: KeyContext,
    rate: Option<LimitStatus>,
    quota: Option<LimitStatus>,
}

struct Spent {
    until: UnixTime,
    decision: Decision,
    /// Denials answered from memory, added to the key's denial counts at the next decision
    /// storage makes for the key.
    unrecorded: Option<Unrecorded>,
}

/// `n` denials with one code on one day, answered from memory and not yet counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unrecorded {
    denial: Denial,
    day: Day,
    n: u64,
}

impl Unrecorded {
    /// One more `denial` on `day` into `slot`: counted on, or started afresh (a new day or
    /// code starts a new count; the one it replaces is dropped, as a lost denial count is:
    /// history only, never a decision or a bill).
    fn add(slot: &mut Option<Unrecorded>, denial: Denial, day: Day, n: u64) {
        match slot {
            Some(u) if u.denial == denial && u.day == day => u.n += n,
            _ => *slot = Some(Unrecorded { denial, day, n }),
        }
    }
}

/// A hash no request will ever be allowed with (unknown; the key revoked; a secret rotated
/// past its grace), until `until` for the unknown.
struct Unusable {
    denial: Denial,
    until: Option<UnixTime>,
}

/// What memory says before storage is asked.
enum Recall {
    /// Answer without storage.
    Answer(Decision),
    /// Ask storage; the key id when known, denials to record once storage answers, and what
    /// the write takes.
    Ask(Option<KeyId>, Option<Unrecorded>, Take),
}

impl Memory {
    fn recall(&mut self, hash: &KeyHash, required: &[String], now: UnixTime) -> Recall {
        if let Some(u) = self.unusable.get(hash) {
            if u.until.is_none_or(|until| now < until) {
                return Recall::Answer(Decision::denied(u.denial));
            }
            self.unusable.pop(hash);
        }
        let Some(known) = self.usable.get_mut(hash) else { return Recall::Ask(None, None, Take::one()) };
        if required.iter().any(|scope| !known.scopes.contains(scope)) {
            // Not this key's route, as far as storage said lately: refused here until the
            // recheck; what is remembered for the key's other routes stays as it is.
            if now < known.scopes_seen.plus(SPENT_RECHECK_S) {
                Unrecorded::add(&mut known.scope_unrecorded, Denial::InsufficientScope, now.day(), 1);
                return Recall::Answer(Decision::denied(Denial::InsufficientScope));
            }
            known.in_flight += 1;
            return Recall::Ask(Some(known.key_id.clone()), known.scope_unrecorded.take(), Take::one());
        }
        match &mut known.spent {
            Some(spent) if now < spent.until => {
                if let Err(denial) = spent.decision.outcome {
                    Unrecorded::add(&mut spent.unrecorded, denial, now.day(), 1);
                }
                Recall::Answer(spent.decision.clone())
            }
            Some(_) => {
                let unrecorded = known.spent.take().and_then(|s| s.unrecorded);
                let pace = known.pace(now);
                known.end_lease();
                Recall::Ask(Some(known.key_id.clone()), unrecorded, known.next_take(pace))
            }
            None => {
                let pace = known.pace(now);
                if let Some(decision) = known.spend(now) {
                    return Recall::Answer(decision);
                }
                known.end_lease();
                Recall::Ask(Some(known.key_id.clone()), None, known.next_take(pace))
            }
        }
    }

    /// Puts back denials that could not be recorded (storage failed), for the next decision.
    fn unrecorded(&mut self, hash: &KeyHash, put_back: Unrecorded, decision: Decision) {
        if let Some(known) = self.usable.get_mut(hash) {
            let Unrecorded { denial, day, n } = put_back;
            match &mut known.spent {
                Some(spent) => Unrecorded::add(&mut spent.unrecorded, denial, day, n),
                None => {
                    known.spent = Some(Spent { until: UnixTime(i64::MIN), decision, unrecorded: Some(put_back) });
                }
            }
        }
    }

    /// What ended blocks left to count and give back, taken out of memory (see
    /// [`Authorizer::settle_leases`]).
    fn settlements(&mut self, now: UnixTime, all: bool) -> Vec<Settlement> {
        let mut due = std::mem::take(&mut self.pending);
        let leased = std::mem::take(&mut self.leased);
        for hash in leased {
            let Some(known) = self.usable.peek_mut(&hash) else { continue };
            let ended = known.lease.as_ref().is_none_or(|l| now >= l.until.plus(2));
            if all || ended {
                known.end_lease();
                if !known.uncounted.is_empty() || known.unspent.is_some() {
                    due.push((known.key_id.clone(), std::mem::take(&mut known.uncounted), known.unspent.take()));
                }
            } else {
                self.leased.push(hash);
            }
        }
        due
    }

    /// A decision for the key is no longer waiting on storage.
    fn answered(&mut self, hash: &KeyHash) {
        if let Some(known) = self.usable.peek_mut(hash) {
            known.in_flight = known.in_flight.saturating_sub(1);
        }
    }

    /// Takes back what a write for the key did not carry (see [`AuthorizeStore::take`]).
    fn keep(&mut self, hash: &KeyHash, take: Take) {
        let Some(known) = self.usable.get_mut(hash) else { return };
        for (day, n) in take.used {
            add_used(&mut known.uncounted, day, n);
        }
        if known.unspent.is_none() {
            known.unspent = take.unspent;
        }
        if !self.leased.contains(hash) {
            self.leased.push(*hash);
        }
    }

    fn unknown(&mut self, hash: KeyHash, now: UnixTime) {
        self.unusable.put(hash, Unusable { denial: Denial::InvalidKey, until: Some(now.plus(UNKNOWN_HASH_TTL_S)) });
    }

    /// Learns from what storage decided for `key_id`, and reserved (`tokens`, this request's
    /// included: more than one starts a block).
    fn learn(&mut self, hash: KeyHash, key_id: &KeyId, decision: &Decision, tokens: u64, now: UnixTime) {
        // Permanent: a revoked key stays revoked, a rotated-away secret never returns, and a
        // hash whose key item is gone has nothing to come back to.
        if let Err(denial @ (Denial::InvalidKey | Denial::KeyRevoked)) = decision.outcome {
            self.usable.pop(&hash);
            self.unusable.put(hash, Unusable { denial, until: None });
            return;
        }
        if !self.usable.contains(&hash)
            && self.usable.len() == self.usable.cap().get()
            && let Some((old, mut evicted)) = self.usable.pop_lru()
        {
            // The least recently used key makes room. What its blocks admitted is counted,
            // and what they left given back, by the next sweep: never dropped with it.
            self.leased.retain(|h| *h != old);
            evicted.end_lease();
            if !evicted.uncounted.is_empty() || evicted.unspent.is_some() {
                self.pending.push((evicted.key_id, evicted.uncounted, evicted.unspent));
            }
        }
        let known = self.usable.get_or_insert_mut(hash, || Known {
            key_id: key_id.clone(),
            scopes: vec![],
            scopes_seen: UnixTime(i64::MIN),
            scope_unrecorded: None,
            active: None,
            spent: None,
            refusals: (0, 0),
            pace: (now.secs(), 1, 0),
            lease: None,
            uncounted: vec![],
            unspent: None,
            in_flight: 0,
        });
        if let Some(key) = &decision.key {
            known.scopes.clone_from(&key.scopes);
            known.scopes_seen = now;
        }
        // About this route, not the key: nothing else it knows changes.
        if decision.outcome == Err(Denial::InsufficientScope) {
            return;
        }
        known.spent = None;
        let Err(denial) = decision.outcome else {
            known.active =
                decision.key.clone().map(|key| Active { at: now, key, rate: decision.rate, quota: decision.quota });
            if tokens > 1 {
                let until = lease_until(now, decision.rate.map(|r| r.reset), decision.quota.map(|q| q.reset));
                // A block still held (a decision that overlapped this one) goes back with the
                // next write rather than sitting reserved until its window ends.
                known.end_lease();
                known.lease = Some(Lease { until, left: tokens - 1, decision: decision.clone() });
                if !self.leased.contains(&hash) {
                    self.leased.push(hash);
                }
            }
            return;
        };
        // Refused: not active any more, so `open` will not let it through an outage.
        known.active = None;
        known.refusals = match known.refusals {
            (second, n) if second == now.secs() => (second, n + 1),
            _ => (now.secs(), 1),
        };
        let until = match denial {
            // Spent until the reset, which storage named.
            Denial::RateLimited | Denial::QuotaExceeded => {
                let limit = if denial == Denial::RateLimited { decision.rate } else { decision.quota };
                limit.map_or(now, |l| l.reset.min(now.plus(SPENT_RECHECK_S)))
            }
            // Disabled, expired, no subscription: each can change back at any moment, so only
            // a key hammering this container is answered from memory, until the recheck.
            _ if known.refusals.1 >= HOT_REFUSALS_PER_S => now.plus(SPENT_RECHECK_S),
            _ => now,
        };
        if now < until {
            known.spent = Some(Spent { until, decision: decision.clone(), unrecorded: None });
        }
    }

    /// `open` under a transient outage: a key storage allowed within `window_s`, within the
    /// limits it had left as far as this container knows.
    fn degraded(&mut self, hash: &KeyHash, required: &[String], now: UnixTime, window_s: u64) -> Option<Decision> {
        let known = self.usable.get_mut(hash)?;
        // The scopes storage returned last, whatever the route then (not those of the last allow).
        let covered = required.iter().all(|scope| known.scopes.contains(scope));
        let active = known.active.as_mut()?;
        if now.secs() - active.at.secs() > window_s as i64 {
            return None;
        }
        if !covered {
            return Some(Decision {
                outcome: Err(Denial::InsufficientScope),
                key: Some(active.key.clone()),
                rate: None,
                quota: None,
                degraded: false,
                from_memory: false,
            });
        }
        let room = |l: &mut Option<LimitStatus>| {
            let Some(l) = l else { return true };
            if now >= l.reset {
                let w = l.window_s.max(1) as i64;
                l.reset = l.reset.plus(((now.secs() - l.reset.secs()) / w + 1) * w);
                l.used = 0;
            }
            l.used < l.limit
        };
        let outcome = if !room(&mut active.rate) {
            Err(Denial::RateLimited)
        } else if !room(&mut active.quota) {
            Err(Denial::QuotaExceeded)
        } else {
            for l in [&mut active.rate, &mut active.quota].into_iter().flatten() {
                l.used += 1;
            }
            Ok(())
        };
        Some(Decision {
            degraded: outcome.is_ok(),
            from_memory: false,
            outcome,
            key: Some(active.key.clone()),
            rate: active.rate,
            quota: active.quota,
        })
    }
}

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
    /// fail-mode matrix (README, "Fail modes"). Counted in [`crate::metrics`] by outcome code
    /// and plan, with its latency.
    pub async fn decide(&self, presented: Option<&str>, route: Route<'_>, now: UnixTime) -> Decision {
        let started = std::time::Instant::now();
        let decision = self.decide_uncounted(presented, route, now).await;
        if now.secs() >= self.next_sweep.load(std::sync::atomic::Ordering::Relaxed) {
            self.next_sweep.store(now.secs() + 2, std::sync::atomic::Ordering::Relaxed);
            self.settle_leases(now, false).await;
        }
        let outcome = match decision.outcome {
            Ok(()) => "ok",
            Err(denial) => denial.code(),
        };
        let plan = decision.key.as_ref().and_then(|k| k.plan_id.as_ref()).map(|p| p.as_str());
        crate::metrics::global().decision(outcome, plan, started.elapsed());
        decision
    }

    async fn decide_uncounted(&self, presented: Option<&str>, route: Route<'_>, now: UnixTime) -> Decision {
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
        let recalled = self.memory().recall(&hash, &required, now);
        // Known keys are counted in flight while storage is asked (see `Known::in_flight`).
        let (key_id, unrecorded, take, known) = match recalled {
            Recall::Answer(mut decision) => {
                decision.from_memory = true;
                return decision;
            }
            Recall::Ask(Some(id), unrecorded, take) => (id, unrecorded, take, true),
            Recall::Ask(None, _, _) => match self.store.key_id_for_hash(&hash).await {
                Ok(Some(id)) => (id, None, Take::one(), false),
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
        let result = self.store.take(&key_id, &hash, &required, now, &mut take).await;
        {
            let mut memory = self.memory();
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
                    self.memory().unrecorded(&hash, unrecorded, decision.clone());
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

    /// Counts and gives back what this container's blocks admitted and left: those ended over
    /// two seconds ago (a hot key's next block carries them for free before then), or all of
    /// them (`all`, before the container stops). One write per key with anything to settle.
    pub async fn settle_leases(&self, now: UnixTime, all: bool) -> usize {
        let due = self.memory().settlements(now, all);
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

    /// The fail-mode matrix: `open` allows only a transient outage (timeout, 5xx, connection)
    /// for a key storage allowed within the window, and within what it had left; throttling,
    /// contention, corrupt items and unknown keys are refused in both modes.
    fn unavailable(&self, hash: &KeyHash, required: &[String], err: &StoreError, now: UnixTime) -> Decision {
        let fault = err.fault();
        let degraded = match (self.options.fail_mode, fault) {
            (FailMode::Open, Some(f)) if f.is_transient() => {
                self.memory().degraded(hash, required, now, self.options.open_window_s)
            }
            _ => None,
        };
        tracing::error!(
            error = %err,
            source = ?std::error::Error::source(err),
            fault = fault.map_or("answer", |f| f.as_str()),
            fail_mode = ?self.options.fail_mode,
            outcome = degraded.as_ref().map_or("unavailable", |d| if d.is_allowed() { "degraded" } else { "limited" }),
            "storage unavailable during authorization"
        );
        degraded.unwrap_or_else(|| Decision::denied(Denial::AuthorizationUnavailable))
    }
}

/// What the authorizer tells the gateway, in both API Gateway shapes and the local stack.
/// Flat, primitive values only: API Gateway rejects nested context values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizerContext {
    /// `ok`, or the denial code.
    pub code: String,
    /// The HTTP status the contract assigns to `code`.
    pub status: u16,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// The headline limit (rate limit if any, else quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// Seconds until the headline limit resets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Allowed without checks because storage was unreachable (fail-open).
    #[serde(default)]
    pub degraded: bool,
}

impl AuthorizerContext {
    pub fn from_decision(d: &Decision, now: UnixTime) -> Self {
        let headline = d.headline();
        let (code, status, message) = match d.outcome {
            Ok(()) => ("ok", 200, "Authorized."),
            Err(denial) => (denial.code(), denial.status(), denial.message()),
        };
        Self {
            code: code.to_owned(),
            status,
            message: message.to_owned(),
            key_id: d.key.as_ref().map(|k| k.key_id.as_str().to_owned()),
            customer_id: d.key.as_ref().map(|k| k.customer_id.as_str().to_owned()),
            plan_id: d.key.as_ref().and_then(|k| k.plan_id.as_ref()).map(|p| p.as_str().to_owned()),
            limit: headline.map(|h| h.limit),
            remaining: headline.map(|h| h.remaining()),
            reset: headline.map(|h| now.until(h.reset)),
            window_s: headline.map(|h| h.window_s),
            retry_after: d.retry_after(now),
            degraded: d.degraded,
        }
    }

    pub fn is_allowed(&self) -> bool {
        self.code == "ok"
    }

    /// Response headers for a known key: IETF draft-ietf-httpapi-ratelimit-headers-11
    /// (`RateLimit-Policy`, `RateLimit`), the widespread `X-RateLimit-*`, and `Retry-After`
    /// on 429.
    pub fn rate_limit_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![];
        if let (Some(limit), Some(remaining), Some(reset), Some(window)) =
            (self.limit, self.remaining, self.reset, self.window_s)
        {
            headers.push(("RateLimit-Policy", format!("\"default\";q={limit};w={window}")));
            headers.push(("RateLimit", format!("\"default\";r={remaining};t={reset}")));
            headers.push(("X-RateLimit-Limit", limit.to_string()));
            headers.push(("X-RateLimit-Remaining", remaining.to_string()));
            headers.push(("X-RateLimit-Reset", reset.to_string()));
        }
        if let Some(retry) = self.retry_after {
            headers.push(("Retry-After", retry.to_string()));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customers::CustomerId;
    use crate::store::{Fault, Outage, StoreResult, Taken};
    use std::collections::{HashMap, VecDeque};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// What the fake store answers next, per call.
    enum Answer {
        Decide(Result<(), Denial>, Option<LimitStatus>),
        Fail(Fault),
        Corrupt,
    }

    /// A scripted fake of the narrow trait: lookups know `known`, decisions pop `answers`.
    #[derive(Default)]
    struct Scripted {
        known: Mutex<HashMap<KeyHash, KeyId>>,
        lookup_fault: Mutex<Option<Fault>>,
        answers: Mutex<VecDeque<Answer>>,
        lookups: AtomicU64,
        decisions: AtomicU64,
        recorded: AtomicU64,
        /// `record_denials` calls: (code, count).
        recorded_codes: Mutex<Vec<(Denial, u64)>>,
        /// Grant the blocks asked for (else every allowed write reserves one request).
        grant_blocks: std::sync::atomic::AtomicBool,
        /// Every `take` asked of storage, and every `settle`.
        takes: Mutex<Vec<Take>>,
        settled: Mutex<Vec<Settled>>,
    }

    /// One `settle` call: the requests it counts, by day, and the tokens it gives back.
    type Settled = (Vec<(Day, u64)>, Option<Unspent>);

    fn outage(f: Fault) -> StoreError {
        StoreError::Unavailable(Outage::new(f, "injected"))
    }

    impl AuthorizeStore for Scripted {
        async fn key_id_for_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyId>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if let Some(f) = *self.lookup_fault.lock().unwrap() {
                return Err(outage(f));
            }
            Ok(self.known.lock().unwrap().get(hash).cloned())
        }

        async fn authorize_and_count(
            &self,
            key_id: &KeyId,
            _hash: &KeyHash,
            required: &[String],
            _now: UnixTime,
        ) -> StoreResult<Decision> {
            self.decisions.fetch_add(1, Ordering::SeqCst);
            match self.answers.lock().unwrap().pop_front().expect("an answer was scripted") {
                Answer::Decide(outcome, rate) => Ok(Decision {
                    // The scripted key holds `read` only.
                    outcome: if required.iter().any(|s| s != "read") {
                        Err(Denial::InsufficientScope)
                    } else {
                        outcome
                    },
                    key: Some(KeyContext {
                        key_id: key_id.clone(),
                        customer_id: CustomerId::parse("acme").unwrap(),
                        plan_id: None,
                        scopes: vec!["read".into()],
                    }),
                    rate,
                    quota: None,
                    degraded: false,
                    from_memory: false,
                }),
                Answer::Fail(f) => Err(outage(f)),
                Answer::Corrupt => Err(StoreError::Corrupt("key item without a status".into())),
            }
        }

        async fn take(
            &self,
            key_id: &KeyId,
            hash: &KeyHash,
            required: &[String],
            now: UnixTime,
            take: &mut Take,
        ) -> StoreResult<Taken> {
            let asked = take.tokens;
            self.takes.lock().unwrap().push(take.clone());
            let decision = self.authorize_and_count(key_id, hash, required, now).await?;
            take.used.clear();
            take.unspent = None;
            let tokens = match decision.is_allowed() {
                false => 0,
                true if self.grant_blocks.load(Ordering::SeqCst) => asked,
                true => 1,
            };
            Ok(Taken { decision, tokens })
        }

        async fn settle(
            &self,
            _key_id: &KeyId,
            used: &[(Day, u64)],
            unspent: Option<Unspent>,
            _now: UnixTime,
        ) -> StoreResult<()> {
            self.settled.lock().unwrap().push((used.to_vec(), unspent));
            Ok(())
        }

        async fn record_denials(&self, _key_id: &KeyId, _day: Day, denial: Denial, n: u64) {
            self.recorded.fetch_add(n, Ordering::SeqCst);
            self.recorded_codes.lock().unwrap().push((denial, n));
        }
    }

    const T0: UnixTime = UnixTime(1_800_000_000);
    /// A route no scope map names.
    const ANY: Route<'static> = Route { method: "GET", path: "/" };

    /// A refusal for want of a scope is about its route: the key's other routes are answered
    /// as before, storage is asked again for that route, and `open` never lets a route
    /// through that the key lacks the scope for.
    #[tokio::test]
    async fn scopes_are_decided_per_route() {
        let scopes = ScopeMap::parse(r#"{"POST /pets": "write", "GET /pets/**": "read"}"#).unwrap();
        let options = AuthorizerOptions { scopes, fail_mode: FailMode::Open, ..AuthorizerOptions::default() };
        let a = Authorizer::with_options(Scripted::default(), options);
        let k = key(a.store());
        let (write, read) = (Route { method: "POST", path: "/pets" }, Route { method: "GET", path: "/pets/1" });
        script(&a, [ok(), ok(), ok()]);
        assert_eq!(code(&a.decide(Some(&k), write, T0).await), "insufficient_scope");
        assert_eq!(code(&a.decide(Some(&k), read, T0).await), "ok", "a refusal for one route is not the key's");
        for _ in 0..5 {
            assert_eq!(code(&a.decide(Some(&k), write, T0.plus(1)).await), "insufficient_scope");
        }
        assert_eq!(a.store().decisions.load(Ordering::SeqCst), 2, "refused from memory until the recheck");
        assert_eq!(a.store().recorded.load(Ordering::SeqCst), 0);
        // At the recheck storage is asked again, and the refusals answered here are recorded.
        assert_eq!(code(&a.decide(Some(&k), write, T0.plus(SPENT_RECHECK_S)).await), "insufficient_scope");
        assert_eq!(a.store().recorded.load(Ordering::SeqCst), 5);
        assert_eq!(*a.store().recorded_codes.lock().unwrap(), [(Denial::InsufficientScope, 5)]);
        // A path upstreams read differently is refused before storage.
        let odd = Route { method: "POST", path: "/pets%2F..%2Fadmin" };
        assert_eq!(code(&a.decide(Some(&k), odd, T0.plus(11)).await), "insufficient_scope");
        assert_eq!(a.store().decisions.load(Ordering::SeqCst), 3);
        script(&a, [Answer::Fail(Fault::Timeout), Answer::Fail(Fault::Timeout)]);
        let later = T0.plus(SPENT_RECHECK_S * 3);
        assert_eq!(code(&a.decide(Some(&k), read, later).await), "degraded");
        assert_eq!(
            code(&a.decide(Some(&k), write, later).await),
            "insufficient_scope",
            "open never passes a route the key lacks"
        );
    }

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

    fn key(store: &Scripted) -> String {
        let k = ApiKey::generate(KeyEnv::Live).unwrap();
        store.known.lock().unwrap().insert(k.hash(), KeyId::generate(1_800_000_000_000));
        k.expose_secret().to_owned()
    }

    fn script(a: &Authorizer<Scripted>, answers: impl IntoIterator<Item = Answer>) {
        a.store().answers.lock().unwrap().extend(answers);
    }

    fn rate(limit: u64, used: u64, reset: UnixTime) -> Option<LimitStatus> {
        Some(LimitStatus { limit, used, reset, window_s: 60 })
    }

    fn ok() -> Answer {
        Answer::Decide(Ok(()), rate(100, 1, T0.plus(60)))
    }

    fn code(d: &Decision) -> &'static str {
        match d.outcome {
            Ok(()) if d.degraded => "degraded",
            Ok(()) => "ok",
            Err(denial) => denial.code(),
        }
    }

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
        assert_eq!(a.store().recorded.load(Ordering::SeqCst), 0);
        // The recheck: storage now allows (a raised limit); the ten answered here are recorded.
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
        assert_eq!(code(&a.decide(Some(&k), ANY, T0.plus(SPENT_RECHECK_S)).await), "authorization_unavailable");
        assert_eq!(a.store().recorded.load(Ordering::SeqCst), 0, "not recorded while storage fails");
        a.decide(Some(&k), ANY, T0.plus(SPENT_RECHECK_S + 1)).await;
        assert_eq!(a.store().recorded.load(Ordering::SeqCst), 3, "recorded once storage answers");
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

    #[test]
    fn keys_come_from_x_api_key_then_bearer() {
        assert_eq!(presented_key([("X-Api-Key", "tg_a"), ("authorization", "Bearer tg_b")]), Some("tg_a"));
        assert_eq!(presented_key([("AUTHORIZATION", "bearer  tg_b "), ("x-api-key", " ")]), Some("tg_b"));
        assert_eq!(presented_key([("authorization", "Basic dXNlcg==")]), None);
        assert_eq!(presented_key([("authorization", "Bearer")]), None);
        assert_eq!(presented_key([("accept", "*/*")]), None);
        assert_eq!(bearer_token("Bearer tg_x"), Some("tg_x"));
    }

    #[test]
    fn context_and_headers_for_a_rate_limited_key() {
        let now = UnixTime(1_000);
        let d = Decision {
            outcome: Err(Denial::RateLimited),
            key: Some(KeyContext {
                key_id: KeyId::parse("key_01JD0000000000000000000000").unwrap(),
                customer_id: CustomerId::parse("acme").unwrap(),
                plan_id: None,
                scopes: vec![],
            }),
            rate: Some(LimitStatus { limit: 100, used: 100, reset: UnixTime(1_022), window_s: 60 }),
            quota: None,
            degraded: false,
            from_memory: false,
        };
        let ctx = AuthorizerContext::from_decision(&d, now);
        assert_eq!((ctx.code.as_str(), ctx.status, ctx.retry_after), ("rate_limited", 429, Some(22)));
        let headers = ctx.rate_limit_headers();
        let get = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("RateLimit-Policy"), Some("\"default\";q=100;w=60"));
        assert_eq!(get("RateLimit"), Some("\"default\";r=0;t=22"));
        assert_eq!(get("X-RateLimit-Remaining"), Some("0"));
        assert_eq!(get("Retry-After"), Some("22"));
        // Flat JSON with no nulls: API Gateway accepts only primitive context values.
        let json = serde_json::to_value(&ctx).unwrap();
        assert!(json.as_object().unwrap().values().all(|v| !v.is_null() && !v.is_object() && !v.is_array()));
    }
}
