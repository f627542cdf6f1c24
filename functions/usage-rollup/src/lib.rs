//! The usage rollup Lambda's event handling: EventBridge Scheduler invokes it with an explicit
//! input, `{"mode":"scheduled"}`; the work itself is [`shared::app::rollup::Rollup`].

use serde::Deserialize;
use std::time::Duration;

/// The scheduler's input. Anything else is refused, so a mis-wired trigger fails loudly
/// instead of running the rollup on events it was never meant for.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub mode: Mode,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Scheduled,
}

#[derive(Debug, thiserror::Error)]
#[error("expected the input {{\"mode\":\"scheduled\"}}: {0}")]
pub struct InputError(#[from] serde_json::Error);

pub fn parse_input(event: serde_json::Value) -> Result<Input, InputError> {
    Ok(serde_json::from_value(event)?)
}

/// Time the run may spend before it stops taking new work: what is left of the invocation,
/// minus `reserve` for the item in flight and releasing the lease; at least one second.
pub fn budget(remaining: Duration, reserve: Duration) -> Duration {
    remaining.saturating_sub(reserve).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_scheduled_input_is_accepted() {
        let fixture = include_str!("../../../events/usage-rollup-scheduled.json");
        let scheduled = serde_json::from_str(fixture).unwrap();
        assert_eq!(parse_input(scheduled).unwrap(), Input { mode: Mode::Scheduled });
        // The SAM template's schedule sends exactly this.
        let template = include_str!("../../../infra/template.yaml");
        assert!(template.contains(&format!("Input: '{}'", fixture.trim())), "the schedule's Input is the fixture");
        for bad in [json!({}), json!({"mode": "manual"}), json!({"mode": "scheduled", "x": 1}), json!("scheduled")] {
            let err = parse_input(bad.clone()).unwrap_err();
            assert!(err.to_string().contains("mode"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_budget_keeps_a_reserve() {
        assert_eq!(budget(Duration::from_secs(300), Duration::from_secs(20)), Duration::from_secs(280));
        assert_eq!(budget(Duration::from_secs(5), Duration::from_secs(20)), Duration::from_secs(1));
    }
}
