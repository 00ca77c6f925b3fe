//! FastChat's one retry policy: exponential back-off with random jitter.
//!
//! Every retry loop of the workspace (broker reconnects, station creation,
//! consumer re-creation, send retries, the live feed's start, the CLI's
//! `tail`) waits with this type, so they all behave alike and are tuned in
//! one way.
//!
//! The jitter comes from a real random number generator. An earlier version
//! derived it from the process id; in containers every service runs as
//! PID 1, so every replica computed the same delays and, after a broker
//! restart, all of them reconnected in lockstep.
//!
//! Layers: one module — the policy ([`ExponentialBackoff`]) and one retry
//! loop's position in it ([`Backoff`]), depending only on `rand` and tokio's
//! timer.

#![forbid(unsafe_code)]

use std::time::Duration;

use rand::RngExt as _;

/// Why an [`ExponentialBackoff`] could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidBackoff {
    /// `min` is zero or above `max`.
    #[error("back-off: min ({min:?}) must be above zero and at most max ({max:?})")]
    Range {
        /// The first delay asked for.
        min: Duration,
        /// The ceiling asked for.
        max: Duration,
    },
    /// `factor` is below 1 or not finite.
    #[error("back-off: factor must be a finite number ≥ 1, not {0}")]
    Factor(f64),
    /// `jitter` is outside 0..=1.
    #[error("back-off: jitter must be between 0 and 1, not {0}")]
    Jitter(f64),
}

/// A back-off policy: the `n`-th delay is `min × factor^n`, capped at `max`,
/// then shortened by a random share of up to `jitter` (so `max` is a true
/// ceiling and delays spread over `[(1 − jitter) × d, d]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExponentialBackoff {
    min: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
}

impl ExponentialBackoff {
    /// A policy from its four settings.
    ///
    /// # Errors
    /// [`InvalidBackoff`] if `min` is zero or above `max`, `factor` is below 1,
    /// or `jitter` is outside `0..=1`.
    pub fn new(
        min: Duration,
        max: Duration,
        factor: f64,
        jitter: f64,
    ) -> Result<Self, InvalidBackoff> {
        if min.is_zero() || min > max {
            return Err(InvalidBackoff::Range { min, max });
        }
        if !factor.is_finite() || factor < 1.0 {
            return Err(InvalidBackoff::Factor(factor));
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(InvalidBackoff::Jitter(jitter));
        }
        Ok(Self {
            min,
            max,
            factor,
            jitter,
        })
    }

    /// Doubling from `min` to `max` with up to 25 % jitter: what FastChat
    /// uses unless a loop has a reason to differ. If `max` is below `min`
    /// (a misconfigured ceiling), the ceiling wins.
    #[must_use]
    pub fn doubling(min: Duration, max: Duration) -> Self {
        let max = max.max(Duration::from_millis(1));
        Self {
            min: min.clamp(Duration::from_millis(1), max),
            max,
            factor: 2.0,
            jitter: 0.25,
        }
    }

    /// The first delay, before jitter.
    #[must_use]
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The ceiling of every delay.
    #[must_use]
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay before retry number `attempt` (0 = the first retry), with
    /// jitter from the thread's random number generator.
    #[must_use]
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base(attempt);
        if self.jitter == 0.0 {
            return base;
        }
        let share = rand::rng().random_range(0.0..self.jitter);
        base.mul_f64(1.0 - share)
    }

    /// The delay before retry `attempt` without jitter.
    fn base(&self, attempt: u32) -> Duration {
        // f64 keeps the growth exact enough and saturates instead of
        // overflowing; `max` caps it long before precision matters.
        let exponent = i32::try_from(attempt.min(1024)).unwrap_or(1024);
        let grown = self.min.as_secs_f64() * self.factor.powi(exponent);
        if grown.is_finite() && grown < self.max.as_secs_f64() {
            Duration::from_secs_f64(grown)
        } else {
            self.max
        }
    }

    /// A fresh sequence of delays following this policy.
    #[must_use]
    pub fn stream(&self) -> Backoff {
        Backoff::new(*self)
    }
}

