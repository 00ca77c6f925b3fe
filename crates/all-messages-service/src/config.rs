//! all-messages-service configuration (see the README for every key).

use broker_client::{BrokerConfig, StationConfig};
use fastchat_auth::AuthConfig;
use fastchat_runtime::config::{
    GrpcConfig, LimitsConfig, LogConfig, MetricsConfig, ShutdownConfig, Validate, WebConfig,
};
use std::time::Duration;

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
    /// Limits on reading history (pages and subscription replays).
    pub history: HistoryConfig,
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
                name: Some("all-messages-service".into()),
                inbox_prefix: "_INBOX.all".into(),
                ..BrokerConfig::default()
            },
            station: StationConfig::default(),
            subscriptions: SubscriptionsConfig::default(),
            history: HistoryConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            web: WebConfig::default(),
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
    /// Open subscriptions allowed on one client connection.
    pub max_per_connection: usize,
    /// Open subscriptions allowed from one client address.
    pub max_per_address: usize,
    /// Messages of its rooms the live feed holds for a subscriber that is
    /// momentarily behind (at most `max_queued_bytes` of them). One further
    /// behind catches up from the station.
    pub live_buffer: usize,
    /// Messages queued per subscriber towards its gRPC stream.
    pub client_buffer: usize,
    /// Bytes of messages queued per subscriber (beyond them it waits, like
    /// a full queue).
    pub max_queued_bytes: usize,
    /// A subscriber whose queue stays full this long (it reads nothing) is
    /// ended with RESOURCE_EXHAUSTED naming this key.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// A live stream that sent nothing this long gets a Heartbeat event
    /// (SSE: a comment), so proxies keep it open and clients can tell a
    /// dead stream from a quiet room.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
}

impl Default for SubscriptionsConfig {
    fn default() -> Self {
        Self {
            max: 10_000,
            max_per_connection: 100,
            max_per_address: 1_000,
            live_buffer: 1024,
            client_buffer: 128,
            max_queued_bytes: 256 * 1024,
            stall_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(15),
        }
    }
}

/// How much history reading may run at once. A history read is a
/// `ListMessages` page or the replay a subscription starts with; each costs
/// broker requests and consumers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// History reads at once per instance; more wait their turn.
    pub max_concurrent: usize,
    /// At once for one client connection; its further pages wait for one
    /// of these first, so a busy connection holds at most this many of the
    /// instance's.
    pub max_concurrent_per_connection: usize,
    /// At once for one client address, likewise. Half the instance's by
    /// default, so that one address (a client opening many connections)
    /// cannot hold every slot; behind a proxy every client shares its
    /// address, so a deployment behind one raises it to `max_concurrent`.
    pub max_concurrent_per_address: usize,
    /// A `ListMessages` waits at most this long for its turn, then gets
    /// RESOURCE_EXHAUSTED naming the cap it waited on (subscription replays
    /// wait as long as it takes, taking turns on the instance's slots).
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// A page stops before this many bytes of messages (below the 4 MiB
    /// every default gRPC client accepts) and says where to continue.
    pub max_page_bytes: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 16,
            max_concurrent_per_connection: 4,
            max_concurrent_per_address: 8,
            queue_timeout: Duration::from_secs(10),
            max_page_bytes: 1024 * 1024,
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
        let s = &self.subscriptions;
        let h = &self.history;
        for (key, value) in [
            ("subscriptions.max", s.max),
            ("subscriptions.max_per_connection", s.max_per_connection),
            ("subscriptions.max_per_address", s.max_per_address),
            ("subscriptions.live_buffer", s.live_buffer),
            ("subscriptions.client_buffer", s.client_buffer),
            ("history.max_concurrent", h.max_concurrent),
            (
                "history.max_concurrent_per_connection",
                h.max_concurrent_per_connection,
            ),
            (
                "history.max_concurrent_per_address",
                h.max_concurrent_per_address,
            ),
        ] {
            if value == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        if s.max_queued_bytes < 64 * 1024 {
            return Err("subscriptions.max_queued_bytes must be at least 65536".into());
        }
        if h.max_page_bytes < 64 * 1024 || h.max_page_bytes > 4 * 1024 * 1024 - 4096 {
            return Err(
                "history.max_page_bytes must be between 65536 and 4190208 (below the 4 MiB a \
                 default gRPC client accepts)"
                    .into(),
            );
        }
        for (key, value) in [
            ("subscriptions.stall_timeout", s.stall_timeout),
            ("subscriptions.heartbeat_interval", s.heartbeat_interval),
            ("history.queue_timeout", h.queue_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{key} must be greater than zero"));
            }
        }
        Ok(())
    }
}

fastchat_runtime::service_config!(Config);

#[cfg(test)]
mod tests {
    use super::*;

    /// The example file in deploy/config sets every key to its default.
    #[test]
    fn the_example_file_holds_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/config/all-messages-service.example.toml");
        fastchat_runtime::config::check_example::<Config>(&path).unwrap_or_else(|e| panic!("{e}"));
    }
}
