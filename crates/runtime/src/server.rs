//! The gRPC server scaffold every service uses: tonic with the configured
//! limits and the request-size layer, reflection, and serving on an
//! already-bound listener until a shutdown token fires, with a bounded
//! drain.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Server, server::TcpIncoming};
use tower::layer::util::{Identity, Stack};

use crate::{config::GrpcConfig, limit::RequestLimitLayer};

/// The layers [`builder`] puts around every service.
pub type Layers = Stack<RequestLimitLayer, Identity>;

/// The router a service adds its gRPC services to.
pub type Router = tonic::transport::server::Router<Layers>;

/// A tonic server builder with the configured limits.
#[must_use]
pub fn builder(config: &GrpcConfig) -> Server<Layers> {
    // TCP options are set on the listener in `serve`: tonic ignores the
    // builder's `tcp_nodelay` for a listener it did not bind itself.
    Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(RequestLimitLayer::new(config.max_request_bytes))
}

/// Adds gRPC reflection (both `grpc.reflection.v1` and the older
/// `v1alpha` that several GUI clients still ask for) listing exactly
/// `services` and the health service: a client browsing a port sees what
/// that port serves, not every FastChat API.
///
/// # Errors
/// Only if the embedded descriptor sets were corrupt (a build defect).
pub fn add_reflection(
    router: Router,
    services: &[&str],
) -> Result<Router, tonic_reflection::server::Error> {
    let builder = |reflection: &str| {
        services.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(fastchat_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name(HEALTH_SERVICE)
                .with_service_name(reflection),
            |builder, name| builder.with_service_name(*name),
        )
    };
    Ok(router
        .add_service(builder("grpc.reflection.v1.ServerReflection").build_v1()?)
        .add_service(builder("grpc.reflection.v1alpha.ServerReflection").build_v1alpha()?))
}

/// The standard gRPC health service's name.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// Serves `router` on `listener` until `cancel` fires, then lets in-flight
/// calls finish for at most `drain`.
///
/// # Errors
/// If the transport fails.
pub async fn serve(
    router: Router,
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
    if let Some(result) = cancel.run_until_cancelled(&mut server).await {
        return result;
    }
    match tokio::time::timeout(drain, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(?drain, "drain time over; closing remaining calls");
            Ok(())
        }
    }
}
