//! The broker connection: authentication, TLS, reconnecting for ever with
//! jittered back-off, and an observable connection state for readiness
//! checks.

use std::{sync::Arc, time::Duration};

use async_nats::{ConnectOptions, Event, jetstream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use fastchat_backoff::ExponentialBackoff;

use crate::{BrokerConfig, Error, Result};

/// Whether the broker connection is usable right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connected: requests can be made.
    Connected,
    /// Never connected yet, or lost and reconnecting (the client keeps trying).
    Disconnected,
}

/// A connection to the NATS broker with JetStream, shared by all stations of
/// a process. Cheap to clone (one pointer: every station and subscription
/// holds one).
#[derive(Debug, Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    reader: async_nats::Client,
    reader_js: jetstream::Context,
    state: watch::Receiver<ConnectionState>,
    request_timeout: Duration,
    batch_reads: bool,
    /// Places for long history reads' push consumers (`replay_consumers`).
    replay_consumers: Arc<Semaphore>,
}

impl Broker {
    /// Starts connecting to the broker and returns at once.
    ///
    /// The connection is made in the background and re-made for ever with
    /// exponential back-off (capped at `max_reconnect_delay`), so a service
    /// can start before its broker. Watch [`Broker::state`] or call
    /// [`Broker::wait_connected`] to know when it is usable.
    ///
    /// # Errors
    /// [`Error::Config`] if the configuration cannot be used (unreadable
    /// credentials file, no URL).
    pub async fn connect(config: &BrokerConfig) -> Result<Self> {
        config.validate().map_err(Error::Config)?;
        let (state_tx, state_rx) = watch::channel(ConnectionState::Disconnected);
        let state_tx = Arc::new(state_tx);
        let urls = config.urls();
        let addrs: Vec<async_nats::ServerAddr> = urls
            .iter()
            .map(|u| {
                u.parse()
                    .map_err(|e| Error::Config(format!("nats.url `{u}`: {e}")))
            })
            .collect::<Result<_>>()?;
        let client = options(config, None, Some(Arc::clone(&state_tx)))
            .await?
            .connect(addrs.clone())
            .await
            .map_err(|e| Error::nats("connect to the broker", e))?;
        // The event may have fired before we could observe it.
        if client.connection_state() == async_nats::connection::State::Connected {
            state_tx.send_replace(ConnectionState::Connected);
        }
        // History reads get a connection of their own: a replay pushes
        // messages as fast as the broker can, and on the shared connection
        // they would queue ahead of the live feed and of publish acks.
        let reader = options(config, Some("reader"), None)
            .await?
            .connect(addrs)
            .await
            .map_err(|e| Error::nats("connect to the broker", e))?;
        let context = |client: &async_nats::Client| {
            jetstream::ContextBuilder::new()
                .timeout(config.request_timeout)
                .build(client.clone())
        };
        Ok(Self {
            inner: Arc::new(Inner {
                js: context(&client),
                reader_js: context(&reader),
                client,
                reader,
                state: state_rx,
                request_timeout: config.request_timeout,
                batch_reads: config.batch_reads,
                replay_consumers: Arc::new(Semaphore::new(
                    config.replay_consumers.min(Semaphore::MAX_PERMITS),
                )),
            }),
        })
    }

    /// The connection state now.
    #[must_use]
    pub fn state(&self) -> ConnectionState {
        match self.inner.client.connection_state() {
            async_nats::connection::State::Connected => ConnectionState::Connected,
            _ => ConnectionState::Disconnected,
        }
    }

