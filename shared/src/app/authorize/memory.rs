//! What one container remembers of the keys it has seen: the key cache, refusals answered from
//! memory, and what it learns from each decision storage makes.

use super::flight::{FlightGuard, FlightWatch, RoundTrips, Waited, in_flight, take_off};
use super::leases::{Lease, Settlement};
use super::options::{HOT_REFUSALS_PER_S, SPENT_RECHECK_S, UNKNOWN_HASH_TTL_S};
use crate::domain::api_key::{KeyHash, KeyId};
use crate::domain::decision::{Decision, Denial, KeyContext};
use crate::domain::lease::{Take, Unspent, lease_until};
use crate::domain::limits::LimitStatus;
use crate::domain::time::{Day, UnixTime};
use lru::LruCache;
use std::collections::HashSet;
use std::time::Duration;

/// What one container remembers of the keys it has seen, in two bounded LRU memories so that
/// a flood of random (well-formed) keys evicts only other unusable hashes, never the keys in
/// use. Positive knowledge never lets a request in by itself: every allowed decision is still
/// a conditional write, so revocation, disabling and a lapsed subscription take effect at once.
pub(super) struct Memory {
    pub(super) usable: LruCache<KeyHash, Known>,
    pub(super) unusable: LruCache<KeyHash, Unusable>,
    /// Keys that were given a block: the few whose leases may need settling.
    pub(super) leased: Vec<KeyHash>,
    /// Settlements for the next sweep: of keys pushed out of `usable`, and ones storage
    /// refused (throttled, or held by a transaction) and so did not apply.
    pub(super) pending: Vec<Settlement>,
    /// Keys with denials answered from memory that no write has counted yet.
    pub(super) denied: HashSet<KeyHash>,
    /// The container's recent decision writes, for how long a decision waits on another.
    pub(super) round_trips: RoundTrips,
}

pub(super) struct Known {
    pub(super) key_id: KeyId,
    /// The key's scopes as storage last returned them, and when: a route they do not cover is
    /// refused from memory until the recheck (no request to storage per refusal), and a
    /// refusal remembered for the key is answered for a route only if they cover it.
    pub(super) scopes: Vec<String>,
    pub(super) scopes_seen: UnixTime,
    /// Refusals for scope answered from memory, recorded by the next decision storage makes,
    /// or by the sweep.
    pub(super) scope_unrecorded: Option<Unrecorded>,
    /// Other refusals answered from memory (a spent window or quota, a hammering refused
    /// key), recorded by the next decision storage makes for the key, or by the sweep,
    /// whichever comes first. Kept apart from what is remembered of the refusal, so a
    /// decision that replaces that never drops them.
    pub(super) denials: Option<Unrecorded>,
    /// The last decision storage allowed for this key, and when: what `open` may act on. Any
    /// refusal clears it.
    pub(super) active: Option<Active>,
    /// A refusal answered from memory until then: a spent window or quota, or a hot key's.
    pub(super) spent: Option<Spent>,
    /// Refusals storage answered in one second: (that second, how many).
    pub(super) refusals: (i64, u32),
    /// Requests decided for the key in this container: (this second, how many so far, how
    /// many the second before). Past [`crate::domain::lease::HOT_DECISIONS_PER_S`] it is hot.
    pub(super) pace: (i64, u64, u64),
    /// A hot key's block being spent ([`crate::domain::lease`]).
    pub(super) lease: Option<Lease>,
    /// Requests admitted from blocks that no write has counted yet, by day.
    pub(super) uncounted: Vec<(Day, u64)>,
    /// An ended block's unspent tokens, to give back with the next write.
    pub(super) unspent: Option<Unspent>,
    /// Decisions for the key waiting on storage in this container: the flight's, and those
    /// that waited past their bound and took their own write. A block is taken only by a
    /// flight alone in the air; a write beside it takes one request, so no block sits in
    /// memory while storage refuses the requests it was reserved for.
    pub(super) in_flight: u32,
    /// The decision whose write is in flight for the key, which others wait on
    /// ([`super::flight`]).
    pub(super) flight: Option<FlightWatch>,
    /// Decisions that waited on the flight in the air, and on the one before: the callers
    /// asking at once, which the next block covers.
    pub(super) queued: (u64, u64),
}

