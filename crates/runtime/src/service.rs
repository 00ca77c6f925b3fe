//! The life cycle every FastChat service shares: connect to the broker in
//! the background, ensure the station (retrying for ever while the broker is
//! away), report health, serve gRPC until shutdown, drain, close.

use std::time::Duration;

use broker_client::{Broker, Station, StationConfig};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::ServiceConfig,
    gate::Gate,
    health,
    server::{self, Router},
};

/// Why a service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The broker refused something permanent (e.g. a conflicting station).
    #[error(transparent)]
    Broker(#[from] broker_client::Error),
    /// The gRPC transport failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be set up (a build defect).
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A key file of `auth.jwt` cannot be read or used.
    #[error(transparent)]
    Auth(#[from] fastchat_auth::ConfigError),
    /// A `grpc.tls` file cannot be used at start-up.
    #[error("configuration error: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

impl ServeError {
    /// Whether the error is the configuration's fault (the operator must
    /// change it: e.g. a station that exists with another definition), not
    /// the environment's.
    #[must_use]
    pub fn is_configuration(&self) -> bool {
        match self {
            Self::Broker(e) => matches!(
                e.kind(),
                broker_client::ErrorKind::Conflict | broker_client::ErrorKind::InvalidInput
            ),
            Self::Auth(_) | Self::Tls(_) => true,
            Self::Transport(_) | Self::Reflection(_) => false,
        }
    }
}

/// What a service tells the life cycle about itself, beyond its
/// configuration.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The gRPC services the port serves (their full names): their health
    /// follows the broker, and reflection lists them.
    pub services: &'static [&'static str],
    /// A further condition for SERVING, once the station is ready (e.g. a
    /// live feed that must be running before subscriptions are accepted).
    pub also_ready: Option<watch::Receiver<bool>>,
}

/// What a service's gRPC handlers and background tasks get.
#[derive(Debug, Clone)]
pub struct Context {
    /// The station once it is ensured (`None` before).
    pub station: watch::Receiver<Option<Station>>,
    /// The broker connection.
    pub broker: Broker,
    /// Fires on shutdown; every loop selects on it.
    pub cancel: CancellationToken,
    /// Tracks spawned tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Checks callers' tokens.
    pub gate: Gate,
}

impl Context {
    /// Waits until the station is ensured; `None` if shutdown comes first.
    pub async fn station_ready(&self) -> Option<Station> {
        let mut station = self.station.clone();
        self.cancel
            .run_until_cancelled(station.wait_for(Option::is_some))
            .await
            .and_then(|r| r.ok().and_then(|s| s.clone()))
    }
}

/// Runs a service until `cancel` fires (or a permanent broker error), then
/// drains and closes. `routes` adds the service's own gRPC services to a
/// router that already serves health and reflection.
///
/// # Errors
/// [`ServeError`] for a permanent broker error or a transport failure. An
/// unreachable broker is not an error: the service waits, NOT_SERVING.
pub async fn run<C, F>(
    config: &C,
    spec: Spec,
    listener: TcpListener,
    cancel: CancellationToken,
    routes: F,
) -> Result<(), ServeError>
where
    C: ServiceConfig,
    F: FnOnce(Router, &Context) -> Router,
{
    let gate = Gate::new(config.auth())?;
    if gate.mode() == fastchat_auth::Mode::None {
        tracing::warn!(
            "auth.mode = \"none\": every caller may read and write every room as anyone; \
             development only (health service `auth-disabled` reports SERVING while so)"
        );
    }
    let broker = Broker::connect(config.nats()).await?;
    let tracker = TaskTracker::new();
    let (station_tx, station_rx) = watch::channel(None);
    let (ready_tx, ready_rx) = watch::channel(false);
    let preparing = tokio::spawn(prepare_station(
        broker.clone(),
        config.station().clone(),
        spec.also_ready,
        station_tx,
        ready_tx,
        cancel.clone(),
    ));

    let (reporter, health_service) = health::service(spec.services).await;
    // Visible to probes and operators, not only in the log.
    reporter
        .set_service_status(
            health::AUTH_DISABLED,
            if gate.mode() == fastchat_auth::Mode::None {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            },
        )
        .await;
    tracker.spawn(health::follow_broker(
        reporter,
        spec.services,
        broker.clone(),
        station_rx.clone(),
        ready_rx,
        cancel.clone(),
    ));

    let context = Context {
        station: station_rx,
        broker: broker.clone(),
        cancel: cancel.clone(),
        tracker: tracker.clone(),
        gate,
    };
    let mut router = crate::web::routes(config.web()).add_service(health_service);
    if config.grpc().reflection {
        router = server::add_reflection(router, spec.services)?;
    }
    let router = routes(router, &context);
    let drain = config.shutdown().drain_timeout;
    let served = server::serve(
        router,
        listener,
        config.grpc(),
        config.web(),
        cancel.clone(),
        drain,
    )
    .await;

    cancel.cancel();
    let fatal = station_outcome(preparing).await;
    stop_tasks(&tracker, drain).await;
    close(&broker).await;
    served?;
    fatal.map_or(Ok(()), |e| Err(e.into()))
}

/// Ensures the station (waiting and retrying while the broker is away),
/// publishes it to the handlers, then waits for `also_ready` and marks the
/// service ready. A permanent error (e.g. a conflicting station) stops the
/// service: it is returned and `cancel` fires.
async fn prepare_station(
    broker: Broker,
    config: StationConfig,
    also_ready: Option<watch::Receiver<bool>>,
    station: watch::Sender<Option<Station>>,
    ready: watch::Sender<bool>,
    cancel: CancellationToken,
) -> Result<(), broker_client::Error> {
    let ensured = cancel
        .run_until_cancelled(broker.ensure_station_retrying(&config))
        .await;
    match ensured {
        None => return Ok(()),
        Some(Err(e)) => {
            tracing::error!(error = %e.report(), "cannot use the station; stopping");
            cancel.cancel();
            return Err(e);
        }
        Some(Ok(ensured)) => {
            station.send_replace(Some(ensured));
        }
    }
    if let Some(mut also) = also_ready {
        let waited = cancel
            .run_until_cancelled(also.wait_for(|ready| *ready))
            .await;
        if waited.is_none() {
            return Ok(());
        }
    }
    ready.send_replace(true);
    Ok(())
}

/// How station preparation ended; it stops at once on cancellation.
async fn station_outcome(
    preparing: JoinHandle<Result<(), broker_client::Error>>,
) -> Option<broker_client::Error> {
    match preparing.await {
        Ok(result) => result.err(),
        Err(e) => {
            tracing::error!(error = %e, "station preparation panicked");
            None
        }
    }
}

/// Waits for the background tasks, at most `drain`.
async fn stop_tasks(tracker: &TaskTracker, drain: Duration) {
    tracker.close();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!("background tasks did not stop within the drain time");
    }
}

/// Flushes and closes the broker connection. Bounded: flushing waits for
/// the broker, which may be gone too (e.g. the whole system being stopped
/// at once).
async fn close(broker: &Broker) {
    match tokio::time::timeout(Duration::from_secs(2), broker.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e.report(), "closing the broker connection"),
        Err(_) => tracing::warn!(
            "broker unreachable at shutdown; unflushed publishes were not confirmed anyway"
        ),
    }
}
