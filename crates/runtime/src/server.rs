//! The gRPC server scaffold every service uses: limits, health that follows
//! the broker, reflection, and serving on an already-bound listener until a
//! shutdown token fires, with a bounded drain.

use std::{future::Future, net::SocketAddr, time::Duration};

use broker_client::{Broker, ConnectionState};
use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;
use tonic::{
    codegen::http,
    transport::{
        Server,
        server::{Router, TcpIncoming},
    },
};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::config::GrpcConfig;

/// Health service name that is SERVING as long as the process runs, for
/// liveness and startup probes (the overall `""` status follows the broker
/// and is for readiness).
pub const LIVENESS: &str = "liveness";

/// A tonic server builder with the configured limits.
#[must_use]
pub fn builder(
    config: &GrpcConfig,
) -> Server<tower::layer::util::Stack<OversizeLayer, tower::layer::util::Identity>> {
    // TCP options are set on the listener in `serve`: tonic ignores the
    // builder's `tcp_nodelay` for a listener it did not bind itself.
    Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(tower::util::MapResponseLayer::new(
            oversize_is_resource_exhausted as fn(_) -> _,
        ))
}

/// The layer [`builder`] adds.
pub type OversizeLayer = tower::util::MapResponseLayer<
    fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>,
>;

/// tonic refuses a request frame over `max_decoding_message_size` with
/// OUT_OF_RANGE; gRPC's convention (and what clients retry on) is
/// RESOURCE_EXHAUSTED, so the answer is rewritten here, in one place.
fn oversize_is_resource_exhausted(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let oversize = headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            // tonic percent-encodes the message's spaces.
            .is_some_and(|m| {
                m.replace("%20", " ")
                    .contains("decoded message length too large")
            });
    if oversize {
        let message = headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .replace("%20", " ")
            .replace(
                "Error, decoded message length too large",
                "request too large",
            )
            + " (grpc.max_request_bytes)";
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        if let Ok(value) = http::HeaderValue::from_str(&message) {
            headers.insert("grpc-message", value);
        }
    }
    response
}

/// The reflection service over every FastChat proto.
///
/// # Errors
/// Only if the embedded descriptor set were corrupt (a build defect).
pub fn reflection() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(fastchat_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
}

/// Keeps the health of `services` (and of the whole server, `""`) SERVING
/// exactly while the broker is connected and `ready` is true, until `cancel`
/// fires; then NOT_SERVING, so load balancers stop sending work while we drain.
pub async fn follow_broker_health(
    reporter: HealthReporter,
    services: &[&str],
    broker: Broker,
    mut ready: watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    let mut state = broker.watch_state();
    let mut last = None;
    // Once the sender is gone the value is final; stop waiting on it.
    let mut ready_open = true;
    let mut state_open = true;
    loop {
        let serving = !cancel.is_cancelled()
            && *ready.borrow_and_update()
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
            return;
        }
        tokio::select! {
            () = cancel.cancelled() => {}
            r = state.changed(), if state_open => state_open = r.is_ok(),
            r = ready.changed(), if ready_open => ready_open = r.is_ok(),
            // The state channel reports transitions; this also catches a
            // reconnect that happened while we were busy.
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Serves `router` on `listener` until `cancel` fires, then lets in-flight
/// calls finish for at most `drain`.
///
/// # Errors
/// If the transport fails.
pub async fn serve(
    router: Router<tower::layer::util::Stack<OversizeLayer, tower::layer::util::Identity>>,
    listener: TcpListener,
    cancel: CancellationToken,
    drain: Duration,
) -> Result<(), tonic::transport::Error> {
    // Small gRPC frames must not wait for Nagle's algorithm (tens of ms of
    // added latency); tonic applies this only to listeners it binds itself.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let shutdown = cancel.clone();
    let server = router.serve_with_incoming_shutdown(incoming, async move {
        shutdown.cancelled().await;
    });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = cancel.cancelled() => {}
    }
    match tokio::time::timeout(drain, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(?drain, "drain time over; closing remaining calls");
            Ok(())
        }
    }
}

/// Asks the gRPC health service at `addr` whether it is SERVING.
///
/// # Errors
/// If the server cannot be reached in `timeout` or answers with an error.
pub async fn check_health(addr: SocketAddr, timeout: Duration) -> anyhow::Result<ServingStatus> {
    check_health_of(addr, "", timeout).await
}

/// Asks the gRPC health service at `addr` about `service` (`""` = the
/// server as a whole, [`LIVENESS`] = the process).
///
/// # Errors
/// If the server cannot be reached in `timeout` or answers with an error.
pub async fn check_health_of(
    addr: SocketAddr,
    service: &str,
    timeout: Duration,
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
    let channel = endpoint
        .connect()
        .await
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

/// Waits for `future` unless `cancel` fires first.
pub async fn until_cancelled<F: Future>(
    cancel: &CancellationToken,
    future: F,
) -> Option<F::Output> {
    tokio::select! {
        () = cancel.cancelled() => None,
        out = future => Some(out),
    }
}
