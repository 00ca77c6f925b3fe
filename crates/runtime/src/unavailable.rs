//! "Unavailable": the one error both services answer when the broker cannot
//! be used right now, with the broker's error kept as its source.

use std::fmt;

use crate::throttle::Throttled;

/// The message store cannot be used right now; the caller should retry.
#[derive(Debug, thiserror::Error)]
pub struct Unavailable {
    /// What happened, when there is no broker error to say it.
    why: &'static str,
    /// The broker's error, if it is the reason.
    #[source]
    source: Option<broker_client::Error>,
}

impl Unavailable {
    /// Unavailable for a reason other than a broker error, e.g. "not
    /// connected to the broker yet".
    #[must_use]
    pub fn because(why: &'static str) -> Self {
        Self { why, source: None }
    }

    /// Unavailable because of `error` (a transient broker error), which is
    /// logged with its whole source chain (at most once per 5 s: during an
    /// outage every request fails the same way).
    #[must_use]
    pub fn broker(error: broker_client::Error) -> Self {
        static LOG: std::sync::LazyLock<Throttled> =
            std::sync::LazyLock::new(|| Throttled::new(std::time::Duration::from_secs(5)));
        if let Some(suppressed) = LOG.check() {
            tracing::warn!(error = %error.report(), suppressed, "the broker cannot be used; answering UNAVAILABLE");
        }
        Self {
            why: "broker error",
            source: Some(error),
        }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "the message store is unavailable ({source})"),
            None => write!(f, "the message store is unavailable ({})", self.why),
        }
    }
}
