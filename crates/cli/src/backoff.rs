//! Reconnect back-off for `tail`: doubling delays with a ceiling, reset once
//! a subscription is open again.

use std::time::Duration;

/// First delay after a lost connection.
pub const INITIAL: Duration = Duration::from_millis(100);
/// Ceiling of the delay, so a returning service is noticed within seconds.
pub const MAX: Duration = Duration::from_secs(5);

/// Doubling delays from `initial` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(INITIAL, MAX)
    }
}

impl Backoff {
    /// Delays `initial`, `2 × initial`, … capped at `max`.
    #[must_use]
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial.min(max),
        }
    }

    /// The delay to wait now; the following one doubles (up to the ceiling).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// The delay [`Backoff::next_delay`] will return, for telling the user.
    #[must_use]
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Waits for the next delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Starts over from the initial delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..9)
            .map(|_| u64::try_from(backoff.next_delay().as_millis()).unwrap_or(u64::MAX))
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.peek(), INITIAL);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_take_the_announced_time() {
        let mut backoff = Backoff::default();
        let start = tokio::time::Instant::now();
        for _ in 0..8 {
            backoff.wait().await;
        }
        // 100 + 200 + 400 + 800 + 1600 + 3200 + 5000 + 5000 ms
        assert_eq!(start.elapsed(), Duration::from_millis(16_300));
        backoff.reset();
        let start = tokio::time::Instant::now();
        backoff.wait().await;
        assert_eq!(start.elapsed(), INITIAL);
    }
}
