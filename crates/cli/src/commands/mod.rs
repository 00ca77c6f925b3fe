//! One module per subcommand; each takes its parsed arguments, the shared
//! [`Context`] and a [`Printer`](crate::output::Printer), and returns a
//! [`CliError`](crate::error::CliError) for `main` to report.

pub mod health;
pub mod history;
pub mod send;
pub mod tail;

use std::time::Duration;

use crate::{addr::ServiceAddr, output::Format};

/// What every command needs besides its own arguments.
#[derive(Debug, Clone)]
pub struct Context {
    /// send-service address.
    pub send_addr: ServiceAddr,
    /// all-messages-service address.
    pub all_addr: ServiceAddr,
    /// Bound on connecting and on each request/answer call.
    pub timeout: Duration,
    /// Text or JSON lines.
    pub format: Format,
}
