//! Layered configuration: defaults → optional TOML file → environment.
//!
//! Environment variables use the prefix `FASTCHAT_` and `__` for nesting:
//! `FASTCHAT_GRPC__LISTEN` sets `grpc.listen`. The conventional `NATS_URL`
//! sets `nats.url` unless `FASTCHAT_NATS__URL` is also given.
//!
//! A service's configuration is one struct ([`ServiceConfig`]) holding the
//! sections every service has (this module's types and the broker's) next to
//! its own; the runtime reads everything it needs through that trait.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use broker_client::{BrokerConfig, StationConfig};
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Exit status for an unusable configuration (`EX_USAGE` in sysexits.h).
pub const EX_USAGE: u8 = 64;

/// Prefix of every configuration variable.
pub const ENV_PREFIX: &str = "FASTCHAT_";

/// Top-level sections of every FastChat service's configuration. A variable
/// naming one of these that the running service lacks belongs to another
/// service (one environment may serve both) and is ignored quietly; any
/// other unknown section is reported as a warning (most likely a typo).
pub const KNOWN_SECTIONS: &[&str] = &[
    "grpc",
    "nats",
    "station",
    "send",
    "subscriptions",
    "history",
    "auth",
    "limits",
    "log",
    "metrics",
    "shutdown",
];

/// `FASTCHAT_*` variables that are not configuration keys: the config file
/// path, and what the `fastchat` CLI and `make run` read.
const NOT_KEYS: &[&str] = &[
    "CONFIG",
    "SEND_ADDR",
    "ALL_ADDR",
    "TOKEN",
    "LOCAL_NATS_PORT",
];

/// A configuration that can say what is wrong with it.
pub trait Validate {
    /// Checks the loaded values.
    ///
    /// # Errors
    /// A one-line reason naming the offending key.
    fn validate(&self) -> Result<(), String>;
}

/// A service's whole configuration, as the runtime sees it: the sections
/// every service has. Implement it with [`service_config!`](crate::service_config).
pub trait ServiceConfig:
    Serialize + DeserializeOwned + Default + Validate + Clone + Send + Sync + 'static
{
    /// gRPC listener settings.
    fn grpc(&self) -> &GrpcConfig;
    /// Broker connection.
    fn nats(&self) -> &BrokerConfig;
    /// The station the service uses.
    fn station(&self) -> &StationConfig;
    /// Log settings.
    fn log(&self) -> &LogConfig;
    /// Metrics endpoint.
    fn metrics(&self) -> &MetricsConfig;
    /// Graceful shutdown.
    fn shutdown(&self) -> &ShutdownConfig;
    /// Authentication and room grants.
    fn auth(&self) -> &fastchat_auth::AuthConfig;
    /// Per-identity limits.
    fn limits(&self) -> &LimitsConfig;
    /// Browsers: cross-origin access and the web page.
    fn web(&self) -> &WebConfig;
}

/// Implements [`ServiceConfig`] for a struct with the fields `grpc`, `nats`,
/// `station`, `auth`, `limits`, `web`, `log`, `metrics` and `shutdown` (the
/// sections every service has, named as in the configuration).
#[macro_export]
macro_rules! service_config {
    ($config:ty) => {
        impl $crate::config::ServiceConfig for $config {
            fn grpc(&self) -> &$crate::config::GrpcConfig {
                &self.grpc
            }
            fn nats(&self) -> &::broker_client::BrokerConfig {
                &self.nats
            }
            fn station(&self) -> &::broker_client::StationConfig {
                &self.station
            }
            fn log(&self) -> &$crate::config::LogConfig {
                &self.log
            }
            fn metrics(&self) -> &$crate::config::MetricsConfig {
                &self.metrics
            }
            fn shutdown(&self) -> &$crate::config::ShutdownConfig {
                &self.shutdown
            }
            fn auth(&self) -> &::fastchat_auth::AuthConfig {
                &self.auth
            }
            fn limits(&self) -> &$crate::config::LimitsConfig {
                &self.limits
            }
            fn web(&self) -> &$crate::config::WebConfig {
                &self.web
            }
        }
    };
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or a value has the wrong type.
    #[error("{}", describe(.0))]
    Load(Box<figment::Error>),
    /// The values are individually fine but not usable together.
    #[error("{0}")]
    Invalid(String),
}