/// One retry loop's position in its policy: each [`Backoff::next_delay`]
/// is longer (up to the ceiling) until [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: ExponentialBackoff,
    attempt: u32,
    next: Duration,
}

impl Backoff {
    fn new(policy: ExponentialBackoff) -> Self {
        Self {
            policy,
            attempt: 0,
            next: policy.delay(0),
        }
    }

    /// The delay to wait now; the following one grows.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.attempt = self.attempt.saturating_add(1);
        self.next = self.policy.delay(self.attempt);
        delay
    }

    /// The delay [`Backoff::next_delay`] will return, e.g. to tell a user
    /// when the next attempt comes.
    #[must_use]
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// How many delays were handed out since the start or the last reset.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Sleeps for the next delay. Cancel by dropping the future (e.g. with
    /// `CancellationToken::run_until_cancelled`).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Starts over from the first delay (after a success).
    pub fn reset(&mut self) {
        *self = Self::new(self.policy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn settings_are_checked() {
        assert!(ExponentialBackoff::new(ms(0), ms(10), 2.0, 0.1).is_err());
        assert!(ExponentialBackoff::new(ms(20), ms(10), 2.0, 0.1).is_err());
        assert!(ExponentialBackoff::new(ms(1), ms(10), 0.5, 0.1).is_err());
        assert!(ExponentialBackoff::new(ms(1), ms(10), f64::NAN, 0.1).is_err());
        assert!(ExponentialBackoff::new(ms(1), ms(10), 2.0, 1.5).is_err());
        assert!(ExponentialBackoff::new(ms(1), ms(10), 2.0, 0.0).is_ok());
    }

    #[test]
    fn without_jitter_delays_grow_by_the_factor_up_to_the_ceiling() {
        let policy = ExponentialBackoff::new(ms(100), ms(5000), 2.0, 0.0).expect("valid");
        let mut backoff = policy.stream();
        let delays: Vec<u128> = (0..9).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(backoff.attempts(), 9);
        backoff.reset();
        assert_eq!(backoff.peek(), ms(100));
        assert_eq!(backoff.attempts(), 0);
        // Far attempts saturate instead of overflowing.
        assert_eq!(policy.delay(u32::MAX), ms(5000));
    }

    #[test]
    fn jitter_stays_within_its_share_below_the_ceiling() {
        let policy = ExponentialBackoff::new(ms(100), ms(1000), 2.0, 0.25).expect("valid");
        for attempt in 0..40 {
            let base = policy.base(attempt);
            for _ in 0..50 {
                let d = policy.delay(attempt);
                assert!(
                    d <= base && d >= base.mul_f64(0.75),
                    "{attempt}: {d:?} vs {base:?}"
                );
                assert!(d <= policy.max());
            }
        }
    }

    #[test]
    fn two_backoffs_with_the_same_settings_differ() {
        // The point of real jitter: replicas started alike do not retry in
        // lockstep. Twenty delays from each; the chance that two
        // independent random sequences agree is nil.
        let policy = ExponentialBackoff::doubling(ms(50), ms(5000));
        let (mut a, mut b) = (policy.stream(), policy.stream());
        let a: Vec<Duration> = (0..20).map(|_| a.next_delay()).collect();
        let b: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert_ne!(a, b);
        // And each still follows the policy.
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let base = policy.base(u32::try_from(i).expect("small"));
            assert!(*x <= base && *y <= base);
        }
    }

    #[test]
    fn doubling_tolerates_a_ceiling_below_the_start() {
        let policy = ExponentialBackoff::doubling(ms(500), ms(100));
        assert_eq!(policy.min(), ms(100));
        assert!(policy.delay(3) <= ms(100));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_takes_the_announced_delay() {
        let policy = ExponentialBackoff::new(ms(100), ms(5000), 2.0, 0.0).expect("valid");
        let mut backoff = policy.stream();
        let start = tokio::time::Instant::now();
        let announced = backoff.peek();
        backoff.wait().await;
        assert_eq!(start.elapsed(), announced);
    }
}
