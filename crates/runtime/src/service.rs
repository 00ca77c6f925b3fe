//! The life cycle every FastChat service shares: connect to the broker in
//! the background, ensure the station (retrying for ever while the broker is
//! away), report health, serve gRPC until shutdown, drain, close.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use broker_client::{Broker, BrokerConfig, Station, StationConfig};
use tokio::{net::TcpListener, sync::watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::server::Router as TonicRouter;

/// The router a service adds its gRPC services to.
pub type Router =
    TonicRouter<tower::layer::util::Stack<server::OversizeLayer, tower::layer::util::Identity>>;

use crate::{config::GrpcConfig, server};

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
}

/// The settings the life cycle needs.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// gRPC server limits.
    pub grpc: &'a GrpcConfig,
    /// Broker connection.
    pub nats: &'a BrokerConfig,
    /// The station this service uses.
    pub station: &'a StationConfig,
    /// Drain time after shutdown.
    pub drain_timeout: Duration,
    /// gRPC service names whose health follows the broker.
    pub health_services: &'a [&'a str],
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
}

impl Context {
    /// Waits until the station is ensured; `None` if shutdown comes first.
    pub async fn station_ready(&self) -> Option<Station> {
        let mut station = self.station.clone();
        tokio::select! {
            () = self.cancel.cancelled() => None,
            r = station.wait_for(Option::is_some) => r.ok().and_then(|s| s.clone()),
        }
    }
}

/// Runs a service until `cancel` fires (or a permanent broker error), then
/// drains and closes. `routes` adds the service's own gRPC services to a
/// router that already serves health and reflection.
///
/// # Errors
/// [`ServeError`] for a permanent broker error or a transport failure. An
/// unreachable broker is not an error: the service waits, NOT_SERVING.
pub async fn run<F>(
    settings: Settings<'_>,
    listener: TcpListener,
    cancel: CancellationToken,
    routes: F,
) -> Result<(), ServeError>
where
    F: FnOnce(Router, &Context) -> Router,
{
    let broker = Broker::connect(settings.nats).await?;
    let tracker = TaskTracker::new();
    let (station_tx, station_rx) = watch::channel(None);
    let (ready_tx, ready_rx) = watch::channel(false);
    // Written once by the station task, read once after the server stops;
    // nothing is awaited while it is held.
    let fatal: Arc<Mutex<Option<broker_client::Error>>> = Arc::default();

    {
        let broker = broker.clone();
        let station_config = settings.station.clone();
        let cancel = cancel.clone();
        let fatal = Arc::clone(&fatal);
        let also_ready = settings.also_ready.clone();
        tracker.spawn(async move {
            match server::until_cancelled(&cancel, broker.ensure_station_retrying(&station_config))
                .await
            {
                Some(Ok(station)) => {
                    station_tx.send_replace(Some(station));
                    if let Some(mut also) = also_ready {
                        let wait = also.wait_for(|ready| *ready);
                        if server::until_cancelled(&cancel, wait).await.is_none() {
                            return;
                        }
                    }
                    ready_tx.send_replace(true);
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "cannot use the station; stopping");
                    if let Ok(mut slot) = fatal.lock() {
                        *slot = Some(e);
                    }
                    cancel.cancel();
                }
                None => {}
            }
        });
    }

    let (reporter, health_service) = tonic_health::server::health_reporter();
    // tonic-health starts the server as a whole ("") SERVING: say NOT_SERVING
    // before the first request can be answered, or a probe (or a test) could
    // see a service as ready before it has a station.
    for name in settings
        .health_services
        .iter()
        .copied()
        .chain(std::iter::once(""))
    {
        reporter
            .set_service_status(name, tonic_health::ServingStatus::NotServing)
            .await;
    }
    // Liveness (process health) never depends on the broker: an orchestrator
    // restarting pods during a broker outage would only make it worse.
    reporter
        .set_service_status(server::LIVENESS, tonic_health::ServingStatus::Serving)
        .await;
    {
        let names: Vec<String> = settings
            .health_services
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let broker = broker.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            server::follow_broker_health(reporter, &names, broker, ready_rx, cancel).await;
        });
    }

    let context = Context {
        station: station_rx,
        broker: broker.clone(),
        cancel: cancel.clone(),
        tracker: tracker.clone(),
    };
    let router = server::builder(settings.grpc)
        .add_service(health_service)
        .add_service(server::reflection()?);
    let router = routes(router, &context);

    let served = server::serve(router, listener, cancel.clone(), settings.drain_timeout).await;
    cancel.cancel();
    tracker.close();
    if tokio::time::timeout(settings.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within the drain time");
    }
    // Bounded: flushing waits for the broker, which may be gone too (e.g.
    // the whole system being stopped at once).
    match tokio::time::timeout(Duration::from_secs(2), broker.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "closing the broker connection"),
        Err(_) => tracing::warn!(
            "broker unreachable at shutdown; unflushed publishes were not confirmed anyway"
        ),
    }
    served?;
    let fatal = fatal.lock().ok().and_then(|mut slot| slot.take());
    match fatal {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
