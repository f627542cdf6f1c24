//! Hot keys' blocks in one container: spending them from memory, ending them, and what the
//! next write or the sweep carries back to storage ([`crate::domain::lease`]).

use super::memory::{Known, Memory};
use crate::domain::api_key::{KeyHash, KeyId};
use crate::domain::decision::Decision;
use crate::domain::lease::{Take, Unspent, add_used, queued_block_size};
use crate::domain::time::{Day, UnixTime};

/// What one key's ended blocks left: its id, the requests admitted and not counted (by day),
/// and the unspent tokens to give back.
pub(super) type Settlement = (KeyId, Vec<(Day, u64)>, Option<Unspent>);

/// A block of requests reserved for this container: spent from memory until `until`.
pub(super) struct Lease {
    pub(super) until: UnixTime,
    pub(super) left: u64,
    /// The write's decision, for the requests the block admits.
    pub(super) decision: Decision,
}

impl Known {
    /// One request of the block held, if it is still current: admitted from memory, counted
    /// for billing with the key's next write. Its headers show what is known: the key's count
    /// at the block's write, less what this container has not spent.
    pub(super) fn spend(&mut self, now: UnixTime) -> Option<Decision> {
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
    pub(super) fn end_lease(&mut self) {
        if let Some(lease) = self.lease.take().filter(|l| l.left > 0) {
            self.unspent = Some(Unspent {
                tokens: lease.left,
                window_end: lease.decision.rate.map(|r| r.reset),
                period_end: lease.decision.quota.map(|q| q.reset),
            });
        }
    }

    /// What the next write for the key takes: a block when it runs hot here, or others queued
    /// on its last write, and no other decision for it is in flight; with what earlier blocks
    /// used and left (moved out: a write carries them once).
    pub(super) fn next_take(&mut self, pace: u64) -> Take {
        self.in_flight += 1;
        let last = self.active.as_ref();
        let (rate, quota) = (last.and_then(|a| a.rate), last.and_then(|a| a.quota));
        let remaining = [rate, quota].into_iter().flatten().map(|l| l.remaining()).min();
        // Without a recent allowed decision the limits are not known here: the block's first
        // write learns them from the item its condition returns, and the second fits them.
        let tokens = if self.in_flight > 1 { 1 } else { queued_block_size(pace, self.queued.1, remaining) };
        let take =
            Take { tokens, used: std::mem::take(&mut self.uncounted), unspent: self.unspent.take(), rate, quota };
        if take.is_one() { Take::one() } else { take }
    }
}

impl Memory {
    /// What blocks left to count and give back, taken out of memory: all of them, or those
    /// ended `grace_s` or more ago (see [`super::Authorizer::settle_leases`]).
    pub(super) fn settlements(&mut self, now: UnixTime, all: bool, grace_s: i64) -> Vec<Settlement> {
        let mut due = std::mem::take(&mut self.pending);
        let leased = std::mem::take(&mut self.leased);
        for hash in leased {
            let Some(known) = self.usable.peek_mut(&hash) else { continue };
            let ended = known.lease.as_ref().is_none_or(|l| now >= l.until.plus(grace_s));
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

    /// Takes back what a write for the key did not carry (see [`AuthorizeStore::take`]).
    pub(super) fn keep(&mut self, hash: &KeyHash, take: Take) {
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
}
