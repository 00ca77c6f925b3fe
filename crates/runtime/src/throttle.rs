//! Rate-limited logging: a flood of identical errors (a client hammering a
//! limit, the process out of file descriptors) is logged once per interval
//! with a count of what was left out, instead of once per occurrence.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// Lets one log line through per `interval`; counts the others.
#[derive(Debug)]
pub struct Throttled {
    interval: Duration,
    /// When a line last went out, and how many were held back since. A std
    /// mutex: held for two assignments, never across an await.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttled {
    /// One line per `interval`.
    #[must_use]
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` if a line may be logged now, `n` being how many were held
    /// back since the last one; `None` to stay quiet.
    pub fn check(&self) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.interval => {
                state.1 += 1;
                None
            }
            _ => {
                let suppressed = state.1;
                *state = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_rest() {
        let throttled = Throttled::new(Duration::from_millis(200));
        assert_eq!(throttled.check(), Some(0));
        for _ in 0..1000 {
            assert_eq!(throttled.check(), None);
        }
        std::thread::sleep(Duration::from_millis(220));
        assert_eq!(throttled.check(), Some(1000));
        assert_eq!(throttled.check(), None);
    }
}