/// A loaded configuration and what was noticed on the way.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The configuration, validated.
    pub config: T,
    /// Things to tell the operator once logging runs (e.g. a variable that
    /// names no known section: most likely a typo).
    pub warnings: Vec<String>,
}

/// Loads `T` from its defaults, then `file` (if given; it must exist), then
/// the environment, and validates the result.
///
/// # Errors
/// [`ConfigError`] with a message naming the variable or file and the key
/// at fault.
pub fn load<T>(file: Option<&Path>) -> Result<Loaded<T>, ConfigError>
where
    T: Serialize + DeserializeOwned + Default + Validate,
{
    load_from(file, Env::prefixed(ENV_PREFIX).split("__"), true)
}

/// Like [`load`], without the checks of [`Validate`]: for the `healthcheck`
/// subcommand, which needs only the gRPC address (and must work in a
/// container whatever else its environment says).
///
/// # Errors
/// [`ConfigError::Load`] for a value that does not parse.
pub fn load_unchecked<T>(file: Option<&Path>) -> Result<Loaded<T>, ConfigError>
where
    T: Serialize + DeserializeOwned + Default + Validate,
{
    load_from(file, Env::prefixed(ENV_PREFIX).split("__"), false)
}

/// Loads `T` from its defaults and `file` only (no environment, no
/// [`Validate`] checks: the defaults alone need not be a usable
/// configuration, e.g. they configure no token key), to check that an
/// example file says what the defaults are.
///
/// # Errors
/// [`ConfigError::Load`] for a value that does not parse.
pub fn load_file<T>(file: &Path) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    Figment::from(Serialized::defaults(T::default()))
        .merge(Toml::file_exact(file))
        .extract()
        .map_err(|e| ConfigError::Load(Box::new(e)))
}