impl Known {
    /// Counts a decision into the key's pace (a decision that waited was counted when it
    /// first came), and answers the pace.
    pub(super) fn pace(&mut self, now: UnixTime, waited: Waited) -> u64 {
        if waited != Waited::No {
            return self.pace.1.max(self.pace.2);
        }
        let (second, count, before) = self.pace;
        self.pace = match now.secs() - second {
            0 => (second, count + 1, before),
            1 => (now.secs(), 1, count),
            _ => (now.secs(), 1, 0),
        };
        self.pace.1.max(self.pace.2)
    }
}

pub(super) struct Active {
    pub(super) at: UnixTime,
    pub(super) key: KeyContext,
    pub(super) rate: Option<LimitStatus>,
    pub(super) quota: Option<LimitStatus>,
}

pub(super) struct Spent {
    pub(super) until: UnixTime,
    pub(super) decision: Decision,
}

/// `n` denials with one code on one day, answered from memory and not yet counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unrecorded {
    pub(super) denial: Denial,
    pub(super) day: Day,
    pub(super) n: u64,
}

impl Unrecorded {
    /// One more `denial` on `day` into `slot`: counted on, or started afresh (a new day or
    /// code starts a new count; the one it replaces is dropped, as a lost denial count is:
    /// history only, never a decision or a bill).
    pub(super) fn add(slot: &mut Option<Unrecorded>, denial: Denial, day: Day, n: u64) {
        match slot {
            Some(u) if u.denial == denial && u.day == day => u.n += n,
            _ => *slot = Some(Unrecorded { denial, day, n }),
        }
    }
}

/// A hash no request will ever be allowed with (unknown; the key revoked; a secret rotated
/// past its grace), until `until` for the unknown.
pub(super) struct Unusable {
    pub(super) denial: Denial,
    pub(super) until: Option<UnixTime>,
}

/// What memory says before storage is asked.
pub(super) enum Recall {
    /// Answer without storage.
    Answer(Decision),
    /// Ask storage; the key id when known, denials to record once storage answers, what the
    /// write takes, and the guard of the flight it is (dropped once its answer is learned).
    Ask(Option<KeyId>, Option<Unrecorded>, Take, Option<FlightGuard>),
    /// Another decision's write for the key is in flight: wait for it, at most this long,
    /// then recall again.
    Wait(FlightWatch, Duration),
}

/// Storage is to be asked about a known key: wait for the flight in the air, or take off
/// (`carry`: the denials the write's decision records, and what the write takes).
fn ask(
    known: &mut Known,
    waited: Waited,
    round_trips: &RoundTrips,
    carry: impl FnOnce(&mut Known) -> (Option<Unrecorded>, Take),
) -> Recall {
    let guard = match known.flight.as_ref().filter(|w| in_flight(w)) {
        Some(watch) if waited != Waited::TooLong => {
            known.queued.0 += 1;
            return Recall::Wait(watch.clone(), round_trips.wait_bound());
        }
        // Waited its bound: its own write beside the flight, of one request.
        Some(_) => None,
        None => {
            let (guard, watch) = take_off();
            known.flight = Some(watch);
            known.queued = (0, known.queued.0);
            Some(guard)
        }
    };
    let (unrecorded, take) = carry(known);
    Recall::Ask(Some(known.key_id.clone()), unrecorded, take, guard)
}

