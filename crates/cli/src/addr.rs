//! Which service a call is for and where it listens: [`Target`] and
//! [`ServiceAddr`]. The ground layer: it uses no other module of the crate.

use std::fmt;

use fastchat_proto::v1::{all_messages_service_server, send_message_service_server};
use tonic::transport::Endpoint;

/// Where send-service listens by default (its `grpc.listen` default).
pub const DEFAULT_SEND_ADDR: &str = "http://127.0.0.1:50051";
/// Where all-messages-service listens by default (its `grpc.listen` default).
pub const DEFAULT_ALL_ADDR: &str = "http://127.0.0.1:50052";
/// The environment variable for send-service's address.
pub const SEND_ADDR_ENV: &str = "FASTCHAT_SEND_ADDR";
/// The environment variable for all-messages-service's address.
pub const ALL_ADDR_ENV: &str = "FASTCHAT_ALL_ADDR";

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

    /// The gRPC service the CLI calls on it, which is also the name its
    /// health is reported under (`fastchat.v1.SendMessageService`, …).
    #[must_use]
    pub fn grpc_service(self) -> &'static str {
        match self {
            Self::Send => send_message_service_server::SERVICE_NAME,
            Self::All => all_messages_service_server::SERVICE_NAME,
        }
    }

    /// The address used when none is given.
    #[must_use]
    pub fn default_addr(self) -> &'static str {
        match self {
            Self::Send => DEFAULT_SEND_ADDR,
            Self::All => DEFAULT_ALL_ADDR,
        }
    }

    /// The port of [`Target::default_addr`].
    #[must_use]
    pub fn default_port(self) -> u16 {
        match self {
            Self::Send => 50051,
            Self::All => 50052,
        }
    }

    /// The command-line flag that sets the address.
    #[must_use]
    pub fn flag(self) -> &'static str {
        match self {
            Self::Send => "--send-addr",
            Self::All => "--all-addr",
        }
    }

    /// The environment variable that sets the address.
    #[must_use]
    pub fn env(self) -> &'static str {
        match self {
            Self::Send => SEND_ADDR_ENV,
            Self::All => ALL_ADDR_ENV,
        }
    }

    /// The other FastChat service.
    #[must_use]
    pub fn other(self) -> Self {
        match self {
            Self::Send => Self::All,
            Self::All => Self::Send,
        }
    }

    /// Advice for when `tried` turned out not to be this service: where it
    /// listens by default and how to point the CLI at it, e.g. "send-service
    /// listens on http://127.0.0.1:50051 by default; set --send-addr or
    /// `FASTCHAT_SEND_ADDR`". Says so too when `tried` has the other
    /// service's default port, the usual mix-up.
    #[must_use]
    pub fn addr_hint(self, tried: &ServiceAddr) -> String {
        let other = self.other();
        let mix_up = if tried.port() == Some(other.default_port()) {
            format!("port {} is {other}'s default; ", other.default_port())
        } else {
            String::new()
        };
        format!(
            "{mix_up}{self} listens on {} by default; set {} or {}",
            self.default_addr(),
            self.flag(),
            self.env()
        )
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated service URI such as `http://127.0.0.1:50051`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAddr {
    uri: String,
    port: Option<u16>,
}

impl ServiceAddr {
    /// Accepts `http://host:port`, `https://host:port` (TLS) or plain
    /// `host:port` (which means `http://`, plaintext).
    ///
    /// # Errors
    /// A message for clap when the address is not a usable URI.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the address is empty".into());
        }
        // User input, not an error message: a scheme is optional.
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
        Ok(Self {
            port: endpoint.uri().port_u16(),
            uri,
        })
    }

    /// The URI as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// Whether the address is `https://`: connections to it use TLS.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        self.uri.starts_with("https://")
    }

    /// The port, if the address names one.
    #[must_use]
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
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
        assert!(
            ServiceAddr::parse("https://chat.example:443")
                .expect("valid")
                .is_tls()
        );
        assert!(
            !ServiceAddr::parse("chat.example:443")
                .expect("valid")
                .is_tls()
        );
        assert!(ok("").is_err());
        assert!(ok("ftp://host:1").is_err());
        assert!(ok("host name:1").is_err());
    }

    #[test]
    fn defaults_agree_with_their_ports() {
        for target in [Target::Send, Target::All] {
            let addr = ServiceAddr::parse(target.default_addr()).expect("valid default");
            assert_eq!(addr.port(), Some(target.default_port()), "{target}");
            assert_eq!(target.other().other(), target);
        }
        assert_eq!(
            Target::Send.grpc_service(),
            "fastchat.v1.SendMessageService"
        );
        assert_eq!(Target::All.grpc_service(), "fastchat.v1.AllMessagesService");
    }

    #[test]
    fn the_hint_names_the_default_the_flag_and_the_variable() {
        let somewhere = ServiceAddr::parse("10.0.0.5:7000").expect("valid");
        assert_eq!(
            Target::Send.addr_hint(&somewhere),
            "send-service listens on http://127.0.0.1:50051 by default; \
             set --send-addr or FASTCHAT_SEND_ADDR"
        );
        let swapped = ServiceAddr::parse("localhost:50051").expect("valid");
        assert_eq!(
            Target::All.addr_hint(&swapped),
            "port 50051 is send-service's default; all-messages-service listens on \
             http://127.0.0.1:50052 by default; set --all-addr or FASTCHAT_ALL_ADDR"
        );
    }
}