/// Checks that the example configuration `file` sets every key of `T` to
/// its default and names every key (set or commented out), so an example
/// file stays a true reference as keys are added or defaults change.
///
/// # Errors
/// What differs: a value that is not the default, or the keys missing.
pub fn check_example<T>(file: &Path) -> Result<(), String>
where
    T: Serialize + DeserializeOwned + Default + Validate + PartialEq + std::fmt::Debug,
{
    let example: T = load_file(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if example != T::default() {
        return Err(format!(
            "{} differs from the defaults:\n{example:#?}\nvs\n{:#?}",
            file.display(),
            T::default()
        ));
    }
    // Without every key named, the comparison above would pass by falling
    // back on the defaults.
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let mut missing = Vec::new();
    if let Ok(figment::value::Value::Dict(_, sections)) =
        figment::value::Value::serialize(T::default())
    {
        for (section, keys) in sections {
            let figment::value::Value::Dict(_, keys) = keys else {
                continue;
            };
            for (key, value) in keys {
                let named = if matches!(value, figment::value::Value::Dict(..)) {
                    text.contains(&format!("\n[{section}.{key}]"))
                } else {
                    text.contains(&format!("\n{key} = ")) || text.contains(&format!("\n# {key} = "))
                };
                if !named {
                    missing.push(format!("{section}.{key}"));
                }
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("keys missing from {}: {missing:?}", file.display()))
    }
}

/// Like [`load`], from TOML text and `(variable, value)` pairs read as the
/// environment is (`FASTCHAT_` prefix, `__` nesting, values parsed as
/// figment parses variables, sections the service lacks ignored): the same
/// layers without a file or the process environment, for the fuzz targets.
///
/// # Errors
/// As [`load`].
pub fn load_str<T>(toml: &str, env: &[(&str, &str)]) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default + Validate,
{
    let sections = sections_of(&T::default());
    let mut figment = Figment::from(Serialized::defaults(T::default())).merge(Toml::string(toml));
    let value = |v: &str| -> figment::value::Value { v.parse().unwrap_or_else(|e| match e {}) };
    for (name, v) in env {
        if name.trim().eq_ignore_ascii_case("NATS_URL") {
            figment = figment.merge(Serialized::global("nats.url", value(v)));
        }
    }
    for (name, v) in env {
        // As `Env::prefixed(ENV_PREFIX).split("__")` maps a variable.
        let name = name.trim();
        let Some(prefix) = name.get(..ENV_PREFIX.len()) else {
            continue;
        };
        if !prefix.eq_ignore_ascii_case(ENV_PREFIX) {
            continue;
        }
        let key = name[ENV_PREFIX.len()..].replace("__", ".");
        let key = key.trim().to_ascii_lowercase();
        let section = key.split('.').next().unwrap_or_default();
        if key.split('.').any(str::is_empty)
            || !sections.iter().any(|s| s.eq_ignore_ascii_case(section))
        {
            continue;
        }
        figment = figment.merge(Serialized::global(&key, value(v)));
    }
    let config: T = figment
        .extract()
        .map_err(|e| ConfigError::Load(Box::new(e)))?;
    config.validate().map_err(ConfigError::Invalid)?;
    Ok(config)
}

fn load_from<T>(file: Option<&Path>, env: Env, check: bool) -> Result<Loaded<T>, ConfigError>
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
    let warnings = unknown_sections(&env, &sections);
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
    if check {
        config.validate().map_err(ConfigError::Invalid)?;
    }
    Ok(Loaded { config, warnings })
}

/// Top-level keys of a configuration.
fn sections_of<T: Serialize>(config: &T) -> Vec<String> {
    match figment::value::Value::serialize(config) {
        Ok(figment::value::Value::Dict(_, dict)) => dict.into_keys().collect(),
        _ => Vec::new(),
    }
}

/// Warnings for `FASTCHAT_*` variables whose section no FastChat service has.
fn unknown_sections(env: &Env, own: &[String]) -> Vec<String> {
    env.iter()
        .filter_map(|(key, _)| {
            let key = key.as_str();
            let section = key.split('.').next().unwrap_or_default();
            let known = own.iter().any(|s| s.eq_ignore_ascii_case(section))
                || KNOWN_SECTIONS
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(section))
                || (!key.contains('.') && NOT_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)));
            (!known).then(|| {
                format!(
                    "{}: no FastChat service has a section `{section}` (known: {}); ignored",
                    env_var(true, &key.split('.').collect::<Vec<_>>()),
                    KNOWN_SECTIONS.join(", ")
                )
            })
        })
        .collect()
}

/// The variable that sets `path` (`FASTCHAT_GRPC__LISTEN` for grpc.listen),
/// or the conventional one without prefix.
fn env_var<K: AsRef<str>>(prefixed: bool, path: &[K]) -> String {
    let path: Vec<String> = path
        .iter()
        .map(|k| k.as_ref().to_ascii_uppercase())
        .collect();
    if prefixed {
        format!("{ENV_PREFIX}{}", path.join("__"))
    } else if path == ["NATS", "URL"] {
        "NATS_URL".to_owned()
    } else {
        path.join("_")
    }
}

