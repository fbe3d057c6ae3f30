//! The retry policy: bounded retries with exponential backoff.

use std::time::Duration;

use crate::id::random_unit;

/// How a client retries a payload that failed for a transient reason (408,
/// 429, 5xx and other unexpected statuses, connection errors, timeouts).
///
/// Before retry *n* it waits `min(max_backoff, factor * 2^(n-2))`, and nothing
/// before the first retry (the ingest contract writes the formula with
/// `2^(n-1)` but counts retries from 0; its example schedule, followed here, is
/// the same): with the defaults (factor 1 s, max 16 s) that is
/// 0, 1, 2, 4, 8, 16, 16, 16 s. A 429 waits for its `Retry-After` instead
/// (capped by [`with_max_retry_after`](Self::with_max_retry_after)). A payload is dropped
/// when it has used `max_retries` retries or when the next wait would take it
/// past its `total_budget`, so no payload is retried without end.
///
/// ```
/// use newrelic_telemetry::RetryPolicy;
/// use std::time::Duration;
///
/// let policy = RetryPolicy::default();
/// let waits: Vec<u64> = (1..=8).map(|n| policy.backoff(n).as_secs()).collect();
/// assert_eq!(waits, [0, 1, 2, 4, 8, 16, 16, 16]);
///
/// let spec = RetryPolicy::default()
///     .with_backoff_factor(Duration::from_secs(5))
///     .with_max_backoff(Duration::from_secs(80))
///     .with_max_retries(8);
/// assert_eq!(spec.backoff(3), Duration::from_secs(10));
///
/// let once = RetryPolicy::none();
/// assert_eq!(once.max_retries(), 0);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    max_retries: u32,
    factor: Duration,
    max_backoff: Duration,
    total_budget: Option<Duration>,
    jitter: f64,
    max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 8 retries, factor 1 s, max backoff 16 s, a total budget of 2 minutes per
    /// payload, no jitter, `Retry-After` capped at 60 s.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            factor: Duration::from_secs(1),
            max_backoff: Duration::from_secs(16),
            total_budget: Some(Duration::from_secs(120)),
            jitter: 0.0,
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Never retry: every payload is attempted once.
    ///
    /// ```
    /// use newrelic_telemetry::RetryPolicy;
    ///
    /// assert_eq!(RetryPolicy::none().max_retries(), 0);
    /// ```
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// Sets the most retries per payload (after the first attempt).
    ///
    /// ```
    /// use newrelic_telemetry::RetryPolicy;
    ///
    /// assert_eq!(RetryPolicy::default().with_max_retries(3).max_retries(), 3);
    /// ```
    #[must_use]
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Sets the backoff factor: the wait before the second retry.
    ///
    /// ```
    /// use newrelic_telemetry::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// let policy = RetryPolicy::default().with_backoff_factor(Duration::from_millis(500));
    /// assert_eq!(policy.backoff(2), Duration::from_millis(500));
    /// assert_eq!(policy.backoff(3), Duration::from_secs(1));
    /// ```
    #[must_use]
    pub fn with_backoff_factor(mut self, factor: Duration) -> Self {
        self.factor = factor;
        self
    }

    /// Sets the longest wait between two attempts (for backoff).
    ///
    /// ```
    /// use newrelic_telemetry::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// let policy = RetryPolicy::default().with_max_backoff(Duration::from_secs(3));
    /// assert_eq!(policy.backoff(8), Duration::from_secs(3));
    /// ```
    #[must_use]
    pub fn with_max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// Sets the most time one payload may spend being retried, from its first
    /// attempt; `None` bounds it by `max_retries` alone.
    ///
    /// ```
    /// use newrelic_telemetry::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// let policy = RetryPolicy::default().with_total_budget(Some(Duration::from_secs(30)));
    /// assert_eq!(policy.total_budget(), Some(Duration::from_secs(30)));
    /// assert_eq!(RetryPolicy::default().with_total_budget(None).total_budget(), None);
    /// ```
    #[must_use]
    pub fn with_total_budget(mut self, budget: Option<Duration>) -> Self {
        self.total_budget = budget;
        self
    }

    /// Randomly shortens each wait by up to this fraction (0 to 1), so that
    /// many processes recovering at once do not retry in step. A value
    /// outside 0 to 1, or NaN, is not clamped: building the client fails
    /// with an error naming it.
    ///
    /// ```
    /// use newrelic_telemetry::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// // Waits become random in [0.75, 1] of the backoff; `backoff` shows the maximum.
    /// let policy = RetryPolicy::default().with_jitter(0.25);
    /// assert_eq!(policy.backoff(3), Duration::from_secs(2));
    /// ```
    #[must_use]
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Sets the longest wait a 429 answer's `Retry-After` can impose; a longer one
    /// is cut to this. A 429 without the header waits like a backoff, at least
    /// the backoff factor.
    ///
    /// ```
    /// use newrelic_telemetry::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// let policy = RetryPolicy::default().with_max_retry_after(Duration::from_secs(10));
    /// assert_ne!(policy, RetryPolicy::default());
    /// ```
    #[must_use]
    pub fn with_max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// The most retries per payload, as set by
    /// [`with_max_retries`](Self::with_max_retries).
    ///
    /// ```
    /// use newrelic_telemetry::RetryPolicy;
    ///
    /// assert_eq!(RetryPolicy::default().max_retries(), 8);
    /// assert_eq!(RetryPolicy::default().with_max_retries(2).max_retries(), 2);
    /// ```
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The backoff factor, as set by
    /// [`with_backoff_factor`](Self::with_backoff_factor).
    ///
    /// ```
    /// use newrelic_telemetry::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// assert_eq!(RetryPolicy::default().backoff_factor(), Duration::from_secs(1));
    /// ```
    pub fn backoff_factor(&self) -> Duration {
        self.factor
    }

    /// The longest backoff, as set by [`with_max_backoff`](Self::with_max_backoff).
    ///
    /// ```
    /// use newrelic_telemetry::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// assert_eq!(RetryPolicy::default().max_backoff(), Duration::from_secs(16));
    /// ```
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// The total budget per payload, as set by
    /// [`with_total_budget`](Self::with_total_budget).
    ///
    /// ```
    /// use newrelic_telemetry::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// assert_eq!(RetryPolicy::default().total_budget(), Some(Duration::from_secs(120)));
    /// ```
    pub fn total_budget(&self) -> Option<Duration> {
        self.total_budget
    }

    /// The jitter fraction, as set by [`with_jitter`](Self::with_jitter).
    ///
    /// ```
    /// use newrelic_telemetry::RetryPolicy;
    ///
    /// assert_eq!(RetryPolicy::default().jitter(), 0.0);
    /// assert_eq!(RetryPolicy::default().with_jitter(0.2).jitter(), 0.2);
    /// ```
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The cap on a `Retry-After` wait, as set by
    /// [`with_max_retry_after`](Self::with_max_retry_after).
    ///
    /// ```
    /// use newrelic_telemetry::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// assert_eq!(RetryPolicy::default().max_retry_after(), Duration::from_secs(60));
    /// ```
    pub fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// Why this policy cannot be used, if it cannot: a jitter outside 0 to 1
    /// (or not a number). Checked when a client is built.
    pub(crate) fn invalid(&self) -> Option<String> {
        (!(0.0..=1.0).contains(&self.jitter))
            .then(|| format!("retry jitter {} is not a fraction from 0 to 1", self.jitter))
    }

    /// The backoff before retry `n` (1-based), without jitter.
    ///
    /// ```
    /// use newrelic_telemetry::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// let policy = RetryPolicy::default();
    /// assert_eq!(policy.backoff(1), Duration::ZERO);
    /// assert_eq!(policy.backoff(4), Duration::from_secs(4));
    /// ```
    pub fn backoff(&self, n: u32) -> Duration {
        if n <= 1 {
            return Duration::ZERO;
        }
        let exp = (n - 2).min(31);
        self.factor
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// The wait before retry `n`, with jitter applied.
    pub(crate) fn wait_before(&self, n: u32) -> Duration {
        self.jittered(self.backoff(n))
    }

    /// The wait a 429 imposes before retry `n`.
    pub(crate) fn wait_after_429(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(d) => d.min(self.max_retry_after),
            None => self.jittered(self.backoff(n).max(self.factor)),
        }
    }

    fn jittered(&self, wait: Duration) -> Duration {
        if self.jitter == 0.0 || wait.is_zero() {
            return wait;
        }
        wait.mul_f64(1.0 - self.jitter * random_unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_only_shortens() {
        let p = RetryPolicy::default().with_jitter(0.5);
        for _ in 0..100 {
            let w = p.wait_before(3);
            assert!(
                w <= Duration::from_secs(2) && w >= Duration::from_secs(1),
                "{w:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_capped_and_has_a_fallback() {
        let p = RetryPolicy::default().with_max_retry_after(Duration::from_secs(30));
        assert_eq!(
            p.wait_after_429(1, Some(Duration::from_secs(90))),
            Duration::from_secs(30)
        );
        assert_eq!(
            p.wait_after_429(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(p.wait_after_429(1, None), Duration::from_secs(1));
        assert_eq!(p.wait_after_429(4, None), Duration::from_secs(4));
    }

    #[test]
    fn huge_retry_numbers_saturate() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1000), Duration::from_secs(16));
    }
}
