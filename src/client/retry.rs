//! When to retransmit and when to fail over: a pure plan, so it is tested without sockets.

use std::time::Duration;

/// How the broker client retransmits. Each broker in the list gets `attempts` tries, the first
/// waiting `timeout` for a reply and each later one `backoff` times longer (at most
/// `max_timeout`); then the client fails over to the next broker. When every broker has had its
/// tries, the call fails as unreachable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Wait for the first try's reply.
    pub timeout: Duration,
    /// Factor by which each further try on the same broker waits longer.
    pub backoff: f64,
    /// The longest wait for one try.
    pub max_timeout: Duration,
    /// Tries per broker before failing over.
    pub attempts: u32,
}

impl Default for RetryPolicy {
    /// 100 ms, 200 ms, 400 ms on each broker: 0.7 s before failing over.
    fn default() -> Self {
        RetryPolicy {
            timeout: Duration::from_millis(100),
            backoff: 2.0,
            max_timeout: Duration::from_secs(2),
            attempts: 3,
        }
    }
}

impl RetryPolicy {
    /// The tries of one call as (broker index, wait) pairs, starting with broker `first` of
    /// `brokers` and going round the list once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use makler::client::RetryPolicy;
    ///
    /// let policy = RetryPolicy { attempts: 2, ..RetryPolicy::default() };
    /// let ms = Duration::from_millis;
    /// let plan: Vec<_> = policy.plan(3, 1).collect();
    /// assert_eq!(plan, [(1, ms(100)), (1, ms(200)), (2, ms(100)), (2, ms(200)), (0, ms(100)), (0, ms(200))]);
    /// ```
    pub fn plan(&self, brokers: usize, first: usize) -> impl Iterator<Item = (usize, Duration)> + use<> {
        let policy = *self;
        (0..brokers).flat_map(move |k| {
            let broker = (first + k) % brokers;
            (0..policy.attempts).map(move |attempt| (broker, policy.wait(attempt)))
        })
    }

    /// The wait of try number `attempt` (0-based) on one broker.
    pub fn wait(&self, attempt: u32) -> Duration {
        let factor = self.backoff.max(1.0).powi(attempt.min(64) as i32);
        self.timeout.mul_f64(factor.min(1e6)).min(self.max_timeout).max(self.timeout.min(self.max_timeout))
    }

    /// The longest a call can take before it fails as unreachable.
    pub fn worst_case(&self, brokers: usize) -> Duration {
        self.plan(brokers, 0).map(|(_, wait)| wait).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_and_are_capped() {
        let policy = RetryPolicy {
            timeout: Duration::from_millis(100),
            backoff: 3.0,
            max_timeout: Duration::from_millis(500),
            attempts: 4,
        };
        let waits: Vec<_> = (0..4).map(|a| policy.wait(a).as_millis()).collect();
        assert_eq!(waits, [100, 300, 500, 500]);
        assert_eq!(policy.worst_case(2), Duration::from_millis(2 * 1400));
        assert_eq!(policy.plan(0, 0).count(), 0);
    }

    #[test]
    fn a_silly_backoff_cannot_shrink_or_overflow_the_wait() {
        let policy = RetryPolicy { backoff: 0.1, ..RetryPolicy::default() };
        assert_eq!(policy.wait(5), policy.timeout);
        let policy = RetryPolicy { backoff: f64::MAX, ..RetryPolicy::default() };
        assert_eq!(policy.wait(1000), policy.max_timeout);
    }
}