impl Memory {
    pub(super) fn recall(&mut self, hash: &KeyHash, required: &[String], now: UnixTime, waited: Waited) -> Recall {
        if let Some(u) = self.unusable.get(hash) {
            if u.until.is_none_or(|until| now < until) {
                return Recall::Answer(Decision::denied(u.denial));
            }
            self.unusable.pop(hash);
        }
        let Some(known) = self.usable.get_mut(hash) else { return Recall::Ask(None, None, Take::one(), None) };
        if required.iter().any(|scope| !known.scopes.contains(scope)) {
            // Not this key's route, as far as storage said lately: refused here until the
            // recheck; what is remembered for the key's other routes stays as it is.
            if now < known.scopes_seen.plus(SPENT_RECHECK_S) {
                Unrecorded::add(&mut known.scope_unrecorded, Denial::InsufficientScope, now.day(), 1);
                self.denied.insert(*hash);
                return Recall::Answer(Decision::denied(Denial::InsufficientScope));
            }
            return ask(known, waited, &self.round_trips, |known| {
                known.in_flight += 1;
                (known.scope_unrecorded.take(), Take::one())
            });
        }
        match &mut known.spent {
            Some(spent) if now < spent.until => {
                if let Err(denial) = spent.decision.outcome {
                    Unrecorded::add(&mut known.denials, denial, now.day(), 1);
                    self.denied.insert(*hash);
                }
                Recall::Answer(spent.decision.clone())
            }
            Some(_) => {
                let pace = known.pace(now, waited);
                known.end_lease();
                ask(known, waited, &self.round_trips, |known| {
                    known.spent = None;
                    (known.denials.take(), known.next_take(pace))
                })
            }
            None => {
                let pace = known.pace(now, waited);
                if let Some(decision) = known.spend(now) {
                    return Recall::Answer(decision);
                }
                known.end_lease();
                ask(known, waited, &self.round_trips, |known| (known.denials.take(), known.next_take(pace)))
            }
        }
    }

    /// Puts back denials that could not be recorded (storage failed), for the next decision.
    pub(super) fn unrecorded(&mut self, hash: &KeyHash, put_back: Unrecorded) {
        if let Some(known) = self.usable.get_mut(hash) {
            let Unrecorded { denial, day, n } = put_back;
            let slot =
                if denial == Denial::InsufficientScope { &mut known.scope_unrecorded } else { &mut known.denials };
            Unrecorded::add(slot, denial, day, n);
            self.denied.insert(*hash);
        }
    }

    /// A decision for the key is no longer waiting on storage.
    pub(super) fn answered(&mut self, hash: &KeyHash) {
        if let Some(known) = self.usable.peek_mut(hash) {
            known.in_flight = known.in_flight.saturating_sub(1);
        }
    }

    /// Denials answered from memory that no write has counted, taken out of memory for the
    /// sweep to record (one write per key and code).
    pub(super) fn denials_due(&mut self) -> Vec<(KeyId, Unrecorded)> {
        let mut due = vec![];
        for hash in std::mem::take(&mut self.denied) {
            let Some(known) = self.usable.peek_mut(&hash) else { continue };
            for unrecorded in [known.scope_unrecorded.take(), known.denials.take()].into_iter().flatten() {
                due.push((known.key_id.clone(), unrecorded));
            }
        }
        due
    }

    pub(super) fn unknown(&mut self, hash: KeyHash, now: UnixTime) {
        self.unusable.put(hash, Unusable { denial: Denial::InvalidKey, until: Some(now.plus(UNKNOWN_HASH_TTL_S)) });
    }

    /// Learns from what storage decided for `key_id`, and reserved (`tokens`, this request's
    /// included: more than one starts a block).
    pub(super) fn learn(&mut self, hash: KeyHash, key_id: &KeyId, decision: &Decision, tokens: u64, now: UnixTime) {
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
            denials: None,
            active: None,
            spent: None,
            refusals: (0, 0),
            pace: (now.secs(), 1, 0),
            lease: None,
            uncounted: vec![],
            unspent: None,
            in_flight: 0,
            flight: None,
            queued: (0, 0),
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
            known.spent = Some(Spent { until, decision: decision.clone() });
        }
    }
}
