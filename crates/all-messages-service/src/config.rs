//! all-messages-service configuration (see the README for every key).

use broker_client::{BrokerConfig, StationConfig};
use fastchat_runtime::config::{GrpcConfig, LogConfig, MetricsConfig, ShutdownConfig, Validate};
use serde::{Deserialize, Serialize};

/// Default Prometheus metrics port of all-messages-service.
pub const DEFAULT_METRICS_PORT: u16 = 9092;

/// Default gRPC port of all-messages-service.
pub const DEFAULT_PORT: u16 = 50052;

/// Everything all-messages-service reads from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listener.
    pub grpc: GrpcConfig,
    /// Broker connection.
    pub nats: BrokerConfig,
    /// The `chat` station.
    pub station: StationConfig,
    /// Subscription limits and buffers.
    pub subscriptions: SubscriptionsConfig,
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
                name: Some("all-messages-service".into()),
                inbox_prefix: "_INBOX.all".into(),
                ..BrokerConfig::default()
            },
            station: StationConfig::default(),
            subscriptions: SubscriptionsConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::with_port(DEFAULT_METRICS_PORT),
            shutdown: ShutdownConfig::default(),
        }
    }
}

/// How many subscribers, and how much each may fall behind before it is
/// switched from the live feed to reading the station.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionsConfig {
    /// Open subscriptions allowed per instance; more get RESOURCE_EXHAUSTED.
    pub max: usize,
    /// Messages of the in-process live feed kept for subscribers that are
    /// momentarily behind. One further behind catches up from the station.
    pub live_buffer: usize,
    /// Messages queued per subscriber towards its gRPC stream.
    pub client_buffer: usize,
}

impl Default for SubscriptionsConfig {
    fn default() -> Self {
        Self {
            max: 10_000,
            live_buffer: 4096,
            client_buffer: 128,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), String> {
        self.grpc.validate()?;
        self.nats.validate()?;
        self.station.validate()?;
        let s = &self.subscriptions;
        if s.max == 0 || s.live_buffer == 0 || s.client_buffer == 0 {
            return Err(
                "subscriptions.max, subscriptions.live_buffer and subscriptions.client_buffer \
                 must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

fastchat_runtime::service_config!(Config);

#[cfg(test)]
mod tests {
    use super::*;

    /// The example file in deploy/config sets every key to its default, so
    /// it stays a true reference as keys are added or defaults change.
    #[test]
    fn the_example_file_holds_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/config/all-messages-service.example.toml");
        let example: Config =
            fastchat_runtime::config::load_file(&path).expect("the example loads");
        assert_eq!(example, Config::default());
        // And it names every key: a file without them would pass the
        // comparison above by falling back on the defaults.
        let text = std::fs::read_to_string(&path).expect("read");
        let defaults = figment::value::Value::serialize(Config::default()).expect("serialize");
        let mut missing = Vec::new();
        if let figment::value::Value::Dict(_, sections) = defaults {
            for (section, keys) in sections {
                if let figment::value::Value::Dict(_, keys) = keys {
                    for (key, value) in keys {
                        let named = if matches!(value, figment::value::Value::Dict(..)) {
                            text.contains(&format!("\n[{section}.{key}]"))
                        } else {
                            text.contains(&format!("\n{key} = "))
                                || text.contains(&format!("\n# {key} = "))
                        };
                        if !named {
                            missing.push(format!("{section}.{key}"));
                        }
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "keys missing from the example: {missing:?}"
        );
    }
}
