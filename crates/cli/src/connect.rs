//! gRPC channels to the services: connecting is bounded, and a failure
//! names the service and address it was for.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::{
    addr::{ServiceAddr, Target},
    error::Unreachable,
};

/// How a channel will be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Request/answer calls, each bounded by the timeout.
    Unary,
    /// A long-lived stream: no request deadline, but HTTP/2 keep-alive pings
    /// so a silently dead connection is noticed and `tail` can reconnect.
    Stream,
}

/// Connects to `target` at `addr`, failing after `timeout`.
///
/// # Errors
/// [`Unreachable`] when no connection could be made in time.
pub async fn connect(
    target: Target,
    addr: &ServiceAddr,
    timeout: Duration,
    usage: Use,
) -> Result<Channel, Unreachable> {
    let endpoint = Endpoint::from_shared(addr.as_str().to_owned())
        .map_err(|e| Unreachable::new(target, addr, &e))?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    let endpoint = match usage {
        Use::Unary => endpoint.timeout(timeout),
        Use::Stream => endpoint
            .http2_keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true),
    };
    // `connect_timeout` bounds the TCP connect only; the outer timeout also
    // covers the HTTP/2 handshake with a peer that accepts but never answers.
    match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(Unreachable::new(target, addr, &e)),
        Err(elapsed) => Err(Unreachable::new(target, addr, &elapsed)),
    }
}
