//! One decision per key at a time goes to storage from a container (single flight): where a
//! container serves many requests at once (the local stack, Lambda Managed Instances), the
//! others for the key wait for its answer, a bounded time, and are then served from the block
//! it brought back, sized for the callers that queued (docs/authorizer.md, "Concurrency").

use std::time::Duration;
use tokio::sync::watch;

/// The shortest a decision waits for another one's write before it takes its own.
pub const MIN_WAIT: Duration = Duration::from_millis(1);

/// Storage round trips remembered for the wait bound.
const ROUND_TRIPS_KEPT: usize = 32;

/// Held by the decision whose write is in flight; dropping it wakes every decision waiting on
/// it (also when that decision is cancelled or fails).
pub(super) type FlightGuard = watch::Sender<()>;

/// What a waiting decision watches: closed when the flight's answer is in memory.
pub(super) type FlightWatch = watch::Receiver<()>;

/// A new flight: the guard its decision holds, and what the others watch.
pub(super) fn take_off() -> (FlightGuard, FlightWatch) {
    watch::channel(())
}

/// Still in the air: its decision has not been answered (nor dropped).
pub(super) fn in_flight(watch: &FlightWatch) -> bool {
    watch.has_changed().is_ok()
}

/// Where a decision stands in its wait for another one's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Waited {
    /// Not yet: it counts toward the key's pace, and may wait.
    No,
    /// Woken by a flight that landed: it may wait for the next one, until its deadline.
    Woken,
    /// Its deadline passed: it takes its own write (one request).
    TooLong,
}

/// Recent storage round trips of the container's decision writes, for how long to wait.
#[derive(Debug, Default)]
pub(super) struct RoundTrips {
    micros: Vec<u32>,
    next: usize,
}

impl RoundTrips {
    pub(super) fn record(&mut self, took: Duration) {
        let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        if self.micros.len() < ROUND_TRIPS_KEPT {
            self.micros.push(us);
        } else {
            self.micros[self.next] = us;
        }
        self.next = (self.next + 1) % ROUND_TRIPS_KEPT;
    }

    /// max(2 × the median round trip, [`MIN_WAIT`]): long enough for a write in flight to
    /// land, short enough that a stalled one costs a caller no more than one more write.
    pub(super) fn wait_bound(&self) -> Duration {
        if self.micros.is_empty() {
            return MIN_WAIT;
        }
        let mut sorted = self.micros.clone();
        let mid = sorted.len() / 2;
        let (_, median, _) = sorted.select_nth_unstable(mid);
        Duration::from_micros(u64::from(*median) * 2).max(MIN_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_twice_the_median_round_trip_and_at_least_a_millisecond() {
        let mut rtt = RoundTrips::default();
        assert_eq!(rtt.wait_bound(), MIN_WAIT);
        for ms in [3, 1, 2, 100, 2] {
            rtt.record(Duration::from_millis(ms));
        }
        assert_eq!(rtt.wait_bound(), Duration::from_millis(4));
        let mut fast = RoundTrips::default();
        fast.record(Duration::from_micros(80));
        assert_eq!(fast.wait_bound(), MIN_WAIT);
    }

    #[test]
    fn only_the_latest_round_trips_count() {
        let mut rtt = RoundTrips::default();
        for _ in 0..ROUND_TRIPS_KEPT {
            rtt.record(Duration::from_millis(50));
        }
        for _ in 0..ROUND_TRIPS_KEPT {
            rtt.record(Duration::from_millis(2));
        }
        assert_eq!(rtt.wait_bound(), Duration::from_millis(4));
    }

    #[tokio::test]
    async fn a_landed_or_dropped_flight_wakes_its_watchers() {
        let (guard, mut watch) = take_off();
        assert!(in_flight(&watch));
        drop(guard);
        assert!(!in_flight(&watch));
        assert!(watch.changed().await.is_err(), "woken at once once its decision is answered");
    }
}
