//! How the execute loop retries after conflicts and transient failures.

use std::{num::NonZeroU32, time::Duration};

/// How often, and after how long a wait, [`execute_with`](crate::execute_with)
/// tries a command again after a version conflict or a transient store failure.
///
/// The wait before retry `n` (counting from 1) is drawn uniformly from
/// `0..=min(max_delay, base_delay * 2^(n-1))` ("full jitter"), so competing
/// commands spread out, and no single wait ever exceeds `max_delay`.
///
/// ```
/// use std::{num::NonZeroU32, time::Duration};
/// use eventcore::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .with_max_attempts(NonZeroU32::new(5).unwrap())
///     .with_max_delay(Duration::from_millis(20));
/// assert!(policy.delay(10, u64::MAX) <= Duration::from_millis(20));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: NonZeroU32,
    base_delay: Duration,
    max_delay: Duration,
    queue_in_process: bool,
}

impl Default for RetryPolicy {
    /// 16 attempts, waits starting at 1 ms and capped at 50 ms.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: NonZeroU32::new(16).unwrap_or(NonZeroU32::MIN),
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(50),
            queue_in_process: true,
        }
    }
}

impl RetryPolicy {
    /// One attempt: never retry.
    pub fn no_retry() -> Self {
        RetryPolicy {
            max_attempts: NonZeroU32::MIN,
            ..RetryPolicy::default()
        }
    }

    /// Sets how many attempts are made in all (the first one included).
    pub fn with_max_attempts(mut self, max_attempts: NonZeroU32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets the ceiling of the first wait; each retry doubles it up to the cap.
    pub fn with_base_delay(mut self, base_delay: Duration) -> Self {
        self.base_delay = base_delay;
        self
    }

    /// Sets the cap on any single wait.
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// Whether commands that share a stream and an executor (or its clones)
    /// wait for each other instead of racing (on by default). Each attempt
    /// holds an async lock per stream (striped, taken in one global order)
    /// of the executor's [`CommandQueue`](crate::CommandQueue) from its read
    /// to the end of its append, so contention within one executor queues
    /// instead of conflicting; other executors and other processes are kept
    /// out by the store's version check. Turn it off to let every attempt
    /// race, for example to test a store under real conflicts.
    pub fn with_queue_in_process(mut self, queue: bool) -> Self {
        self.queue_in_process = queue;
        self
    }

    /// Whether same-process commands on shared streams queue; see
    /// [`with_queue_in_process`](Self::with_queue_in_process).
    pub fn queues_in_process(&self) -> bool {
        self.queue_in_process
    }

    /// How many attempts are made in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts.get()
    }

    /// The largest wait before retry `retry` (1 for the first retry):
    /// `min(max_delay, base_delay * 2^(retry-1))`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(63);
        let factor = 1u32.checked_shl(doublings.min(31)).unwrap_or(u32::MAX);
        let grown = if doublings > 31 {
            self.max_delay
        } else {
            self.base_delay.saturating_mul(factor)
        };
        grown.min(self.max_delay)
    }

    /// The wait before retry `retry`, given a uniformly random `sample`:
    /// `ceiling(retry) * sample / u64::MAX`. `execute` draws the sample from
    /// a thread-local generator; tests can pass their own.
    pub fn delay(&self, retry: u32, sample: u64) -> Duration {
        let ceiling = self.ceiling(retry).as_nanos();
        let nanos = ceiling * u128::from(sample) / u128::from(u64::MAX);
        // nanos <= ceiling <= max_delay, which came from a Duration.
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn no_wait_exceeds_the_cap(
            base_ms in 0u64..10_000,
            cap_ms in 0u64..10_000,
            retry in any::<u32>(),
            sample in any::<u64>(),
        ) {
            let policy = RetryPolicy::default()
                .with_base_delay(Duration::from_millis(base_ms))
                .with_max_delay(Duration::from_millis(cap_ms));
            let d = policy.delay(retry, sample);
            prop_assert!(d <= Duration::from_millis(cap_ms));
            prop_assert!(d <= policy.ceiling(retry));
        }
    }

    #[test]
    fn ceiling_doubles_until_the_cap() {
        let policy = RetryPolicy::default()
            .with_base_delay(Duration::from_millis(1))
            .with_max_delay(Duration::from_millis(10));
        let ceilings: Vec<_> = (1..=6).map(|r| policy.ceiling(r).as_millis()).collect();
        assert_eq!(ceilings, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_millis(10));
    }

    #[test]
    fn jitter_spans_zero_to_the_ceiling() {
        let policy = RetryPolicy::default()
            .with_base_delay(Duration::from_millis(4))
            .with_max_delay(Duration::from_millis(100));
        assert_eq!(policy.delay(3, 0), Duration::ZERO);
        assert_eq!(policy.delay(3, u64::MAX), Duration::from_millis(16));
        let half = policy.delay(3, u64::MAX / 2);
        assert!(half > Duration::from_millis(7) && half < Duration::from_millis(9));
    }
}
