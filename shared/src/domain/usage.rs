//! Usage history: what a key did each UTC day.

use super::time::Day;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageDay {
    pub day: Day,
    pub allowed: u64,
    pub denied: u64,
}

/// How long daily history is kept.
pub const HISTORY_DAYS: i64 = 90;