    /// A receiver that changes whenever the connection state changes, for
    /// health reporting.
    #[must_use]
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.clone()
    }

    /// Waits until the broker is connected.
    pub async fn wait_connected(&self) {
        let mut state = self.inner.state.clone();
        // The sender lives as long as the client's event callback; if it were
        // gone we could not learn of a connection anyway.
        let _ = state.wait_for(|s| *s == ConnectionState::Connected).await;
    }

    /// Time allowed for one broker request.
    #[must_use]
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// Whether history is read with batched direct gets: configured so
    /// (`batch_reads`) and served by the broker connected to (nats-server
    /// ≥ 2.11, as it announced itself).
    #[must_use]
    pub fn batch_reads(&self) -> bool {
        self.inner.batch_reads
            && crate::direct::version_at_least(&self.inner.client.server_info().version, 2, 11)
    }

    /// A place for a long history read's push consumer, if one is free now
    /// (at most `replay_consumers` at once); held as long as the consumer.
    pub(crate) fn replay_consumer(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.inner.replay_consumers)
            .try_acquire_owned()
            .ok()
    }

    /// Flushes what the client buffered and closes the connection.
    ///
    /// # Errors
    /// If the flush fails (the broker is gone); nothing more can be done then.
    pub async fn close(&self) -> Result<()> {
        self.inner
            .client
            .flush()
            .await
            .map_err(|e| Error::nats("flush", e))?;
        // Reads are abandoned on shutdown: nothing to flush there.
        let _ = self.inner.reader.drain().await;
        self.inner
            .client
            .drain()
            .await
            .map_err(|e| Error::nats("drain", e))
    }

    pub(crate) fn js(&self) -> &jetstream::Context {
        &self.inner.js
    }

    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The connection for history reads (see [`Broker::connect`]).
    pub(crate) fn reader(&self) -> (&async_nats::Client, &jetstream::Context) {
        (&self.inner.reader, &self.inner.reader_js)
    }

    pub(crate) fn ensure_connected(&self, operation: impl Into<String>) -> Result<()> {
        if self.state() == ConnectionState::Connected {
            Ok(())
        } else {
            Err(Error::unavailable(operation))
        }
    }
}

/// Connection options from the configuration: authentication, TLS,
/// time-outs, reconnecting for ever with back-off, and events (reported to
/// `state` for the main connection, logged for the others).
async fn options(
    config: &BrokerConfig,
    role: Option<&str>,
    state: Option<Arc<watch::Sender<ConnectionState>>>,
) -> Result<ConnectOptions> {
    let mut options = match &config.creds_file {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| {
                Error::Config(format!("nats.creds_file {}: {e}", path.as_path().display()))
            })?,
        None => ConnectOptions::new(),
    };
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if config.tls.enabled {
        options = options.require_tls(true);
    }
    if let Some(ca) = &config.tls.ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    match (&config.name, role) {
        (Some(name), Some(role)) => options = options.name(format!("{name}-{role}")),
        (Some(name), None) => options = options.name(name.clone()),
        (None, _) => {}
    }
    let reconnect = ExponentialBackoff::doubling(RECONNECT_MIN, config.max_reconnect_delay);
    let role = role.unwrap_or("main").to_owned();
    Ok(options
        .custom_inbox_prefix(config.inbox_prefix.clone())
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout))
        .retry_on_initial_connect()
        .max_reconnects(None)
        // `attempts` counts failed attempts since the last connection: the
        // first reconnect is immediate.
        .reconnect_delay_callback(move |attempts| match attempts.checked_sub(1) {
            None => Duration::ZERO,
            Some(retry) => reconnect.delay(u32::try_from(retry).unwrap_or(u32::MAX)),
        })
        .event_callback(move |event| {
            let state = state.clone();
            let role = role.clone();
            async move {
                match &event {
                    Event::Connected => {
                        tracing::info!(connection = %role, "broker connected");
                        if let Some(state) = &state {
                            state.send_replace(ConnectionState::Connected);
                        }
                    }
                    Event::Disconnected | Event::Closed => {
                        tracing::warn!(connection = %role, "broker disconnected; reconnecting");
                        if let Some(state) = &state {
                            state.send_replace(ConnectionState::Disconnected);
                        }
                    }
                    Event::SlowConsumer(sid) => {
                        tracing::warn!(connection = %role, sid, "slow consumer: the client dropped messages");
                    }
                    // async-nats has no kind for a permissions violation (it is
                    // `ServerError::Other` with the broker's text), so this one
                    // match on text stays. The broker drops a denied request
                    // and says so only here; the request itself just times out.
                    Event::ServerError(async_nats::ServerError::Other(text))
                        if text.contains("Permissions Violation") =>
                    {
                        tracing::error!(error = %text, "the broker refused an operation: check this service's NATS user permissions");
                    }
                    other => tracing::warn!(connection = %role, event = %other, "broker event"),
                }
            }
        }))
}

/// First reconnect delay after a failed attempt.
const RECONNECT_MIN: Duration = Duration::from_millis(50);
