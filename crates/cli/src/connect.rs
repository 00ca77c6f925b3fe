//! Service addresses and gRPC channels: `host:port` gets an `http://`
//! scheme, connecting is bounded, and a failure names the service it was for.

use std::{fmt, time::Duration};

use tonic::transport::{Channel, Endpoint};

use crate::error::CliError;

/// Which FastChat service a call goes to; named in every error about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// send-service (`SendMessage`).
    Send,
    /// all-messages-service (`Subscribe`, `ListMessages`).
    All,
}

impl Target {
    /// The service's deployment name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Send => "send-service",
            Self::All => "all-messages-service",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated service URI such as `http://127.0.0.1:50051`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAddr(String);

impl ServiceAddr {
    /// Accepts `http://host:port`, `https://host:port` or plain `host:port`
    /// (which means `http://`).
    ///
    /// # Errors
    /// A message for clap when the address is not a usable URI.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the address is empty".into());
        }
        let uri = if s.contains("://") {
            s.to_owned()
        } else {
            format!("http://{s}")
        };
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(format!("'{s}': only http:// and https:// are supported"));
        }
        let endpoint = Endpoint::from_shared(uri.clone()).map_err(|e| format!("'{s}': {e}"))?;
        if endpoint.uri().host().is_none_or(str::is_empty) {
            return Err(format!("'{s}' names no host"));
        }
        Ok(Self(uri))
    }

    /// The URI as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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
/// [`CliError::unreachable`] when no connection could be made in time.
pub async fn connect(
    target: Target,
    addr: &ServiceAddr,
    timeout: Duration,
    usage: Use,
) -> Result<Channel, CliError> {
    let endpoint = Endpoint::from_shared(addr.as_str().to_owned())
        .map_err(|e| CliError::unreachable(target, addr, &e))?
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
        Ok(Err(e)) => Err(CliError::unreachable(target, addr, &e)),
        Err(elapsed) => Err(CliError::unreachable(target, addr, &elapsed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_a_scheme_and_are_validated() {
        let ok = |s: &str| ServiceAddr::parse(s).map(|a| a.as_str().to_owned());
        assert_eq!(
            ok("127.0.0.1:50051").as_deref(),
            Ok("http://127.0.0.1:50051")
        );
        assert_eq!(ok(" localhost:1 ").as_deref(), Ok("http://localhost:1"));
        assert_eq!(
            ok("http://[::1]:50052").as_deref(),
            Ok("http://[::1]:50052")
        );
        assert_eq!(
            ok("https://chat.example:443").as_deref(),
            Ok("https://chat.example:443")
        );
        assert!(ok("").is_err());
        assert!(ok("ftp://host:1").is_err());
        assert!(ok("host name:1").is_err());
    }
}
