//! The fail-mode matrix: what a decision is when storage cannot answer.

use super::Authorizer;
use super::memory::Memory;
use crate::config::FailMode;
use crate::domain::api_key::KeyHash;
use crate::domain::decision::{Decision, Denial};
use crate::domain::limits::LimitStatus;
use crate::domain::time::UnixTime;
use crate::store::{AuthorizeStore, StoreError};

impl Memory {
    /// `open` under a transient outage: a key storage allowed within `window_s`, within the
    /// limits it had left as far as this container knows.
    pub(super) fn degraded(
        &mut self,
        hash: &KeyHash,
        required: &[String],
        now: UnixTime,
        window_s: u64,
    ) -> Option<Decision> {
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

impl<S: AuthorizeStore> Authorizer<S> {
    /// The fail-mode matrix: `open` allows only a transient outage (timeout, 5xx, connection)
    /// for a key storage allowed within the window, and within what it had left; throttling,
    /// contention, corrupt items and unknown keys are refused in both modes.
    pub(super) fn unavailable(&self, hash: &KeyHash, required: &[String], err: &StoreError, now: UnixTime) -> Decision {
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
