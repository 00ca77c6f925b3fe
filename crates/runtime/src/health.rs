//! gRPC health: the readiness of a service follows its broker (connected
//! and answering), liveness follows the process, and a small client asks a running service (for the
//! `healthcheck` subcommand and tests).

use std::{net::SocketAddr, time::Duration};

use broker_client::{Broker, ConnectionState, Station};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

/// Health service name that is SERVING as long as the process runs, for
/// liveness and startup probes (the overall `""` status follows the broker
/// and is for readiness).
pub const LIVENESS: &str = "liveness";

/// Health service name that is SERVING while `auth.mode = "none"` (every
/// caller may do anything): a development setting an operator should see.
pub const AUTH_DISABLED: &str = "auth-disabled";

/// The health service of a server, NOT_SERVING until [`follow_broker`]
/// says otherwise, and its reporter.
pub async fn service(
    services: &[&'static str],
) -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    // tonic-health starts the server as a whole ("") SERVING: say NOT_SERVING
    // before the first request can be answered, or a probe (or a test) could
    // see a service as ready before it has a station.
    for name in services.iter().copied().chain(std::iter::once("")) {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    // Liveness (process health) never depends on the broker: an orchestrator
    // restarting pods during a broker outage would only make it worse.
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    (reporter, health_service)
}

/// How often readiness asks the broker something, and how long it waits
/// for the answer: a broker that is frozen (or overloaded) keeps its TCP
/// connections open, so the connection state alone does not tell.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the broker answers: a station state request (cheap, answered
/// from the broker's memory, allowed to every service's broker user) every
/// [`PROBE_INTERVAL`], once the station is ensured.
async fn probe_broker(
    mut station: watch::Receiver<Option<Station>>,
    answering: watch::Sender<bool>,
    cancel: CancellationToken,
) {
    let Some(Ok(_)) = cancel
        .run_until_cancelled(station.wait_for(Option::is_some))
        .await
    else {
        return;
    };
    let Some(station) = station.borrow().clone() else {
        return;
    };
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while cancel.run_until_cancelled(tick.tick()).await.is_some() {
        if station.broker().state() != ConnectionState::Connected {
            // Reported by the connection state already; nothing to ask.
            continue;
        }
        let answered = match tokio::time::timeout(PROBE_TIMEOUT, station.state()).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e.report(), "the broker's answer to the readiness probe was an error");
                !e.is_transient()
            }
            Err(_) => {
                if *answering.borrow() {
                    tracing::warn!(timeout = ?PROBE_TIMEOUT, "the broker does not answer; NOT_SERVING until it does");
                }
                false
            }
        };
        answering.send_if_modified(|was| std::mem::replace(was, answered) != answered);
    }
}