/// One line per figment error, naming where the value came from (the
/// variable as the user typed it, the file) and the key as in the README,
/// without figment's profile prefix.
fn describe(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let path = &e.path;
            let key = path.join(".");
            let source = e.metadata.as_ref().map(|m| match &m.source {
                Some(figment::Source::File(file)) => format!("{}", file.display()),
                _ if m.name.contains("environment") => env_var(m.name.contains(ENV_PREFIX), path),
                _ => m.name.to_string(),
            });
            match (source, key.is_empty()) {
                (Some(source), false) => format!("{source} ({key}): {}", e.kind),
                (Some(source), true) => format!("{source}: {}", e.kind),
                (None, false) => format!("{key}: {}", e.kind),
                (None, true) => e.kind.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The gRPC listener and server limits. No `Default`: each service has its
/// own port ([`GrpcConfig::with_port`]). What each limit protects, and the
/// status a client gets when it hits one, is in the README (Operations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest request message accepted, in bytes, for every service on the
    /// port; larger ones are refused from their frame header, before they
    /// are read.
    pub max_request_bytes: usize,
    /// A request whose body has not fully arrived this long after it began
    /// is refused (a client cannot hold buffers by sending slowly).
    #[serde(with = "humantime_serde")]
    pub request_body_timeout: Duration,
    /// A new connection must send its first bytes (the HTTP/2 preface)
    /// within this, or it is closed.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Open connections allowed per instance; more are closed on accept.
    pub max_connections: usize,
    /// Open connections allowed from one client address.
    pub max_connections_per_address: usize,
    /// Concurrent HTTP/2 streams allowed per client connection.
    pub max_concurrent_streams: u32,
    /// A connection is asked to go away (GOAWAY) after this long, so load
    /// spreads over new replicas and no connection lives for ever.
    #[serde(with = "humantime_serde")]
    pub max_connection_age: Duration,
    /// After that, open calls get this long to finish before the connection
    /// closes (subscribers resume from their cursor on a new one).
    #[serde(with = "humantime_serde")]
    pub max_connection_age_grace: Duration,
    /// Interval of HTTP/2 keep-alive pings to clients (detects dead peers).
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// Health `Watch` streams allowed per instance (each is a long-lived
    /// stream like a subscription).
    pub max_health_watches: usize,
    /// Serve gRPC reflection (v1 and v1alpha) for the port's own services.
    pub reflection: bool,
    /// TLS on the port (off by default: plaintext, for a mesh or a private
    /// network).
    #[serde(default)]
    pub tls: GrpcTlsConfig,
}

/// TLS on the gRPC port. `cert_file` and `key_file` together turn it on
/// (the port then speaks TLS only); `client_ca_file` also requires every
/// client to present a certificate signed by that CA (mutual TLS). The
/// files are re-read when they change (see [`crate::tls`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcTlsConfig {
    /// The server's certificate (PEM), optionally followed by the
    /// intermediates of its chain.
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that sign the client certificates accepted.
    pub client_ca_file: Option<PathBuf>,
}

impl GrpcTlsConfig {
    /// Whether the port speaks TLS.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    /// Checks that the keys are set in a usable combination (the files
    /// themselves are read when the server starts).
    ///
    /// # Errors
    /// A one-line reason naming the keys.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            ("grpc.tls.cert_file", &self.cert_file),
            ("grpc.tls.key_file", &self.key_file),
            ("grpc.tls.client_ca_file", &self.client_ca_file),
        ] {
            if value
                .as_ref()
                .is_some_and(|path| path.as_os_str().is_empty())
            {
                return Err(format!(
                    "{key} is empty (leave it unset for no TLS, or name a file)"
                ));
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(
                "grpc.tls.cert_file and grpc.tls.key_file must be set together \
                 (both for TLS, neither for plaintext)"
                    .into(),
            );
        }
        if self.client_ca_file.is_some() && !self.enabled() {
            return Err(
                "grpc.tls.client_ca_file (mutual TLS) needs grpc.tls.cert_file \
                 and grpc.tls.key_file"
                    .into(),
            );
        }
        Ok(())
    }
}

impl GrpcConfig {
    /// Defaults with the service's own port.
    #[must_use]
    pub fn with_port(port: u16) -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], port)),
            max_request_bytes: 64 * 1024,
            request_body_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            max_connections: 4096,
            max_connections_per_address: 256,
            max_concurrent_streams: 256,
            max_connection_age: Duration::from_secs(30 * 60),
            max_connection_age_grace: Duration::from_secs(5 * 60),
            keepalive_interval: Duration::from_secs(30),
            max_health_watches: 64,
            reflection: true,
            tls: GrpcTlsConfig::default(),
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
        for (key, value) in [
            (
                "grpc.max_concurrent_streams",
                self.max_concurrent_streams as usize,
            ),
            ("grpc.max_connections", self.max_connections),
            (
                "grpc.max_connections_per_address",
                self.max_connections_per_address,
            ),
        ] {
            if value == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        for (key, value) in [
            ("grpc.request_body_timeout", self.request_body_timeout),
            ("grpc.handshake_timeout", self.handshake_timeout),
            ("grpc.max_connection_age", self.max_connection_age),
            ("grpc.keepalive_interval", self.keepalive_interval),
        ] {
            if value.is_zero() {
                return Err(format!("{key} must be greater than zero"));
            }
        }
        self.tls.validate()
    }

    /// What the accept loop enforces on this port.
    #[must_use]
    pub fn connection_limits(&self) -> crate::listener::Limits {
        crate::listener::Limits {
            max_connections: self.max_connections,
            max_per_address: self.max_connections_per_address,
            handshake_timeout: self.handshake_timeout,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// Filter directives when `RUST_LOG` is not set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            filter: "info,async_nats=warn".to_owned(),
        }
    }
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

