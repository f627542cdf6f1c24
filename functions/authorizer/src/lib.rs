//! The authorizer's handler, as a library so the local stack and the tests run the very code
//! the Lambda runs.

pub mod handler;

/// Invocations Lambda may give one environment at once, from `AWS_LAMBDA_MAX_CONCURRENCY` as
/// the runtime reads it: set above 1 on Lambda Managed Instances; unset, unreadable or lower
/// means one at a time (classic Lambda).
pub fn max_concurrency(value: Option<&str>) -> u32 {
    value.and_then(|v| v.parse::<u32>().ok()).unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn concurrency_is_one_unless_lambda_says_more() {
        assert_eq!(super::max_concurrency(None), 1);
        assert_eq!(super::max_concurrency(Some("0")), 1);
        assert_eq!(super::max_concurrency(Some("junk")), 1);
        assert_eq!(super::max_concurrency(Some("8")), 8);
    }
}
