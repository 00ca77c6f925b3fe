//! Per-identity rate limits: a token bucket per caller identity (for
//! callers without a token, per address), per instance, with governor.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
};

use crate::gate::IdentityKey;

/// A token bucket per identity. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PerIdentity {
    limiter: Arc<DefaultKeyedRateLimiter<IdentityKey>>,
    clock: DefaultClock,
}

impl PerIdentity {
    /// `per_second` calls per second sustained, `burst` at once (both at
    /// least 1: validated with the configuration).
    #[must_use]
    pub fn new(per_second: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            )),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one call for `key`, or says how long until one is allowed.
    ///
    /// # Errors
    /// The wait before the next call of `key` can succeed.
    pub fn check(&self, key: &IdentityKey) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets identities whose buckets are full again (call now and then:
    /// otherwise every identity ever seen keeps an entry).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_identity() {
        let limits = PerIdentity::new(10, 3);
        let ann = IdentityKey::User("ann".into());
        let bob = IdentityKey::User("bob".into());
        for _ in 0..3 {
            assert!(limits.check(&ann).is_ok());
        }
        let wait = limits.check(&ann).expect_err("burst used up");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(limits.check(&bob).is_ok(), "others have their own bucket");
        std::thread::sleep(Duration::from_millis(120));
        assert!(limits.check(&ann).is_ok(), "refilled at 10/s");
        limits.forget_idle();
    }
}
