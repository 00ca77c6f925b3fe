//! send-service configuration (see the README for every key).

use std::time::Duration;

use broker_client::{BrokerConfig, StationConfig};
use fastchat_auth::AuthConfig;
use fastchat_runtime::config::{
    GrpcConfig, LimitsConfig, LogConfig, MetricsConfig, ShutdownConfig, Validate, WebConfig,
};
use serde::{Deserialize, Serialize};

/// Default Prometheus metrics port of send-service.
pub const DEFAULT_METRICS_PORT: u16 = 9091;

/// Default gRPC port of send-service.
pub const DEFAULT_PORT: u16 = 50051;

/// Everything send-service reads from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listener.
    pub grpc: GrpcConfig,
    /// Broker connection.
    pub nats: BrokerConfig,
    /// The `chat` station.
    pub station: StationConfig,
    /// Message limits and the send deadline.
    pub send: SendConfig,
    /// Authentication and room grants.
    pub auth: AuthConfig,
    /// Per-identity limits.
    pub limits: LimitsConfig,
    /// Browsers: CORS and the web page.
    pub web: WebConfig,
    /// Logging.
    pub log: LogConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc: GrpcConfig::with_port(DEFAULT_PORT),
            nats: BrokerConfig {
                name: Some("send-service".into()),
                inbox_prefix: "_INBOX.send".into(),
                ..BrokerConfig::default()
            },
            station: StationConfig::default(),
            send: SendConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            web: WebConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::with_port(DEFAULT_METRICS_PORT),
            shutdown: ShutdownConfig::default(),
        }
    }
}

/// Limits on what a message may contain, and how long a send may take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SendConfig {
    /// A send that the broker has not acknowledged within this time answers
    /// UNAVAILABLE (retry it with the same `client_message_id`).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest author name, in characters.
    pub max_author_chars: usize,
    /// Longest text, in bytes of UTF-8.
    pub max_text_bytes: usize,
    /// Longest `client_message_id`, in characters.
    pub max_client_message_id_chars: usize,
}

impl Default for SendConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_author_chars: 64,
            max_text_bytes: 4096,
            max_client_message_id_chars: 128,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), String> {
        self.grpc.validate()?;
        self.nats.validate()?;
        self.station.validate()?;
        self.auth.validate()?;
        self.limits.validate()?;
        self.web.validate()?;
        if self.send.timeout.is_zero() {
            return Err("send.timeout must be greater than zero".into());
        }
        if self.send.max_author_chars == 0 || self.send.max_text_bytes == 0 {
            return Err("send.max_author_chars and send.max_text_bytes must be at least 1".into());
        }
        // A message must fit in the station and in a gRPC request with room
        // to spare for the other fields.
        // Saturating: limits near usize::MAX must be refused, not overflow
        // (a panic, or in release a small sum that passes).
        let envelope = self
            .send
            .max_text_bytes
            .saturating_add(self.send.max_author_chars.saturating_mul(4))
            .saturating_add(1024);
        if self.station.max_message_size != 0
            && u64::try_from(envelope).unwrap_or(u64::MAX)
                > u64::from(self.station.max_message_size)
        {
            return Err(format!(
                "send.max_text_bytes ({}) does not fit in station.max_message_size ({})",
                self.send.max_text_bytes, self.station.max_message_size
            ));
        }
        if envelope > self.grpc.max_request_bytes {
            return Err(format!(
                "send.max_text_bytes ({}) does not fit in grpc.max_request_bytes ({})",
                self.send.max_text_bytes, self.grpc.max_request_bytes
            ));
        }
        Ok(())
    }
}

fastchat_runtime::service_config!(Config);

#[cfg(test)]
mod tests {
    use super::*;

    /// Limits whose sum overflowed
    /// (a panic with debug assertions; in release a small sum that let an
    /// unbounded text through) are refused.
    #[test]
    fn huge_limits_are_refused_not_overflowed() {
        let mut config = Config {
            auth: fastchat_auth::AuthConfig {
                mode: fastchat_auth::Mode::None,
                ..fastchat_auth::AuthConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(config.validate(), Ok(()));
        config.send.max_author_chars = usize::MAX / 2;
        assert!(config.validate().is_err());
        config.send.max_author_chars = 64;
        config.send.max_text_bytes = usize::MAX - 100;
        assert!(config.validate().is_err());
    }

    /// The example file in deploy/config sets every key to its default.
    #[test]
    fn the_example_file_holds_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/config/send-service.example.toml");
        fastchat_runtime::config::check_example::<Config>(&path).unwrap_or_else(|e| panic!("{e}"));
    }
}
