//! What can go wrong in storage: answers that refuse ([`StoreError`]) and outages
//! ([`Fault`]), the rows of the authorizer's fail-mode matrix.

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    /// The request is valid but the stored state forbids it (e.g. a plan in use, a revoked key).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A referenced item does not exist (e.g. a key naming an unknown plan).
    #[error("unknown {0}")]
    UnknownReference(&'static str),
    /// Could not reach storage, or it throttled us, within the time allowed. Safe to retry.
    #[error("storage unavailable ({})", .0.fault.as_str())]
    Unavailable(#[source] Outage),
    /// Storage answered with an error that retrying will not fix.
    #[error("storage error")]
    Backend(#[source] BoxError),
    /// A stored item does not have the shape this code writes.
    #[error("corrupt item: {0}")]
    Corrupt(String),
    #[error("invalid cursor")]
    InvalidCursor,
    /// A customer creating its own key already holds as many as its plan allows.
    #[error("the plan allows {0} keys and all are in use")]
    KeyLimitReached(u64),
    /// A customer creating its own key has no plan to put it on (a key without one would have
    /// no limits at all).
    #[error("the customer has no plan")]
    NoPlan,
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// Why storage could not answer, for [`StoreError::Unavailable`]; `None` for answers.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            Self::Unavailable(o) => Some(o.fault),
            _ => None,
        }
    }
}

/// Why storage could not answer: the rows of the authorizer's fail-mode matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No answer within the attempt or operation timeout.
    Timeout,
    /// A 5xx (`InternalServerError`, `ServiceUnavailable`, or any other 5xx status).
    Server,
    /// Refused, reset or dropped before an answer arrived.
    Connection,
    /// `ProvisionedThroughputExceededException`, `ThrottlingException`, `RequestLimitExceeded`:
    /// what an attacker hammering one item causes, so never a reason to let anyone in.
    Throttled,
    /// Conflicting writes to the same items (`TransactionConflict`, or a decision that kept
    /// losing its conditional write): also load, not an outage.
    Contention,
}

impl Fault {
    /// Outages that say nothing about the caller: the only ones `open` may allow through.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Timeout | Self::Server | Self::Connection)
    }

    /// A refusal that says the write was not applied (throttled, or a TransactionConflict
    /// with a rollup transaction holding the item): what it carried can be sent again.
    pub fn not_applied(self) -> bool {
        matches!(self, Self::Throttled | Self::Contention)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Server => "server_error",
            Self::Connection => "connection",
            Self::Throttled => "throttled",
            Self::Contention => "contention",
        }
    }
}

/// A storage outage: its class, what happened, and the SDK error behind it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {detail}", fault.as_str())]
pub struct Outage {
    pub fault: Fault,
    detail: String,
    #[source]
    source: Option<BoxError>,
}

impl Outage {
    pub fn new(fault: Fault, detail: impl Into<String>) -> Self {
        Self { fault, detail: detail.into(), source: None }
    }

    /// The same outage, told in other words (the SDK's own text is often terse).
    pub fn with_detail(self, detail: String) -> Self {
        Self { detail, ..self }
    }

    pub fn caused_by(fault: Fault, source: impl Into<BoxError>) -> Self {
        let source = source.into();
        Self { fault, detail: source.to_string(), source: Some(source) }
    }
}
