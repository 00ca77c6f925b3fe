//! `fastchat health`: the standard gRPC health (`grpc.health.v1`, service
//! `""`) of both services, checked at the same time.

use std::{io::Write, time::Duration};

use tonic::Status;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::Context;
use crate::{
    addr::{ServiceAddr, Target},
    connect::{self, Use},
    error::{CliError, ErrorKind, Unreachable, code_name},
    output::{HealthLine, Printer},
};

/// `status` when no answer could be had.
pub const UNREACHABLE: &str = "unreachable";

/// What asking one service for its health found.
#[derive(Debug)]
pub enum Health {
    /// The health service answered.
    Answered(ServingStatus),
    /// No connection could be made.
    Unreachable(Unreachable),
    /// Connected, but the health call failed.
    Failed(Status),
}

impl Health {
    /// Whether the service is `SERVING`.
    #[must_use]
    pub fn is_serving(&self) -> bool {
        matches!(self, Self::Answered(ServingStatus::Serving))
    }

    /// The line `fastchat health` prints for `target` at `addr`.
    #[must_use]
    pub fn line(&self, target: Target, addr: &ServiceAddr) -> HealthLine {
        let (status, error) = match self {
            Self::Answered(status) => (status.as_str_name(), None),
            // The line names the service and address already.
            Self::Unreachable(e) => (UNREACHABLE, Some(e.reason().to_owned())),
            Self::Failed(status) => (
                UNREACHABLE,
                Some(format!(
                    "health check failed ({}): {}",
                    code_name(status.code()),
                    status.message()
                )),
            ),
        };
        HealthLine {
            service: target.name(),
            addr: addr.to_string(),
            status: status.to_owned(),
            error,
        }
    }
}

/// Asks `target` at `addr` for its overall health.
pub async fn check(target: Target, addr: &ServiceAddr, timeout: Duration) -> Health {
    let channel = match connect::connect(target, addr, timeout, Use::Unary).await {
        Ok(channel) => channel,
        Err(e) => return Health::Unreachable(e),
    };
    let request = HealthCheckRequest {
        service: String::new(),
    };
    match HealthClient::new(channel).check(request).await {
        Ok(response) => Health::Answered(response.into_inner().status()),
        Err(status) => Health::Failed(status),
    }
}

/// Prints both services' health.
///
/// # Errors
/// [`ErrorKind::Unavailable`] (exit 69) unless both are `SERVING`; writing
/// the output failed.
pub async fn run<W: Write>(ctx: &Context, out: &mut Printer<W>) -> Result<(), CliError> {
    let (send, all) = tokio::join!(
        check(Target::Send, &ctx.send_addr, ctx.timeout),
        check(Target::All, &ctx.all_addr, ctx.timeout),
    );
    let checked = [
        (Target::Send, &ctx.send_addr, send),
        (Target::All, &ctx.all_addr, all),
    ];
    for (target, addr, health) in &checked {
        out.health(&health.line(*target, addr))?;
    }
    let unhealthy: Vec<&str> = checked
        .iter()
        .filter(|(_, _, health)| !health.is_serving())
        .map(|(target, _, _)| target.name())
        .collect();
    if unhealthy.is_empty() {
        Ok(())
    } else {
        Err(CliError::new(
            ErrorKind::Unavailable,
            format!("not serving: {}", unhealthy.join(", ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_service_shows_only_the_reason() {
        let addr = ServiceAddr::parse("127.0.0.1:1").expect("valid");
        let cause = std::io::Error::other("tcp connect error");
        let health = Health::Unreachable(Unreachable::new(Target::All, &addr, &cause));
        assert!(!health.is_serving());
        let line = health.line(Target::All, &addr);
        assert_eq!(line.status, UNREACHABLE);
        assert_eq!(line.error.as_deref(), Some("tcp connect error"));

        let serving = Health::Answered(ServingStatus::Serving);
        assert!(serving.is_serving());
        assert_eq!(serving.line(Target::Send, &addr).status, "SERVING");
        assert!(!Health::Answered(ServingStatus::NotServing).is_serving());
    }
}
