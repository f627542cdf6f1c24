//! How an authorizer behaves beyond the store: fail mode, key environment, memory sizes, scopes.

use crate::config::{Config, DEFAULT_FAIL_OPEN_WINDOW_S, FailMode};
use crate::domain::api_key::KeyEnv;
use crate::domain::scopes::ScopeMap;

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
