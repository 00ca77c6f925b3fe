//! Layered configuration: defaults → optional TOML file → environment.
//!
//! Environment variables use the prefix `FASTCHAT_` and `__` for nesting:
//! `FASTCHAT_GRPC__LISTEN` sets `grpc.listen`. The conventional `NATS_URL`
//! sets `nats.url` unless `FASTCHAT_NATS__URL` is also given.

use std::{net::SocketAddr, path::Path, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Exit status for an unusable configuration (`EX_USAGE` in sysexits.h).
pub const EX_USAGE: i32 = 64;

/// A configuration that can say what is wrong with it.
pub trait Validate {
    /// Checks the loaded values.
    ///
    /// # Errors
    /// A one-line reason naming the offending key.
    fn validate(&self) -> Result<(), String>;
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or a value has the wrong type.
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    /// The values are individually fine but not usable together.
    #[error("{0}")]
    Invalid(String),
}

/// Loads `T` from its defaults, then `file` (if given; it must exist), then
/// the environment, and validates the result.
///
/// # Errors
/// [`ConfigError`] with a message naming the key or file at fault.
pub fn load<T>(file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default + Validate,
{
    load_from(file, Env::prefixed("FASTCHAT_").split("__"))
}

fn load_from<T>(file: Option<&Path>, env: Env) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default + Validate,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    // Only sections this service has: one environment (a shared ConfigMap,
    // a shell) may carry the other service's keys too. Unknown keys inside
    // a known section are still errors (typos).
    let sections = sections_of(&T::default());
    let env = env.filter(move |key| {
        // Keys arrive already mapped (`grpc.listen`).
        let section = key.as_str().split('.').next().unwrap_or_default();
        sections.iter().any(|s| s.eq_ignore_ascii_case(section))
    });
    let config: T = figment
        .merge(Env::raw().only(&["NATS_URL"]).map(|_| "nats.url".into()))
        .merge(env)
        .extract()
        .map_err(|e| ConfigError::Load(Box::new(e)))?;
    config.validate().map_err(ConfigError::Invalid)?;
    Ok(config)
}

/// Top-level keys of a configuration.
fn sections_of<T: Serialize>(config: &T) -> Vec<String> {
    match figment::value::Value::serialize(config) {
        Ok(figment::value::Value::Dict(_, dict)) => dict.into_keys().collect(),
        _ => Vec::new(),
    }
}

/// The gRPC listener and server limits. No `Default`: each service has its
/// own port ([`GrpcConfig::with_port`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest request message accepted, in bytes; larger ones are refused
    /// before they are decoded.
    pub max_request_bytes: usize,
    /// Concurrent HTTP/2 streams allowed per client connection.
    pub max_concurrent_streams: u32,
    /// Interval of HTTP/2 keep-alive pings to clients (detects dead peers).
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
}

impl GrpcConfig {
    /// Defaults with the service's own port.
    #[must_use]
    pub fn with_port(port: u16) -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], port)),
            max_request_bytes: 64 * 1024,
            max_concurrent_streams: 1024,
            keepalive_interval: Duration::from_secs(30),
        }
    }

    /// Checks the values.
    ///
    /// # Errors
    /// A one-line reason naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_request_bytes < 1024 {
            return Err("grpc.max_request_bytes must be at least 1024".into());
        }
        if self.max_concurrent_streams == 0 {
            return Err("grpc.max_concurrent_streams must be at least 1".into());
        }
        Ok(())
    }
}

/// Log output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// Filter directives when `RUST_LOG` is not set, e.g. `info,async_nats=warn`.
    pub filter: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Prometheus metrics endpoint (`GET /metrics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve metrics at all.
    pub enabled: bool,
    /// Address of the metrics HTTP listener.
    pub listen: SocketAddr,
}

impl MetricsConfig {
    /// Enabled on `0.0.0.0:<port>`.
    #[must_use]
    pub fn with_port(port: u16) -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], port)),
        }
    }
}

/// Graceful shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM/SIGINT: time allowed for in-flight calls to finish
    /// before the process exits anyway. Keep it below Kubernetes'
    /// `terminationGracePeriodSeconds`.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Sample {
        grpc: GrpcConfig,
        nats: broker_client::BrokerConfig,
        log: LogConfig,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                grpc: GrpcConfig::with_port(50051),
                nats: broker_client::BrokerConfig::default(),
                log: LogConfig::default(),
            }
        }
    }

    impl Validate for Sample {
        fn validate(&self) -> Result<(), String> {
            self.grpc.validate()
        }
    }

    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "fastchat.toml",
                "[grpc]\nlisten = \"127.0.0.1:6000\"\n[log]\nformat = \"json\"\n",
            )?;
            jail.set_env("NATS_URL", "nats://conventional:4222");
            let config: Sample = load(Some(Path::new("fastchat.toml"))).expect("load");
            assert_eq!(config.grpc.listen.port(), 6000);
            assert_eq!(config.log.format, LogFormat::Json);
            assert_eq!(config.nats.url, "nats://conventional:4222");

            // Another service's section is ignored, not an error.
            jail.set_env("FASTCHAT_SUBSCRIPTIONS__MAX", "5");
            jail.set_env("FASTCHAT_GRPC__LISTEN", "127.0.0.1:7000");
            jail.set_env("FASTCHAT_NATS__URL", "nats://specific:4222");
            jail.set_env("FASTCHAT_NATS__REQUEST_TIMEOUT", "250ms");
            let config: Sample = load(Some(Path::new("fastchat.toml"))).expect("load");
            assert_eq!(config.grpc.listen.port(), 7000);
            assert_eq!(config.nats.url, "nats://specific:4222");
            assert_eq!(config.nats.request_timeout, Duration::from_millis(250));
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("FASTCHAT_GRPC__LISTEN", "not an address");
            let err = load::<Sample>(None).expect_err("invalid address");
            assert!(
                err.to_string().to_lowercase().contains("grpc.listen"),
                "{err}"
            );
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("FASTCHAT_GRPC__MAX_REQUEST_BYTES", "10");
            let err = load::<Sample>(None).expect_err("too small");
            assert!(err.to_string().contains("grpc.max_request_bytes"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("FASTCHAT_GRPC__LISTN", "127.0.0.1:1");
            let err = load::<Sample>(None).expect_err("typo in a known section");
            assert!(err.to_string().to_lowercase().contains("listn"), "{err}");
            Ok(())
        });
        let err = load::<Sample>(Some(Path::new("/nonexistent/fastchat.toml")))
            .expect_err("missing file");
        assert!(err.to_string().contains("fastchat.toml"), "{err}");
    }
}