/// Limits per caller identity (a token's identity; for callers without a
/// token, their address), per instance. Both services read the whole
/// section (one environment can serve both); each applies its own keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// (send-service) Sends per second an identity may make, sustained.
    pub send_per_second: u32,
    /// (send-service) Sends an identity may make at once above that rate.
    pub send_burst: u32,
    /// (all-messages-service) Open subscriptions per identity.
    pub subscriptions_per_identity: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            send_per_second: 10,
            send_burst: 20,
            subscriptions_per_identity: 16,
        }
    }
}

/// Browsers: which web origins may call the port (CORS), and the web chat
/// page the port may serve. Both services read the whole section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Origins (`scheme://host[:port]`, exactly as browsers send them) whose
    /// pages may call this port with gRPC-web or JSON; `"*"` allows every
    /// origin. Empty (the default): no cross-origin access.
    pub allowed_origins: Vec<String>,
    /// Directory of the built web page (`web/dist`) to serve at `/`; none
    /// (the default): no page.
    pub static_dir: Option<std::path::PathBuf>,
    /// Where the page finds send-service (`https://chat.example.com`), told
    /// to it at `/web-config.json`; empty (the default): the page's own
    /// origin, as behind an ingress that routes by path.
    pub send_url: String,
}

impl WebConfig {
    /// Checks the values.
    ///
    /// # Errors
    /// A one-line reason naming the key.
    pub fn validate(&self) -> Result<(), String> {
        for origin in &self.allowed_origins {
            let valid = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin
                        .trim_end_matches('/')
                        .contains(|c: char| c.is_whitespace())
                    && origin.matches('/').count() == 2);
            if !valid {
                return Err(format!(
                    "web.allowed_origins: `{origin}` is not an origin: scheme://host[:port] with \
                     no path (e.g. https://chat.example.com), or \"*\""
                ));
            }
        }
        let url = &self.send_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "web.send_url: `{}` must be an http:// or https:// URL, or empty",
                self.send_url
            ));
        }
        Ok(())
    }
}

