//! `fastchat health`: the standard gRPC health (`grpc.health.v1`) of both
//! services, checked at the same time.
//!
//! Each is asked about the gRPC service the CLI calls on it
//! (`fastchat.v1.SendMessageService`, `fastchat.v1.AllMessagesService`), not
//! about the server as a whole (`""`): a server of the other kind is healthy
//! too, but does not know that name, so a swapped address shows up here
//! instead of as `SERVING`.

use std::{io::Write, time::Duration};

use tonic::{Code, Status};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::Context;
use crate::{
    addr::{ServiceAddr, Target},
    connect::{self, Tls, Use},
    error::{CliError, ErrorKind, Unreachable, code_name},
    output::{HealthLine, Printer},
};

/// `status` when no answer could be had.
pub const UNREACHABLE: &str = "unreachable";
/// `status` when the server at the address does not serve the service.
pub const MISSING: &str = "missing";

/// What asking one service for its health found.
#[derive(Debug)]
pub enum Health {
    /// The health service answered for the service.
    Answered(ServingStatus),
    /// A server answered, but the service is not there: its health service
    /// does not know the name (`NOT_FOUND`, `SERVICE_UNKNOWN`), or it has
    /// none (`UNIMPLEMENTED`). The gRPC name of that answer.
    Missing(&'static str),
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
            Self::Missing(answer) => (
                MISSING,
                Some(format!(
                    "no {} here ({answer}); {}",
                    target.grpc_service(),
                    target.addr_hint(addr)
                )),
            ),
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

/// Asks `target` at `addr` for the health of the service the CLI calls there
/// (without a token: health needs none).
pub async fn check(target: Target, addr: &ServiceAddr, timeout: Duration, tls: &Tls) -> Health {
    let channel = match connect::connect(target, addr, timeout, Use::Unary, tls).await {
        Ok(channel) => channel,
        Err(e) => return Health::Unreachable(e),
    };
    let request = HealthCheckRequest {
        service: target.grpc_service().to_owned(),
    };
    match HealthClient::new(channel).check(request).await {
        Ok(response) => match response.into_inner().status() {
            unknown @ ServingStatus::ServiceUnknown => Health::Missing(unknown.as_str_name()),
            status => Health::Answered(status),
        },
        Err(status) if matches!(status.code(), Code::NotFound | Code::Unimplemented) => {
            Health::Missing(code_name(status.code()))
        }
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
        check(Target::Send, &ctx.send_addr, ctx.timeout, &ctx.tls),
        check(Target::All, &ctx.all_addr, ctx.timeout, &ctx.tls),
    );
    let checked = [
        (Target::Send, &ctx.send_addr, send),
        (Target::All, &ctx.all_addr, all),
    ];
    for (target, addr, health) in &checked {
        out.health(&health.line(*target, addr))?;
    }
    let unhealthy: Vec<String> = checked
        .iter()
        .filter(|(_, _, health)| !health.is_serving())
        .map(|(target, addr, health)| match health {
            Health::Missing(_) => format!("{target} (missing at {addr})"),
            _ => target.name().to_owned(),
        })
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
    fn lines_say_why_a_service_is_not_serving() {
        let addr = ServiceAddr::parse("127.0.0.1:1").expect("valid");
        let cause = std::io::Error::other("tcp connect error");
        let health = Health::Unreachable(Unreachable::new(Target::All, &addr, &cause));
        assert!(!health.is_serving());
        let line = health.line(Target::All, &addr);
        assert_eq!(line.status, UNREACHABLE);
        assert_eq!(line.error.as_deref(), Some("tcp connect error"));

        let missing = Health::Missing("NOT_FOUND");
        assert!(!missing.is_serving());
        let wrong = ServiceAddr::parse("127.0.0.1:50051").expect("valid");
        let line = missing.line(Target::All, &wrong);
        assert_eq!(line.status, MISSING);
        assert_eq!(
            line.error.as_deref(),
            Some(
                "no fastchat.v1.AllMessagesService here (NOT_FOUND); port 50051 is \
                 send-service's default; all-messages-service listens on \
                 http://127.0.0.1:50052 by default; set --all-addr or FASTCHAT_ALL_ADDR"
            )
        );

        let serving = Health::Answered(ServingStatus::Serving);
        assert!(serving.is_serving());
        assert_eq!(serving.line(Target::Send, &addr).status, "SERVING");
        assert!(!Health::Answered(ServingStatus::NotServing).is_serving());
    }
}
