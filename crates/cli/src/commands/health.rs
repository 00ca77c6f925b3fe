//! `fastchat health`: the standard gRPC health (`grpc.health.v1`, service
//! `""`) of both services, checked at the same time.

use std::{io::Write, time::Duration};

use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::Context;
use crate::{
    addr::{ServiceAddr, Target},
    connect::{self, Use},
    error::{CliError, ErrorKind},
    output::{HealthLine, Printer},
};

/// `status` when no answer could be had.
pub const UNREACHABLE: &str = "unreachable";
/// `status` of a healthy service.
pub const SERVING: &str = "SERVING";

/// Asks one service for its overall health.
pub async fn check(target: Target, addr: &ServiceAddr, timeout: Duration) -> HealthLine {
    let line = |status: &str, error: Option<String>| HealthLine {
        service: target.name(),
        addr: addr.to_string(),
        status: status.to_owned(),
        error,
    };
    let channel = match connect::connect(target, addr, timeout, Use::Unary).await {
        Ok(channel) => channel,
        Err(e) => {
            // The error starts with "cannot reach <service> at <addr>: ",
            // which the line already says.
            let text = e.to_string();
            let prefix = format!("cannot reach {target} at {addr}: ");
            let reason = text.strip_prefix(&prefix).unwrap_or(&text).to_owned();
            return line(UNREACHABLE, Some(reason));
        }
    };
    let request = HealthCheckRequest {
        service: String::new(),
    };
    match HealthClient::new(channel).check(request).await {
        Ok(response) => line(response.into_inner().status().as_str_name(), None),
        Err(status) => line(
            UNREACHABLE,
            Some(format!(
                "health check failed ({}): {}",
                crate::error::code_name(status.code()),
                status.message()
            )),
        ),
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
    out.health(&send)?;
    out.health(&all)?;
    let unhealthy: Vec<&str> = [&send, &all]
        .into_iter()
        .filter(|h| h.status != SERVING)
        .map(|h| h.service)
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