impl LimitsConfig {
    /// Checks the values.
    ///
    /// # Errors
    /// A one-line reason naming the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            ("limits.send_per_second", self.send_per_second as usize),
            ("limits.send_burst", self.send_burst as usize),
            (
                "limits.subscriptions_per_identity",
                self.subscriptions_per_identity,
            ),
        ] {
            if value == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        Ok(())
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
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail's closures return figment::Error"
)]
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
            let config: Sample = load(Some(Path::new("fastchat.toml"))).expect("load").config;
            assert_eq!(config.grpc.listen.port(), 6000);
            assert_eq!(config.log.format, LogFormat::Json);
            assert_eq!(config.nats.url, "nats://conventional:4222");

            // Another service's section is ignored, not an error.
            jail.set_env("FASTCHAT_SUBSCRIPTIONS__MAX", "5");
            jail.set_env("FASTCHAT_GRPC__LISTEN", "127.0.0.1:7000");
            jail.set_env("FASTCHAT_NATS__URL", "nats://specific:4222");
            jail.set_env("FASTCHAT_NATS__REQUEST_TIMEOUT", "250ms");
            let config: Sample = load(Some(Path::new("fastchat.toml"))).expect("load").config;
            assert_eq!(config.grpc.listen.port(), 7000);
            assert_eq!(config.nats.url, "nats://specific:4222");
            assert_eq!(config.nats.request_timeout, Duration::from_millis(250));
            Ok(())
        });
    }

    /// `load_str` (the fuzz targets' loader) layers as `load` does the
    /// same file and variables (`layers_apply_in_order`).
    #[test]
    fn load_str_layers_as_load_does() {
        let toml = "[grpc]\nlisten = \"127.0.0.1:6000\"\n[log]\nformat = \"json\"\n";
        let config: Sample =
            load_str(toml, &[("NATS_URL", "nats://conventional:4222")]).expect("load");
        assert_eq!(config.grpc.listen.port(), 6000);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.nats.url, "nats://conventional:4222");
        let config: Sample = load_str(
            toml,
            &[
                ("FASTCHAT_NATS__URL", "nats://specific:4222"),
                ("NATS_URL", "nats://conventional:4222"),
                ("FASTCHAT_SUBSCRIPTIONS__MAX", "5"),
                ("fastchat_grpc__LISTEN", "127.0.0.1:7000"),
                ("FASTCHAT_NATS__REQUEST_TIMEOUT", "250ms"),
            ],
        )
        .expect("load");
        assert_eq!(config.grpc.listen.port(), 7000);
        assert_eq!(config.nats.url, "nats://specific:4222");
        assert_eq!(config.nats.request_timeout, Duration::from_millis(250));
        let err = load_str::<Sample>("", &[("FASTCHAT_GRPC__LISTEN", "not an address")])
            .expect_err("invalid address");
        assert!(err.to_string().contains("grpc.listen"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("FASTCHAT_GRPC__LISTEN", "not an address");
            let err = load::<Sample>(None).expect_err("invalid address");
            // The variable as typed, the key as in the README, no profile.
            let text = err.to_string();
            assert!(
                text.starts_with("FASTCHAT_GRPC__LISTEN (grpc.listen): "),
                "{text}"
            );
            assert!(!text.contains("default."), "{text}");
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
            let text = err.to_string();
            assert!(
                text.starts_with("FASTCHAT_GRPC__LISTN (grpc.listn): "),
                "{text}"
            );
            assert!(text.contains("listen"), "names what is known: {text}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[grpc]\nlisten = 5\n")?;
            let err = load::<Sample>(Some(Path::new("bad.toml"))).expect_err("wrong type");
            let text = err.to_string();
            assert!(text.contains("bad.toml (grpc.listen): "), "{text}");
            Ok(())
        });
        let err = load::<Sample>(Some(Path::new("/nonexistent/fastchat.toml")))
            .expect_err("missing file");
        assert!(err.to_string().contains("fastchat.toml"), "{err}");
    }

    #[test]
    fn variables_of_no_known_section_are_reported_not_fatal() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("FASTCHAT_GRCP__LISTEN", "127.0.0.1:7000");
            // Another service's section, the config file path, the CLI's
            // addresses: all fine.
            jail.set_env("FASTCHAT_SUBSCRIPTIONS__MAX", "5");
            jail.set_env("FASTCHAT_CONFIG", "none.toml");
            jail.set_env("FASTCHAT_SEND_ADDR", "127.0.0.1:1");
            let loaded = load::<Sample>(None).expect("a typo in a section is not fatal");
            assert_eq!(
                loaded.config.grpc.listen.port(),
                50051,
                "the typo set nothing"
            );
            assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
            assert!(
                loaded.warnings[0]
                    .starts_with("FASTCHAT_GRCP__LISTEN: no FastChat service has a section `grcp`"),
                "{:?}",
                loaded.warnings
            );
            Ok(())
        });
    }

    #[test]
    fn web_origins_are_origins() {
        let web = |origins: &[&str], send_url: &str| WebConfig {
            allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            send_url: send_url.to_owned(),
            ..WebConfig::default()
        };
        assert!(web(&[], "").validate().is_ok());
        assert!(
            web(
                &["*", "https://chat.example.com", "http://127.0.0.1:8080"],
                "https://x"
            )
            .validate()
            .is_ok()
        );
        for bad in [
            "chat.example.com",
            "https://chat.example.com/path",
            "ftp://x",
            "https://a b",
        ] {
            let error = web(&[bad], "").validate().expect_err(bad);
            assert!(error.starts_with("web.allowed_origins"), "{error}");
        }
        let error = web(&[], "chat.example.com")
            .validate()
            .expect_err("no scheme");
        assert!(error.starts_with("web.send_url"), "{error}");
    }
}
