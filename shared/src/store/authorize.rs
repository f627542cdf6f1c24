//! The authorizer's storage: one conditional write per decision, blocks for hot keys.

use super::StoreResult;
use crate::domain::api_key::{KeyHash, KeyId};
use crate::domain::decision::{Decision, Denial};
use crate::domain::lease::{Take, Unspent};
use crate::domain::time::{Day, UnixTime};
use std::future::Future;

pub trait AuthorizeStore: Send + Sync {
    fn key_id_for_hash(&self, hash: &KeyHash) -> impl Future<Output = StoreResult<Option<KeyId>>> + Send;
    /// Decides one request to a route needing the scopes `required` for the key and, when
    /// allowed, counts it against its limits, in one conditional write in steady state
    /// ([`Take::one`]). Denials are counted separately. For a hot key
    /// ([`crate::domain::lease`]) the same one write reserves up to `take.tokens` requests
    /// (what fits), counts the requests earlier blocks admitted for billing and gives back
    /// their unspent tokens. The decision, and how many tokens it reserved (0 when refused);
    /// this decision's request is one of them. `take.used` and `take.unspent` are emptied once
    /// written, or once a write that may have been applied failed; what is left in them on
    /// return (a throttled write, an error) was certainly not written, and the caller keeps it
    /// for its next write.
    fn take(
        &self,
        key_id: &KeyId,
        hash: &KeyHash,
        required: &[String],
        now: UnixTime,
        take: &mut Take,
    ) -> impl Future<Output = StoreResult<Taken>> + Send;
    /// Counts what ended blocks admitted and gives back their unspent tokens, deciding nothing
    /// (a container settling before it idles or shuts down). Never retried after an ambiguous
    /// failure: what is lost is at most those blocks, never counted twice.
    fn settle(
        &self,
        key_id: &KeyId,
        used: &[(Day, u64)],
        unspent: Option<Unspent>,
        now: UnixTime,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Adds `n` denials the authorizer answered from memory to the key's denial counts for
    /// `day`. Best effort: a failure is logged, never a decision.
    fn record_denials(&self, key_id: &KeyId, day: Day, denial: Denial, n: u64) -> impl Future<Output = ()> + Send;
}

/// What a [`AuthorizeStore::take`] write decided and reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub decision: Decision,
    /// Requests reserved, this decision's included; 0 when refused.
    pub tokens: u64,
}

impl Taken {
    pub fn refused(decision: Decision) -> Self {
        Self { decision, tokens: 0 }
    }
}
