//! The broker connection: authentication, TLS, reconnecting for ever, and an
//! observable connection state for readiness checks.

use std::{sync::Arc, time::Duration};

use async_nats::{ConnectOptions, Event, jetstream};
use tokio::sync::watch;

use crate::{
    BrokerConfig, Error, Result, Station, StationConfig,
    error::{ErrorKind, kind_from_text},
};

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
            .map_err(|e| Error::broker("connect to the broker", ErrorKind::Unavailable, e))?;
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
            .map_err(|e| Error::broker("connect to the broker", ErrorKind::Unavailable, e))?;
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

    /// Creates the station if it does not exist, or checks that the existing
    /// one matches `config`. Idempotent: every service that uses a station
    /// calls this at start-up.
    ///
    /// # Errors
    /// [`Error::StationConflict`] naming the first differing field if the
    /// station exists with another definition; a transient error
    /// ([`Error::is_transient`]) if the broker is unreachable.
    pub async fn ensure_station(&self, config: &StationConfig) -> Result<Station> {
        config.validate().map_err(Error::Config)?;
        if self.state() != ConnectionState::Connected {
            return Err(Error::unavailable(format!(
                "ensure station `{}`",
                config.name
            )));
        }
        crate::station::ensure(self.clone(), config).await
    }

    /// Like [`Broker::ensure_station`], but waits for the broker and retries
    /// transient failures for ever with back-off. Returns only a permanent
    /// error (a conflict or an invalid definition).
    ///
    /// # Errors
    /// A non-transient error from [`Broker::ensure_station`].
    pub async fn ensure_station_retrying(&self, config: &StationConfig) -> Result<Station> {
        let mut attempt = 0;
        loop {
            self.wait_connected().await;
            match self.ensure_station(config).await {
                Ok(station) => return Ok(station),
                Err(e) if e.is_transient() => {
                    attempt += 1;
                    let delay = backoff(attempt, Duration::from_secs(5));
                    tracing::warn!(error = %e, ?delay, "station not ready; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
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
            .map_err(|e| Error::broker("flush", ErrorKind::Unavailable, e))?;
        // Reads are abandoned on shutdown: nothing to flush there.
        let _ = self.inner.reader.drain().await;
        self.inner
            .client
            .drain()
            .await
            .map_err(|e| Error::broker("drain", kind_from_text(&e.to_string()), e))
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
    let max_delay = config.max_reconnect_delay;
    let role = role.unwrap_or("main").to_owned();
    Ok(options
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| backoff(attempts, max_delay))
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
                    Event::ServerError(error)
                        if error.to_string().contains("Permissions Violation") =>
                    {
                        // The broker drops a denied request and says so only
                        // here; the request itself just times out.
                        tracing::error!(%error, "the broker refused an operation: check this service's NATS user permissions");
                    }
                    other => tracing::warn!(connection = %role, event = %other, "broker event"),
                }
            }
        }))
}

/// Exponential back-off from 50 ms, doubling per attempt, capped at `max`,
/// with up to 25 % jitter so that many clients do not reconnect in lockstep.
pub(crate) fn backoff(attempts: usize, max: Duration) -> Duration {
    if attempts == 0 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts.saturating_sub(1).min(16)).unwrap_or(16);
    let base = Duration::from_millis(50).saturating_mul(2u32.saturating_pow(exp));
    let capped = base.min(max);
    let jitter_nanos = u64::from(std::process::id() ^ u32::try_from(attempts % 997).unwrap_or(0))
        % (u64::try_from(capped.as_nanos() / 4).unwrap_or(1).max(1));
    capped.saturating_sub(Duration::from_nanos(jitter_nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(5);
        assert_eq!(backoff(0, max), Duration::ZERO);
        let first = backoff(1, max);
        assert!(first <= Duration::from_millis(50) && first >= Duration::from_millis(37));
        assert!(backoff(4, max) > backoff(2, max));
        for attempts in 10..100 {
            let d = backoff(attempts, max);
            assert!(d <= max && d >= max.mul_f64(0.75), "{attempts}: {d:?}");
        }
    }
}
