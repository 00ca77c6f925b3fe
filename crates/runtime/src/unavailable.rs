//! "Unavailable": the one error both services answer when the broker cannot
//! be used right now, with the broker's error kept as its source.

use std::fmt;

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

    /// Unavailable because of `error` (a transient broker error).
    #[must_use]
    pub fn broker(error: broker_client::Error) -> Self {
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