/// Keeps the health of `services` (and of the whole server, `""`) SERVING
/// exactly while the broker is connected and answering and `ready` is true,
/// until `cancel` fires; then NOT_SERVING, so load balancers stop sending
/// work while we drain.
pub async fn follow_broker(
    reporter: HealthReporter,
    services: &[&'static str],
    broker: Broker,
    station: watch::Receiver<Option<Station>>,
    mut ready: watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    let (answering_tx, mut answering) = watch::channel(true);
    let probe = tokio::spawn(probe_broker(station, answering_tx, cancel.clone()));
    let mut state = broker.watch_state();
    let mut last = None;
    // Once the sender is gone the value is final; stop waiting on it.
    let mut ready_open = true;
    let mut state_open = true;
    let mut answering_open = true;
    loop {
        let serving = !cancel.is_cancelled()
            && *ready.borrow_and_update()
            && *answering.borrow_and_update()
            && broker.state() == ConnectionState::Connected;
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            tracing::info!(?status, "health");
            metrics::gauge!("fastchat_serving").set(if serving { 1.0 } else { 0.0 });
            for name in services.iter().copied().chain(std::iter::once("")) {
                reporter.set_service_status(name, status).await;
            }
            last = Some(status);
        }
        if cancel.is_cancelled() {
            probe.abort();
            return;
        }
        tokio::select! {
            () = cancel.cancelled() => {}
            r = state.changed(), if state_open => state_open = r.is_ok(),
            r = ready.changed(), if ready_open => ready_open = r.is_ok(),
            r = answering.changed(), if answering_open => answering_open = r.is_ok(),
            // The state channel reports transitions; this also catches a
            // reconnect that happened while we were busy.
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Asks the gRPC health service at `addr` whether it is SERVING.
///
/// # Errors
/// If the server cannot be reached in `timeout` or answers with an error.
pub async fn check(addr: SocketAddr, timeout: Duration) -> anyhow::Result<ServingStatus> {
    check_service(addr, "", timeout, None).await
}

/// Asks the gRPC health service at `addr` about `service` (`""` = the
/// server as a whole, [`LIVENESS`] = the process), over TLS with `tls` when
/// given (see [`crate::probe`]).
///
/// # Errors
/// If the server cannot be reached in `timeout` or answers with an error.
pub async fn check_service(
    addr: SocketAddr,
    service: &str,
    timeout: Duration,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
) -> anyhow::Result<ServingStatus> {
    use anyhow::Context as _;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let host = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{host}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = match tls {
        None => endpoint.connect().await,
        Some(config) => {
            // TLS is done here (tonic's own is not built into the services).
            let connector = tower::service_fn(move |_: tonic::transport::Uri| {
                let config = std::sync::Arc::clone(&config);
                async move {
                    let tcp = tokio::net::TcpStream::connect(host).await?;
                    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost")
                        .map_err(std::io::Error::other)?;
                    let tls = tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                }
            });
            endpoint.connect_with_connector(connector).await
        }
    }
    .with_context(|| format!("cannot connect to {host}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .with_context(|| format!("health check of {host} failed"))?;
    Ok(match response.into_inner().status() {
        tonic_health::pb::health_check_response::ServingStatus::Serving => ServingStatus::Serving,
        _ => ServingStatus::NotServing,
    })
}

/// Path of the health service's streaming method.
const WATCH_PATH: &str = "/grpc.health.v1.Health/Watch";

/// Counts health `Watch` streams (each a long-lived stream, like a
/// subscription): beyond `max` per instance a new one gets
/// RESOURCE_EXHAUSTED; a slot is given back when its stream ends.
#[derive(Debug, Clone)]
pub struct WatchLimitLayer {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl WatchLimitLayer {
    /// At most `max` open `Watch` streams.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(max)),
            max,
        }
    }
}

impl<S> tower::Layer<S> for WatchLimitLayer {
    type Service = WatchLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WatchLimit {
            inner,
            limits: self.clone(),
        }
    }
}

/// The service of [`WatchLimitLayer`].
#[derive(Debug, Clone)]
pub struct WatchLimit<S> {
    inner: S,
    limits: WatchLimitLayer,
}

type Http<B> = tonic::codegen::http::Request<B>;
type Answer = tonic::codegen::http::Response<tonic::body::Body>;

impl<S, B> tower::Service<Http<B>> for WatchLimit<S>
where
    S: tower::Service<Http<B>, Response = Answer>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Answer;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Answer, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Http<B>) -> Self::Future {
        if request.uri().path() != WATCH_PATH {
            let future = self.inner.call(request);
            return Box::pin(future);
        }
        let Ok(permit) = std::sync::Arc::clone(&self.limits.permits).try_acquire_owned() else {
            let status = crate::status::Problem::new(
                tonic::Code::ResourceExhausted,
                crate::status::reason::TOO_MANY_WATCHES,
                format!(
                    "this instance already serves {} health Watch streams \
                     (grpc.max_health_watches); use Check, or retry later",
                    self.limits.max
                ),
            )
            .meta("limit", "grpc.max_health_watches")
            .status();
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(crate::held::Held::new(permit).wrap(response))
        })
    }
}
