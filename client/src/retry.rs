//! When to try a request again: exponential backoff with full jitter, and the server's
//! `Retry-After` on 503. Pure arithmetic; the caller sleeps (asynchronously).

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

/// How often and how patiently idempotent requests are repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub attempts: u32,
    /// Backoff before the second attempt; doubled for each further one.
    pub base_delay: Duration,
    /// Longest wait between two attempts, also for `Retry-After`.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (after `attempt` failures, counting from 1): the
    /// server's `Retry-After` when it sent one, otherwise a random time up to the exponential
    /// bound ("full jitter"), so many clients refused at once do not return at once.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_delay);
        }
        let exponent = attempt.saturating_sub(1).min(20);
        let bound = self
            .base_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay);
        let fraction = random_fraction();
        // At least a tenth of the bound, so a retry never comes back instantly.
        bound.mul_f64(0.1 + 0.9 * fraction)
    }
}

/// A random number in [0, 1): the standard library's per-process random hash keys are enough
/// for jitter, without a random-number crate.
fn random_fraction() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After`: delay seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_bounded() {
        let policy = RetryPolicy {
            attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for attempt in 1..12 {
            let bound = Duration::from_millis(100 * (1 << (attempt - 1))).min(policy.max_delay);
            let delay = policy.delay(attempt, None);
            assert!(
                delay <= bound && delay >= bound / 10,
                "{attempt}: {delay:?}"
            );
        }
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(7))),
            Duration::from_secs(1)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
    }

    proptest::proptest! {
        #[test]
        fn retry_after_parsing_never_panics(text in "\\PC{0,40}") {
            let _ = parse_retry_after(&text);
        }
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
