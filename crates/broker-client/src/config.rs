//! Serializable definitions of a broker connection and of a station.
//!
//! Both are plain data so that services can embed them in their figment
//! configuration; every field has a default that works against a local
//! single-node broker.

use std::{fmt, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// How to reach and authenticate to the NATS broker.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// One URL or several separated by commas (cluster seeds), e.g.
    /// `nats://nats-0:4222,nats://nats-1:4222`.
    pub url: String,
    /// Connection name shown in the broker's monitoring.
    pub name: Option<String>,
    /// Prefix of this client's reply subjects (`<prefix>.<unique>`): give
    /// each service its own, so a broker user can be allowed to subscribe
    /// only to its own replies (with the default `_INBOX`, every user that
    /// may read replies may read everyone's).
    pub inbox_prefix: String,
    /// User for user/password authentication.
    pub user: Option<String>,
    /// Password for user/password authentication.
    pub password: Option<String>,
    /// Token authentication.
    pub token: Option<String>,
    /// A NATS `.creds` file (JWT + NKey seed).
    pub creds_file: Option<PathBuf>,
    /// TLS settings.
    pub tls: TlsConfig,
    /// Time allowed to establish one TCP/TLS connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for one request to the broker (JetStream API, publish ack).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Upper bound of the exponential back-off between reconnect attempts.
    /// The client retries for ever.
    #[serde(with = "humantime_serde")]
    pub max_reconnect_delay: Duration,
    /// Read history (replays, pages, counts) with batched direct gets where
    /// the broker has them (nats-server ≥ 2.11): no consumer per read.
    /// `false`: an ephemeral consumer per read, as on older brokers.
    pub batch_reads: bool,
    /// A history read by batched direct gets with more than 4,096 messages
    /// still to go (a long replay) moves to an ordered push consumer, about
    /// twice as fast (its messages carry no per-message headers to parse),
    /// while this process holds fewer than this many such consumers; the
    /// rest go on with direct gets. Bounded so that a burst of long replays
    /// (a restart's resuming clients) cannot reach the broker's consumer
    /// limit. 0: direct gets only.
    pub replay_consumers: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            name: None,
            inbox_prefix: "_INBOX".to_owned(),
            user: None,
            password: None,
            token: None,
            creds_file: None,
            tls: TlsConfig::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            max_reconnect_delay: Duration::from_secs(5),
            batch_reads: true,
            replay_consumers: 16,
        }
    }
}

// Hand-written so that secrets never reach logs.
impl fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("BrokerConfig")
            .field("url", &self.url)
            .field("name", &self.name)
            .field("inbox_prefix", &self.inbox_prefix)
            .field("user", &self.user)
            .field("password", &redact(&self.password))
            .field("token", &redact(&self.token))
            .field("creds_file", &self.creds_file)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_reconnect_delay", &self.max_reconnect_delay)
            .field("batch_reads", &self.batch_reads)
            .field("replay_consumers", &self.replay_consumers)
            .finish()
    }
}

impl BrokerConfig {
    /// Checks the settings that can be checked without a broker.
    ///
    /// # Errors
    /// A one-line reason naming the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.urls().is_empty() {
            return Err("nats.url: at least one broker URL is required".into());
        }
        if self.inbox_prefix.is_empty()
            || self
                .inbox_prefix
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '*' | '>'))
            || self.inbox_prefix.starts_with('.')
            || self.inbox_prefix.ends_with('.')
        {
            return Err(format!(
                "nats.inbox_prefix `{}` must be a subject without spaces, wildcards or a \
                 leading or trailing '.'",
                self.inbox_prefix
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err("nats.user and nats.password must be set together".into());
        }
        let methods = [
            self.user.is_some(),
            self.token.is_some(),
            self.creds_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(
                "nats: choose one authentication method (user/password, token or creds_file)"
                    .into(),
            );
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err("nats.tls.cert_file and nats.tls.key_file must be set together".into());
        }
        for (key, value) in [
            ("nats.connect_timeout", self.connect_timeout),
            ("nats.request_timeout", self.request_timeout),
            ("nats.max_reconnect_delay", self.max_reconnect_delay),
        ] {
            if value.is_zero() {
                return Err(format!("{key} must be greater than zero"));
            }
        }
        Ok(())
    }

    /// The configured URLs, trimmed, without empty entries.
    #[must_use]
    pub fn urls(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// TLS to the broker. Off unless `enabled` or a CA/client certificate is given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Require TLS even with the system roots.
    pub enabled: bool,
    /// Extra root CA (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub key_file: Option<PathBuf>,
}

/// Where a station keeps its messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// On disk: survives broker restarts.
    #[default]
    File,
    /// In memory: faster, lost when the broker restarts.
    Memory,
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::File => "file",
            Self::Memory => "memory",
        })
    }
}

/// A station: a retained, replicated, deduplicating JetStream stream.
///
/// Limits use 0 for "unlimited".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StationConfig {
    /// Stream name (no spaces, dots, `*` or `>`).
    pub name: String,
    /// Subjects the station captures, e.g. `chat.messages.>`.
    pub subjects: Vec<String>,
    /// Messages older than this are removed. 0 = keep for ever.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// At most this many messages are kept (oldest removed first). 0 = no limit.
    pub max_messages: u64,
    /// At most this many bytes are kept (oldest removed first). 0 = no limit.
    /// Keep it below the broker's store (`max_file_store`) with room for the
    /// dead-letter station and consumers: then old messages make room and
    /// the store never fills; a full store refuses every publish.
    pub max_bytes: u64,
    /// At most this many messages per subject (per chat room). 0 = no limit.
    pub max_messages_per_subject: u64,
    /// File or memory.
    pub storage: Storage,
    /// 1, or 3 on a JetStream cluster (survives the loss of one node).
    pub replicas: usize,
    /// Publishes with the same message id inside this window are stored once.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// Largest message (payload and headers) the station accepts, in bytes.
    /// 0 = the broker's `max_payload`.
    pub max_message_size: u32,
}

impl Default for StationConfig {
    fn default() -> Self {
        Self {
            name: "chat".to_owned(),
            subjects: vec!["chat.messages.>".to_owned()],
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_messages: 0,
            // Half the 8 GB store the deploy/ broker gets (base overlay).
            max_bytes: 4 * 1024 * 1024 * 1024,
            max_messages_per_subject: 0,
            storage: Storage::File,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_message_size: 64 * 1024,
        }
    }
}

impl StationConfig {
    /// Checks what can be checked without a broker.
    ///
    /// # Errors
    /// A one-line reason naming the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || self
                .name
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        {
            return Err(format!(
                "station.name `{}` must be non-empty without spaces, '.', '*', '>', '/' or '\\'",
                self.name
            ));
        }
        if self.subjects.is_empty() {
            return Err("station.subjects: at least one subject is required".into());
        }
        if !matches!(self.replicas, 1 | 3 | 5) {
            return Err(format!(
                "station.replicas must be 1, 3 or 5, not {}",
                self.replicas
            ));
        }
        if self.duplicate_window.is_zero() {
            return Err("station.duplicate_window must be greater than zero".into());
        }
        if !self.max_age.is_zero() && self.duplicate_window > self.max_age {
            return Err("station.duplicate_window must not exceed station.max_age".into());
        }
        Ok(())
    }
}
